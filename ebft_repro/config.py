"""Frozen configuration dataclasses, presets and dotted overrides.

Nothing here imports models. Every field has a default and a docstring line; ``__post_init__`` validates the
type of every field (from its annotation), rejects non-finite numbers, checks values and raises errors that
name the field as a dotted path (``optim.lr``) and the allowed values. Presets are functions (:func:`tiny`,
:func:`small`, :func:`paper`); overrides go through :func:`apply_overrides` (``"sampler.stride=4"``), which
applies all of them and then validates the whole config once. ``docs/runs.md`` lists every check.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

TASKS = ("qa_code", "code", "translation")
METHODS = ("ebft", "sft", "rlvr")
PRESETS = ("tiny", "cpu", "small", "paper")
WHITENINGS = ("none", "sample", "feature")
"""Reward whitening (spec 2.1): none, the authors' n x n operator on rollouts, or the paper's D x D map."""
POOLINGS = ("last_token", "mean", "concat_quartiles", "concat_all")
"""How a block's G token features become one vector (spec section 5): the last token; the mean; the tokens at
25/50/75% of the block concatenated (the authors' ``concat``); or all G tokens concatenated."""
SCHEDULES = ("constant", "cosine")
KL_ESTIMATORS = ("k1", "k2", "k3")
ARCHITECTURES = ("llama", "qwen2", "gpt2")
DTYPES = ("float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
_DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")

# ------------------------------------------------------------------------------------------- validation


def _path(obj: object, name: str) -> str:
    """The dotted name of a field, as users write it in ``--set`` (``sampler.stride``, ``seed``)."""
    if isinstance(obj, ExperimentConfig):
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


@dataclass(frozen=True)
class BaseModelConfig:
    """The small causal LM this package pretrains from scratch (no hub access needed)."""

    architecture: str = "llama"
    """Model family built from a config: one of ARCHITECTURES."""
    vocab_size: int = 2048
    """Byte-level BPE vocabulary size (tokenizer trained on the local corpora)."""
    hidden_size: int = 128
    n_layers: int = 4
    n_heads: int = 4
    intermediate_size: int = 384
    max_position_embeddings: int = 1024
    pretrain_steps: int = 1000
    """Optimizer steps of from-scratch LM pretraining."""
    pretrain_batch_size: int = 16
    pretrain_seq_len: int = 128
    pretrain_lr: float = 3e-3
    n_qa_docs: int = 4000
    """Generated Q&A coding problems (their `pretrain` split: at most ~2.5k) in the pretraining corpus."""
    n_code_files: int = 150
    """Standard-library files (their `pretrain` split) in the pretraining corpus."""
    n_translation_pairs: int = 4000
    """Bible verse Examples (their `pretrain` split, disjoint from train) in the pretraining corpus."""
    seed: int = 0

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_choice(self, "architecture", ARCHITECTURES)
        _check_positive(self, "vocab_size", "hidden_size", "n_layers", "n_heads", "intermediate_size")
        _check_positive(self, "max_position_embeddings", "pretrain_batch_size", "pretrain_seq_len")
        _check_positive(self, "pretrain_lr")
        counts = ("pretrain_steps", "n_qa_docs", "n_code_files", "n_translation_pairs", "seed")
        _check_positive(self, *counts, allow_zero=True)
        if self.hidden_size % self.n_heads:
            raise ValueError(
                f"base.hidden_size={self.hidden_size} must be divisible by base.n_heads={self.n_heads}"
            )
        if self.pretrain_seq_len > self.max_position_embeddings:
            raise ValueError(
                f"base.pretrain_seq_len={self.pretrain_seq_len} must be <= base.max_position_embeddings"
                f"={self.max_position_embeddings}"
            )


@dataclass(frozen=True)
class DataConfig:
    """Task data: split sizes, packing length and filters."""

    seq_len: int = 128
    """L: tokens per packed training chunk (spec section 6.1)."""
    n_train: int = 2000
    """Training examples (qa_code problems, translation verse pairs, or code files)."""
    n_val: int = 64
    n_test: int = 64
    max_source_chars: int | None = 120
    """Translation: keep verse pairs whose both sides are at most this long (None = all)."""
    max_chars_per_file: int | None = 4000
    """Unstructured code: truncate each source file to this many characters."""
    n_val_chunks: int = 16
    """Packed validation chunks used for validation CE."""
    source: str | None = None
    """Optional local file or hub dataset in the paper's format, replacing the embedded default."""
    split_seed: int = 0
    """Seed of the split generator, independent of the training seed."""

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_positive(self, "seq_len", "n_train", "n_val", "n_test", "n_val_chunks")
        _check_positive(self, "max_source_chars", "max_chars_per_file")  # None = no limit
        _check_positive(self, "split_seed", allow_zero=True)
        if self.source is not None and not self.source.strip():
            raise ValueError("data.source='' must be none or a file / dataset name")


@dataclass(frozen=True)
class SamplerConfig:
    """Strided block-parallel sampling (spec section 3)."""

    stride: int = 8
    """s: distance between consecutive block anchors."""
    context_len: int = 8
    """C: anchor of the first block; block k sees the whole prefix x[0 : C + k*s]."""
    gen_len: int = 8
    """G: tokens generated per block."""
    n_samples: int = 4
    """n: rollouts per (chunk, block) context; one RLOO group."""
    temperature: float = 0.6
    top_p: float = 1.0
    use_cache: bool = True
    """KV-cached sampling (this package's default) vs the authors' full recompute per step."""

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_positive(self, "stride", "context_len", "gen_len", "n_samples")
        _check_positive(self, "temperature")  # rollout log-probs divide by it; 0 would make them NaN
        _check_range(self, "top_p", "(0, 1]")


@dataclass(frozen=True)
class FeaturizerConfig:
    """The frozen feature network (spec section 5)."""

    layers: tuple[float | int, ...] = (0.25, 0.5, 0.75)
    """Depth fractions in (0, 1) or explicit hidden-state indices (0 = embeddings)."""
    pooling: str = "last_token"
    """How a block's token features become one vector: one of POOLINGS."""
    feature_model: str | None = None
    """None: a frozen copy of the initial policy; else a model name or path (e.g. the base in warm starts)."""

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_choice(self, "pooling", POOLINGS)
        if not self.layers:
            raise ValueError("featurizer.layers must name at least one layer")
        for layer in self.layers:
            bad_fraction = isinstance(layer, float) and not 0.0 < layer < 1.0
            if bad_fraction or (isinstance(layer, int) and layer < 0):
                raise ValueError(
                    f"featurizer.layers={self.layers!r}: {layer!r} must be a depth fraction in (0, 1)"
                    " or a hidden-state index >= 0"
                )
        if self.feature_model is not None and not self.feature_model.strip():
            raise ValueError("featurizer.feature_model='' must be none or a model name or path")


@dataclass(frozen=True)
class LossConfig:
    """EBFT reward and loss coefficients (spec sections 2 and 4)."""

    alignment_coef: float = 1.0
    """alpha in r_j = alpha * a_j - delta * d_j."""
    diversity_coef: float = 1.0
    """delta; the paper sweeps {0, 0.5, 1}."""
    ce_coef: float = 0.03
    """gamma: weight of the teacher-forced CE on ground-truth tokens; swept over {0, 0.03, 0.1}."""
    whitening: str = "sample"
    """one of WHITENINGS: the authors' n x n operator, the paper's D x D transform, or none (spec 2.1)."""
    rl_coef: float = 1.0
    kl_coef: float = 0.0
    """beta: KL(policy || frozen initial policy) on the generated tokens; 0 (off) in every released config."""
    kl_estimator: str = "k2"
    """one of KL_ESTIMATORS: k1 = log-ratio, k2 = half squared log-ratio, k3 = exp(-r) - 1 + r (Schulman)."""

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_choice(self, "whitening", WHITENINGS)
        _check_choice(self, "kl_estimator", KL_ESTIMATORS)
        _check_positive(
            self, "alignment_coef", "diversity_coef", "ce_coef", "rl_coef", "kl_coef", allow_zero=True
        )


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with warmup, shared by every method."""

    lr: float = 1e-4
    lr_grid: tuple[float, ...] = ()
    """Learning rates the runner sweeps for this method (picked on validation); empty = just ``lr``."""
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    warmup_frac: float = 0.03
    """Warmup steps = ceil(warmup_frac * n_steps), linear from 0."""
    schedule: str = "constant"
    """one of SCHEDULES: constant after warmup (EBFT, RLVR) or cosine to min_lr_ratio * lr (SFT)."""
    min_lr_ratio: float = 0.1

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_choice(self, "schedule", SCHEDULES)
        _check_positive(self, "lr", "grad_clip")
        _check_positive(self, "weight_decay", allow_zero=True)
        _check_range(self, "warmup_frac", "[0, 1]")
        _check_range(self, "min_lr_ratio", "[0, 1]")
        if any(lr <= 0 for lr in self.lr_grid):
            raise ValueError(f"optim.lr_grid={self.lr_grid} must hold positive learning rates")
        if not all(0.0 <= beta < 1.0 for beta in self.betas):
            raise ValueError(f"optim.betas={self.betas} must be two numbers in [0, 1)")


@dataclass(frozen=True)
class RLVRConfig:
    """The verifier-reward baseline (spec section 12): RLOO over n full completions per prompt."""

    prompts_per_step: int = 4
    max_new_tokens: int = 64
    temperature: float = 0.6
    top_p: float = 1.0

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_positive(self, "prompts_per_step", "max_new_tokens")
        _check_positive(self, "temperature")  # log-probs divide by it
        _check_range(self, "top_p", "(0, 1]")


@dataclass(frozen=True)
class EvalConfig:
    """What is measured every ``every_steps`` optimizer steps (and at step 0)."""

    every_steps: int = 10
    n_prompts: int = 32
    """Downstream test prompts (coding: pass@k; translation: BLEU/chrF)."""
    n_samples: int = 4
    """Completions per prompt for pass@1 / pass@n."""
    max_new_tokens: int = 64
    temperature: float = 0.6
    top_p: float = 0.95
    n_fm_chunks: int = 4
    """Validation chunks for the feature-matching (CFM) estimate."""
    split: str = "test"
    """Downstream split: ``test`` for reporting, ``validation`` for learning-rate selection."""

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_positive(self, "every_steps", "n_prompts", "n_samples", "max_new_tokens")
        _check_positive(self, "n_fm_chunks", "temperature", allow_zero=True)  # temperature 0 = greedy
        _check_range(self, "top_p", "(0, 1]")
        _check_choice(self, "split", ("test", "validation"))


@dataclass(frozen=True)
class TrainConfig:
    """Loop length, batching, device and checkpointing."""

    n_steps: int = 40
    """Optimizer steps; identical for every method of a comparison."""
    chunks_per_step: int = 4
    """Packed chunks per EBFT/SFT step (EBFT repeats each n times: one rollout batch, one step)."""
    micro_batch_size: int = 0
    """Sequences per forward/backward (gradient accumulation); 0 = the whole batch at once."""
    checkpoint_every_steps: int = 10
    device: str = "auto"
    dtype: str = "float32"
    """Parameter dtype of the policy."""
    autocast_bf16: bool = False
    """Run forwards under ``torch.autocast(bfloat16)`` (CUDA or CPU)."""
    deterministic: bool = False
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (memory saver for large models)."""
    lora_rank: int = 0
    """> 0: train LoRA adapters (peft) on every linear layer; the feature network is then the same base
    weights with the adapters disabled, so no second copy of the model is held."""
    lora_alpha: float = 16.0
    feature_dtype: str = "float32"
    """dtype of the frozen feature-network copy (``bfloat16`` halves its memory)."""
    save_model: bool = False
    """Save the final policy under ``<run_dir>/model`` (git-ignored)."""

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_positive(self, "n_steps", "chunks_per_step", "checkpoint_every_steps", "lora_alpha")
        _check_positive(self, "micro_batch_size", "lora_rank", allow_zero=True)
        _check_choice(self, "dtype", DTYPES)
        _check_choice(self, "feature_dtype", DTYPES)
        if not _DEVICE_PATTERN.fullmatch(self.device):
            raise ValueError(f"train.device={self.device!r} is not one of {DEVICES} (N: a GPU index)")


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


_SECTION_NAMES = {
    f.default_factory: f.name for f in fields(ExperimentConfig) if dataclasses.is_dataclass(f.default_factory)
}
"""Section class -> its field name in ExperimentConfig, for dotted error messages."""


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


# ----------------------------------------------------------------------------------------------- presets


def _method_defaults(cfg: ExperimentConfig, lr_grids: dict[str, tuple[float, ...]]) -> ExperimentConfig:
    """SFT uses a cosine schedule (spec section 8); EBFT and RLVR constant after warmup (spec 4.3)."""
    grid = lr_grids[cfg.method]
    schedule = "cosine" if cfg.method == "sft" else "constant"
    return replace(cfg, optim=replace(cfg.optim, lr=grid[0], lr_grid=grid, schedule=schedule))


def _task_defaults(cfg: ExperimentConfig) -> ExperimentConfig:
    """Translation uses s=2, C=4, G=4 and mean pooling; the code tasks s=C=G=8 and last-token (spec 7)."""
    if cfg.task == "translation":
        return replace(
            cfg,
            sampler=replace(cfg.sampler, stride=2, context_len=4, gen_len=4),
            featurizer=replace(cfg.featurizer, pooling="mean"),
        )
    return cfg


def tiny(task: str = "qa_code", method: str = "ebft", seed: int = 0) -> ExperimentConfig:
    """CPU smoke-test preset: a ~1.1M-parameter base model, L=128, 16 steps."""
    cfg = ExperimentConfig(
        method=method,
        task=task,
        seed=seed,
        preset="tiny",
        model="builtin:tiny",
        data=DataConfig(seq_len=128, n_train=1500, n_val=32, n_test=32, n_val_chunks=8),
        train=TrainConfig(n_steps=16, chunks_per_step=2, checkpoint_every_steps=8),
        eval=EvalConfig(every_steps=8, n_prompts=16, n_samples=4, max_new_tokens=40, n_fm_chunks=2),
        rlvr=RLVRConfig(prompts_per_step=2, max_new_tokens=40),
    )
    grids = {"ebft": (3e-4, 1e-3), "sft": (3e-4, 1e-3), "rlvr": (3e-4, 1e-3)}
    return _method_defaults(_task_defaults(cfg), grids)


def cpu(task: str = "qa_code", method: str = "ebft", seed: int = 0) -> ExperimentConfig:
    """Evidence on 2 CPU cores (docs/cpu.md): a ~4.5M-parameter base pretrained here, L=128, 3 seeds.

    Sized so that the base model is off the floor of every metric (Q&A pass@1 on 128 test problems x 4
    samples, BLEU on 128 test pairs) and the whole comparison (base model, 3 tasks x 3 methods, a
    3-point learning-rate grid on seed 0, seeds 1-2 at the pick) fits an afternoon on a laptop.
    """
    cfg = ExperimentConfig(
        method=method,
        task=task,
        seed=seed,
        preset="cpu",
        model="builtin:cpu",
        base=BaseModelConfig(
            vocab_size=4096,
            hidden_size=256,
            n_layers=4,
            n_heads=4,
            intermediate_size=768,
            pretrain_steps=1200,
            pretrain_batch_size=16,
            pretrain_seq_len=256,
            pretrain_lr=2e-3,
            n_qa_docs=3000,
            n_code_files=400,
            n_translation_pairs=12000,
        ),
        data=DataConfig(seq_len=128, n_train=2000, n_val=128, n_test=128, n_val_chunks=16),
        train=TrainConfig(n_steps=40, chunks_per_step=4, checkpoint_every_steps=10),
        eval=EvalConfig(every_steps=20, n_prompts=128, n_samples=4, max_new_tokens=64, n_fm_chunks=4),
        rlvr=RLVRConfig(prompts_per_step=4, max_new_tokens=64),
    )
    if task == "translation":  # BLEU/chrF are computed on one sample per prompt
        cfg = replace(cfg, eval=replace(cfg.eval, n_samples=1))
    grid = (1e-4, 3e-4, 1e-3)
    return _method_defaults(_task_defaults(cfg), {"ebft": grid, "sft": grid, "rlvr": grid})


def small(task: str = "qa_code", method: str = "ebft", seed: int = 0) -> ExperimentConfig:
    """Accelerator preset: a ~30M-parameter base model, L=512, 3 seeds in the runner."""
    cfg = ExperimentConfig(
        method=method,
        task=task,
        seed=seed,
        preset="small",
        model="builtin:small",
        base=BaseModelConfig(
            vocab_size=8192,
            hidden_size=512,
            n_layers=8,
            n_heads=8,
            intermediate_size=1536,
            pretrain_steps=3000,
            pretrain_batch_size=64,
            pretrain_seq_len=512,
            pretrain_lr=1e-3,
            n_qa_docs=6000,
            n_code_files=1500,
            n_translation_pairs=20000,
        ),
        data=DataConfig(
            seq_len=512, n_train=5000, n_val=128, n_test=128, n_val_chunks=32, max_source_chars=200
        ),
        train=TrainConfig(n_steps=100, chunks_per_step=16, checkpoint_every_steps=25, autocast_bf16=True),
        eval=EvalConfig(every_steps=25, n_prompts=128, n_samples=4, max_new_tokens=128, n_fm_chunks=8),
        rlvr=RLVRConfig(prompts_per_step=16, max_new_tokens=128),
    )
    grids = {"ebft": (1e-5, 3e-5), "sft": (1e-5, 3e-5), "rlvr": (1e-5, 3e-5)}
    return _method_defaults(_task_defaults(cfg), grids)


def paper(task: str = "qa_code", method: str = "ebft", seed: int = 43) -> ExperimentConfig:
    """The authors' hyper-parameters (spec section 7), for users with the real models and data.

    Q&A and unstructured coding: Qwen2.5-1.5B; translation: Llama-3.2-1B. L=1024, n=4, T=0.6, lr 1e-6
    constant with 3% warmup, rollout batch 16 chunks (64 sequences), micro-batch 8, whitening on,
    delta=1, gamma=0.03 (the sweep covers {0, 0.03, 0.1} x {0, 0.5, 1} x whitening on/off).
    """
    model = "meta-llama/Llama-3.2-1B" if task == "translation" else "Qwen/Qwen2.5-1.5B"
    cfg = ExperimentConfig(
        method=method,
        task=task,
        seed=seed,
        preset="paper",
        model=model,
        data=DataConfig(seq_len=1024, n_train=100_000, n_val=128, n_test=128, n_val_chunks=128),
        sampler=SamplerConfig(stride=8, context_len=8, gen_len=8, n_samples=4, temperature=0.6, top_p=1.0),
        loss=LossConfig(alignment_coef=1.0, diversity_coef=1.0, ce_coef=0.03, whitening="sample"),
        train=TrainConfig(
            n_steps=1000,
            chunks_per_step=16,
            micro_batch_size=8,
            checkpoint_every_steps=100,
            autocast_bf16=True,
        ),
        eval=EvalConfig(every_steps=50, n_prompts=128, n_samples=4, max_new_tokens=512, n_fm_chunks=128),
        rlvr=RLVRConfig(prompts_per_step=16, max_new_tokens=512),
    )
    grids = {"ebft": (1e-6,), "sft": (5e-6,), "rlvr": (1e-6,)}
    return _method_defaults(_task_defaults(cfg), grids)


_PRESET_FUNCS = {"tiny": tiny, "cpu": cpu, "small": small, "paper": paper}


def get_preset(preset: str, task: str, method: str, seed: int | None = None) -> ExperimentConfig:
    """Look up a preset by name, with errors naming the allowed values."""
    if preset not in _PRESET_FUNCS:
        raise ValueError(f"preset={preset!r} is not one of {PRESETS}")
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not one of {TASKS}")
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}")
    cfg = _PRESET_FUNCS[preset](task, method)
    return replace(cfg, seed=seed) if seed is not None else cfg
