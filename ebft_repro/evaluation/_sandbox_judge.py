"""The parent's side of a test: evaluate each assert's skeleton on the values the child sent back.

A skeleton (see ``_sandbox_plan.py``) is an ``ast`` expression whose placeholders ``"\\x00<k>"`` stand for
values the child computed. :func:`evaluate` interprets it with Python's own operators on the decoded
standard-library objects, lazily: a placeholder is decoded only when its value is needed, so ``a or b``
and ``x is None or x.y == 1`` keep Python's short-circuit semantics (an exception the child hit while
computing a value fails the test only if the parent needs that value).

Outcomes per test (:data:`TEST_STATUSES`): ``pass``; ``fail`` (an assert is false); ``raised`` (a
statement or a needed value raised, or the comparison itself raised, as it would in Python);
``unsupported_type`` (a needed value is of a type whose comparison the parent cannot reproduce, e.g. a
user class or a subclass; identity tests against None/True/False still work); ``undecodable`` (the child
sent a malformed or over-limit value); ``refused`` (an operation on child values that could exhaust the
parent, e.g. ``2 ** f(x)`` with a huge result); ``missing`` (no record: the child died or stopped).
"""

from __future__ import annotations

import ast
import json

from ebft_repro.evaluation._sandbox_ops import (
    BINOPS,
    COMPARE,
    FAIL,
    MISSING,
    PASS,
    RAISED,
    REFUSED,
    SAFE_FUNCTIONS,
    SAFE_VALUES,
    TEST_STATUSES,
    UNARY,
    UNDECODABLE,
    UNSUPPORTED,
    Outcome,
    check_binop,
    check_call_args,
)
from ebft_repro.evaluation._sandbox_values import DecodeBudget, Undecodable, decode_value

__all__ = [  # the statuses are defined with the operations that raise them; judged here
    "FAIL",
    "MISSING",
    "PASS",
    "RAISED",
    "REFUSED",
    "TEST_STATUSES",
    "UNDECODABLE",
    "UNSUPPORTED",
    "Outcome",
    "Holes",
    "evaluate",
    "evaluate_constant",
]


_SINGLETONS = (None, True, False, Ellipsis)
_OPAQUE = object()  # stands for a value of an unsupported type in ``x is None`` / ``x is not None``


class Holes:
    """The placeholder results of one assert, decoded lazily.

    Args:
        body: the JSON list the child sent: ``["v", value]``, ``["e", exception name]`` or ``["u", why]``.
        n_holes: how many placeholders the plan has for this assert.
        budget: decoding allowance shared by the whole verdict.
    """

    def __init__(self, body: bytes, n_holes: int, budget: DecodeBudget) -> None:
        try:
            raw = json.loads(body)
        except (ValueError, RecursionError) as err:
            raise Undecodable("malformed record") from err
        if not isinstance(raw, list) or len(raw) != n_holes:
            raise Undecodable("wrong number of values")
        for entry in raw:
            if not (isinstance(entry, list) and len(entry) == 2 and entry[0] in ("v", "e", "u")):
                raise Undecodable("malformed value entry")
            if entry[0] != "v" and not isinstance(entry[1], str):
                raise Undecodable("malformed value entry")
        self._raw, self._budget, self._values = raw, budget, {}

    def value(self, index: int) -> object:
        kind, payload = self._raw[index]
        if kind == "e":
            raise Outcome(RAISED, f"computing value {index} raised {payload[:80]}")
        if kind == "u":
            raise Outcome(UNSUPPORTED, f"value {index} cannot be compared in the parent: {payload[:120]}")
        if index not in self._values:
            self._values[index] = decode_value(payload, self._budget)
        return self._values[index]

    def is_opaque(self, index: int) -> bool:
        return self._raw[index][0] == "u"


def evaluate(node: ast.expr, holes: Holes | None) -> object:
    """Evaluate a skeleton with Python semantics; placeholders are read from ``holes``."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id.startswith("\x00"):
            if holes is None:
                raise ValueError("placeholder outside a test")
            return holes.value(int(node.id[1:]))
        return SAFE_VALUES[node.id] if node.id in SAFE_VALUES else SAFE_FUNCTIONS[node.id]
    if isinstance(node, ast.BoolOp):
        result = None
        for value in node.values:
            result = evaluate(value, holes)
            if isinstance(node.op, ast.And) != bool(result):
                return result
        return result
    if isinstance(node, ast.Compare):
        return _compare(node, holes)
    if isinstance(node, ast.UnaryOp):
        return UNARY[type(node.op)](evaluate(node.operand, holes))
    if isinstance(node, ast.BinOp):
        left, right = evaluate(node.left, holes), evaluate(node.right, holes)
        check_binop(node, left, right)
        return BINOPS[type(node.op)](left, right)
    if isinstance(node, ast.IfExp):
        return evaluate(node.body if evaluate(node.test, holes) else node.orelse, holes)
    if isinstance(node, ast.Call):
        return _call(node, holes)
    return _container(node, holes)


def evaluate_constant(node: ast.expr) -> object:
    """Evaluate a skeleton that has no placeholder (constant folding at planning time)."""
    return evaluate(node, None)


def _container(node: ast.expr, holes: Holes | None) -> object:
    if isinstance(node, ast.Dict):
        pairs = [(evaluate(k, holes), evaluate(v, holes)) for k, v in zip(node.keys, node.values)]
        return dict(pairs)
    items = [evaluate(element, holes) for element in node.elts]
    if isinstance(node, ast.List):
        return items
    return tuple(items) if isinstance(node, ast.Tuple) else set(items)


def _call(node: ast.Call, holes: Holes | None) -> object:
    name = node.func.id
    args = [evaluate(arg, holes) for arg in node.args]
    kwargs = {keyword.arg: evaluate(keyword.value, holes) for keyword in node.keywords}
    check_call_args(name, args, kwargs)
    return SAFE_FUNCTIONS[name](*args, **kwargs)


def _compare(node: ast.Compare, holes: Holes | None) -> object:
    operands = [node.left, *node.comparators]
    cache: dict[int, object] = {}

    def operand(position: int) -> object:
        if position not in cache:
            cache[position] = _operand(node, operands, position, holes)
        return cache[position]

    result: object = True
    for position, op in enumerate(node.ops):
        result = COMPARE[type(op)](operand(position), operand(position + 1))
        if not result:
            return result
    return result


def _operand(node: ast.Compare, operands: list[ast.expr], position: int, holes: Holes | None) -> object:
    """A comparison operand; a value of unsupported type may stand in ``is``/``is not`` None/True/False."""
    target = operands[position]
    if holes is not None and isinstance(target, ast.Name) and target.id.startswith("\x00"):
        index = int(target.id[1:])
        if holes.is_opaque(index) and _identity_only(node, operands, position):
            return _OPAQUE
    return evaluate(target, holes)


def _identity_only(node: ast.Compare, operands: list[ast.expr], position: int) -> bool:
    """Whether every comparison using operand ``position`` is ``is``/``is not`` against a singleton."""
    for op_index in (position - 1, position):
        if 0 <= op_index < len(node.ops):
            partner = operands[op_index + 1 if op_index == position else op_index]
            if not isinstance(node.ops[op_index], ast.Is | ast.IsNot):
                return False
            if not (isinstance(partner, ast.Constant) and any(partner.value is s for s in _SINGLETONS)):
                return False
    return True
