"""The three methods as short steps over one shared context: ``ebft_step``, ``sft_step``, ``rlvr_step``.

Each step takes the global batch of step i (a pure function of (seed, i)), keeps the slice its rank owns,
and back-propagates a loss already divided by the *global* normaliser; the trainer sums gradients over ranks
and takes one optimizer step. Every random draw is keyed by (seed, step, stream, global sample position).
"""

from __future__ import annotations

import random
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from .config import ExperimentConfig
from .distributed import all_reduce_sum, shard
from .evaluation import group_features, sample_for_prompts, verifier_results
from .featurizer import FeatureNetwork
from .generation import completion_logprobs
from .losses import ebft_loss, feature_matching_rewards, rloo_advantages, rlvr_loss, sft_loss
from .sampler import strided_generate, strided_logprobs
from .utils import row_generators

STREAM_SAMPLE = "sample"


@dataclass
class Context:
    """Everything a step needs; built once per run by :func:`ebft_repro.trainer.build_context`."""

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
    rank: int = 0
    world_size: int = 1


def batch_indices(n_items: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Global indices of step ``step``: slices of per-epoch permutations seeded by (seed, epoch)."""
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


def local_batch(ctx: Context, n_items: int, batch_size: int, step: int) -> tuple[list[int], int]:
    """This rank's share of the global batch, and the global position of its first item."""
    rows = batch_indices(n_items, batch_size, ctx.cfg.seed, step)
    part = shard(rows, ctx.rank, ctx.world_size)
    return rows[part], part.start


def micro_batches(n_rows: int, micro: int) -> list[slice]:
    size = micro if micro > 0 else n_rows
    return [slice(i, min(i + size, n_rows)) for i in range(0, n_rows, size)]


def autocast(ctx: Context) -> AbstractContextManager:
    """bf16 autocast when asked for (on CUDA or CPU); a no-op otherwise."""
    return torch.autocast(
        device_type=ctx.device.type, dtype=torch.bfloat16, enabled=ctx.cfg.train.autocast_bf16
    )


@torch.no_grad()
def reference_logprobs(ctx: Context, sequences: torch.Tensor, layout) -> torch.Tensor:
    """(b, K, G) log-probs of the generated tokens under the frozen initial policy: the KL reference.

    The feature network *is* the frozen initial policy (a copy, or the LoRA base with adapters off), as in
    the authors' code, where the reference model and the feature model are the same frozen network.
    """
    net = ctx.feature_net
    off = net.model.disable_adapter() if net.adapters_off else nullcontext()
    with off:
        gen_logps, _ = strided_logprobs(net.model, sequences, layout, temperature=ctx.cfg.sampler.temperature)
    return gen_logps


def ebft_step(ctx: Context, step: int) -> dict[str, float]:
    """Sample -> features -> rewards -> RLOO advantages -> backward (spec 4.5). Returns metrics."""
    cfg, sampler = ctx.cfg, ctx.cfg.sampler
    n_samples = sampler.n_samples
    rows, first = local_batch(ctx, len(ctx.train_chunks), cfg.train.chunks_per_step, step)
    chunks = ctx.train_chunks[rows].to(ctx.device).repeat_interleave(n_samples, dim=0)  # (B*N, L)
    target_mask = ctx.train_target_mask[rows].to(ctx.device).repeat_interleave(n_samples, dim=0)  # (B*N, L-1)
    positions = list(range(first * n_samples, (first + len(rows)) * n_samples))
    ctx.policy.eval()
    with autocast(ctx):
        rollouts = strided_generate(
            ctx.policy,
            chunks,
            stride=sampler.stride,
            context_len=sampler.context_len,
            gen_len=sampler.gen_len,
            temperature=sampler.temperature,
            top_p=sampler.top_p,
            generator=row_generators(cfg.seed, step, STREAM_SAMPLE, positions),
            use_cache=sampler.use_cache,
        )
        gen_feats, gt_feats = ctx.feature_net.strided_features(
            rollouts.sequences, rollouts.layout
        )  # (B*N, K, D)
    group_gen, group_gt = group_features(
        gen_feats.float(), gt_feats.float(), n_samples
    )  # (B*K, N, D), (B*K, D)
    loss_cfg = cfg.loss
    coefs = dict(alignment_coef=loss_cfg.alignment_coef, diversity_coef=loss_cfg.diversity_coef)
    rewards = feature_matching_rewards(group_gen, group_gt, whitening=loss_cfg.whitening, **coefs)
    advantages = rloo_advantages(rewards.alignment, rewards.diversity, **coefs)  # (B*K, N)
    n_chunks, n_blocks = len(rows), rollouts.layout.n_blocks
    advantages = (
        advantages.view(n_chunks, n_blocks, n_samples).transpose(1, 2).reshape(-1, n_blocks)
    )  # (B*N, K)

    ctx.policy.train()
    n_global = cfg.train.chunks_per_step * n_samples  # the loss is a mean over every sequence of the step
    sums: dict[str, float] = {}
    for part in micro_batches(chunks.shape[0], cfg.train.micro_batch_size):
        with autocast(ctx):
            gen_logps, gt_logps = strided_logprobs(
                ctx.policy, rollouts.sequences[part], rollouts.layout, temperature=sampler.temperature
            )  # (b, K, G), (b, L-1)
            ref_logps = (
                reference_logprobs(ctx, rollouts.sequences[part], rollouts.layout)
                if loss_cfg.kl_coef > 0
                else None
            )  # (b, K, G) under the frozen initial policy
        loss, metrics = ebft_loss(
            gen_logps.float(),
            advantages[part],
            gt_logps.float(),
            ce_coef=loss_cfg.ce_coef,
            rl_coef=loss_cfg.rl_coef,
            gt_mask=target_mask[part],
            ref_gen_logps=None if ref_logps is None else ref_logps.float(),
            kl_coef=loss_cfg.kl_coef,
            kl_estimator=loss_cfg.kl_estimator,
        )
        weight = (part.stop - part.start) / n_global
        (loss * weight).backward()
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + value * weight * ctx.world_size
    layout = rollouts.layout
    # sampling + the frozen feature forward + the policy forward (+ the KL reference forward)
    n_full = 3 if loss_cfg.kl_coef > 0 else 2
    forwards = layout.sampling_forwards(sampler.use_cache) + n_full * layout.total_len
    return sums | {
        "reward": rewards.reward.mean().item(),
        "alignment": rewards.alignment.mean().item(),
        "diversity": rewards.diversity.mean().item(),
        "feature_map_reward": rewards.feature_map_reward.mean().item(),
        "tokens": float(chunks.shape[0] * forwards),
    }


def sft_step(ctx: Context, step: int) -> dict[str, float]:
    """Teacher-forced CE on the same packed chunks EBFT trains on (token mean over the global batch)."""
    cfg = ctx.cfg
    rows, _ = local_batch(ctx, len(ctx.train_chunks), cfg.train.chunks_per_step, step)
    chunks = ctx.train_chunks[rows].to(ctx.device)  # (B, L)
    target_mask = ctx.train_target_mask[rows].to(ctx.device)  # (B, L-1)
    ctx.policy.train()
    n_tokens = all_reduce_sum(target_mask.sum().item())
    sums: dict[str, float] = {}
    for part in micro_batches(len(rows), cfg.train.micro_batch_size):
        with autocast(ctx):
            logits = ctx.policy(input_ids=chunks[part], use_cache=False).logits[:, :-1].float()  # (b, L-1, V)
        logps = torch.log_softmax(logits, -1).gather(-1, chunks[part, 1:, None]).squeeze(-1)  # (b, L-1)
        loss, metrics = sft_loss(logps, target_mask[part])
        weight = target_mask[part].sum().item() / n_tokens
        (loss * weight).backward()
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + value * weight * ctx.world_size
    return sums | {"tokens": float(chunks.numel())}


def rlvr_step(ctx: Context, step: int) -> dict[str, float]:
    """RLOO over n full completions per prompt, rewarded by the task verifier (spec section 12)."""
    cfg, rl = ctx.cfg, ctx.cfg.rlvr
    n_samples = cfg.sampler.n_samples
    rows, first = local_batch(ctx, len(ctx.rl_examples), rl.prompts_per_step, step)
    examples = [ctx.rl_examples[i] for i in rows]
    positions = list(range(first * n_samples, (first + len(rows)) * n_samples))
    with autocast(ctx):
        texts, completions = sample_for_prompts(
            ctx.policy,
            ctx.tokenizer,
            examples,
            n_samples=n_samples,
            max_new_tokens=rl.max_new_tokens,
            temperature=rl.temperature,
            top_p=rl.top_p,
            generator=row_generators(cfg.seed, step, STREAM_SAMPLE, positions),
            batch_size=len(examples) * n_samples,
        )
    repeated = [ex for ex in examples for _ in range(n_samples)]
    scores, sandbox_stats = verifier_results(repeated, texts)
    rewards = torch.tensor(scores, device=ctx.device).view(len(examples), n_samples)
    ctx.policy.train()
    with autocast(ctx):
        logps = completion_logprobs(ctx.policy, completions, temperature=rl.temperature)  # (B*N, T)
    shape = (len(examples), n_samples, -1)
    loss, metrics = rlvr_loss(logps.float().view(shape), completions.completion_mask.view(shape), rewards)
    (loss * len(examples) / rl.prompts_per_step).backward()  # a mean over every completion of the step
    metrics["tokens"] = float(2 * (completions.prompt_mask.sum() + completions.completion_mask.sum()))
    return metrics | sandbox_stats  # suspicious_programs makes verifier gaming visible


STEPS = {"ebft": ebft_step, "sft": sft_step, "rlvr": rlvr_step}
