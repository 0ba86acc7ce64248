"""Regression programs for the sandbox: correct solutions, semantics, liars, hostile programs (stdlib only).

Imported by ``tests/test_sandbox_isolation.py`` and also run as a script, by the test's own interpreter as
the caller and by the system ``/usr/bin/python3`` as an unprivileged user (``setpriv``), so that the same
verdicts are checked for both::

    PYTHONPATH=<repo> SANDBOX_HOME=<dir> SANDBOX_WORK=<dir> SANDBOX_REPO=<repo> python3 tests/sandbox_cases.py

It prints one JSON object: the verdict of every case, the files hostile programs managed to leave behind,
whether a process signalled by them survived, and how long the ``bounded`` cases took. The hostile
programs, templates with placeholders filled in per run, live in ``tests/sandbox_attacks.py``.

The tests run in the *driver* (trusted, real stdlib) and call into the *candidate* (the program), so a
liar can only control the values its functions return: every liar below must fail whatever it does to
its own process (rebinding modules, builtins, frames, gc, ctypes, tracing, writing to any fd).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass

from tests.sandbox_attacks import FAIL, HOSTILE_PROGRAMS, NOT_PASSED, OK, UNSUPPORTED

# A call returns within its timeout plus a constant; generous, for 2 shared cores.
TIME_SLACK_S = 10.0


@dataclass(frozen=True)
class Case:
    """One program, its tests, and the verdict it must get.

    ``expect`` is ``(status, n_passed)``, or ``(NOT_PASSED, 0)`` when any non-passing status will do.
    ``bounded`` cases are also run alone and timed: they must return within ``timeout_s + TIME_SLACK_S``.
    """

    name: str
    kind: str  # "correct", "semantics", "liar" or "hostile"
    code: str
    tests: tuple[str, ...]
    expect: tuple[str, int]
    timeout_s: float = 3.0
    setup: str = ""
    entry_point: str = ""
    bounded: bool = False


def src(text: str) -> str:
    """Program text written as an indented triple-quoted block."""
    return textwrap.dedent(text).lstrip("\n")


def correct(name: str, code: str, tests: list[str], **extra) -> Case:
    return Case(name, "correct", src(code), tuple(src(t) for t in tests), (OK, len(tests)), **extra)


def semantics(name: str, code: str, tests: list[str], expect: tuple[str, int]) -> Case:
    return Case(name, "semantics", src(code), tuple(src(t) for t in tests), expect)


def liar(name: str, code: str, tests: list[str], expect=(NOT_PASSED, 0), **extra) -> Case:
    return Case(name, "liar", src(code), tuple(src(t) for t in tests), expect, **extra)


def hostile(name: str, code: str, tests: list[str], expect: tuple[str, int], **extra) -> Case:
    return Case(name, "hostile", src(code), tuple(src(t) for t in tests), expect, **extra)


ALWAYS_EQUAL = """
    class AlwaysEqual:
        def __eq__(self, other):
            return True
        def __ne__(self, other):
            return False
        def __hash__(self):
            return hash(4)
    def f(x):
        return AlwaysEqual()
    def g(x):
        return [AlwaysEqual()]
"""

CHECK = "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(3) == 9\n\ncheck(f)"

# HumanEval/32-style task code: the prompt defines a helper the test uses and the entry point's signature.
POLY_SETUP = '''
def poly(xs, x):
    return sum(c * x ** i for i, c in enumerate(xs))
def find_zero(xs):
    """A zero of the polynomial xs."""
'''
POLY_CHECK = """
def check(candidate):
    for coeffs in ([1, 2], [-6, 11, -6, 1], [2, -3, 1]):
        solution = candidate(list(coeffs))
        assert abs(poly(coeffs, solution)) < 1e-4
check(find_zero)
"""
BISECT = """
def find_zero(xs):
    lo, hi = -0.5, 1.5
    while hi - lo > 1e-10:
        mid = (lo + hi) / 2
        if real_poly(xs, lo) * real_poly(xs, mid) <= 0:
            hi = mid
        else:
            lo = mid
    return lo
def real_poly(xs, x):
    return sum(c * x ** i for i, c in enumerate(xs))
"""

# fmt: off
CORRECT = [
    correct("counter_vs_dict", "import collections\ndef h(s):\n    return collections.Counter(s)\n",
            ["assert h('aab') == {'a': 2, 'b': 1}", "assert h('') == {}", "assert h('ab')['z'] == 0"]),
    correct("namedtuple_vs_tuple",
            "from collections import namedtuple\nPoint = namedtuple('Point', 'x y')\n"
            "def p():\n    return Point(1, 2)\n",
            ["assert p() == (1, 2)", "assert p() != (2, 1)", "assert p().x == 1",
             "assert p() == Point(1, 2)"]),
    correct("fraction_vs_numbers",
            "from fractions import Fraction\ndef half():\n    return Fraction(1, 2)\n"
            "def third():\n    return Fraction(1, 3)\n",
            ["assert half() == 0.5", "assert half() + half() == 1", "assert third() == Fraction(1, 3)",
             "assert third() != 0.3333333333333333", "assert [half()] == [0.5]"]),
    correct("decimal_vs_numbers",
            "from decimal import Decimal\ndef d():\n    return Decimal('1.5')\n"
            "def nan():\n    return Decimal('NaN')\ndef inf():\n    return Decimal('-Infinity')\n",
            ["assert d() == 1.5", "assert d() * 2 == 3", "assert d() == Decimal('1.50')",
             "assert nan() != nan()", "assert inf() < -10 ** 100", "assert d() != 1.4999"]),
    correct("defaultdict_vs_dict", """
        from collections import defaultdict
        def groups(words):
            out = defaultdict(list)
            for w in words:
                out[len(w)].append(w)
            return out
        """, ["assert groups(['a', 'bb', 'c']) == {1: ['a', 'c'], 2: ['bb']}", "assert groups([]) == {}",
              "g = groups([])\ng[3].append('x')\nassert g == {3: ['x']}"]),
    correct("ordereddict",
            "from collections import OrderedDict\ndef od():\n    d = OrderedDict(a=1, b=2)\n"
            "    d.move_to_end('a')\n    return d\n",
            ["assert od() == {'a': 1, 'b': 2}", "assert list(od()) == ['b', 'a']",
             "assert od() == OrderedDict([('b', 2), ('a', 1)])",
             "assert od() != OrderedDict([('a', 1), ('b', 2)])"]),
    correct("sets", "def s():\n    return frozenset({1, 2})\ndef t():\n    return {(1, 'a'), (2, 'b')}\n",
            ["assert s() == {1, 2}", "assert t() == {(2, 'b'), (1, 'a')}", "assert 2 in s()",
             "assert s() <= {1, 2, 3}"]),
    correct("deque", "from collections import deque\ndef q():\n    return deque([1, 2], maxlen=5)\n",
            ["assert q() == deque([1, 2])", "assert q() != [1, 2]", "assert list(q()) == [1, 2]",
             "assert q().maxlen == 5"]),
    correct("bool_as_int",
            "def flag():\n    return True\ndef count():\n    return 1\ndef empty():\n    return []\n",
            ["assert flag() == 1", "assert flag() is True", "assert count() == True", "assert not empty()",
             "assert count() is not True"]),
    correct("bytes_and_bytearray",
            "def b():\n    return bytearray(b'ab')\ndef c():\n    return bytes([0, 255])\n",
            ["assert b() == b'ab'", "assert c() == b'\\x00\\xff'", "assert len(b()) == 2",
             "assert type(b()) is bytearray"]),
    correct("nested_values",
            "from fractions import Fraction\n"
            "def n():\n    return {'a': [(1, Fraction(1, 2))], 'b': {frozenset({1})}, 'c': None}\n",
            ["assert n() == {'a': [(1, 0.5)], 'b': {frozenset({1})}, 'c': None}"]),
    correct("numbers_of_every_kind",
            "import math\ndef c():\n    return 1 + 2j\ndef none():\n    pass\ndef x():\n    return -0.0\n"
            "def big():\n    return -10 ** 5000\ndef specials():\n    return [math.nan, math.inf]\n",
            ["assert c() == 1+2j", "assert none() is None", "assert x() == 0 and math.copysign(1, x()) == -1",
             "assert big() == -10 ** 5000", "v = specials()\nassert v[0] != v[0] and v[1] == float('inf')"]),
    correct("compound_forms", "def f(x):\n    return x * x\n",
            ["assert f(2) == 4 and f(3) == 9", "result = f(2)\nassert result == 4", "assert f(2) in (4, 5)",
             "assert not f(0)", "assert f(1) is not None", "assert 0 < f(2) < 5", "assert f(2) == 4 or f(-1)",
             "expected = [1, 4]\nassert [f(1), f(2)] == expected", "f(3)",
             "for i in range(4):\n    assert f(i) == i * i", "assert all(f(i) >= 0 for i in range(-3, 3))"]),
    correct("is_true_tests", "def even(x):\n    return x % 2 == 0\n",
            ["assert even(2) is True", "assert even(3) is False", "assert even(0) is True"]),
    correct("check_function", "def f(x):\n    return x + 1\n",
            ["METADATA = {'author': 'x'}\n\ndef check(candidate):\n    assert candidate(1) == 2\n"
             "    assert candidate(-1) == 0, 'message'\n"
             "    assert abs(candidate(0.5) - 1.5) < 1e-9\n\ncheck(f)"]),
    correct("generators_and_iterators",
            "import itertools\ndef gen(n):\n    yield from range(n)\ndef it():\n    return iter([3, 1, 2])\n"
            "def pairs():\n    return itertools.combinations('abc', 2)\n",
            ["assert list(gen(3)) == [0, 1, 2]", "assert sorted(gen(2), reverse=True) == [1, 0]",
             "i = it()\nassert next(i) == 3 and list(i) == [1, 2]", "assert len(list(pairs())) == 3",
             "assert list(gen(100000))[-1] == 99999"]),
    correct("range_and_types_as_values",
            "def r(n):\n    return range(n)\ndef t():\n    return int\ndef k():\n    return frozenset\n",
            ["assert r(3) == range(3)", "assert list(r(3)) == [0, 1, 2]", "assert t() == int",
             "assert t() is int", "assert k()() == set()"]),
    correct("type_checks", "def f():\n    return 3\ndef g():\n    return {'a': 1}\n",
            ["assert type(f()) == int", "assert type(g()) is dict", "assert isinstance(g(), dict)"]),
    correct("tolerances", "import math\ndef area(r):\n    return math.pi * r * r\n",
            ["assert math.isclose(area(1), 3.14159, rel_tol=1e-4)", "assert abs(area(1) - 3.14159) < 1e-4",
             "assert round(area(1), 2) == 3.14"]),
    correct("key_functions_in_the_driver",
            "def words():\n    return ['ccc', 'a', 'bb']\ndef score(w):\n    return -len(w)\n",
            ["assert sorted(words(), key=len) == ['a', 'bb', 'ccc']", "assert max(words(), key=score) == 'a'",
             "assert min(words(), key=len) == 'a'", "assert sorted(words(), key=score)[0] == 'ccc'",
             "assert list(map(score, ['xy'])) == [-2]"]),
    correct("arguments_changed_in_place", """
        from collections import deque
        def sort_in_place(xs):
            xs.sort()
            return xs
        def add_item(d):
            d['k'].append(len(d))
        def grow(s, b, q):
            s.add(9)
            b.extend(b'!')
            q.appendleft(0)
        """, ["data = [3, 1, 2]\nassert sort_in_place(data) is data\nassert data == [1, 2, 3]",
              "inner = []\nd = {'k': inner}\nassert add_item(d) is None\n"
              "assert d == {'k': [1]} and d['k'] is inner",
              "s, b, q = {1}, bytearray(b'a'), deque([1])\ngrow(s, b, q)\n"
              "assert (s, b, q) == ({1, 9}, b'a!', deque([0, 1]))"]),
    correct("enum_members", """
        from enum import Enum, IntEnum, StrEnum
        class Color(Enum):
            RED = 1
            GREEN = 2
        class Level(IntEnum):
            LOW = 1
        class Mode(StrEnum):
            READ = 'r'
        def f():
            return Color.RED
        def g():
            return Level.LOW
        def h():
            return Mode.READ
        """, ["assert f().name == 'RED'", "assert f() is Color.RED", "assert f() != Color.GREEN",
              "assert f().value == 1", "assert g() == 1", "assert h() == 'r'",
              "assert [f(), f()] == [Color.RED] * 2"]),
    correct("dataclasses", """
        from dataclasses import dataclass
        @dataclass
        class Point:
            x: int
            y: int
        @dataclass(frozen=True, order=True)
        class Version:
            major: int
        def f():
            return Point(1, 2)
        def v(n):
            return Version(n)
        """, ["assert f() == Point(1, 2)", "assert f().x == 1", "assert f() != Point(2, 1)",
              "assert v(1) < v(2)",
              "assert v(3) == Version(3) and hash(v(3)) == hash(Version(3))"]),
    correct("dict_views",
            "def f():\n    return {'a': 1}\ndef keys():\n    return {'a': 1, 'b': 2}.keys()\n"
            "def items():\n    return {'a': 1}.items()\ndef values():\n    return {'a': 1}.values()\n",
            ["assert f().keys() == {'a'}", "assert list(f().items()) == [('a', 1)]",
             "assert keys() == {'a', 'b'}", "assert list(items()) == [('a', 1)]",
             "assert list(values()) == [1]", "assert 'b' in keys()"]),
    correct("large_values",
            "def f():\n    return list(range(10 ** 5))\ndef total(xs):\n    return sum(xs)\n"
            "def text(n):\n    return 'x' * n\n",
            ["assert f() == list(range(100000))", "assert len(f()) == 100000",
             "assert total(list(range(10 ** 5))) == 4999950000", "assert len(text(4 << 20)) == 4 << 20"]),
    correct("asyncio_and_threads", """
        import asyncio, threading
        async def _double(x):
            await asyncio.sleep(0)
            return 2 * x
        def f(x):
            return asyncio.run(_double(x))
        def g(x):
            out = []
            workers = [threading.Thread(target=out.append, args=(x + i,)) for i in range(4)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            return sorted(out)
        """, ["assert f(3) == 6", "assert g(1) == [1, 2, 3, 4]"]),
    correct("stderr_flood",
            "import sys\nsys.stderr.write('e' * (2 << 20))\n"
            "def f():\n    sys.stderr.write('x' * (2 << 20))\n    return 1\n", ["assert f() == 1"]),
    correct("exceptions", """
        class MyError(ValueError):
            pass
        def f(x):
            if x < 0:
                raise MyError('negative')
            if x == 0:
                raise ValueError('zero')
            return 1 / (x - 1)
        """, ["try:\n    f(0)\nexcept ValueError as e:\n    assert str(e) == 'zero'\nelse:\n    assert False",
              "try:\n    f(-1)\nexcept MyError as e:\n    assert 'negative' in str(e)\nelse:\n"
              "    assert False",
              "try:\n    f(-1)\nexcept ValueError:\n    pass\nelse:\n    assert False",
              "try:\n    f(1)\nexcept ZeroDivisionError:\n    pass\nelse:\n    assert False",
              "try:\n    f(0)\nexcept MyError:\n    assert False\nexcept ValueError:\n    pass"]),
    correct("printed_output", "def greet(name):\n    print('hi', name)\n    return len(name)\n",
            ["import io, contextlib\nbuf = io.StringIO()\nwith contextlib.redirect_stdout(buf):\n"
             "    n = greet('bob')\nassert buf.getvalue() == 'hi bob\\n' and n == 3"]),
    # The completion breaks poly (which the check uses); its own find_zero does not use poly.
    correct("humaneval_setup_helper_redefined",
            POLY_SETUP + BISECT + "def poly(xs, x):\n    raise RuntimeError('not the task helper')\n",
            [POLY_CHECK], setup=src(POLY_SETUP), entry_point="find_zero"),
    correct("program_constants_and_unbound_names",
            "LIMIT = 7\nTABLE = {'a': [1, 2]}\ndef f(x):\n    return min(x, LIMIT)\n",
            ["assert f(LIMIT + 1) == LIMIT", "assert TABLE['a'] == [1, 2]",
             "try:\n    undefined_helper()\nexcept NameError:\n    pass\nelse:\n    assert False"]),
]

SEMANTICS = [
    # Floats are compared exactly as the test states; the test decides any tolerance.
    semantics("float_exact", "def add(a, b):\n    return a + b\n",
              ["assert add(0.1, 0.2) == 0.30000000000000004", "assert add(0.1, 0.2) == 0.3"], (FAIL, 1)),
    # A Match object cannot cross: any test that needs it says so (even `is not None`).
    semantics("values_of_other_types", "import re\ndef m(s):\n    return re.match('a', s)\n",
              ["assert m('abc')", "assert m('abc') is not None", "assert m('xyz') is None"],
              (UNSUPPORTED, 1)),
    # Driver-made namedtuples and dataclasses carry data only: the program's methods do not cross.
    semantics("methods_of_records", """
        from dataclasses import dataclass
        from typing import NamedTuple
        class Pair(NamedTuple):
            a: int
            b: str
            def swap(self):
                return (self.b, self.a)
        @dataclass
        class Vec:
            x: int
            def norm(self):
                return abs(self.x)
        def q():
            return Pair(3, 'x')
        def v():
            return Vec(-2)
        """, ["assert q() == (3, 'x')", "assert q().swap() == ('x', 3)", "assert v().x == -2",
              "assert v().norm() == 2"], (UNSUPPORTED, 2)),
    # Functions neither cross back nor go in; iterators longer than 100,000 items do not cross.
    semantics("functions_and_endless_iterators",
              "import itertools\ndef adder(n):\n    return lambda x: x + n\n"
              "def apply(fn, x):\n    return fn(x)\ndef count():\n    return itertools.count()\n",
              ["assert adder(2)(3) == 5", "assert apply(lambda x: -x, 1) == -1", "assert next(count()) == 0"],
              (UNSUPPORTED, 0)),
    # The program's globals are copied into the driver: the tests change their copy, not the program's.
    semantics("globals_are_copies", "STATE = []\ndef count():\n    return len(STATE)\n",
              ["STATE.append(1)", "assert STATE == [1]", "assert count() == 1"], (FAIL, 2)),
]

LIARS = [
    liar("always_equal", ALWAYS_EQUAL,
         ["assert f(1) == 2", "assert 2 == f(1)", "assert f(1) == [1]", "assert f(1) != 3"]),
    liar("always_equal_compound", ALWAYS_EQUAL,
         ["assert f(2) == 4 and f(3) == 9", "r = f(2)\nassert r == 4", "assert f(2) in (4, 5)",
          "assert f(2) in {4}", "assert g(1) == [7]"]),
    liar("always_equal_in_check", ALWAYS_EQUAL, [CHECK]),
    # An uncrossable value marks its test whatever the test does with the exception it gets.
    liar("uncrossable_value_caught_by_the_test", ALWAYS_EQUAL,
         ["try:\n    assert f(1) == 2\nexcept:\n    pass",
          "try:\n    r = f(1)\nexcept Exception:\n    r = 2\nassert r == 2"], (UNSUPPORTED, 0)),
    liar("bool_true", "class T:\n    def __bool__(self):\n        return True\ndef ok(x):\n    return T()\n",
         ["assert ok(1)", "assert ok(1) == True", "assert ok(2) is not False and ok(2)"]),
    liar("bool_false", "class F:\n    def __bool__(self):\n        return False\ndef bad(x):\n"
         "    return F()\n",
         ["assert not bad(1)", "assert bad(1) == False"]),
    liar("hash_collider", """
        class H:
            def __hash__(self):
                return hash(2)
            def __eq__(self, other):
                return True
        def f(x):
            return H()
        """, ["assert f(1) in {2, 3}", "assert {f(1): 1} == {2: 1}"]),
    liar("int_subclass",
         "class I(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
         "def f(x):\n    return I(0)\n",
         ["assert f(1) == 5", "assert f(1) is not None and f(1) == 7", "assert type(f(1)) == int"]),
    liar("str_subclass",
         "class S(str):\n    def __eq__(self, other):\n        return True\n    __hash__ = str.__hash__\n"
         "def f(x):\n    return S('')\n", ["assert f(1) == 'abc'", "assert [f(1)] == ['x']"]),
    liar("str_subclass_startswith",
         "class S(str):\n    def startswith(self, *args):\n        return True\n"
         "def f(s):\n    return S('xx')\n", ["assert f('hello').startswith('he')"]),
    liar("namedtuple_override",
         "from collections import namedtuple\nclass P(namedtuple('P', 'a b')):\n"
         "    def __eq__(self, other):\n        return True\n    __hash__ = tuple.__hash__\n"
         "def f():\n    return P(0, 0)\n", ["assert f() == (1, 2)"]),
    liar("counter_subclass",
         "from collections import Counter\nclass C(Counter):\n    def __eq__(self, other):\n"
         "        return True\ndef f(s):\n    return C()\n", ["assert f('aab') == {'a': 2, 'b': 1}"]),
    liar("fake_counter_module",
         "import collections\nclass Liar(dict):\n    def __eq__(self, other):\n        return True\n"
         "collections.Counter = Liar\ndef f(s):\n    return Liar()\n",
         ["assert f('aab') == {'a': 2, 'b': 1}"]),
    liar("counter_rebound",
         "import collections\ncollections.Counter = lambda *a, **k: 0\ndef f(s):\n    return 0\n",
         ["from collections import Counter", "assert f('aab') == Counter({'a': 2, 'b': 1})"], (FAIL, 1)),
    liar("math_pi_rebound", "import math\nmath.pi = 0.0\ndef area(r):\n    return 0.0\n",
         ["import math", "assert math.isclose(area(2), 4 * math.pi)"], (FAIL, 1)),
    # The test relies on the program's `import math`: it gets the driver's own math module.
    liar("math_pi_rebound_without_import",
         "import math\nmath.pi = 0.0\nmath.isclose = lambda *a, **k: True\ndef area(r):\n    return 0.0\n",
         ["assert math.isclose(area(2), 4 * math.pi)", "assert area(1) == math.pi"], (FAIL, 0)),
    liar("shadowed_builtins", """
        def sorted(xs, **kwargs):
            return [1, 2, 3]
        def len(xs):
            return 3
        def all(xs):
            return True
        def isinstance(x, t):
            return True
        def f():
            return [3, 2]
        """, ["assert sorted(f()) == [1, 2, 3]", "assert len(f()) == 3", "assert all(v > 5 for v in f())",
              "assert isinstance(f(), dict)"], (FAIL, 0)),
    liar("class_spoof",
         "class L:\n    __class__ = property(lambda self: int)\n    def __eq__(self, other):\n"
         "        return True\ndef f():\n    return L()\n",
         ["assert isinstance(f(), int) and f() == 3", "assert f() + 0 == 3"]),
    # Looks for the test's constants wherever a same-process harness would keep them.
    liar("frame_and_gc_reader", """
        import gc, sys
        def _seen():
            values, frame = [], sys._getframe(1)
            while frame is not None:
                values += list(frame.f_code.co_consts) + list(frame.f_locals.values())
                frame = frame.f_back
            for obj in gc.get_objects():
                if type(obj) in (list, tuple, dict):
                    values += list(obj.values() if type(obj) is dict else obj)[:100]
            return values
        def g(x):
            bools = [v for v in _seen() if type(v) is bool]
            return bools[-1] if bools else None
        def h(x):
            ints = [v for v in _seen() if type(v) is int and v > 1000]
            return max(ints) if ints else None
        """, ["assert g(3) is True and g(4) is False", "assert h(2) == 987654321",
              "x = h(5)\nassert x == 25"]),
    liar("patched_builtins", """
        import builtins, json, os, sys
        class Nope(Exception):
            pass
        builtins.AssertionError = Nope
        for name in ('isinstance', 'type', 'len', 'repr', 'sorted', 'abs'):
            setattr(builtins, name, lambda *a, **k: True)
        json.dumps = lambda *a, **k: '3'
        json.loads = lambda *a, **k: 3
        os.write = lambda fd, data: len(data)
        sys.stdout = None
        def add(a, b):
            return 0
        """, ["assert add(1, 2) == 3", "assert sorted([add(2, 2)]) == [4]",
              "assert abs(add(1, 1) - 2) < 0.1"]),
    # Tries every way a process can report: tracing, frames, gc, libc write/ptrace, any fd.
    liar("introspection_reporter", """
        import ctypes, gc, os, sys, threading
        def _tracer(frame, event, arg):
            if event == 'return':
                for key in ('result', 'value', 'ok', 'passed', 'status'):
                    if key in frame.f_locals:
                        frame.f_locals[key] = True
            return _tracer
        sys.settrace(_tracer)
        threading.settrace(_tracer)
        for obj in gc.get_objects():
            if type(obj) is dict and ('status' in obj or 'passed' in obj):
                obj.update(status='ok', passed=True, n_passed=3)
        reporters, frame = [], sys._getframe()
        while frame is not None:
            reporters += [v for v in frame.f_globals.values() if callable(v) and v is not _tracer]
            frame = frame.f_back
        for reporter in reporters[:200]:
            for body in (b'ok', b'pass', True, {'status': 'ok'}):
                try:
                    reporter(body)
                except BaseException:
                    pass
        libc = ctypes.CDLL(None, use_errno=True)
        for fd in range(64):
            for line in (b'pass\\n', b'{"status": "ok", "passed": true}\\n', b'["i", "1"]\\n', b'ok\\n'):
                libc.write(fd, line, len(line))
        libc.ptrace(16, os.getppid(), 0, 0)  # PTRACE_ATTACH
        def f(x):
            return -1
        """, ["assert f(1) == 1234567", "assert f(2) == 7654321", "assert [f(3)] == [3333333]"]),
    liar("forged_records", """
        import os
        for fd in range(0, 64):
            for line in ('code ok', '0 pass', 'pass', '{"ok": true}', '["v", ["i", "1"]]', 'done'):
                try:
                    os.write(fd, ('0' * 32 + ' ' + line + chr(10)).encode())
                    os.write(fd, (line + chr(10)).encode())
                except OSError:
                    pass
        def add(a, b):
            return -1
        """, ["assert add(1, 2) == 1234567", "assert add(2, 2) > 100"]),
    liar("forged_then_exit", "import os\nos.write(3, b'0' * 32 + b' code ok' + bytes([10]))\nos._exit(0)\n",
         ["assert add(1, 2) == 3"]),
    # The entry point is always the program's, even when the task's setup defines a working one.
    liar("entry_point_only_from_the_program", "def other():\n    return 4\n", ["assert f(2) == 4"], (FAIL, 0),
         setup="def f(x):\n    return x * x\n", entry_point="f"),
    # The completion's poly would make any answer pass; the check must use the setup's poly.
    liar("humaneval_helper_rebound",
         POLY_SETUP + "def poly(xs, x):\n    return 0\ndef find_zero(xs):\n    return 12345.0\n",
         [POLY_CHECK], (FAIL, 0), setup=src(POLY_SETUP), entry_point="find_zero"),
    # The driver computes on the returned value: a huge Decimal only makes it run out of time.
    liar("huge_decimal", "from decimal import Decimal\ndef f():\n    return Decimal('9.99e999989')\n",
         ["assert round(f() * 100) == 314"], bounded=True),
]

# fmt: on

HOSTILE = [
    hostile(name, code, tests, expect, **extra) for name, code, tests, expect, extra in HOSTILE_PROGRAMS
]
CASES = CORRECT + SEMANTICS + LIARS + HOSTILE


def run_cases(home: str, work: str, repo: str) -> dict:
    """Run every case; returns verdicts, leftover files, whether the victim survived, bounded cases' times."""
    from ebft_repro.evaluation.sandbox import run_unit_tests, run_unit_tests_batch

    tag = uuid.uuid4().hex[:12]
    listener = socket.create_server(("127.0.0.1", 0))
    victim = os.fork()
    if victim == 0:  # a process of the runner's user that hostile programs try to kill
        os.execv("/bin/sleep", ["/bin/sleep", "120"])
    fields = {"tag": tag, "parent": os.getpid(), "home": home, "work": work, "repo": repo}
    fields |= {"port": listener.getsockname()[1], "victim": victim}
    try:
        results, seconds = {}, {}
        for timeout_s in sorted({case.timeout_s for case in CASES}):
            chosen = [case for case in CASES if case.timeout_s == timeout_s]
            programs = [_program(case, fields) for case in chosen]
            for case, verdict in zip(chosen, run_unit_tests_batch(programs, timeout_s=timeout_s)):
                results[case.name] = _summary(verdict)
        for case in CASES:
            if case.bounded:
                program = _program(case, fields)
                start = time.monotonic()
                verdict = run_unit_tests(
                    program.code,
                    program.tests,
                    setup=program.setup,
                    entry_point=program.entry_point,
                    timeout_s=case.timeout_s,
                )
                seconds[case.name] = time.monotonic() - start
                results[case.name + "/alone"] = _summary(verdict)
        victim_alive = os.waitpid(victim, os.WNOHANG) == (0, 0)
    finally:
        listener.close()
        try:
            os.kill(victim, 9)
            os.waitpid(victim, 0)
        except OSError:
            pass
    leftovers = _leftovers(tag, home, work, repo)
    return {"results": results, "leftovers": leftovers, "victim_alive": victim_alive, "seconds": seconds}


def _program(case: Case, fields: dict):
    from ebft_repro.evaluation.sandbox import Program

    code, tests = case.code, case.tests
    if case.kind == "hostile":
        code, tests = code.format(**fields), tuple(test.format(**fields) for test in tests)
    return Program(code, tests, setup=case.setup, entry_point=case.entry_point)


def _summary(verdict) -> dict:
    fields = ("passed", "n_passed", "n_total", "status", "isolation", "detail")
    return {name: getattr(verdict, name) for name in fields} | {"test_statuses": list(verdict.test_statuses)}


def _leftovers(tag: str, *roots: str) -> list[str]:
    found = []
    for root in (*roots, os.path.join(roots[-1], "results"), "/tmp", "/dev/shm", "/var/tmp"):
        try:
            found += [os.path.join(root, name) for name in os.listdir(root) if tag in name]
        except OSError:
            pass
    return found


if __name__ == "__main__":
    report = run_cases(os.environ["SANDBOX_HOME"], os.environ["SANDBOX_WORK"], os.environ["SANDBOX_REPO"])
    json.dump(report, sys.stdout)
