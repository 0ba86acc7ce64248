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
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import distributed
from .config import ExperimentConfig
from .data import load_eval_examples, load_task, packed_split
from .evaluation import downstream_eval, feature_matching_eval, validation_ce
from .featurizer import FeatureNetwork
from .models import load_causal_lm, load_policy_and_tokenizer, resolve_model_path
from .steps import STEPS, Context, autocast
from .utils import (
    environment_info,
    progress,
    read_json,
    read_jsonl,
    resolve_device,
    seed_everything,
    step_generator,
    write_json,
)

log = logging.getLogger(__name__)

STREAM_EVAL, STREAM_FM = "eval", "fm"
TIMING_KEYS = ("wall_s", "step_s")


@dataclass
class RunResult:
    run_dir: Path | None
    summary: dict
    metrics: list[dict]


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


def _save_checkpoint(
    path: Path, ctx: Context, optimizer, scheduler, next_step: int, rows: list, cost: dict
) -> None:
    tmp = path.with_suffix(".tmp")
    state = {
        "policy": ctx.policy.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "next_step": next_step,
        "metrics": rows,
        "cost": cost,
    }
    torch.save(state, tmp)
    os.replace(tmp, path)


def _write_metrics(run_dir: Path, rows: list[dict]) -> None:
    tmp = run_dir / "metrics.jsonl.tmp"
    tmp.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))
    os.replace(tmp, run_dir / "metrics.jsonl")


def train(
    cfg: ExperimentConfig, *, run_dir: Path | None = None, force: bool = False, stop_after: int | None = None
) -> RunResult:
    """Run (or resume, or reuse) one experiment; write its files to ``run_dir`` when given.

    Args:
        run_dir: where ``config.json``, ``metrics.jsonl``, ``summary.json``, ``environment.json`` and the
            checkpoint go. A finished run with the same config is reused unless ``force``.
        stop_after: stop (as if killed) after this many optimizer steps; used to test resuming.
    """
    rank, world_size = distributed.init_from_env()
    main = rank == 0
    if run_dir is not None:
        run_dir = Path(run_dir)
        summary_path = run_dir / "summary.json"
        if summary_path.exists() and not force:
            summary = read_json(summary_path)
            same_model = summary.get("base_model", base_model_identity(cfg)) == base_model_identity(cfg)
            if same_model and summary.get("config") == json.loads(json.dumps(cfg.to_dict())):
                return RunResult(run_dir, summary, read_jsonl(run_dir / "metrics.jsonl"))
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
            if force:
                for name in ("summary.json", "checkpoint.pt", "metrics.jsonl"):
                    (run_dir / name).unlink(missing_ok=True)
            write_json(run_dir / "config.json", cfg.to_dict())
            write_json(run_dir / "environment.json", environment_info() | {"world_size": world_size})
        distributed.barrier()
    seed_everything(cfg.seed, deterministic=cfg.train.deterministic)
    ctx = build_context(cfg, rank=rank, world_size=world_size)
    params = [p for p in ctx.policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    rows: list[dict] = []
    cost = {"train_s": 0.0, "eval_s": 0.0, "tokens": 0.0}
    start_step = 0
    checkpoint_path = run_dir / "checkpoint.pt" if run_dir is not None else None
    if checkpoint_path is not None and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=ctx.device, weights_only=False)
        ctx.policy.load_state_dict(state["policy"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_step, rows, cost = state["next_step"], state["metrics"], state["cost"]
    step_fn = STEPS[cfg.method]
    bar = progress(
        range(start_step, cfg.train.n_steps + 1),
        desc=cfg.run_name,
        initial=start_step,
        total=cfg.train.n_steps + 1,
    )
    for step in bar:
        if step % cfg.eval.every_steps == 0 or step == cfg.train.n_steps:
            started = time.time()
            if main:  # only rank 0 evaluates; the others wait
                rows.append({"step": step, "kind": "eval", **evaluate(ctx, step)})
            distributed.barrier()
            cost["eval_s"] += time.time() - started
        if step == cfg.train.n_steps:
            break
        started = time.time()
        optimizer.zero_grad(set_to_none=True)
        metrics = step_fn(ctx, step)
        distributed.all_reduce_gradients(params)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        cost["train_s"] += time.time() - started
        cost["tokens"] += distributed.all_reduce_sum(metrics.pop("tokens", 0.0))
        metrics = distributed.average_metrics(metrics)
        rows.append(
            {
                "step": step,
                "kind": "train",
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm),
                **metrics,
            }
        )
        bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.3f}")
        done = step + 1
        if checkpoint_path is not None and (done % cfg.train.checkpoint_every_steps == 0):
            if main:
                _save_checkpoint(checkpoint_path, ctx, optimizer, scheduler, done, rows, cost)
                _write_metrics(run_dir, rows)
            distributed.barrier()
        if stop_after is not None and done >= stop_after:
            return RunResult(run_dir, {}, rows)
    summary = summarize(cfg, rows, cost)
    if run_dir is not None and main:
        if cfg.train.save_model:
            ctx.policy.save_pretrained(run_dir / "model")
            ctx.tokenizer.save_pretrained(run_dir / "model")
        _write_metrics(run_dir, rows)
        write_json(run_dir / "summary.json", summary)
        checkpoint_path.unlink(missing_ok=True)
    distributed.barrier()
    return RunResult(run_dir, summary, rows)


def base_model_identity(cfg: ExperimentConfig) -> str:
    """Which base checkpoint a run starts from: the built-in cache folder's name, else the model name."""
    if cfg.model.startswith("builtin:"):
        from .pretrain import base_model_dir

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
        "base_model": base_model_identity(cfg),
        "config": cfg.to_dict(),
    }


def strip_timing(rows: list[dict]) -> list[dict]:
    """Metrics without wall-clock fields, for comparing runs."""
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]
