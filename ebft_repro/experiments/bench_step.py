"""What does one EBFT step cost over one SFT step on the same chunks?

Run as ``python -m ebft_repro.experiments.bench step``.

Both steps include the optimizer update, and SFT runs on the same n*B sequences EBFT trains on. The EBFT
step is the whole of spec 4.5: strided sampling, the frozen feature forward, rewards and advantages, and
the policy forward/backward over the strided sequence. Model FLOPs use the 2*N*tokens (forward) and
6*N*tokens (forward + backward) rule, N being the non-embedding parameters plus the LM head; attention
FLOPs are left out, so utilisation is slightly understated.

Counting FLOPs, the floor of the ratio is (prefill L + decode (G-1)*K + frozen forward S + 3*S) / (3*L):
about 3.3x at L=1024, s=C=G=8 (S=2040).
"""

from __future__ import annotations

import time

import torch

from ebft_repro.batching import Context
from ebft_repro.config import BaseModelConfig, DataConfig, ExperimentConfig, SamplerConfig, TrainConfig
from ebft_repro.ebft import ebft_step
from ebft_repro.featurizer import FeatureNetwork
from ebft_repro.sampler import StridedLayout
from ebft_repro.steps import sft_step

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}


def _peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def flops_per_token(model: torch.nn.Module) -> float:
    """2 * (matmul parameters): every parameter but the input embedding table, plus the LM head."""
    n_params = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    tied = embed.data_ptr() == head.data_ptr()
    return 2.0 * (n_params - embed.numel() + (head.numel() if tied else 0))


def step_context(model, chunks: torch.Tensor, sampler: SamplerConfig, *, bf16: bool) -> Context:
    n_chunks, seq_len = chunks.shape
    cfg = ExperimentConfig(
        data=DataConfig(seq_len=seq_len),
        sampler=sampler,
        train=TrainConfig(chunks_per_step=n_chunks, autocast_bf16=bf16),
    )
    return Context(
        cfg=cfg,
        policy=model,
        tokenizer=None,
        feature_net=FeatureNetwork(model),
        train_chunks=chunks,
        train_target_mask=torch.ones(n_chunks, seq_len - 1, dtype=torch.bool),
        val_chunks=None,
        rl_examples=[],
        eval_examples=[],
        val_examples=[],
        device=next(model.parameters()).device,
    )


def _time_steps(ctx: Context, step_fn, repeats: int) -> tuple[float, float]:
    optimizer = torch.optim.AdamW(ctx.policy.parameters(), lr=1e-6, betas=(0.9, 0.95))
    cuda = ctx.device.type == "cuda"

    def one(step: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        step_fn(ctx, step)
        torch.nn.utils.clip_grad_norm_(ctx.policy.parameters(), 1.0)
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()

    one(0)  # warm-up (allocator, kernels)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for step in range(1, repeats + 1):
        one(step)
    seconds = (time.perf_counter() - started) / repeats
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return seconds, peak


def bench_steps(
    base: BaseModelConfig,
    *,
    seq_len: int = 1024,
    n_chunks: int = 16,
    n_samples: int = 4,
    stride: int = 8,
    context_len: int = 8,
    gen_len: int = 8,
    device: str = "cpu",
    bf16: bool = False,
    repeats: int = 3,
) -> dict:
    """Seconds per EBFT and SFT step on the same random chunks, their ratio, FLOPs and utilisation."""
    from ebft_repro.models import make_causal_lm

    torch.manual_seed(0)
    model = make_causal_lm(base, base.vocab_size, bos_id=0, eos_id=0, pad_id=1).to(device)
    generator = torch.Generator().manual_seed(0)
    chunks = torch.randint(2, base.vocab_size, (n_chunks, seq_len), generator=generator)  # (B, L)
    sampler = SamplerConfig(stride=stride, context_len=context_len, gen_len=gen_len, n_samples=n_samples)
    # SFT sees the same n*B sequences EBFT trains on (each chunk n times), so the ratio is per sequence.
    sft_ctx = step_context(model, chunks.repeat_interleave(n_samples, 0), sampler, bf16=bf16)
    sft_s, sft_peak = _time_steps(sft_ctx, sft_step, repeats)
    ebft_s, ebft_peak = _time_steps(step_context(model, chunks, sampler, bf16=bf16), ebft_step, repeats)
    layout = StridedLayout(seq_len, stride, context_len, gen_len)
    per_token = flops_per_token(model)
    n_seqs = n_chunks * n_samples
    sft_flops = 3 * per_token * n_seqs * seq_len
    sampling = layout.sampling_forwards(use_cache=True)  # the sampler's default path, timed above
    ebft_flops = per_token * n_seqs * (sampling + layout.total_len + 3 * layout.total_len)
    peak = _peak_tflops(torch.device(device))
    result = {
        "model_params": sum(p.numel() for p in model.parameters()),
        "seq_len": seq_len,
        "n_chunks": n_chunks,
        "n_samples": n_samples,
        "stride_context_gen": f"{stride}/{context_len}/{gen_len}",
        "sft_step_s": round(sft_s, 4),
        "ebft_step_s": round(ebft_s, 4),
        "ebft_over_sft": round(ebft_s / sft_s, 2),
        "flop_ratio_floor": round(ebft_flops / sft_flops, 2),
        "sft_tflops": round(sft_flops / sft_s / 1e12, 3),
        "ebft_tflops": round(ebft_flops / ebft_s / 1e12, 3),
        "sft_peak_gib": round(sft_peak, 2),
        "ebft_peak_gib": round(ebft_peak, 2),
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
        "bf16": bf16,
    }
    if peak:
        result["sft_mfu"] = round(result["sft_tflops"] / peak, 3)
        result["ebft_mfu"] = round(result["ebft_tflops"] / peak, 3)
    return result
