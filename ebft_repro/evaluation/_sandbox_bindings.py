"""How names are bound in a program or a test, by AST analysis, for the planner (``_sandbox_plan.py``).

Which whitelisted builtins (and ``math`` functions) still mean themselves for a program, the kinds of
binding of every name (assignment, ``def``, ``import``, ...), the solution's module-level bindings, the
functions a test defines, and which of them (a HumanEval ``def check(candidate)``) can be inlined.
"""

from __future__ import annotations

import ast

from ebft_repro.evaluation._sandbox_ops import SAFE_FUNCTIONS, SAFE_VALUES

_MATH_FUNCTIONS = ("isclose", "fabs")
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_ESCAPES = (ast.Return, ast.Yield, ast.YieldFrom, ast.Await, ast.Global, ast.Nonlocal)


def _safe_names(code_bindings: dict[str, set[str]], test_bindings: dict[str, list[str]]) -> set[str]:
    """Whitelisted names that still mean the builtin (or the math function) for this program."""
    safe = set()
    for name in set(SAFE_FUNCTIONS) | set(SAFE_VALUES):
        if "." in name:
            continue
        kinds = set(code_bindings.get(name, ())) | set(test_bindings.get(name, ()))
        if name in _MATH_FUNCTIONS:
            if kinds == {f"from math import {name}"}:
                safe.add(name)
        elif not kinds:
            safe.add(name)
    math_kinds = set(code_bindings.get("math", ())) | set(test_bindings.get("math", ()))
    if math_kinds == {"import math"}:
        safe.add("math")
    return safe


def _binding_kinds(node: ast.AST) -> list[tuple[str, str]]:
    """(name, kind) for every name ``node`` itself binds (not its children)."""
    if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
        return [(node.id, "assign")]
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [(node.name, "def")]
    if isinstance(node, ast.Import):
        return [
            (a.asname or a.name.split(".")[0], f"import {a.name}" if not a.asname else "other")
            for a in node.names
        ]
    if isinstance(node, ast.ImportFrom):
        kind = "from {} import {}"
        return [
            (a.asname or a.name, kind.format(node.module, a.name) if not a.asname else "other")
            for a in node.names
        ]
    if isinstance(node, ast.Global | ast.Nonlocal):
        return [(name, "other") for name in node.names]
    if isinstance(node, ast.arg):
        return [(node.arg, "other")]
    if isinstance(node, ast.ExceptHandler) and node.name:
        return [(node.name, "other")]
    if isinstance(node, ast.MatchAs | ast.MatchStar) and node.name:
        return [(node.name, "other")]
    return []


def _all_bindings(tree: ast.AST) -> dict[str, list[str]]:
    bindings: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        for name, kind in _binding_kinds(node):
            bindings.setdefault(name, []).append(kind)
    return bindings


def _module_bindings(body: list[ast.stmt]) -> dict[str, set[str]]:
    """Module-level bindings of the solution (function and class bodies excluded, ``global`` included)."""
    bindings: dict[str, set[str]] = {}
    stack: list[ast.AST] = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Global):
            for name in node.names:
                bindings.setdefault(name, set()).add("other")
        if not isinstance(node, ast.arg):
            for name, kind in _binding_kinds(node):
                bindings.setdefault(name, set()).add(kind)
        if isinstance(node, _SCOPES):
            stack.extend(n for n in ast.walk(node) if isinstance(n, ast.Global))
            continue
        stack.extend(ast.iter_child_nodes(node))
    return bindings


def _defined_functions(tree: ast.Module) -> set[str]:
    """Functions and classes the test itself defines (code that runs, and may decide, in the child)."""
    names = {
        n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Lambda):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def _inline_call(stmt: ast.stmt, inline: dict) -> ast.Call | None:
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
        call = stmt.value
        if isinstance(call.func, ast.Name) and call.func.id in inline:
            return call
    return None


def _inlinable(tree: ast.Module, bindings: dict[str, list[str]]) -> dict[str, ast.FunctionDef]:
    """Top-level ``def f(one_arg)`` whose every use is a later top-level statement ``f(<expr>)``."""
    defs = {s.name: s for s in tree.body if isinstance(s, ast.FunctionDef)}
    result = {}
    for name, fdef in defs.items():
        args = fdef.args
        if fdef.decorator_list or args.posonlyargs or args.vararg or args.kwonlyargs or args.kwarg:
            continue
        if args.defaults or len(args.args) != 1 or bindings.get(name) != ["def"] or _escapes(fdef.body):
            continue
        if any(isinstance(n, ast.Name) and n.id in defs for stmt in fdef.body for n in ast.walk(stmt)):
            continue  # calls another test function: not inlined (no nesting, no recursion)
        position = tree.body.index(fdef)
        calls = [
            i
            for i, stmt in enumerate(tree.body)
            if isinstance(stmt, ast.Expr)
            and isinstance(stmt.value, ast.Call)
            and isinstance(stmt.value.func, ast.Name)
            and stmt.value.func.id == name
            and len(stmt.value.args) == 1
            and not isinstance(stmt.value.args[0], ast.Starred)
            and not stmt.value.keywords
        ]
        uses = sum(isinstance(n, ast.Name) and n.id == name for n in ast.walk(tree))
        if calls and uses == len(calls) and min(calls) > position:
            result[name] = fdef
    return result


def _escapes(body: list[ast.stmt]) -> bool:
    """Whether statements of a function body only make sense inside a function (return, yield, ...)."""
    stack: list[ast.AST] = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, _ESCAPES):
            return True
        if not isinstance(node, _SCOPES):
            stack.extend(ast.iter_child_nodes(node))
    return False
