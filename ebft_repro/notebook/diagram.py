"""One picture of an EBFT step (notebook 00): chunks -> strided rollouts -> frozen features -> rewards -> RLOO
-> policy gradient + gamma * CE, each box naming the function that does it."""

from __future__ import annotations

from pathlib import Path

from ebft_repro.experiments.plotting import new_figure, save_figure

STAGES = (
    ("packed chunks", "x[0:L] of real text\n(B chunks, each repeated n times)", "batching.local_batch"),
    ("strided rollouts", "K nested prefixes c_k = x[0:C+k*s],\none G-token rollout each, all at once",
     "sampler.strided_generate"),
    ("frozen features", "phi(c_k : y_hat) and phi(c_k : y)\nfrom one forward of the frozen copy",
     "featurizer.strided_features"),
    ("rewards",
     "(features whitened per block)\nr_j = 2 cos(phi_j, phi_gt)\n  - (2/(n-1)) sum_k<>j <phi_j, phi_k>",
     "losses.feature_matching_rewards"),
    ("RLOO advantages", "A_j = r_j - b_j, b_j built from the\nother n-1 rollouts of the same block",
     "losses.rloo_advantages"),
    ("loss", "-mean A * log p(y_hat)\n  + gamma * CE(ground truth)", "losses.ebft_loss"),
)  # fmt: skip


def pipeline_diagram(path: Path) -> Path:
    """Draw the EBFT step as six boxes joined by arrows; returns the saved PNG path."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, axes = new_figure(size=(12, 4.4))
    ax = axes[0, 0]
    ax.set_xlim(0, 3)
    ax.set_ylim(-0.12, 2)
    ax.axis("off")
    width, height = 0.86, 0.78
    # two rows of three, read like a snake: left to right, down, right to left
    centres = [(0.5, 1.5), (1.5, 1.5), (2.5, 1.5), (2.5, 0.5), (1.5, 0.5), (0.5, 0.5)]
    for (title, body, code), (x, y) in zip(STAGES, centres):
        box = FancyBboxPatch(
            (x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.02",
            facecolor="#eef3fb", edgecolor="#3b6cb7", linewidth=1.4,
        )  # fmt: skip
        ax.add_patch(box)
        ax.text(x, y + 0.25, title, ha="center", va="center", fontsize=11, weight="bold")
        ax.text(x, y + 0.02, body, ha="center", va="center", fontsize=8.5)
        ax.text(x, y - 0.28, code, ha="center", va="center", fontsize=8, family="monospace", color="#555")
    for (x0, y0), (x1, y1) in zip(centres, centres[1:]):
        if y0 == y1:  # along a row, in the direction of travel
            side = width / 2 if x1 > x0 else -width / 2
            start, end = (x0 + side, y0), (x1 - side, y1)
        else:  # down from the first row to the second
            start, end = (x0, y0 - height / 2), (x1, y1 + height / 2)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14))
    ax.text(
        1.5, -0.1, "backward: only the policy's log-probs carry gradient; features and rewards are constants",
        ha="center", va="bottom", fontsize=9, style="italic",
    )  # fmt: skip
    fig.suptitle("One EBFT step (ebft_repro/ebft.py, top to bottom)", fontsize=12)
    return save_figure(fig, Path(path))
