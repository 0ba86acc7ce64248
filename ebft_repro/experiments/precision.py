"""What computing features in bf16 (as the authors do) changes in the EBFT advantages.

The frozen feature network can run in float32 (the default) or bfloat16 (``train.feature_dtype``, the
authors' setting; per-token normalisation then also happens in bf16, as in their code). This module
measures, on the same strided rollouts of a preset's base model, how far the rewards and RLOO advantages
move when only the feature network's dtype changes::

    python -m ebft_repro.experiments.precision --preset cpu --task qa_code
    # -> results/precision/<preset>_<task>.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from ebft_repro.config import DTYPES, PRESETS, TASKS, get_preset
from ebft_repro.data import packed_split
from ebft_repro.ebft import sample_rollouts, score_rollouts
from ebft_repro.featurizer import FeatureNetwork
from ebft_repro.models import load_policy_and_tokenizer
from ebft_repro.utils import results_dir, write_json


def _relative(new: torch.Tensor, ref: torch.Tensor) -> float:
    return float((new - ref).norm() / ref.norm().clamp_min(1e-30))


@torch.no_grad()
def feature_dtype_effect(cfg, *, n_chunks: int = 8, dtype: str = "bfloat16", seed: int = 0) -> dict:
    """Rewards and advantages of one batch of rollouts scored by a float32 and a ``dtype`` feature network.

    Returns:
        A dict of the differences (relative L2, max absolute, sign agreement, correlation) and the setting.
    """
    torch.manual_seed(seed)
    policy, tokenizer = load_policy_and_tokenizer(replace(cfg, train=replace(cfg.train, dtype="float32")))
    policy.eval()
    chunks = packed_split(cfg.task, cfg.data, "validation", tokenizer).input_ids[:n_chunks]  # (B, L)
    n_samples, sampler = cfg.sampler.n_samples, cfg.sampler
    repeated = chunks.repeat_interleave(n_samples, dim=0)  # (B*N, L)
    rollouts = sample_rollouts(policy, repeated, sampler, torch.Generator().manual_seed(seed))
    scores = {}
    for name in ("float32", dtype):
        net = FeatureNetwork(policy, cfg.featurizer.layers, cfg.featurizer.pooling).to(getattr(torch, name))
        scores[name] = score_rollouts(net, rollouts, n_samples, cfg.loss)
    ref, new = scores["float32"], scores[dtype]
    adv_ref, adv_new = ref.advantages.flatten(), new.advantages.flatten()  # (B*N*K,)
    moving = adv_ref.abs() > 1e-6
    return {
        "preset": cfg.preset,
        "task": cfg.task,
        "dtype": dtype,
        "whitening": cfg.loss.whitening,
        "pooling": cfg.featurizer.pooling,
        "n_chunks": int(chunks.shape[0]),
        "n_samples": n_samples,
        "n_advantages": int(adv_ref.numel()),
        "reward_rel_l2": _relative(new.rewards.reward, ref.rewards.reward),
        "advantage_rel_l2": _relative(adv_new, adv_ref),
        "advantage_max_abs_diff": float((adv_new - adv_ref).abs().max()),
        "advantage_abs_mean": float(adv_ref.abs().mean()),
        "advantage_sign_agreement": float((adv_new[moving].sign() == adv_ref[moving].sign()).float().mean()),
        "advantage_correlation": float(torch.corrcoef(torch.stack([adv_ref, adv_new]))[0, 1]),
        "feature_cosine_min": float(
            torch.nn.functional.cosine_similarity(new.gen_feats, ref.gen_feats, dim=-1).min()
        ),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ebft_repro.experiments.precision", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--preset", default="tiny", choices=PRESETS[:-1])
    parser.add_argument("--task", default="qa_code", choices=TASKS)
    parser.add_argument("--dtype", default="bfloat16", choices=[d for d in DTYPES if d != "float32"])
    parser.add_argument("--n-chunks", type=int, default=8)
    parser.add_argument(
        "--out", default=None, help="JSON path (default: results/precision/<preset>_<task>.json)"
    )
    args = parser.parse_args(argv)
    cfg = get_preset(args.preset, args.task, "ebft")
    result = feature_dtype_effect(cfg, n_chunks=args.n_chunks, dtype=args.dtype)
    result["command"] = "python -m ebft_repro.experiments.precision " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    out = Path(args.out) if args.out else results_dir() / "precision" / f"{args.preset}_{args.task}.json"
    write_json(out, result)
    print(json.dumps(result, indent=2))
    print(out)


if __name__ == "__main__":
    main()
