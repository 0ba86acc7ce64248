"""Start the sandbox's two processes, connect them, and supervise them to a bounded end.

:func:`run_pair` starts the driver and the candidate the way the chosen backend (``_sandbox_backend.py``)
says, each in its own sandbox, with two pipes between them (requests to the candidate, replies to the
driver) and a third from the driver to the caller for its report. It feeds each its input, reads the
report (at most :data:`MAX_REPORT_BYTES`) until the driver exits or the deadline passes, then kills both
process groups and reaps them, so a call returns within the deadline plus :data:`REAP_GRACE_S` seconds
whatever either process does.
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass

from ebft_repro.evaluation._sandbox_backend import CHILD_ENV, Backend

log = logging.getLogger(__name__)

MAX_REPORT_BYTES = 1 << 20
REAP_GRACE_S = 2.0  # after SIGKILL: waiting for the exit and for the namespace to be gone
DETAIL_CHARS = 600


@dataclass(frozen=True)
class PairResult:
    """What the caller observed of one run: the driver's report, and how each process ended."""

    report: bytes
    timed_out: bool
    driver_exit: int | None
    candidate_exit: int | None
    stderr_tail: str  # the driver's


def run_pair(
    backend_: Backend, boot: str, inputs: tuple[bytes, bytes], uids: tuple, deadline: float
) -> PairResult:
    """Run ``python -c boot`` as the driver and as the candidate (``inputs`` on their stdin).

    The driver gets the fds ``requests replies report`` as arguments, the candidate ``requests replies``.
    Returns within ``deadline`` plus at most :data:`REAP_GRACE_S` seconds.
    """
    requests_r, requests_w = os.pipe()
    replies_r, replies_w = os.pipe()
    report_r, report_w = os.pipe()
    # Every process of the candidate's sandbox holds ``alive_w`` (inherited, never named to it): its end
    # of file says they are all gone, as the report pipe's does for the driver's.
    alive_r, alive_w = os.pipe()
    fds = {"driver": (requests_w, replies_r, report_w), "candidate": (requests_r, replies_w)}
    unclosed = {requests_r, requests_w, replies_r, replies_w, report_w, alive_w}
    workdirs, procs = [], []
    try:
        with tempfile.TemporaryFile() as errfile:
            for role, uid in zip(("driver", "candidate"), uids):
                workdirs.append(_workdir(backend_, uid))
                stderr = errfile if role == "driver" else subprocess.DEVNULL
                extra = (alive_w,) if role == "candidate" else ()
                procs.append(_start(backend_, boot, fds[role], stderr, workdirs[-1], extra))
            while unclosed:  # the children hold their ends now
                os.close(unclosed.pop())
            report, timed_out = _supervise(procs, report_r, inputs, deadline)
            _drain(bytearray(), alive_r, time.monotonic() + REAP_GRACE_S / 2)
            errfile.seek(0, os.SEEK_END)
            errfile.seek(max(0, errfile.tell() - DETAIL_CHARS))
            stderr_tail = errfile.read().decode("utf-8", "replace").strip()
    finally:
        for proc in procs:
            if proc.returncode is None:  # never signal a reaped pid: it may belong to someone else now
                _kill_and_reap(proc)
        for fd in unclosed | {report_r, alive_r}:
            os.close(fd)
        for workdir in workdirs:
            if workdir != "/":
                shutil.rmtree(workdir, ignore_errors=True)
    return PairResult(report, timed_out, procs[0].returncode, procs[1].returncode, stderr_tail)


def _start(
    backend_: Backend, boot: str, fds: tuple[int, ...], stderr, workdir: str, extra: tuple[int, ...]
) -> subprocess.Popen:
    command = [*backend_.bwrap_args, backend_.python, "-I", "-S", "-B", "-c", boot, *map(str, fds)]
    return subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        cwd=workdir,
        env=dict(CHILD_ENV),
        pass_fds=fds + extra,
        start_new_session=True,
    )


def _workdir(backend_: Backend, uid: int | None) -> str:
    if backend_.name != "fallback":
        return "/"
    workdir = tempfile.mkdtemp(prefix="ebft_sandbox_")
    if uid is not None:
        os.chown(workdir, uid, uid)
    return workdir


def _supervise(
    procs: list[subprocess.Popen], report_fd: int, inputs: tuple[bytes, bytes], deadline: float
) -> tuple[bytes, bool]:
    """Feed both stdins and read the report until the driver exits or the deadline; then kill both."""
    buffer = bytearray()
    timed_out = exited = False
    driver = procs[0]
    try:
        pidfd = os.pidfd_open(driver.pid)
    except (AttributeError, OSError):
        pidfd = None
    selector = selectors.DefaultSelector()
    try:
        selector.register(report_fd, selectors.EVENT_READ, "report")
        for proc, data in zip(procs, inputs):
            os.set_blocking(proc.stdin.fileno(), False)
            selector.register(proc.stdin.fileno(), selectors.EVENT_WRITE, [proc, memoryview(data)])
        if pidfd is not None:
            selector.register(pidfd, selectors.EVENT_READ, "exit")
        while not exited and len(buffer) <= MAX_REPORT_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            # Without a pidfd, poll the driver every 10 ms.
            for key, _ in selector.select(remaining if pidfd is not None else min(remaining, 0.01)):
                if key.data == "exit":
                    exited = True
                elif key.data == "report":
                    if not _read_into(buffer, report_fd):
                        selector.unregister(report_fd)  # the driver closed it; wait for its exit
                else:
                    _feed(selector, *key.data)
            exited = exited or (pidfd is None and driver.poll() is not None)
    finally:
        selector.close()
        if pidfd is not None:
            os.close(pidfd)
        for proc in procs:
            _close_stdin(proc)
            _kill_and_reap(proc)  # the driver first: the candidate may still be answering it
    # Only a driver that exited by itself gets its remaining output counted.
    _drain(buffer if exited else bytearray(), report_fd, time.monotonic() + REAP_GRACE_S / 2)
    return bytes(buffer[: MAX_REPORT_BYTES + 1]), timed_out


def _feed(selector: selectors.BaseSelector, proc: subprocess.Popen, pending: memoryview) -> None:
    fd = proc.stdin.fileno()
    try:
        written = os.write(fd, pending[: 1 << 16])
    except BlockingIOError:
        return
    except OSError:
        written = len(pending)  # the child died before reading; the verdict will say so
    pending = pending[written:]
    if pending:
        selector.modify(fd, selectors.EVENT_WRITE, [proc, pending])
    else:
        selector.unregister(fd)
        _close_stdin(proc)


def _close_stdin(proc: subprocess.Popen) -> None:
    try:
        proc.stdin.close()
    except OSError:
        pass


def _read_into(buffer: bytearray, fd: int) -> bool:
    chunk = os.read(fd, 1 << 16)
    buffer += chunk
    return bool(chunk)


def _kill_and_reap(proc: subprocess.Popen) -> None:
    # Kill the whole group before reaping: while the leader is an unreaped zombie its pid (the group id)
    # cannot be reused, so this signal cannot hit an unrelated process group. Under bwrap, the sandbox's
    # pid-1 dies with bwrap (--die-with-parent), which kills every process of the pid namespace.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=REAP_GRACE_S)
    except subprocess.TimeoutExpired:
        log.warning("sandbox child %d not reaped %.0fs after SIGKILL", proc.pid, REAP_GRACE_S)


def _drain(buffer: bytearray, read_fd: int, until: float) -> None:
    """Read what is left in the pipe until every writer is gone or ``until``; keeps at most the cap."""
    os.set_blocking(read_fd, False)
    while time.monotonic() < until:
        try:
            chunk = os.read(read_fd, 1 << 16)
        except BlockingIOError:
            time.sleep(0.005)
            continue
        if not chunk:
            return
        if len(buffer) <= MAX_REPORT_BYTES:
            buffer += chunk
