"""Values that cross between the sandbox's two processes: type-tagged JSON, decoded into fresh objects.

Shared by the driver (trusted) and the candidate (untrusted); both run this file's text, and the parent
never decodes anything. Only data crosses, never code: decoding builds standard-library objects (or
classes the driver makes itself from names and field lists), so whatever the candidate sends, the
driver's tests compare plain values with Python's own operators.

Tags: JSON null/true/false/str/float are None/bool/str/float (``NaN``/``Infinity`` included); a JSON int
is an int below 2**53, ``["i", hex]`` any other. ``["l"|"s"|"ba"|"d"|"od"|"C", id, ...]`` list, set,
bytearray, dict, OrderedDict, Counter; ``["dd", id, factory, k, v, ...]`` defaultdict; ``["q", id,
maxlen, ...]`` deque; ``["@", id]`` a mutable container already sent (aliasing and cycles survive, and a
call's reply can point at the caller's own argument objects). ``["t"|"fs", ...]`` tuple, frozenset;
``["c", re, im]``, ``["b", hex]``, ``["r", a, b, c]``, ``["F", n, d]``, ``["D", text]``; ``["T", name]`` a
builtin type; ``["nt"|"dc", name, fields, ...]`` namedtuple/dataclass; ``["en", name, base, members,
member]`` enum member; ``["dk"|"dv"|"di", items]`` dict views; ``["it", ...]`` a drained iterator.
"""

import builtins
import marshal
import sys
from _json import encode_basestring_ascii
from os import read as os_read
from os import write as os_write

# Names are bound here, when the module loads: in the candidate that is before the program runs, so a
# correct program that rebinds builtins or ``json`` in its own process still gets its values across. The
# candidate writes JSON with :func:`dumps` (no ``json`` import: it is slow to import and its Python code
# looks builtins up at call time) and reads the driver's trusted messages as ``marshal``.
_OWN = "bool bytearray bytes complex dict enumerate float format frozenset getattr hasattr id int isinstance"
_OWN += " issubclass iter len list range set str tuple type zip"
globals().update({name: vars(builtins)[name] for name in _OWN.split()})

MAX_DEPTH = 100
MAX_NODES = 2_000_000  # per message
MAX_MESSAGE_BYTES = 16 << 20
MAX_SKIPPED_BYTES = 256 << 20  # an oversized message up to this is read and dropped; beyond it, no more
MAX_DRAINED = 100_000  # items taken from a returned iterator
_SAFE_INT = 1 << 53
_MUTABLE = {list: "l", set: "s", bytearray: "ba", dict: "d"}
_MUTABLE_LIBRARY = ("od", "C", "dd", "q")
_IMMUTABLE = {tuple: "t", frozenset: "fs"}
_BUILTIN_TYPES = ("int", "float", "complex", "bool", "str", "bytes", "bytearray", "list", "tuple")
_BUILTIN_TYPES += ("dict", "set", "frozenset", "range", "object", "type")
_FACTORIES = ("int", "float", "str", "list", "dict", "set", "tuple", "frozenset")


class Incident(BaseException):
    """Something other than the program's own behaviour decided a test; ``seen`` lists each one raised.

    A BaseException, so a test's ``except Exception`` cannot turn it into a pass, and recorded when
    created, so a test that catches it anyway (``except:``) is still reported.
    """

    seen = []

    def __init__(self, *args):
        super().__init__(*args)
        Incident.seen.append(self)


class Uncrossable(Incident):
    """A value that cannot cross (a user class, a function...); ``args[0]`` says which."""


class Undecodable(Incident):
    """Data that is not a well-formed value within the limits."""


class Unframed(Undecodable):
    """The stream is not a sequence of messages any more: nothing after this can be read."""


def dumps(obj):
    """Compact JSON of a message: None, bool, int, float (``NaN``, ``Infinity``), str, list, dict of str."""
    parts = []
    _write_json(obj, parts.append)
    return "".join(parts).encode()


def _write_json(obj, write):
    kind = type(obj)
    if obj is None or kind is bool:
        write("null" if obj is None else "true" if obj else "false")
    elif kind is str:
        write(encode_basestring_ascii(obj))
    elif kind is int:
        write(int.__repr__(obj))
    elif kind is float:
        write(
            {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}.get(
                float.__repr__(obj), float.__repr__(obj)
            )
        )
    elif kind is list or kind is dict:
        write("[" if kind is list else "{")
        for index, item in enumerate(obj if kind is list else obj.items()):
            write("," if index else "")
            if kind is dict:
                write(encode_basestring_ascii(item[0]) + ":")
                item = item[1]
            _write_json(item, write)
        write("]" if kind is list else "}")
    else:
        raise Uncrossable(f"not a message: {kind.__name__}")


def loads(data):
    """Parse one JSON message (in the driver); malformed input raises :class:`Undecodable`."""
    import json

    try:
        return json.loads(data)
    except (ValueError, RecursionError) as err:
        raise Undecodable(f"malformed message ({type(err).__name__})") from None


class Encoder:
    """Encodes values, naming each mutable container once (``memo``: ``id(obj) -> index``)."""

    def __init__(self, seeded=()):
        self.memo = {id(obj): index for index, obj in enumerate(seeded)}
        self.keep = list(seeded)  # keeps ids valid while encoding

    def encode(self, value, depth=0):
        if depth > MAX_DEPTH:
            raise Uncrossable(f"value nested deeper than {MAX_DEPTH} levels")
        kind = type(value)
        if value is None or kind in (bool, str, float):
            return value
        if kind is int:
            return value if -_SAFE_INT < value < _SAFE_INT else ["i", format(value, "x")]
        if id(value) in self.memo:
            return ["@", self.memo[id(value)]]
        if kind in _IMMUTABLE:
            return [_IMMUTABLE[kind], *[self.encode(item, depth + 1) for item in value]]
        library = None if kind in _MUTABLE else _library_kind(value)
        if library is None and kind in _MUTABLE or library in _MUTABLE_LIBRARY:
            return self.contents(value, depth, _MUTABLE.get(kind) or library)
        return self._other(value, kind, library, depth)

    def contents(self, value, depth=0, tag=None):
        """The encoding of a mutable container itself (also for one already in the memo); ``tag`` when the
        caller has already classified it."""
        tag = tag or _MUTABLE.get(type(value)) or _library_kind(value)
        if id(value) not in self.memo:
            self.memo[id(value)] = len(self.keep)
            self.keep.append(value)
        head = [tag, self.memo[id(value)]]
        if tag == "ba":
            return [*head, value.hex()]
        if tag == "dd":
            factory = value.default_factory
            named = (
                factory is not None and getattr(builtins, getattr(factory, "__name__", ""), None) is factory
            )
            head.append(factory.__name__ if named and factory.__name__ in _FACTORIES else None)
        if tag == "q":
            head.append(value.maxlen)
        if tag in ("d", "od", "C", "dd"):
            pairs = value.items()
            return head + [self.encode(x, depth + 1) for pair in pairs for x in pair]
        return head + [self.encode(item, depth + 1) for item in value]

    def enum_class(self, cls, member=None, depth=0):
        """An enum class (decoded as the class) or, with ``member``, one of its members."""
        members = [[name, self.encode(item.value, depth + 1)] for name, item in cls.__members__.items()]
        return ["en", cls.__qualname__, enum_base(cls), members, member]

    def _other(self, value, kind, library, depth):
        enc = self.encode
        if kind is complex:
            return ["c", value.real, value.imag]
        if kind is bytes:
            return ["b", value.hex()]
        if kind is range:
            return ["r", enc(value.start), enc(value.stop), enc(value.step)]
        if kind is type and value.__name__ in _BUILTIN_TYPES and getattr(builtins, value.__name__) is value:
            return ["T", value.__name__]
        if library == "F":
            return ["F", enc(value.numerator), enc(value.denominator)]
        if library == "D":
            return ["D", str(value)]
        if library in ("dk", "dv", "di"):
            return [library, [enc(item, depth + 1) for item in value]]
        if library == "en":
            return self.enum_class(kind, value.name, depth)
        if library == "nt":
            return ["nt", kind.__qualname__, list(kind._fields), *[enc(item, depth + 1) for item in value]]
        if library == "dc":
            names = [field.name for field in sys.modules["dataclasses"].fields(value)]
            params = kind.__dataclass_params__
            flags = [bool(params.eq), bool(params.order), bool(params.frozen)]
            return [
                "dc",
                kind.__qualname__,
                names,
                flags,
                *[enc(getattr(value, n), depth + 1) for n in names],
            ]
        if library == "it":
            items = []
            for item in value:
                if len(items) == MAX_DRAINED:
                    raise Uncrossable(f"iterator longer than {MAX_DRAINED} items")
                items.append(enc(item, depth + 1))
            return ["it", *items]
        raise Uncrossable(f"type {kind.__qualname__[:80]}")


def _library_kind(value):
    """Tag of a value of a supported library type (checked by identity against the loaded modules)."""
    kind = type(value)
    modules = sys.modules
    collections = modules.get("collections")
    if collections is not None:
        found = {collections.OrderedDict: "od", collections.Counter: "C", collections.defaultdict: "dd"}
        found[collections.deque] = "q"
        if kind in found:
            return found[kind]
    for module, name, tag in (("fractions", "Fraction", "F"), ("decimal", "Decimal", "D")):
        if module in modules and kind is getattr(modules[module], name, None):
            return tag
    views = {type({}.keys()): "dk", type({}.values()): "dv", type({}.items()): "di"}
    if kind in views:
        return views[kind]
    if is_enum_class(kind):
        return "en"
    if issubclass(kind, tuple) and isinstance(getattr(kind, "_fields", None), tuple):
        return "nt"
    if "dataclasses" in modules and modules["dataclasses"].is_dataclass(kind):
        return "dc"
    if hasattr(kind, "__next__") and hasattr(kind, "__iter__"):
        return "it"
    return None


def is_enum_class(cls):
    """Whether ``cls`` is an Enum, IntEnum or StrEnum class (Flags do not cross)."""
    enum = sys.modules.get("enum")
    return enum is not None and isinstance(cls, enum.EnumMeta) and enum_base(cls) is not None


def enum_base(kind):
    enum = sys.modules["enum"]
    for base in ("IntEnum", "StrEnum", "Flag"):
        if issubclass(kind, getattr(enum, base, ())):
            return None if base == "Flag" else base
    return "Enum"


class Decoder:
    """Rebuilds values; ``memo`` maps container ids to objects (seeded with a call's own arguments)."""

    def __init__(self, seeded=(), classes=None):
        self.memo = dict(enumerate(seeded))
        self.nodes_left = MAX_NODES
        self.classes = {} if classes is None else classes  # driver-made classes, shared across messages

    def decode(self, obj, depth=0):
        self.nodes_left -= 1
        if self.nodes_left < 0 or depth > MAX_DEPTH:
            raise Undecodable("value over the size or depth limit")
        if obj is None or isinstance(obj, bool | str | float | int):
            return obj
        if not isinstance(obj, list) or not obj or not isinstance(obj[0], str):
            raise Undecodable("malformed value")
        try:
            return self._tagged(obj[0], obj[1:], depth)
        except (Undecodable, Uncrossable):
            raise
        except Exception as err:  # noqa: BLE001 - any failure on untrusted data is malformed data
            raise Undecodable(f"malformed {obj[0]!r} value ({type(err).__name__})") from None

    def contents(self, obj):
        """A fresh container from the encoding of one already in the memo (an argument's new state)."""
        try:
            if obj[1] not in self.memo:
                raise Undecodable("state of an unknown container")
            return self._container(obj[0], None, obj[2:], 0)
        except (Undecodable, Uncrossable):
            raise
        except Exception as err:  # noqa: BLE001 - any failure on untrusted data is malformed data
            raise Undecodable(f"malformed argument state ({type(err).__name__})") from None

    def _tagged(self, tag, rest, depth):
        items = self._items
        if tag == "@":
            return self.memo[rest[0]]
        if tag in ("l", "s", "ba", "d", "od", "C", "dd", "q"):
            if rest[0] in self.memo:
                raise Undecodable("container id sent twice")
            return self._container(tag, rest[0], rest[1:], depth)
        if tag == "t":
            return tuple(items(rest, depth))
        if tag == "fs":
            return frozenset(items(rest, depth))
        if tag == "i":
            return int(rest[0], 16)
        if tag == "c":
            return complex(float(rest[0]), float(rest[1]))
        if tag == "b":
            return bytes.fromhex(rest[0])
        if tag == "r":
            return range(*[_int(value) for value in rest])
        if tag == "T" and rest[0] in _BUILTIN_TYPES:
            return getattr(builtins, rest[0])
        if tag == "F":
            return _module("fractions").Fraction(_int(rest[0]), _int(rest[1]))
        if tag == "D":
            return _module("decimal").Decimal(rest[0])
        if tag in ("dk", "dv", "di"):
            values = items(rest[0], depth)
            view = {
                "dk": lambda: dict.fromkeys(values).keys(),
                "dv": lambda: dict(enumerate(values)).values(),
            }
            return view.get(tag, lambda: dict(values).items())()
        if tag == "it":
            return iter(items(rest, depth))
        if tag in ("nt", "dc", "en"):
            return self._instance(tag, rest, depth)
        raise Undecodable(f"unknown tag {tag!r}")

    def _items(self, values, depth):
        return [self.decode(value, depth + 1) for value in values]

    def _container(self, tag, index, rest, depth):
        collections = _module("collections")
        if tag == "ba":
            value, rest = bytearray.fromhex(rest[0]), []
        elif tag == "q":
            value, rest = collections.deque(maxlen=None if rest[0] is None else _int(rest[0])), rest[1:]
        elif tag == "dd":
            value, rest = collections.defaultdict(None if rest[0] is None else _factory(rest[0])), rest[1:]
        else:
            kinds = {"l": list, "s": set, "d": dict, "od": collections.OrderedDict, "C": collections.Counter}
            value = kinds[tag]()
        if index is not None:
            self.memo[index] = value
        decoded = self._items(rest, depth)
        if isinstance(value, dict):
            if len(decoded) % 2:
                raise Undecodable("odd mapping")
            for key, item in zip(decoded[0::2], decoded[1::2]):
                value[key] = item
        elif tag == "s":
            value.update(decoded)
        elif tag != "ba":
            value.extend(decoded)
        return value

    def _instance(self, tag, rest, depth):
        if tag == "en":
            name, base, members, member = rest
            if base not in ("Enum", "IntEnum", "StrEnum"):  # the name picks a class of the driver's enum
                raise Undecodable(f"unknown enum base {str(base)[:40]!r}")
            cls = self._class(
                ("en", name, base, _frozen(members)), lambda: _make_enum(name, base, members, self)
            )
            return cls if member is None else cls[member]
        name, fields, *values = rest
        flags = values.pop(0) if tag == "dc" else None
        key = (tag, name, tuple(fields), tuple(flags or ()))
        cls = self._class(key, lambda: _make_record(tag, name, fields, flags))
        return cls(*self._items(values, depth))

    def _class(self, key, make):
        if key not in self.classes:
            self.classes[key] = make()
        return self.classes[key]


def _make_enum(name, base, members, decoder):
    enum = _module("enum")
    pairs = [(member, decoder.decode(value)) for member, value in members]
    return getattr(enum, base)(name.rsplit(".", 1)[-1], pairs)


def _make_record(tag, name, fields, flags):
    """A driver-made namedtuple/dataclass; attributes the program's class adds raise :class:`Uncrossable`."""
    short = name.rsplit(".", 1)[-1]

    def missing(self, attribute):
        raise Uncrossable(f"{short}.{attribute} is defined by the program and runs only there")

    if tag == "nt":
        cls = _module("collections").namedtuple(short, fields)
        cls.__getattr__ = missing
        return cls
    eq, order, frozen = flags
    dataclasses = _module("dataclasses")
    return dataclasses.make_dataclass(
        short, fields, namespace={"__getattr__": missing}, eq=eq, order=order, frozen=frozen
    )


def _frozen(obj):
    return tuple(_frozen(item) for item in obj) if isinstance(obj, list) else obj


def _factory(name):
    if name not in _FACTORIES:
        raise Undecodable("unknown defaultdict factory")
    return getattr(builtins, name)


def _int(value):
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, list) and len(value) == 2 and value[0] == "i":
        return int(value[1], 16)
    raise Undecodable("malformed int")


def _module(name):
    return sys.modules.get(name) or __import__(name)


def refill(target, fresh):
    """Make the container ``target`` equal to ``fresh`` in place (the program changed an argument)."""
    if type(target) is not type(fresh):
        raise Undecodable("an argument changed its type")
    if isinstance(target, list | bytearray):
        target[:] = fresh
    elif isinstance(target, dict | set):
        target.clear()
        target.update(fresh)
    else:  # deque
        target.clear()
        target.extend(fresh)


def send(fd, obj, trusted=False):
    """Write one message: its length as 8 bytes, then its JSON (``marshal`` when ``trusted``: only ever
    from the driver to the candidate, whose reading it cannot harm)."""
    data = marshal.dumps(obj) if trusted else dumps(obj)
    data = len(data).to_bytes(8, "big") + data
    while data:
        data = data[os_write(fd, data) :]


def receive(fd, trusted=False):
    """Read one message (None at end of input); oversized or malformed ones raise :class:`Undecodable`."""
    head = _read_exactly(fd, 8)
    if head is None:
        return None
    size = int.from_bytes(head, "big")
    if size > MAX_SKIPPED_BYTES:
        raise Unframed(f"a message header claims {size} bytes")
    body = _read_exactly(fd, size, keep=size <= MAX_MESSAGE_BYTES)  # read even if dropped: stay in step
    if body is None:
        return None
    if size > MAX_MESSAGE_BYTES:
        raise Undecodable(f"message larger than {MAX_MESSAGE_BYTES >> 20} MiB")
    return marshal.loads(body) if trusted else loads(body)


def _read_exactly(fd, size, keep=True):
    chunks, got = [], 0
    while got < size:
        chunk = os_read(fd, min(size - got, 1 << 20))
        if not chunk:
            return None
        if keep:
            chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)
