"""Child side of the isolation: what each sandbox process does to itself before the work starts.

Runs inside both children (driver and candidate), as part of their code; never imported by the parent.
Under bubblewrap (``_sandbox_backend.py``) the namespaces and mounts already exist, and this only sets the
resource limits and, for a root caller, switches to the process's own fresh uid (fail closed). Without
bubblewrap (the fallback) it also sets ``no_new_privs``, death with the caller, and a non-dumpable process
(another process of the same uid can then neither trace it nor read its memory).
"""


def confine(settings):
    """Apply ``settings`` (limits, uid, fallback options: see ``sandbox._settings``) to this process."""
    import os
    import resource

    uid = settings["uid"]
    libc = _libc() if settings["fallback"] else None
    if settings["fallback"] and uid is not None and not _others_can_read(os.path.dirname(os.__file__)):
        _preimport()  # e.g. pyenv under /root (mode 0700): the new uid could not import the stdlib
    if libc is not None:
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS (bwrap sets it itself)
    for limit, value in settings["limits"].items():
        limit = getattr(resource, limit)
        hard = resource.getrlimit(limit)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(limit, (value, value))
    if uid is not None:
        _drop_privileges(os, uid)
    if libc is not None:
        # Without bwrap nothing ties this process to the caller: die with it (set after the uid change,
        # which clears the setting) and give up if the caller is already gone.
        libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG = SIGKILL
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0
        if os.getppid() != settings["ppid"]:
            os._exit(73)


def _drop_privileges(os, uid):
    """root -> ``uid`` for good (any doubt ends the process before it does anything else)."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid or os.getgid() != uid:
        os._exit(71)
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        os._exit(72)


def _libc():
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True)
    except Exception:
        return None


def _others_can_read(path):
    import os

    path = os.path.realpath(path)
    if os.stat(path).st_mode & 0o005 != 0o005:
        return False
    while path != os.path.dirname(path):
        path = os.path.dirname(path)
        if not os.stat(path).st_mode & 0o001:
            return False
    return True


def _preimport():
    # Last resort when the stdlib is unreachable after the uid change: load what programs commonly use.
    import importlib

    names = "math cmath re collections itertools functools heapq bisect string operator typing random"
    names += " statistics fractions decimal copy datetime _strptime array struct hashlib textwrap"
    names += " unicodedata calendar dataclasses enum numbers queue signal contextlib types abc"
    names += " ast asyncio threading io"
    for name in names.split():
        try:
            importlib.import_module(name)
        except Exception:
            pass
