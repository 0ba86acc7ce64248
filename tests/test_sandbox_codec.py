"""The sandbox's value codec (``_sandbox_codec.py``) in-process, without any sandbox process.

Round trips go encoder -> JSON bytes -> decoder, as between the candidate and the driver; calls go through
the driver's real :class:`Channel` wired straight to the candidate's request handler, so argument
mutation, returned arguments and exceptions are checked as they cross. Unsupported values raise
``Uncrossable`` when encoded; malformed or over-limit data raises ``Undecodable`` when decoded.
"""

import enum
import math
import os
import re
import sys
import threading
from collections import Counter, OrderedDict, defaultdict, deque, namedtuple
from dataclasses import FrozenInstanceError, dataclass
from decimal import Decimal
from fractions import Fraction

import pytest

from ebft_repro.evaluation import _sandbox_candidate as candidate
from ebft_repro.evaluation import _sandbox_codec as codec
from ebft_repro.evaluation._sandbox_codec import Decoder, Encoder, Uncrossable, Undecodable
from ebft_repro.evaluation._sandbox_driver import Channel, Proxy


@pytest.fixture(autouse=True)
def _fresh_incidents(monkeypatch):
    """Incidents are recorded globally (the driver reads them per test); keep each test's own."""
    monkeypatch.setattr(codec.Incident, "seen", [])
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # the candidate's handler swaps sys.stdout


def wire(obj):
    return codec.loads(codec.dumps(obj))


def cross(value, classes=None):
    """``value`` as the driver gets it from the candidate."""
    return Decoder((), classes).decode(wire(Encoder().encode(value)))


def _ordered():
    value = OrderedDict(a=1, b=2)
    value.move_to_end("a")
    return value


ROUND_TRIPS = [
    None, True, False, 0, -5, 2**53 - 1, 2**53, -(2**53), 10**5000, -(2**70), 1.5, -0.0, math.inf, -math.inf,
    1e-310, 0.1 + 0.2, 1 + 2j, complex(math.inf, -0.0), 'é\ud800\n"\x00', "", b"\x00\xff", bytearray(b"ab"),
    [1, [2, (3,)]], (), (1,), {1, "a", (2, 3)}, frozenset({frozenset({1})}), {1: "a", (2,): [None], "k": {}},
    Counter("aab"), _ordered(), defaultdict(list, {1: [2]}), defaultdict(int), deque([1, 2], maxlen=4),
    deque([]), Fraction(-7, 3), Decimal("1.50"), Decimal("-Infinity"), Decimal("9.99e999989"),
    range(1, 10, 3), range(-(10**30), 10**30, 7), {"nested": [Counter(a=1), {Fraction(1, 2): Decimal("2")}]},
    int, bool, str, bytes, dict, frozenset, object, type,
]  # fmt: skip


@pytest.mark.parametrize(
    "value", ROUND_TRIPS, ids=[f"{type(v).__name__}{i}" for i, v in enumerate(ROUND_TRIPS)]
)
def test_values_round_trip_with_their_types(value):
    decoded = cross(value)
    assert decoded == value and type(decoded) is type(value)
    if isinstance(value, str | Decimal | float | complex):
        assert repr(decoded) == repr(value)  # exact: -0.0, Decimal('1.50'), surrogates
    if isinstance(value, OrderedDict | deque | defaultdict | dict):
        assert list(decoded) == list(value)
    if isinstance(value, deque | defaultdict):
        assert getattr(decoded, "maxlen", None) == getattr(value, "maxlen", None)
        assert getattr(decoded, "default_factory", None) is getattr(value, "default_factory", None)


def test_special_floats_and_decimals():
    assert math.isnan(cross(math.nan)) and cross(Decimal("NaN")).is_nan()
    assert math.copysign(1, cross(-0.0)) == -1
    assert cross(Decimal("-0")).is_signed()
    assert Encoder().encode(2**53 - 1) == 2**53 - 1 and Encoder().encode(2**53) == ["i", format(2**53, "x")]


def test_a_defaultdict_keeps_only_builtin_factories():
    assert cross(defaultdict(lambda: 0, {1: 2})).default_factory is None
    assert cross(defaultdict(set)).default_factory is set


Point = namedtuple("Point", "x y")


class Pair(namedtuple("Pair", "a b")):
    def __eq__(self, other):  # a lie the driver-made class does not have
        return True

    __hash__ = tuple.__hash__

    def swap(self):
        return self.b, self.a


@dataclass
class Box:
    x: int
    y: list


@dataclass(frozen=True, order=True)
class Version:
    major: int

    def bump(self):
        return Version(self.major + 1)


def test_namedtuples_arrive_as_driver_made_namedtuples():
    classes = {}
    first, second = cross(Point(1, 2), classes), cross(Point(3, 4), classes)
    assert (
        first == (1, 2)
        and first.x == 1
        and type(first).__name__ == "Point"
        and type(first)._fields == ("x", "y")
    )
    assert type(first) is type(second) and type(first) is not Point
    lying = cross(Pair(0, 0), classes)
    assert lying != (1, 2) and lying == (0, 0)  # tuple equality, not the program's __eq__
    with pytest.raises(Uncrossable, match="swap"):
        lying.swap()


def test_dataclasses_arrive_as_driver_made_dataclasses():
    classes = {}
    box = cross(Box(1, [2]), classes)
    assert box == cross(Box(1, [2]), classes) and box != cross(Box(1, [3]), classes)
    assert (type(box).__name__, box.x, box.y) == ("Box", 1, [2]) and type(box) is not Box
    low, high = cross(Version(1), classes), cross(Version(2), classes)
    assert low < high and hash(low) == hash(cross(Version(1), classes))
    with pytest.raises(FrozenInstanceError):
        low.major = 5
    with pytest.raises(Uncrossable, match="bump"):
        low.bump()


class Color(enum.Enum):
    RED = 1
    GREEN = 2


class Level(enum.IntEnum):
    LOW = 1


class Mode(enum.StrEnum):
    READ = "r"


class Perm(enum.Flag):
    R = 1


def test_enum_members_arrive_as_members_of_one_driver_made_class():
    classes = {}
    red = cross(Color.RED, classes)
    assert (red.name, red.value, type(red).__name__) == ("RED", 1, "Color") and type(red) is not Color
    assert cross(Color.RED, classes) is red and cross(Color.GREEN, classes) is type(red).GREEN
    assert cross(Level.LOW, classes) == 1 and cross(Mode.READ, classes) == "r"
    enum_class = Decoder((), classes).decode(wire(Encoder().enum_class(Color)))
    assert enum_class is type(red) and enum_class.RED is red  # a test's `Color.RED` is the same member
    with pytest.raises(Uncrossable):
        Encoder().encode(Perm.R)


def test_dict_views_iterators_and_generators():
    views = {"a": 1, "b": 2}
    assert type(cross(views.keys())) is type(views.keys()) and cross(views.keys()) == {"a", "b"}
    assert list(cross(views.values())) == [1, 2] and list(cross(views.items())) == [("a", 1), ("b", 2)]
    drained = cross(x * x for x in range(4))
    assert next(drained) == 0 and list(drained) == [1, 4, 9]
    assert list(cross(iter(range(codec.MAX_DRAINED)))) == list(range(codec.MAX_DRAINED))
    with pytest.raises(Uncrossable, match="longer"):
        Encoder().encode(iter(range(codec.MAX_DRAINED + 1)))


def test_references_cycles_and_aliasing_are_preserved():
    shared = [1]
    decoded = cross([shared, shared, (shared,), {"k": shared}])
    assert decoded[0] is decoded[1] is decoded[2][0] is decoded[3]["k"]
    loop: list = []
    loop.append(loop)
    decoded = cross(loop)
    assert decoded[0] is decoded
    mapping: dict = {}
    mapping["self"] = (mapping, [mapping])
    decoded = cross(mapping)
    assert decoded["self"][0] is decoded and decoded["self"][1][0] is decoded
    distinct = cross([[], []])
    assert distinct[0] == distinct[1] and distinct[0] is not distinct[1]


class Loopback(Channel):
    """The driver's channel wired to the candidate's request handler, through real JSON bytes."""

    def __init__(self, code: str):
        super().__init__(-1, -1)
        self.scope: dict = {}
        exec(compile(code, "<solution>", "exec"), self.scope)

    def ask(self, request):
        return wire(candidate._answer(wire(request), self.scope))


PROGRAM = """
from collections import deque
class MyError(ValueError):
    pass
class Hidden:
    pass
def sort_in_place(xs):
    xs.sort()
    return xs
def fill(d, key, into=None):
    d[key] = d.get(key, 0) + 1
    d.setdefault('nested', []).append(key)
    if into is not None:
        into.add(key)
def mutate_all(xs, s, b, q, od):
    xs[0].append('in')
    s.discard(1)
    b[0:1] = b'Z'
    q.rotate(1)
    od.move_to_end('a')
def fail(kind):
    raise {'mine': MyError('mine'), 'key': KeyError('k'), 'exit': SystemExit(3)}[kind]
def hidden():
    return Hidden()
def same(a, b):
    return a is b
"""


def test_calls_change_arguments_in_place_and_return_them_as_themselves():
    channel = Loopback(PROGRAM)
    data = [3, 1, 2]
    assert Proxy(channel, "sort_in_place")(data) is data and data == [1, 2, 3]
    counts, seen = {"nested": []}, set()
    nested = counts["nested"]
    assert Proxy(channel, "fill")(counts, "a", into=seen) is None
    assert counts == {"nested": ["a"], "a": 1} and counts["nested"] is nested and seen == {"a"}
    inner, s, b, q, od = [], {1, 2}, bytearray(b"ab"), deque([1, 2, 3], maxlen=3), OrderedDict(a=1, b=2)
    args = ([inner], s, b, q, od)
    Proxy(channel, "mutate_all")(*args)
    assert (inner, s, b, list(q), q.maxlen, list(od)) == (
        ["in"],
        {2},
        bytearray(b"Zb"),
        [3, 1, 2],
        3,
        ["b", "a"],
    )
    x = []
    assert Proxy(channel, "same")(x, x) is True and Proxy(channel, "same")(x, []) is False


def test_exceptions_cross_as_builtin_classes_or_driver_made_subclasses():
    channel = Loopback(PROGRAM)
    with pytest.raises(ValueError, match="mine") as caught:
        Proxy(channel, "fail")("mine")
    my_error = channel.exception_class(candidate._exception_class(channel.scope["MyError"]))
    assert (
        type(caught.value) is my_error and my_error.__name__ == "MyError" and issubclass(my_error, ValueError)
    )
    with pytest.raises(KeyError):
        Proxy(channel, "fail")("key")
    with pytest.raises(SystemExit):
        Proxy(channel, "fail")("exit")
    with pytest.raises(Uncrossable, match="Hidden"):
        Proxy(channel, "hidden")()
    with pytest.raises(Uncrossable):  # a function cannot go in either
        Proxy(channel, "same")(len, 1)


# The call below sends two containers: its list argument (id 0) and its keyword dict (id 1).
FORGED_REPLIES = [
    (["ok", ["@", 7], [["l", 0], ["d", 1]], ""], "malformed"),  # points at a container that was not sent
    (["ok", 1, [["d", 0], ["d", 1]], ""], "type"),  # the list argument comes back as a dict
    (["ok", 1, [["l", 1], ["d", 1]], ""], "state"),  # state for the wrong argument
    (["ok", 1, [["l", 0]], ""], "malformed"),  # state missing for an argument
    (["ok", 1, [["@", 0], ["d", 1]], ""], "state"),
    (["raise", "ValueError"], "malformed"), (["what", 1], "malformed"), ([], "malformed"), (3, "malformed"),
]  # fmt: skip


@pytest.mark.parametrize(("reply", "match"), FORGED_REPLIES)
def test_forged_replies_are_undecodable(reply, match):
    requests_r, requests_w = os.pipe()
    replies_r, replies_w = os.pipe()
    try:
        codec.send(replies_w, reply)  # queued before the request, as a candidate could
        with pytest.raises(Undecodable, match=match):
            Channel(requests_w, replies_r).call("f", ([1],), {})
    finally:
        for fd in (requests_r, requests_w, replies_r, replies_w):
            os.close(fd)


class _User:
    pass


class _SubInt(int):
    pass


class _SubStr(str):
    def startswith(self, *args):
        return True


class _SubDict(dict):
    pass


class _SubList(list):
    pass


def _deep(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


UNCROSSABLE = [
    _User(), _SubInt(3), _SubStr("xx"), [1, _SubDict()], _SubList(), re.match("a", "a"), len, lambda: 0, os,
    type(None), _User, Perm.R, iter(range(codec.MAX_DRAINED + 1)), _deep(codec.MAX_DEPTH + 2), {1: object()},
]  # fmt: skip


@pytest.mark.parametrize(
    "value", UNCROSSABLE, ids=[f"{type(v).__name__}{i}" for i, v in enumerate(UNCROSSABLE)]
)
def test_other_values_are_uncrossable(value):
    with pytest.raises(Uncrossable):
        Encoder().encode(value)


def test_uncrossable_is_recorded_even_when_caught():
    try:
        Encoder().encode(_User())
    except Exception:  # noqa: BLE001 - what a test's `except Exception` would do
        pytest.fail("an Uncrossable must not be an Exception")
    except BaseException:  # noqa: BLE001
        pass
    assert [type(incident) for incident in codec.Incident.seen] == [Uncrossable]


MALFORMED = [
    ["zz", 1], ["F", 1, 0], ["s", 0, ["l", 1]], ["d", 0, 1], ["@", 5], ["l", 0, ["l", 0]], {"i": 1}, [], [1],
    ["i", "zz"], ["T", "eval"], ["T", "NoneType"], ["dd", 0, "eval"], ["q", 0, -1], ["r"], ["c", "x", 1],
    ["nt", "P", ["x"], 1, 2], ["nt", "P", ["class"], 1], ["nt", "P", ["_x"], 1],
    ["dc", "P", ["x"], [1, 1, 1]], ["en", "E", "Enum", [["A", 1]], "B"], ["en", "E", "Bogus", [], None],
    ["en", "E", "IntEnum", [["A", "x"]], "A"],
    ["D", ["l", 0]], ["b", "xyz"], ["ba", 0, "q"], ["it", ["@", 9]], ["dk", 1],
]  # fmt: skip


@pytest.mark.parametrize("obj", MALFORMED, ids=[str(i) for i in range(len(MALFORMED))])
def test_malformed_values_are_undecodable(obj):
    with pytest.raises(Undecodable):
        Decoder().decode(wire(obj))


@pytest.mark.parametrize("base", ["__class__", "property", "reduce", "DynamicClassAttribute", "verify"])
def test_an_enum_base_must_be_an_enum_type(base):
    # the candidate names the base; anything but Enum/IntEnum/StrEnum must not build other objects
    with pytest.raises(Undecodable):
        Decoder().decode(["en", "E", base, [["x", 5]], None])


@pytest.mark.parametrize("data", [b"{", b"[1,", b"\xff", b"[" * 100_000 + b"]" * 100_000])
def test_malformed_messages_are_undecodable(data):
    with pytest.raises(Undecodable):
        codec.loads(data)


def _on_a_fresh_stack(function):
    """Run ``function`` in a new thread, whose call stack is as shallow as the driver's (pytest's is not)."""
    out: list = []

    def run():
        try:
            out.append(function())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            out.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


def test_depth_limit():
    deep = _deep(codec.MAX_DEPTH - 1)  # within the documented limit, on a stack as shallow as the driver's
    assert _on_a_fresh_stack(lambda: cross(deep)) == deep
    nested: list = ["l", 0]
    for index in range(1, codec.MAX_DEPTH + 2):
        nested = ["l", index, nested]
    with pytest.raises(Undecodable, match="limit"):
        _on_a_fresh_stack(lambda: Decoder().decode(wire(nested)))
    with pytest.raises(Uncrossable, match="deeper"):
        Encoder().encode(_deep(codec.MAX_DEPTH + 1))


def test_node_limit(monkeypatch):
    big = cross(list(range(10**5)))  # 10^5-element lists cross with the real limits
    assert big == list(range(10**5)) and codec.MAX_NODES > 3 * 10**5
    monkeypatch.setattr(codec, "MAX_NODES", 1000)
    assert Decoder().decode(wire(Encoder().encode(list(range(998))))) == list(range(998))
    with pytest.raises(Undecodable, match="limit"):
        Decoder().decode(wire(Encoder().encode(list(range(1000)))))


def _writer(write_fd: int, chunks: list[bytes]) -> threading.Thread:
    """Write ``chunks`` to a pipe from another thread (a pipe holds only 64 KiB), then close it."""

    def write() -> None:
        for chunk in chunks:
            while chunk:
                chunk = chunk[os.write(write_fd, chunk) :]
        os.close(write_fd)

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def test_message_size_limit():
    """A message over the limit is refused but read past, so the next one is still understood."""
    assert codec.MAX_MESSAGE_BYTES == 16 << 20
    big, small = codec.dumps("x" * (16 << 20)), codec.dumps(["ok", 1])
    read_fd, write_fd = os.pipe()
    frames = [len(data).to_bytes(8, "big") + data for data in (codec.dumps("x" * (15 << 20)), big, small)]
    thread = _writer(write_fd, frames)
    try:
        assert len(codec.receive(read_fd)) == 15 << 20
        with pytest.raises(Undecodable, match="larger"):
            codec.receive(read_fd)
        assert codec.receive(read_fd) == ["ok", 1]
        assert codec.receive(read_fd) is None
    finally:
        thread.join()
        os.close(read_fd)


def test_framed_messages_over_a_pipe():
    read_fd, write_fd = os.pipe()
    try:
        codec.send(write_fd, ["ok", [1, "é"], None])
        assert codec.receive(read_fd) == ["ok", [1, "é"], None]
        codec.send(write_fd, ["call", "f", [1.5, None]], trusted=True)  # the driver's own messages
        assert codec.receive(read_fd, trusted=True) == ["call", "f", [1.5, None]]
        os.write(write_fd, (codec.MAX_SKIPPED_BYTES + 1).to_bytes(8, "big"))  # no message is this long
        with pytest.raises(codec.Unframed):
            codec.receive(read_fd)
        os.write(write_fd, (100).to_bytes(8, "big") + b"[1,2")  # then the writer goes away mid-message
        os.close(write_fd)
        write_fd = -1
        assert codec.receive(read_fd) is None
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
