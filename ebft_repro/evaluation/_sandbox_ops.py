"""What the parent may compute on values a child sent, and what it refuses to.

The judge (``_sandbox_judge.py``) evaluates an assert's skeleton with the tables here: the whitelisted calls
(:data:`SAFE_FUNCTIONS`) and builtin types (:data:`SAFE_VALUES`), Python's operators by ``ast`` node, and
the cost limits that refuse an operation whose cost the child controls (``2 ** f(x)``, ``[0] * f(x)``,
``sum`` over sequences, a hash-flooding ``set``). A refusal ends the test with status ``refused``; the
statuses and :class:`Outcome` are defined here so that both modules raise the same thing.
"""

from __future__ import annotations

import ast
import builtins
import math
import operator
from decimal import Decimal
from fractions import Fraction

from ebft_repro.evaluation._sandbox_values import Undecodable, check_hash_spread

PASS, FAIL, RAISED, UNSUPPORTED = "pass", "fail", "raised", "unsupported_type"
UNDECODABLE, REFUSED, MISSING = "undecodable", "refused", "missing"
TEST_STATUSES = (PASS, FAIL, RAISED, UNSUPPORTED, UNDECODABLE, REFUSED, MISSING)

_MAX_RESULT_BITS = 1 << 22  # int results of ** and << on child values
_MAX_REPEAT = 10_000_000  # elements of seq * n on child values
_MAX_ITERATION = 1_000_000  # length of a range a whitelisted builtin may walk
_MAX_NDIGITS = 10_000  # round(x, ndigits) and int(Decimal) magnitudes


class Outcome(Exception):
    """Ends the judging of one test with ``status`` (one of TEST_STATUSES) and a reason."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def _refuse(reason: str) -> Outcome:
    return Outcome(REFUSED, reason)


def check_call_args(name: str, args: list, kwargs: dict) -> None:
    """Refuse a whitelisted call whose cost the child controls (long ranges, ``sum`` of sequences, digits)."""
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

BINOPS = {
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
UNARY = {ast.Not: operator.not_, ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Invert: operator.invert}
COMPARE = {
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
        check_call_args("in", [container], {})
    return item in container


def check_binop(node: ast.BinOp, left: object, right: object) -> None:
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
