"""Strided block-parallel sampling (spec section 3), KV-cached, for any Hugging Face causal LM.

From one packed chunk x[0:L], EBFT samples K short rollouts at once, one per nested prefix
c_k = x[0 : C + k*s]. All K blocks advance together: token t of every block is drawn in the same forward pass.
The full sequence is laid out step-major (spec 3.1): ``[x_0 .. x_{L-1}, step 0 of blocks 0..K-1, ...]``,
so generated token (k, t) sits at index L + t*K + k with position id C + k*s + t.

Two sampling paths give identical tokens for the same generator:

- ``use_cache=True`` (this package): prefill the L ground-truth tokens once, then G-1 decode steps that each
  feed the K newest tokens against the KV cache, with the rows of the strided mask as a 4D mask.
- ``use_cache=False`` (the authors' way): one full forward over the growing sequence per step.

Random draws are made by inverse-CDF sampling from ``torch.rand`` on the caller's generator, so both paths
consume exactly the same uniforms and pick the same token unless two logits differ by float rounding at a
CDF boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

from ebft_repro.hf_compat import cache_kwargs, logits_for_rows, model_attention_mask, output_cache
from ebft_repro.losses import token_logprobs


@dataclass(frozen=True)
class StridedLayout:
    """Geometry of a strided sequence (spec section 3.1; legend letters L, s, C, G, K, S).

    Raises:
        ValueError: naming the field when the combination is invalid.
    """

    seq_len: int
    """L: ground-truth tokens per chunk."""
    stride: int
    """s: distance between consecutive anchors."""
    context_len: int
    """C: first anchor; block k's prefix is x[0 : C + k*s] (not a window)."""
    gen_len: int
    """G: generated tokens per block."""

    def __post_init__(self) -> None:
        for name in ("stride", "context_len", "gen_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"StridedLayout.{name}={getattr(self, name)} must be >= 1")
        span = self.seq_len - self.gen_len - self.context_len
        if span < 0:
            raise ValueError(
                f"StridedLayout.seq_len={self.seq_len} is too short: it must be >= context_len + gen_len"
                f" = {self.context_len + self.gen_len}"
            )
        if span % self.stride:
            raise ValueError(
                f"StridedLayout.stride={self.stride} must divide seq_len - gen_len - context_len = {span}"
            )

    @property
    def n_blocks(self) -> int:
        """K = (L - G - C) / s + 1."""
        return (self.seq_len - self.gen_len - self.context_len) // self.stride + 1

    @property
    def total_len(self) -> int:
        """S = L + K * G."""
        return self.seq_len + self.n_blocks * self.gen_len

    def anchor(self, k: int) -> int:
        """First ground-truth position of block k: C + k*s (its prefix is x[0 : anchor])."""
        return self.context_len + k * self.stride

    def gen_index(self, k: int, t: int) -> int:
        """Index of generated token (k, t) in the strided sequence: L + t*K + k."""
        return self.seq_len + t * self.n_blocks + k

    def gen_position(self, k: int, t: int) -> int:
        """Position id of generated token (k, t): C + k*s + t."""
        return self.anchor(k) + t

    @cached_property
    def anchors(self) -> torch.Tensor:
        return self.context_len + self.stride * torch.arange(self.n_blocks)  # (K,)

    def length_after(self, n_steps: int) -> int:
        return self.seq_len + n_steps * self.n_blocks

    def sampling_forwards(self, use_cache: bool) -> int:
        """Token forwards per sequence of :func:`strided_generate`.

        Cached: one prefill of L, then G-1 decode steps of K tokens. Uncached (the authors' loop): G full
        forwards over the growing sequence, sum over t < G of (L + t*K) = G*L + K*G*(G-1)/2.
        """
        g, k = self.gen_len, self.n_blocks
        if use_cache:
            return self.seq_len + (g - 1) * k
        return g * self.seq_len + k * g * (g - 1) // 2


@dataclass
class StridedRollouts:
    """Output of :func:`strided_generate`."""

    sequences: torch.Tensor
    """(B, S) ground truth followed by the generated tokens, step-major."""
    blocks: torch.Tensor
    """(B, K, G) the same generated tokens, block-major."""
    layout: StridedLayout


def strided_attention_mask(layout: StridedLayout, n_steps: int | None = None) -> torch.Tensor:
    """Boolean strided mask (True = may attend) after ``n_steps`` generated steps (default G).

    Prompt rows are causal and never see generated columns; generated row (k, t) sees the prefix columns
    [0, C + k*s), the same block's earlier generated tokens, and itself (spec section 3.1, pitfall 5).

    Returns:
        (S', S') bool tensor with S' = L + n_steps * K.
    """
    n_steps = layout.gen_len if n_steps is None else n_steps
    if not 0 <= n_steps <= layout.gen_len:
        raise ValueError(f"n_steps={n_steps} must be in [0, gen_len={layout.gen_len}]")
    seq_len, n_blocks = layout.seq_len, layout.n_blocks
    total = layout.length_after(n_steps)
    idx = torch.arange(total)  # (S',)
    is_gen = idx >= seq_len  # (S',)
    gen_offset = (idx - seq_len).clamp(min=0)
    block = torch.where(is_gen, gen_offset % n_blocks, -1)  # (S',)
    step = torch.where(is_gen, gen_offset // n_blocks, -1)  # (S',)
    # Ground-truth columns each row may see: i+1 (causal) for prompt rows, C + k*s for generated rows.
    prefix_limit = torch.where(is_gen, layout.context_len + block * layout.stride, idx + 1)  # (S',)
    sees_prompt = (~is_gen)[None, :] & (idx[None, :] < prefix_limit[:, None])  # (S', S')
    same_block = is_gen[:, None] & is_gen[None, :] & (block[:, None] == block[None, :])
    sees_gen = same_block & (step[None, :] <= step[:, None])  # (S', S')
    return sees_prompt | sees_gen


def strided_position_ids(layout: StridedLayout, n_steps: int | None = None) -> torch.Tensor:
    """Position ids after ``n_steps`` steps: 0..L-1, then C + k*s + t for token (k, t).  -> (S',) long."""
    n_steps = layout.gen_len if n_steps is None else n_steps
    steps = torch.arange(n_steps)[:, None]  # (n_steps, 1)
    gen_pos = layout.anchors[None, :] + steps  # (n_steps, K), step-major
    return torch.cat([torch.arange(layout.seq_len), gen_pos.reshape(-1)])  # (S',)


def deinterleave_blocks(gen_part: torch.Tensor, layout: StridedLayout) -> torch.Tensor:
    """Reorder step-major generated positions to block-major: (B, G*K, ...) -> (B, K, G, ...)."""
    n_batch, rest = gen_part.shape[0], gen_part.shape[2:]
    assert gen_part.shape[1] == layout.gen_len * layout.n_blocks, gen_part.shape
    stepped = gen_part.reshape(n_batch, layout.gen_len, layout.n_blocks, *rest)  # (B, G, K, ...)
    return stepped.transpose(1, 2)  # (B, K, G, ...)


# ----------------------------------------------------------------------------------- model plumbing


def forward_rows(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    *,
    allowed: torch.Tensor,
    position_ids: torch.Tensor,
    rows: torch.Tensor | None = None,
    cache: object | None = None,
    use_cache: bool = False,
) -> tuple[torch.Tensor, object]:
    """One forward with a custom boolean mask; returns the logits of ``rows`` only (all rows if None).

    Args:
        input_ids: (B, Q) tokens fed in this call.
        allowed: (Q, KV) bool mask for these queries against cache + new keys.
        position_ids: (Q,) positions, shared across the batch.
        rows: (R,) query rows whose logits are needed.

    Returns:
        logits (B, R, V) in float32, and the updated cache (or None).
    """
    n_batch = input_ids.shape[0]
    dtype = next(model.parameters()).dtype
    kwargs = dict(
        input_ids=input_ids,
        attention_mask=model_attention_mask(allowed.to(input_ids.device), model, dtype),
        position_ids=position_ids.to(input_ids.device)[None].expand(n_batch, -1),
        use_cache=use_cache,
        **cache_kwargs(model, cache),
    )
    logits, outputs = logits_for_rows(model, kwargs, rows)
    return logits, (output_cache(outputs) if use_cache else None)


Generators = torch.Generator | Sequence[torch.Generator] | None


def draw_uniforms(shape: torch.Size, generator: Generators) -> torch.Tensor:
    """Uniforms of ``shape`` from one generator, or from one per leading row (per-sample streams)."""
    if isinstance(generator, Sequence):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} row generators for {shape[0]} rows")
        return torch.stack([torch.rand(shape[1:], generator=g, device=g.device).cpu() for g in generator])
    return torch.rand(shape, generator=generator, device=generator.device if generator else "cpu")


def prefill_rows(
    model: torch.nn.Module, input_ids: torch.Tensor, *, rows: torch.Tensor
) -> tuple[torch.Tensor, object]:
    """Plain causal forward over (B, L) tokens that fills the KV cache; returns the logits of ``rows``."""
    kwargs = dict(input_ids=input_ids, use_cache=True, **cache_kwargs(model, None))
    logits, outputs = logits_for_rows(model, kwargs, rows)  # (B, R, V)
    return logits, output_cache(outputs)


def sample_tokens(
    logits: torch.Tensor, *, temperature: float, top_p: float = 1.0, generator: Generators = None
) -> torch.Tensor:
    """Sample one token per row by inverse-CDF on uniforms from ``generator``; temperature 0 is greedy.

    Args:
        logits: (..., V) float logits.
        generator: one generator, or a sequence with one generator per leading row of ``logits``.

    Returns:
        (...) long token ids.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # (..., V)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix of the sorted vocabulary whose mass reaches top_p (the top token always).
        drop = (sorted_probs.cumsum(-1) - sorted_probs) >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    uniforms = draw_uniforms(probs.shape[:-1], generator)
    cdf = probs.cumsum(dim=-1)  # (..., V)
    threshold = uniforms.to(probs.device)[..., None] * cdf[..., -1:]  # (..., 1)
    tokens = (cdf < threshold).sum(dim=-1)
    return tokens.clamp(max=probs.shape[-1] - 1)


# ---------------------------------------------------------------------------------------- sampling


@torch.no_grad()
def strided_generate(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    *,
    stride: int,
    context_len: int,
    gen_len: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: Generators = None,
    use_cache: bool = True,
) -> StridedRollouts:
    """Sample one G-token rollout from each of the K nested prefixes of every chunk (spec 3.2).

    Args:
        model: any Hugging Face causal LM.
        input_ids: (B, L) ground-truth chunks (repeat a chunk n times for n samples).
        generator: source of the sampling uniforms (one, or one per row); the same seed gives the same
            tokens in both paths.
        use_cache: KV-cached decoding (default) or the authors' full recompute per step.

    Returns:
        StridedRollouts with ``sequences`` (B, S) step-major and ``blocks`` (B, K, G).
    """
    layout = StridedLayout(input_ids.shape[1], stride, context_len, gen_len)
    n_blocks = layout.n_blocks
    device = input_ids.device
    allowed = strided_attention_mask(layout).to(device)  # (S, S); every path slices this one mask
    positions = strided_position_ids(layout).to(device)  # (S,)
    anchor_rows = layout.anchors.to(device) - 1  # (K,) the last prefix token of each block
    draw = dict(temperature=temperature, top_p=top_p, generator=generator)
    steps: list[torch.Tensor] = []

    if use_cache:
        # The prompt rows of the strided mask are exactly causal, so the prefill takes the model's own causal
        # path (SDPA's fused causal kernels) instead of an explicit mask.
        logits, cache = prefill_rows(model, input_ids, rows=anchor_rows)  # (B, K, V)
        steps.append(sample_tokens(logits, **draw))  # (B, K)
        for t in range(1, gen_len):
            query = slice(layout.length_after(t - 1), layout.length_after(t))  # the K tokens of step t-1
            logits, cache = forward_rows(
                model,
                steps[-1],
                allowed=allowed[query, : layout.length_after(t)],
                position_ids=positions[query],
                cache=cache,
                use_cache=True,
            )  # (B, K, V)
            steps.append(sample_tokens(logits, **draw))
    else:
        sequence = input_ids
        for t in range(gen_len):
            length = layout.length_after(t)
            rows = anchor_rows if t == 0 else torch.arange(length - n_blocks, length, device=device)
            logits, _ = forward_rows(
                model,
                sequence,
                allowed=allowed[:length, :length],
                position_ids=positions[:length],
                rows=rows,
            )  # (B, K, V)
            steps.append(sample_tokens(logits, **draw))
            sequence = torch.cat([sequence, steps[-1]], dim=1)

    generated = torch.stack(steps, dim=1)  # (B, G, K)
    sequences = torch.cat([input_ids, generated.reshape(input_ids.shape[0], -1)], dim=1)  # (B, S)
    blocks = generated.transpose(1, 2).contiguous()  # (B, K, G)
    assert sequences.shape[1] == layout.total_len
    return StridedRollouts(sequences=sequences, blocks=blocks, layout=layout)


def strided_logprobs(
    model: torch.nn.Module, sequences: torch.Tensor, layout: StridedLayout, *, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced log-probs of a strided sequence in one forward (spec 3.4), with gradient.

    The logits of three row sets are used: rows [0, L-2] predict x_1..x_{L-1} (CE, temperature 1); row
    C + k*s - 1 predicts step 0 of block k; row L + (t-1)*K + k predicts step t of block k. Temperature is
    applied to the generated-token logits only, matching how they were sampled.

    Args:
        sequences: (B, S) strided sequences from :func:`strided_generate`.

    Returns:
        gen_logps (B, K, G) under p^(1/T), and gt_logps (B, L-1) under p.
    """
    n_batch, total = sequences.shape
    assert total == layout.total_len, (total, layout)
    device = sequences.device
    allowed = strided_attention_mask(layout).to(device)
    positions = strided_position_ids(layout).to(device)
    logits, _ = forward_rows(model, sequences, allowed=allowed, position_ids=positions)  # (B, S, V)
    seq_len, n_blocks = layout.seq_len, layout.n_blocks
    gt_logps = token_logprobs(logits[:, : seq_len - 1], sequences[:, 1:seq_len])  # (B, L-1)
    pred_rows = torch.cat(
        [layout.anchors.to(device) - 1, torch.arange(seq_len, total - n_blocks, device=device)]
    )
    gen_logits = logits[:, pred_rows] / temperature  # (B, G*K, V), step-major
    gen_logps = token_logprobs(gen_logits, sequences[:, seq_len:])  # (B, G*K)
    return deinterleave_blocks(gen_logps, layout), gt_logps  # (B, K, G), (B, L-1)
