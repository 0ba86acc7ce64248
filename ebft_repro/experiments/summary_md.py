"""``summary.md`` of a reproduction: the per-(task, method) table, the verdicts, the learning-rate picks.

:func:`ebft_repro.experiments.runner.aggregate` computes the numbers; this module writes them as Markdown.
"""

from __future__ import annotations

import math

from ebft_repro.experiments.controls import MIN_RELATIVE_EFFECT, method_cell
from ebft_repro.experiments.report import lr_cell, summary_cell


def lr_picks_markdown(selection: dict) -> str:
    """The learning-rate picks: validation metric per grid point, and whether the pick is interior."""
    if not selection:
        return ""
    lines = [
        "",
        "## Learning rates (picked on validation, seed 0; `lr_selection.json`)",
        "",
        "| task-method | pick | interior | validation accuracy per grid point (lr: value) | base (lr → 0)"
        " | val CE at pick |",
        "|---|---|---|---|---|---|",
    ]
    for key, entry in sorted(selection.items()):
        picked = entry["picked"]
        scores = ", ".join(
            f"{float(lr):.2g}: {value:.4g}"
            for lr, value in sorted(entry["validation"].items(), key=lambda kv: float(kv[0]))
        )
        ce = entry.get("validation_ce", {}).get(repr(picked), float("nan"))
        base = entry.get("base_validation")
        base_text = "—" if base is None else f"{base:.4g}"
        if len(entry.get("grid", [])) < 3:  # the runner does not extend grids of fewer than 3 points
            interior = f"n/a ({len(entry.get('grid', []))}-point grid)"
        elif entry["interior"]:
            interior = "yes"
        else:
            interior = f"**no**, edge after {len(entry.get('extended_with', []))} extension(s)"
        lines.append(f"| {key} | {picked:.2g} | {interior} | {scores} | {base_text} | {ce:.4g} |")
    edges = {key: entry for key, entry in sorted(selection.items()) if not entry["interior"]}
    if edges:
        lines += [
            "",
            f"Picks on a grid edge ({', '.join(edges)}): the runner extends the grid by one geometric step",
            "past an edge pick, at most `MAX_GRID_EXTENSIONS` times (`ebft_repro/experiments/runner.py`);",
            "these stayed on the edge, so the validation metric was still best at the last point tried.",
            "`base (lr → 0)` is the base model scored on the same validation prompts with the same sampling",
            "stream as the runs' last step (`base_validation` in `ebft_repro/run_eval.py`): what updates of",
            "size 0 would score.",
        ]
        lines += [f"- {key}: {_edge_reading(entry)}" for key, entry in edges.items()]
    return "\n".join(lines) + "\n"


def _difference_se(rate: float, n: int) -> float:
    """Standard error of the difference of two independent n-sample rates near ``rate`` (the runs and the
    base share one sampling stream, so their real difference is less noisy: this is conservative)."""
    return math.sqrt(2 * rate * (1 - rate) / n)


def _edge_reading(entry: dict) -> str:
    """What an edge pick means once the base model's validation score (the lr -> 0 end) is known."""
    picked, base = entry["picked"], entry.get("base_validation")
    score = entry["validation"][repr(picked)]
    if picked != min(entry["grid"]):
        return f"picked the highest rate tried, {picked:.2g}; the optimum may lie above it."
    if base is None or score is None:
        return f"picked the lowest rate tried, {picked:.2g}; the optimum may lie below it."
    above = min(lr for lr in entry["grid"] if lr > picked)
    n = entry.get("validation_samples")  # a rate over n samples (pass@1); None for BLEU
    se = _difference_se(base, n) if n else None
    if score > base and se is not None and score - base <= se:
        return (
            f"{picked:.2g} scores {score:.4g} against the base model's {base:.4g}:"
            f" {round((score - base) * n)} more correct of {n} samples, within one standard error of a"
            f" difference of two {n}-sample rates ({se:.2g}), so the grid does not"
            " resolve whether training at a small rate beats not training at all."
        )
    if score > base:
        return (
            f"{picked:.2g} scores {score:.4g}, above both the base model ({base:.4g}) and {above:.2g}"
            f" ({entry['validation'][repr(above)]:.4g}): the optimum lies between 0 and {above:.2g}."
        )
    return (
        f"no rate tried beats the base model on validation ({score:.4g} at {picked:.2g} against"
        f" {base:.4g}): at this scale the method's best setting is not to train."
    )


def controls_markdown(shares: list[dict]) -> str:
    """The gamma = 0 control's share of EBFT's effect (:func:`ebft_repro.experiments.controls.control_shares`
    rows), as Markdown; empty without ``ebft_fm`` runs."""
    if not shares:
        return ""
    lines = [
        "",
        "## Feature matching alone: EBFT with γ = 0 (`ebft_fm`)",
        "",
        "EBFT's loss adds γ·CE on the training chunks, so its CE advantage may be that term's. `ebft_fm`",
        "trains the same way with γ = 0. `share` = (EBFT γ=0 − base) / (EBFT − base) on the seed means: the",
        "part of EBFT's change from the base model that feature matching alone keeps (1: all, 0: none).",
        f"n/a: EBFT's change is about 0 (|EBFT − base| ≤ {MIN_RELATIVE_EFFECT:.0%} of |base|).",
        "",
        "| task | metric | base | EBFT | EBFT γ=0 | share |",
        "|---|---|---|---|---|---|",
    ]
    for row in shares:
        share = "n/a" if math.isnan(row["share"]) else f"{row['share']:.0%}"
        values = " | ".join(f"{row[k]:.4g}" for k in ("base", "ebft", "ebft_fm"))
        lines.append(f"| {row['task']} | {row['metric']} | {values} | {share} |")
    return "\n".join(lines) + "\n"


def verdicts_markdown(claims) -> str:
    """The paper's claims at this scale, as Markdown (:func:`~ebft_repro.experiments.report.claims_table`)."""
    columns = ["claim", "task", "EBFT", "baseline", "verdict", "evidence", "seeds to settle"]
    lines = [
        "",
        "## The paper's claims at this scale",
        "",
        "Final-step values, one per seed. Verdict rule (`ebft_repro/experiments/report.py`): "
        "Welch 95% interval of the",
        "EBFT-minus-baseline difference; *beats*/*lower*: reproduced if it excludes 0 in EBFT's favour;",
        "*matches*: reproduced if it lies above -10% of the baseline. `seeds to settle`: seeds per method at",
        "which the measured difference and spread would give a decisive interval.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for _, row in claims.iterrows():
        lines.append("| " + " | ".join(str(row[c]).replace("|", "/") for c in columns) + " |")
    return "\n".join(lines) + "\n"


def summary_markdown(summary, metrics: list[str], preset: str) -> str:
    lines = [f"# EBFT vs SFT vs RLVR: `{preset}` preset", ""]
    if preset == "tiny":
        lines += [
            "> **Smoke test.** Tiny CPU models and a few dozen steps: these numbers check that the pipeline",
            "> runs end to end. They say nothing about the paper's claims.",
            "",
        ]
    lines += [
        "Mean ± 95% t-interval over seeds (± is blank with one seed). Accuracy: pass@k (coding, unit tests",
        "in the sandbox; in brackets the counts summed over seeds: correct samples / samples for pass@1,",
        "solved prompts / prompts for pass@k) or BLEU/chrF (translation). `unit_test_pass_frac`: share of",
        "unit tests passed over all samples. `base`: the base model before fine-tuning (the step-0",
        "evaluation). CE in nats/token on validation chunks. Cost: `train_s`",
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
        cells = [summary_cell(row, metric) for metric in shown]
        lines.append(
            f"| {row['task']} | {method_cell(row['method'])} | {row['n_seeds']} | {lr_cell(row['lr'])} | "
            + " | ".join(cells)
            + " |"
        )
    lines.append("")
    return "\n".join(lines)
