"""Sandbox tests: correct verdicts, attacks that must not produce a pass, isolation and resource limits.

Programs that must be killed use short timeouts so the whole file stays well under a minute on 2 cores.
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
    TestVerdict,
    measure_throughput,
    run_unit_tests,
    run_unit_tests_batch,
)

IS_ROOT = os.geteuid() == 0
# With bubblewrap every user gets namespaces; the fallback isolates only when the parent is root.
ISOLATED = IS_ROOT or backend().name == "bwrap"
ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4 and add(0, 0) == 0"]


def _processes_with(marker: str) -> list[int]:
    """Pids whose command line contains ``marker`` (the marker is unique to one test program)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
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
    worker = threading.Thread(
        target=lambda: result.update(v=run_unit_tests(code, tests, timeout_s=timeout_s))
    )
    worker.start()
    seen = False
    while worker.is_alive():
        seen = seen or bool(_processes_with(marker))
        time.sleep(0.02)
    worker.join()
    return result["v"], seen


# --- ordinary verdicts -------------------------------------------------------------------------------


def test_correct_code_passes():
    verdict = run_unit_tests(ADD, ADD_TESTS)
    assert verdict == TestVerdict(
        True, 3, 3, "ok", verdict.detail, ("pass",) * 3, ("parent",) * 3, (), verdict.isolation
    )
    assert verdict.pass_fraction == 1.0


def test_partially_correct_counts_exactly():
    # a * b: 1*2=2 (!=3), -1*1=-1 (!=0), 2*2=4 and 0*0=0 -> only the third test passes
    verdict = run_unit_tests("def add(a, b):\n    return a * b\n", ADD_TESTS)
    assert (verdict.passed, verdict.n_passed, verdict.n_total, verdict.status) == (False, 1, 3, "fail")
    assert verdict.test_statuses == ("fail", "fail", "pass")
    assert verdict.pass_fraction == pytest.approx(1 / 3)


def test_syntax_error_is_error():
    verdict = run_unit_tests("def add(a, b) return a + b", ADD_TESTS)
    assert (verdict.passed, verdict.n_passed, verdict.status) == (False, 0, "error")
    assert "SyntaxError" in verdict.detail


def test_exception_at_definition_time_is_error():
    verdict = run_unit_tests(ADD + "undefined_name\n", ADD_TESTS)
    assert (verdict.passed, verdict.n_passed, verdict.status) == (False, 0, "error")


def test_raising_test_does_not_stop_the_others():
    code = "def f(x):\n    if x == 0:\n        raise ValueError('boom')\n    return x\n"
    verdict = run_unit_tests(code, ["assert f(0) == 0", "assert f(1) == 1", "assert f(2) == 2"])
    assert (verdict.n_passed, verdict.n_total, verdict.status) == (2, 3, "fail")
    assert verdict.test_statuses == ("raised", "pass", "pass")


def test_tests_share_the_namespace_in_order():
    tests = ["STATE.append(1)", "assert STATE == [1]", "assert count() == 1"]
    verdict = run_unit_tests("STATE = []\ndef count():\n    return len(STATE)\n", tests)
    assert (verdict.n_passed, verdict.status) == (3, "ok")
    assert verdict.decided_in == ("child", "parent", "parent")  # a bare statement passes by not raising


def test_value_tests_keep_python_equality_semantics():
    code = "def f():\n    return [1, 2.5, (3, 'x'), {4: None}, {5}, b'6', True, -0.0, 10**30]\n"
    tests = [
        # 10**30 is folded by the parent; every test is compared here
        "assert f() == [1, 2.5, (3, 'x'), {4: None}, {5}, b'6', 1, 0.0, 10**30]",
        "assert f() == [1, 2.5, (3, 'x'), {4: None}, {5}, b'6', 1, 0.0, 1000000000000000000000000000000]",
        "assert f() == [1, 2.5, [3, 'x'], {4: None}, {5}, b'6', True, 0.0, 1000000000000000000000000000000]",
        "assert [1, 2.5, (3, 'x'), {4: None}, {5}, b'6', True, 0.0, 1000000000000000000000000000000] == f()",
    ]
    verdict = run_unit_tests(code, tests)
    # the third test compares a list with a tuple inside, which is False in Python too
    assert (verdict.n_passed, verdict.status) == (3, "fail")


def test_no_tests_is_never_a_pass():
    verdict = run_unit_tests(ADD, [])
    assert (verdict.passed, verdict.n_total, verdict.pass_fraction) == (False, 0, 0.0)


@pytest.mark.parametrize(
    ("code", "tests", "name"),
    [
        (123, ["assert True"], "code"),
        (b"x = 1", ["assert True"], "code"),
        ("x = 1", "assert x", "tests"),
        ("x = 1", ["assert x", 7], "tests"),
        ("x = 1", None, "tests"),
    ],
)
def test_wrong_argument_types_raise(code, tests, name):
    with pytest.raises(TypeError, match=name):
        run_unit_tests(code, tests)
    with pytest.raises(TypeError, match=name):
        run_unit_tests_batch([(ADD, ADD_TESTS), (code, tests)])


# --- forgery attempts: none of these may produce a pass ------------------------------------------------


FORGER = r"""
import os, sys
for i in range(5):
    print("PASS", i); print(f"{i}:ok"); print(f"deadbeefdeadbeefdeadbeefdeadbeef {i} pass")
    sys.stderr.write(f"ok {i}\n")
for fd in range(1, 64):
    for line in [f"{i} pass\n" for i in range(5)] + ["code ok\n", "done\n", "0:0:ok\n", "0 val 3\n"]:
        for prefix in ("", "0" * 32 + " ", "x:"):
            try:
                os.write(fd, (prefix + line).encode())
            except OSError:
                pass
def f(x):
    return -1
"""


@pytest.mark.parametrize(("stop", "status"), [("", "fail"), ("os._exit(0)\n", "error")])
def test_printed_and_forged_result_lines_do_not_count(stop, status):
    # with os._exit the forged "code ok"/"i pass"/"done" lines are the only ones the parent receives
    verdict = run_unit_tests(
        FORGER + stop, ["assert f(1) == 3", "assert f(2) > 100", "assert f(3) == 3 and True"]
    )
    assert (verdict.passed, verdict.n_passed, verdict.status) == (False, 0, status)


@pytest.mark.parametrize(
    "exit_line",
    ["import sys; sys.exit(0)", "import os; os._exit(0)", "raise SystemExit(0)", "raise KeyboardInterrupt"],
)
def test_exiting_early_is_an_error(exit_line):
    verdict = run_unit_tests(exit_line + "\n" + ADD, ADD_TESTS)
    assert (verdict.passed, verdict.n_passed, verdict.status) == (False, 0, "error")


def test_system_exit_inside_a_test_fails_only_that_test():
    code = "import sys\ndef f():\n    sys.exit(0)\ndef g():\n    return 2\n"
    tests = ["assert f() == 1", "f()", "assert g() == 2", "assert f() is None"]
    verdict = run_unit_tests(code, tests)
    assert (verdict.n_passed, verdict.n_total, verdict.status) == (1, 4, "fail")


def test_hard_exit_inside_a_test_keeps_earlier_results_but_is_an_error():
    code = "import os\ndef ok():\n    return 1\ndef die():\n    os._exit(0)\n"
    verdict = run_unit_tests(code, ["assert ok() == 1", "assert die() == 1", "assert ok() == 1"])
    assert (verdict.passed, verdict.n_passed, verdict.status) == (False, 1, "error")


VANDALISM = r"""
import builtins, json, os, sys, __main__
class Nope(Exception):
    pass
builtins.AssertionError = Nope
builtins.print = lambda *a, **k: None
for name in ("exec", "eval", "compile", "len", "enumerate", "type", "isinstance", "repr", "BaseException"):
    setattr(builtins, name, lambda *a, **k: None)
json.dumps = lambda *a, **k: "3"
os.write = lambda fd, data: len(data)
os._exit = lambda *a: None
sys.stdout = sys.stderr = None
sys.exit = lambda *a: None
__main__.__dict__.clear()
"""


def test_patching_builtins_and_harness_modules_changes_nothing():
    good = run_unit_tests(VANDALISM + ADD, ADD_TESTS)
    assert (good.passed, good.n_passed, good.status) == (True, 3, "ok")
    bad = run_unit_tests(VANDALISM + "def add(a, b):\n    return 0\n", ADD_TESTS)
    assert (bad.passed, bad.n_passed, bad.status) == (False, 1, "fail")  # only add(-1, 1) == 0 holds


def test_always_equal_objects_do_not_pass_value_tests():
    code = r"""
class AlwaysEqual:
    def __eq__(self, other):
        return True
    __hash__ = object.__hash__
class SneakyInt(int):
    def __eq__(self, other):
        return True
    __hash__ = int.__hash__
def f(x):
    return AlwaysEqual()
def g(x):
    return SneakyInt(0)
def h(x):
    return [AlwaysEqual()]
"""
    verdict = run_unit_tests(
        code, ["assert f(1) == 2", "assert g(1) == 2", "assert h(1) == [2]", "assert 2 == f(1)"]
    )
    assert (verdict.n_passed, verdict.status) == (0, "unsupported_type")
    assert set(verdict.test_statuses) == {"unsupported_type"} and "type AlwaysEqual" in verdict.detail
    assert "defines __eq__" in verdict.suspicious


HARVESTER = r"""
import gc, os, sys
candidates = set()
def harvest(value):
    if isinstance(value, (str, bytes, bytearray)) and 8 <= len(value) <= 256:
        candidates.add(bytes(value) if not isinstance(value, str) else value.encode())
frame = sys._getframe()
reporters = []
while frame is not None:
    for value in list(frame.f_locals.values()) + list(frame.f_globals.values()):
        harvest(value)
        if callable(value):
            reporters.append(value)
    frame = frame.f_back
for obj in gc.get_objects():
    if type(obj).__name__ == "cell":
        try:
            harvest(obj.cell_contents)
        except ValueError:
            pass
for fd in range(3, 32):
    for secret in candidates:
        for i in range(3):
            for line in (secret + b":%d:ok\n" % i, secret + b" %d pass\n" % i, b"%d:" % i + secret + b"\n"):
                try:
                    os.write(fd, line)
                except OSError:
                    pass
for reporter in reporters:  # includes the harness's own reporter, found in its test-loop frame
    for body in (b"code ok", b"0 pass", b"1 pass", b"2 pass", b"done"):
        try:
            reporter(body)
        except BaseException:
            pass
def f(x):
    return -1
"""


@pytest.mark.parametrize(("stop", "status"), [("", "fail"), ("os._exit(0)\n", "error")])
def test_frame_walking_and_gc_harvesting_cannot_forge_records(stop, status):
    tests = ["assert f(1) > 0", "assert f(2) == 7 or f(2) > 5", "assert f(3) == 3"]
    verdict = run_unit_tests(HARVESTER + stop, tests)
    assert (verdict.passed, verdict.n_passed, verdict.status) == (False, 0, status)
    assert "imports gc" in verdict.suspicious and "frame access (f_back)" in verdict.suspicious


def test_tests_are_not_readable_from_disk_or_stdin():
    marker = f"expected_{uuid.uuid4().hex}"
    code = r"""
import os
def scan(root):
    found, budget = 0, 3000
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".stdlib"]  # the read-only stdlib bind mount
        for name in filenames:
            budget -= 1
            if budget < 0:
                return found
            path = os.path.join(dirpath, name)
            try:
                if os.path.isfile(path) and os.path.getsize(path) < (1 << 20):
                    with open(path, "rb") as fh:
                        found += MARKER in fh.read()
            except OSError:
                pass
    return found
def leaks():
    found = sum(scan(root) for root in (os.getcwd(), "/tmp", "/var/tmp", "/dev/shm"))
    for path in ("/proc/self/cmdline", "/proc/self/fd/0", "/proc/self/environ"):
        try:
            with open(path, "rb") as fh:
                found += MARKER in fh.read()
        except OSError:
            pass
    return found
def g():
    return "wrong"
""".replace("MARKER", repr(marker.encode()))
    # the marker is in a test decided in the child (a loop), so it does travel to the sandbox (in memory)
    loop_test = f"for _ in range(1):\n    assert g() == {marker!r}"
    verdict = run_unit_tests(code, ["assert leaks() == 0", loop_test])
    assert (verdict.n_passed, verdict.status, verdict.decided_in) == (1, "fail", ("parent", "child"))


# --- isolation ---------------------------------------------------------------------------------------


ENV_PROBE = r"""
import os
def visible():
    return "xyz" in repr(dict(os.environ)) or "EBFT_SECRET" in os.environ
def parent_environ_readable():
    try:
        with open(f"/proc/{os.getppid()}/environ", "rb") as fh:
            return b"EBFT_SECRET" in fh.read()
    except OSError:
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
    assert (verdict.passed, verdict.n_passed, verdict.status) == (True, len(ENV_TESTS), "ok")


def test_parent_initial_environment_is_not_readable():
    # /proc/<pid>/environ shows a process's initial environment, so the secret must be there from the start
    script = (
        "import json, sys\nfrom ebft_repro.evaluation.sandbox import run_unit_tests\n"
        "v = run_unit_tests(sys.argv[1], json.loads(sys.argv[2]))\nprint(json.dumps([v.n_passed, v.status]))"
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "EBFT_SECRET": "xyz"}
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-c", script, ENV_PROBE, json.dumps(ENV_TESTS)],
        env=env,
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout) == [len(ENV_TESTS), "ok"]


@pytest.mark.skipif(not ISOLATED, reason="the fallback for ordinary users cannot block writes")
def test_writes_outside_the_workdir_are_blocked_or_discarded():
    tag = uuid.uuid4().hex
    tmp_target = f"/tmp/ebft_sandbox_escape_{tag}"
    root_target = f"/ebft_sandbox_escape_{tag}"
    code = f"""
import os
def attempt(path):
    try:
        with open(path, "w") as fh:
            fh.write("escaped")
        return "written"
    except OSError as exc:
        return type(exc).__name__
TMP = attempt({tmp_target!r})
ROOT = attempt({root_target!r})
CWD = attempt("inside.txt")
"""
    # read-only root under bwrap (OSError: EROFS), root-owned as the fallback's unprivileged uid
    verdict = run_unit_tests(
        code, ["assert ROOT in ('PermissionError', 'OSError')", "assert CWD == 'written'"]
    )
    assert (verdict.passed, verdict.status) == (True, "ok")
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


def test_memory_bomb_is_an_error_and_the_parent_survives():
    verdict = run_unit_tests("hog = bytearray(10 * 1024**3)\n" + ADD, ADD_TESTS)
    assert (verdict.passed, verdict.n_passed, verdict.status) == (False, 0, "error")
    in_test = run_unit_tests(
        ADD + "def hog():\n    return len('x' * (10 * 1024**3))\n", ["assert hog() == 1"]
    )
    assert (in_test.n_passed, in_test.status) == (0, "fail")
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


def test_result_channel_flood_is_not_a_pass():
    code = "import os\nfor fd in range(3, 16):\n    try:\n        os.write(fd, b'0 pass\\n' * (3 << 20))\n"
    code += "    except OSError:\n        pass\n" + ADD
    verdict = run_unit_tests(code, ADD_TESTS, timeout_s=2)
    assert not verdict.passed and verdict.n_passed == 0


# --- timeouts and process creation -------------------------------------------------------------------


def test_infinite_loop_times_out_and_leaves_no_process():
    marker = f"ebftloop{uuid.uuid4().hex}"
    # exec into a shell loop whose command line carries the marker, so /proc shows whether it survives
    code = f"""
import posix
try:
    posix.execv("/bin/sh", ["/bin/sh", "-c", "while :; do :; done # {marker}"])
except OSError:
    pass
while True:
    pass
"""
    verdict, seen = _run_watching(marker, code, ["assert True"], timeout_s=1.0)
    assert (verdict.passed, verdict.n_passed, verdict.status) == (False, 0, "timeout")
    assert seen  # the looping process really ran...
    assert _processes_with(marker) == []  # ...and the process-group kill removed it


def test_timeout_discards_tests_passed_before_it():
    code = ADD + "def spin():\n    while True:\n        pass\n"
    verdict = run_unit_tests(code, ["assert add(1, 2) == 3", "assert spin() == 1"], timeout_s=1.0)
    assert (verdict.passed, verdict.n_passed, verdict.status) == (False, 0, "timeout")


def test_os_fork_loop_is_refused_by_the_harness():
    verdict = run_unit_tests("import os\nwhile True:\n    os.fork()\n" + ADD, ADD_TESTS, timeout_s=2.0)
    assert (verdict.passed, verdict.n_passed, verdict.status) == (False, 0, "error")
    assert "PermissionError" in verdict.detail  # refused by the harness patch, before the kernel limit


def test_raw_fork_storm_is_refused_by_the_kernel_and_leaves_no_survivors():
    marker = f"ebftfork{uuid.uuid4().hex}"
    # posix.fork bypasses the harness's os.fork patch; children try to escape the process group first
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
    counted = run_unit_tests(storm, ["assert storm(200) == 0"], timeout_s=2.0)
    assert counted.status == "ok", counted.detail  # every fork was refused (RLIMIT_NPROC after the drop)
    verdict, _ = _run_watching(marker, storm + "while True:\n    storm(50)\n" + ADD, ADD_TESTS, timeout_s=1.0)
    assert (verdict.passed, verdict.n_passed, verdict.status) == (False, 0, "timeout")
    assert _processes_with(marker) == []


# --- batches and throughput --------------------------------------------------------------------------


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
    programs = [
        ("import time\ntime.sleep(1.0)\n" + ADD, ADD_TESTS),
        ("def add(a, b):\n    return a * b\n", ADD_TESTS),
        ("import time\ntime.sleep(1.0)\n" + ADD, ADD_TESTS),
        ("def add(a, b) return", ADD_TESTS),
        ("import time\ntime.sleep(1.0)\n" + ADD, ADD_TESTS),
        ("import time\ntime.sleep(1.0)\n" + ADD, ADD_TESTS),
    ]
    verdicts = run_unit_tests_batch(programs, timeout_s=3.0, n_workers=4)
    assert [v.status for v in verdicts] == ["ok", "fail", "ok", "error", "ok", "ok"]
    assert [v.n_passed for v in verdicts] == [3, 1, 3, 0, 3, 3]
    assert 2 <= most[0] <= 4  # the 1 s sleeps overlap (serially: 1), and never more than n_workers
    assert run_unit_tests_batch([]) == []


def test_measure_throughput_reports_rates_with_default_pool_size():
    stats = measure_throughput(6)
    assert set(stats) == {"n_programs", "seconds", "programs_per_s", "n_workers", "isolation"}
    assert stats["n_programs"] == 6 and stats["n_workers"] == os.cpu_count()
    assert stats["programs_per_s"] == pytest.approx(6 / stats["seconds"])


def test_verifier_results_count_suspicious_programs_and_child_decided_tests():
    from ebft_repro.evaluation.downstream import verifier_results
    from ebft_repro.tasks.base import Example

    tests = (*ADD_TESTS, "for a in range(2):\n    assert add(a, 0) == a")
    example = Example(prompt="", completion=ADD, unit_tests=tests, entry_point="add", uid="add")
    liar = "class A:\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return A()\n"
    rewards, stats = verifier_results([example] * 3, [ADD, liar, liar])
    # The liar fails the three parent-decided tests but passes the loop, decided in the child: the
    # residual risk that the two counts make visible.
    assert rewards == [1.0, 0.25, 0.25]
    assert stats == {"suspicious_programs": 2.0, "tests_decided_in_child": 3.0}


def test_planning_untrusted_code_prints_no_syntax_warnings():
    """Generated code such as ``1if x else 2`` made the parent print SyntaxWarnings into training logs."""
    import warnings

    from ebft_repro.evaluation._sandbox_flags import suspicious_features
    from ebft_repro.evaluation._sandbox_plan import plan_tests

    code = "def f(x):\n    return 1if x else 2\n"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan_tests(code, ["assert f(1)==1if True else 0"])
        suspicious_features(code)
    assert [w for w in caught if issubclass(w.category, SyntaxWarning)] == []
