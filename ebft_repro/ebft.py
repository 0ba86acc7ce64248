"""One EBFT step, top to bottom: a batch of chunks -> ``loss.backward()`` (spec section 4.5).

    chunks (B, L) --repeat n--> (B*N, L) --strided sampling--> rollouts (B*N, S)       spec 3.2
      --frozen feature net--> gen, gt features (B*N, K, D)                              spec 3.4, 5
      --group--> (B*K, N, D): one RLOO group per (chunk, block)                          spec 2
      --rewards--> r = alpha * a - delta * d  (paper eq. 7; optional whitening)          spec 2, 2.1
      --RLOO--> advantages (B*K, N) --ungroup--> (B*N, K)                                 spec 4.1
      --policy forward (strided mask)--> log p(y_hat) (B*N, K, G), log p(x) (B*N, L-1)   spec 3.4
      --loss--> mean(-A * log p(y_hat)) + gamma * CE (+ beta * KL) --> backward          spec 4.2, 4.4

Shape letters follow ``docs/ebft_spec.md``: B chunks, N = n samples per context, L chunk length, K blocks
per chunk, G tokens generated per block, S = L + K*G strided length, D feature dimension. Everything the
gradient does not flow through (sampling, features, rewards, advantages, the KL reference) is computed
without gradient, so the advantages are constants (plain on-policy REINFORCE, spec pitfall 11).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from ebft_repro.batching import (
    STREAM_SAMPLE,
    Context,
    add_weighted,
    autocast,
    local_batch,
    micro_batches,
    to_floats,
)
from ebft_repro.config import LossConfig, SamplerConfig
from ebft_repro.losses import FeatureRewards, ebft_loss, feature_matching_rewards, rloo_advantages
from ebft_repro.sampler import StridedLayout, StridedRollouts, strided_generate, strided_logprobs
from ebft_repro.utils import row_generators


def group(values: torch.Tensor, n_samples: int) -> torch.Tensor:
    """(B*N, K, ...) per sequence, n consecutive copies of each chunk -> (B*K, N, ...) per RLOO group."""
    n_seqs, n_blocks, *rest = values.shape
    n_chunks = n_seqs // n_samples
    grouped = values.reshape(n_chunks, n_samples, n_blocks, *rest).transpose(1, 2)  # (B, K, N, ...)
    return grouped.reshape(n_chunks * n_blocks, n_samples, *rest)


def ungroup(values: torch.Tensor, n_chunks: int) -> torch.Tensor:
    """The inverse of :func:`group`: (B*K, N, ...) per group -> (B*N, K, ...) per sequence."""
    n_groups, n_samples, *rest = values.shape
    n_blocks = n_groups // n_chunks
    per_chunk = values.reshape(n_chunks, n_blocks, n_samples, *rest).transpose(1, 2)  # (B, N, K, ...)
    return per_chunk.reshape(n_chunks * n_samples, n_blocks, *rest)


def group_features(gen_feats: torch.Tensor, gt_feats: torch.Tensor, n_samples: int):
    """Rollout features (B*N, K, D) -> groups (B*K, N, D), and their ground truth (B*K, D).

    The n copies of a chunk share its ground truth, so the first copy's feature stands for the group.
    """
    gt = group(gt_feats, n_samples)[:, 0]  # (B*K, D): identical across the n copies
    return group(gen_feats, n_samples), gt


@dataclass
class RolloutScores:
    """What the frozen feature network says about a batch of strided rollouts."""

    gen_feats: torch.Tensor
    """(B*K, N, D) rollout features, one group per (chunk, block)."""
    gt_feats: torch.Tensor
    """(B*K, D) the ground-truth continuation's feature of each group."""
    rewards: FeatureRewards
    """(B*K, N) rewards r = alpha * a - delta * d and their two terms."""
    advantages: torch.Tensor
    """(B*N, K) RLOO advantages per sequence and block (constants)."""


@torch.no_grad()
def sample_rollouts(policy, chunks: torch.Tensor, sampler: SamplerConfig, generator) -> StridedRollouts:
    """One G-token rollout from each of the K nested prefixes of every (B*N, L) chunk row (spec 3.2),
    with the sampler config's geometry, temperature, top-p and cache setting."""
    return strided_generate(
        policy,
        chunks,
        stride=sampler.stride,
        context_len=sampler.context_len,
        gen_len=sampler.gen_len,
        temperature=sampler.temperature,
        top_p=sampler.top_p,
        generator=generator,
        use_cache=sampler.use_cache,
    )


def score_rollouts(
    feature_net, rollouts: StridedRollouts, n_samples: int, loss_cfg: LossConfig
) -> RolloutScores:
    """Features -> groups -> rewards -> RLOO advantages: shared by training, evaluation and teaching.

    The feature forward runs under the caller's autocast; rewards and advantages always in float32.
    """
    gen_feats, gt_feats = feature_net.strided_features(rollouts.sequences, rollouts.layout)  # (B*N, K, D) x 2
    group_gen, group_gt = group_features(
        gen_feats.float(), gt_feats.float(), n_samples
    )  # (B*K, N, D), (B*K, D)
    coefs = dict(alignment_coef=loss_cfg.alignment_coef, diversity_coef=loss_cfg.diversity_coef)
    with torch.autocast(device_type=group_gen.device.type, enabled=False):
        rewards = feature_matching_rewards(
            group_gen, group_gt, whitening=loss_cfg.whitening, **coefs
        )  # eq. 7
        advantages = rloo_advantages(rewards.alignment, rewards.diversity, **coefs)  # (B*K, N), spec 4.1
    n_chunks = gen_feats.shape[0] // n_samples
    return RolloutScores(group_gen, group_gt, rewards, ungroup(advantages, n_chunks))  # advantages (B*N, K)


@torch.no_grad()
def reference_logprobs(ctx: Context, sequences: torch.Tensor, layout: StridedLayout) -> torch.Tensor:
    """(b, K, G) log-probs of the generated tokens under the frozen initial policy: the KL reference.

    The feature network *is* the frozen initial policy (a copy, or the LoRA base with adapters off), as in
    the authors' code, where the reference and the feature model are the same frozen network (spec 4.4).
    """
    net = ctx.feature_net
    with net.model.disable_adapter() if net.adapters_off else nullcontext():
        gen_logps, _ = strided_logprobs(net.model, sequences, layout, temperature=ctx.cfg.sampler.temperature)
    return gen_logps


def ebft_step(ctx: Context, step: int) -> dict[str, float]:
    """Sample -> features -> rewards -> RLOO advantages -> backward (spec 4.5). Returns metrics."""
    cfg, sampler, loss_cfg = ctx.cfg, ctx.cfg.sampler, ctx.cfg.loss
    n_samples = sampler.n_samples

    # 1. The batch: B chunks, each repeated n times (consecutive copies form the RLOO groups).
    rows, first = local_batch(ctx, len(ctx.train_chunks), cfg.train.chunks_per_step, step)
    chunks = ctx.train_chunks[rows].to(ctx.device).repeat_interleave(n_samples, dim=0)  # (B*N, L)
    target_mask = ctx.train_target_mask[rows].to(ctx.device).repeat_interleave(n_samples, dim=0)  # (B*N, L-1)
    positions = list(range(first * n_samples, (first + len(rows)) * n_samples))

    # 2. Strided block-parallel sampling: one G-token rollout from each of the K nested prefixes (spec 3.2).
    ctx.policy.eval()
    with autocast(ctx):
        generators = row_generators(cfg.seed, step, STREAM_SAMPLE, positions)
        rollouts = sample_rollouts(ctx.policy, chunks, sampler, generators)  # sequences (B*N, S)

        # 3. Frozen features -> groups -> rewards (eq. 7) -> RLOO advantages (spec 2, 4.1).
        scores = score_rollouts(ctx.feature_net, rollouts, n_samples, loss_cfg)  # advantages (B*N, K)

    # 4. Policy log-probs of the rollouts and of the ground truth in one strided forward; the loss.
    ctx.policy.train()
    n_global = cfg.train.chunks_per_step * n_samples  # the loss is a mean over every sequence of the step
    sums: dict[str, torch.Tensor] = {}
    for part in micro_batches(chunks.shape[0], cfg.train.micro_batch_size):
        with autocast(ctx):
            gen_logps, gt_logps = strided_logprobs(
                ctx.policy, rollouts.sequences[part], rollouts.layout, temperature=sampler.temperature
            )  # (b, K, G) under p^(1/T), (b, L-1) under p
            ref_logps = (
                reference_logprobs(ctx, rollouts.sequences[part], rollouts.layout)
                if loss_cfg.kl_coef > 0
                else None
            )  # (b, K, G) under the frozen initial policy
        loss, metrics = ebft_loss(
            gen_logps.float(),
            scores.advantages[part],
            gt_logps.float(),
            ce_coef=loss_cfg.ce_coef,
            rl_coef=loss_cfg.rl_coef,
            gt_mask=target_mask[part],
            ref_gen_logps=None if ref_logps is None else ref_logps.float(),
            kl_coef=loss_cfg.kl_coef,
            kl_estimator=loss_cfg.kl_estimator,
        )  # rl * mean(-A * log p(y_hat)) + gamma * CE (+ beta * KL), spec 4.2
        weight = (part.stop - part.start) / n_global
        (loss * weight).backward()
        add_weighted(sums, metrics, weight, ctx.world_size)

    # Token forwards: sampling + the frozen feature forward + the policy forward (+ the KL reference).
    layout = rollouts.layout
    n_full = 3 if loss_cfg.kl_coef > 0 else 2
    forwards = layout.sampling_forwards(sampler.use_cache) + n_full * layout.total_len
    rewards = scores.rewards
    return to_floats(  # the step's one device-to-host transfer
        sums
        | {
            "reward": rewards.reward.mean(),
            "alignment": rewards.alignment.mean(),
            "diversity": rewards.diversity.mean(),
            "feature_map_reward": rewards.feature_map_reward.mean(),
            "tokens": float(chunks.shape[0] * forwards),
        }
    )
