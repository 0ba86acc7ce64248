"""The reproduction runner: every (task, method, seed) of a preset, learning-rate selection, aggregation.

Fairness rules (issue: "SFT and RLVR baselines"): all methods of a task start from the same base checkpoint,
see the same data order for a seed (:func:`ebft_repro.steps.batch_indices`), and get the same number of
optimizer steps. Each method's learning rate is picked from a grid of the same size for every method, on the
downstream metric of the *validation* prompts at the end of the seed-0 run (ties: lower validation CE);
the grid and the pick are written to ``lr_selection.json``. Runs are cached by config (a finished run with
an identical config is reused unless ``force``) and resume from their last checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from pathlib import Path

from .config import METHODS, TASKS, apply_overrides, get_preset
from .evaluation import primary_metric
from .report import mean_interval
from .trainer import train
from .utils import environment_info, read_json, results_dir, write_json

log = logging.getLogger(__name__)

DEFAULT_SEEDS = {"tiny": [0], "small": [0, 1, 2], "paper": [43]}
REPORTED = (
    "pass@1",
    "pass@4",
    "bleu",
    "chrf",
    "val_ce",
    "val_ce_answer",
    "val_fm_loss",
    "train_s",
    "tokens_processed",
)


def _lr_tag(lr: float) -> str:
    return f"lr{lr:.0e}".replace("-0", "-").replace("+0", "")


def select_lr(summaries: dict[float, dict], task: str) -> float:
    """Best learning rate on validation accuracy at the last step; ties broken by lower validation CE."""
    metric = f"val_{primary_metric(task)}"

    def key(item):
        final = item[1]["final"]
        return (-final.get(metric, float("-inf")), final.get("val_ce", float("inf")))

    return min(summaries.items(), key=key)[0]


def reproduce(
    preset: str = "tiny",
    *,
    tasks: list[str] | None = None,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
    out_dir: Path | None = None,
    force: bool = False,
    lr_sweep: bool = True,
    overrides: list[str] | None = None,
) -> Path:
    """Run the comparison and write ``summary.csv``, ``summary.md``, figures and per-run files."""
    tasks, methods = list(tasks or TASKS), list(methods or METHODS)
    seeds = list(seeds if seeds is not None else DEFAULT_SEEDS[preset])
    out_dir = Path(out_dir) if out_dir else results_dir() / preset
    runs_dir = out_dir / "runs"
    started = time.time()
    selection = read_json(out_dir / "lr_selection.json") if (out_dir / "lr_selection.json").exists() else {}
    for task in tasks:
        for method in methods:
            cfg = apply_overrides(get_preset(preset, task, method, seed=seeds[0]), overrides or [])
            grid = cfg.optim.lr_grid if (lr_sweep and cfg.optim.lr_grid) else (cfg.optim.lr,)
            sweep = {}
            for lr in grid:
                run_cfg = replace(cfg, optim=replace(cfg.optim, lr=lr))
                name = run_cfg.run_name if len(grid) == 1 else f"{run_cfg.run_name}-{_lr_tag(lr)}"
                sweep[lr] = train(run_cfg, run_dir=runs_dir / name, force=force).summary
            best = select_lr(sweep, task)
            selection[f"{task}-{method}"] = {
                "grid": list(grid),
                "picked": best,
                "criterion": f"val_{primary_metric(task)} at the last step of seed {seeds[0]}, ties: val_ce",
                "validation": {
                    str(lr): s["final"].get(f"val_{primary_metric(task)}") for lr, s in sweep.items()
                },
            }
            write_json(out_dir / "lr_selection.json", selection)
            for seed in seeds[1:]:
                seed_cfg = replace(cfg, seed=seed, optim=replace(cfg.optim, lr=best))
                name = seed_cfg.run_name if len(grid) == 1 else f"{seed_cfg.run_name}-{_lr_tag(best)}"
                train(seed_cfg, run_dir=runs_dir / name, force=force)
    write_json(out_dir / "environment.json", environment_info() | {"wall_s": round(time.time() - started, 1)})
    aggregate(out_dir, selection)
    return out_dir


def collect_runs(out_dir: Path, selection: dict | None = None) -> list[dict]:
    """Finished runs under ``out_dir/runs``; with a selection, only the picked learning rate of each pair."""
    runs = []
    for summary_path in sorted((Path(out_dir) / "runs").glob("*/summary.json")):
        summary = read_json(summary_path)
        pick = (selection or {}).get(f"{summary['task']}-{summary['method']}")
        if pick and len(pick["grid"]) > 1 and not math.isclose(summary["lr"], pick["picked"]):
            continue
        summary["run_dir"] = str(summary_path.parent)
        runs.append(summary)
    return runs


def aggregate(out_dir: Path, selection: dict | None = None):
    """Mean and 95% t-interval over seeds per (task, method): ``summary.csv``, ``summary.md``, figures."""
    import pandas as pd

    from .plotting import plot_comparison

    runs = collect_runs(out_dir, selection)
    if not runs:
        raise ValueError(f"no finished runs under {out_dir}/runs")
    records = []
    for run in runs:
        row = {"task": run["task"], "method": run["method"], "seed": run["seed"], "lr": run["lr"]}
        row |= {k: v for k, v in run["final"].items() if k in REPORTED}
        row |= {"train_s": run["train_s"], "tokens_processed": run["tokens_processed"]}
        records.append(row)
    frame = pd.DataFrame.from_records(records)
    frame.to_csv(out_dir / "runs.csv", index=False)
    metrics = [m for m in REPORTED if m in frame.columns]
    rows = []
    for (task, method), group in frame.groupby(["task", "method"], sort=True):
        row = {"task": task, "method": method, "n_seeds": len(group), "lr": group["lr"].iloc[0]}
        for metric in metrics:
            values = group[metric].dropna()
            if values.empty:
                continue
            row[metric], row[f"{metric}_ci95"] = mean_interval(values.tolist())
        rows.append(row)
    summary = pd.DataFrame(rows)
    summary.to_csv(out_dir / "summary.csv", index=False)
    (out_dir / "summary.md").write_text(_markdown(summary, metrics, out_dir.name))
    plot_comparison(out_dir, runs)
    return summary


def _markdown(summary, metrics: list[str], preset: str) -> str:
    lines = [f"# EBFT vs SFT vs RLVR: `{preset}` preset", ""]
    if preset == "tiny":
        lines += [
            "> **Smoke test.** Tiny CPU models and a few dozen steps: these numbers check that the pipeline",
            "> runs end to end. They say nothing about the paper's claims.",
            "",
        ]
    lines += [
        "Mean ± 95% t-interval over seeds (± is blank with one seed). Accuracy: pass@k (coding, unit tests",
        "in the sandbox) or BLEU/chrF (translation). CE in nats/token on validation chunks. Cost: `train_s`",
        "(wall seconds of the optimizer steps, evaluation excluded) and `tokens_processed` (token forwards).",
        "",
        "RLVR on `code` trains on the Q&A coding problems (the raw-code corpus has no verifier), and every",
        "method's downstream accuracy on `code` is measured on the Q&A coding test prompts (as the paper",
        "measures unstructured-code training on HumanEval).",
        "",
    ]
    shown = list(metrics)
    lines.append("| task | method | seeds | lr | " + " | ".join(shown) + " |")
    lines.append("|" + "---|" * (4 + len(shown)))
    for _, row in summary.iterrows():
        cells = []
        for metric in shown:
            value, half = row.get(metric), row.get(f"{metric}_ci95")
            if value is None or (isinstance(value, float) and math.isnan(value)):
                cells.append("")
            elif half is None or math.isnan(half):
                cells.append(f"{value:.4g}")
            else:
                cells.append(f"{value:.4g} ± {half:.2g}")
        lines.append(
            f"| {row['task']} | {row['method']} | {row['n_seeds']} | {row['lr']:.0e} | "
            + " | ".join(cells)
            + " |"
        )
    lines.append("")
    return "\n".join(lines)
