"""The two baselines as short steps: ``sft_step`` (teacher-forced CE) and ``rlvr_step`` (RLOO on a verifier).

EBFT's own step reads top to bottom in :mod:`ebft_repro.ebft`; the trainer's ``STEPS`` holds all three. Each
step takes the global batch of step i (a pure function of (seed, i)), keeps the slice its rank owns,
and back-propagates a loss already divided by the *global* normaliser; the trainer sums gradients over ranks
and takes one optimizer step. Every random draw is keyed by (seed, step, stream, global sample position).
"""

from __future__ import annotations

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
from ebft_repro.distributed import all_reduce_sum
from ebft_repro.evaluation.downstream import sample_for_prompts, verifier_rewards
from ebft_repro.generation import completion_logprobs
from ebft_repro.losses import rlvr_loss, sft_loss, token_logprobs
from ebft_repro.utils import row_generators


def sft_step(ctx: Context, step: int) -> dict[str, float]:
    """Teacher-forced CE on the same packed chunks EBFT trains on (token mean over the global batch)."""
    cfg = ctx.cfg
    rows, _ = local_batch(ctx, len(ctx.train_chunks), cfg.train.chunks_per_step, step)
    chunks = ctx.train_chunks[rows].to(ctx.device)  # (B, L)
    target_mask = ctx.train_target_mask[rows].to(ctx.device)  # (B, L-1)
    ctx.policy.train()
    row_tokens = target_mask.sum(-1).tolist()  # (B,) targets per chunk, on the host once
    n_tokens = all_reduce_sum(sum(row_tokens), ctx.device)
    sums: dict[str, torch.Tensor] = {}
    for part in micro_batches(len(rows), cfg.train.micro_batch_size):
        with autocast(ctx):
            logits = ctx.policy(input_ids=chunks[part], use_cache=False).logits[:, :-1].float()  # (b, L-1, V)
        logps = token_logprobs(logits, chunks[part, 1:])  # (b, L-1)
        loss, metrics = sft_loss(logps, target_mask[part])
        weight = sum(row_tokens[part]) / n_tokens
        (loss * weight).backward()
        add_weighted(sums, metrics, weight, ctx.world_size)
    return to_floats(sums | {"tokens": float(chunks.numel())})


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
    scores = verifier_rewards(repeated, texts)
    rewards = torch.tensor(scores, device=ctx.device).view(len(examples), n_samples)
    ctx.policy.train()
    with autocast(ctx):
        logps = completion_logprobs(ctx.policy, completions, temperature=rl.temperature)  # (B*N, T)
    shape = (len(examples), n_samples, -1)
    loss, metrics = rlvr_loss(logps.float().view(shape), completions.completion_mask.view(shape), rewards)
    (loss * len(examples) / rl.prompts_per_step).backward()  # a mean over every completion of the step
    metrics["tokens"] = 2 * (completions.prompt_mask.sum() + completions.completion_mask.sum())
    return to_floats(metrics)
