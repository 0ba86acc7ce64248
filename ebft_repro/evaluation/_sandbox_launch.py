"""Start the sandbox child and supervise it to a bounded end.

:func:`run_child` starts the harness the way the chosen backend (``_sandbox_backend.py``) says, feeds it
its input, collects its result channel (at most :data:`MAX_CHANNEL_BYTES`) until it exits or the
deadline passes, then kills its whole process group and reaps it, so a call returns within the deadline
plus :data:`REAP_GRACE_S` seconds whatever the program does.
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

MAX_CHANNEL_BYTES = 8 << 20  # results pipe cap; a program flooding it is stopped and scored "error"
REAP_GRACE_S = 2.0  # after SIGKILL: waiting for the exit and for the namespace to be gone
DETAIL_CHARS = 600


@dataclass(frozen=True)
class ChildResult:
    """What the parent observed of one child run."""

    channel: bytes
    timed_out: bool
    overflow: bool
    returncode: int | None
    stderr_tail: str


def run_child(
    backend_: Backend, harness: str, stdin_bytes: bytes, uid: int | None, deadline: float
) -> ChildResult:
    """Start the harness, feed it ``stdin_bytes``, collect its result channel, and reap it.

    Returns within ``deadline`` plus at most :data:`REAP_GRACE_S` seconds.
    """
    read_fd, write_fd = os.pipe()
    workdir = tempfile.mkdtemp(prefix="ebft_sandbox_") if backend_.name == "fallback" else "/"
    try:
        if uid is not None and backend_.name == "fallback":
            os.chown(workdir, uid, uid)
        command = [*backend_.bwrap_args, backend_.python, "-I", "-S", "-B", "-c", harness, str(write_fd)]
        with tempfile.TemporaryFile() as errfile:
            try:
                proc = subprocess.Popen(
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=errfile,
                    cwd=workdir,
                    env=dict(CHILD_ENV),
                    pass_fds=(write_fd,),
                    start_new_session=True,
                )
            finally:
                os.close(write_fd)
            channel, timed_out, overflow = _supervise(proc, read_fd, stdin_bytes, deadline)
            errfile.seek(0, os.SEEK_END)
            errfile.seek(max(0, errfile.tell() - DETAIL_CHARS))
            stderr_tail = errfile.read().decode("utf-8", "replace").strip()
    finally:
        os.close(read_fd)
        if workdir != "/":
            shutil.rmtree(workdir, ignore_errors=True)
    return ChildResult(channel, timed_out, overflow, proc.returncode, stderr_tail)


def _supervise(
    proc: subprocess.Popen, read_fd: int, stdin_bytes: bytes, deadline: float
) -> tuple[bytes, bool, bool]:
    """Feed stdin and collect the channel until the child exits or the deadline; then kill and reap."""
    buffer = bytearray()
    pending = memoryview(stdin_bytes)
    timed_out = overflow = exited = False
    stdin_fd = proc.stdin.fileno()
    os.set_blocking(stdin_fd, False)
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        pidfd = None
    selector = selectors.DefaultSelector()
    try:
        selector.register(read_fd, selectors.EVENT_READ, "data")
        selector.register(stdin_fd, selectors.EVENT_WRITE, "stdin")
        if pidfd is not None:
            selector.register(pidfd, selectors.EVENT_READ, "exit")
        while not exited and not overflow:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            # Without a pidfd, poll the child every 10 ms.
            for key, _ in selector.select(remaining if pidfd is not None else min(remaining, 0.01)):
                if key.data == "exit":
                    exited = True
                elif key.data == "stdin":
                    pending = _feed(selector, proc, pending)
                elif not _read_into(buffer, read_fd):
                    selector.unregister(read_fd)  # all writers closed; keep waiting for the exit
            exited = exited or (pidfd is None and proc.poll() is not None)
            overflow = len(buffer) > MAX_CHANNEL_BYTES
    finally:
        selector.close()
        if pidfd is not None:
            os.close(pidfd)
        _close_stdin(proc)
        _kill_and_reap(proc)
    # Wait (bounded) until every holder of the pipe is gone: the sandbox's processes die with bwrap's
    # pid 1, asynchronously. Only a child that exited by itself gets its remaining output counted.
    sink = buffer if exited and not overflow else bytearray()
    _drain(sink, read_fd, time.monotonic() + REAP_GRACE_S / 2)
    return bytes(buffer), timed_out, overflow


def _feed(selector: selectors.BaseSelector, proc: subprocess.Popen, pending: memoryview) -> memoryview:
    try:
        written = os.write(proc.stdin.fileno(), pending[: 1 << 16])
    except BlockingIOError:
        return pending
    except OSError:
        written = len(pending)  # the child died before reading; the verdict will say so
    pending = pending[written:]
    if not pending:
        selector.unregister(proc.stdin.fileno())
        _close_stdin(proc)
    return pending


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
        if len(buffer) <= MAX_CHANNEL_BYTES:
            buffer += chunk
