"""Sandbox tests: verdicts, the driver/candidate split, attacks that must not pass, isolation, limits.

The driver runs the tests, the candidate runs the program and only answers calls (docs/sandbox.md).
Programs that must be killed use short timeouts so the file stays well under a minute on 2 cores; wall
time is only ever checked as an upper bound on a timeout verdict (``timeout_s + TIME_SLACK_S``).
"""

import json
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest

from ebft_repro.evaluation import sandbox as sandbox_module
from ebft_repro.evaluation._sandbox_backend import backend
from ebft_repro.evaluation.sandbox import (
    Program,
    TestVerdict,
    run_unit_tests,
    run_unit_tests_batch,
)
from tests.sandbox_cases import TIME_SLACK_S

IS_ROOT = os.geteuid() == 0
# With bubblewrap every user gets namespaces; the fallback isolates only when the parent is root.
ISOLATED = IS_ROOT or backend().name == "bwrap"
ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4 and add(0, 0) == 0"]


def _processes_with(marker: str) -> list[int]:
    """Pids whose command line contains ``marker`` (the marker is unique to one test program)."""
    pids = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                if marker.encode() in fh.read():
                    pids.append(int(name))
        except OSError:
            pass
    return pids


def _run_watching(marker: str, code: str, tests: list[str], timeout_s: float) -> tuple[TestVerdict, bool]:
    """Run a program while polling /proc; returns the verdict and whether ``marker`` was ever seen."""
    result: dict[str, TestVerdict] = {}
    run = lambda: result.update(v=run_unit_tests(code, tests, timeout_s=timeout_s))  # noqa: E731
    worker = threading.Thread(target=run)
    worker.start()
    seen = False
    while worker.is_alive():  # polling only observes; the verdict does not depend on it
        seen = seen or bool(_processes_with(marker))
        time.sleep(0.02)
    worker.join()
    return result["v"], seen


def _timed(code: str, tests: list[str], timeout_s: float, **kwargs) -> TestVerdict:
    start = time.monotonic()
    verdict = run_unit_tests(code, tests, timeout_s=timeout_s, **kwargs)
    assert time.monotonic() - start < timeout_s + TIME_SLACK_S, verdict
    return verdict


# --- ordinary verdicts -------------------------------------------------------------------------------


def test_correct_code_passes():
    verdict = run_unit_tests(ADD, ADD_TESTS)
    assert verdict == TestVerdict(True, 3, 3, "ok", verdict.detail, ("pass",) * 3, verdict.isolation)
    assert verdict.pass_fraction == 1.0 and verdict.isolation in ("bwrap", "fallback")


def test_partially_correct_counts_exactly():
    # a * b: 1*2=2 (!=3), -1*1=-1 (!=0), 2*2=4 and 0*0=0 -> only the third test passes
    verdict = run_unit_tests("def add(a, b):\n    return a * b\n", ADD_TESTS)
    assert (verdict.passed, verdict.n_passed, verdict.n_total, verdict.status) == (False, 1, 3, "fail")
    assert verdict.test_statuses == ("fail", "fail", "pass")
    assert verdict.pass_fraction == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("code", "reason"),
    [("def add(a, b) return a + b", "SyntaxError"), (ADD + "undefined_name\n", "NameError")],
)
def test_code_that_does_not_run_is_an_error_with_every_test_missing(code, reason):
    verdict = run_unit_tests(code, ADD_TESTS)
    assert (verdict.passed, verdict.n_passed, verdict.status) == (False, 0, "error")
    assert verdict.test_statuses == ("missing",) * 3 and reason in verdict.detail


def test_raising_test_does_not_stop_the_others():
    code = "def f(x):\n    if x == 0:\n        raise ValueError('boom')\n    return x\n"
    verdict = run_unit_tests(code, ["assert f(0) == 0", "assert f(1) == 1", "assert f(2) == 2"])
    assert (verdict.n_passed, verdict.n_total, verdict.status) == (2, 3, "fail")
    assert verdict.test_statuses == ("raised", "pass", "pass") and "ValueError: boom" in verdict.detail


def test_tests_share_the_driver_namespace_in_order():
    verdict = run_unit_tests(
        "def f(x):\n    return x * x\n", ["r = f(2)", "r += 1", "assert r == 5", "del r"]
    )
    assert (verdict.n_passed, verdict.status) == (4, "ok")


def test_value_tests_keep_python_equality_semantics():
    code = "def f():\n    return [1, 2.5, (3, 'x'), {4: None}, {5}, b'6', True, -0.0, 10**30]\n"
    tests = [
        "assert f() == [1, 2.5, (3, 'x'), {4: None}, {5}, b'6', 1, 0.0, 10**30]",
        "assert f() == [1, 2.5, (3, 'x'), {4: None}, {5}, b'6', 1, 0.0, 1000000000000000000000000000000]",
        "assert f() == [1, 2.5, [3, 'x'], {4: None}, {5}, b'6', True, 0.0, 1000000000000000000000000000000]",
        "assert [1, 2.5, (3, 'x'), {4: None}, {5}, b'6', True, 0.0, 1000000000000000000000000000000] == f()",
    ]
    verdict = run_unit_tests(code, tests)
    # the third test compares a list with a tuple inside, which is False in Python too
    assert verdict.test_statuses == ("pass", "pass", "fail", "pass")


def test_no_tests_is_never_a_pass():
    verdict = run_unit_tests(ADD, [])
    assert (verdict.passed, verdict.n_total, verdict.pass_fraction) == (False, 0, 0.0)


def test_setup_failure_fails_every_test():
    verdict = run_unit_tests(ADD, ADD_TESTS, setup="raise ValueError('bad task')")
    assert (verdict.n_passed, verdict.status, verdict.test_statuses) == (0, "fail", ("raised",) * 3)
    assert "bad task" in verdict.detail


# fmt: off
WRONG_TYPES = [
    (123, ["assert True"], {}, "code"), (b"x = 1", ["assert True"], {}, "code"),
    ("x = 1", "assert x", {}, "tests"), ("x = 1", ["assert x", 7], {}, "tests"), ("x = 1", None, {}, "tests"),
    ("x = 1", ["assert x"], {"setup": 1}, "setup"),
    ("x = 1", ["assert x"], {"entry_point": None}, "entry_point"),
]
# fmt: on


@pytest.mark.parametrize(("code", "tests", "extra", "name"), WRONG_TYPES)
def test_wrong_argument_types_raise(code, tests, extra, name):
    with pytest.raises(TypeError, match=name):
        run_unit_tests(code, tests, **extra)
    pair = (code, tests, extra.get("setup", ""), extra.get("entry_point", ""))
    with pytest.raises(TypeError, match=name):
        run_unit_tests_batch([Program(ADD, tuple(ADD_TESTS)), pair])


@pytest.mark.parametrize(("code", "tests", "extra", "name"), WRONG_TYPES)
def test_program_objects_are_checked_like_pairs(code, tests, extra, name):
    with pytest.raises(TypeError, match=name):
        run_unit_tests_batch([(ADD, ADD_TESTS), Program(code, tests, **extra)])


@pytest.mark.parametrize("bad", ["not a program", (ADD,), [ADD, ADD_TESTS, "", "", "extra"], None])
def test_batch_rejects_malformed_programs_before_running_any(bad):
    with pytest.raises(TypeError, match=r"programs\[1\]"):
        run_unit_tests_batch([(ADD, ADD_TESTS), bad])
    with pytest.raises(ValueError, match="timeout_s"):
        run_unit_tests(ADD, ADD_TESTS, timeout_s=0)


# --- calls across the process boundary ----------------------------------------------------------------


def test_arguments_keep_identity_aliasing_and_in_place_changes():
    code = """
def same(pair):
    return pair[0] is pair[1]
def wrap(xs):
    return [xs, xs]
def push(xs, value=0):
    xs.append(value)
    xs[0].append('inner')
def grow(d):
    d['self'] = d
    return d
def count(xs):
    return len(xs)
"""
    tests = [
        "x = []\nassert same([x, x]) is True and same([x, []]) is False",
        "data = [1]\nout = wrap(data)\nassert out[0] is data and out[1] is data",
        "inner = []\nxs = [inner]\npush(xs, value=5)\nassert xs == [inner, 5] and xs[0] is inner",
        "inner = []\npush([inner])\nassert inner == ['inner']",
        "d = {}\nassert grow(d) is d and d['self'] is d",
        "c = []\nc.append(c)\nassert count(c) == 1",
    ]
    verdict = run_unit_tests(code, tests)
    assert verdict.status == "ok", verdict.detail


def test_program_exceptions_keep_class_and_message():
    code = """
class MyError(KeyError):
    pass
class Custom(Exception):
    pass
def f(kind):
    raise {'key': MyError('k'), 'custom': Custom('c'), 'os': FileNotFoundError(2, 'gone')}[kind]
"""
    tests = [
        "try:\n    f('key')\nexcept LookupError as e:\n    assert type(e).__name__ == 'MyError'",
        "try:\n    f('custom')\nexcept Custom as e:\n    assert str(e) == 'c'",
        "try:\n    f('os')\nexcept OSError as e:\n    assert 'gone' in str(e)",
        "f('custom')",
    ]
    verdict = run_unit_tests(code, tests)
    assert verdict.test_statuses == ("pass", "pass", "pass", "raised"), verdict.detail


def test_printed_output_reaches_only_the_test(capfd):
    marker = f"printed{uuid.uuid4().hex}"
    code = f"import sys\nprint('{marker}-import')\ndef f():\n    print('{marker}-call')\n"
    code += f"    sys.stderr.write('{marker}-err')\n    return 1\ndef g(x):\n    return 1if x else 2\n"
    test = (
        "import io, contextlib\nbuf = io.StringIO()\nwith contextlib.redirect_stdout(buf):\n    f()\n"
        f"assert buf.getvalue() == '{marker}-call\\n'"
    )
    verdict = run_unit_tests(code, [test, "assert f() == 1", "assert g(1)==1if True else 0"])
    assert verdict.status == "ok", verdict.detail
    out, err = capfd.readouterr()  # nothing reaches the caller's logs, not even SyntaxWarnings
    assert marker not in out + err and "SyntaxWarning" not in out + err


# fmt: off
EXPENSIVE = [
    ("from decimal import Decimal\ndef f():\n    return Decimal('9.99e999989')\n",
     "assert round(f() * 100) == 314"),
    ("def f():\n    return [i * ((1 << 61) - 1) for i in range(1, 30001)]\n", "assert len(set(f())) == 1"),
    ("def f():\n    return 10 ** 200000\n", "assert str(f() ** 50)[:2] == '10'"),
]
# fmt: on


@pytest.mark.parametrize(("code", "test"), EXPENSIVE)
def test_expensive_values_only_run_the_driver_out_of_time(code, test):
    verdict = _timed(code, [test], 1.0)
    assert (verdict.passed, verdict.n_passed) == (False, 0)
    assert verdict.status in ("timeout", "fail"), verdict.detail


# --- forgery attempts: none of these may produce a pass ------------------------------------------------


FORGER = r"""
import os, sys
codec = sys.modules.get('ebft_repro.evaluation._sandbox_codec')
for i in range(5):
    print("PASS", i); print(f"{i}:ok"); sys.stderr.write(f"ok {i}\n")
for fd in range(1, 64):
    for message in (["ready"], ["ok", 1, [], ""], ["names", {}], {"defined": 1, "statuses": ["pass"] * 3}):
        try:
            if codec is not None:
                codec.send(fd, message)
            os.write(fd, b"0 pass\ncode ok\n" + repr(message).encode())
        except OSError:
            pass
def f(x):
    return -1
"""


@pytest.mark.parametrize(
    "exit_line",
    ["import sys; sys.exit(0)", "import os; os._exit(0)", "raise SystemExit(0)", "raise KeyboardInterrupt"],
)
def test_exiting_early_is_an_error(exit_line):
    verdict = run_unit_tests(exit_line + "\n" + ADD, ADD_TESTS)
    assert (verdict.passed, verdict.n_passed, verdict.status) == (False, 0, "error")
    assert verdict.test_statuses == ("missing",) * 3


def test_system_exit_inside_a_call_fails_only_that_test():
    code = "import sys\ndef f():\n    sys.exit(0)\ndef g():\n    return 2\n"
    verdict = run_unit_tests(code, ["assert f() == 1", "f()", "assert g() == 2", "assert f() is None"])
    assert (verdict.n_passed, verdict.n_total, verdict.status) == (1, 4, "fail")
    assert verdict.test_statuses == ("raised", "raised", "pass", "raised")


def test_hard_exit_inside_a_call_loses_the_remaining_tests():
    code = "import os\ndef ok():\n    return 1\ndef die():\n    os._exit(0)\n"
    verdict = run_unit_tests(code, ["assert ok() == 1", "assert die() == 1", "assert ok() == 1"])
    assert (verdict.passed, verdict.n_passed, verdict.status) == (False, 1, "error")
    assert verdict.test_statuses == ("pass", "lost", "lost")


VANDALISM = r"""
import builtins, json, os, sys, __main__
class Nope(Exception):
    pass
builtins.AssertionError = Nope
builtins.print = lambda *a, **k: None
for name in ("exec", "eval", "compile", "len", "enumerate", "type", "isinstance", "repr", "BaseException"):
    setattr(builtins, name, lambda *a, **k: None)
json.dumps = lambda *a, **k: "3"
json.loads = lambda *a, **k: 3
os.write = lambda fd, data: len(data)
os._exit = lambda *a: None
sys.stdout = sys.stderr = None
sys.exit = lambda *a: None
__main__.__dict__.clear()
"""


def test_vandalising_its_own_process_never_makes_a_wrong_program_pass():
    bad = run_unit_tests(VANDALISM + "def add(a, b):\n    return 0\n", ADD_TESTS)
    assert (bad.passed, bad.n_passed <= 1, bad.status != "ok") == (False, True, True)


def test_correct_program_that_vandalises_its_own_process_still_passes():
    # Old guarantee: rebinding builtins, json or os in the program's process changes no verdict.
    good = run_unit_tests(VANDALISM + ADD, ADD_TESTS)
    assert (good.passed, good.n_passed, good.status) == (True, 3, "ok"), good.detail


HARVESTER = r"""
import gc, os, sys
candidates, reporters = set(), []
frame = sys._getframe()
while frame is not None:
    for value in list(frame.f_locals.values()) + list(frame.f_globals.values()):
        if isinstance(value, (str, bytes)) and 8 <= len(value) <= 256:
            candidates.add(value.encode() if isinstance(value, str) else value)
        if callable(value) and getattr(value, "__name__", "") not in ("main", "_answer"):
            reporters.append(value)
    frame = frame.f_back
for obj in gc.get_objects():
    if type(obj) is dict and "statuses" in obj:
        obj["statuses"] = ["pass"] * 3
for fd in range(3, 32):
    for secret in list(candidates)[:50]:
        try:
            os.write(fd, secret + b" 0 pass\n")
        except OSError:
            pass
for reporter in reporters[:100]:
    for body in (b"ok", ["ok", 7, [], ""], {"statuses": ["pass"] * 3}):
        try:
            reporter(3, body)
        except BaseException:
            pass
def f(x):
    return -1
"""


ATTACKS = {  # the forged messages are well framed, in the protocol's own format, on every fd the program has
    "forged_messages": (FORGER, ["assert f(1) == 1234567", "assert f(2) > 100", "assert f(3) == 3 and True"]),
    "frame_and_gc_harvest": (
        HARVESTER,
        ["assert f(1) > 0", "assert f(2) == 7 or f(2) > 5", "assert f(3) == 3"],
    ),
}


@pytest.mark.parametrize("stop", ["", "os._exit(0)\n"])
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_forging_or_harvesting_cannot_make_a_failing_program_pass(attack, stop):
    program, tests = ATTACKS[attack]
    verdict = run_unit_tests(program + stop, tests)
    assert (verdict.passed, verdict.n_passed) == (False, 0), verdict
    assert verdict.status in ("fail", "error"), verdict


ENUM_REBINDER = """
import sys
codec = sys.modules['ebft_repro.evaluation._sandbox_codec']
encode = codec.Encoder.encode
def forged(self, value, depth=0):
    if value == 'forge':
        return ['en', 'IntEnum', '__setattr__', [['A', 1]], None]
    return encode(self, value, depth)
codec.Encoder.encode = forged
def f():
    return 'forge'
"""


def test_forged_encodings_cannot_reach_the_drivers_modules():
    # The candidate controls every byte it sends, including the enum base name the driver looks up.
    verdict = run_unit_tests(ENUM_REBINDER, ["f()", "import enum\nassert enum.IntEnum.__name__ == 'IntEnum'"])
    assert verdict.test_statuses == ("undecodable", "pass"), verdict.detail


# --- isolation ---------------------------------------------------------------------------------------


ENV_PROBE = r"""
import os
def visible():
    return "xyz" in repr(dict(os.environ)) or "EBFT_SECRET" in os.environ
def parent_environ_readable():
    for pid in [p for p in os.listdir('/proc') if p.isdigit()] + [str(os.getppid())]:
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if b"EBFT_SECRET" in fh.read():
                    return True
        except OSError:
            pass
    return False
def keys():
    return sorted(os.environ)
"""
ENV_TESTS = ["assert visible() == False", "assert set(keys()) <= {'PATH', 'LANG', 'LC_CTYPE', 'PWD'}"]
if ISOLATED:  # the fallback for ordinary users shares the parent's uid (documented residual risk)
    ENV_TESTS.append("assert parent_environ_readable() == False")


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("EBFT_SECRET", "xyz")
    verdict = run_unit_tests(ENV_PROBE, ENV_TESTS)
    assert (verdict.passed, verdict.n_passed, verdict.status) == (True, len(ENV_TESTS), "ok"), verdict.detail


def test_parent_initial_environment_is_not_readable():
    # /proc/<pid>/environ shows a process's initial environment, so the secret must be there from the start
    script = (
        "import json, sys\nfrom ebft_repro.evaluation.sandbox import run_unit_tests\n"
        "v = run_unit_tests(sys.argv[1], json.loads(sys.argv[2]))\nprint(json.dumps([v.n_passed, v.status]))"
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "EBFT_SECRET": "xyz"}
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [sys.executable, "-c", script, ENV_PROBE, json.dumps(ENV_TESTS)]
    out = subprocess.run(
        command, env=env, cwd=repo_root, capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout) == [len(ENV_TESTS), "ok"]


@pytest.mark.skipif(not ISOLATED, reason="the fallback for ordinary users cannot block writes")
def test_writes_outside_the_workdir_are_blocked_or_discarded():
    tag = uuid.uuid4().hex
    tmp_target, root_target = f"/tmp/ebft_sandbox_escape_{tag}", f"/ebft_sandbox_escape_{tag}"
    code = f"""
import os
def attempt(path):
    try:
        with open(path, "w") as fh:
            fh.write("escaped")
        return "written"
    except OSError as exc:
        return type(exc).__name__
def results():
    return attempt({tmp_target!r}), attempt({root_target!r}), attempt("inside.txt")
"""
    tests = [
        "tmp, root, cwd = results()",
        "assert root in ('PermissionError', 'OSError')",
        "assert cwd == 'written'",
    ]
    verdict = run_unit_tests(code, tests)
    assert (verdict.passed, verdict.status) == (True, "ok"), verdict.detail
    assert not os.path.exists(tmp_target)  # went to the private tmpfs (or was refused): nothing is left
    assert not os.path.exists(root_target)


def test_file_size_limit_stops_big_writes():
    code = r"""
import signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
def big_write():
    try:
        with open("big.bin", "wb") as fh:
            fh.write(b"x" * (2 << 20))
        return "written"
    except OSError:
        return "blocked"
"""
    assert run_unit_tests(code, ["assert big_write() == 'blocked'"]).status == "ok"
    # with the default SIGXFSZ action the process is killed: an error, never a pass
    killed = run_unit_tests("open('big.bin', 'wb').write(b'x' * (2 << 20))\n" + ADD, ADD_TESTS)
    assert (killed.passed, killed.status) == (False, "error")


def test_memory_bomb_is_an_error_and_the_caller_survives():
    verdict = run_unit_tests("hog = bytearray(10 * 1024**3)\n" + ADD, ADD_TESTS)
    assert (verdict.passed, verdict.n_passed, verdict.status) == (False, 0, "error")
    in_call = run_unit_tests(
        ADD + "def hog():\n    return len('x' * (10 * 1024**3))\n", ["assert hog() == 1"]
    )
    assert (in_call.n_passed, in_call.status, in_call.test_statuses) == (0, "fail", ("raised",))
    assert run_unit_tests(ADD, ADD_TESTS).passed


def test_stdlib_imports_work_after_the_privilege_drop():
    code = r"""
import collections, datetime, decimal, fractions, heapq, itertools, json, math, re, statistics
import xml.etree.ElementTree as ET
def f():
    return (
        statistics.mean([1, 2, 3]),
        str(fractions.Fraction(1, 3) + fractions.Fraction(1, 6)),
        datetime.datetime.strptime("2024-02-03", "%Y-%m-%d").day,
        "é".encode("utf-16-le"),
        ET.fromstring("<a><b/></a>")[0].tag,
        str(decimal.Decimal("1.10") + decimal.Decimal("2.20")),
    )
"""
    verdict = run_unit_tests(code, ["assert f() == (2, '1/2', 3, b'\\xe9\\x00', 'b', '3.30')"])
    assert verdict.status == "ok", verdict.detail


def test_channel_flood_is_not_a_pass_and_ends_in_time():
    # every fd the program holds, whatever its number (the caller's pass_fds keep the caller's numbers)
    code = "import os\nfor fd in map(int, os.listdir('/proc/self/fd')):\n    try:\n"
    code += "        os.write(fd, b'0 pass\\n' * (3 << 20))\n    except OSError:\n        pass\n" + ADD
    verdict = _timed(code, ADD_TESTS, 2.0)
    assert not verdict.passed and verdict.n_passed == 0


# --- timeouts and process creation -------------------------------------------------------------------


@pytest.mark.parametrize("side", ["candidate", "driver"])
def test_infinite_loop_times_out_and_leaves_no_process(side):
    marker = f"ebftloop{uuid.uuid4().hex}"
    # exec into a shell loop whose command line carries the marker, so /proc shows whether it survives
    looper = f'import posix\nposix.execv("/bin/sh", ["/bin/sh", "-c", "while :; do :; done # {marker}"])\n'
    code, tests = (looper, ["assert True"]) if side == "candidate" else (ADD, [looper])
    verdict, seen = _run_watching(marker, code, tests, timeout_s=1.0)
    assert (verdict.passed, verdict.n_passed, verdict.status) == (False, 0, "timeout")
    assert seen  # the looping process really ran...
    assert _processes_with(marker) == []  # ...and the kill removed it


def test_an_unanswered_call_times_out_and_discards_earlier_passes():
    code = ADD + "def spin():\n    while True:\n        pass\n"
    verdict = _timed(code, ["assert add(1, 2) == 3", "assert spin() == 1"], 1.0)
    assert (verdict.passed, verdict.n_passed, verdict.status) == (False, 0, "timeout")
    assert verdict.test_statuses == ()


def test_os_fork_loop_is_capped_and_never_passes():
    verdict = _timed("import os\nwhile True:\n    os.fork()\n" + ADD, ADD_TESTS, 2.0)
    assert (verdict.passed, verdict.n_passed) == (False, 0)
    assert verdict.status in ("error", "timeout"), verdict.detail


def test_raw_fork_storm_is_capped_and_leaves_no_survivors():
    marker = f"ebftfork{uuid.uuid4().hex}"
    # children try to escape the process group and keep running after the verdict
    storm = f"""
import posix
def storm(attempts):
    forked = 0
    for _ in range(attempts):
        try:
            pid = posix.fork()
        except OSError:
            continue
        if pid == 0:
            try:
                posix.setsid()
                posix.execv("/bin/sh", ["/bin/sh", "-c", "while :; do sleep 1; done # {marker}"])
            finally:
                posix._exit(0)
        forked += 1
    return forked
"""
    counted = run_unit_tests(storm, ["assert storm(200) < 16"], timeout_s=2.0)
    assert counted.status == "ok", counted.detail  # RLIMIT_NPROC caps the candidate's processes
    assert _processes_with(marker) == []  # and the ones that ran are gone with the sandbox
    verdict, _ = _run_watching(marker, storm + "while True:\n    storm(50)\n" + ADD, ADD_TESTS, timeout_s=1.0)
    assert (verdict.passed, verdict.n_passed, verdict.status) == (False, 0, "timeout")
    assert _processes_with(marker) == []


# --- batches, throughput and the verifier ----------------------------------------------------------------


def test_batch_preserves_input_order_and_runs_in_parallel(monkeypatch):
    # parallelism is checked by counting programs in flight at once, not by timing the batch
    lock, active, most = threading.Lock(), [0], [0]
    run_one = sandbox_module._run

    def counted(*args):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        try:
            return run_one(*args)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(sandbox_module, "_run", counted)
    sleepy, wrong = "import time\ntime.sleep(1.0)\n" + ADD, "def add(a, b):\n    return a * b\n"
    programs = [(sleepy, ADD_TESTS), (wrong, ADD_TESTS), Program(sleepy, tuple(ADD_TESTS))]
    programs += [("def add(a, b) return", ADD_TESTS), (sleepy, ADD_TESTS), (sleepy, ADD_TESTS, "", "add")]
    verdicts = run_unit_tests_batch(programs, timeout_s=3.0, n_workers=4)
    assert [v.status for v in verdicts] == ["ok", "fail", "ok", "error", "ok", "ok"]
    assert [v.n_passed for v in verdicts] == [3, 1, 3, 0, 3, 3]
    assert 2 <= most[0] <= 4  # the 1 s sleeps overlap (serially: 1), and never more than n_workers
    assert run_unit_tests_batch([]) == []


def test_throughput_is_only_measured_on_right_verdicts(monkeypatch):
    from ebft_repro.evaluation import sandbox
    from ebft_repro.experiments.bench_sandbox import measure_throughput

    stats = measure_throughput(6)  # every verdict of the mix is checked before a rate is returned
    assert stats["n_programs"] == 6 and stats["n_workers"] == os.cpu_count()
    everything_passes = sandbox.TestVerdict(True, 3, 3, "ok")
    monkeypatch.setattr(
        sandbox, "run_unit_tests_batch", lambda programs, **_: [everything_passes] * len(programs)
    )
    with pytest.raises(RuntimeError, match="unexpected verdict"):
        measure_throughput(6)


def test_verifier_rewards_score_liars_zero_and_humaneval_setup_is_trusted():
    from ebft_repro.evaluation import downstream
    from ebft_repro.tasks.base import Example

    tests = (*ADD_TESTS, "for a in range(2):\n    assert add(a, 0) == a")
    example = Example(prompt="", completion=ADD, unit_tests=tests, entry_point="add", uid="add")
    liar = "class A:\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return A()\n"
    half = "def add(a, b):\n    return a * b\n"  # passes the third test only
    assert downstream.verifier_rewards([example] * 3, [ADD, liar, half]) == [1.0, 0.0, 0.25]
    assert not hasattr(downstream, "verifier_results")
    prompt = "def helper(x):\n    return x\ndef add(a, b):\n    '''Sum.'''\n"
    check = "def check(candidate):\n    assert candidate(1, 2) == helper(3)"
    humaneval = Example(
        prompt=prompt, completion="    return a + b\n", unit_tests=("check(add)",), entry_point="add",
        uid="HumanEval/x", meta={"check_program": check},
    )  # fmt: skip
    program = downstream.sandbox_program(humaneval, humaneval.completion)
    assert program == Program(prompt + "    return a + b\n", (check + "\n\ncheck(add)",), prompt, "add")
    cheat = "    return 0\ndef helper(x):\n    return 0\n"  # redefines the task's helper to match
    assert downstream.verifier_rewards([humaneval] * 2, [humaneval.completion, cheat]) == [1.0, 0.0]
