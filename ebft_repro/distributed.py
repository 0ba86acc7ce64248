"""Data parallelism on PyTorch distributed, launched by ``torchrun`` or ``accelerate launch``.

Design (see ``docs/scaling.md``): every rank holds the whole policy and its own frozen feature network. The
global batch of a step is a pure function of (seed, step); rank r takes a contiguous slice of its chunks
(EBFT, SFT) or prompts (RLVR), so the n samples of one context never span ranks and RLOO and whitening stay
local. Every random draw is keyed by the sample's *global* position in the batch, so a data-parallel step
draws the same tokens as one process on the combined batch. Each rank scales its loss by the global
normaliser, gradients are summed with ``all_reduce``, and step metrics are averaged before logging. Only
rank 0 evaluates and writes files.

Every collective runs on the training device (NCCL, the backend whenever CUDA is present, cannot reduce CPU
tensors). Gradients are reduced once per optimizer step, after all micro-batches, as one flat buffer: what
``DistributedDataParallel`` does with ``no_sync`` on every micro-batch but the last. DDP itself is not used
because the policy is also called for KV-cached sampling and for no-grad scoring inside a step, forwards
that DDP would treat as training forwards.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


def init_from_env() -> tuple[int, int]:
    """Join the process group described by torchrun/accelerate env vars; returns (rank, world_size)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1
    if not dist.is_initialized():
        if torch.cuda.is_available():  # before init, so NCCL binds each rank to its own GPU
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=60))
    return dist.get_rank(), dist.get_world_size()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def shard(items: list, rank: int, world_size: int) -> slice:
    """The contiguous slice of a global batch that ``rank`` owns.

    Raises:
        ValueError: if the batch does not split evenly (groups must never span ranks).
    """
    if len(items) % world_size:
        raise ValueError(
            f"the global batch of {len(items)} chunks/prompts must divide evenly over {world_size} ranks"
        )
    size = len(items) // world_size
    return slice(rank * size, (rank + 1) * size)


def reduce_tensor(values: list[float], device: torch.device) -> torch.Tensor:
    """Sum float64 scalars over ranks in one collective on ``device``; -> (len(values),) on ``device``."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if is_distributed():
        dist.all_reduce(tensor)
    return tensor


def all_reduce_sum(value: float, device: torch.device) -> float:
    """Sum a scalar over ranks (identity when not distributed)."""
    if not is_distributed():
        return float(value)
    return float(reduce_tensor([float(value)], device)[0])


def all_reduce_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum gradients over ranks in one flat all-reduce on their device; each rank already scaled its
    loss by the global normaliser.  A parameter without a gradient on this rank contributes zeros."""
    if not is_distributed():
        return
    for param in params:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
    grads = [param.grad for param in params]
    flat = torch.cat([grad.reshape(-1) for grad in grads])  # (P,) on the parameters' device
    dist.all_reduce(flat)
    for grad, reduced in zip(grads, flat.split([grad.numel() for grad in grads])):
        grad.copy_(reduced.view_as(grad))


def average_metrics(metrics: dict[str, float], device: torch.device) -> dict[str, float]:
    """Mean of each scalar metric over ranks (equal shard sizes make this the global mean)."""
    if not is_distributed():
        return metrics
    keys = sorted(metrics)
    tensor = reduce_tensor([float(metrics[k]) for k in keys], device) / dist.get_world_size()
    return dict(zip(keys, tensor.tolist()))


def barrier() -> None:
    if is_distributed():
        dist.barrier()
