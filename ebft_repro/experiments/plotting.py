"""Figures read from run files: accuracy and validation CE over training, final accuracy vs CE."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ebft_repro.evaluation.downstream import primary_metric
from ebft_repro.utils import read_jsonl

METHOD_COLORS = {"ebft": "#d62728", "sft": "#1f77b4", "rlvr": "#2ca02c", "ebft_fm": "#ff7f0e"}
METHOD_LABELS = {"ebft": "EBFT", "sft": "SFT", "rlvr": "RLVR", "ebft_fm": "EBFT γ=0 (FM only)"}
METHOD_MARKERS = {"ebft": "o", "sft": "s", "rlvr": "^", "ebft_fm": "D"}
METHOD_LINES = {"ebft": "-", "sft": "--", "rlvr": ":", "ebft_fm": "-."}
"""Distinct markers and dashes, so a method whose line coincides with another's stays visible."""
METRIC_LABELS = {
    "pass@1": "pass@1 (test)",
    "bleu": "BLEU (test, mean of directions)",
    "chrf": "chrF (test, mean of directions)",
    "val_ce": "validation CE (nats/token)",
    "unit_test_pass_frac": "unit tests passed (fraction, test)",
    "val_fm_loss": "validation CFM loss",
}


def _curves(runs: list[dict], metric: str) -> dict[tuple[str, str], list[list[tuple[int, float]]]]:
    curves = defaultdict(list)
    for run in runs:
        rows = [
            r
            for r in read_jsonl(Path(run["run_dir"]) / "metrics.jsonl")
            if r["kind"] == "eval" and metric in r
        ]
        curves[(run["task"], run["method"])].append([(r["step"], r[metric]) for r in rows])
    return curves


def plot_metric_vs_step(runs: list[dict], metric_for_task, path: Path, *, title: str) -> Path:
    """One panel per task; one line per method: mean over seeds with its 95% t-interval shaded.

    Step 0 is the base model (every method starts from it).
    """
    import numpy as np

    from ebft_repro.experiments.report import mean_interval

    tasks = sorted({run["task"] for run in runs})
    fig, axes = new_figure(len(tasks), size=(4.5, 3.6))
    for ax, task in zip(axes[0], tasks):
        metric = metric_for_task(task)
        curves = _curves([r for r in runs if r["task"] == task], metric)
        for (_, method), seeds in sorted(curves.items()):
            steps = [s for s, _ in seeds[0]]
            values = np.array([[v for _, v in seed] for seed in seeds if len(seed) == len(steps)])
            color = METHOD_COLORS.get(method)
            ax.plot(
                steps,
                values.mean(0),
                marker=METHOD_MARKERS.get(method, "o"),
                linestyle=METHOD_LINES.get(method, "-"),
                ms=4,
                color=color,
                label=f"{METHOD_LABELS.get(method, method)} (n={len(values)})",
            )
            if len(values) > 1:
                half = np.array([mean_interval(list(column))[1] for column in values.T])
                ax.fill_between(steps, values.mean(0) - half, values.mean(0) + half, color=color, alpha=0.12)
        ax.xaxis.get_major_locator().set_params(integer=True)
        _label_axis(ax, task, "optimizer step (0 = base model)", METRIC_LABELS.get(metric, metric))
    return save_figure(fig, path, title + "; mean and 95% interval over seeds")


def plot_accuracy_vs_ce(runs: list[dict], path: Path, *, title: str) -> Path:
    """Final downstream accuracy against final validation CE, one point per run."""
    tasks = sorted({run["task"] for run in runs})
    fig, axes = new_figure(len(tasks), size=(4.5, 3.6))
    for ax, task in zip(axes[0], tasks):
        metric = primary_metric(task)
        for method in METHOD_COLORS:
            points = [
                (r["final"].get("val_ce"), r["final"].get(metric))
                for r in runs
                if r["task"] == task and r["method"] == method
            ]
            points = [p for p in points if None not in p]
            if points:
                xs, ys = zip(*points)
                ax.scatter(
                    xs,
                    ys,
                    color=METHOD_COLORS[method],
                    marker=METHOD_MARKERS[method],
                    label=METHOD_LABELS[method],
                    s=30,
                    alpha=0.8,
                )
        base = {r["seed"]: r["initial"] for r in runs if r["task"] == task and r.get("initial")}
        points = [(b.get("val_ce"), b.get(metric)) for _, b in sorted(base.items())]  # one per sampling seed
        points = [p for p in points if None not in p]
        if points:
            xs, ys = zip(*points)
            ax.scatter(xs, ys, marker="*", s=120, color="black", label="base model (per seed)")
        _label_axis(
            ax, task, "validation CE (nats/token; lower is better)", METRIC_LABELS.get(metric, metric)
        )
    return save_figure(fig, path, title)


def _label_axis(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # a panel with nothing to plot gets no empty legend
        ax.legend(fontsize=8)


def new_figure(n_cols: int = 1, n_rows: int = 1, size: tuple[float, float] = (4.6, 3.6)):
    """A Figure with an (n_rows, n_cols) grid of axes; object API, so no pyplot state or backend."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * n_cols, size[1] * n_rows))
    return fig, fig.subplots(n_rows, n_cols, squeeze=False)


def save_figure(fig, path: Path, title: str | None = None, *, dpi: int = 120) -> Path:
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return Path(path)


def plot_comparison(out_dir: Path, runs: list[dict]) -> list[Path]:
    """The three standard figures of a preset, written next to its summary."""
    out_dir = Path(out_dir)
    preset = out_dir.name
    return [
        plot_metric_vs_step(
            runs, primary_metric, out_dir / "accuracy_vs_step.png", title=f"Downstream accuracy ({preset})"
        ),
        plot_metric_vs_step(
            runs,
            lambda _: "val_ce",
            out_dir / "val_ce_vs_step.png",
            title=f"Validation cross-entropy ({preset})",
        ),
        plot_metric_vs_step(
            runs,
            lambda task: "chrf" if task == "translation" else "unit_test_pass_frac",
            out_dir / "secondary_accuracy_vs_step.png",
            title=f"Unit tests passed (coding) and chrF (translation) ({preset})",
        ),
        plot_accuracy_vs_ce(
            runs, out_dir / "accuracy_vs_ce.png", title=f"Final accuracy vs validation CE ({preset})"
        ),
    ]
