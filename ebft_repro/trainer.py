"""One explicit training loop for EBFT, SFT and RLVR: ``train(cfg) -> RunResult``.

Each method is a short ``*_step`` that turns one batch into a loss; the loop owns the optimizer (AdamW,
betas 0.9/0.95, clip 1.0), the schedule, evaluation, checkpoints and the files of the run. Every random draw
is re-seeded from (seed, step), and the batch of step i is a pure function of (seed, i), so a run resumed
from a checkpoint ends with the same metrics as an uninterrupted one.
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
from ebft_repro.batching import Context, autocast
from ebft_repro.config import ExperimentConfig
from ebft_repro.data import load_eval_examples, load_task, packed_split
from ebft_repro.ebft import ebft_step
from ebft_repro.evaluation.downstream import downstream_eval, feature_matching_eval, validation_ce
from ebft_repro.featurizer import FeatureNetwork
from ebft_repro.models import load_causal_lm, load_policy_and_tokenizer, resolve_model_path
from ebft_repro.run_state import (
    CHECKPOINT_NAME,
    LOCK_NAME,
    METRICS_NAME,
    SUMMARY_NAME,
    check_resumable,
    load_checkpoint,
    load_finished,
    plain,
    save_checkpoint,
)
from ebft_repro.steps import rlvr_step, sft_step
from ebft_repro.utils import (
    CorruptFileError,
    config_hash,
    ensure_writable,
    environment_info,
    file_lock,
    progress,
    read_json,
    resolve_device,
    seed_everything,
    step_generator,
    write_json,
    write_text_atomic,
)

log = logging.getLogger(__name__)

STEPS = {"ebft": ebft_step, "sft": sft_step, "rlvr": rlvr_step}
"""One optimizer step's loss and backward for each method."""
STREAM_EVAL, STREAM_FM = "eval", "fm"
STEP0_DIR = "_step0"
"""The runner's folder, next to its run folders, of cached step-0 evaluations (the base model)."""


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


def fit_prompts(examples: list, tokenizer, max_tokens: int, *, what: str) -> list:
    """Drop prompts longer than ``max_tokens`` tokens, logging each skipped record by uid (never silent)."""
    kept, skipped = [], []
    for example in examples:
        n_tokens = len(tokenizer(example.prompt)["input_ids"])
        (kept if n_tokens <= max_tokens else skipped).append(example)
    if skipped:
        uids = ", ".join(ex.uid or "?" for ex in skipped[:5])
        log.warning(
            "%s: skipped %d prompts longer than %d tokens (%s...)", what, len(skipped), max_tokens, uids
        )
    return kept


def build_models(cfg: ExperimentConfig, device: torch.device):
    """The policy (optionally with LoRA adapters and gradient checkpointing), its tokenizer and the frozen
    feature network: a deep copy of the initial policy, a separately named model, or, with LoRA, the same
    weights with the adapters disabled (no second copy)."""
    policy, tokenizer = load_policy_and_tokenizer(cfg, device=device)
    layers, pooling = cfg.featurizer.layers, cfg.featurizer.pooling
    feature_dtype = getattr(torch, cfg.train.feature_dtype)
    if cfg.train.lora_rank > 0:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=cfg.train.lora_rank,
            lora_alpha=cfg.train.lora_alpha,
            lora_dropout=0.0,
            target_modules="all-linear",
        )
        policy = get_peft_model(policy, lora)
    if cfg.featurizer.feature_model is not None:
        path = resolve_model_path(cfg.featurizer.feature_model, cfg)
        base = load_causal_lm(path, dtype=cfg.train.feature_dtype, device=device)
        feature_net = FeatureNetwork(base, layers, pooling, copy_model=False)
    elif cfg.train.lora_rank > 0:
        feature_net = FeatureNetwork(policy, layers, pooling, copy_model=False, adapters_off=True)
    else:
        feature_net = FeatureNetwork(policy, layers, pooling).to(feature_dtype)
    if cfg.train.gradient_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return policy, tokenizer, feature_net


def build_context(cfg: ExperimentConfig, *, rank: int = 0, world_size: int = 1) -> Context:
    """Load the models and the task data for a run."""
    device = resolve_device(cfg.train.device)
    if device.type == "cuda" and world_size > 1:
        device = torch.device("cuda", torch.cuda.current_device())
    policy, tokenizer, feature_net = build_models(cfg, device)
    train_packed = packed_split(cfg.task, cfg.data, "train", tokenizer)
    task_data = load_task(cfg.task, cfg.data)
    limit = cfg.data.seq_len
    rl_examples = fit_prompts(
        load_task(task_data.eval_task, cfg.data).train, tokenizer, limit, what="rlvr prompts"
    )
    if cfg.method == "rlvr" and not rl_examples:
        raise ValueError(f"no RLVR training prompt fits in data.seq_len={limit} tokens")
    eval_examples = load_eval_examples(cfg.task, cfg.data, cfg.eval.split)[: cfg.eval.n_prompts]
    eval_examples = fit_prompts(eval_examples, tokenizer, limit, what=f"{cfg.eval.split} prompts")
    val_examples = load_eval_examples(cfg.task, cfg.data, "validation")[: cfg.eval.n_prompts]
    return Context(
        cfg=cfg,
        policy=policy,
        tokenizer=tokenizer,
        feature_net=feature_net,
        train_chunks=train_packed.input_ids,
        train_target_mask=train_packed.target_mask,
        val_chunks=packed_split(cfg.task, cfg.data, "validation", tokenizer),
        rl_examples=rl_examples,
        eval_examples=eval_examples,
        val_examples=fit_prompts(val_examples, tokenizer, limit, what="validation prompts"),
        device=device,
        rank=rank,
        world_size=world_size,
    )


def evaluate(ctx: Context, step: int) -> dict[str, float]:
    """Validation CE, feature matching and downstream accuracy at ``step``."""
    cfg = ctx.cfg
    with autocast(ctx):
        metrics = validation_ce(ctx.policy, ctx.val_chunks)
        if cfg.eval.n_fm_chunks > 0:
            metrics |= feature_matching_eval(
                ctx.policy,
                ctx.feature_net,
                ctx.val_chunks.input_ids[: cfg.eval.n_fm_chunks],
                sampler_cfg=cfg.sampler,
                loss_cfg=cfg.loss,
                generator=step_generator(cfg.seed, step, STREAM_FM),
            )
        metrics |= downstream_eval(
            ctx.policy,
            ctx.tokenizer,
            ctx.eval_examples,
            cfg.eval,
            generator=step_generator(cfg.seed, step, STREAM_EVAL),
        )
        if step == cfg.train.n_steps and ctx.val_examples:  # for learning-rate selection, never for reporting
            val = downstream_eval(
                ctx.policy,
                ctx.tokenizer,
                ctx.val_examples,
                cfg.eval,
                generator=step_generator(cfg.seed, step, STREAM_EVAL),
            )
            metrics |= {f"val_{k}": v for k, v in val.items()}
    return metrics


def step0_key(cfg: ExperimentConfig) -> str:
    """Everything the step-0 evaluation depends on: the base model, task, data, sampler, features, loss,
    evaluation settings and seed, but not the method, optimizer or run length (no update has happened)."""
    values = cfg.to_dict()
    for name in ("method", "optim", "rlvr"):
        values.pop(name)
    values["train"] = {
        k: values["train"][k] for k in ("dtype", "autocast_bf16", "lora_rank", "feature_dtype")
    }
    values["eval"].pop("every_steps")
    values["base_model"] = base_model_identity(cfg)
    return config_hash(values)


def evaluate_step0(ctx: Context, cache: Path | None, *, reuse: bool) -> tuple[dict[str, float], bool]:
    """The step-0 evaluation, shared by every run that starts from the same base under the same evaluation.

    Every method and learning rate of a (task, seed) starts from the same weights and evaluates with the
    same random streams, so their step-0 metrics are identical; the first run computes them into ``cache``
    and the others read them. Returns the metrics and whether they were reused.
    """
    if cache is not None and reuse and cache.exists():
        try:
            metrics = read_json(cache)
        except CorruptFileError as err:
            log.warning("%s; recomputing the step-0 evaluation", err)
        else:
            log.info("%s: step-0 evaluation reused from %s", ctx.cfg.run_name, cache)
            return metrics, True
    metrics = evaluate(ctx, 0)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_json(cache, metrics)
    return metrics, False


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
            started = time.time()
            if main and step == 0:  # only rank 0 evaluates; the others wait
                cache = (
                    step0_cache / f"{cfg.task}-seed{cfg.seed}-{step0_key(cfg)}.json" if step0_cache else None
                )
                metrics, reused = evaluate_step0(ctx, cache, reuse=reuse_step0)
                state.cost["step0_eval_reused"] = reused
            elif main:
                metrics = evaluate(ctx, step)
            if main:
                check_finite(metrics, run_name=cfg.run_name, step=step, what="the evaluation")
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
            finished = None if force else load_finished(run_dir, cfg, base_model_identity(cfg))
            if finished is not None:
                return RunResult(run_dir, *finished, status="reused")
            checkpoint = _open_run_dir(cfg, run_dir, force=force, rank=rank, world_size=world_size)
        seed_everything(cfg.seed, deterministic=cfg.train.deterministic)
        ctx = build_context(cfg, rank=rank, world_size=world_size)
        params = [p for p in ctx.policy.parameters() if p.requires_grad]
        state = _new_state(ctx, params, checkpoint)
        status = "resumed" if checkpoint is not None else "computed"
        loop_options = dict(step0_cache=step0_cache, reuse_step0=not force)
        if not _run_loop(ctx, state, params, run_dir, stop_after, **loop_options):
            return RunResult(run_dir, {}, state.rows, status="stopped")
        return RunResult(run_dir, _finish(ctx, state, run_dir), state.rows, status=status)


def base_model_identity(cfg: ExperimentConfig) -> str:
    """Which base checkpoint a run starts from: the built-in cache folder's name, else the model name."""
    if cfg.model.startswith("builtin:"):
        from ebft_repro.pretrain import base_model_dir

        return base_model_dir(cfg.base, cfg.data, cfg.model.split(":", 1)[1]).name
    return cfg.model


def summarize(cfg: ExperimentConfig, rows: list[dict], cost: dict) -> dict:
    """Final eval metrics, cost, and the config, as one JSON-able dict."""
    evals = [row for row in rows if row["kind"] == "eval"]
    final = {k: v for k, v in evals[-1].items() if k not in ("step", "kind")} if evals else {}
    initial = {k: v for k, v in evals[0].items() if k not in ("step", "kind")} if evals else {}
    return {
        "run_name": cfg.run_name,
        "task": cfg.task,
        "method": cfg.method,
        "seed": cfg.seed,
        "preset": cfg.preset,
        "lr": cfg.optim.lr,
        "final": final,
        "initial": initial,
        "n_steps": cfg.train.n_steps,
        "train_s": round(cost["train_s"], 3),
        "eval_s": round(cost["eval_s"], 3),
        "tokens_processed": cost["tokens"],
        "step0_eval_reused": bool(cost.get("step0_eval_reused", False)),
        "base_model": base_model_identity(cfg),
        "config": cfg.to_dict(),
    }
