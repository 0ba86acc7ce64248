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
import builtins
import json
import math
import operator
from decimal import Decimal
from fractions import Fraction

from ebft_repro.evaluation._sandbox_values import DecodeBudget, Undecodable, check_hash_spread, decode_value

PASS, FAIL, RAISED, UNSUPPORTED = "pass", "fail", "raised", "unsupported_type"
UNDECODABLE, REFUSED, MISSING = "undecodable", "refused", "missing"
TEST_STATUSES = (PASS, FAIL, RAISED, UNSUPPORTED, UNDECODABLE, REFUSED, MISSING)

_MAX_RESULT_BITS = 1 << 22  # int results of ** and << on child values
_MAX_REPEAT = 10_000_000  # elements of seq * n on child values
_MAX_ITERATION = 1_000_000  # length of a range a whitelisted builtin may walk
_MAX_NDIGITS = 10_000  # round(x, ndigits) and int(Decimal) magnitudes
_SINGLETONS = (None, True, False, Ellipsis)
_OPAQUE = object()  # stands for a value of an unsupported type in ``x is None`` / ``x is not None``


class Outcome(Exception):
    """Ends the judging of one test with ``status`` (one of TEST_STATUSES) and a reason."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def _refuse(reason: str) -> Outcome:
    return Outcome(REFUSED, reason)


def _checked_args(name: str, args: list, kwargs: dict) -> None:
    for arg in args:
        if isinstance(arg, range):
            try:
                too_long = len(arg) > _MAX_ITERATION
            except OverflowError:
                too_long = True
            if too_long:
                raise _refuse(f"{name}() over a range longer than {_MAX_ITERATION}")
    if (
        name == "sum"
        and args
        and not all(isinstance(x, int | float | complex | Fraction | Decimal) for x in args[0])
    ):
        raise _refuse("sum() of non-numbers (quadratic on sequences)")
    if name == "round" and len(args) > 1 and isinstance(args[1], int) and abs(args[1]) > _MAX_NDIGITS:
        raise _refuse("round() to more than 10,000 digits")
    if name == "int" and args and isinstance(args[0], Decimal) and args[0].is_finite():
        if args[0].adjusted() > _MAX_NDIGITS:
            raise _refuse("int() of a Decimal with more than 10,000 digits")


def _hashed_builder(kind: type):
    def build(*args):
        if args:
            try:
                check_hash_spread(args[0])  # the same hash-flooding check as decoding
            except Undecodable as err:
                raise _refuse(f"{kind.__name__}(): {err}") from err
        return kind(*args)

    return build


SAFE_FUNCTIONS = {
    "abs": abs,
    "all": all,
    "any": any,
    "bool": bool,
    "float": float,
    "int": int,
    "isinstance": isinstance,
    "len": len,
    "list": list,
    "max": max,
    "min": min,
    "round": round,
    "sorted": sorted,
    "sum": sum,
    "tuple": tuple,
    "set": _hashed_builder(set),
    "frozenset": _hashed_builder(frozenset),
    "math.isclose": math.isclose,
    "math.fabs": math.fabs,
    "isclose": math.isclose,
    "fabs": math.fabs,
}
"""Calls the parent makes itself (when the program does not rebind the name)."""

SAFE_VALUES = {
    name: getattr(builtins, name)
    for name in (
        "int",
        "float",
        "complex",
        "bool",
        "str",
        "bytes",
        "bytearray",
        "list",
        "tuple",
        "dict",
        "set",
    )
    + ("frozenset",)
}
"""Builtin types usable as values (``isinstance(x, (int, float))``)."""

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.LShift: operator.lshift,
    ast.RShift: operator.rshift,
    ast.BitOr: operator.or_,
    ast.BitXor: operator.xor,
    ast.BitAnd: operator.and_,
    ast.MatMult: operator.matmul,
}
_UNARY = {ast.Not: operator.not_, ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Invert: operator.invert}
_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
    ast.In: lambda a, b: _contains(b, a),
    ast.NotIn: lambda a, b: not _contains(b, a),
}


def _contains(container: object, item: object) -> bool:
    # ``x in range(...)`` is a linear scan unless x is an int: bound it like other iterations.
    if isinstance(container, range) and not isinstance(item, int):
        _checked_args("in", [container], {})
    return item in container


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
        return _UNARY[type(node.op)](evaluate(node.operand, holes))
    if isinstance(node, ast.BinOp):
        left, right = evaluate(node.left, holes), evaluate(node.right, holes)
        _check_binop(node, left, right)
        return _BINOPS[type(node.op)](left, right)
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
    _checked_args(name, args, kwargs)
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
        result = _COMPARE[type(op)](operand(position), operand(position + 1))
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


def _check_binop(node: ast.BinOp, left: object, right: object) -> None:
    """Refuse operations whose cost the child controls (no limit applies to trusted constants only)."""
    if isinstance(node.left, ast.Constant) and isinstance(node.right, ast.Constant):
        return
    if isinstance(node.op, ast.Pow) and isinstance(right, int) and abs(right) > 64:
        bits = max(_bits(left), 1)
        if bits > 1 and bits * abs(right) > _MAX_RESULT_BITS:
            raise _refuse("power with a huge result")
    elif isinstance(node.op, ast.LShift) and isinstance(right, int) and right > _MAX_RESULT_BITS and left:
        raise _refuse("shift with a huge result")
    elif isinstance(node.op, ast.Mult):
        for seq, count in ((left, right), (right, left)):
            if isinstance(count, int) and hasattr(seq, "__len__") and not isinstance(seq, int | dict | set):
                if count > 0 and len(seq) * count > _MAX_REPEAT:
                    raise _refuse("repetition with a huge result")
    elif isinstance(node.op, ast.Mod) and isinstance(left, str | bytes | bytearray):
        if not isinstance(node.left, ast.Constant):
            raise _refuse("%-formatting with a format string from the program")


def _bits(value: object) -> int:
    if isinstance(value, int):
        return 0 if value in (0, 1, -1) else value.bit_length()
    if isinstance(value, Fraction):
        return max(_bits(value.numerator), _bits(value.denominator))
    return 0
