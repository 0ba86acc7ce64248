"""Figures of the teaching notebooks. Each function draws with matplotlib's object API (no pyplot state),
saves a PNG at ``path`` and returns the path (display it with :func:`ebft_repro.notebook.session.show`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ebft_repro.experiments.plotting import METHOD_COLORS, new_figure, save_figure

WHITENING_COLORS = {"none": "#7f7f7f", "sample": "#d62728", "feature": "#9467bd"}
BASELINE_STYLES = {"rloo": ("RLOO baseline (package)", "-", "o"), "none": ("no baseline", "--", "s")}


def plot_training_curves(metrics: list[dict], path: Path, *, title: str) -> Path:
    """Quickstart: per-step rewards (train) and validation CE / CFM loss (eval rows) of one run."""
    train = [r for r in metrics if r["kind"] == "train"]
    evals = [r for r in metrics if r["kind"] == "eval"]
    fig, axes = new_figure(3)
    ax = axes[0, 0]
    steps = [r["step"] for r in train]
    for key, label in (
        ("reward", "reward r = a - d"),
        ("alignment", "alignment a"),
        ("diversity", "diversity d"),
    ):
        ax.plot(steps, [r[key] for r in train], marker="o", ms=3, label=label)
    ax.set(xlabel="optimizer step", ylabel="mean over rollouts", title="feature-matching reward (train)")
    ax.legend(fontsize=8)
    eval_steps = [r["step"] for r in evals]
    for ax, key, label in (
        (axes[0, 1], "val_ce", "validation CE (nats/token)"),
        (axes[0, 2], "val_fm_loss", "validation CFM loss (lower is better)"),
    ):
        ax.plot(eval_steps, [r[key] for r in evals], marker="o", color="black")
        ax.set(xlabel="optimizer step", ylabel=label, title=label.split(" (")[0])
    from matplotlib.ticker import MaxNLocator

    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return save_figure(fig, path, title, dpi=110)


def plot_unbiasedness(sequences, estimates: np.ndarray, exact: np.ndarray, path: Path, *, title: str) -> Path:
    """Exact gradient per logit vs the mean of one-group estimates, with 95% error bars (1.96 SE)."""
    estimates = np.asarray(estimates)
    mean = estimates.mean(0)
    err = 1.96 * estimates.std(0, ddof=1) / np.sqrt(len(estimates))
    x = np.arange(len(sequences))
    fig, axes = new_figure(1, size=(7.0, 3.6))
    ax = axes[0, 0]
    ax.bar(x, exact, color="#cccccc", label="exact gradient (autograd)")
    ax.errorbar(x, mean, yerr=err, fmt="o", color="#d62728", ms=4, capsize=3, label="mean estimate ± 1.96 SE")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(x, [f'"{s}"' for s in sequences])
    ax.set(xlabel="sequence y (one logit each)", ylabel="d CFM / d theta_y")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path, title, dpi=110)


def plot_variance_vs_n(frame, path: Path, *, title: str) -> Path:
    """Variance of one-group estimates vs n (log-log); one panel per whitening, one line per baseline."""
    whitenings = list(dict.fromkeys(frame["whitening"]))
    fig, axes = new_figure(len(whitenings))
    for ax, whitening in zip(axes[0], whitenings):
        sub = frame[frame["whitening"] == whitening]
        for baseline, (label, style, marker) in BASELINE_STYLES.items():
            rows = sub[sub["baseline"] == baseline].sort_values("n")
            if len(rows):
                ax.plot(rows["n"], rows["variance"], style, marker=marker, label=label)
        ns = np.array(sorted(sub["n"].unique()), dtype=float)
        first = sub[sub["n"] == ns[0]]["variance"].min()
        ax.plot(ns, first * ns[0] / ns, ":", color="gray", label="1/n reference")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(ns, [str(int(n)) for n in ns])
        name = "no whitening (exact CFM gradient)" if whitening == "none" else f"whitening = {whitening}"
        ax.set(xlabel="n (samples per group)", ylabel="trace Cov(one-group estimate)", title=name)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    return save_figure(fig, path, title, dpi=110)


def plot_whitening_diversity(frame, path: Path, *, title: str) -> Path:
    """Mean diversity reward for groups of distinct vs duplicated samples, and the gradient's direction."""
    fig, axes = new_figure(2)
    modes = list(frame["whitening"])
    x = np.arange(len(modes))
    ax = axes[0, 0]
    for offset, column, color, label in (
        (-0.2, "diversity (all distinct)", "#1f77b4", "groups of n distinct samples"),
        (0.2, "diversity (with a duplicate)", "#ff7f0e", "groups with a repeated sample"),
    ):
        ax.bar(x + offset, frame[column], width=0.4, color=color, label=label)
    ax.set_xticks(x, modes)
    ax.set(xlabel="whitening", ylabel="mean diversity reward d_j", title="diversity term")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    bars = ax.bar(x, frame["cosine_to_exact"], color=[WHITENING_COLORS[m] for m in modes])
    ax.bar_label(bars, fmt="%.3f", fontsize=8)  # the values, since bars from 0 hide small differences
    ax.set_ylim(0, 1.1)
    ax.set_xticks(x, modes)
    ax.set(xlabel="whitening", ylabel="cosine(mean estimate, exact CFM gradient)", title="gradient direction")
    for ax in axes[0]:
        ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path, title, dpi=110)


def plot_strided_mask(layout, path: Path, *, title: str) -> Path:
    """The strided attention mask as an image, rows and columns labelled with tokens, blocks and steps."""
    from matplotlib.colors import ListedColormap

    from ebft_repro.sampler import strided_attention_mask, strided_position_ids

    allowed = strided_attention_mask(layout).numpy()  # (S, S)
    positions = strided_position_ids(layout).tolist()
    labels = [f"x{i}" for i in range(layout.seq_len)]
    labels += [
        f"b{i % layout.n_blocks}t{i // layout.n_blocks}" for i in range(layout.n_blocks * layout.gen_len)
    ]
    total = layout.total_len
    fig, axes = new_figure(1, size=(9.0, 8.4))
    ax = axes[0, 0]
    # colour of an allowed cell: grey on ground-truth rows, one colour per block on generated rows
    palette = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"]
    block_of = np.array([-1] * layout.seq_len + [i % layout.n_blocks for i in range(total - layout.seq_len)])
    row_colour = np.where(block_of >= 0, 2 + block_of % len(palette), 1)  # (S,)
    image = np.where(allowed, row_colour[:, None], 0)  # (S, S)
    colors = ["white", "#555555"] + palette[: min(layout.n_blocks, len(palette))]
    ax.imshow(image, cmap=ListedColormap(colors), vmin=0, vmax=len(colors) - 1, interpolation="nearest")
    ax.axhline(layout.seq_len - 0.5, color="black", lw=1.5)
    ax.axvline(layout.seq_len - 0.5, color="black", lw=1.5)
    for step in range(1, layout.gen_len):
        edge = layout.length_after(step) - 0.5
        ax.axhline(edge, color="gray", lw=0.5, ls="--")
        ax.axvline(edge, color="gray", lw=0.5, ls="--")
    ax.set_xticks(range(total), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(total), [f"{lab} (pos {p})" for lab, p in zip(labels, positions)], fontsize=7)
    ax.set(
        xlabel="key (attended-to token); b<k>t<t> = token t of block k (k < K blocks, t < G steps)",
        ylabel="query token (position id)",
    )
    ax.text(layout.seq_len / 2, -1.2, "ground truth x[0:L]", ha="center", fontsize=9, clip_on=False)
    ax.text(
        layout.seq_len + layout.n_blocks * layout.gen_len / 2, -1.2, "generated, step-major",
        ha="center", fontsize=9, clip_on=False,
    )  # fmt: skip
    return save_figure(fig, path, title, dpi=110)


def plot_sampler_speed(frame, path: Path, *, title: str) -> Path:
    """Generated tokens per second of each strided-sampling variant vs the chunk length L."""
    labels = {"cached": "strided, KV cache (this package)", "no_cache": "strided, no cache (authors)",
              "per_prefix": "per-prefix generate (K prefixes)"}  # fmt: skip
    fig, axes = new_figure(2)
    for variant, label in labels.items():
        rows = frame[frame["variant"] == variant].sort_values("seq_len")
        if len(rows):
            axes[0, 0].plot(rows["seq_len"], rows["generated_tokens_per_s"], marker="o", label=label)
            cached = frame[frame["variant"] == "cached"].set_index("seq_len")["seconds_per_call"]
            ratio = rows["seconds_per_call"].to_numpy() / cached.loc[rows["seq_len"]].to_numpy()
            axes[0, 1].plot(rows["seq_len"], ratio, marker="o", label=label)
    axes[0, 0].set(xlabel="chunk length L (tokens)", ylabel="generated tokens / s", title="throughput")
    axes[0, 1].set(xlabel="chunk length L (tokens)", ylabel="time / time of KV-cached", title="relative cost")
    lengths = sorted(frame["seq_len"].unique())
    for ax in axes[0]:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path, title, dpi=110)


def plot_feature_pca(
    projections: dict, groups: list[int], blocks_per_chunk: int, path: Path, *, title: str
) -> Path:
    """Per group (columns) and whitening (rows): the n rollout features and the GT in 2-D PCA coordinates.

    Identical rollouts fall on one point, labelled with their multiplicity.

    Args:
        projections: whitening mode -> (rollouts (M, N, 2), gt (M, 2)) from :func:`teaching.pca_projection`.
        groups: which (chunk, block) groups to draw; group g is block g % K of chunk g // K.
    """
    modes = list(projections)
    fig, axes = new_figure(len(groups), len(modes), size=(3.4, 3.2))
    for row, mode in enumerate(modes):
        rollouts, gt = (np.asarray(t) for t in projections[mode])
        for col, group in enumerate(groups):
            ax = axes[row, col]
            points, gt_xy = rollouts[group], gt[group]
            ax.scatter(points[:, 0], points[:, 1], s=26, color=WHITENING_COLORS[mode], label="rollouts")
            ax.scatter(gt_xy[0], gt_xy[1], marker="*", s=170, color="black", label="ground truth")
            unique, counts = np.unique(np.round(points, 4), axis=0, return_counts=True)
            for (x, y), count in zip(unique, counts):
                if count > 1:
                    ax.annotate(f"x{count}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
            note = f"{len(points)} distinct rollouts" if counts.max() == 1 else "xm: m identical rollouts"
            ax.text(0.98, 0.02, note, transform=ax.transAxes, ha="right", va="bottom", fontsize=7)
            chunk, block = divmod(group, blocks_per_chunk)
            ax.set_title(f"chunk {chunk}, block {block}; whitening: {mode}", fontsize=9)
            ax.set(xlabel="PC 1", ylabel="PC 2")
            everything = np.vstack([points, gt_xy[None]])
            centre = everything.mean(0)
            radius = max(0.15, float(np.abs(everything - centre).max()) * 1.25)
            ax.set_xlim(centre[0] - radius, centre[0] + radius)
            ax.set_ylim(centre[1] - radius, centre[1] + radius)
            ax.set_aspect("equal")
            ax.grid(alpha=0.3)
            if col == 0:  # one legend per row: the whitened rows use their own colour
                ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path, title, dpi=110)


def plot_ablations(frame, path: Path, *, metrics: dict[str, str], title: str) -> Path:
    """One column per factor, one row per metric: each setting's value at step 0 (grey) and at the end (red).

    ``frame`` needs, per metric m, the columns ``m`` and ``m (step 0)`` (:func:`ablations.run_ablations`).
    The default setting's label is marked with a star.
    """
    factors = list(dict.fromkeys(frame["factor"]))
    fig, axes = new_figure(len(factors), len(metrics), size=(3.3, 2.5))

    def y_range(rows, metric):
        values = rows[[metric, f"{metric} (step 0)"]].to_numpy(dtype=float)
        low, high = np.nanmin(values), np.nanmax(values)
        pad = max(0.1 * (high - low), 0.01 if metric.startswith("pass@") else 1e-3)
        return (max(low - pad, 0.0) if metric.startswith("pass@") else low - pad, high + pad)

    # One y-range per metric (row), shared by the factors whose step-0 values are on the default's scale;
    # a factor that changes the scale itself (e.g. mean pooling for the CFM loss) gets its own range.
    own_scale = {}
    for metric in metrics:
        reference = float(frame.loc[frame["is_default"], f"{metric} (step 0)"].iloc[0])
        deviation = (frame[f"{metric} (step 0)"] - reference).abs() > 0.5 * abs(reference)
        own_scale[metric] = set(frame.loc[deviation, "factor"])
    shared = {m: y_range(frame[~frame["factor"].isin(own_scale[m])], m) for m in metrics}
    for col, factor in enumerate(factors):
        sub = frame[frame["factor"] == factor]
        x = np.arange(len(sub))
        labels = [f"{v}*" if is_default else str(v) for v, is_default in zip(sub["value"], sub["is_default"])]
        for row, (metric, label) in enumerate(metrics.items()):
            ax = axes[row, col]
            start = sub[f"{metric} (step 0)"].to_numpy(dtype=float)
            end = sub[metric].to_numpy(dtype=float)
            ax.scatter(x, start, color="#7f7f7f", marker="_", s=300, label="step 0 (base model)")
            ax.scatter(x, end, color=METHOD_COLORS["ebft"], s=36, zorder=3, label="after training")
            for xi, y0, y1 in zip(x, start, end):
                ax.annotate("", (xi, y1), (xi, y0), arrowprops={"arrowstyle": "->", "color": "#bbbbbb"})
            own = factor in own_scale[metric]
            ax.set_ylim(*(y_range(sub, metric) if own else shared[metric]))
            ax.set_xlim(-0.6, len(sub) - 0.4)
            ax.set_xticks(x, labels, fontsize=8)
            ax.set_ylabel(label + (" (own scale)" if own else ""), fontsize=8)
            ax.grid(alpha=0.3, axis="y")
            if row == 0:
                ax.set_title(factor)
            if row == len(metrics) - 1:
                ax.set_xlabel("setting (* = default)", fontsize=8)
            if row == 0 and col == 0:
                ax.legend(fontsize=7)
    return save_figure(fig, path, title, dpi=110)


def plot_method_curves(runs: list[dict], metrics: dict[str, str], path: Path, *, title: str) -> Path:
    """One panel per metric over optimizer steps; one line per method (mean over seeds, shaded min-max).

    Args:
        runs: run summaries with ``run_dir`` (:func:`~ebft_repro.experiments.report.collect_runs`), one task.
        metrics: eval-row metric name -> axis label.
    """
    from matplotlib.ticker import MaxNLocator

    from ebft_repro.experiments.plotting import METHOD_LABELS
    from ebft_repro.utils import read_jsonl

    evals = {
        id(run): [r for r in read_jsonl(Path(run["run_dir"]) / "metrics.jsonl") if r["kind"] == "eval"]
        for run in runs
    }
    n_cols = 2 if len(metrics) == 4 else len(metrics)
    fig, axes = new_figure(n_cols, -(-len(metrics) // n_cols))
    for ax, (metric, label) in zip(axes.flat, metrics.items()):
        for method, color in METHOD_COLORS.items():
            curves = [
                [(r["step"], r[metric]) for r in evals[id(run)] if metric in r]
                for run in runs
                if run["method"] == method
            ]
            curves = [c for c in curves if c]
            if not curves:
                continue
            steps = [s for s, _ in curves[0]]
            values = np.array([[v for _, v in c] for c in curves if len(c) == len(steps)])
            name = f"{METHOD_LABELS[method]} ({len(values)} seed{'s' if len(values) > 1 else ''})"
            ax.plot(steps, values.mean(0), marker="o", ms=4, color=color, label=name)
            if len(values) > 1:
                ax.fill_between(steps, values.min(0), values.max(0), color=color, alpha=0.15)
        ax.set(xlabel="optimizer step", ylabel=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path, title, dpi=110)
