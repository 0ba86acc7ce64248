"""Benchmarks (speed, not correctness): ``python -m ebft_repro.experiments.bench {sampler,step,sandbox}``.

``sampler`` compares, on one random-init model and the same chunks, generated tokens per second and peak
memory of: KV-cached strided sampling, the authors' no-cache strided sampling, and per-prefix ``generate``
(all K prefixes batched with left padding). Each variant runs in its own subprocess so that its peak memory
(max RSS on CPU, max allocated on CUDA) is its own. Results go to ``results/bench/sampler.csv``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from ebft_repro.config import PRESETS, BaseModelConfig
from ebft_repro.utils import results_dir

VARIANTS = ("cached", "no_cache", "per_prefix")


def bench_model(vocab_size: int = 4096, hidden: int = 160, layers: int = 4, device: str = "cpu"):
    """A ~2M-parameter random-init Llama (the benchmark measures speed, not quality)."""
    from ebft_repro.models import make_causal_lm

    torch.manual_seed(0)
    cfg = BaseModelConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        n_layers=layers,
        n_heads=4,
        intermediate_size=3 * hidden,
        max_position_embeddings=4096,
    )
    return make_causal_lm(cfg, vocab_size, bos_id=0, eos_id=0, pad_id=1).to(device).eval()


def _per_prefix_generate(model, chunks: torch.Tensor, stride: int, context_len: int, gen_len: int, generator):
    """Baseline: every nested prefix as its own left-padded row of one batched ``generate`` call."""
    from ebft_repro.generation import left_pad, sample_completions
    from ebft_repro.sampler import StridedLayout

    layout = StridedLayout(chunks.shape[1], stride, context_len, gen_len)
    prefixes = [row[: layout.anchor(k)].tolist() for row in chunks for k in range(layout.n_blocks)]
    ids, mask = left_pad(prefixes, pad_id=1)
    return sample_completions(
        model,
        ids.to(chunks.device),
        mask.to(chunks.device),
        max_new_tokens=gen_len,
        eos_id=-1,
        pad_id=1,
        temperature=1.0,
        generator=generator,
    )


def run_variant(
    variant: str,
    *,
    seq_len: int,
    stride: int,
    context_len: int,
    gen_len: int,
    n_seqs: int,
    device: str,
    repeats: int,
) -> dict:
    """Time one sampling variant; returns tokens/s and peak memory."""
    from ebft_repro.sampler import StridedLayout, strided_generate

    torch.set_num_threads(int(os.environ.get("EBFT_BENCH_THREADS", torch.get_num_threads())))
    model = bench_model(device=device)
    chunks = torch.randint(
        2, model.config.vocab_size, (n_seqs, seq_len), generator=torch.Generator().manual_seed(0)
    ).to(device)
    layout = StridedLayout(seq_len, stride, context_len, gen_len)
    generator = torch.Generator().manual_seed(0)
    kwargs = dict(
        stride=stride, context_len=context_len, gen_len=gen_len, temperature=1.0, generator=generator
    )

    def once():
        if variant == "per_prefix":
            _per_prefix_generate(model, chunks, stride, context_len, gen_len, generator)
        else:
            strided_generate(model, chunks, use_cache=variant == "cached", **kwargs)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    once()  # warm-up
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(repeats):
        once()
    seconds = (time.perf_counter() - started) / repeats
    n_generated = n_seqs * layout.n_blocks * gen_len
    peak = (
        torch.cuda.max_memory_allocated()
        if device.startswith("cuda")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return {
        "variant": variant,
        "seconds_per_call": round(seconds, 4),
        "generated_tokens_per_s": round(n_generated / seconds, 1),
        "peak_memory_mb": round(peak / 2**20, 1),
        "n_generated": n_generated,
    }


def bench_sampler(args: argparse.Namespace) -> Path:
    rows = []
    for variant in args.variants:
        options = {
            "--seq-len": args.seq_len,
            "--stride": args.stride,
            "--context-len": args.context_len,
            "--gen-len": args.gen_len,
            "--n-seqs": args.n_seqs,
            "--device": args.device,
            "--repeats": args.repeats,
        }
        command = [sys.executable, "-m", "ebft_repro.experiments.bench", "_one", variant]
        command += [str(x) for pair in options.items() for x in pair]
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        speed, memory = rows[-1]["generated_tokens_per_s"], rows[-1]["peak_memory_mb"]
        print(f"{variant:>10}: {speed:>10.1f} tok/s, {memory:.0f} MB", file=sys.stderr)
    cached = next((r for r in rows if r["variant"] == "cached"), None)
    machine = (
        torch.cuda.get_device_name(0)
        if args.device.startswith("cuda")
        else f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"
    )
    for row in rows:
        row["speedup_of_cached"] = (
            round(cached["generated_tokens_per_s"] / row["generated_tokens_per_s"], 2) if cached else None
        )
        row |= {
            "seq_len": args.seq_len,
            "stride": args.stride,
            "context_len": args.context_len,
            "gen_len": args.gen_len,
            "n_seqs": args.n_seqs,
            "model_params": sum(p.numel() for p in bench_model().parameters()),
            "machine": machine,
            "torch": torch.__version__,
            "command": "python -m ebft_repro.experiments.bench " + " ".join(sys.argv[1:]),
        }
    import pandas as pd

    out_path = Path(args.out) if args.out else results_dir() / "bench" / "sampler.csv"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out_path, index=False)
    return out_path


def bench_step(args: argparse.Namespace) -> Path:
    import pandas as pd

    from ebft_repro.config import get_preset
    from ebft_repro.experiments.bench_step import bench_steps

    base = get_preset(args.preset_model, "qa_code", "ebft").base
    row = bench_steps(
        base,
        seq_len=args.seq_len,
        n_chunks=args.n_chunks,
        n_samples=args.n_samples,
        device=args.device,
        bf16=args.bf16,
        repeats=args.repeats,
    )
    row["command"] = "python -m ebft_repro.experiments.bench " + " ".join(sys.argv[1:])
    print(json.dumps(row, indent=2), file=sys.stderr)
    out_path = Path(args.out) if args.out else results_dir() / "bench" / "step.csv"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame([row])
    if out_path.exists():
        frame = pd.concat([pd.read_csv(out_path), frame], ignore_index=True)
    frame.to_csv(out_path, index=False)
    return out_path


def bench_sandbox(args: argparse.Namespace) -> Path:
    from ebft_repro.experiments.bench_sandbox import compare_with_baseline, measure_throughput

    if args.baseline_ref:
        result = compare_with_baseline(args.n_programs, args.baseline_ref, args.rounds)
        result["baseline_ref"] = args.baseline_ref
    else:
        result = measure_throughput(args.n_programs)
    result |= {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": "python -m ebft_repro.experiments.bench " + " ".join(sys.argv[1:]),
    }
    out_path = Path(args.out) if args.out else results_dir() / "bench" / "sandbox.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return out_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ebft_repro.experiments.bench", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="what", required=True)
    for name in ("sampler", "_one"):
        p = sub.add_parser(
            name, help="strided sampler speed and memory" if name == "sampler" else argparse.SUPPRESS
        )
        if name == "_one":
            p.add_argument("variant", choices=VARIANTS)
        else:
            p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
            p.add_argument("--out", default=None, help="CSV path (default: results/bench/sampler.csv)")
        p.add_argument("--seq-len", type=int, default=1024, help="L (default 1024)")
        p.add_argument("--stride", type=int, default=8)
        p.add_argument("--context-len", type=int, default=8)
        p.add_argument("--gen-len", type=int, default=8)
        p.add_argument(
            "--n-seqs", type=int, default=4, help="sequences (chunks x n samples; default 4 = one chunk, n=4)"
        )
        p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
        p.add_argument("--repeats", type=int, default=2)
    step = sub.add_parser("step", help="one EBFT step vs one SFT step on the same chunks")
    step.add_argument("--preset-model", default="tiny", choices=PRESETS[:-1], help="base architecture")
    step.add_argument("--seq-len", type=int, default=1024)
    step.add_argument("--n-chunks", type=int, default=16)
    step.add_argument("--n-samples", type=int, default=4)
    step.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    step.add_argument("--bf16", action="store_true", help="bf16 autocast")
    step.add_argument("--repeats", type=int, default=3)
    step.add_argument("--out", default=None, help="CSV path (default: results/bench/step.csv, appended)")
    sandbox = sub.add_parser("sandbox", help="sandboxed programs verified per second")
    sandbox.add_argument("--n-programs", type=int, default=200)
    sandbox.add_argument("--out", default=None, help="JSON path (default: results/bench/sandbox.json)")
    sandbox.add_argument("--baseline-ref", default=None, help="git commit to measure alternately against")
    sandbox.add_argument("--rounds", type=int, default=3, help="alternating rounds with a baseline")
    args = parser.parse_args(argv)
    if args.what == "_one":
        keys = ("seq_len", "stride", "context_len", "gen_len", "n_seqs", "device", "repeats")
        print(json.dumps(run_variant(args.variant, **{k: getattr(args, k) for k in keys})))
    elif args.what == "sampler":
        print(bench_sampler(args))
    elif args.what == "step":
        print(bench_step(args))
    else:
        print(bench_sandbox(args))


if __name__ == "__main__":
    main()
