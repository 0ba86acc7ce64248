"""The child-side harness of :mod:`ebft_repro.sandbox`. NOT imported by the parent.

The parent reads this file as text and runs it with ``python -I -S -B -c <source>`` (never as a module of
the package, so nothing here runs in the parent). It reads its input from stdin. Everything it uses after
user code starts is captured in locals first, because the user code shares the interpreter and may patch
builtins or stdlib modules.
"""


def _main():
    import json
    import os
    import resource
    import sys
    from _blake2 import blake2b
    from _json import encode_basestring_ascii

    globals().pop("_main", None)
    result_fd = int(sys.argv[1])

    # The MAC key goes into a bytearray that is zeroed once the C-level hash object is keyed, so no
    # Python str/bytes copy of it stays reachable for frame walking or gc scanning.
    key = bytearray(32)
    view = memoryview(key)
    got = 0
    while got < 32:
        n = os.readv(0, [view[got:]])
        if n == 0:
            os._exit(70)
        got += n
    mac = blake2b(key=key, digest_size=16)
    key[:] = bytes(32)
    view.release()
    del view, key
    chunks = []
    while True:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    payload = json.loads(b"".join(chunks))
    del chunks
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.close(null_fd)

    uid = payload["uid"]
    libc = None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
    except Exception:
        libc = None

    if uid is not None and not _isolate(libc, uid, payload["tmpfs"]):
        _preimport()
    if libc is not None:
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: exec of setuid binaries cannot regain root
    libc = None

    for res, value in (
        (resource.RLIMIT_CPU, payload["cpu_s"]),
        (resource.RLIMIT_AS, payload["as_bytes"]),
        (resource.RLIMIT_FSIZE, payload["fsize"]),
        (resource.RLIMIT_NPROC, payload["nproc"]),
        (resource.RLIMIT_CORE, 0),
    ):
        hard = resource.getrlimit(res)[1]
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(res, (value, value))

    if uid is not None:
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

    def _blocked(*args, **kwargs):
        raise PermissionError("process creation and signalling are disabled in the sandbox")

    for name in (
        "fork",
        "forkpty",
        "system",
        "popen",
        "kill",
        "killpg",
        "posix_spawn",
        "posix_spawnp",
        "execl",
        "execle",
        "execlp",
        "execlpe",
        "execv",
        "execve",
        "execvp",
        "execvpe",
        "spawnl",
        "spawnle",
        "spawnlp",
        "spawnlpe",
        "spawnv",
        "spawnve",
        "spawnvp",
        "spawnvpe",
    ):
        if hasattr(os, name):
            setattr(os, name, _blocked)
    for name in ("subprocess", "multiprocessing", "_posixsubprocess", "pty", "ctypes", "_ctypes"):
        sys.modules[name] = None

    compiled = []
    for index, (kind, source) in enumerate(payload["tests"]):
        try:
            compiled.append((kind, compile(source, f"<test {index}>", "eval" if kind == "v" else "exec")))
        except BaseException:
            compiled.append(("bad", None))
    code_source = payload["code"]
    del payload

    # Captured before any user code runs: the harness never looks a builtin or module attribute up again.
    _exec, _eval, _compile, _type, _len, _enumerate = exec, eval, compile, type, len, enumerate
    _BaseException = BaseException
    _write, _exit, _getframe = os.write, os._exit, sys._getframe
    _int, _float, _str, _bool, _bytes, _complex = int, float, str, bool, bytes, complex
    _list, _tuple, _set, _frozenset, _dict, _bytearray = list, tuple, set, frozenset, dict, bytearray
    _int_repr, _float_repr, _join, _items = int.__repr__, float.__repr__, str.join, dict.items
    _bytes_hex, _bytearray_hex = bytes.hex, bytearray.hex
    _enc_str = encode_basestring_ascii
    _mac_copy = mac.copy
    _builtins = sys.modules["builtins"]
    allowed_caller = []

    def emit(body):
        # Only the test loop below may report: a reporter fished out of a frame by user code is refused.
        if _getframe(1).f_code is not allowed_caller[0]:
            raise PermissionError("reporter called from outside the harness")
        digest = _mac_copy()
        digest.update(body)
        line = digest.hexdigest().encode() + b" " + body + b"\n"
        while line:
            line = line[_write(result_fd, line) :]

    def note(label, exc):
        try:
            _write(2, (label + ": " + _type(exc).__name__ + "\n").encode())
        except _BaseException:
            pass

    def encode(value, depth):
        # JSON with type tags, built from C-level primitives only; anything but exact builtin data raises.
        if depth > 200:
            raise ValueError("value nested too deeply")
        kind = _type(value)
        if value is None:
            return "null"
        if kind is _bool:
            return "true" if value else "false"
        if kind is _int:
            return _int_repr(value)
        if kind is _str:
            return _enc_str(value)
        if kind is _float:
            return '{"f":' + _enc_str(_float_repr(value)) + "}"
        if kind is _complex:
            real, imag = _enc_str(_float_repr(value.real)), _enc_str(_float_repr(value.imag))
            return '{"c":[' + real + "," + imag + "]}"
        if kind is _bytes:
            return '{"b":' + _enc_str(_bytes_hex(value)) + "}"
        if kind is _bytearray:
            return '{"ba":' + _enc_str(_bytearray_hex(value)) + "}"
        # Identity checks only: a dict lookup by type would call a metaclass's __hash__/__eq__.
        tag = None
        if kind is _list:
            tag = "l"
        elif kind is _tuple:
            tag = "t"
        elif kind is _set:
            tag = "s"
        elif kind is _frozenset:
            tag = "fs"
        if tag is not None:
            return '{"' + tag + '":[' + _join(",", [encode(item, depth + 1) for item in value]) + "]}"
        if kind is _dict:
            pairs = ["[" + encode(k, depth + 1) + "," + encode(v, depth + 1) + "]" for k, v in _items(value)]
            return '{"d":[' + _join(",", pairs) + "]}"
        raise TypeError("not plain data")

    def run():
        scope = {"__name__": "__sandbox__", "__builtins__": _builtins}
        try:
            _exec(_compile(code_source, "<solution>", "exec"), scope)
        except _BaseException as exc:
            note("solution", exc)
            emit(b"code err")
            return
        emit(b"code ok")
        for index, (kind, test) in _enumerate(compiled):
            try:
                if kind == "v":
                    text = encode(_eval(test, scope), 0)
                    if _len(text) > 1048576:
                        raise ValueError("value too large")
                    body = (f"{index} val " + text).encode()
                elif kind == "x":
                    _exec(test, scope)
                    body = f"{index} pass".encode()
                else:
                    body = f"{index} fail".encode()
            except _BaseException as exc:
                note(f"test {index}", exc)
                body = f"{index} fail".encode()
            emit(body)
        emit(b"done")

    allowed_caller.append(run.__code__)
    try:
        run()
    finally:
        # Skip atexit handlers, thread joins and finalizers the user code may have registered.
        _exit(0)


def _isolate(libc, uid, tmpfs_options):
    """Private mount/net/IPC namespaces and tmpfs on the world-writable dirs (best effort).

    Returns whether the stdlib will still be importable after the privilege drop.
    """
    import os
    import sys

    stdlib = os.path.realpath(os.path.dirname(os.__file__))
    stdlib_readable = _others_can_read(stdlib)
    if libc is None:
        return stdlib_readable
    clone_newns, clone_newnet, clone_newipc = 0x00020000, 0x40000000, 0x08000000
    ms_rdonly, ms_nosuid, ms_nodev, ms_noexec = 1, 2, 4, 8
    ms_remount, ms_bind, ms_rec, ms_private = 32, 4096, 16384, 1 << 18
    if libc.unshare(clone_newns | clone_newnet | clone_newipc) != 0 and libc.unshare(clone_newns) != 0:
        return stdlib_readable
    if libc.mount(None, b"/", None, ms_rec | ms_private, None) != 0:
        return stdlib_readable
    private_tmp = False
    for directory in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock"):
        if os.path.isdir(directory) and not os.path.islink(directory):
            flags = ms_nosuid | ms_nodev | ms_noexec
            mounted = libc.mount(b"tmpfs", directory.encode(), b"tmpfs", flags, tmpfs_options.encode()) == 0
            private_tmp = private_tmp or (directory == "/tmp" and mounted)
    if not private_tmp:
        return stdlib_readable
    os.mkdir("/tmp/work", 0o700)
    os.chown("/tmp/work", uid, uid)
    os.chdir("/tmp/work")
    if stdlib_readable:
        return True
    # e.g. pyenv under /root (mode 0700): expose the stdlib read-only inside the private tmpfs.
    target = "/tmp/.stdlib"
    os.mkdir(target, 0o755)
    if libc.mount(stdlib.encode(), target.encode(), None, ms_bind | ms_rec, None) != 0:
        return False
    libc.mount(None, target.encode(), None, ms_bind | ms_remount | ms_rdonly | ms_nosuid | ms_nodev, None)

    def moved(path):
        if path == stdlib or path.startswith(stdlib + os.sep):
            return target + path[len(stdlib) :]
        return path

    sys.path[:] = [moved(p) for p in sys.path]
    for module in list(sys.modules.values()):
        package_path = getattr(module, "__path__", None)
        if type(package_path) is list:
            package_path[:] = [moved(p) for p in package_path]
    sys.path_importer_cache.clear()
    return True


def _others_can_read(path):
    import os

    st = os.stat(path)
    if st.st_mode & 0o005 != 0o005:
        return False
    while True:
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent
        if not os.stat(path).st_mode & 0o001:
            return False


def _preimport():
    # Last resort when the stdlib is unreachable after the drop: load what benchmark code commonly uses.
    import importlib

    for name in (
        "math",
        "cmath",
        "re",
        "collections",
        "itertools",
        "functools",
        "heapq",
        "bisect",
        "string",
        "operator",
        "typing",
        "random",
        "statistics",
        "fractions",
        "decimal",
        "copy",
        "datetime",
        "_strptime",
        "array",
        "struct",
        "hashlib",
        "textwrap",
        "unicodedata",
        "calendar",
        "dataclasses",
        "enum",
        "numbers",
        "queue",
        "signal",
        "contextlib",
        "types",
        "abc",
    ):
        try:
            importlib.import_module(name)
        except Exception:
            pass


_main()
