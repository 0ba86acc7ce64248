"""The driver process: runs the task's tests with the real standard library, calling the program by proxy.

Runs in its own sandbox, from code objects the parent sends (see ``sandbox._CHILD_BOOT``); the candidate
process (``_sandbox_candidate.py``) cannot see, signal or trace it, and reaches it only through the reply
pipe, whose messages are decoded into fresh plain values (``_sandbox_codec.py``). The names the tests use
from the program become: a :class:`Proxy` for a callable, the driver's own import for a standard-library
module, a copy for a value. Task code (``setup``) runs here too, so a program that redefines a helper the
tests call (HumanEval's ``poly``) changes nothing; only ``entry_point`` is always the program's.
"""

import ast
import builtins
import importlib
import json  # noqa: F401 - the codec parses replies with it; imported before the uid change
import sys

from ebft_repro.evaluation._sandbox_codec import (
    Decoder,
    Encoder,
    Incident,
    Uncrossable,
    Undecodable,
    Unframed,
    receive,
    refill,
    send,
)
from ebft_repro.evaluation._sandbox_confine import confine


class CandidateLost(Incident):
    """The candidate process ended (or closed its pipe) before answering."""


STATUS_OF = {Uncrossable: "unsupported_type", Undecodable: "undecodable", CandidateLost: "lost"}


def main(settings, requests_fd, replies_fd, result_fd):
    """Run every test against the program and send the per-test statuses to the parent."""
    confine(settings["confine"])
    tests, n_tests = settings["tests"], len(settings["tests"])
    channel = Channel(requests_fd, replies_fd)
    try:
        first = channel.ask(None)
    except Incident as exc:
        first = ["error", f"no word from the program's process before it defined itself ({exc.args[0]})"]
    if first[0] != "ready":
        detail = str(first[1])[:600] if len(first) > 1 else "malformed first message"
        send(result_fd, {"defined": False, "detail": detail, "statuses": ["missing"] * n_tests})
        return
    namespace, unavailable = bind_names(channel, settings["setup"], tests, settings["entry_point"])
    entry = namespace.get(settings["entry_point"])  # the program's, before setup may define a stub
    statuses, details = [], []
    if settings["setup"]:
        status, detail = run_test(settings["setup"], "<setup>", namespace, unavailable)
        if status != "pass":
            namespace = None  # every test fails the same way
            statuses, details = [status] * n_tests, [f"setup: {detail}"] * n_tests
    if namespace is not None:
        if settings["entry_point"]:  # setup (HumanEval's prompt) may define a stub: the program's one wins
            namespace.pop(settings["entry_point"], None)
            if entry is not None:
                namespace[settings["entry_point"]] = entry
        for index, test in enumerate(tests):
            status, detail = run_test(test, f"<test {index}>", namespace, unavailable)
            statuses.append(status)
            details.append(detail)
    send(result_fd, {"defined": True, "statuses": statuses, "details": details})


class Channel:
    """The driver's end of the two pipes to the candidate; remembers classes made from its values."""

    def __init__(self, requests_fd, replies_fd):
        self.requests_fd, self.replies_fd = requests_fd, replies_fd
        self.classes = {}
        self.lost = None

    def ask(self, request):
        """Send ``request`` (none for the first message) and return the reply; raises on a lost candidate."""
        if self.lost is not None:
            raise CandidateLost(self.lost)
        try:
            if request is not None:
                send(self.requests_fd, request, trusted=True)
            reply = receive(self.replies_fd)
        except OSError as err:
            reply, self.lost = None, f"pipe error {err.errno}"
        except Unframed as err:
            reply, self.lost = None, str(err.args[0])
        if reply is None:
            self.lost = self.lost or "it exited"
            raise CandidateLost(self.lost)
        if not isinstance(reply, list) or not reply or not isinstance(reply[0], str):
            raise Undecodable("malformed reply")
        return reply

    def call(self, name, args, kwargs):
        """Call the program's ``name``; in-place changes to the arguments are copied back into them."""
        encoder = Encoder()
        payload = encoder.encode((args, kwargs))
        arguments = encoder.keep
        reply = self.ask(["call", name, payload])
        kind, *rest = reply
        if kind == "ok" and len(rest) == 3 and isinstance(rest[1], list) and len(rest[1]) == len(arguments):
            decoder = Decoder(arguments, self.classes)
            value = decoder.decode(rest[0])
            for index, (argument, state) in enumerate(zip(arguments, rest[1])):
                if not isinstance(state, list) or len(state) < 2 or state[1] != index:
                    raise Undecodable("malformed argument state")
                refill(argument, decoder.contents(state))
            _print(rest[2])
            return value
        if kind == "raise" and len(rest) == 3:
            _print(rest[2])
            raise self.exception_class(rest[0])(str(rest[1]))
        if kind == "uncrossable" and len(rest) == 2:
            _print(rest[1])
            raise Uncrossable(f"{name} returned a value that cannot cross: {str(rest[0])[:200]}")
        raise Undecodable("malformed reply")

    def exception_class(self, described):
        """The driver's class for the program's exception class ``[name, nearest builtin base]``."""
        name, base = str(described[0]), str(described[1])
        base_class = getattr(builtins, base, None)
        if not (isinstance(base_class, type) and issubclass(base_class, BaseException)):
            base_class = Exception
        if name == base:
            return base_class
        key = ("exc", name, base)
        if key not in self.classes:
            self.classes[key] = type(name.rsplit(".", 1)[-1], (base_class,), {"__module__": "program"})
        return self.classes[key]


class Proxy:
    """Stands for one of the program's callables in the driver; calling it calls the real one."""

    def __init__(self, channel, name):
        self._channel, self.__name__ = channel, name

    def __call__(self, *args, **kwargs):
        return self._channel.call(self.__name__, args, kwargs)

    def __repr__(self):
        return f"<the program's {self.__name__}>"


def bind_names(channel, setup, tests, entry_point):
    """The tests' namespace with the program's names bound, and ``{name: (status, reason)}`` for those
    that could not be (a test that then needs one gets that status, not a plain NameError)."""
    wanted = set()
    for source in (setup, *tests):
        try:
            wanted |= {node.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Name)}
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            pass  # running it will say so
    wanted = sorted(name for name in wanted | {entry_point} - {""} if not hasattr(builtins, name))
    namespace = {"__name__": "__test__", "__builtins__": builtins}
    unavailable = {}
    try:
        bindings = channel.ask(["names", wanted])[1]
        for name in wanted:
            if name in bindings:
                bind(namespace, unavailable, channel, name, bindings[name])
    except (Incident, TypeError, IndexError, KeyError) as exc:
        status = STATUS_OF.get(type(exc), "undecodable")
        unavailable = dict.fromkeys(
            wanted, (status, f"the program's names could not be read ({_short(exc)})")
        )
    return namespace, unavailable


def bind(namespace, unavailable, channel, name, binding):
    kind = binding[0]
    if kind == "call":
        namespace[name] = Proxy(channel, name)
    elif kind == "module" and name in sys.stdlib_module_names:
        namespace[name] = importlib.import_module(name)
    elif kind == "exc":
        namespace[name] = channel.exception_class(binding[1])
    elif kind == "value":
        try:
            namespace[name] = Decoder((), channel.classes).decode(binding[1])
        except Incident as exc:
            unavailable[name] = (STATUS_OF.get(type(exc), "undecodable"), _short(exc))
    else:
        unavailable[name] = ("unsupported_type", f"{name} is a {kind} the tests cannot use")


def run_test(source, label, namespace, unavailable):
    """``(status, detail)`` of running one test in ``namespace`` (see ``sandbox.TEST_STATUSES``)."""
    Incident.seen.clear()
    try:
        exec(compile(source, label, "exec"), namespace)
        status, detail = "pass", ""
    except AssertionError as exc:
        status, detail = "fail", _short(exc)
    except NameError as exc:
        status, detail = unavailable.get(exc.name) or ("raised", _short(exc))
    except BaseException as exc:  # noqa: BLE001 - whatever the test raises fails it
        status, detail = "raised", _short(exc)
    if Incident.seen:  # even when the test caught it: an uncrossable value is never a pass
        incident = Incident.seen[0]
        status, detail = STATUS_OF.get(type(incident), "raised"), _short(incident)
    return status, detail


def _short(exc):
    return f"{type(exc).__name__}: {exc}"[:200]


def _print(text):
    if text:
        sys.stdout.write(str(text))
