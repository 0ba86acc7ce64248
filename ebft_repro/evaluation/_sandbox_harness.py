"""The child-side harness of :mod:`ebft_repro.evaluation.sandbox`. NOT imported by the parent.

The parent reads this file as text and runs it with ``python -I -S -B -c <source> <result fd>`` (never as a
module of the package, so nothing here runs in the parent). It reads a MAC key and a ``marshal``-encoded
payload from stdin: the solution code and, per test, the steps the parent's planner left to the child
(``["x", source]``: run a statement; ``["h", [expr, ...]]``: evaluate placeholders and send their values).
Everything it uses after user code starts is captured in locals first, because the user code shares the
interpreter and may patch builtins or stdlib modules.

Records (one line each, MAC'd): ``code ok``/``code err``; ``h <test> <step> <json>`` (the placeholder
results of one assert); ``x <test> <step>`` (a statement raised; the rest of that test is skipped);
``t <test>`` (every step of the test ran); ``done``.

Values are encoded as JSON with type tags, chosen by *type identity* against classes captured before user
code runs (never ``isinstance``), so subclasses and user classes are reported as unsupported instead of
being trusted. The parent rebuilds the real standard-library objects (``_sandbox_values.py``).
"""


def _main():
    import marshal
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
    payload = marshal.loads(b"".join(chunks))
    del chunks
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.close(null_fd)

    uid = payload["uid"]
    libc = _libc() if payload["fallback"] else None
    if payload["fallback"] and uid is not None and not _isolate(libc, uid, payload["tmpfs"]):
        _preimport()
    if libc is not None:
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS (bwrap sets it itself)
    _set_limits(resource, payload)
    if uid is not None:
        _drop_privileges(os, uid)
    if libc is not None:
        # Without bwrap nothing else ties this process to the caller: die with it (set after the uid
        # change, which clears the setting), and give up if the caller is already gone.
        libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG = SIGKILL
        if os.getppid() != payload["ppid"]:
            os._exit(73)
    libc = None
    _block_process_creation(os, sys)

    compiled = _compile_plans(payload["tests"])
    code_source = payload["code"]
    del payload
    run = _make_runner(os, sys, mac, result_fd, encode_basestring_ascii, code_source, compiled)
    try:
        run()
    finally:
        # Skip atexit handlers, thread joins and finalizers the user code may have registered.
        os._exit(0)


def _make_runner(os, sys, mac, result_fd, enc_str, code_source, compiled):
    """Build the test loop; every builtin it and the encoder use is captured here, before user code."""
    _exec, _eval, _compile, _type, _len, _enumerate = exec, eval, compile, type, len, enumerate
    _BaseException = BaseException
    _write, _getframe = os.write, sys._getframe
    _str_encode, _join = str.encode, str.join
    _mac_copy = mac.copy
    _builtins = sys.modules["builtins"]
    _type_name = type.__dict__["__name__"].__get__
    _SyntaxError = SyntaxError
    encode, Unsupported = _make_encoder(sys, enc_str)
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
            _write(2, _str_encode(label + ": " + _type_name(_type(exc)) + "\n"))
        except _BaseException:
            pass

    def holes(codes, scope):
        parts = []
        for code in codes:
            try:
                if code is None:
                    raise _SyntaxError("placeholder does not compile")
                value = _eval(code, scope)
            except _BaseException as exc:
                parts.append('["e",' + enc_str(_type_name(_type(exc))) + "]")
                continue
            try:
                text = encode(value, 0)
                if _len(text) > 1048576:
                    raise Unsupported("value larger than 1 MiB")
                parts.append('["v",' + text + "]")
            except Unsupported as exc:
                parts.append('["u",' + enc_str(exc.args[0]) + "]")
            except _BaseException as exc:
                parts.append('["u",' + enc_str("encoding raised " + _type_name(_type(exc))) + "]")
        return "[" + _join(",", parts) + "]"

    def run():
        scope = {"__name__": "__sandbox__", "__builtins__": _builtins}
        try:
            _exec(_compile(code_source, "<solution>", "exec"), scope)
        except _BaseException as exc:
            note("solution", exc)
            emit(b"code err")
            return
        emit(b"code ok")
        for index, steps in _enumerate(compiled):
            finished = True
            for position, (kind, item) in _enumerate(steps):
                if kind == "h":
                    emit(_str_encode(f"h {index} {position} " + holes(item, scope)))
                    continue
                try:
                    if item is None:
                        raise _SyntaxError("statement does not compile")
                    _exec(item, scope)
                except _BaseException as exc:
                    note(f"test {index}", exc)
                    emit(_str_encode(f"x {index} {position}"))
                    finished = False
                    break
            if finished:
                emit(_str_encode(f"t {index}"))
        emit(b"done")

    allowed_caller.append(run.__code__)
    return run


def _make_encoder(sys, enc_str):
    """The value encoder: tagged JSON built from C-level primitives and captured classes only."""
    from _collections import OrderedDict, defaultdict, deque

    _type, _len, _join = type, len, str.join
    _int, _float, _str, _bool, _bytes, _complex = int, float, str, bool, bytes, complex
    _list, _tuple, _set, _frozenset, _dict, _bytearray = list, tuple, set, frozenset, dict, bytearray
    _range = range
    _str_getitem, _short = str.__getitem__, slice(0, 80)
    _type_name = type.__dict__["__name__"].__get__
    _int_format, _float_repr = int.__format__, float.__repr__
    _bytes_hex, _bytearray_hex = bytes.hex, bytearray.hex
    _dict_items, _od_items, _dict_get = dict.items, OrderedDict.items, dict.get
    _proxy_get = _type(type.__dict__).get  # mappingproxy.get: reads the class's own dict
    _tuple_getitem, _everything = tuple.__getitem__, slice(None)
    _real, _imag = complex.real.__get__, complex.imag.__get__
    _maxlen = deque.maxlen.__get__
    _start, _stop, _step = range.start.__get__, range.stop.__get__, range.step.__get__
    _mro = type.__dict__["__mro__"].__get__
    _class_dict = type.__dict__["__dict__"].__get__
    _module_dict = _type(sys).__dict__["__dict__"].__get__
    _member = _type(type.__dict__["__basicsize__"])
    _member_get = _member.__get__
    _module_type, _type_type, _object = _type(sys), type, object
    _modules = sys.modules
    _builtin_classes = (
        ("int", int),
        ("float", float),
        ("complex", complex),
        ("bool", bool),
        ("str", str),
        ("bytes", bytes),
        ("bytearray", bytearray),
        ("list", list),
        ("tuple", tuple),
        ("dict", dict),
        ("set", set),
        ("frozenset", frozenset),
        ("NoneType", type(None)),
        ("range", range),
        ("OrderedDict", OrderedDict),
        ("defaultdict", defaultdict),
        ("deque", deque),
    )
    # A tuple subclass counts as a namedtuple (compared as a tuple, as Python does) only if no class in
    # its MRO overrides anything that takes part in comparison or iteration.
    _overrides = (
        "__eq__",
        "__ne__",
        "__lt__",
        "__le__",
        "__gt__",
        "__ge__",
        "__hash__",
        "__bool__",
        "__len__",
        "__iter__",
        "__getitem__",
        "__contains__",
        "__getattribute__",
        "__class__",
    )

    class Unsupported(Exception):
        """A value the parent could not compare faithfully; its argument says why."""

    def unsupported(kind):
        return Unsupported(_join("", ("type ", _str_getitem(_type_name(kind), _short))))

    def stdlib_class(module, name):
        # Looked up when needed (importing fractions/collections up front costs each child ~10 ms). No
        # instance of these classes exists unless the module was imported; a module replaced by user code
        # can only make its own objects be read through C-level accessors, i.e. reported as honest data.
        mod = _dict_get(_modules, module)
        if _type(mod) is not _module_type:
            return None
        return _dict_get(_module_dict(mod), name)  # only ever compared by identity with type(value)

    def is_namedtuple(kind):
        if _type(kind) is not _type_type:
            return False
        mro = _mro(kind)
        if _len(mro) < 3 or mro[-1] is not _object or mro[-2] is not _tuple:
            return False
        fields = False
        for cls in mro[:-2]:
            if _type(cls) is not _type_type:
                return False
            namespace = _class_dict(cls)
            for name in _overrides:
                if name in namespace:
                    return False
            fields = fields or "_fields" in namespace
        return fields

    def items(tag, values, depth):
        return '["' + tag + '"' + _join("", ["," + encode(item, depth + 1) for item in values]) + "]"

    def pairs(tag, view, depth):
        parts = ["," + encode(k, depth + 1) + "," + encode(v, depth + 1) for k, v in view]
        return '["' + tag + '"' + _join("", parts) + "]"

    def number(value):
        return '"' + _int_format(value, "x") + '"'

    def encode(value, depth):
        if depth > 100:
            raise Unsupported("value nested deeper than 100 levels")
        kind = _type(value)
        if value is None:
            return "null"
        if kind is _bool:
            return "true" if value else "false"
        if kind is _str:
            return enc_str(value)
        if kind is _int:
            return '["i",' + number(value) + "]"
        if kind is _float:
            return '["f","' + _float_repr(value) + '"]'
        if kind is _complex:
            return '["c","' + _float_repr(_real(value)) + '","' + _float_repr(_imag(value)) + '"]'
        if kind is _bytes:
            return '["b","' + _bytes_hex(value) + '"]'
        if kind is _bytearray:
            return '["ba","' + _bytearray_hex(value) + '"]'
        if kind is _list:
            return items("l", value, depth)
        if kind is _tuple:
            return items("t", value, depth)
        if kind is _set:
            return items("s", value, depth)
        if kind is _frozenset:
            return items("fs", value, depth)
        if kind is _dict:
            return pairs("d", _dict_items(value), depth)
        return encode_library(value, kind, depth)

    def encode_library(value, kind, depth):
        if kind is OrderedDict:
            return pairs("od", _od_items(value), depth)
        if kind is defaultdict:
            return pairs("dd", _dict_items(value), depth)
        if kind is deque:
            maxlen = _maxlen(value)
            head = '["q",' + ("null" if maxlen is None else number(maxlen))
            return head + _join("", ["," + encode(item, depth + 1) for item in value]) + "]"
        if kind is _range:
            return (
                '["r",'
                + number(_start(value))
                + ","
                + number(_stop(value))
                + ","
                + number(_step(value))
                + "]"
            )
        if kind is stdlib_class("collections", "Counter"):
            return pairs("C", _dict_items(value), depth)
        if kind is stdlib_class("fractions", "Fraction"):
            return fraction(value, kind)
        if kind is stdlib_class("decimal", "Decimal"):
            return decimal(value, kind)
        if is_namedtuple(kind):
            return items("t", _tuple_getitem(value, _everything), depth)
        if kind is _type_type or kind is stdlib_class("abc", "ABCMeta"):
            for name, cls in classes():  # a supported class itself, as in ``type(f(x)) == int``
                if value is cls:
                    return '["T","' + name + '"]'
        raise unsupported(kind)

    def classes():
        found = list(_builtin_classes)
        for module, name in (("collections", "Counter"), ("fractions", "Fraction"), ("decimal", "Decimal")):
            found.append((name, stdlib_class(module, name)))
        return found

    def fraction(value, kind):
        parts = []
        for slot in ("_numerator", "_denominator"):
            descriptor = _proxy_get(_class_dict(kind), slot)
            if _type(descriptor) is not _member:
                raise unsupported(kind)
            part = _member_get(descriptor, value, kind)
            if _type(part) is not _int:
                raise unsupported(kind)
            parts.append(number(part))
        return '["F",' + parts[0] + "," + parts[1] + "]"

    def decimal(value, kind):
        to_str = _proxy_get(_class_dict(kind), "__str__")
        if _type(to_str) is _type(_object.__str__):  # a C slot wrapper: the C implementation's own
            text = to_str(value)
            if _type(text) is _str and _len(text) <= 10000:
                return '["D",' + enc_str(text) + "]"
        raise unsupported(kind)

    return encode, Unsupported


def _compile_plans(plans):
    """Compile every step before user code runs; a step that does not compile becomes ``None``."""
    compiled = []
    for index, steps in enumerate(plans):
        compiled_steps = []
        for position, (kind, item) in enumerate(steps):
            where = f"<test {index}.{position}>"
            if kind == "h":
                compiled_steps.append(("h", [_try_compile(source, where, "eval") for source in item]))
            else:
                compiled_steps.append(("x", _try_compile(item, where, "exec")))
        compiled.append(compiled_steps)
    return compiled


def _try_compile(source, where, mode):
    try:
        return compile(source, where, mode)
    except BaseException:
        return None


def _set_limits(resource, payload):
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


def _drop_privileges(os, uid):
    """root -> ``uid`` for good (fail closed: any doubt ends the process before user code)."""
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


def _block_process_creation(os, sys):
    """Speed bumps only (``import posix`` bypasses them): common process APIs fail fast and readably."""

    def _blocked(*args, **kwargs):
        raise PermissionError("process creation and signalling are disabled in the sandbox")

    names = "fork forkpty system popen kill killpg posix_spawn posix_spawnp"
    names += " execl execle execlp execlpe execv execve execvp execvpe"
    names += " spawnl spawnle spawnlp spawnlpe spawnv spawnve spawnvp spawnvpe"
    for name in names.split():
        if hasattr(os, name):
            setattr(os, name, _blocked)
    for name in ("subprocess", "multiprocessing", "_posixsubprocess", "pty", "ctypes", "_ctypes"):
        sys.modules[name] = None


def _libc():
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True)
    except Exception:
        return None


def _isolate(libc, uid, tmpfs_options):
    """Fallback only (no bwrap): private mount/net/IPC namespaces and tmpfs on the world-writable dirs.

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

    names = "math cmath re collections itertools functools heapq bisect string operator typing random"
    names += " statistics fractions decimal copy datetime _strptime array struct hashlib textwrap"
    names += " unicodedata calendar dataclasses enum numbers queue signal contextlib types abc"
    for name in names.split():
        try:
            importlib.import_module(name)
        except Exception:
            pass


_main()
