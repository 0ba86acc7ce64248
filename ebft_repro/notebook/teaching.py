"""Small, exact examples behind the teaching notebooks (01 objective, 02 sampler, 03 features).

The helpers here run the real sampler and feature network on the built-in tiny base model: notebook 02
(strided sampling: layouts, sampling paths, speed) and notebook 03 (features: rollouts, similarities,
PCA). The toy problem of notebook 01 lives in :mod:`ebft_repro.notebook.toy` and is re-exported here,
because the notebooks call every helper as ``teaching.<name>``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ebft_repro.losses import feature_matching_rewards

# Notebook 01's toy problem, re-exported: the committed notebooks call ``teaching.make_toy_problem`` etc.
from ebft_repro.notebook.toy import (  # noqa: F401
    BASELINES,
    GradientDraws,
    ToyProblem,
    bias_check,
    exact_cfm,
    exact_gradient,
    gradient_draws,
    group_table,
    make_toy_problem,
    variance_vs_n,
    whitening_study,
)


def load_demo(cfg, n_chunks: int = 2):
    """The policy and tokenizer of ``cfg`` (building the built-in base model if needed) and validation chunks.

    Returns:
        (model in eval mode, tokenizer, (n_chunks, L) validation chunk ids).
    """
    from ebft_repro.data import packed_split
    from ebft_repro.models import load_policy_and_tokenizer

    model, tokenizer = load_policy_and_tokenizer(cfg)
    model.eval()
    chunks = packed_split(cfg.task, cfg.data, "validation", tokenizer).input_ids[:n_chunks]  # (B, L)
    return model, tokenizer, chunks


def layout_table(layout):
    """Each block's prefix, ground-truth span, and where its generated tokens sit (a DataFrame)."""
    import pandas as pd

    rows = []
    for k in range(layout.n_blocks):
        anchor = layout.anchor(k)
        rows.append(
            {
                "block k": k,
                "prefix c_k": f"x[0:{anchor}]",
                "ground truth y_k": f"x[{anchor}:{anchor + layout.gen_len}]",
                "generated indices": [layout.gen_index(k, t) for t in range(layout.gen_len)],
                "position ids": [layout.gen_position(k, t) for t in range(layout.gen_len)],
            }
        )
    return pd.DataFrame(rows).set_index("block k")


def decoded_blocks(tokenizer, chunk: torch.Tensor, blocks: torch.Tensor, layout, which: list[int]):
    """The end of each chosen block's prefix, its ground truth and its rollout as text (a DataFrame).

    Args:
        chunk: (L,) ground-truth ids; blocks: (K, G) generated ids of that chunk.
    """
    import pandas as pd

    rows = []
    for k in which:
        anchor = layout.anchor(k)
        rows.append(
            {
                "block": k,
                "... prefix (last 12 tokens)": tokenizer.decode(chunk[max(0, anchor - 12) : anchor]),
                "ground truth": tokenizer.decode(chunk[anchor : anchor + layout.gen_len]),
                "rollout": tokenizer.decode(blocks[k]),
            }
        )
    return pd.DataFrame(rows).set_index("block")


@torch.no_grad()
def per_prefix_generate(model, chunks: torch.Tensor, layout) -> torch.Tensor:
    """Greedy ``model.generate`` from each nested prefix x[0 : C + k*s] separately (no EOS stop).

    Args:
        chunks: (B, L) ground-truth chunks.

    Returns:
        (B, K, G) generated tokens, block-major like :attr:`StridedRollouts.blocks`.
    """
    blocks = []
    for k in range(layout.n_blocks):
        prefix = chunks[:, : layout.anchor(k)]  # (B, C + k*s): same length for every chunk
        out = model.generate(
            input_ids=prefix,
            attention_mask=torch.ones_like(prefix),
            max_new_tokens=layout.gen_len,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=model.config.pad_token_id,
        )
        blocks.append(out[:, prefix.shape[1] :])  # (B, G)
    return torch.stack(blocks, dim=1)  # (B, K, G)


def compare_sampling_paths(model, chunks: torch.Tensor, sampler_cfg, *, seed: int = 0):
    """Token-for-token agreement of KV-cached, no-cache and per-prefix strided generation (a DataFrame)."""
    import pandas as pd

    from ebft_repro.sampler import strided_generate

    geometry = dict(
        stride=sampler_cfg.stride, context_len=sampler_cfg.context_len, gen_len=sampler_cfg.gen_len
    )
    greedy_cached = strided_generate(model, chunks, temperature=0.0, use_cache=True, **geometry)
    greedy_full = strided_generate(model, chunks, temperature=0.0, use_cache=False, **geometry)
    per_prefix = per_prefix_generate(model, chunks, greedy_cached.layout)
    sampled = [
        strided_generate(
            model,
            chunks,
            temperature=sampler_cfg.temperature,
            use_cache=use_cache,
            generator=torch.Generator().manual_seed(seed),
            **geometry,
        ).blocks
        for use_cache in (True, False)
    ]
    pairs = [
        ("greedy (T=0)", "KV-cached vs no-cache", greedy_cached.blocks, greedy_full.blocks),
        ("greedy (T=0)", "KV-cached vs per-prefix model.generate", greedy_cached.blocks, per_prefix),
        (f"sampled (T={sampler_cfg.temperature})", "KV-cached vs no-cache, same generator", *sampled),
    ]
    rows = [
        {
            "decoding": decoding,
            "comparison": name,
            "tokens compared": left.numel(),
            "identical tokens": int((left == right).sum()),
            "agreement": float((left == right).float().mean()),
        }
        for decoding, name, left, right in pairs
    ]
    return pd.DataFrame(rows), greedy_cached


def sampler_speed(
    seq_lens: tuple[int, ...], *, per_prefix_max_len: int = 512, trials: int = 2, n_threads: int = 1
):
    """Generated tokens per second of each strided-sampling variant at each L (s = C = G = 8, 4 sequences).

    Each variant is timed ``trials`` times (a warm-up call, then one timed call) and the fastest is kept,
    which is robust to other jobs sharing the CPU; so is timing on ``n_threads`` threads (restored after).
    Per-prefix generation is only timed up to ``per_prefix_max_len``: its cost grows like K * L (about
    100 s and 8 GB at L = 1024 on a 2-core CPU).
    """
    import pandas as pd

    from ebft_repro.experiments.bench import VARIANTS, run_variant

    rows, previous_threads = [], torch.get_num_threads()
    torch.set_num_threads(n_threads)  # run_variant keeps the current thread count
    for seq_len in seq_lens:
        for variant in VARIANTS:
            if variant == "per_prefix" and seq_len > per_prefix_max_len:
                continue
            geometry = dict(seq_len=seq_len, stride=8, context_len=8, gen_len=8, n_seqs=4)
            timings = [run_variant(variant, **geometry, device="cpu", repeats=1) for _ in range(trials)]
            row = min(timings, key=lambda timing: timing["seconds_per_call"])
            rows.append({"seq_len": seq_len} | {k: v for k, v in row.items() if k != "peak_memory_mb"})
    torch.set_num_threads(previous_threads)
    return pd.DataFrame(rows)


def rollout_features(
    policy, feature_net, chunks: torch.Tensor, sampler_cfg, n_samples: int, *, seed: int = 0
):
    """n strided rollouts of each chunk and their features, grouped per (chunk, block).

    Args:
        chunks: (B, L) ground-truth chunks.

    Returns:
        gen_feats (B*K, n, D) and gt_feats (B*K, D), float32; group b*K + k is block k of chunk b.
    """
    from ebft_repro.ebft import group_features, sample_rollouts

    repeated = chunks.repeat_interleave(n_samples, dim=0)  # (B*N, L)
    rollouts = sample_rollouts(policy, repeated, sampler_cfg, torch.Generator().manual_seed(seed))
    gen_feats, gt_feats = feature_net.strided_features(rollouts.sequences, rollouts.layout)  # (B*n, K, D) x 2
    return group_features(gen_feats.float(), gt_feats.float(), n_samples)  # (B*K, n, D), (B*K, D)


def distinct_rollouts(gen_feats: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """Number of distinct rollouts per group (features with cosine above 1 - tol count as one).

    Args:
        gen_feats: (M, N, D).

    Returns:
        (M,) long.
    """
    unit = F.normalize(gen_feats, dim=-1)
    same = (unit @ unit.transpose(1, 2)) > 1 - tol  # (M, N, N)
    earlier_copy = same.tril(diagonal=-1).any(dim=-1)  # (M, N): a copy of an earlier rollout
    return (~earlier_copy).sum(dim=-1)


def most_diverse_groups(gen_feats: torch.Tensor, n_groups: int) -> list[int]:
    """The ``n_groups`` groups with the most distinct rollouts (the first ones on ties), in index order."""
    counts = distinct_rollouts(gen_feats)
    order = sorted(range(len(counts)), key=lambda g: (-int(counts[g]), g))
    return sorted(order[:n_groups])


def similarity_stats(gen_feats: torch.Tensor, gt_feats: torch.Tensor, whitening: str) -> dict[str, float]:
    """Mean cosine rollout-to-GT and rollout-to-rollout, and the mean rewards, after ``whitening``."""
    from ebft_repro.losses import whiten

    white_gen, white_gt = whiten(gen_feats, gt_feats, whitening)  # (K, n, D) x 2
    unit = F.normalize(white_gen, dim=-1)
    n_samples = unit.shape[1]
    gram = unit @ unit.transpose(1, 2)  # (K, n, n)
    pairwise = (gram.sum(dim=(1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(-1)) / (n_samples * (n_samples - 1))
    rewards = feature_matching_rewards(gen_feats, gt_feats, whitening=whitening)
    return {
        "whitening": whitening,
        "distinct rollouts / n": float(distinct_rollouts(gen_feats).float().mean()) / n_samples,
        "cos(rollout, GT)": float(F.cosine_similarity(white_gen, white_gt, dim=-1).mean()),
        "cos(rollout, rollout)": float(pairwise.mean()),
        "alignment a": float(rewards.alignment.mean()),
        "diversity d": float(rewards.diversity.mean()),
    }


def pca_projection(gen_feats: torch.Tensor, gt_feats: torch.Tensor, whitening: str = "none"):
    """2-D PCA of each block's (whitened, unit-normalised) rollouts with its GT direction.

    The principal axes are fitted per block on the n rollouts and the GT together, centred on their mean.

    Args:
        gen_feats: (K, n, D); gt_feats: (K, D).

    Returns:
        rollouts (K, n, 2) and gt (K, 2) coordinates.
    """
    from ebft_repro.losses import whiten

    white_gen, white_gt = whiten(gen_feats, gt_feats, whitening)  # (K, n, D) x 2
    points = torch.cat(
        [F.normalize(white_gen, dim=-1), F.normalize(white_gt[:, :1], dim=-1)], dim=1
    )  # (K, n+1, D)
    centred = points - points.mean(dim=1, keepdim=True)
    _, _, right_h = torch.linalg.svd(centred, full_matrices=False)  # (K, r, D)
    coords = centred @ right_h[:, :2].transpose(1, 2)  # (K, n+1, 2)
    return coords[:, :-1], coords[:, -1]
