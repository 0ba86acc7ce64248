"""Run untrusted, model-written Python against unit tests, and judge the result from outside the program.

Each program runs in its own ``python -I -S -B`` child, inside bubblewrap where it works, driven by a small
harness (``_sandbox_harness.py``) that receives a per-run MAC key, the code and the child's share of the
tests on stdin, runs the code, then each test's steps in order, and reports MAC'd records on a dedicated
pipe. The verdict is computed in the parent. See ``docs/sandbox.md`` for the whole design.

Layers, outermost first, and what each one protects against:

* **Verdicts decided in the parent** (``_sandbox_plan.py``, its AST helpers ``_sandbox_bindings.py``,
  ``_sandbox_judge.py``). Every ``assert`` is parsed in the parent; the parts it can evaluate (literals,
  comparisons, ``and``/``or``/``not``, arithmetic, ``in``/``is``, a few pure builtins, names bound to
  literals) stay in the parent, and only
  the rest (calls of the solution, ``result`` bound by an earlier statement...) is sent to the child as
  placeholders, whose values come back type-tagged and are rebuilt as real standard-library objects
  (``_sandbox_values.py``). The expected literals never enter the sandbox and the comparison is Python's
  own ``==`` on plain data, so ``Counter``/``namedtuple``/``Fraction``/``Decimal``/``deque``... compare
  exactly as in Python, while objects that lie about equality (``__eq__``/``__bool__``/``__hash__``
  overrides, subclasses of builtins, user classes) are reported as ``unsupported_type``, never passed.
  This holds for compound asserts, values bound to variables first, ``is True``/``is False``, ``not``,
  ``in (...)`` and the top-level asserts of a HumanEval-style ``check(candidate)``.
* **Tests decided in the child** (asserts inside loops or ``if``, helper predicates defined by the test,
  statements that must merely not raise) still pass when the child reports that they ran without
  raising (``BaseException`` is caught, so ``SystemExit`` or a redefined ``AssertionError`` cannot
  help). :attr:`TestVerdict.decided_in` says which tests these are.
* **Authenticated records** (``_sandbox_verdict.py``). Nothing the program prints matters: stdout goes
  to /dev/null and stderr is kept only for :attr:`TestVerdict.detail`. A record counts only if its keyed
  BLAKE2b MAC verifies; the key is read into a ``bytearray``, handed to the C-level hash object and
  zeroed, so no ``str``/``bytes`` copy of it is reachable by frame walking or ``gc``. The harness captures
  every builtin it uses before user code runs, and the reporter refuses callers other than its own test
  loop. A test passes only if all its steps were reported and, for ``status="ok"``/``"fail"``, the
  harness reported the end of the run; a timeout scores zero.
* **Isolation** (``_sandbox_backend.py``; ``_sandbox_launch.py`` runs and reaps the child): bubblewrap
  gives the child fresh pid/network/IPC/UTS/mount
  namespaces, read-only binds of ``/usr`` and the Python installation only, private size-capped tmpfs
  on ``/tmp`` and ``/dev/shm``, an empty environment, a new session, ``no_new_privs`` and
  ``--die-with-parent``. The same holds for an ordinary user (via a user namespace) and for root (which
  additionally drops to a fresh unprivileged uid before user code). Nothing the program writes survives
  the call; it cannot see, signal or read the memory of the caller or any other process, nor reach the
  network. Without a usable bwrap, a fallback runs with a one-time warning that names what is lost.
* **Resource limits**, set by the harness before user code: ``RLIMIT_CPU`` (timeout + 1 s),
  ``RLIMIT_AS`` (1 GiB), ``RLIMIT_FSIZE`` (1 MiB per file), ``RLIMIT_NPROC=1`` (with an unprivileged uid
  the kernel refuses every fork, so fork bombs cannot start) and ``RLIMIT_CORE=0``.
* **Bounded parent.** The result pipe is read up to 8 MiB, decoding has node, depth, size, same-hash
  and time limits (a forged set of colliding ints is refused in milliseconds), and each call returns
  within ``timeout_s`` plus a few seconds of reaping and decoding, whatever the child does.

Residual risks (honest list):

* Tests decided in the child remain forgeable by code that controls its own process (it shares the
  interpreter with the harness and could, e.g., find the test loop through ``gc`` and rebind a cell).
  RLVR can learn to exploit a verifier: :attr:`TestVerdict.suspicious` flags programs that define
  ``__eq__``/``__bool__``/``__hash__`` or reach for frames, ``gc`` or ``inspect``, and the evaluation
  and RLVR metrics count them (``suspicious_programs``), so such reward hacking is visible.
* Placeholders are evaluated eagerly in the child: in ``assert a or b``, ``b`` is computed even when
  ``a`` holds (its exceptions are ignored unless needed, but its side effects happen), and statements
  after a failing parent-decided assert of the same test still run in the child.
* A program may still read world-readable files under ``/usr`` and the Python installation (not the
  checkout or data), and spend its CPU/memory/time limits; the tmpfs inode count is bounded only by the
  time limit.
"""

from __future__ import annotations

import marshal
import math
import os
import secrets
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ebft_repro.evaluation import _sandbox_judge as judge
from ebft_repro.evaluation._sandbox_backend import FALLBACK_TMPFS_OPTIONS, backend, sandbox_uid
from ebft_repro.evaluation._sandbox_flags import suspicious_features
from ebft_repro.evaluation._sandbox_launch import run_child
from ebft_repro.evaluation._sandbox_plan import plan_tests
from ebft_repro.evaluation._sandbox_verdict import (  # noqa: F401 - the status names are part of this module's API
    STATUS_ERROR,
    STATUS_FAIL,
    STATUS_OK,
    STATUS_TIMEOUT,
    STATUS_UNSUPPORTED,
    verdict_fields,
)

TEST_STATUSES = judge.TEST_STATUSES

_AS_LIMIT_BYTES = 1 << 30
_FSIZE_LIMIT_BYTES = 1 << 20
_NPROC_LIMIT = 1  # the harness process itself; any fork/clone by the (unprivileged) program fails
_KEY_BYTES = 32

# The child-side harness lives in its own file so that it can be read and linted as code; it is passed to
# the child with ``-c`` as text, never imported here, and never written elsewhere.
_HARNESS = (Path(__file__).parent / "_sandbox_harness.py").read_text(encoding="utf-8")


@dataclass(frozen=True)
class TestVerdict:
    """Outcome of running one program against its unit tests.

    Attributes:
        passed: every test passed (False when there are no tests: a vacuous pass is never rewarded).
        n_passed: tests that passed (0 on timeout).
        n_total: number of tests.
        status: ``"ok"`` (all tests passed), ``"fail"`` (ran to the end, some test failed),
            ``"unsupported_type"`` (ran to the end, and every test that did not pass needed a value the
            parent cannot compare faithfully), ``"timeout"`` (wall-clock or CPU limit hit) or ``"error"``
            (did not compile/define, crashed, exited early, hit a resource limit, or the sandbox could
            not be set up).
        detail: short human-readable reason (per-test reasons for tests that did not pass).
        test_statuses: per test, one of ``pass``, ``fail``, ``raised``, ``unsupported_type``,
            ``undecodable``, ``refused``, ``missing`` (see ``_sandbox_judge.py``); empty on timeout.
        decided_in: per test, ``"parent"`` (its asserts were evaluated by the parent on values rebuilt
            from the child's) or ``"child"`` (part of the verdict was decided inside the sandbox).
        suspicious: reasons the program looks like it may game the verifier (never used for the
            verdict), e.g. ``"defines __eq__"`` or ``"frame access (_getframe)"``.
        isolation: ``"bwrap"`` or ``"fallback"`` (see ``_sandbox_backend.py``).
    """

    __test__ = False  # keep pytest from collecting this class because of its name

    passed: bool
    n_passed: int
    n_total: int
    status: str
    detail: str = ""
    test_statuses: tuple[str, ...] = ()
    decided_in: tuple[str, ...] = ()
    suspicious: tuple[str, ...] = ()
    isolation: str = ""

    @property
    def pass_fraction(self) -> float:
        """Fraction of tests passed (0.0 when there are no tests)."""
        return self.n_passed / self.n_total if self.n_total else 0.0


def run_unit_tests(code: str, tests: Sequence[str], *, timeout_s: float = 3.0) -> TestVerdict:
    """Run ``code`` and then each test in ``tests`` in a fresh sandboxed interpreter.

    Args:
        code: the program (e.g. a generated function definition).
        tests: Python test snippets, typically one ``assert`` statement each; run in order after ``code``
            in the same namespace, each independently (a failing test does not stop the next one).
        timeout_s: wall-clock limit for the child; on expiry it is killed and the verdict is
            ``"timeout"`` with zero tests passed. The call itself returns within about ``timeout_s + 4``.

    Returns:
        The verdict, computed by the parent (see the module docstring).

    Raises:
        TypeError: if ``code`` is not a str or ``tests`` is not a sequence of str.
        ValueError: if ``timeout_s`` is not positive.
    """
    _check_program(code, tests)
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
    return _run(code, list(tests), float(timeout_s))


def run_unit_tests_batch(
    programs: Sequence[tuple[str, Sequence[str]]], *, timeout_s: float = 3.0, n_workers: int | None = None
) -> list[TestVerdict]:
    """Run many ``(code, tests)`` programs in parallel; results are in input order.

    Args:
        programs: ``(code, tests)`` pairs, as for :func:`run_unit_tests`.
        timeout_s: per-program wall-clock limit.
        n_workers: concurrent programs (threads, each waiting on one subprocess); default ``os.cpu_count()``.

    Returns:
        One verdict per program.

    Raises:
        TypeError: if any program's code or tests have the wrong type (checked before anything runs).
    """
    programs = list(programs)
    for index, program in enumerate(programs):
        if not isinstance(program, tuple | list) or len(program) != 2:
            raise TypeError(f"programs[{index}] must be a (code, tests) pair")
        _check_program(program[0], program[1], where=f"programs[{index}]")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
    if not programs:
        return []
    backend()  # probe (and warn) once, before the threads start
    workers = max(1, min(n_workers or os.cpu_count() or 1, len(programs)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
        return list(pool.map(lambda p: _run(p[0], list(p[1]), float(timeout_s)), programs))


def measure_throughput(n_programs: int = 200, *, n_workers: int | None = None) -> dict:
    """Time :func:`run_unit_tests_batch` on a fixed mix of correct, partly wrong and looping programs.

    Every 20th program loops forever (run with a 1 s timeout), the others alternate between a correct
    and a partly wrong solution with three tests each. The verdicts are checked, so a broken sandbox
    cannot produce a throughput number.

    Args:
        n_programs: programs to run.
        n_workers: as for :func:`run_unit_tests_batch` (default ``os.cpu_count()``).

    Returns:
        ``{"n_programs", "seconds", "programs_per_s", "n_workers", "isolation"}``.

    Raises:
        RuntimeError: if some verdict differs from the expected one.
    """
    tests = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4 and add(0, 0) == 0"]
    solutions = {
        "ok": "def add(a, b):\n    return a + b\n",
        "fail": "def add(a, b):\n    return a * b\n",  # only the third test holds
        "timeout": "def add(a, b):\n    while True:\n        pass\n",
    }
    expected_passed = {"ok": 3, "fail": 1, "timeout": 0}
    kinds = ["timeout" if i % 20 == 19 else ("ok" if i % 2 == 0 else "fail") for i in range(n_programs)]
    workers = n_workers or os.cpu_count() or 1
    start = time.perf_counter()
    verdicts = run_unit_tests_batch([(solutions[k], tests) for k in kinds], timeout_s=1.0, n_workers=workers)
    seconds = time.perf_counter() - start
    for index, (kind, verdict) in enumerate(zip(kinds, verdicts)):
        if verdict.status != kind or verdict.n_passed != expected_passed[kind]:
            raise RuntimeError(f"program {index} ({kind}) got an unexpected verdict: {verdict}")
    return {
        "n_programs": n_programs,
        "seconds": seconds,
        "programs_per_s": n_programs / seconds if seconds > 0 else float("inf"),
        "n_workers": workers,
        "isolation": backend().name,
    }


def _check_program(code: object, tests: object, where: str = "") -> None:
    prefix = f"{where}: " if where else ""
    if not isinstance(code, str):
        raise TypeError(f"{prefix}code must be a str, got {type(code).__name__}")
    if isinstance(tests, str | bytes) or not isinstance(tests, Sequence):
        raise TypeError(f"{prefix}tests must be a sequence of str, got {type(tests).__name__}")
    for index, test in enumerate(tests):
        if not isinstance(test, str):
            raise TypeError(f"{prefix}tests[{index}] must be a str, got {type(test).__name__}")


def _run(code: str, tests: list[str], timeout_s: float) -> TestVerdict:
    deadline = time.monotonic() + timeout_s
    plans = plan_tests(code, tests)
    chosen = backend()
    uid = sandbox_uid()
    key = secrets.token_bytes(_KEY_BYTES)
    payload = {
        "code": code,
        "tests": [plan.wire() for plan in plans],
        "uid": uid,
        "fallback": chosen.name == "fallback",
        "ppid": os.getpid(),
        "cpu_s": math.ceil(timeout_s) + 1,
        "as_bytes": _AS_LIMIT_BYTES,
        "fsize": _FSIZE_LIMIT_BYTES,
        "nproc": _NPROC_LIMIT,
        "tmpfs": FALLBACK_TMPFS_OPTIONS,
    }
    child = run_child(chosen, _HARNESS, key + marshal.dumps(payload), uid, deadline)
    fields = verdict_fields(child, key, plans, timeout_s, bwrap=chosen.name == "bwrap")
    return TestVerdict(**fields, suspicious=suspicious_features(code), isolation=chosen.name)
