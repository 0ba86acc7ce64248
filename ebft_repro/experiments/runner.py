"""The reproduction runner: every (task, method, seed) of a preset, learning-rate selection, aggregation.

Fairness rules (issue: "SFT and RLVR baselines"): all methods of a task start from the same base checkpoint,
see the same data order for a seed (:func:`ebft_repro.batching.batch_indices`), and get the same number of
optimizer steps. Each method's learning rate is picked from a grid of the same size for every method, on the
downstream metric of the *validation* prompts at the end of the seed-0 run (ties: lower validation CE);
the grid, the pick and the base model's validation score (the grid's lr -> 0 end,
:func:`ebft_repro.run_eval.base_validation`) are written to ``lr_selection.json``. Runs are cached by config
(a finished run with an identical config is reused unless ``force``) and resume from their last checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from ebft_repro.config import METHODS, TASKS, apply_overrides, get_preset
from ebft_repro.evaluation.downstream import primary_metric
from ebft_repro.experiments.controls import control_shares
from ebft_repro.experiments.progress_line import ComparisonProgress, planned_runs
from ebft_repro.experiments.report import claims_table, collect_runs, mean_interval, runs_frame
from ebft_repro.experiments.summary_md import (
    controls_markdown,
    lr_picks_markdown,
    summary_markdown,
    verdicts_markdown,
)
from ebft_repro.run_eval import STEP0_DIR, base_validation
from ebft_repro.trainer import train
from ebft_repro.utils import (
    CorruptFileError,
    atomic_path,
    environment_info,
    file_lock,
    read_json,
    results_dir,
    write_json,
    write_text_atomic,
)

log = logging.getLogger(__name__)

DEFAULT_SEEDS = {"tiny": [0], "cpu": [0, 1, 2], "small": [0, 1, 2], "paper": [43]}
MAX_GRID_EXTENSIONS = 4
"""How many times a learning-rate grid is extended past an edge pick before the edge is accepted (and
flagged as such in ``lr_selection.json``)."""
REPORTED = (
    "pass@1",
    "pass@4",
    "unit_test_pass_frac",
    "bleu",
    "chrf",
    "val_ce",
    "val_ce_answer",
    "val_fm_loss",
    "train_s",
    "tokens_processed",
)
MICRO_OVERRIDES = (
    "train.n_steps=1",
    "train.chunks_per_step=1",
    "train.checkpoint_every_steps=1",
    "eval.every_steps=1",
    "eval.n_prompts=2",
    "eval.n_samples=2",
    "eval.max_new_tokens=8",
    "eval.n_fm_chunks=1",
    "rlvr.prompts_per_step=1",
    "rlvr.max_new_tokens=8",
)
"""Shrink a tiny-preset run to seconds for tiny mode. No ``data.*`` field: the base model is keyed by them."""


COUNTS = ("correct_samples", "eval_samples", "solved_prompts", "eval_prompts")
"""Raw counts behind pass@1 (correct_samples / eval_samples) and pass@k (solved_prompts / eval_prompts)."""


def extend_grid(grid: list[float], best: float) -> float | None:
    """The next learning rate past an edge pick (same geometric step as the grid's edge), else None.

    Grids of fewer than 3 points are not extended: with 2 points every pick is an edge.
    """
    grid = sorted(grid)
    if len(grid) < 3:
        return None
    if math.isclose(best, grid[0]):
        return grid[0] * grid[0] / grid[1]
    if math.isclose(best, grid[-1]):
        return grid[-1] * grid[-1] / grid[-2]
    return None


def _lr_tag(lr: float) -> str:
    return f"lr{lr:.0e}".replace("-0", "-").replace("+0", "")


def select_lr(summaries: dict[float, dict], task: str) -> float:
    """Best learning rate on validation accuracy at the last step; ties broken by lower validation CE."""
    metric = f"val_{primary_metric(task)}"

    def key(item):
        final = item[1]["final"]
        return (-final.get(metric, float("-inf")), final.get("val_ce", float("inf")))

    return min(summaries.items(), key=key)[0]


@dataclass
class ReproduceResult:
    """Where the reproduction was written, and how each of its runs was obtained."""

    out_dir: Path
    counts: Counter = field(default_factory=Counter)
    """Runs per :attr:`ebft_repro.trainer.RunResult.status`: ``reused``, ``resumed``, ``computed``."""

    def message(self) -> str:
        """One line for the user: what was reused from cache, what was computed, how to recompute."""
        reused, resumed, computed = (self.counts[k] for k in ("reused", "resumed", "computed"))
        line = (
            f"wrote {self.out_dir}: {reused} run(s) reused from cache (finished, same config),"
            f" {resumed} resumed from a checkpoint, {computed} computed"
        )
        return line + ("; pass --force to recompute every run" if reused or resumed else "")


def _update_selection(out_dir: Path, key: str, entry: dict) -> None:
    """Add one pair's pick to ``lr_selection.json`` (re-read under a lock: concurrent runners merge)."""
    path = out_dir / "lr_selection.json"
    with file_lock(out_dir / "lr_selection.lock", what=f"updating {path}"):
        selection = read_selection(out_dir)
        selection[key] = entry
        write_json(path, selection)


def read_selection(out_dir: Path) -> dict:
    path = out_dir / "lr_selection.json"
    if not path.exists():
        return {}
    try:
        return read_json(path)
    except CorruptFileError as err:
        raise CorruptFileError(
            f"{err}: delete it and rerun reproduce for every task (finished runs are reused, so only the"
            " learning-rate picks are recomputed)"
        ) from None


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
    """Run the comparison (see :func:`run_reproduction`) and return its output folder."""
    options = dict(tasks=tasks, methods=methods, seeds=seeds, out_dir=out_dir, force=force)
    return run_reproduction(preset, lr_sweep=lr_sweep, overrides=overrides, **options).out_dir


def run_reproduction(
    preset: str = "tiny",
    *,
    tasks: list[str] | None = None,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
    out_dir: Path | None = None,
    force: bool = False,
    lr_sweep: bool = True,
    overrides: list[str] | None = None,
) -> ReproduceResult:
    """Run the comparison and write ``summary.csv``, ``summary.md``, figures and per-run files.

    Runs are cached per folder: a finished run with the same config is reused, an interrupted one resumes,
    and a second runner on the same folder waits for each run's lock and then reuses it.
    """
    tasks, methods = list(tasks or TASKS), list(methods or METHODS)
    seeds = list(seeds if seeds is not None else DEFAULT_SEEDS[preset])
    out_dir = Path(out_dir) if out_dir else results_dir() / preset
    runs_dir, started = out_dir / "runs", time.time()
    step0 = runs_dir / STEP0_DIR
    result = ReproduceResult(out_dir)
    read_selection(out_dir)  # a corrupt file fails now, not after hours of training
    line = ComparisonProgress(planned_runs(preset, tasks, methods, len(seeds), lr_sweep, overrides or []))

    def run_one(run_cfg, name: str):
        run_started = time.time()
        run = train(run_cfg, run_dir=runs_dir / name, force=force, step0_cache=step0)
        result.counts[run.status] += 1
        line.record(run.status, time.time() - run_started)
        return run

    for task in tasks:
        for method in methods:
            cfg = apply_overrides(get_preset(preset, task, method, seed=seeds[0]), overrides or [])
            grid = list(cfg.optim.lr_grid if (lr_sweep and cfg.optim.lr_grid) else (cfg.optim.lr,))
            sweep, added = {}, []
            while True:
                for lr in grid:
                    if lr in sweep:
                        continue
                    run_cfg = replace(cfg, optim=replace(cfg.optim, lr=lr))
                    name = run_cfg.run_name if len(grid) == 1 else f"{run_cfg.run_name}-{_lr_tag(lr)}"
                    sweep[lr] = run_one(run_cfg, name).summary
                best = select_lr(sweep, task)
                extra = extend_grid(grid, best)
                if extra is None or len(added) >= MAX_GRID_EXTENSIONS:
                    break
                log.info(
                    "%s-%s: lr %g is at the edge of %s; extending the grid with %g",
                    task,
                    method,
                    best,
                    grid,
                    extra,
                )
                added.append(extra)
                grid = sorted(grid + [extra])
                line.plan_more()
            metric = f"val_{primary_metric(task)}"
            entry = {
                "grid": list(grid),
                "picked": best,
                "extended_with": added,
                "interior": len(grid) < 3 or grid[0] < best < grid[-1],
                "criterion": f"{metric} at the last step of seed {seeds[0]}, ties: val_ce",
                "validation": {str(lr): s["final"].get(metric) for lr, s in sweep.items()},
                "validation_ce": {str(lr): s["final"].get("val_ce") for lr, s in sweep.items()},
            }
            if len(grid) > 1:  # the lr -> 0 end of the grid, to read an edge pick against
                base = base_validation(cfg, step0, reuse=not force)
                entry["base_validation"] = base.get(metric)
                if "val_eval_samples" in base and metric.endswith("pass@1"):  # a rate over this many samples
                    entry["validation_samples"] = base["val_eval_samples"]
            _update_selection(out_dir, f"{task}-{method}", entry)
            for seed in seeds[1:]:
                seed_cfg = replace(cfg, seed=seed, optim=replace(cfg.optim, lr=best))
                name = seed_cfg.run_name if len(grid) == 1 else f"{seed_cfg.run_name}-{_lr_tag(best)}"
                run_one(seed_cfg, name)
    line.close()
    environment = out_dir / "environment.json"
    if result.counts["computed"] or result.counts["resumed"] or not environment.exists():
        write_json(environment, environment_info() | {"wall_s": round(time.time() - started, 1)})
    # else every run was reused: environment.json still describes the code and machine that computed them
    aggregate(out_dir, read_selection(out_dir))
    log.info(result.message())
    return result


def base_records(runs: list[dict]) -> list[dict]:
    """One ``base`` row per (task, seed): the step-0 evaluation, before any update.

    Every method starts from the same checkpoint and evaluates step 0 with the same random streams, so the
    step-0 metrics of a (task, seed) agree across its runs; the first run (by method name) supplies them.
    """
    first: dict[tuple[str, int], dict] = {}
    for run in sorted(runs, key=lambda r: (r["task"], r["seed"], r["method"])):
        first.setdefault((run["task"], run["seed"]), run)
    rows = []
    for (task, seed), run in sorted(first.items()):
        row = {"task": task, "method": "base", "seed": seed, "lr": float("nan")}
        row |= {k: v for k, v in run["initial"].items() if k in REPORTED + COUNTS}
        rows.append(row | {"train_s": 0.0, "tokens_processed": 0.0})
    return rows


def aggregate(out_dir: Path, selection: dict | None = None):
    """Mean and 95% t-interval over seeds per (task, method): ``summary.csv``, ``summary.md``, figures."""
    import pandas as pd

    from ebft_repro.experiments.plotting import plot_comparison

    runs = collect_runs(out_dir, selection)
    if not runs:
        raise ValueError(f"no finished runs under {out_dir}/runs")
    records = base_records(runs)
    for run in runs:
        row = {"task": run["task"], "method": run["method"], "seed": run["seed"], "lr": run["lr"]}
        row |= {k: v for k, v in run["final"].items() if k in REPORTED + COUNTS}
        row |= {"train_s": run["train_s"], "tokens_processed": run["tokens_processed"]}
        records.append(row)
    frame = pd.DataFrame.from_records(records)
    with atomic_path(out_dir / "runs.csv") as tmp:
        frame.to_csv(tmp, index=False)
    metrics = [m for m in REPORTED if m in frame.columns]
    rows = []
    order = {m: i for i, m in enumerate(("base",) + METHODS)}
    frame = frame.sort_values(
        ["task", "method"], key=lambda col: col.map(order) if col.name == "method" else col
    )
    for (task, method), group in frame.groupby(["task", "method"], sort=False):
        row = {"task": task, "method": method, "n_seeds": len(group), "lr": group["lr"].iloc[0]}
        for metric in metrics:
            values = group[metric].dropna()
            if values.empty:
                continue
            row[metric], row[f"{metric}_ci95"] = mean_interval(values.tolist())
        for count in COUNTS:  # summed over seeds
            if count in group.columns and group[count].notna().any():
                row[count] = int(group[count].sum())
        rows.append(row)
    summary = pd.DataFrame(rows)
    with atomic_path(out_dir / "summary.csv") as tmp:
        summary.to_csv(tmp, index=False)
    claims = claims_table(runs_frame(runs))
    with atomic_path(out_dir / "verdicts.csv") as tmp:
        claims.to_csv(tmp, index=False)
    text = summary_markdown(summary, metrics, out_dir.name) + verdicts_markdown(claims)
    text += controls_markdown(control_shares(summary))
    text += lr_picks_markdown(selection or {})
    write_text_atomic(out_dir / "summary.md", text)
    plot_comparison(out_dir, runs, selection)
    return summary
