"""Run untrusted, model-written Python against unit tests, judged where the program cannot reach.

Each program gets two processes, each in its own bubblewrap sandbox (``_sandbox_backend.py``, started and
reaped by ``_sandbox_launch.py``):

* the **candidate** (``_sandbox_candidate.py``) runs the generated program and nothing else; it only
  answers requests: how a name is bound, and calls of the program's functions with plain-data arguments;
* the **driver** (``_sandbox_driver.py``) runs the task's tests (and its trusted ``setup`` code) with the
  real standard library; each name the tests take from the program is a proxy (a callable), the
  driver's own import (a stdlib module) or a copy (a value). Values cross as type-tagged JSON decoded
  into fresh standard-library objects (``_sandbox_codec.py``), so everything a test does besides calling
  the program (comparisons, ``math.isclose``, ``Counter``, ``sorted(key=...)``, ``check(candidate)``)
  happens in the driver, where nothing the program rebinds, walks, traces or forges can reach.

The candidate cannot see, signal or trace the driver (separate pid namespaces and, for a root caller,
separate fresh uids), every slow operation on an untrusted value runs under the driver's own limits, and
the caller waits at most ``timeout_s`` plus a few seconds. See ``docs/sandbox.md`` for the threat model,
the encoding, the limits and the attacks the tests cover.
"""

from __future__ import annotations

import functools
import json
import marshal
import math
import os
import signal
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from ebft_repro.evaluation._sandbox_backend import backend, sandbox_uid
from ebft_repro.evaluation._sandbox_launch import PairResult, run_pair

STATUS_OK = "ok"
STATUS_FAIL = "fail"
STATUS_UNSUPPORTED = "unsupported_type"
STATUS_TIMEOUT = "timeout"
STATUS_ERROR = "error"
TEST_STATUSES = ("pass", "fail", "raised", "unsupported_type", "undecodable", "lost", "missing")

_AS_LIMIT_BYTES = 1 << 30
_FSIZE_LIMIT_BYTES = 1 << 20
# Processes (threads included) per sandbox: a test may start a thread; the program may use threads and
# asyncio. Each process has its own fresh uid (root caller) or user namespace, so the count starts at 0.
_NPROC = {"driver": 4, "candidate": 16}
_DETAIL_CHARS = 600
# Each child's interpreter runs this: it turns the code objects on its stdin into the modules of the
# package it needs (the checkout is not visible in the sandbox), then calls the role's ``main``.
_CHILD_BOOT = """import sys, marshal
data = sys.stdin.buffer.read()
size = int.from_bytes(data[:8], "big")
for name, code in marshal.loads(data[8 : 8 + size]):
    module = sys.modules[name] = type(sys)(name)
    module.__path__ = []
    exec(code, module.__dict__)
sys.stdin.close()
sys.modules[name].main(marshal.loads(data[8 + size :]), *map(int, sys.argv[1:]))
"""


@dataclass(frozen=True)
class Program:
    """One program and what it is judged by.

    Attributes:
        code: the untrusted program; it runs only in the candidate process.
        tests: trusted test snippets, run in order in one namespace in the driver; each passes when it
            runs without raising.
        setup: trusted task code the tests may use (e.g. HumanEval's prompt, with helpers such as
            ``poly``), run in the driver before the tests; the names it defines are the task's, not the
            program's.
        entry_point: a name ``setup`` also defines (a stub) that must nevertheless be the program's.
    """

    code: str
    tests: tuple[str, ...]
    setup: str = ""
    entry_point: str = ""


@dataclass(frozen=True)
class TestVerdict:
    """Outcome of running one program against its unit tests.

    Attributes:
        passed: every test passed (False when there are no tests: a vacuous pass is never rewarded).
        n_passed: tests that passed (0 on timeout).
        n_total: number of tests.
        status: ``"ok"`` (all tests passed), ``"fail"`` (some test failed), ``"unsupported_type"``
            (every test that did not pass needed a value that cannot cross), ``"timeout"`` (the run
            exceeded ``timeout_s``) or ``"error"`` (the program did not compile or define itself, its
            process died mid-way, or the sandbox could not run).
        detail: short human-readable reason (per-test reasons for tests that did not pass).
        test_statuses: per test, one of :data:`TEST_STATUSES`; empty on timeout.
        isolation: ``"bwrap"`` or ``"fallback"`` (see ``_sandbox_backend.py``).
    """

    __test__ = False  # keep pytest from collecting this class because of its name

    passed: bool
    n_passed: int
    n_total: int
    status: str
    detail: str = ""
    test_statuses: tuple[str, ...] = ()
    isolation: str = ""

    @property
    def pass_fraction(self) -> float:
        """Fraction of tests passed (0.0 when there are no tests)."""
        return self.n_passed / self.n_total if self.n_total else 0.0


def run_unit_tests(
    code: str, tests: Sequence[str], *, setup: str = "", entry_point: str = "", timeout_s: float = 3.0
) -> TestVerdict:
    """Run ``code`` in the candidate process and ``tests`` in the driver (see the module docstring).

    Args:
        code: the program (e.g. a generated function definition).
        tests: Python test snippets, typically one ``assert`` each; run in order in one namespace, each
            independently (a failing test does not stop the next one).
        setup: trusted task code run in the driver before the tests (see :class:`Program`).
        entry_point: the name ``setup`` defines but the tests must take from the program.
        timeout_s: wall-clock limit for the whole run; on expiry both processes are killed and the
            verdict is ``"timeout"`` with zero tests passed. The call returns within about
            ``timeout_s + 3`` seconds.

    Raises:
        TypeError: if an argument has the wrong type.
        ValueError: if ``timeout_s`` is not positive.
    """
    program = _as_program((code, tests, setup, entry_point))
    _check_timeout(timeout_s)
    return _run(program, float(timeout_s))


def run_unit_tests_batch(
    programs: Sequence[Program | tuple], *, timeout_s: float = 3.0, n_workers: int | None = None
) -> list[TestVerdict]:
    """Run many programs in parallel; results are in input order.

    Args:
        programs: :class:`Program` objects or ``(code, tests)`` pairs.
        timeout_s: per-program wall-clock limit.
        n_workers: concurrent programs (threads, each waiting on its two processes); default
            ``os.cpu_count()``.

    Raises:
        TypeError: if any program has the wrong shape or types (checked before anything runs).
    """
    checked = []
    for index, program in enumerate(programs):
        checked.append(_as_program(program, where=f"programs[{index}]"))
    _check_timeout(timeout_s)
    if not checked:
        return []
    backend()  # probe (and warn) once, before the threads start
    workers = max(1, min(n_workers or os.cpu_count() or 1, len(checked)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
        return list(pool.map(lambda p: _run(p, float(timeout_s)), checked))


def _as_program(program: object, where: str = "") -> Program:
    prefix = f"{where}: " if where else ""
    if not isinstance(program, Program):
        if not isinstance(program, tuple | list) or not 2 <= len(program) <= 4:
            raise TypeError(f"{prefix}a program must be a Program or a (code, tests) pair")
        program = Program(*program)
    tests = program.tests
    if isinstance(tests, str | bytes) or not isinstance(tests, Sequence):
        raise TypeError(f"{prefix}tests must be a sequence of str, got {type(tests).__name__}")
    for index, test in enumerate(tests):
        if not isinstance(test, str):
            raise TypeError(f"{prefix}tests[{index}] must be a str, got {type(test).__name__}")
    for name in ("code", "setup", "entry_point"):
        if not isinstance(getattr(program, name), str):
            raise TypeError(f"{prefix}{name} must be a str, got {type(getattr(program, name)).__name__}")
    return program if isinstance(tests, tuple) else replace(program, tests=tuple(tests))


def _check_timeout(timeout_s: float) -> None:
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")


@functools.lru_cache(maxsize=1)
def _child_modules() -> dict[str, bytes]:
    """Per role, the marshalled ``[(module name, code)]`` its interpreter runs (compiled once here)."""
    folder = Path(__file__).parent
    shared = [_compiled(folder, name) for name in ("_sandbox_codec", "_sandbox_confine")]
    return {
        role: marshal.dumps([*shared, _compiled(folder, f"_sandbox_{role}")])
        for role in ("driver", "candidate")
    }


def _compiled(folder: Path, name: str) -> tuple[str, object]:
    path = folder / f"{name}.py"
    return f"ebft_repro.evaluation.{name}", compile(path.read_text(encoding="utf-8"), str(path), "exec")


def _settings(role: str, uid: int | None, timeout_s: float, fallback: bool) -> dict:
    limits = {
        "RLIMIT_CPU": math.ceil(timeout_s) + 1,
        "RLIMIT_AS": _AS_LIMIT_BYTES,
        "RLIMIT_FSIZE": _FSIZE_LIMIT_BYTES,
        "RLIMIT_NPROC": _NPROC[role],
        "RLIMIT_CORE": 0,
    }
    return {
        "uid": uid,
        "fallback": fallback,
        "ppid": os.getpid(),
        "limits": limits,
    }


def _run(program: Program, timeout_s: float) -> TestVerdict:
    deadline = time.monotonic() + timeout_s
    chosen = backend()
    fallback = chosen.name == "fallback"
    uids = (sandbox_uid(), sandbox_uid())
    inputs = {
        "driver": {"tests": list(program.tests), "setup": program.setup, "entry_point": program.entry_point},
        "candidate": {"code": program.code},
    }
    modules = _child_modules()
    stdin = []
    for role, uid in zip(("driver", "candidate"), uids):
        settings = inputs[role] | {"confine": _settings(role, uid, timeout_s, fallback)}
        stdin.append(len(modules[role]).to_bytes(8, "big") + modules[role] + marshal.dumps(settings))
    result = run_pair(chosen, _CHILD_BOOT, tuple(stdin), uids, deadline)
    return TestVerdict(
        **_verdict_fields(result, len(program.tests), timeout_s, chosen.name == "bwrap"),
        isolation=chosen.name,
    )


def _verdict_fields(result: PairResult, n_total: int, timeout_s: float, bwrap: bool) -> dict:
    """The TestVerdict fields that follow from the driver's report and how both processes ended."""

    def verdict(status: str, statuses: tuple[str, ...], reason: str) -> dict:
        n_passed = statuses.count("pass")
        detail = f"{reason}; driver stderr: {result.stderr_tail}" if result.stderr_tail else reason
        return {
            "passed": status == STATUS_OK and n_total > 0,
            "n_passed": n_passed,
            "n_total": n_total,
            "status": status,
            "detail": detail[:_DETAIL_CHARS],
            "test_statuses": statuses,
        }

    if result.timed_out:
        return verdict(STATUS_TIMEOUT, (), f"wall-clock timeout after {timeout_s:g}s")
    try:
        size = int.from_bytes(result.report[:8], "big")  # one message, framed as _sandbox_codec.send does
        if len(result.report) != 8 + size:
            raise ValueError("truncated report")
        report = json.loads(result.report[8:])
        statuses = tuple(report["statuses"])
        if len(statuses) != n_total or not set(statuses) <= set(TEST_STATUSES):
            raise ValueError("wrong statuses")
    except (ValueError, KeyError, TypeError):
        return verdict(
            STATUS_ERROR, (), f"no report from the driver ({_describe_exit(result.driver_exit, bwrap)})"
        )
    if not report.get("defined"):
        return verdict(STATUS_ERROR, statuses, f"the program did not run: {report.get('detail', '')}")
    details = report.get("details") or [""] * n_total
    reasons = "; ".join(
        f"test {i}: {s} ({d})" for i, (s, d) in enumerate(zip(statuses, details)) if s != "pass"
    )
    summary = f"{statuses.count('pass')}/{n_total} passed" + (f"; {reasons}" if reasons else "")
    if "lost" in statuses:
        lost = _describe_exit(result.candidate_exit, bwrap)
        return verdict(STATUS_ERROR, statuses, f"the program's process ended early ({lost}); {summary}")
    if statuses.count("pass") == n_total:
        status = STATUS_OK
    elif all(s in ("pass", "unsupported_type") for s in statuses):
        status = STATUS_UNSUPPORTED
    else:
        status = STATUS_FAIL
    return verdict(status, statuses, summary)


def _describe_exit(returncode: int | None, bwrap: bool) -> str:
    """How a process ended (bwrap reports a child's death by signal N as exit 128+N)."""
    if returncode is None:
        return "still running"
    number = -returncode if returncode < 0 else (returncode - 128 if bwrap and returncode > 128 else None)
    if number is None:
        return f"exited with status {returncode}"
    try:
        return f"killed by {signal.Signals(number).name}"
    except ValueError:
        return f"killed by signal {number}"
