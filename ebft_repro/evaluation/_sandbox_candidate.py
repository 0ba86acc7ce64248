"""The candidate process: runs the untrusted program and answers the driver's requests, nothing else.

Runs in its own sandbox, from code objects the parent sends (see ``sandbox._CHILD_BOOT``). Nothing here
needs protecting from the program: whatever the program rebinds, patches or forges in this process, only
values leave it, and the driver decides every verdict.
Requests (``_sandbox_driver.py``): ``["names", [name, ...]]`` -> how each name is bound;
``["call", name, (args, kwargs)]`` -> ``["ok", value, argument states, printed]``, ``["raise", [class,
builtin base], message, printed]`` or ``["uncrossable", reason, printed]``.
"""

import builtins
import sys
from builtins import BaseException, callable, compile, exec, isinstance, issubclass, len, str, type  # noqa: A004, UP029
from io import StringIO
from os import _exit

from ebft_repro.evaluation._sandbox_codec import Decoder, Encoder, Uncrossable, is_enum_class, receive, send
from ebft_repro.evaluation._sandbox_confine import confine


def main(settings, requests_fd, replies_fd):
    """Run the program, report whether it defined itself, then answer requests until the driver leaves.

    Everything used after the program starts is bound at import (above), so a correct program that
    rebinds builtins, ``io`` or ``os`` for itself still gets its answers across.
    """
    confine(settings["confine"])
    program = sys.modules["__sandbox__"] = type(sys)("__sandbox__")  # dataclasses, pickle... look it up
    scope = program.__dict__
    try:
        sys.stdout = StringIO()  # what the program prints while defining itself is dropped
        exec(compile(settings["code"], "<solution>", "exec"), scope)
        sys.stdout = sys.__stdout__
        reply = ["ready"]
    except BaseException as exc:  # noqa: BLE001 - anything the program raises is its verdict
        reply = ["error", _describe(exc)]
    send(replies_fd, reply)
    while reply[0] != "error":
        request = receive(requests_fd, trusted=True)
        if request is None:
            break
        send(replies_fd, _answer(request, scope))
    _exit(0)  # skip the program's atexit handlers, thread joins and finalizers


def _answer(request, scope):
    if request[0] == "names":
        return ["names", {name: _binding(scope[name]) for name in request[1] if name in scope}]
    _, name, payload = request
    decoder = Decoder()
    args, kwargs = decoder.decode(payload)
    arguments = [decoder.memo[index] for index in range(len(decoder.memo))]
    printed = sys.stdout = StringIO()
    try:
        value = scope[name](*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001
        sys.stdout = sys.__stdout__
        return ["raise", _exception_class(type(exc)), _describe(exc, with_type=False), printed.getvalue()]
    sys.stdout = sys.__stdout__
    try:
        encoder = Encoder(arguments)
        result = encoder.encode(value)
        return ["ok", result, [encoder.contents(argument) for argument in arguments], printed.getvalue()]
    except Uncrossable as exc:
        return ["uncrossable", str(exc.args[0]), printed.getvalue()]
    except BaseException as exc:  # noqa: BLE001 - e.g. a property that raises while encoding
        return ["uncrossable", f"encoding the value raised {type(exc).__name__}", printed.getvalue()]


def _binding(value):
    """How the driver should bind a name: a module, an exception or enum class, a callable or a value."""
    if type(value) is type(sys):
        return ["module"]
    if isinstance(value, type) and issubclass(value, BaseException):
        return ["exc", _exception_class(value)]
    try:
        if is_enum_class(value):
            return ["value", Encoder().enum_class(value)]
        if callable(value):
            return ["call"]
        return ["value", Encoder().encode(value)]
    except BaseException as exc:  # noqa: BLE001
        return ["uncrossable", str(exc.args[0]) if isinstance(exc, Uncrossable) else type(exc).__name__]


def _exception_class(cls):
    """``[qualified name, nearest builtin base]`` of an exception class."""
    for base in cls.__mro__:
        if getattr(builtins, base.__name__, None) is base:
            return [cls.__qualname__[:200], base.__name__]
    return [cls.__qualname__[:200], "Exception"]


def _describe(exc, with_type=True):
    try:
        message = str(exc)[:1000]
    except BaseException:  # noqa: BLE001
        message = "<unprintable>"
    return f"{type(exc).__name__}: {message}" if with_type else message
