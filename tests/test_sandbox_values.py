"""Parent-side pieces of the sandbox without a child process: encoding round trips, decoding limits,
test planning (what reaches the child), parent-side evaluation and the suspicious-program flags."""

import ast
import json
import math
import sys
from _json import encode_basestring_ascii
from collections import Counter, OrderedDict, defaultdict, deque, namedtuple
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from ebft_repro.evaluation import _sandbox_judge as judge
from ebft_repro.evaluation._sandbox_flags import suspicious_features
from ebft_repro.evaluation._sandbox_plan import plan_tests
from ebft_repro.evaluation._sandbox_values import DecodeBudget, Undecodable, decode_value

HARNESS = Path(__file__).resolve().parents[1] / "ebft_repro" / "evaluation" / "_sandbox_harness.py"


@pytest.fixture(scope="module")
def encoder():
    """The child's encoder, built from the harness source without running the harness."""
    source = HARNESS.read_text().rsplit("\n_main()", 1)[0]
    namespace: dict = {}
    exec(compile(source, str(HARNESS), "exec"), namespace)
    encode, unsupported = namespace["_make_encoder"](sys, encode_basestring_ascii)
    return lambda value: json.loads(encode(value, 0)), unsupported


def _ordered():
    value = OrderedDict(a=1, b=2)
    value.move_to_end("a")
    return value


Point = namedtuple("Point", "x y")
ROUND_TRIPS = [
    None,
    True,
    False,
    0,
    -5,
    10**50,
    -(2**70),
    1.5,
    -0.0,
    math.inf,
    1e-310,
    1 + 2j,
    'é\ud800\n"',
    b"\x00\xff",
    bytearray(b"ab"),
    [1, [2, (3,)]],
    (),
    {1, "a", (2, 3)},
    frozenset({frozenset({1})}),
    {1: "a", (2,): [None]},
    Counter("aab"),
    _ordered(),
    defaultdict(list, {1: [2]}),
    deque([1, 2], maxlen=4),
    deque([]),
    Fraction(-7, 3),
    Decimal("1.50"),
    Decimal("-Infinity"),
    range(1, 10, 3),
    {"nested": [Counter(a=1), {Fraction(1, 2): Decimal("2")}]},
    int,
    type(None),
    Counter,
    Fraction,
]


@pytest.mark.parametrize(
    "value", ROUND_TRIPS, ids=[type(v).__name__ + str(i) for i, v in enumerate(ROUND_TRIPS)]
)
def test_values_round_trip_with_their_types(encoder, value):
    encode, _ = encoder
    decoded = decode_value(encode(value), DecodeBudget())
    assert decoded == value and type(decoded) is type(value)
    if isinstance(value, OrderedDict | deque):
        assert list(decoded) == list(value) and getattr(decoded, "maxlen", None) == getattr(
            value, "maxlen", None
        )


def test_special_floats_and_namedtuples(encoder):
    encode, _ = encoder
    assert math.isnan(decode_value(encode(math.nan), DecodeBudget()))
    assert decode_value(encode(Decimal("NaN")), DecodeBudget()).is_nan()
    decoded = decode_value(encode(Point(1, 2)), DecodeBudget())
    assert decoded == (1, 2) and type(decoded) is tuple  # a namedtuple's == is tuple equality


class _Liar:
    def __eq__(self, other):
        return True


class _SubInt(int):
    pass


class _SubDict(dict):
    pass


class _LyingPoint(namedtuple("P", "a b")):
    def __eq__(self, other):
        return True


def _cycle():
    value = []
    value.append(value)
    return value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (_Liar(), "type _Liar"),
        (_SubInt(3), "type _SubInt"),
        ([1, _SubDict()], "type _SubDict"),
        (_LyingPoint(1, 2), "type _LyingPoint"),
        (_cycle(), "nested deeper than 100"),
        (iter([1]), "type list_iterator"),
    ],
)
def test_other_types_are_reported_unsupported(encoder, value, reason):
    encode, unsupported = encoder
    with pytest.raises(unsupported, match=reason):
        encode(value)


@pytest.mark.parametrize("tag", ["s", "fs", "d", "C"])
def test_hash_flooding_is_refused_quickly(tag):
    colliding = [["i", format(i * ((1 << 61) - 1), "x")] for i in range(1, 60_001)]
    items = (
        [x for pair in zip(colliding, [None] * len(colliding)) for x in pair]
        if tag in ("d", "C")
        else colliding
    )
    # No time limit: the refusal must come from the hash-spread check itself (which runs before any hashed
    # container is built), not from the decoding deadline, so the test does not depend on machine load.
    with pytest.raises(Undecodable, match="hash"):
        decode_value([tag, *items], DecodeBudget(max_seconds=math.inf))


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        (["l", *[["i", "1"]] * 250_000], "nodes"),
        (["i", "f" * 30_000], "number"),
        (["D", "1" * 20_000], "number"),
        (["F", "1", "0"], "malformed"),
        (["zz", 1], "unknown tag"),
        (["s", ["l"]], "unhashable"),
        ({"i": 1}, "malformed"),
        (["q", "-1"], "malformed"),
    ],
)
def test_decoding_limits(obj, match):
    with pytest.raises(Undecodable, match=match):
        decode_value(obj, DecodeBudget())


def _nested(depth: int) -> list:
    value: list = ["l"]
    for _ in range(depth):
        value = ["l", value]
    return value


def test_depth_limit():
    assert decode_value(_nested(99), DecodeBudget())
    with pytest.raises(Undecodable, match="deeper"):
        decode_value(_nested(101), DecodeBudget())


SECRET = 987654321
PARENT_FORMS = [
    f"assert f(2) == {SECRET}",
    f"assert {SECRET} == f(2)",
    f"assert f(2) == {SECRET} and f(3) == 9",
    f"result = f(2)\nassert result == {SECRET}",
    f"assert f(2) in (1, {SECRET})",
    f"assert not f(2) == {SECRET}",
    "assert f(2) is True",
    f"assert abs(f(2) - {SECRET}) < 1e-9",
    f"assert math.isclose(f(2), {SECRET}.5, rel_tol=1e-9)",
    f"assert sorted(f(2)) == [{SECRET}]",
    f"expected = [{SECRET}]\nassert f(2) == expected",
    f"def check(candidate):\n    assert candidate(2) == {SECRET}\n"
    f"    assert candidate(3) != {SECRET}\n\ncheck(f)",
    f"assert f(2) if True else {SECRET} == 0",
]


@pytest.mark.parametrize("test", PARENT_FORMS)
def test_expected_values_never_reach_the_child(test):
    (plan,) = plan_tests("import math\ndef f(x):\n    return x\n", [test])
    wire = json.dumps(plan.wire())
    assert str(SECRET) not in wire and "True" not in wire
    assert plan.decided_in == "parent"


@pytest.mark.parametrize(
    "test",
    [
        f"for i in range(3):\n    assert f(i) == {SECRET}",
        f"def ok(x):\n    return x == {SECRET}\nassert ok(f(2))",
        f"if f(2) != {SECRET}:\n    raise AssertionError",
        f"assert all(x > {SECRET} for x in f(2))",
        "f(2)",
    ],
)
def test_what_the_parent_cannot_decide_stays_in_the_child(test):
    (plan,) = plan_tests("def f(x):\n    return x\n", [test])
    assert plan.decided_in == "child"


def test_rebound_builtins_are_evaluated_by_the_child():
    code = "def abs(x):\n    return 0\ndef f(x):\n    return x\n"
    (shadowed,) = plan_tests(code, ["assert abs(f(2) - 5) < 0.5"])
    assert shadowed.wire() == [["h", ["(abs(f(2) - 5))"]]]  # Python would call the solution's abs
    (plain,) = plan_tests("def f(x):\n    return x\n", ["assert abs(f(2) - 5) < 0.5"])
    assert plain.wire() == [["h", ["(f(2))"]]]


def _judge(test: str, values: list) -> object:
    (plan,) = plan_tests("", [test])
    body = json.dumps(values).encode()
    return judge.evaluate(plan.checks[0], judge.Holes(body, len(values), DecodeBudget()))


def test_parent_evaluation_short_circuits_like_python():
    assert _judge("assert f(1) == 1 or g()", [["v", ["i", "1"]], ["e", "ZeroDivisionError"]]) is True
    with pytest.raises(judge.Outcome, match="ZeroDivisionError"):
        _judge("assert f(1) == 2 or g()", [["v", ["i", "1"]], ["e", "ZeroDivisionError"]])
    assert _judge("assert x is None or x.y == 1", [["v", None], ["e", "AttributeError"]]) is True
    assert _judge("assert m() is not None", [["u", "type Match"]]) is True
    with pytest.raises(judge.Outcome, match="type Match"):
        _judge("assert m() == 1", [["u", "type Match"]])


@pytest.mark.parametrize(
    ("test", "value"),
    [
        ("assert 2 ** f() == 4", ["i", format(10**9, "x")]),
        ("assert 1 << f() == 4", ["i", format(10**9, "x")]),
        ("assert [0] * f() == []", ["i", format(10**9, "x")]),
        ("assert f() % 3 == ''", "%0999999999d"),
        ("assert sum(f(), []) == []", ["l", ["l"], ["l"]]),
        ("assert sum(f(), 0) == 1", ["r", "0", format(10**12, "x"), "1"]),
        ("assert 0.5 in f()", ["r", "0", format(10**12, "x"), "1"]),
    ],
)
def test_operations_whose_cost_the_child_controls_are_refused(test, value):
    with pytest.raises(judge.Outcome) as caught:  # refused before it runs (running it would take minutes)
        _judge(test, [["v", value]])
    assert caught.value.status == judge.REFUSED


def test_folding_keeps_python_errors_for_judging():
    (plan,) = plan_tests("", ["assert f() == 1 / 0"])
    assert isinstance(plan.checks[0], ast.Compare)
    with pytest.raises(ZeroDivisionError):
        judge.evaluate(plan.checks[0], judge.Holes(b'[["v", ["i", "1"]]]', 1, DecodeBudget()))


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("def f(x):\n    return x + 1\n", ()),
        ("class A:\n    def __eq__(self, o):\n        return True\n", ("defines __eq__",)),
        ("class A:\n    __bool__ = lambda self: True\n", ("defines __bool__",)),
        ("setattr(A, '__hash__', None)", ("defines __hash__",)),
        ("import sys\nx = sys._getframe(1).f_back", ("frame access (_getframe)", "frame access (f_back)")),
        ("import gc, inspect", ("imports gc", "imports inspect")),
        ("x = getattr(sys, '_getframe')", ("frame access (_getframe)",)),
        ("def f(:", ()),
    ],
)
def test_suspicious_features(code, expected):
    assert suspicious_features(code) == expected
