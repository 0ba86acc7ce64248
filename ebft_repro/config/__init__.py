"""Frozen configuration dataclasses, presets and dotted overrides.

Nothing here imports models. Every field has a default and a docstring line; ``__post_init__`` validates the
type of every field (from its annotation), rejects non-finite numbers, checks values and raises errors that
name the field as a dotted path (``optim.lr``) and the allowed values. Presets are functions (:func:`tiny`,
:func:`small`, :func:`paper`); overrides go through :func:`apply_overrides` (``"sampler.stride=4"``), which
applies all of them and then validates the whole config once. ``docs/runs.md`` lists every check.

One job per module:

- ``choices``: the allowed values of the choice fields (``TASKS``, ``METHODS``, ``PRESETS``, ...).
- ``_checks``: validation helpers: matching a value against its field's annotation string, dotted field
  names, and the ``_check_*`` functions every ``__post_init__`` calls.
- ``sections``: the section dataclasses, :class:`BaseModelConfig` ... :class:`TrainConfig`.
- ``experiment``: :class:`ExperimentConfig`, :func:`from_dict` and the overrides (:func:`apply_overrides`).
- ``presets``: :func:`tiny`, :func:`cpu`, :func:`small`, :func:`paper` and :func:`get_preset`.

Everything public is re-exported here (``from ebft_repro.config import ExperimentConfig, get_preset``).
"""

from __future__ import annotations

from ebft_repro.config.choices import (
    ARCHITECTURES,
    CONTROLS,
    DEVICES,
    DTYPES,
    KL_ESTIMATORS,
    METHODS,
    POOLINGS,
    PRESETS,
    SCHEDULES,
    TASKS,
    WHITENINGS,
)
from ebft_repro.config.experiment import ExperimentConfig, apply_overrides, from_dict
from ebft_repro.config.presets import cpu, get_preset, paper, small, tiny
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

__all__ = [
    "ARCHITECTURES",
    "CONTROLS",
    "DEVICES",
    "DTYPES",
    "KL_ESTIMATORS",
    "METHODS",
    "POOLINGS",
    "PRESETS",
    "SCHEDULES",
    "TASKS",
    "WHITENINGS",
    "BaseModelConfig",
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
    "FeaturizerConfig",
    "LossConfig",
    "OptimConfig",
    "RLVRConfig",
    "SamplerConfig",
    "TrainConfig",
    "apply_overrides",
    "cpu",
    "from_dict",
    "get_preset",
    "paper",
    "small",
    "tiny",
]
