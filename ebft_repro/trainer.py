"""One explicit training loop for EBFT (also with gamma = 0), SFT and RLVR: ``train(cfg) -> RunResult``.

Each method is a short ``*_step`` that turns one batch into a loss; the loop owns the optimizer (AdamW,
betas 0.9/0.95, clip 1.0), the schedule, evaluation, checkpoints and the files of the run. Every random draw
is re-seeded from (seed, step), and the batch of step i is a pure function of (seed, i), so a run resumed
from a checkpoint ends with the same metrics as an uninterrupted one.

Loading a run's models and data is :mod:`ebft_repro.context`; evaluation during training, the shared
step-0 evaluation and the run's summary are :mod:`ebft_repro.run_eval`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch

from ebft_repro import distributed
from ebft_repro.batching import Context
from ebft_repro.config import ExperimentConfig
from ebft_repro.context import build_context
from ebft_repro.ebft import ebft_step
from ebft_repro.run_eval import base_model_identity, evaluate, evaluate_step0, step0_key, summarize
from ebft_repro.run_state import (
    CHECKPOINT_NAME,
    FORCE_HINT,
    LOCK_NAME,
    METRICS_NAME,
    SUMMARY_NAME,
    StaleBaseError,
    check_resumable,
    load_checkpoint,
    load_finished,
    plain,
    save_checkpoint,
)
from ebft_repro.steps import rlvr_step, sft_step
from ebft_repro.utils import (
    ensure_writable,
    environment_info,
    file_lock,
    progress,
    seed_everything,
    write_json,
    write_text_atomic,
)

log = logging.getLogger(__name__)

STEPS = {"ebft": ebft_step, "ebft_fm": ebft_step, "sft": sft_step, "rlvr": rlvr_step}
"""One optimizer step's loss and backward for each method (``ebft_fm``: EBFT's step, under gamma = 0)."""


@dataclass
class RunResult:
    run_dir: Path | None
    summary: dict
    metrics: list[dict]
    status: str = "computed"
    """``computed`` (from step 0), ``resumed`` (from a checkpoint), ``reused`` (a finished run's files, no
    training) or ``stopped`` (``stop_after`` reached)."""


def lr_lambda(cfg: ExperimentConfig):
    """Linear warmup over ceil(warmup_frac * n_steps) steps, then constant or cosine to min_lr_ratio."""
    n_steps, optim = cfg.train.n_steps, cfg.optim
    warmup = math.ceil(optim.warmup_frac * n_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if optim.schedule == "constant":
            return 1.0
        progress_frac = (step - warmup) / max(1, n_steps - warmup)
        return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress_frac))

    return factor


class NonFiniteError(FloatingPointError):
    """A training step or evaluation produced nan or inf; raised before any summary is written."""


def check_finite(values: dict, *, run_name: str, step: int, what: str) -> None:
    """Raise :class:`NonFiniteError` naming the step and the metrics when any value is nan or inf."""
    bad = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not math.isfinite(v)}
    if bad:
        listed = ", ".join(f"{key}={value}" for key, value in bad.items())
        raise NonFiniteError(
            f"{run_name}: {what} at step {step} is not finite ({listed}); the run stopped without applying it"
            " and wrote no summary (its last checkpoint, if any, is kept): lower optim.lr or check the data,"
            " then rerun with --force"
        )


@dataclass
class _State:
    """The mutable state of a run between steps (what a checkpoint restores)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    rows: list[dict]
    cost: dict
    start_step: int = 0


def _checkpoint_state(ctx: Context, state: _State, next_step: int) -> dict:
    return {
        "config": plain(ctx.cfg.to_dict()),
        "base_model": base_model_identity(ctx.cfg),
        "policy": ctx.policy.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "next_step": next_step,
        "metrics": plain(state.rows),
        "cost": dict(state.cost),
    }


def _write_metrics(run_dir: Path, rows: list[dict]) -> None:
    write_text_atomic(run_dir / METRICS_NAME, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def _open_run_dir(
    cfg: ExperimentConfig, run_dir: Path, *, force: bool, rank: int, world_size: int
) -> dict | None:
    """Reject a checkpoint written under another config, then write ``config.json`` and
    ``environment.json``; returns the checkpoint to resume from (None: start at step 0)."""
    checkpoint_path, main = run_dir / CHECKPOINT_NAME, rank == 0
    if main and force:
        for name in (SUMMARY_NAME, CHECKPOINT_NAME, METRICS_NAME):
            (run_dir / name).unlink(missing_ok=True)
    distributed.barrier()
    checkpoint = None
    if checkpoint_path.exists():
        checkpoint = load_checkpoint(checkpoint_path)
        check_resumable(checkpoint_path, checkpoint, cfg, base_model_identity(cfg), lr_lambda)
        log.info("%s: resuming from %s at step %d", cfg.run_name, checkpoint_path, checkpoint["next_step"])
    if main:
        write_json(run_dir / "config.json", cfg.to_dict())
        write_json(run_dir / "environment.json", environment_info() | {"world_size": world_size})
    distributed.barrier()
    return checkpoint


def _new_state(ctx: Context, params: list, checkpoint: dict | None) -> _State:
    cfg = ctx.cfg
    optimizer = torch.optim.AdamW(
        params, lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    state = _State(optimizer, scheduler, rows=[], cost={"train_s": 0.0, "eval_s": 0.0, "tokens": 0.0})
    if checkpoint is not None:
        ctx.policy.load_state_dict(checkpoint["policy"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        state.start_step, state.rows, state.cost = (
            checkpoint["next_step"],
            checkpoint["metrics"],
            checkpoint["cost"],
        )
    return state


def _train_step(ctx: Context, state: _State, params: list, step: int) -> dict:
    """One optimizer step; refuses to apply a non-finite loss or gradient."""
    cfg = ctx.cfg
    started = time.time()
    state.optimizer.zero_grad(set_to_none=True)
    metrics = STEPS[cfg.method](ctx, step)
    distributed.all_reduce_gradients(params)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip))
    tokens = distributed.all_reduce_sum(metrics.pop("tokens", 0.0), ctx.device)
    metrics = distributed.average_metrics(metrics, ctx.device)
    check_finite(
        metrics | {"grad_norm": grad_norm}, run_name=cfg.run_name, step=step, what="the training step"
    )
    state.optimizer.step()
    state.scheduler.step()
    state.cost["train_s"] += time.time() - started
    state.cost["tokens"] += tokens
    return {
        "step": step,
        "kind": "train",
        "lr": state.scheduler.get_last_lr()[0],
        "grad_norm": grad_norm,
    } | metrics


def _run_loop(
    ctx: Context,
    state: _State,
    params: list,
    run_dir: Path | None,
    stop_after: int | None,
    *,
    step0_cache: Path | None = None,
    reuse_step0: bool = True,
) -> bool:
    """Steps ``start_step .. n_steps`` with evaluations and checkpoints; False when stopped early."""
    cfg, main = ctx.cfg, ctx.rank == 0
    bar = progress(
        range(state.start_step, cfg.train.n_steps + 1),
        desc=cfg.run_name,
        initial=state.start_step,
        total=cfg.train.n_steps + 1,
    )
    for step in bar:
        if step % cfg.eval.every_steps == 0 or step == cfg.train.n_steps:
            started, prompts = time.time(), {}
            if main and step == 0:  # only rank 0 evaluates; the others wait
                cache = (
                    step0_cache / f"{cfg.task}-seed{cfg.seed}-{step0_key(cfg)}.json" if step0_cache else None
                )
                metrics, reused = evaluate_step0(ctx, cache, reuse=reuse_step0, records=prompts)
                state.cost["step0_eval_reused"] = reused
            elif main:
                metrics = evaluate(ctx, step, prompts)
            if main:
                check_finite(metrics, run_name=cfg.run_name, step=step, what="the evaluation")
                # per-prompt outcomes first: a finished run's last row is its final evaluation
                state.rows.append({"step": step, "kind": "prompts", **prompts})
                state.rows.append({"step": step, "kind": "eval", **metrics})
            distributed.barrier()
            state.cost["eval_s"] += time.time() - started
        if step == cfg.train.n_steps:
            return True
        state.rows.append(_train_step(ctx, state, params, step))
        bar.set_postfix(loss=f"{state.rows[-1].get('loss', float('nan')):.3f}")
        done = step + 1
        if run_dir is not None and done % cfg.train.checkpoint_every_steps == 0:
            if main:
                save_checkpoint(run_dir / CHECKPOINT_NAME, _checkpoint_state(ctx, state, done))
                _write_metrics(run_dir, state.rows)
            distributed.barrier()
        if stop_after is not None and done >= stop_after:
            return False
    return True


def _finish(ctx: Context, state: _State, run_dir: Path | None) -> dict:
    """The summary; with a run folder, the final files (the summary last) and no checkpoint."""
    summary = summarize(ctx.cfg, state.rows, state.cost)
    if run_dir is not None and ctx.rank == 0:
        if ctx.cfg.train.save_model:
            ctx.policy.save_pretrained(run_dir / "model")
            ctx.tokenizer.save_pretrained(run_dir / "model")
        _write_metrics(run_dir, state.rows)
        write_json(run_dir / SUMMARY_NAME, summary)
        (run_dir / CHECKPOINT_NAME).unlink(missing_ok=True)
    distributed.barrier()
    return summary


def train(
    cfg: ExperimentConfig,
    *,
    run_dir: Path | None = None,
    force: bool = False,
    stop_after: int | None = None,
    step0_cache: Path | None = None,
) -> RunResult:
    """Run (or resume, or reuse) one experiment; write its files to ``run_dir`` when given.

    One process at a time works on a run folder (a lock; a second one waits, then reuses the result). A
    finished run is reused only under an identical config and base model, and a checkpoint is resumed only
    under the same config up to :data:`ebft_repro.run_state.RESUMABLE_FIELDS` (``docs/runs.md``).

    Args:
        run_dir: where ``config.json``, ``metrics.jsonl``, ``summary.json``, ``environment.json`` and the
            checkpoint go.
        force: discard the run folder's summary, metrics and checkpoint and recompute.
        stop_after: stop (as if killed) after this many optimizer steps; used to test resuming.
        step0_cache: folder of step-0 evaluations shared by the runs of a comparison (:func:`evaluate_step0`;
            the runner passes ``<out>/runs/_step0``); None computes it.

    Raises:
        RunStateError: the folder holds a run of another config, or a corrupt or unsafe file.
        NonFiniteError: a loss, gradient norm or evaluation metric became nan or inf (names the step).
    """
    rank, world_size = distributed.init_from_env()
    with ExitStack() as stack:
        checkpoint = None
        if run_dir is not None:
            run_dir = Path(run_dir)
            if rank == 0:
                ensure_writable(run_dir)
                stack.enter_context(file_lock(run_dir / LOCK_NAME, what=f"the run in {run_dir}"))
            distributed.barrier()
            stale = False
            try:
                finished = None if force else load_finished(run_dir, cfg, base_model_identity(cfg))
            except StaleBaseError as err:  # nothing the user chose differs: recompute, and say why
                reason = str(err).removesuffix(f": {FORCE_HINT}")
                log.warning("%s. Recomputing it from this base model.", reason)
                finished, stale = None, True
            if finished is not None:
                return RunResult(run_dir, *finished, status="reused")
            checkpoint = _open_run_dir(cfg, run_dir, force=force or stale, rank=rank, world_size=world_size)
        seed_everything(cfg.seed, deterministic=cfg.train.deterministic)
        ctx = build_context(cfg, rank=rank, world_size=world_size)
        params = [p for p in ctx.policy.parameters() if p.requires_grad]
        state = _new_state(ctx, params, checkpoint)
        status = "resumed" if checkpoint is not None else "computed"
        loop_options = dict(step0_cache=step0_cache, reuse_step0=not force)
        if not _run_loop(ctx, state, params, run_dir, stop_after, **loop_options):
            return RunResult(run_dir, {}, state.rows, status="stopped")
        return RunResult(run_dir, _finish(ctx, state, run_dir), state.rows, status=status)
