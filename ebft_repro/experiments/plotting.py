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
METRIC_NAMES = {
    "pass@1": "pass@1",
    "bleu": "BLEU (mean of directions)",
    "chrf": "chrF (mean of directions)",
    "unit_test_pass_frac": "unit tests passed (fraction)",
    "val_ce": "CE (nats/token)",
    "val_ce_answer": "answer CE (nats/token)",
    "val_fm_loss": "CFM loss",
    "reward_mean": "training reward (5-step mean)",
}
OBJECTIVES = {"sft": "val_ce", "rlvr": "reward_mean", "ebft": "val_fm_loss", "ebft_fm": "val_fm_loss"}
"""What each method optimises, as the run files record it: SFT's CE, RLVR's training reward (the verifier's
score of its own samples), EBFT's feature-matching loss on validation chunks."""
_SPLIT_OF = {"qa_code": "Q&A", "code": "Q&A", "translation": "translation"}  # raw code is scored on Q&A


def metric_label(task: str, metric: str) -> str:
    """An axis label saying what was measured on which split (raw code's accuracy is on the Q&A tests)."""
    name = METRIC_NAMES.get(metric, metric)
    if metric.startswith("val_"):
        return f"{name} on {task} validation"
    return name if metric == "reward_mean" else f"{name} on {_SPLIT_OF[task]} test"


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
        _label_axis(ax, task, "optimizer step (0 = base model)", metric_label(task, metric))
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
                ax.scatter(  # hollow, so a point under another stays visible
                    xs,
                    ys,
                    facecolors="none",
                    edgecolors=METHOD_COLORS[method],
                    marker=METHOD_MARKERS[method],
                    label=METHOD_LABELS[method],
                    s=45,
                    linewidths=1.4,
                )
        base = {r["seed"]: r["initial"] for r in runs if r["task"] == task and r.get("initial")}
        points = [(b.get("val_ce"), b.get(metric)) for _, b in sorted(base.items())]  # one per sampling seed
        points = [p for p in points if None not in p]
        if points:
            xs, ys = zip(*points)
            style = {"marker": "*", "s": 140, "facecolors": "none", "edgecolors": "black", "zorder": 1}
            ax.scatter(xs, ys, label="base model (per seed)", **style)
        _label_axis(ax, task, metric_label(task, "val_ce") + " (lower is better)", metric_label(task, metric))
    return save_figure(fig, path, title)


def plot_lr_sweep(selection: dict, path: Path, *, title: str) -> Path:
    """Validation accuracy of seed 0 at every learning rate tried, per (task, method), the pick filled;
    the base model drawn as the lr -> 0 end (a dashed line: what no update at all scores)."""
    tasks = sorted({key.rsplit("-", 1)[0] for key in selection})
    fig, axes = new_figure(len(tasks), size=(4.5, 3.6))
    for ax, task in zip(axes[0], tasks):
        base = None
        for method in METHOD_COLORS:
            entry = selection.get(f"{task}-{method}")
            if not entry or len(entry.get("validation", {})) < 2:
                continue
            points = sorted((float(lr), v) for lr, v in entry["validation"].items() if v is not None)
            style = {"color": METHOD_COLORS[method], "marker": METHOD_MARKERS[method]}
            ax.plot(*zip(*points), linestyle=METHOD_LINES[method], label=METHOD_LABELS[method], **style)
            picked = dict(points)[entry["picked"]]
            ax.scatter([entry["picked"]], [picked], s=110, zorder=3, **style)
            base = entry.get("base_validation", base)
        if base is not None:
            ax.axhline(base, color="black", linestyle="--", linewidth=1, label="base model (lr → 0)")
        ax.set_xscale("log")
        ylabel = f"{METRIC_NAMES[primary_metric(task)]} on {_SPLIT_OF[task]} validation (seed 0)"
        _label_axis(ax, task, "learning rate (picked: large marker)", ylabel)
    return save_figure(fig, path, title)


def plot_objectives(runs: list[dict], path: Path, *, title: str) -> Path:
    """Each method's own objective over training (:data:`OBJECTIVES`), one row per objective, one column
    per task: did a method fail to optimise its objective, or optimise one that does not help?"""
    import numpy as np

    tasks = sorted({run["task"] for run in runs})
    objectives = sorted({OBJECTIVES[run["method"]] for run in runs if run["method"] in OBJECTIVES})
    fig, axes = new_figure(len(tasks), len(objectives), size=(4.5, 3.3))
    for row, objective in enumerate(objectives):
        for ax, task in zip(axes[row], tasks):
            for method in (m for m, o in OBJECTIVES.items() if o == objective):
                kind = "train" if objective == "reward_mean" else "eval"
                for index, run in enumerate(r for r in runs if (r["task"], r["method"]) == (task, method)):
                    rows = read_jsonl(Path(run["run_dir"]) / "metrics.jsonl")
                    points = [(r["step"], r[objective]) for r in rows if r["kind"] == kind and objective in r]
                    if points:
                        steps, values = zip(*points)
                        if kind == "train":  # a noisy per-step reward: a running mean over (up to) 5 steps
                            width = min(5, len(values))
                            values = np.convolve(values, np.ones(width) / width, mode="valid")
                            steps = steps[width - 1 :]
                        label = METHOD_LABELS[method] if index == 0 else None
                        ax.plot(steps, values, color=METHOD_COLORS[method], linewidth=1, label=label)
            _label_axis(ax, task, "optimizer step (one line per seed)", metric_label(task, objective))
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


def plot_comparison(out_dir: Path, runs: list[dict], selection: dict | None = None) -> list[Path]:
    """The standard figures of a preset, written next to its summary (the lr sweep needs ``selection``,
    the content of ``lr_selection.json``)."""
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
        plot_objectives(
            runs, out_dir / "objectives_vs_step.png", title=f"Each method's objective ({preset})"
        ),
        *(
            [plot_lr_sweep(selection, out_dir / "lr_sweep.png", title=f"Learning-rate sweeps ({preset})")]
            if selection
            else []
        ),
    ]
