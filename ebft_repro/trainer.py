"""One explicit training loop for EBFT, SFT and RLVR: ``train(cfg) -> RunResult``.

Each method is a short ``*_step`` that turns one batch into a loss; the loop owns the optimizer (AdamW,
betas 0.9/0.95, clip 1.0), the schedule, evaluation, checkpoints and the files of the run. Every random draw
is re-seeded from (seed, step), and the batch of step i is a pure function of (seed, i), so a run resumed
from a checkpoint ends with the same metrics as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import ExperimentConfig
from .data import load_eval_examples, load_task, packed_split
from .evaluation import (
    downstream_eval,
    feature_matching_eval,
    group_features,
    sample_for_prompts,
    validation_ce,
    verifier_rewards,
)
from .featurizer import FeatureNetwork
from .generation import completion_logprobs
from .losses import ebft_loss, feature_matching_rewards, rloo_advantages, rlvr_loss, sft_loss
from .models import load_causal_lm, load_policy_and_tokenizer, resolve_model_path
from .sampler import strided_generate, strided_logprobs
from .utils import (
    environment_info,
    progress,
    read_json,
    resolve_device,
    seed_everything,
    step_generator,
    write_json,
)

STREAM_SAMPLE, STREAM_EVAL, STREAM_FM = 0, 1, 2
TIMING_KEYS = ("wall_s", "step_s")


@dataclass
class RunResult:
    run_dir: Path | None
    summary: dict
    metrics: list[dict]


@dataclass
class Context:
    """Everything a step needs; built once per run."""

    cfg: ExperimentConfig
    policy: torch.nn.Module
    tokenizer: object
    feature_net: FeatureNetwork
    train_chunks: torch.Tensor  # (N_train, L)
    train_target_mask: torch.Tensor  # (N_train, L-1)
    val_chunks: object
    rl_examples: list
    eval_examples: list
    val_examples: list
    device: torch.device


def batch_indices(n_items: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Indices of step ``step``: consecutive slices of per-epoch permutations seeded by (seed, epoch)."""
    indices = []
    position = step * batch_size
    while len(indices) < batch_size:
        epoch, offset = divmod(position, n_items)
        order = list(range(n_items))
        random.Random(f"{seed}:{epoch}").shuffle(order)
        take = min(batch_size - len(indices), n_items - offset)
        indices += order[offset : offset + take]
        position += take
    return indices


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


def _micro_batches(n_rows: int, micro: int) -> list[slice]:
    size = micro if micro > 0 else n_rows
    return [slice(i, min(i + size, n_rows)) for i in range(0, n_rows, size)]


def _autocast(ctx: Context):
    enabled = ctx.cfg.train.autocast_bf16 and ctx.device.type == "cuda"
    return torch.autocast(device_type=ctx.device.type, dtype=torch.bfloat16, enabled=enabled)


# ------------------------------------------------------------------------------------------- steps


def ebft_step(ctx: Context, step: int) -> dict[str, float]:
    """Sample -> features -> rewards -> RLOO advantages -> backward (spec 4.5). Returns metrics."""
    cfg, sampler = ctx.cfg, ctx.cfg.sampler
    n_samples = sampler.n_samples
    rows = batch_indices(len(ctx.train_chunks), cfg.train.chunks_per_step, cfg.seed, step)
    chunks = ctx.train_chunks[rows].to(ctx.device).repeat_interleave(n_samples, dim=0)  # (B*N, L)
    target_mask = ctx.train_target_mask[rows].to(ctx.device).repeat_interleave(n_samples, dim=0)  # (B*N, L-1)
    ctx.policy.eval()
    with _autocast(ctx):
        rollouts = strided_generate(
            ctx.policy,
            chunks,
            stride=sampler.stride,
            context_len=sampler.context_len,
            gen_len=sampler.gen_len,
            temperature=sampler.temperature,
            top_p=sampler.top_p,
            generator=step_generator(cfg.seed, step, STREAM_SAMPLE),
            use_cache=sampler.use_cache,
        )
        gen_feats, gt_feats = ctx.feature_net.strided_features(
            rollouts.sequences, rollouts.layout
        )  # (B*N, K, D)
    group_gen, group_gt = group_features(
        gen_feats.float(), gt_feats.float(), n_samples
    )  # (B*K, N, D), (B*K, D)
    loss_cfg = cfg.loss
    rewards = feature_matching_rewards(
        group_gen,
        group_gt,
        alignment_coef=loss_cfg.alignment_coef,
        diversity_coef=loss_cfg.diversity_coef,
        whitening=loss_cfg.whitening,
    )
    advantages = rloo_advantages(
        rewards.alignment,
        rewards.diversity,
        alignment_coef=loss_cfg.alignment_coef,
        diversity_coef=loss_cfg.diversity_coef,
    )  # (B*K, N)
    n_chunks, n_blocks = len(rows), rollouts.layout.n_blocks
    advantages = (
        advantages.view(n_chunks, n_blocks, n_samples).transpose(1, 2).reshape(-1, n_blocks)
    )  # (B*N, K)

    ctx.policy.train()
    n_seqs = chunks.shape[0]
    sums: dict[str, float] = {}
    for part in _micro_batches(n_seqs, cfg.train.micro_batch_size):
        with _autocast(ctx):
            gen_logps, gt_logps = strided_logprobs(
                ctx.policy, rollouts.sequences[part], rollouts.layout, temperature=sampler.temperature
            )  # (b, K, G), (b, L-1)
        loss, metrics = ebft_loss(
            gen_logps.float(),
            advantages[part],
            gt_logps.float(),
            ce_coef=loss_cfg.ce_coef,
            rl_coef=loss_cfg.rl_coef,
            gt_mask=target_mask[part],
        )
        weight = (part.stop - part.start) / n_seqs
        (loss * weight).backward()
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + value * weight
    layout = rollouts.layout
    sums.update(
        reward=rewards.reward.mean().item(),
        alignment=rewards.alignment.mean().item(),
        diversity=rewards.diversity.mean().item(),
        feature_map_reward=rewards.feature_map_reward.mean().item(),
        tokens=float(
            n_seqs * (layout.seq_len + (layout.gen_len - 1) * layout.n_blocks + 2 * layout.total_len)
        ),
    )
    return sums


def sft_step(ctx: Context, step: int) -> dict[str, float]:
    """Teacher-forced CE on the same packed chunks EBFT trains on."""
    cfg = ctx.cfg
    rows = batch_indices(len(ctx.train_chunks), cfg.train.chunks_per_step, cfg.seed, step)
    chunks = ctx.train_chunks[rows].to(ctx.device)  # (B, L)
    target_mask = ctx.train_target_mask[rows].to(ctx.device)  # (B, L-1)
    ctx.policy.train()
    total_tokens = target_mask.sum().clamp(min=1)
    sums: dict[str, float] = {}
    for part in _micro_batches(len(rows), cfg.train.micro_batch_size):
        with _autocast(ctx):
            logits = ctx.policy(input_ids=chunks[part], use_cache=False).logits[:, :-1].float()  # (b, L-1, V)
        logps = torch.log_softmax(logits, -1).gather(-1, chunks[part, 1:, None]).squeeze(-1)  # (b, L-1)
        loss, metrics = sft_loss(logps, target_mask[part])
        weight = (target_mask[part].sum() / total_tokens).item()
        (loss * weight).backward()
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + value * weight
    sums["tokens"] = float(chunks.numel())
    return sums


def rlvr_step(ctx: Context, step: int) -> dict[str, float]:
    """RLOO over n full completions per prompt, rewarded by the task verifier (spec section 12)."""
    cfg, rl = ctx.cfg, ctx.cfg.rlvr
    n_samples = cfg.sampler.n_samples
    rows = batch_indices(len(ctx.rl_examples), rl.prompts_per_step, cfg.seed, step)
    examples = [ctx.rl_examples[i] for i in rows]
    with _autocast(ctx):
        texts, completions = sample_for_prompts(
            ctx.policy,
            ctx.tokenizer,
            examples,
            n_samples=n_samples,
            max_new_tokens=rl.max_new_tokens,
            temperature=rl.temperature,
            top_p=rl.top_p,
            generator=step_generator(cfg.seed, step, STREAM_SAMPLE),
            batch_size=len(examples) * n_samples,
        )
    repeated = [ex for ex in examples for _ in range(n_samples)]
    rewards = torch.tensor(verifier_rewards(repeated, texts), device=ctx.device).view(
        len(examples), n_samples
    )
    ctx.policy.train()
    with _autocast(ctx):
        logps = completion_logprobs(ctx.policy, completions, temperature=rl.temperature)  # (B*N, T)
    shape = (len(examples), n_samples, -1)
    loss, metrics = rlvr_loss(logps.float().view(shape), completions.completion_mask.view(shape), rewards)
    loss.backward()
    metrics["tokens"] = float(2 * (completions.prompt_mask.sum() + completions.completion_mask.sum()))
    return metrics


STEPS = {"ebft": ebft_step, "sft": sft_step, "rlvr": rlvr_step}


# -------------------------------------------------------------------------------------------- loop


def build_context(cfg: ExperimentConfig) -> Context:
    """Load the policy, the frozen feature network and the task data for a run."""
    device = resolve_device(cfg.train.device)
    policy, tokenizer = load_policy_and_tokenizer(cfg, device=device)
    if cfg.featurizer.feature_model is None:
        feature_net = FeatureNetwork(policy, cfg.featurizer.layers, cfg.featurizer.pooling)
    else:
        base = load_causal_lm(
            resolve_model_path(cfg.featurizer.feature_model, cfg), dtype=cfg.train.dtype, device=device
        )
        feature_net = FeatureNetwork(base, cfg.featurizer.layers, cfg.featurizer.pooling, copy_model=False)
    train_packed = packed_split(cfg.task, cfg.data, "train", tokenizer)
    task_data = load_task(cfg.task, cfg.data)
    rl_examples = load_task(task_data.eval_task, cfg.data).train
    eval_examples = load_eval_examples(cfg.task, cfg.data, cfg.eval.split)[: cfg.eval.n_prompts]
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
        val_examples=load_eval_examples(cfg.task, cfg.data, "validation")[: cfg.eval.n_prompts],
        device=device,
    )


def evaluate(ctx: Context, step: int) -> dict[str, float]:
    """Validation CE, feature matching and downstream accuracy at ``step``."""
    cfg = ctx.cfg
    with _autocast(ctx):
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
    if run_dir is not None:
        run_dir = Path(run_dir)
        summary_path = run_dir / "summary.json"
        if summary_path.exists() and not force:
            summary = read_json(summary_path)
            if summary.get("config") == json.loads(json.dumps(cfg.to_dict())):
                from .utils import read_jsonl

                return RunResult(run_dir, summary, read_jsonl(run_dir / "metrics.jsonl"))
        run_dir.mkdir(parents=True, exist_ok=True)
        if force:
            for name in ("summary.json", "checkpoint.pt", "metrics.jsonl"):
                (run_dir / name).unlink(missing_ok=True)
        write_json(run_dir / "config.json", cfg.to_dict())
        write_json(run_dir / "environment.json", environment_info())
    seed_everything(cfg.seed, deterministic=cfg.train.deterministic)
    ctx = build_context(cfg)
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
            eval_row = {"step": step, "kind": "eval", **evaluate(ctx, step)}
            cost["eval_s"] += time.time() - started
            rows.append(eval_row)
        if step == cfg.train.n_steps:
            break
        started = time.time()
        optimizer.zero_grad(set_to_none=True)
        metrics = step_fn(ctx, step)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        cost["train_s"] += time.time() - started
        cost["tokens"] += metrics.pop("tokens", 0.0)
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
            _save_checkpoint(checkpoint_path, ctx, optimizer, scheduler, done, rows, cost)
            _write_metrics(run_dir, rows)
        if stop_after is not None and done >= stop_after:
            return RunResult(run_dir, {}, rows)
    summary = summarize(cfg, rows, cost)
    if run_dir is not None:
        _write_metrics(run_dir, rows)
        write_json(run_dir / "summary.json", summary)
        checkpoint_path.unlink(missing_ok=True)
    return RunResult(run_dir, summary, rows)


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
        "config": cfg.to_dict(),
    }


def strip_timing(rows: list[dict]) -> list[dict]:
    """Metrics without wall-clock fields, for comparing runs."""
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]
