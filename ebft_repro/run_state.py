"""What a run folder holds, and when it may be resumed or reused (see ``docs/runs.md``).

A run folder is trusted only if it describes what will be reported: a checkpoint is resumed only under the
config it was written with (up to the fields of :data:`RESUMABLE_FIELDS`), a finished run is reused only
under an identical config, and a file that cannot be read back is an error that names it and says how to
recover, never a silent restart. Checkpoints hold tensors and plain containers only and are loaded with
``torch.load(weights_only=True)``, so a planted pickle cannot run code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ebft_repro.config import ExperimentConfig, from_dict
from ebft_repro.utils import CorruptFileError, atomic_path, read_json, read_jsonl

CHECKPOINT_FORMAT = 2
"""Bumped when the checkpoint layout changes; older checkpoints are refused with a clear error."""
CHECKPOINT_NAME, SUMMARY_NAME, METRICS_NAME = "checkpoint.pt", "summary.json", "metrics.jsonl"
LOCK_NAME = "run.lock"
"""One ``flock`` per run folder: a second process on the same run waits, then reuses the summary."""
FORCE_HINT = "pass --force (CLI) or force=True (API) to discard it and start over, or choose another --out"

RESUMABLE_FIELDS = {
    "train.n_steps": "a longer or shorter run, if it still covers the steps done and their learning rates"
    " are unchanged (constant schedule after the same number of warmup steps)",
    "train.checkpoint_every_steps": "only when checkpoints are written; no metric depends on it",
    "train.save_model": "only whether the final policy is saved; no metric depends on it",
}
"""The only config fields that may differ between a checkpoint and the run that resumes it, and why."""

_STATE_TYPES = {
    "format": int,
    "config": dict,
    "base_model": str,
    "policy": dict,
    "optimizer": dict,
    "scheduler": dict,
    "next_step": int,
    "metrics": list,
    "cost": dict,
}


class RunStateError(ValueError):
    """A run folder that cannot be resumed or reused as asked; the message says how to recover."""


class StaleBaseError(RunStateError):
    """A finished run of the same config from the same base-model recipe built into other weights (e.g. on
    another CPU): nothing the user chose differs, so the trainer recomputes it rather than stopping."""


def same_recipe(recorded: str, current: str) -> bool:
    """Whether two base-model identities (``run_eval.base_model_identity``) name one recipe with different
    weights: the same folder before ``@``, different digests after it (or none recorded)."""
    return recorded != current and "@" in current and recorded.split("@")[0] == current.split("@")[0]


def plain(obj: Any) -> Any:
    """JSON-normal form (tuples -> lists, numpy scalars -> floats), as stored in summaries and checkpoints."""
    return json.loads(json.dumps(obj, default=str))


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(obj, dict):
        return {prefix: obj}
    out = {}
    for key, value in obj.items():
        out |= _flatten(value, f"{prefix}.{key}" if prefix else key)
    return out


def _with_defaults(stored: dict) -> dict:
    """A stored config with fields added to the package since it was written set to their defaults."""
    try:
        return plain(from_dict(stored).to_dict())
    except (ValueError, TypeError):
        return stored  # fields since removed or values now refused: compare as written


def config_changes(stored: dict, cfg: ExperimentConfig) -> dict[str, tuple[Any, Any]]:
    """Dotted fields whose stored value differs from ``cfg``: ``{"optim.lr": (0.0003, 0.01)}``."""
    old, new = _flatten(_with_defaults(stored)), _flatten(plain(cfg.to_dict()))
    missing = "<absent>"
    return {
        key: (old.get(key, missing), new.get(key, missing))
        for key in sorted(old.keys() | new.keys())
        if old.get(key, missing) != new.get(key, missing)
    }


def _describe(changes: dict[str, tuple[Any, Any]]) -> str:
    described = ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())
    old, new = changes.get("base model", ("", ""))
    if same_recipe(str(old), str(new)):
        described += (
            " (the same base-model recipe built into different weights: it was rebuilt, e.g. on another"
            " CPU, where pretraining rounds differently)"
        )
    return described


def blocking_changes(
    stored: dict, cfg: ExperimentConfig, next_step: int, lr_factor: Callable[[ExperimentConfig], Callable]
) -> dict[str, tuple[Any, Any]]:
    """The config changes that forbid resuming a checkpoint taken before step ``next_step``.

    Args:
        lr_factor: maps a config to its learning-rate multiplier per step (the trainer's schedule).
    """
    changes = config_changes(stored, cfg)
    blocking = {key: change for key, change in changes.items() if key not in RESUMABLE_FIELDS}
    if "train.n_steps" in changes:
        old_cfg = replace(cfg, train=replace(cfg.train, n_steps=changes["train.n_steps"][0]))
        old_factor, new_factor = lr_factor(old_cfg), lr_factor(cfg)
        same_lrs = all(math.isclose(old_factor(s), new_factor(s)) for s in range(next_step))
        if cfg.train.n_steps < next_step or not same_lrs:
            blocking["train.n_steps"] = changes["train.n_steps"]
    return blocking


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically; ``state`` holds tensors, state dicts and plain values only."""
    missing = set(_STATE_TYPES) - set(state) - {"format"}
    if missing:
        raise ValueError(f"checkpoint state lacks {sorted(missing)}")
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (on the CPU) and check its layout.

    Raises:
        RunStateError: naming the file when it is truncated, garbage, holds anything but tensors and plain
            containers (a pickle that would run code), or was written by another checkpoint format.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the file cannot be trusted
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RunStateError(
            f"{path} is corrupt or not a safe checkpoint ({reason[:200]}); it was not loaded: {FORCE_HINT}"
        ) from None
    if not isinstance(state, dict):
        state = {}
    bad = [key for key, kind in _STATE_TYPES.items() if not isinstance(state.get(key), kind)]
    if bad or state.get("format") != CHECKPOINT_FORMAT:
        what = f"missing or malformed {bad}" if bad else f"format {state.get('format')!r}"
        raise RunStateError(
            f"{path} is not a checkpoint this version can resume ({what}; expected format"
            f" {CHECKPOINT_FORMAT}); it was not loaded: {FORCE_HINT}"
        )
    return state


def check_resumable(
    path: Path,
    state: dict,
    cfg: ExperimentConfig,
    base_model: str,
    lr_factor: Callable[[ExperimentConfig], Callable],
) -> None:
    """Raise unless ``state`` (a loaded checkpoint) may be resumed as ``cfg`` from ``base_model``.

    Raises:
        RunStateError: naming every differing field (dotted, old -> new) and how to discard the checkpoint.
    """
    blocking = blocking_changes(state["config"], cfg, state["next_step"], lr_factor)
    if state["base_model"] != base_model:
        blocking["base model"] = (state["base_model"], base_model)
    if blocking:
        allowed = ", ".join(RESUMABLE_FIELDS)
        raise RunStateError(
            f"{path} (step {state['next_step']}) was written under a different config: {_describe(blocking)}."
            f" Resuming would report a run that never happened (only {allowed} may change, see docs/runs.md):"
            f" {FORCE_HINT}"
        )


def load_finished(run_dir: Path, cfg: ExperimentConfig, base_model: str) -> tuple[dict, list[dict]] | None:
    """The summary and metrics of a finished run of ``cfg`` in ``run_dir``, or None if it has none.

    Raises:
        RunStateError: if the finished run used another config or base model, or its files are corrupt or
            incomplete (each message names the file and the recovery); :class:`StaleBaseError` when the
            only difference is the base model's weights under the same recipe.
    """
    summary_path, metrics_path = run_dir / SUMMARY_NAME, run_dir / METRICS_NAME
    if not summary_path.exists():
        return None
    recover = f"remove {run_dir} or pass --force (CLI) / force=True (API) to recompute the run"
    try:
        summary = read_json(summary_path)
        if not isinstance(summary, dict) or not isinstance(summary.get("config"), dict):
            raise CorruptFileError(f"{summary_path} is corrupt (no 'config' entry)")
        rows = read_jsonl(metrics_path)
    except CorruptFileError as err:
        raise RunStateError(f"{err}: {recover}") from None
    changes = config_changes(summary["config"], cfg)
    recorded = summary.get("base_model", "not recorded (the run predates base-model tracking)")
    if recorded != base_model:  # a summary that does not say which base it started from is not reused
        changes["base model"] = (recorded, base_model)
    if changes:
        only_weights = list(changes) == ["base model"] and same_recipe(recorded, base_model)
        raise (StaleBaseError if only_weights else RunStateError)(
            f"{run_dir} holds a finished run with a different config: {_describe(changes)}: {FORCE_HINT}"
        )
    last = rows[-1] if rows else {}
    if (last.get("kind"), last.get("step")) != ("eval", cfg.train.n_steps):
        raise RunStateError(
            f"{metrics_path} is incomplete (its last row is not the final evaluation at step"
            f" {cfg.train.n_steps}): {recover}"
        )
    return summary, rows
