"""Static signs that a program may try to fool its verifier; reported in metrics, never used for verdicts.

RL against a verifier can learn to exploit it. Tests decided in the parent resist objects that lie about
equality, but tests still decided inside the sandbox (loops of asserts, helper predicates, statements
expected not to raise) can be passed by code that controls its own process. Counting the programs that
redefine comparison/truthiness/hashing or reach for interpreter frames makes such reward hacking
visible in the run metrics (``suspicious_programs``).
"""

from __future__ import annotations

import ast
import warnings

DUNDERS = ("__eq__", "__ne__", "__bool__", "__hash__", "__instancecheck__", "__subclasscheck__")
FRAME_ACCESS = (
    "_getframe",
    "currentframe",
    "f_back",
    "f_locals",
    "f_globals",
    "f_builtins",
    "f_code",
    "tb_frame",
    "gi_frame",
    "cr_frame",
    "__closure__",
    "getouterframes",
    "_current_frames",
    "settrace",
    "setprofile",
)
INTROSPECTION_MODULES = ("gc", "inspect", "ctypes", "builtins")


def parse_quietly(source: str) -> ast.Module:
    """``ast.parse`` of untrusted source without printing its SyntaxWarnings (e.g. ``1if x``) to the user."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        return ast.parse(source)


def suspicious_features(code: str) -> tuple[str, ...]:
    """Reasons (sorted) why ``code`` looks like it may game a verifier; empty when none.

    Looks for definitions of :data:`DUNDERS` (methods, class-body assignments, names in strings as used
    with ``setattr``), frame access (:data:`FRAME_ACCESS` as attributes, names or strings) and imports of
    :data:`INTROSPECTION_MODULES` or use of ``__builtins__``. Code that does not parse gets no flags.
    """
    try:
        tree = parse_quietly(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return ()
    reasons: set[str] = set()
    for node in ast.walk(tree):
        reasons |= _node_reasons(node)
    return tuple(sorted(reasons))


def _node_reasons(node: ast.AST) -> set[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in DUNDERS:
        return {f"defines {node.name}"}
    if isinstance(node, ast.Name):
        if node.id in DUNDERS and not isinstance(node.ctx, ast.Load):
            return {f"defines {node.id}"}
        if node.id == "__builtins__":
            return {"uses __builtins__"}
        return {f"frame access ({node.id})"} if node.id in FRAME_ACCESS else set()
    if isinstance(node, ast.Attribute):
        return {f"frame access ({node.attr})"} if node.attr in FRAME_ACCESS else set()
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) < 200:
        found = {f"defines {name}" for name in DUNDERS if name in node.value}
        return found | {f"frame access ({name})" for name in FRAME_ACCESS if name in node.value}
    if isinstance(node, ast.Import):
        modules = {alias.name.split(".")[0] for alias in node.names}
    elif isinstance(node, ast.ImportFrom):
        modules = {(node.module or "").split(".")[0]}
    else:
        return set()
    return {f"imports {module}" for module in modules if module in INTROSPECTION_MODULES}
