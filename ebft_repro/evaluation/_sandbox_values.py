"""Parent-side decoding of the values a sandbox child reports, with size, hash and time limits.

The child (``_sandbox_harness.py``) encodes each value as JSON with type tags, chosen by type identity.
Decoding rebuilds the real standard-library objects, so the parent compares them with Python's own
``==``: ``Counter(a=2) == {"a": 2}``, ``Fraction(1, 2) == 0.5``, ``True == 1`` and ``deque([1]) != [1]``
all behave exactly as in plain Python. Namedtuples arrive as tuples (their ``==`` is tuple equality).

Tags: JSON null/true/false/string are None/bool/str; ``["i", hex]`` int, ``["f", repr]`` float,
``["c", re, im]`` complex, ``["b"|"ba", hex]`` bytes/bytearray, ``["l"|"t"|"s"|"fs", item...]``
list/tuple/set/frozenset, ``["d"|"od"|"dd"|"C", k, v, ...]`` dict/OrderedDict/defaultdict/Counter,
``["q", maxlen, item...]`` deque, ``["r", start, stop, step]`` range, ``["F", num, den]`` Fraction,
``["D", str]`` Decimal, ``["T", name]`` one of those classes itself (``type(f(x)) == int``).

The data is untrusted, so decoding is bounded (:class:`DecodeBudget`): a node budget per verdict, a cap
on distinct elements sharing one hash value in every hashed container (a forged set of colliding ints
would otherwise take quadratic time to build), a depth cap, caps on int/Decimal sizes and a time limit.
Anything over a limit raises :class:`Undecodable`.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from fractions import Fraction

MAX_NODES = 200_000  # per verdict, over every value decoded for it
MAX_SAME_HASH = 32  # distinct elements of one hashed container that share a hash value
MAX_DEPTH = 100
MAX_INT_HEX_DIGITS = 25_000  # 100,000 bits
MAX_NUMBER_CHARS = 10_000  # float/complex/Decimal text
MAX_DECODE_S = 1.0  # per verdict

_SEQUENCES = {"l": list, "t": tuple}
_CLASSES = {
    cls.__name__: cls
    for cls in (int, float, complex, bool, str, bytes, bytearray, list, tuple, dict, set, frozenset, range)
    + (type(None), OrderedDict, defaultdict, deque, Counter, Fraction, Decimal)
}
_SETS = {"s": set, "fs": frozenset}
_MAPPINGS = {"d": dict, "od": OrderedDict, "dd": defaultdict, "C": Counter}


class Undecodable(ValueError):
    """The child sent something that is not a well-formed value within the limits."""


class DecodeBudget:
    """Node and time allowance shared by every value decoded for one verdict."""

    def __init__(self, max_nodes: int = MAX_NODES, max_seconds: float = MAX_DECODE_S) -> None:
        self.nodes_left = max_nodes
        self.deadline = time.monotonic() + max_seconds

    def spend(self, n_nodes: int) -> None:
        """Charge ``n_nodes``; raise :class:`Undecodable` when the nodes or the time run out."""
        self.nodes_left -= n_nodes
        if self.nodes_left < 0:
            raise Undecodable(f"value larger than {MAX_NODES} nodes")
        if time.monotonic() > self.deadline:
            raise Undecodable(f"decoding took longer than {MAX_DECODE_S:g}s")


def decode_value(obj: object, budget: DecodeBudget, depth: int = 0) -> object:
    """Rebuild the value encoded as ``obj`` (already parsed JSON).

    Raises:
        Undecodable: on a malformed encoding or when a limit is exceeded.
    """
    budget.spend(1)
    if depth > MAX_DEPTH:
        raise Undecodable(f"value nested deeper than {MAX_DEPTH}")
    if obj is None or isinstance(obj, bool | str):
        return obj
    if not isinstance(obj, list) or not obj or not isinstance(obj[0], str):
        raise Undecodable("malformed value")
    tag, rest = obj[0], obj[1:]
    if tag in _SEQUENCES:
        return _SEQUENCES[tag](_items(rest, budget, depth))
    if tag in _SETS:
        values = _items(rest, budget, depth)
        check_hash_spread(values)
        return _SETS[tag](values)
    if tag in _MAPPINGS:
        return _mapping(tag, rest, budget, depth)
    if tag == "q":
        _expect(len(rest) >= 1)
        maxlen = None if rest[0] is None else _int(rest[0])
        _expect(maxlen is None or len(rest) - 1 <= maxlen < 1 << 62)
        return deque(_items(rest[1:], budget, depth), maxlen)
    return _scalar(tag, rest)


def _items(values: list, budget: DecodeBudget, depth: int) -> list:
    if len(values) > budget.nodes_left:  # refuse a huge container before touching its elements
        raise Undecodable(f"value larger than {MAX_NODES} nodes")
    return [decode_value(value, budget, depth + 1) for value in values]


def _mapping(tag: str, flat: list, budget: DecodeBudget, depth: int) -> dict:
    _expect(len(flat) % 2 == 0)
    values = _items(flat, budget, depth)
    check_hash_spread(values[0::2])
    pairs = zip(values[0::2], values[1::2])
    if tag == "dd":
        return defaultdict(None, pairs)
    return _MAPPINGS[tag](dict(pairs)) if tag == "C" else _MAPPINGS[tag](pairs)


def check_hash_spread(keys: Iterable) -> None:
    """Refuse keys that would make a hash table quadratic: many *distinct* keys sharing one hash value.

    Raises:
        Undecodable: when more than MAX_SAME_HASH distinct keys share a hash, or a key is unhashable.
    """
    seen: dict[int, list] = {}
    for key in keys:
        try:
            same = seen.setdefault(hash(key), [])
        except TypeError as err:
            raise Undecodable("unhashable element in a hashed container") from err
        if any(key == other for other in same):
            continue  # a duplicate costs one comparison in the real table too
        if len(same) >= MAX_SAME_HASH:
            raise Undecodable("too many distinct elements with one hash value (hash flooding)")
        same.append(key)


def _scalar(tag: str, rest: list) -> object:
    try:
        if tag == "i" and len(rest) == 1:
            return _int(rest[0])
        if tag == "f" and len(rest) == 1:
            return float(_text(rest[0], 40))
        if tag == "c" and len(rest) == 2:
            return complex(float(_text(rest[0], 40)), float(_text(rest[1], 40)))
        if tag in ("b", "ba") and len(rest) == 1:
            data = bytes.fromhex(_text(rest[0], None))
            return data if tag == "b" else bytearray(data)
        if tag == "r" and len(rest) == 3:
            return range(_int(rest[0]), _int(rest[1]), _int(rest[2]))
        if tag == "F" and len(rest) == 2:
            return Fraction(_int(rest[0]), _int(rest[1]))
        if tag == "D" and len(rest) == 1:
            return Decimal(_text(rest[0], MAX_NUMBER_CHARS))
        if tag == "T" and len(rest) == 1 and rest[0] in _CLASSES:
            return _CLASSES[rest[0]]
    except Undecodable:
        raise
    except (ValueError, ZeroDivisionError, InvalidOperation) as err:
        raise Undecodable(f"malformed {tag!r} value") from err
    raise Undecodable(f"unknown tag {tag!r}")


def _int(text: object) -> int:
    digits = _text(text, MAX_INT_HEX_DIGITS + 1)
    try:
        return int(digits, 16)  # base 16 is not subject to the int/str digit limit
    except ValueError as err:
        raise Undecodable("malformed int") from err


def _text(value: object, max_chars: int | None) -> str:
    if not isinstance(value, str) or (max_chars is not None and len(value) > max_chars):
        raise Undecodable("malformed or oversized number")
    return value


def _expect(condition: bool) -> None:
    if not condition:
        raise Undecodable("malformed value")
