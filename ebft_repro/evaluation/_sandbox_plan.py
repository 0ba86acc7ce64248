"""Parent-side planning of unit tests: what the parent decides and what the sandbox child must run.

Each test (a snippet of Python) becomes a list of steps for the child, in order: ``("x", source)`` runs a
statement (setup such as ``result = f(2)``, imports, loops), ``("h", (expr, ...))`` evaluates the
*placeholders* of one ``assert`` and sends their values back. For every ``assert`` statement the parent
keeps a *skeleton*: the assert's expression with every maximal sub-expression it cannot evaluate itself
(calls of solution code, attribute and subscript access, names the child owns) replaced by a placeholder
name ``"\\x00<k>"``. What the parent can evaluate: literals, comparisons (``==``, ``<``, ``in``, ``is``,
chains), ``and``/``or``/``not``, arithmetic, ``x if c else y``, calls of a few pure builtins
(:data:`~ebft_repro.evaluation._sandbox_ops.SAFE_FUNCTIONS`, e.g. ``sorted``, ``abs``, ``math.isclose``)
unless the solution or the test rebinds them, and names the test binds once to a literal that no child code
reads.

The expected values of such asserts therefore never reach the child. A whitelisted call whose arguments
are all placeholders (``list(gen(3))``, ``sorted(f(x), reverse=True)``) is sent whole, as it holds no
expected value.

A HumanEval-style ``def check(candidate): ...`` followed by ``check(f)`` is inlined: ``candidate = f``
runs in the child and the function's top-level statements are planned like the test's own. Statements
that stay in the child and contain an ``assert``/``raise`` or call a function the test defines (loops,
``if``, helpers), and placeholders that hold the test's own logic (a comparison, a lambda or a
comprehension, e.g. ``all(x > 0 for x in f())``), make the test "decided in the child".

Which names a program or a test binds, and how, and which test functions can be inlined, is worked
out by the AST helpers of ``_sandbox_bindings.py``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from ebft_repro.evaluation._sandbox_bindings import (
    _all_bindings,
    _defined_functions,
    _inlinable,
    _inline_call,
    _module_bindings,
    _safe_names,
)
from ebft_repro.evaluation._sandbox_flags import parse_quietly
from ebft_repro.evaluation._sandbox_judge import evaluate_constant
from ebft_repro.evaluation._sandbox_ops import SAFE_FUNCTIONS, SAFE_VALUES

HOLE = "\x00"  # placeholder names start with a character no Python identifier can contain
# Inside a placeholder these mean that part of the test's judgement runs in the child, e.g.
# ``all(x > 0 for x in f())``.
_TEST_LOGIC = (ast.Compare, ast.BoolOp, ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


@dataclass
class TestPlan:
    """How one test is run and judged.

    Attributes:
        steps: ``("x", statement source)`` or ``("h", placeholder sources)``, in the test's order.
        checks: step index of each ``"h"`` step -> the assert's skeleton, evaluated by the parent.
        decided_in: ``"parent"`` when every assert that can make the test pass is evaluated in the parent,
            else ``"child"``.
    """

    __test__ = False  # not a pytest class

    steps: list[tuple[str, object]] = field(default_factory=list)
    checks: dict[int, ast.expr] = field(default_factory=dict)
    decided_in: str = "parent"

    def wire(self) -> list:
        """The steps as plain lists for the child (no skeleton, hence no expected value)."""
        return [[kind, list(item) if kind == "h" else item] for kind, item in self.steps]


def plan_tests(code: str, tests: list[str]) -> list[TestPlan]:
    """Plan every test of a program (see the module docstring)."""
    code_names, code_bindings = _code_names(code)
    return [_plan_test(test, code_names, code_bindings) for test in tests]


def _code_names(code: str) -> tuple[set[str], dict[str, set[str]]]:
    """Names the solution reads anywhere, and how it binds names at module level."""
    try:
        tree = parse_quietly(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return set(), {}
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    return names, _module_bindings(tree.body)


def _plan_test(test: str, code_names: set[str], code_bindings: dict[str, set[str]]) -> TestPlan:
    try:
        return _plan_parsed(parse_quietly(test), code_names, code_bindings)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        # Does not parse (fails in the child, as it would in Python), or too deep to plan: run it whole.
        return TestPlan(steps=[("x", test)], decided_in="child")


def _plan_parsed(tree: ast.Module, code_names: set[str], code_bindings: dict[str, set[str]]) -> TestPlan:
    bindings = _all_bindings(tree)
    inline = _inlinable(tree, bindings)
    candidates = {
        name
        for name, kinds in bindings.items()
        if kinds == ["assign"] and name not in code_names and name not in inline
    }
    safe = _safe_names(code_bindings, bindings)
    while True:  # a would-be constant read by child code must exist in the child: plan again without it
        planner = _Planner(safe, candidates, inline, _defined_functions(tree) - set(inline))
        planner.statements(tree.body)
        leaked = candidates & planner.child_names
        if not leaked:
            if not planner.plan.checks:
                planner.plan.decided_in = "child"
            return planner.plan
        candidates -= leaked


class _Planner:
    def __init__(self, safe: set[str], candidates: set[str], inline: dict, test_functions: set[str]) -> None:
        self.safe, self.candidates, self.inline = safe, candidates, inline
        self.test_functions = test_functions
        self.consts: dict[str, object] = {}
        self.child_names: set[str] = set()
        self.plan = TestPlan()

    def statements(self, body: list[ast.stmt]) -> None:
        for stmt in body:
            if isinstance(stmt, ast.Assert):
                self.assertion(stmt)
            elif isinstance(stmt, ast.FunctionDef) and stmt.name in self.inline:
                continue  # its body is planned where it is called
            elif (call := _inline_call(stmt, self.inline)) is not None:
                fdef = self.inline[call.func.id]
                target = ast.Name(id=fdef.args.args[0].arg, ctx=ast.Store())
                self.child(ast.Assign(targets=[target], value=call.args[0], lineno=0))
                self.statements(fdef.body)
            elif not self.constant(stmt):
                self.child(stmt)

    def constant(self, stmt: ast.stmt) -> bool:
        """Keep ``NAME = <literal>`` in the parent when no child code reads NAME."""
        if not (
            isinstance(stmt, ast.Assign)
            and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name)
            and stmt.targets[0].id in self.candidates
        ):
            return False
        holes: list[str] = []
        value, _ = self.skeleton(stmt.value, holes)
        if holes or not isinstance(value, ast.Constant):
            return False
        self.consts[stmt.targets[0].id] = value.value
        return True

    def child(self, stmt: ast.stmt) -> None:
        names = {node.id for node in ast.walk(stmt) if isinstance(node, ast.Name)}
        self.child_names |= names
        if names & self.test_functions or any(isinstance(n, ast.Assert | ast.Raise) for n in ast.walk(stmt)):
            self.plan.decided_in = "child"
        source = ast.unparse(stmt)
        steps = self.plan.steps
        if steps and steps[-1][0] == "x":
            steps[-1] = ("x", steps[-1][1] + "\n" + source)
        else:
            steps.append(("x", source))

    def assertion(self, stmt: ast.Assert) -> None:
        holes: list[str] = []
        skeleton, _ = self.skeleton(stmt.test, holes)
        self.plan.checks[len(self.plan.steps)] = skeleton
        self.plan.steps.append(("h", tuple(holes)))

    def hole(self, node: ast.expr, holes: list[str]) -> ast.Name:
        names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        self.child_names |= names
        if names & self.test_functions or any(isinstance(n, _TEST_LOGIC) for n in ast.walk(node)):
            self.plan.decided_in = "child"  # the test's own logic (a helper, a comparison) runs in the child
        holes.append("(" + ast.unparse(node) + ")")
        return ast.Name(id=f"{HOLE}{len(holes) - 1}", ctx=ast.Load())

    def skeleton(self, node: ast.expr, holes: list[str]) -> tuple[ast.expr, bool]:
        """Parent-evaluable form of ``node`` and whether it holds a parent-side value (not just holes)."""
        mark = len(holes)
        new, content = self._skeleton(node, holes)
        if len(holes) == mark and not isinstance(new, ast.Constant):
            try:  # fold what needs no placeholder now (an error is raised again when judged, as in Python)
                new = ast.Constant(value=evaluate_constant(new))
            except Exception:  # noqa: BLE001 - the test's own expression may raise; judged later
                pass
        return new, content

    def _skeleton(self, node: ast.expr, holes: list[str]) -> tuple[ast.expr, bool]:
        if isinstance(node, ast.Constant):
            return node, True
        if isinstance(node, ast.Name):
            if node.id in self.consts:
                return ast.Constant(value=self.consts[node.id]), True
            if node.id in self.safe and node.id in SAFE_VALUES:
                return ast.Name(id=node.id, ctx=ast.Load()), True
            return self.hole(node, holes), False
        if isinstance(node, ast.Call):
            return self._call(node, holes)
        children = _evaluable_children(node)
        if children is None:
            return self.hole(node, holes), False
        parts = [self.skeleton(child, holes) for child in children]
        display = isinstance(node, ast.Tuple | ast.List | ast.Set | ast.Dict)  # a literal, even if empty
        return _rebuild(node, [part for part, _ in parts]), display or any(content for _, content in parts)

    def _call(self, node: ast.Call, holes: list[str]) -> tuple[ast.expr, bool]:
        name = self.callee(node.func)
        if name is None or any(isinstance(a, ast.Starred) for a in node.args):
            return self.hole(node, holes), False
        if any(keyword.arg is None for keyword in node.keywords):
            return self.hole(node, holes), False
        mark = len(holes)
        args = [self.skeleton(arg, holes) for arg in node.args]
        keywords = [(k.arg, self.skeleton(k.value, holes)) for k in node.keywords]
        if not any(content for _, content in args):
            # Only placeholders as arguments (options such as reverse=True aside): the call holds no
            # expected value, so the child may make it (this is what lets list(generator) work).
            del holes[mark:]
            return self.hole(node, holes), False
        func = ast.Name(id=name, ctx=ast.Load())
        new_keywords = [ast.keyword(arg=arg, value=value) for arg, (value, _) in keywords]
        return ast.Call(func=func, args=[a for a, _ in args], keywords=new_keywords), True

    def callee(self, func: ast.expr) -> str | None:
        """The SAFE_FUNCTIONS key of a call's function, or None when the child must make the call."""
        if isinstance(func, ast.Name):
            return func.id if func.id in self.safe and func.id in SAFE_FUNCTIONS else None
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "math":
            name = f"math.{func.attr}"
            return name if "math" in self.safe and name in SAFE_FUNCTIONS else None
        return None


def _evaluable_children(node: ast.expr) -> list[ast.expr] | None:
    """Sub-expressions of a node the parent can evaluate, in evaluation order; None for other nodes."""
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return None if any(isinstance(e, ast.Starred) for e in node.elts) else list(node.elts)
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            return None
        return [item for pair in zip(node.keys, node.values) for item in pair]
    if isinstance(node, ast.UnaryOp):
        return [node.operand]
    if isinstance(node, ast.BinOp):
        return [node.left, node.right]
    if isinstance(node, ast.BoolOp):
        return list(node.values)
    if isinstance(node, ast.Compare):
        return [node.left, *node.comparators]
    if isinstance(node, ast.IfExp):
        return [node.test, node.body, node.orelse]
    return None


def _rebuild(node: ast.expr, parts: list[ast.expr]) -> ast.expr:
    """``node`` with its evaluable children replaced by ``parts`` (same order as _evaluable_children)."""
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return (
            type(node)(elts=parts, ctx=ast.Load()) if not isinstance(node, ast.Set) else ast.Set(elts=parts)
        )
    if isinstance(node, ast.Dict):
        return ast.Dict(keys=parts[0::2], values=parts[1::2])
    if isinstance(node, ast.UnaryOp):
        return ast.UnaryOp(op=node.op, operand=parts[0])
    if isinstance(node, ast.BinOp):
        return ast.BinOp(left=parts[0], op=node.op, right=parts[1])
    if isinstance(node, ast.BoolOp):
        return ast.BoolOp(op=node.op, values=parts)
    if isinstance(node, ast.Compare):
        return ast.Compare(left=parts[0], ops=node.ops, comparators=parts[1:])
    return ast.IfExp(test=parts[0], body=parts[1], orelse=parts[2])
