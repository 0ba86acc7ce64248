"""The whole configuration of one run (:class:`ExperimentConfig`), rebuilt from a dict (:func:`from_dict`)
or changed by dotted overrides (:func:`apply_overrides`), each validated once on the final values."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any

from ebft_repro.config._checks import (
    _SECTION_NAMES,
    _check_choice,
    _check_fields,
    _check_positive,
    _describe,
    _register_sections,
    _split_top,
    _tuple_items,
)
from ebft_repro.config.choices import METHODS, PRESETS, TASKS
from ebft_repro.config.sections import (
    BaseModelConfig,
    DataConfig,
    EvalConfig,
    FeaturizerConfig,
    LossConfig,
    OptimConfig,
    RLVRConfig,
    SamplerConfig,
    TrainConfig,
)


@dataclass(frozen=True)
class ExperimentConfig:
    """One training run: a method on a task from a base model, with every component's settings."""

    method: str = "ebft"
    task: str = "qa_code"
    seed: int = 0
    preset: str = "tiny"
    model: str = "builtin:tiny"
    """Policy to fine-tune: ``builtin:<preset>`` (built here), a local directory, or a hub causal-LM name."""
    base: BaseModelConfig = field(default_factory=BaseModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    featurizer: FeaturizerConfig = field(default_factory=FeaturizerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    rlvr: RLVRConfig = field(default_factory=RLVRConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_choice(self, "method", METHODS)
        _check_choice(self, "task", TASKS)
        _check_choice(self, "preset", PRESETS)
        _check_positive(self, "seed", allow_zero=True)
        if not self.model.strip():
            raise ValueError("model='' must be builtin:<preset>, a local directory or a hub name")
        if self.method == "ebft_fm" and self.loss.ce_coef != 0:
            raise ValueError(
                f"loss.ce_coef={self.loss.ce_coef} must be 0 for method='ebft_fm' (feature matching alone);"
                " use method='ebft' for gamma > 0"
            )
        if self.loss.kl_coef > 0 and self.featurizer.feature_model is not None:
            raise ValueError(
                "loss.kl_coef > 0 takes the frozen initial policy (the feature network) as the KL reference;"
                " with featurizer.feature_model set they differ: set loss.kl_coef=0"
                " or featurizer.feature_model=none"
            )
        sampler, seq_len = self.sampler, self.data.seq_len
        span = seq_len - sampler.gen_len - sampler.context_len
        if span < 0:
            raise ValueError(
                f"data.seq_len={seq_len} is too short for sampler.context_len + sampler.gen_len"
                f" = {sampler.context_len + sampler.gen_len}"
            )
        if span % sampler.stride:
            raise ValueError(
                f"sampler.stride={sampler.stride} must divide data.seq_len - gen_len - context_len = {span}"
            )

    @property
    def run_name(self) -> str:
        return f"{self.task}-{self.method}-seed{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_register_sections(ExperimentConfig)


def _sections() -> dict[str, type]:
    return {name: cls for cls, name in _SECTION_NAMES.items()}


def _known(names, what: str, key: str) -> None:
    if key not in names:
        raise ValueError(f"unknown {what} {key!r}; known: {sorted(names)}")


def _build(values: dict[str, Any]) -> ExperimentConfig:
    """Construct every section from its dict, then the config, once: validation sees the final values.

    Missing fields take their defaults; unknown fields raise ``ValueError`` naming them.
    """
    sections = _sections()
    kwargs = {}
    for key, value in values.items():
        _known({f.name for f in fields(ExperimentConfig)}, "config field", key)
        if key in sections and isinstance(value, dict):
            for name in value:
                _known({f.name for f in fields(sections[key])}, f"field of section {key!r}", name)
            value = sections[key](**value)
        kwargs[key] = value
    return ExperimentConfig(**kwargs)


def _values(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config as nested dicts of field values (sections one level deep; tuples stay tuples)."""
    values = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = {sub.name: getattr(value, sub.name) for sub in fields(value)}
        values[f.name] = value
    return values


def _tuples(value: Any) -> Any:
    return tuple(_tuples(item) for item in value) if isinstance(value, list) else value


def from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """Rebuild an ExperimentConfig from :meth:`ExperimentConfig.to_dict` output (JSON lists become tuples).

    Fields missing from ``data`` (added to the package after it was written) take their defaults.

    Raises:
        ValueError: naming an unknown field or an invalid value.
    """
    values = {}
    for key, value in data.items():
        if isinstance(value, dict):
            value = {name: _tuples(item) for name, item in value.items()}
        values[key] = _tuples(value)
    return _build(values)


def _parse_one(text: str, alternative: str) -> Any:
    """Parse ``text`` as one annotation alternative: ``int``, ``float``, ``bool``, ``str``, ``tuple[...]``."""
    if alternative == "bool":
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if text.lower() not in words:
            raise ValueError(text)
        return words[text.lower()]
    if alternative == "int":
        return int(text)
    if alternative == "float":
        return float(text)
    if alternative == "str":
        return text
    items = _tuple_items(alternative)
    if items is None:
        raise ValueError(text)
    raw = json.loads(text) if text.startswith("[") else [t for t in text.split(",") if t.strip()]
    if not isinstance(raw, list) or (items[-1] != "..." and len(raw) != len(items)):
        raise ValueError(text)
    annotations = [items[0]] * len(raw) if items[-1] == "..." else items
    return tuple(_parse_value(str(item).strip(), a) for item, a in zip(raw, annotations))


def _parse_value(text: str, annotation: str) -> Any:
    """Parse an override string into the type its field's annotation names (``none`` for optional fields).

    Raises:
        ValueError: saying what was expected, e.g. ``expected an integer, got 'none'``.
    """
    order = ("None", "bool", "int", "float", "tuple", "str")  # "1" is an int before it is a float
    rank = {name: i for i, name in enumerate(order)}
    alternatives = sorted(_split_top(annotation, "|"), key=lambda a: rank.get(a.split("[")[0], len(order)))
    for alternative in alternatives:
        if alternative == "None":
            if text.strip().lower() in ("none", "null"):
                return None
            continue
        try:
            return _parse_one(text.strip() if alternative != "str" else text, alternative)
        except (ValueError, json.JSONDecodeError):
            continue
    raise ValueError(f"expected {_describe(annotation)}, got {text!r}")


def _parse_override(override: str) -> tuple[str, str | None, Any]:
    """``"section.field=value"`` -> (section or field, field or None, parsed value), names checked."""
    if "=" not in override:
        raise ValueError(f"override {override!r} must look like section.field=value")
    key, text = override.split("=", 1)
    parts = key.strip().split(".")
    sections = _sections()
    try:
        if len(parts) == 1:
            if parts[0] in sections:
                raise ValueError(f"{parts[0]!r} is a section; set its fields as {parts[0]}.<field>=value")
            _known({f.name for f in fields(ExperimentConfig)} - set(sections), "field", parts[0])
            annotation = next(f.type for f in fields(ExperimentConfig) if f.name == parts[0])
            return parts[0], None, _parse_value(text, annotation)
        if len(parts) != 2:
            raise ValueError("must look like section.field=value")
        section, name = parts
        _known(sections, "section", section)
        known = {f.name: f.type for f in fields(sections[section])}
        _known(known, f"field of {section}", name)
        return section, name, _parse_value(text, known[name])
    except ValueError as err:
        raise ValueError(f"override {override!r}: {err}") from None


def apply_overrides(cfg: ExperimentConfig, overrides: list[str] | tuple[str, ...]) -> ExperimentConfig:
    """Apply dotted ``section.field=value`` (or top-level ``field=value``) overrides.

    Every override is parsed first; the config is then built and validated once, so checks that span
    fields (the strided layout needs ``(seq_len - gen_len - context_len) % stride == 0``) see the final
    values whatever the order of the overrides.

    Raises:
        ValueError: naming the override when the section or field is unknown or the value does not parse,
            and naming the field (dotted) and the allowed values when the resulting config is invalid.
    """
    if not overrides:
        return cfg
    values = _values(cfg)
    for override in overrides:
        section, name, value = _parse_override(override)
        if name is None:
            values[section] = value
        else:
            values[section][name] = value
    return _build(values)
