"""The per-GPU memory table of ``docs/scaling.md``: the paper's two models at their strided lengths.

``python -m ebft_repro.experiments.scaling`` prints the memory table of ``docs/scaling.md`` as Markdown.
The parameter counts and memory estimates behind it, with their derivations, are in
:mod:`ebft_repro.experiments.memory_model`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ebft_repro.experiments.memory_model import ARCHITECTURES, STRATEGIES, estimate_memory, strided_seq_len

if TYPE_CHECKING:
    import pandas

# (model, task whose strided length the table uses): spec section 7.
PAPER_SETTINGS = (("Qwen/Qwen2.5-1.5B", "qa_code"), ("meta-llama/Llama-3.2-1B", "translation"))
# Short column names for the printed table.
COLUMN_NAMES = {
    "policy_weights": "weights",
    "gradients": "grads",
    "optimizer_state": "AdamW",
    "feature_net": "feature net",
    "activations": "activations",
    "logits": "logits",
    "attention_mask": "mask",
    "total": "total",
}
PAPER_LAYOUTS = {"qa_code": (1024, 8, 8, 8), "translation": (1024, 2, 4, 4)}  # (L, s, C, G)


def memory_table(
    n_gpus: tuple[int, ...] = (1, 2, 4, 8),
    strategies: tuple[str, ...] = STRATEGIES,
    lora_ranks: tuple[int, ...] = (0, 16),
    micro_batch: int = 8,
    gradient_checkpointing: bool = True,
) -> pandas.DataFrame:
    """Per-GPU GiB for the paper's two models (Qwen at the code S=2040, Llama at the translation S=3060).

    Returns:
        One row per (model, GPUs, strategy, fine-tune), with the components of :func:`estimate_memory`.
    """
    import pandas

    rows = []
    for model, task in PAPER_SETTINGS:
        seq_len_total = strided_seq_len(*PAPER_LAYOUTS[task])
        for gpus in n_gpus:
            for strategy in strategies:
                for rank in lora_ranks:
                    parts = estimate_memory(
                        model,
                        n_gpus=gpus,
                        seq_len_total=seq_len_total,
                        micro_batch=micro_batch,
                        strategy=strategy,
                        lora_rank=rank,
                        gradient_checkpointing=gradient_checkpointing,
                    )
                    tune = f"LoRA r={rank}" if rank else "full"
                    labels = {"model": ARCHITECTURES[model].name, "S": seq_len_total, "GPUs": gpus}
                    labels |= {"strategy": strategy, "fine-tune": tune}
                    rows.append(labels | {COLUMN_NAMES[name]: value for name, value in parts.items()})
    return pandas.DataFrame(rows)


def to_markdown(table: pandas.DataFrame, digits: int = 2) -> str:
    """A GitHub Markdown table (no ``tabulate`` dependency); floats rounded to ``digits``."""
    cells = [[f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row] for row in table.values]
    lines = ["| " + " | ".join(map(str, table.columns)) + " |"]
    aligns = ["---:" if table[column].dtype.kind in "fi" else "---" for column in table.columns]
    lines.append("|" + "|".join(aligns) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Per-GPU memory (GiB) of EBFT at the paper's settings.")
    parser.add_argument("--micro-batch", type=int, default=8, help="sequences per forward (paper: 8)")
    parser.add_argument("--no-checkpointing", action="store_true", help="without gradient checkpointing")
    args = parser.parse_args(argv)
    table = memory_table(micro_batch=args.micro_batch, gradient_checkpointing=not args.no_checkpointing)
    print(to_markdown(table))


if __name__ == "__main__":
    main()
