"""Run untrusted, model-written Python against unit tests, and judge the result from outside the program.

Each program runs in its own ``python -I -S -B`` subprocess, driven by a small harness (``_HARNESS``) that
receives a per-run MAC key, the code and the tests on stdin, runs the code, then each test in order, and
reports one record per step on a dedicated pipe. The verdict is computed in the parent from those records.

Layers, and what each one protects against (outermost first):

* **Parent-side verdict.** Nothing the program prints matters: stdout goes to /dev/null and stderr is kept
  only for :attr:`TestVerdict.detail`. The parent counts test ``i`` as passed only if it reads a record for
  index ``i`` whose MAC verifies under the run's key, the harness reported that the solution code ran and
  (for ``status="ok"``/``"fail"``) that all tests were run, and the wall-clock deadline was not hit (a
  timeout scores zero). Early ``sys.exit``/``os._exit``, crashes and resource kills therefore never pass
  a test that had not already been reported.
* **Value tests are compared in the parent.** A test of the form ``assert <expr> == <literal>`` (the usual
  MBPP form; also ``<literal> == <expr>``) is split in the parent: only ``<expr>`` is sent to the child,
  which evaluates it and sends the value back; the expected literal never enters the sandbox and the
  comparison happens in the parent. Values must be plain builtin data (exact ``int``/``float``/``str``/
  ``bool``/``None``/``bytes``/``complex`` and ``list``/``tuple``/``set``/``frozenset``/``dict`` of those),
  which also defeats "always-equal" objects (``__eq__`` returning True) and int/str subclasses. For these
  tests a forged record is worth no more than returning a value from the function, so they stay sound
  even against code that fully controls its own process.
* **Other tests** (multi-statement tests, ``assert f(x)``, ``math.isclose``...) are executed in the child;
  "passed" means the test code ran without raising (``BaseException`` is caught, so ``SystemExit`` or a
  redefined ``AssertionError`` cannot help). The record is authenticated with a keyed BLAKE2b MAC. The
  key is read into a ``bytearray``, handed to the C-level hash object and then zeroed, so no ``str``/
  ``bytes`` copy of it is reachable by frame walking or ``gc`` scanning. The harness captures every
  builtin and function it uses before user code runs (patching ``builtins``, ``json``, ``os.write``,
  ``print``, ``sys.stdout`` has no effect on it), the solution runs in a fresh globals dict, and the
  reporter refuses callers other than the harness's own test loop (checked by code-object identity).
* **Privilege drop (when the parent is root).** Before user code the harness unshares mount, network and
  IPC namespaces, mounts fresh size-capped ``tmpfs`` on ``/tmp``, ``/var/tmp``, ``/dev/shm`` and
  ``/run/lock`` (so writes there vanish with the run), runs in ``/tmp/work`` inside that tmpfs, sets
  ``no_new_privs`` (setuid binaries cannot regain root), and switches to a random, dedicated uid/gid
  (or ``nobody`` when the uid map is restricted, e.g. in a user-namespaced container). As that uid the
  program cannot write root-owned paths, cannot read the parent's ``/proc/<pid>/environ`` or memory, and
  the process is non-dumpable so sibling sandboxes cannot ptrace it. If the stdlib lives under a
  directory the unprivileged uid cannot traverse (e.g. pyenv under ``/root``), it is bind-mounted
  read-only into the private tmpfs and ``sys.path`` is redirected, so any stdlib module stays importable.
  Failing to drop privileges as root is fatal (fail closed: status ``"error"``); failing to create the
  namespaces is not (no private tmp/network, documented below).
* **Resource limits**, set by the harness with ``resource.setrlimit`` before user code (not through
  ``preexec_fn``, which CPython documents as unsafe in the presence of threads, and
  :func:`run_unit_tests_batch` runs from a thread pool): ``RLIMIT_CPU`` (wall timeout + 1 s),
  ``RLIMIT_AS`` (1 GiB; memory bombs get ``MemoryError``), ``RLIMIT_FSIZE`` (1 MiB per file, including
  stderr), ``RLIMIT_NPROC=1`` and ``RLIMIT_CORE=0``. ``RLIMIT_NPROC`` is ignored for root, which is a
  reason for the privilege drop: once the uid is unprivileged, a limit of 1 means the kernel refuses every
  ``fork``/``clone`` (threads included), so fork bombs cannot even start.
* **Harness speed bumps**: ``os.fork``, ``os.system``, ``os.exec*``, ``os.spawn*``, ``os.posix_spawn*``,
  ``os.kill``/``os.killpg`` are replaced by functions raising ``PermissionError``, and ``subprocess``,
  ``multiprocessing``, ``pty`` and ``ctypes`` cannot be imported. This is bypassable (``import posix``)
  and is not relied on; it only makes the common cases fail fast and readably.
* **Process hygiene**: ``start_new_session=True``; after the run (or at the deadline) the parent kills the
  whole process group with ``SIGKILL`` before reaping the child, so nothing that stayed in the group
  survives. The child's environment is only ``PATH``/``LANG`` (no inherited secrets), stdin is replaced by
  /dev/null after the payload is read, and tests are never written to disk. ``-S`` keeps site-packages
  (and the ``exit``/``quit`` helpers) out of the child: solutions get the standard library only.

Residual risks (honest list):

* The harness and the solution share one interpreter. Code that deliberately introspects the harness
  (e.g. finds the test-loop function or its closure cells through ``gc``, rebinds a cell, or calls the
  loop with fabricated tests) can forge passes for *executed* tests; value tests remain safe. Treat
  ``status`` of programs that mention ``gc``/``sys._getframe``/``__closure__`` with suspicion if that matters.
* Without root (or without ``CAP_SYS_ADMIN``): no private tmpfs, no network isolation, writes to
  world-writable directories are possible and left behind (bounded by ``RLIMIT_FSIZE`` per file); without
  root the child also shares the parent's uid, so it can read ``/proc/<parent>/environ``, signal or
  ptrace the parent; process creation is still refused by ``RLIMIT_NPROC`` unless the uid holds
  ``CAP_SYS_RESOURCE``/``CAP_SYS_ADMIN``.
* The unprivileged uid can still read world-readable files (e.g. a dataset copy with expected outputs in
  a world-readable directory): keep test data in non-world-readable locations.
* With the ``nobody`` fallback uid, concurrent sandboxes share a uid and can signal (but not ptrace) each
  other, which can only make a sibling fail.
* Disk usage of the private tmpfs mounts is capped (``_TMPFS_OPTIONS``) and freed when the run ends.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import hmac
import json
import math
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

STATUS_OK = "ok"
STATUS_FAIL = "fail"
STATUS_TIMEOUT = "timeout"
STATUS_ERROR = "error"

_AS_LIMIT_BYTES = 1 << 30
_FSIZE_LIMIT_BYTES = 1 << 20
_NPROC_LIMIT = 1  # the harness process itself; any fork/clone by the (unprivileged) program fails
_TMPFS_OPTIONS = "size=32m,nr_inodes=4096,mode=1777"
_CHILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
_MAX_CHANNEL_BYTES = 8 << 20  # results pipe cap; a program flooding it is stopped and scored "error"
_DETAIL_CHARS = 600
_KEY_BYTES = 32
_DIGEST_BYTES = 16
# Dedicated uids are drawn from a range no distribution allocates, so a run's uid owns no other process.
_UID_BASE = 2_000_000_000
_UID_SPAN = 1 << 27
_NOBODY = 65534
_EXEC_TEST = object()  # "expected value" of a test that is executed in the child rather than compared here

# The child-side harness lives in its own file (``_sandbox_harness.py``) so that it can be read and linted
# as code; it is passed to the child with ``-c`` as text, never imported here, and never written elsewhere.
_HARNESS = (Path(__file__).parent / "_sandbox_harness.py").read_text(encoding="utf-8")


@dataclass(frozen=True)
class TestVerdict:
    """Outcome of running one program against its unit tests.

    Attributes:
        passed: every test passed (False when there are no tests: a vacuous pass is never rewarded).
        n_passed: tests that passed (0 on timeout).
        n_total: number of tests.
        status: ``"ok"`` (all tests passed), ``"fail"`` (ran to the end, some test failed),
            ``"timeout"`` (wall-clock limit hit) or ``"error"`` (did not compile/define, crashed, exited
            early, hit a resource limit, or the sandbox could not be set up).
        detail: short human-readable reason; never used for the verdict.
    """

    __test__ = False  # keep pytest from collecting this class because of its name

    passed: bool
    n_passed: int
    n_total: int
    status: str
    detail: str = ""

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
        timeout_s: wall-clock limit for the whole run; on expiry the process group is killed and the
            verdict is ``"timeout"`` with zero tests passed.

    Returns:
        The verdict, computed by the parent from authenticated records (see the module docstring).

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
        ``{"n_programs", "seconds", "programs_per_s", "n_workers"}``.

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


def _split_value_test(test: str) -> tuple[str, object] | None:
    """``assert <expr> == <literal>`` -> (expr source, literal value); None for any other test shape."""
    try:
        tree = ast.parse(test)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        return None
    compare = tree.body[0].test
    if not (
        isinstance(compare, ast.Compare) and len(compare.ops) == 1 and isinstance(compare.ops[0], ast.Eq)
    ):
        return None
    for expr, literal in ((compare.left, compare.comparators[0]), (compare.comparators[0], compare.left)):
        try:
            expected = ast.literal_eval(literal)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
        return ast.unparse(expr), expected
    return None


def _decode(obj: object) -> object:
    """Inverse of the harness's tagged JSON encoding; raises ValueError on anything else."""
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, dict) and len(obj) == 1:
        ((tag, val),) = obj.items()
        if tag == "f" and isinstance(val, str):
            return float(val)
        if tag == "c" and isinstance(val, list) and len(val) == 2:
            return complex(float(val[0]), float(val[1]))
        if tag in ("b", "ba") and isinstance(val, str):
            return bytes.fromhex(val) if tag == "b" else bytearray.fromhex(val)
        if tag in ("l", "t", "s", "fs") and isinstance(val, list):
            items = [_decode(item) for item in val]
            return {"l": list, "t": tuple, "s": set, "fs": frozenset}[tag](items)
        if tag == "d" and isinstance(val, list):
            return {_decode(k): _decode(v) for k, v in val}
    raise ValueError("malformed value record")


@functools.lru_cache(maxsize=1)
def _full_uid_range() -> bool:
    """True when this process sees the whole uid space (not in a restricted user namespace)."""
    try:
        with open("/proc/self/uid_map") as fh:
            fields = fh.read().split()
    except OSError:
        return False
    return fields[:3] == ["0", "0", "4294967295"]


def _sandbox_uid() -> int | None:
    """The uid the child drops to, or None when the parent is not root (no drop possible)."""
    if os.geteuid() != 0:
        return None
    return _UID_BASE + secrets.randbelow(_UID_SPAN) if _full_uid_range() else _NOBODY


def _mac(key: bytes, body: bytes) -> bytes:
    return hashlib.blake2b(body, key=key, digest_size=_DIGEST_BYTES).hexdigest().encode()


def _run(code: str, tests: list[str], timeout_s: float) -> TestVerdict:
    n_total = len(tests)
    key = secrets.token_bytes(_KEY_BYTES)
    specs, expected = [], []
    for test in tests:
        split = _split_value_test(test)
        if split is None:
            specs.append(["x", test])
            expected.append(_EXEC_TEST)
        else:
            specs.append(["v", split[0]])
            expected.append(split[1])
    uid = _sandbox_uid()
    payload = {
        "code": code,
        "tests": specs,
        "uid": uid,
        "cpu_s": math.ceil(timeout_s) + 1,
        "as_bytes": _AS_LIMIT_BYTES,
        "fsize": _FSIZE_LIMIT_BYTES,
        "nproc": _NPROC_LIMIT,
        "tmpfs": _TMPFS_OPTIONS,
    }
    stdin_bytes = key + json.dumps(payload).encode()

    workdir = tempfile.mkdtemp(prefix="ebft_sandbox_")
    read_fd, write_fd = os.pipe()
    try:
        if uid is not None:
            os.chown(workdir, uid, uid)
        with tempfile.TemporaryFile() as errfile:
            deadline = time.monotonic() + timeout_s
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-B", "-c", _HARNESS, str(write_fd)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=errfile,
                    cwd=workdir,
                    env=dict(_CHILD_ENV),
                    pass_fds=(write_fd,),
                    start_new_session=True,
                )
            finally:
                os.close(write_fd)
            channel, timed_out, overflow = _supervise(proc, read_fd, stdin_bytes, deadline)
            errfile.seek(0, os.SEEK_END)
            errfile.seek(max(0, errfile.tell() - _DETAIL_CHARS))
            stderr_tail = errfile.read().decode("utf-8", "replace").strip()
    finally:
        os.close(read_fd)
        shutil.rmtree(workdir, ignore_errors=True)
    return _verdict(
        channel, key, expected, n_total, proc.returncode, timed_out, overflow, stderr_tail, timeout_s
    )


def _supervise(
    proc: subprocess.Popen, read_fd: int, stdin_bytes: bytes, deadline: float
) -> tuple[bytes, bool, bool]:
    """Feed stdin, collect the result channel until the child exits or the deadline, then kill the group."""
    try:
        proc.stdin.write(stdin_bytes)
    except OSError:
        pass  # the child died before reading; the verdict will say so
    finally:
        try:
            proc.stdin.close()
        except OSError:
            pass
    buffer = bytearray()
    timed_out = overflow = False
    exited = False
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        pidfd = None
    selector = selectors.DefaultSelector()
    try:
        selector.register(read_fd, selectors.EVENT_READ, "data")
        if pidfd is not None:
            selector.register(pidfd, selectors.EVENT_READ, "exit")
        while not exited:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            # Without a pidfd, poll the child every 10 ms.
            events = selector.select(remaining if pidfd is not None else min(remaining, 0.01))
            for key, _ in events:
                if key.data == "exit":
                    exited = True
                    continue
                chunk = os.read(read_fd, 1 << 16)
                if chunk:
                    buffer += chunk
                else:
                    selector.unregister(read_fd)  # all writers closed; keep waiting for the exit
            if pidfd is None and proc.poll() is not None:
                exited = True
            if len(buffer) > _MAX_CHANNEL_BYTES:
                overflow = True
                break
        if exited:
            # The child is gone, so whatever it wrote is already in the pipe: drain without blocking.
            os.set_blocking(read_fd, False)
            try:
                while len(buffer) <= _MAX_CHANNEL_BYTES:
                    chunk = os.read(read_fd, 1 << 16)
                    if not chunk:
                        break
                    buffer += chunk
            except BlockingIOError:
                pass
    finally:
        selector.close()
        if pidfd is not None:
            os.close(pidfd)
        # Kill the whole group before reaping: while the leader is an unreaped zombie its pid (the
        # group id) cannot be reused, so this signal cannot hit an unrelated process group.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
    return bytes(buffer), timed_out, overflow


def _verdict(
    channel: bytes,
    key: bytes,
    expected: list[object],
    n_total: int,
    returncode: int,
    timed_out: bool,
    overflow: bool,
    stderr_tail: str,
    timeout_s: float,
) -> TestVerdict:
    def verdict(status: str, n_passed: int, reason: str) -> TestVerdict:
        detail = reason if not stderr_tail else f"{reason}; stderr: {stderr_tail}"
        passed = status == STATUS_OK and n_total > 0
        return TestVerdict(passed, n_passed, n_total, status, detail[:_DETAIL_CHARS])

    if timed_out:
        return verdict(STATUS_TIMEOUT, 0, f"wall-clock timeout after {timeout_s:g}s")
    if overflow:
        return verdict(STATUS_ERROR, 0, "result channel flooded")
    if returncode == -signal.SIGXCPU:
        return verdict(STATUS_TIMEOUT, 0, "CPU time limit")

    code_ok = code_err = done = False
    results: dict[int, bool] = {}
    for line in channel.split(b"\n"):
        tag, _, body = line.partition(b" ")
        if not body or not hmac.compare_digest(tag, _mac(key, body)):
            continue  # unauthenticated: printed/forged by the program, or truncated
        fields = body.split(b" ", 2)
        if fields == [b"code", b"ok"]:
            code_ok = True
        elif fields == [b"code", b"err"]:
            code_err = True
        elif fields == [b"done"]:
            done = True
        elif fields[0].isdigit() and int(fields[0]) < n_total:
            index = int(fields[0])
            ok = _record_passes(fields[1:], expected[index])
            results[index] = ok and results.get(index, True)  # conflicting records count as a failure

    if not code_ok:
        reason = (
            "solution code raised"
            if code_err
            else f"no report from the harness: {_describe_exit(returncode)}"
        )
        return verdict(STATUS_ERROR, 0, reason)
    n_passed = sum(results.values())
    if not done:
        return verdict(STATUS_ERROR, n_passed, f"{_describe_exit(returncode)} after {len(results)} tests")
    return verdict(
        STATUS_OK if n_passed == n_total else STATUS_FAIL, n_passed, f"{n_passed}/{n_total} passed"
    )


def _record_passes(fields: list[bytes], expected: object) -> bool:
    if fields == [b"pass"]:
        return expected is _EXEC_TEST
    if len(fields) == 2 and fields[0] == b"val" and expected is not _EXEC_TEST:
        try:
            return bool(_decode(json.loads(fields[1])) == expected)
        except (ValueError, TypeError, RecursionError, MemoryError):
            return False
    return False


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"
