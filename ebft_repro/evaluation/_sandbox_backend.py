"""Choose how the sandbox's processes are isolated: bubblewrap when it works here, else the fallback.

With bubblewrap (``bwrap``, Debian package ``bubblewrap``) each process gets fresh pid, network, IPC, UTS,
mount (and cgroup) namespaces, a root made of read-only binds of ``/usr`` and the Python installation
only, private size-capped tmpfs on ``/tmp`` and ``/dev/shm``, a ``/proc`` that shows only itself, an
environment of ``PATH``/``LANG``, a new session, ``no_new_privs`` and ``--die-with-parent``. An ordinary
user also gets a user namespace; a root caller keeps only CAP_SETUID/CAP_SETGID, and the process switches
to a fresh unprivileged uid before doing anything else (``_sandbox_confine.py``). Without a usable bwrap,
:func:`backend` warns once, naming what is lost (docs/sandbox.md, "Fallback").
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass

log = logging.getLogger(__name__)

TMPFS_BYTES = 32 << 20
SHM_BYTES = 8 << 20
CHILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
INSTALL_HINT = "install bubblewrap (`apt-get install bubblewrap`, or your distribution's package)"
# Dedicated uids are drawn from a range no distribution allocates, so a run's uid owns no other process.
_UID_BASE = 2_000_000_000
_UID_SPAN = 1 << 27
_NOBODY = 65534
_LIB_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


@dataclass(frozen=True)
class Backend:
    """How children are isolated in this process: ``name`` is ``"bwrap"`` or ``"fallback"``."""

    name: str
    bwrap_args: tuple[str, ...] = ()
    python: str = sys.executable
    reason: str = ""


@functools.lru_cache(maxsize=1)
def backend() -> Backend:
    """The isolation backend, probed once per process; warns once when falling back.

    ``EBFT_SANDBOX_BACKEND`` may be ``auto`` (default), ``bwrap`` (raise instead of falling back) or
    ``fallback`` (skip bwrap, e.g. to test the fallback).

    Raises:
        RuntimeError: when ``EBFT_SANDBOX_BACKEND=bwrap`` and bwrap does not work here.
    """
    wanted = os.environ.get("EBFT_SANDBOX_BACKEND", "auto")
    if wanted == "fallback":
        return Backend("fallback", reason="EBFT_SANDBOX_BACKEND=fallback")
    candidate, problem = _bwrap_backend()
    if problem is None:
        return candidate
    if wanted == "bwrap":
        raise RuntimeError(f"sandbox: bubblewrap unusable ({problem}); {INSTALL_HINT}")
    lost = (
        "programs run as a fresh uid with resource limits, but share the network, mounts and pid namespace"
        if os.geteuid() == 0
        else "programs run as your uid with resource limits only: they can read this process's environment "
        "and memory, signal your processes, write wherever you can and reach the network"
    )
    message = f"sandbox: bubblewrap unusable ({problem}); falling back: {lost}. To fix: {INSTALL_HINT}."
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    log.warning(message)
    return Backend("fallback", reason=problem)


def sandbox_uid() -> int | None:
    """A fresh uid for one sandboxed process to switch to, or None when the caller is not root."""
    if os.geteuid() != 0:
        return None
    return _UID_BASE + secrets.randbelow(_UID_SPAN) if _full_uid_range() else _NOBODY


@functools.lru_cache(maxsize=1)
def _full_uid_range() -> bool:
    """True when this process sees the whole uid space (not in a restricted user namespace)."""
    try:
        with open("/proc/self/uid_map") as fh:
            fields = fh.read().split()
    except OSError:
        return False
    return fields[:3] == ["0", "0", "4294967295"]


def _bwrap_backend() -> tuple[Backend | None, str | None]:
    """A bwrap backend and None, or None and why bwrap cannot be used (after a real test run)."""
    bwrap = shutil.which("bwrap") or next(
        (p for p in ("/usr/bin/bwrap", "/bin/bwrap") if os.path.exists(p)), None
    )
    if bwrap is None:
        return None, "bwrap not found"
    python = os.path.realpath(sys.executable)
    problem = ""
    for disable_userns in (True, False):  # --disable-userns needs bwrap >= 0.8
        args = (bwrap, *_bwrap_options(python, disable_userns))
        problem = _probe(args, python)
        if problem is None:
            return Backend("bwrap", args, python), None
    return None, problem


def _probe(args: tuple[str, ...], python: str) -> str | None:
    """Run a trivial program the way children run; None when it worked, else what went wrong."""
    probe = "import os, sys; os.write(int(sys.argv[1]), b'ok')"
    read_fd, write_fd = os.pipe()
    try:
        done = subprocess.run(
            [*args, python, "-I", "-S", "-B", "-c", probe, str(write_fd)],
            pass_fds=(write_fd,),
            env=dict(CHILD_ENV),
            cwd="/",
            capture_output=True,
            timeout=30,
        )
        os.close(write_fd)
        write_fd = -1
        answer = os.read(read_fd, 16)
    except (OSError, subprocess.SubprocessError) as err:
        return f"bwrap failed to start: {err}"
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
    if done.returncode != 0 or answer != b"ok":
        stderr = done.stderr.decode("utf-8", "replace").strip()[-300:]
        return f"bwrap cannot create the sandbox here (exit {done.returncode}: {stderr})"
    return None


def _bwrap_options(python: str, disable_userns: bool = True) -> list[str]:
    """bwrap arguments (without the command) for this user and this Python installation."""
    options = ["--die-with-parent", "--new-session", "--clearenv"]
    for name, value in CHILD_ENV.items():
        options += ["--setenv", name, value]
    if os.geteuid() == 0:
        options += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        options += ["--unshare-user", "--disable-userns"] if disable_userns else ["--unshare-user"]
    options += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    bound = ["/usr"] if os.path.isdir("/usr") else []
    options += ["--ro-bind", "/usr", "/usr"] if bound else []
    for path in _LIB_LINKS:
        if os.path.islink(path):
            options += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            options += ["--ro-bind", path, path]
            bound.append(path)
    made: set[str] = set()
    for prefix in _python_dirs(python):
        if any(prefix == b or prefix.startswith(b.rstrip("/") + "/") for b in bound):
            continue
        for parent in _parents(prefix):  # bwrap would create them 0700: unreadable after the uid drop
            if parent not in made:
                options += ["--perms", "0755", "--dir", parent]
                made.add(parent)
        options += ["--ro-bind", prefix, prefix]
        bound.append(prefix)
    options += ["--proc", "/proc", "--dev", "/dev"]
    options += ["--perms", "1777", "--size", str(TMPFS_BYTES), "--tmpfs", "/tmp"]
    options += ["--perms", "1777", "--size", str(SHM_BYTES), "--tmpfs", "/dev/shm"]
    # The sandbox's own / and /dev are tmpfs without a size limit: read-only once set up.
    options += ["--remount-ro", "/dev", "--remount-ro", "/"]
    return options + ["--chdir", "/tmp"]


def _python_dirs(python: str) -> list[str]:
    """The installation directories the interpreter needs: its prefixes and the binary's own tree."""
    dirs = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix)}
    dirs.add(os.path.dirname(os.path.dirname(python)))
    return sorted(d for d in dirs if d not in ("/", ""))


def _parents(path: str) -> list[str]:
    parents = []
    parent = os.path.dirname(path)
    while parent not in ("/", ""):
        parents.append(parent)
        parent = os.path.dirname(parent)
    return parents[::-1]
