"""What every training step shares: the run's context, the batch of step i, micro-batches and autocast.

The batch of step i is a pure function of (seed, i) (slices of per-epoch permutations), so every method of a
seed sees the same data order and a resumed run the same batches as an uninterrupted one.
"""

from __future__ import annotations

import random
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from ebft_repro.config import ExperimentConfig
from ebft_repro.distributed import shard
from ebft_repro.featurizer import FeatureNetwork

STREAM_SAMPLE = "sample"


@dataclass
class Context:
    """Everything a step needs; built once per run by :func:`ebft_repro.context.build_context`."""

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


def add_weighted(sums: dict[str, torch.Tensor], metrics: dict[str, torch.Tensor], *scales: float) -> None:
    """``sums[key] += metrics[key] * scales...`` in float64 on the metric's device (no host sync).

    The micro-batch loops call this once per micro-batch and :func:`to_floats` once per step, so a step
    waits for the device once, where its metrics are logged. Float64 and the order of the products keep the
    sums equal, bit for bit, to the Python-float accumulation they replace.
    """
    for key, value in metrics.items():
        term = value.detach().double()
        for scale in scales:
            term = term * scale
        sums[key] = sums[key] + term if key in sums else 0.0 + term


def to_floats(values: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """Every metric of a step as a Python float, with one device-to-host transfer."""
    tensors = {k: v for k, v in values.items() if isinstance(v, torch.Tensor)}
    floats = (
        torch.stack([v.detach().double().reshape(()) for v in tensors.values()]).tolist() if tensors else []
    )
    converted = dict(zip(tensors, floats, strict=True))
    return {k: converted[k] if k in converted else float(v) for k, v in values.items()}  # order kept
