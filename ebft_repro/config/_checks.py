"""Validation helpers: a value against its field's annotation string, and the checks ``__post_init__`` runs.

Annotations are read as strings (the config modules use ``from __future__ import annotations``):
``int``, ``float``, ``bool``, ``str``, ``None``, ``tuple[...]`` and unions of them. Errors name the field as
users write it in ``--set`` (``sampler.stride``); the section names come from :func:`_register_sections`,
which ``ebft_repro.config.experiment`` calls once ExperimentConfig is defined (it is built on these checks,
so this module cannot import it).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import fields
from typing import Any

_SECTION_NAMES: dict[type, str] = {}
"""Section class -> its field name in ExperimentConfig, for dotted error messages."""
_TOP_LEVEL: list[type] = []
"""ExperimentConfig, whose own fields are named without a section (``seed``)."""


def _register_sections(config_class: type) -> None:
    """Name ``config_class``'s fields bare and those of its sections (dataclass fields) ``section.field``."""
    _TOP_LEVEL.append(config_class)
    _SECTION_NAMES.update(
        {
            f.default_factory: f.name
            for f in fields(config_class)
            if dataclasses.is_dataclass(f.default_factory)
        }
    )


def _path(obj: object, name: str) -> str:
    """The dotted name of a field, as users write it in ``--set`` (``sampler.stride``, ``seed``)."""
    if isinstance(obj, tuple(_TOP_LEVEL)):
        return name
    return f"{_SECTION_NAMES.get(type(obj), type(obj).__name__)}.{name}"


def _split_top(text: str, sep: str) -> list[str]:
    """Split an annotation string on ``sep`` outside brackets: ``"tuple[a, b] | None"`` on ``|``."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == sep and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    return parts + [text[start:].strip()]


def _tuple_items(alternative: str) -> list[str] | None:
    """Item annotations of ``tuple[...]`` (the last is ``...`` for variable length), else None."""
    if alternative.startswith("tuple[") and alternative.endswith("]"):
        return _split_top(alternative[len("tuple[") : -1], ",")
    return None


def _matches(annotation: str, value: Any) -> bool:
    """Whether ``value`` has the type an annotation string names (int, float, bool, str, None, tuples)."""
    return any(_matches_one(alternative, value) for alternative in _split_top(annotation, "|"))


def _matches_one(alternative: str, value: Any) -> bool:
    simple = {
        "None": lambda v: v is None,
        "bool": lambda v: isinstance(v, bool),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
    }
    if alternative in simple:
        return simple[alternative](value)
    items = _tuple_items(alternative)
    if items is None:
        raise TypeError(f"config annotation {alternative!r} is not supported by the validator")
    if not isinstance(value, tuple):
        return False
    if items[-1] == "...":
        return all(_matches(items[0], item) for item in value)
    return len(value) == len(items) and all(_matches(a, item) for a, item in zip(items, value))


def _describe(annotation: str) -> str:
    """Human words for an annotation: ``int | None`` -> ``an integer or none``."""
    words = {"None": "none", "bool": "true or false", "int": "an integer", "float": "a finite number"}
    described = []
    for alternative in _split_top(annotation, "|"):
        items = _tuple_items(alternative)
        if alternative in words or alternative == "str":
            described.append(words.get(alternative, "a string"))
        elif items and items[-1] == "...":
            described.append(f"a comma-separated list of ({_describe(items[0])})")
        elif items:
            described.append(f"{len(items)} comma-separated values ({', '.join(map(_describe, items))})")
        else:
            described.append(alternative)
    return " or ".join(described)


def _numbers(value: Any) -> list[float]:
    if isinstance(value, tuple):
        return [number for item in value for number in _numbers(item)]
    return [value] if isinstance(value, float) else []


def _check_fields(obj: object) -> None:
    """Every field has its annotated type (sections: their class) and every float is finite."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(f.default_factory):
            if not isinstance(value, f.default_factory):
                kind = f.default_factory.__name__
                raise ValueError(f"{_path(obj, f.name)} must be a {kind}, got {value!r}")
            continue
        if not _matches(f.type, value):
            raise ValueError(f"{_path(obj, f.name)}={value!r} must be {_describe(f.type)}")
        if not all(math.isfinite(number) for number in _numbers(value)):
            raise ValueError(f"{_path(obj, f.name)}={value!r} must be finite (no nan or inf)")


def _check_choice(obj: object, name: str, allowed: tuple) -> None:
    value = getattr(obj, name)
    if value not in allowed:
        raise ValueError(f"{_path(obj, name)}={value!r} is not one of {allowed}")


def _check_positive(obj: object, *names: str, allow_zero: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and (value < 0 or (value == 0 and not allow_zero)):
            bound = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"{_path(obj, name)}={value!r} must be {bound}")


def _check_range(obj: object, name: str, interval: str) -> None:
    """``interval`` like ``"[0, 1)"`` or ``"(0, 1]"``: the allowed closed/open bounds."""
    value = getattr(obj, name)
    low, high = (float(x) for x in interval[1:-1].split(","))
    above = value >= low if interval[0] == "[" else value > low
    below = value <= high if interval[-1] == "]" else value < high
    if not (above and below):
        raise ValueError(f"{_path(obj, name)}={value!r} must be in {interval}")
