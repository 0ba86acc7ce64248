"""Regression programs for the sandbox: correct solutions, liars and hostile programs (stdlib only).

Imported by ``tests/test_sandbox.py`` and also run as a script, by the test's own interpreter as root and
by the system ``/usr/bin/python3`` as an unprivileged user (``setpriv``), so that the same verdicts are
checked for both::

    PYTHONPATH=<checkout> SANDBOX_HOME=<dir> SANDBOX_WORK=<dir> python3 tests/sandbox_cases.py

It prints one JSON object: the verdict of every case, the files hostile programs managed to leave behind,
and whether a process signalled by them survived. Programs may use the placeholders ``{tag}`` (unique
per run), ``{parent}`` (the runner's pid), ``{home}``/``{work}`` (directories the runner's user can
write, standing in for ``$HOME`` and the checkout), ``{repo}`` and ``{port}`` (a localhost port the
runner listens on).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import textwrap
import uuid
from dataclasses import dataclass

OK, FAIL, UNSUPPORTED, ERROR, TIMEOUT = "ok", "fail", "unsupported_type", "error", "timeout"
NOT_PASSED = "not_passed"  # any verdict with n_passed == 0 and passed False


@dataclass(frozen=True)
class Case:
    """One program, its tests, and the verdict it must get.

    ``expect`` is ``(status, n_passed)``, or ``(NOT_PASSED, 0)`` when any non-passing status will do.
    ``decided_in`` (optional) is the expected :attr:`TestVerdict.decided_in`.
    """

    name: str
    kind: str  # "correct", "semantics", "liar" or "hostile"
    code: str
    tests: tuple[str, ...]
    expect: tuple[str, int]
    decided_in: tuple[str, ...] | None = None
    timeout_s: float = 3.0


def src(text: str) -> str:
    """Program text written as an indented triple-quoted block."""
    return textwrap.dedent(text).lstrip("\n")


def correct(name: str, code: str, tests: list[str], decided_in: tuple[str, ...] | None = None) -> Case:
    return Case(name, "correct", src(code), tuple(tests), (OK, len(tests)), decided_in)


def liar(name: str, code: str, tests: list[str]) -> Case:
    return Case(name, "liar", src(code), tuple(tests), (NOT_PASSED, 0))


def hostile(name: str, code: str, tests: list[str], expect: tuple[str, int], timeout_s: float = 3.0) -> Case:
    return Case(name, "hostile", src(code), tuple(tests), expect, timeout_s=timeout_s)


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
"""

CHECK = "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(3) == 9\n\ncheck(f)"

CORRECT = [
    correct(
        "counter_vs_dict",
        """
        import collections
        def h(s):
            return collections.Counter(s)
        """,
        ["assert h('aab') == {'a': 2, 'b': 1}", "assert h('') == {}", "assert h('ab')['z'] == 0"],
    ),
    correct(
        "namedtuple_vs_tuple",
        """
        from collections import namedtuple
        Point = namedtuple('Point', 'x y')
        def p():
            return Point(1, 2)
        """,
        ["assert p() == (1, 2)", "assert p() != (2, 1)", "assert p().x == 1", "assert p() == Point(1, 2)"],
    ),
    correct(
        "typing_namedtuple",
        """
        from typing import NamedTuple
        class Pair(NamedTuple):
            a: int
            b: str
            def swap(self):
                return (self.b, self.a)
        def q():
            return Pair(3, 'x')
        """,
        ["assert q() == (3, 'x')", "assert q().swap() == ('x', 3)"],
    ),
    correct(
        "fraction_vs_numbers",
        """
        from fractions import Fraction
        def half():
            return Fraction(1, 2)
        def third():
            return Fraction(1, 3)
        """,
        [
            "assert half() == 0.5",
            "assert half() + half() == 1",
            "assert third() == Fraction(1, 3)",
            "assert third() != 0.3333333333333333",
            "assert [half()] == [0.5]",
        ],
    ),
    correct(
        "decimal_vs_numbers",
        """
        from decimal import Decimal
        def d():
            return Decimal('1.5')
        def nan():
            return Decimal('NaN')
        def inf():
            return Decimal('-Infinity')
        """,
        [
            "assert d() == 1.5",
            "assert d() * 2 == 3",
            "assert d() == Decimal('1.50')",
            "assert nan() != nan()",
            "assert inf() < -10 ** 100",
            "assert d() != 1.4999",
        ],
    ),
    correct(
        "defaultdict_vs_dict",
        """
        from collections import defaultdict
        def groups(words):
            out = defaultdict(list)
            for w in words:
                out[len(w)].append(w)
            return out
        """,
        ["assert groups(['a', 'bb', 'c']) == {1: ['a', 'c'], 2: ['bb']}", "assert groups([]) == {}"],
    ),
    correct(
        "ordereddict",
        """
        from collections import OrderedDict
        def od():
            d = OrderedDict(a=1, b=2)
            d.move_to_end('a')
            return d
        """,
        [
            "assert od() == {'a': 1, 'b': 2}",
            "assert list(od()) == ['b', 'a']",
            "assert od() == OrderedDict([('b', 2), ('a', 1)])",
            "assert od() != OrderedDict([('a', 1), ('b', 2)])",
        ],
    ),
    correct(
        "sets",
        """
        def s():
            return frozenset({1, 2})
        def t():
            return {(1, 'a'), (2, 'b')}
        """,
        [
            "assert s() == {1, 2}",
            "assert t() == {(2, 'b'), (1, 'a')}",
            "assert 2 in s()",
            "assert s() <= {1, 2, 3}",
        ],
    ),
    correct(
        "deque",
        """
        from collections import deque
        def q():
            return deque([1, 2], maxlen=5)
        """,
        ["assert q() == deque([1, 2])", "assert q() != [1, 2]", "assert list(q()) == [1, 2]"],
    ),
    correct(
        "bool_as_int",
        """
        def flag():
            return True
        def count():
            return 1
        def empty():
            return []
        """,
        [
            "assert flag() == 1",
            "assert flag() is True",
            "assert count() == True",
            "assert not empty()",
            "assert count() is not True",
        ],
    ),
    correct(
        "bytes_and_bytearray",
        """
        def b():
            return bytearray(b'ab')
        def c():
            return bytes([0, 255])
        """,
        ["assert b() == b'ab'", "assert c() == b'\\x00\\xff'", "assert len(b()) == 2"],
    ),
    correct(
        "nested_values",
        """
        from fractions import Fraction
        def n():
            return {'a': [(1, Fraction(1, 2))], 'b': {frozenset({1})}, 'c': None}
        """,
        ["assert n() == {'a': [(1, 0.5)], 'b': {frozenset({1})}, 'c': None}"],
    ),
    correct(
        "complex_none_float",
        """
        def c():
            return 1 + 2j
        def none():
            pass
        def x():
            return -0.0
        """,
        ["assert c() == 1+2j", "assert none() is None", "assert none() == None", "assert x() == 0"],
    ),
    correct(
        "compound_forms",
        """
        def f(x):
            return x * x
        """,
        [
            "assert f(2) == 4 and f(3) == 9",
            "result = f(2)\nassert result == 4",
            "assert f(2) in (4, 5)",
            "assert not f(0)",
            "assert f(1) is not None",
            "assert 0 < f(2) < 5",
            "assert f(2) == 4 or f(-1)",
            "expected = [1, 4]\nassert [f(1), f(2)] == expected",
        ],
        ("parent",) * 8,
    ),
    correct(
        "is_true_tests",
        """
        def even(x):
            return x % 2 == 0
        """,
        ["assert even(2) is True", "assert even(3) is False", "assert even(0) is True"],
        ("parent",) * 3,
    ),
    correct(
        "check_function",
        """
        def f(x):
            return x + 1
        """,
        [
            "METADATA = {'author': 'x'}\n\ndef check(candidate):\n    assert candidate(1) == 2\n"
            "    assert candidate(-1) == 0, 'message'\n"
            "    assert abs(candidate(0.5) - 1.5) < 1e-9\n\ncheck(f)"
        ],
        ("parent",),
    ),
    correct(
        "loops_stay_in_child",
        """
        def f(x):
            return x * x
        """,
        ["for i in range(4):\n    assert f(i) == i * i", "f(3)"],
        ("child", "child"),
    ),
    correct(
        "generator_through_list",
        """
        def gen(n):
            yield from range(n)
        """,
        ["assert list(gen(3)) == [0, 1, 2]", "assert sorted(gen(2), reverse=True) == [1, 0]"],
    ),
    correct(
        "identity_of_other_types",
        """
        import re
        def m(s):
            return re.match('a', s)
        """,
        ["assert m('abc') is not None", "assert m('xyz') is None"],
    ),
    correct(
        "range_values",
        """
        def r(n):
            return range(n)
        """,
        ["assert r(3) == range(3)", "assert list(r(3)) == [0, 1, 2]"],
    ),
    correct(
        "type_checks",
        """
        def f():
            return 3
        def g():
            return {'a': 1}
        """,
        ["assert type(f()) == int", "assert type(g()) is dict", "assert isinstance(g(), dict)"],
        ("parent",) * 3,
    ),
    correct(
        "tolerances",
        """
        import math
        def area(r):
            return math.pi * r * r
        """,
        [
            "assert math.isclose(area(1), 3.14159, rel_tol=1e-4)",
            "assert abs(area(1) - 3.14159) < 1e-4",
            "assert round(area(1), 2) == 3.14",
        ],
    ),
]

SEMANTICS = [
    # Floats are compared exactly as the test states; the test decides any tolerance.
    Case(
        "float_exact",
        "semantics",
        "def add(a, b):\n    return a + b\n",
        ("assert add(0.1, 0.2) == 0.30000000000000004", "assert add(0.1, 0.2) == 0.3"),
        (FAIL, 1),
    ),
    # A truthiness test on an object the parent cannot rebuild fails, and says why.
    Case(
        "truthiness_of_other_types",
        "semantics",
        "import re\ndef m(s):\n    return re.match('a', s)\n",
        ("assert m('abc')",),
        (UNSUPPORTED, 0),
    ),
]

LIARS = [
    liar(
        "always_equal",
        ALWAYS_EQUAL,
        ["assert f(1) == 2", "assert 2 == f(1)", "assert f(1) == [1]", "assert f(1) != 3"],
    ),
    liar(
        "always_equal_compound",
        ALWAYS_EQUAL,
        [
            "assert f(2) == 4 and f(3) == 9",
            "r = f(2)\nassert r == 4",
            "assert f(2) in (4, 5)",
            "assert f(2) in {4}",
        ],
    ),
    liar("always_equal_in_check", ALWAYS_EQUAL, [CHECK]),
    liar(
        "always_equal_in_list",
        ALWAYS_EQUAL + "    def g(x):\n        return [AlwaysEqual()]\n",
        ["assert g(1) == [7]"],
    ),
    liar(
        "bool_true",
        """
        class T:
            def __bool__(self):
                return True
        def ok(x):
            return T()
        """,
        ["assert ok(1)", "assert ok(1) == True", "assert ok(2) is not False and ok(2)"],
    ),
    liar(
        "bool_false",
        """
        class F:
            def __bool__(self):
                return False
        def bad(x):
            return F()
        """,
        ["assert not bad(1)", "assert bad(1) == False"],
    ),
    liar(
        "hash_collider",
        """
        class H:
            def __hash__(self):
                return hash(2)
            def __eq__(self, other):
                return True
        def f(x):
            return H()
        """,
        ["assert f(1) in {2, 3}", "assert {f(1): 1} == {2: 1}"],
    ),
    liar(
        "int_subclass",
        """
        class I(int):
            def __eq__(self, other):
                return True
            __hash__ = int.__hash__
        def f(x):
            return I(0)
        """,
        ["assert f(1) == 5", "assert f(1) is not None and f(1) == 7", "assert type(f(1)) == int"],
    ),
    liar(
        "str_subclass",
        """
        class S(str):
            def __eq__(self, other):
                return True
            __hash__ = str.__hash__
        def f(x):
            return S('')
        """,
        ["assert f(1) == 'abc'", "assert [f(1)] == ['x']"],
    ),
    liar(
        "namedtuple_override",
        """
        from collections import namedtuple
        class P(namedtuple('P', 'a b')):
            def __eq__(self, other):
                return True
            __hash__ = tuple.__hash__
        def f():
            return P(0, 0)
        """,
        ["assert f() == (1, 2)"],
    ),
    liar(
        "counter_subclass",
        """
        from collections import Counter
        class C(Counter):
            def __eq__(self, other):
                return True
        def f(s):
            return C()
        """,
        ["assert f('aab') == {'a': 2, 'b': 1}"],
    ),
    liar(
        "fake_counter_module",
        """
        import collections
        class Liar(dict):
            def __eq__(self, other):
                return True
        collections.Counter = Liar
        def f(s):
            return Liar()
        """,
        ["assert f('aab') == {'a': 2, 'b': 1}"],
    ),
    liar(
        "class_spoof",
        """
        class L:
            __class__ = property(lambda self: int)
            def __eq__(self, other):
                return True
        def f():
            return L()
        """,
        ["assert isinstance(f(), int) and f() == 3", "assert f() + 0 == 3"],
    ),
    liar(
        # Reads the constants of the code that called it: the test itself, when a test runs in-process.
        "frame_reader",
        """
        import sys
        def _constants(x):
            return [c for c in sys._getframe(2).f_code.co_consts if c is not x and type(c) in (bool, int)]
        def g(x):
            bools = [c for c in _constants(x) if type(c) is bool]
            return bools[-1] if bools else None
        def h(x):
            ints = [c for c in _constants(x) if type(c) is int]
            return ints[-1] if ints else None
        """,
        [
            "assert g(3) is True",
            "assert g(4) is False",
            "assert h(2) == 4 and True",
            "x = h(5)\nassert x == 25",
        ],
    ),
    liar(
        "patched_builtins",
        """
        import builtins, json, os, sys
        class Nope(Exception):
            pass
        builtins.AssertionError = Nope
        for name in ('isinstance', 'type', 'len', 'repr', 'sorted', 'abs'):
            setattr(builtins, name, lambda *a, **k: True)
        json.dumps = lambda *a, **k: '3'
        os.write = lambda fd, data: len(data)
        sys.stdout = None
        def add(a, b):
            return 0
        """,
        ["assert add(1, 2) == 3", "assert sorted([add(2, 2)]) == [4]", "assert abs(add(1, 1) - 2) < 0.1"],
    ),
    liar(
        "forged_records",
        """
        import os
        for fd in range(1, 64):
            for line in ('code ok', '0 pass', 't 0', 'h 0 0 [["v", ["i", "3"]]]', 'done'):
                try:
                    os.write(fd, ('0' * 32 + ' ' + line + chr(10)).encode())
                except OSError:
                    pass
        def add(a, b):
            return -1
        """,
        ["assert add(1, 2) == 3", "assert add(2, 2) > 100"],
    ),
    liar(
        "forged_then_exit",
        """
        import os
        os.write(3, b'0' * 32 + b' code ok' + bytes([10]))
        os._exit(0)
        """,
        ["assert add(1, 2) == 3"],
    ),
]

HOSTILE = [
    hostile(
        "reads_parent_memory_and_environ",
        """
        import os
        def leaked():
            found = []
            for pid in ({parent}, os.getppid(), 1):
                for name in ('environ', 'cmdline', 'mem', 'maps'):
                    try:
                        with open(f'/proc/{{pid}}/{{name}}', 'rb') as fh:
                            data = fh.read(1 << 20)
                    except OSError:
                        continue
                    if b'EBFT_SECRET' in data or b'sandbox_cases' in data:
                        found.append((pid, name))
            return found
        """,
        ["assert leaked() == []"],
        (OK, 1),
    ),
    hostile(
        "writes_everywhere",
        """
        TARGETS = ['{home}', '{work}', '{repo}', '{repo}/results', '/tmp', '/dev/shm', '/var/tmp']
        def escaped():
            done = []
            for directory in TARGETS:
                try:
                    with open(directory + '/escape_{tag}', 'w') as fh:
                        fh.write('escaped')
                    done.append(directory)
                except OSError:
                    pass
            return [d for d in done if d not in ('/tmp', '/dev/shm')]  # private to the sandbox
        """,
        ["assert escaped() == []"],
        (OK, 1),
    ),
    hostile(
        "connects_to_localhost",
        """
        import socket
        def connected():
            try:
                socket.create_connection(('127.0.0.1', {port}), timeout=1).close()
                return True
            except OSError:
                return False
        """,
        ["assert connected() is False"],
        (OK, 1),
    ),
    hostile(
        "fills_tmp_and_shm",
        """
        def fill(directory):
            written = 0
            for i in range(64):
                try:
                    with open(f'{{directory}}/fill_{tag}_{{i}}', 'wb') as fh:
                        fh.write(b'x' * (1 << 20))
                    written += 1
                except OSError:
                    break
            return written
        """,
        ["assert fill('/tmp') <= 33", "assert fill('/dev/shm') <= 9"],
        (OK, 2),
    ),
    hostile(
        "kills_every_process",
        """
        import posix, signal
        for pid, sig in ((-1, 9), ({parent}, 9), ({parent}, signal.SIGSTOP), (0, signal.SIGCONT)):
            try:
                posix.kill(pid, sig)
            except OSError:
                pass
        def add(a, b):
            return a + b
        """,
        ["assert add(1, 2) == 3"],
        (OK, 1),
    ),
    hostile(
        "kills_the_victim",
        """
        import posix
        try:
            posix.kill({victim}, 9)
        except OSError:
            pass
        def add(a, b):
            return a + b
        """,
        ["assert add(1, 2) == 3"],
        (OK, 1),
    ),
    hostile(
        "fork_bomb",
        """
        import posix
        while True:
            try:
                posix.fork()
            except OSError:
                pass
        """,
        ["assert True"],
        (TIMEOUT, 0),
        timeout_s=1.0,
    ),
    hostile(
        "memory_bomb",
        """
        hog = bytearray(10 * 1024 ** 3)
        def add(a, b):
            return a + b
        """,
        ["assert add(1, 2) == 3"],
        (ERROR, 0),
    ),
    hostile("infinite_loop", "while True:\n    pass\n", ["assert True"], (TIMEOUT, 0), timeout_s=1.0),
    # 30,000 distinct ints with one hash value: the parent refuses to hash them (quadratic otherwise).
    hostile(
        "hash_flood_value",
        """
        def f():
            return [i * ((1 << 61) - 1) for i in range(1, 30001)]
        """,
        ["assert set(f() + [0]) == {0}"],
        (NOT_PASSED, 0),
    ),
]

CASES = CORRECT + SEMANTICS + LIARS + HOSTILE


def run_cases(home: str, work: str, repo: str) -> dict:
    """Run every case; returns verdicts, leftover files and whether the victim process survived."""
    from ebft_repro.evaluation.sandbox import run_unit_tests_batch

    tag = uuid.uuid4().hex[:12]
    listener = socket.create_server(("127.0.0.1", 0))
    victim = os.fork()
    if victim == 0:  # a process of the runner's user that hostile programs try to kill
        os.execv("/bin/sleep", ["/bin/sleep", "60"])
    fields = {"tag": tag, "parent": os.getpid(), "home": home, "work": work, "repo": repo}
    fields |= {"port": listener.getsockname()[1], "victim": victim}
    try:
        results = {}
        for timeout_s in sorted({case.timeout_s for case in CASES}):
            chosen = [case for case in CASES if case.timeout_s == timeout_s]
            programs = [(_fill(case, fields), list(case.tests)) for case in chosen]
            for case, verdict in zip(chosen, run_unit_tests_batch(programs, timeout_s=timeout_s)):
                results[case.name] = {
                    "passed": verdict.passed,
                    "n_passed": verdict.n_passed,
                    "status": verdict.status,
                    "decided_in": list(verdict.decided_in),
                    "suspicious": list(verdict.suspicious),
                    "isolation": verdict.isolation,
                    "detail": verdict.detail,
                }
        victim_alive = os.waitpid(victim, os.WNOHANG) == (0, 0)
    finally:
        listener.close()
        try:
            os.kill(victim, 9)
            os.waitpid(victim, 0)
        except OSError:
            pass
    return {"results": results, "leftovers": _leftovers(tag, home, work, repo), "victim_alive": victim_alive}


def _fill(case: Case, fields: dict) -> str:
    return case.code.format(**fields) if case.kind == "hostile" else case.code


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
