"""The paper's claims against this package's measurements (spec section 9), with a verdict per claim.

Claims, per task: (a) EBFT beats SFT on downstream accuracy; (b) EBFT matches (or exceeds) RLVR on
downstream accuracy; (c) EBFT has a lower validation CE than SFT; (d) lower than RLVR. Accuracy is pass@1
for the coding tasks and corpus BLEU for translation
(:func:`ebft_repro.evaluation.downstream.primary_metric`); CE is the full-chunk validation CE (``val_ce``).
Only final-step values of finished runs are used, one per seed.

Verdict rule. Let x_E and x_B be the per-seed values of EBFT and the baseline, oriented so that a positive
difference Delta = mean(x_E) - mean(x_B) (negated when lower is better) favours EBFT. Its 95% interval is
Welch's: Delta +- t_{0.975, nu} * sqrt(s_E^2/n_E + s_B^2/n_B), with the Welch-Satterthwaite nu rounded down
(a slightly wider interval).

- fewer than 2 seeds for either method: **inconclusive** (no interval can be formed);
- "beats" / "lower than" (a, c, d): **reproduced** if the interval lies above 0, **not reproduced** if it
  lies below 0, **inconclusive** otherwise;
- "matches" (b), a non-inferiority test with margin m = ``margin`` x |mean(x_B)| (default 10% of RLVR):
  **reproduced** if the interval lies above -m, **not reproduced** if it lies below -m, **inconclusive**
  otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ebft_repro.evaluation.downstream import primary_metric
from ebft_repro.experiments.controls import method_cell
from ebft_repro.utils import CorruptFileError, read_json

VERDICTS = ("reproduced", "not reproduced", "inconclusive")
LOWER_IS_BETTER = ("val_ce", "val_ce_answer", "val_fm_loss")
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
_T975 |= {11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093}
_T975 |= {20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


@dataclass(frozen=True)
class Claim:
    """One comparison the paper makes."""

    key: str
    text: str
    metric: str
    """``accuracy`` (the task's primary metric) or a metric name such as ``val_ce``."""
    baseline: str
    kind: str
    """``superior`` (beats / lower than) or ``noninferior`` (matches or exceeds)."""


CLAIMS = (
    Claim("a", "EBFT beats SFT on downstream accuracy", "accuracy", "sft", "superior"),
    Claim("b", "EBFT matches RLVR on downstream accuracy", "accuracy", "rlvr", "noninferior"),
    Claim("c", "EBFT has lower validation CE than SFT", "val_ce", "sft", "superior"),
    Claim("d", "EBFT has lower validation CE than RLVR", "val_ce", "rlvr", "superior"),
)


def t_quantile_975(dof: float) -> float:
    """Two-sided 95% Student-t quantile for ``floor(dof)`` degrees of freedom (table; normal beyond 120)."""
    dof = math.floor(dof)
    if dof < 1:
        return math.inf
    below = [d for d in _T975 if d <= dof]
    return _T975[max(below)] if dof <= 120 else 1.96


def _mean_var(values: list[float]) -> tuple[float, float]:
    """Mean and unbiased sample variance (nan with one value)."""
    n_values = len(values)
    if all(v == values[0] for v in values):  # exact: the base row's seeds share one step-0 evaluation
        return values[0], (math.nan if n_values < 2 else 0.0)
    mean = sum(values) / n_values
    if n_values < 2:
        return mean, math.nan
    return mean, sum((v - mean) ** 2 for v in values) / (n_values - 1)


def mean_interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (nan with one value)."""
    mean, var = _mean_var(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, t_quantile_975(len(values) - 1) * math.sqrt(var / len(values))


def welch_interval(ebft: list[float], base: list[float], lower_is_better: bool) -> tuple[float, float, float]:
    """Oriented difference (positive favours EBFT) and its 95% Welch interval.  -> (delta, low, high)."""
    (mean_e, var_e), (mean_b, var_b) = _mean_var(ebft), _mean_var(base)
    delta = (mean_b - mean_e) if lower_is_better else (mean_e - mean_b)
    if len(ebft) < 2 or len(base) < 2:
        return delta, math.nan, math.nan
    se_e, se_b = var_e / len(ebft), var_b / len(base)
    if se_e + se_b == 0:
        return delta, delta, delta
    dof = (se_e + se_b) ** 2 / (se_e**2 / (len(ebft) - 1) + se_b**2 / (len(base) - 1))
    half = t_quantile_975(dof) * math.sqrt(se_e + se_b)
    return delta, delta - half, delta + half


def verdict(claim: Claim, ebft: list[float], base: list[float], *, margin: float = 0.1) -> tuple[str, str]:
    """Apply the module's verdict rule.  -> (verdict, one-line reason)."""
    if not ebft or not base:
        return "inconclusive", "no finished runs for one of the methods"
    delta, low, high = welch_interval(ebft, base, lower_is_better=claim.metric in LOWER_IS_BETTER)
    if len(ebft) < 2 or len(base) < 2:
        side = "favours EBFT" if delta > 0 else ("favours the baseline" if delta < 0 else "is zero")
        seeds = f"{len(ebft)} EBFT and {len(base)} baseline seed(s)"
        return "inconclusive", f"difference {delta:+.4g} {side}, but {seeds}: no confidence interval"
    interval = f"difference {delta:+.4g}, 95% CI [{low:+.4g}, {high:+.4g}] (positive favours EBFT)"
    if claim.kind == "noninferior":
        bound = -margin * abs(sum(base) / len(base))
        interval += f", margin {bound:+.3g}"
        if low > bound:
            return "reproduced", interval + ": EBFT is no worse than the margin"
        if high < bound:
            return "not reproduced", interval + ": EBFT is worse by more than the margin"
        return "inconclusive", interval
    if low > 0:
        return "reproduced", interval
    if high < 0:
        return "not reproduced", interval + ": significant in the opposite direction"
    return "inconclusive", interval + ": the interval contains 0"


def seeds_to_settle(claim: Claim, ebft: list[float], base: list[float], *, margin: float = 0.1) -> int | None:
    """Seeds per method at which the measured difference and spread would give a decisive verdict.

    Assumes both methods keep their measured means and the pooled per-seed standard deviation s, and
    finds the smallest n with t_{0.975, 2n-2} * s * sqrt(2/n) < |gap|, where the gap is the difference
    (superiority) or its distance to the margin (non-inferiority). None when the gap is 0 or there are
    fewer than 2 seeds per method; 1 when the spread is 0 and the gap is not.
    """
    if len(ebft) < 2 or len(base) < 2:
        return None
    lower = claim.metric in LOWER_IS_BETTER
    delta = welch_interval(ebft, base, lower_is_better=lower)[0]
    if claim.kind == "noninferior":
        delta += margin * abs(sum(base) / len(base))
    (_, var_e), (_, var_b) = _mean_var(ebft), _mean_var(base)
    pooled = math.sqrt(((len(ebft) - 1) * var_e + (len(base) - 1) * var_b) / (len(ebft) + len(base) - 2))
    if delta == 0:
        return None
    if pooled == 0:
        return 1
    for n_seeds in range(2, 100_001):
        if t_quantile_975(2 * n_seeds - 2) * pooled * math.sqrt(2 / n_seeds) < abs(delta):
            return n_seeds
    return None


# ----------------------------------------------------------------------------------------- tables


def runs_frame(runs: list[dict]):
    """One row per finished run: task, method, seed, lr and every final-step metric (a DataFrame)."""
    import pandas as pd

    rows = [
        {"task": r["task"], "method": r["method"], "seed": r["seed"], "lr": r["lr"]} | r["final"]
        for r in runs
    ]
    return pd.DataFrame(rows)


def collect_runs(out_dir: Path, selection: dict | None = None) -> list[dict]:
    """Finished runs under ``out_dir/runs``; with a selection, only the picked learning rate of each pair."""
    runs = []
    for summary_path in sorted((Path(out_dir) / "runs").glob("*/summary.json")):
        try:
            summary = read_json(summary_path)
        except CorruptFileError as err:
            raise CorruptFileError(
                f"{err}: remove {summary_path.parent} (or rerun reproduce with --force) to recompute it"
            ) from None
        pick = (selection or {}).get(f"{summary['task']}-{summary['method']}")
        if pick and len(pick["grid"]) > 1 and not math.isclose(summary["lr"], pick["picked"]):
            continue
        summary["run_dir"] = str(summary_path.parent)
        runs.append(summary)
    return runs


def load_runs(out_dir: Path):
    """Finished runs of a reproduction folder (``runs/*/summary.json`` at the selected learning rates)."""
    from ebft_repro.utils import read_json

    selection_path = Path(out_dir) / "lr_selection.json"
    selection = read_json(selection_path) if selection_path.exists() else None
    return runs_frame(collect_runs(out_dir, selection))


def _metric(claim: Claim, task: str) -> str:
    return primary_metric(task) if claim.metric == "accuracy" else claim.metric


def _values(frame, task: str, method: str, metric: str) -> list[float]:
    if metric not in frame.columns:
        return []
    rows = frame[(frame["task"] == task) & (frame["method"] == method)]
    return [float(v) for v in rows.sort_values("seed")[metric].dropna()]


def _cell(values: list[float]) -> str:
    if not values:
        return "no runs"
    mean, half = mean_interval(values)
    spread = "" if math.isnan(half) else f" ± {half:.3g}"
    return f"{mean:.4g}{spread} (n={len(values)})"


def claims_table(frame, tasks: list[str] | None = None, *, margin: float = 0.1):
    """One row per (claim, task): both methods' mean ± 95% CI, the verdict and its evidence (a DataFrame).

    ``EBFT advantage`` is the oriented difference of means (positive favours EBFT, also for CE).
    """
    import pandas as pd

    tasks = tasks or sorted(frame["task"].unique())
    rows = []
    for claim in CLAIMS:
        for task in tasks:
            metric = _metric(claim, task)
            ebft, base = _values(frame, task, "ebft", metric), _values(frame, task, claim.baseline, metric)
            result, reason = verdict(claim, ebft, base, margin=margin)
            lower = metric in LOWER_IS_BETTER
            delta = welch_interval(ebft, base, lower_is_better=lower)[0] if ebft and base else math.nan
            needed = seeds_to_settle(claim, ebft, base, margin=margin) if result == "inconclusive" else None
            rows.append(
                {
                    "claim": f"({claim.key}) {claim.text}",
                    "task": task,
                    "metric": metric + (" (lower is better)" if metric in LOWER_IS_BETTER else ""),
                    "EBFT": _cell(ebft),
                    "baseline": f"{claim.baseline.upper()}: {_cell(base)}",
                    "EBFT advantage": delta,
                    "verdict": result,
                    "evidence": reason,
                    "seeds to settle": _settle_text(result, needed, ebft, base),
                }
            )
    return pd.DataFrame(rows)


def _settle_text(result: str, needed: int | None, ebft: list[float], base: list[float]) -> str:
    if result != "inconclusive":
        return ""
    if len(ebft) < 2 or len(base) < 2:
        return "needs >= 2 seeds per method to estimate"
    if needed is None:
        return "none: the measured difference is 0 (or at the margin)"
    return f"~{needed} per method at the measured spread"


def _count_text(row, metric: str) -> str:
    """`` (41/512)``: the counts behind a pass rate, summed over seeds; empty for other metrics."""
    counts = {"pass@1": ("correct_samples", "eval_samples")}
    if metric.startswith("pass@") and metric != "pass@1":
        counts[metric] = ("solved_prompts", "eval_prompts")
    if metric not in counts:
        return ""
    hits, total = (row.get(name) for name in counts[metric])
    if hits is None or total is None or any(isinstance(v, float) and math.isnan(v) for v in (hits, total)):
        return ""
    return f" ({int(hits)}/{int(total)})"


def lr_cell(lr: float) -> str:
    """A summary row's learning rate as the tables print it ("—" for the base row, which has none)."""
    return "—" if math.isnan(lr) else f"{lr:.1e}"  # 1.1e-05, not 1e-05: extended grids step by 3x


def summary_cell(row, metric: str) -> str:
    """``0.0345 ± 0.0028 (53/1536)``: one row of ``summary.csv`` for one metric; "" if absent."""
    value, half = row.get(metric), row.get(f"{metric}_ci95")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    interval = "" if half is None or math.isnan(half) else f" ± {half:.2g}"
    return f"{value:.4g}{interval}{_count_text(row, metric)}"


def task_summary(out_dir: Path, task: str):
    """The runner's ``summary.csv`` rows of one task (the base model first), as strings with counts.

    Raises:
        FileNotFoundError: when ``out_dir`` has no ``summary.csv`` (run ``reproduce`` first).
    """
    import pandas as pd

    path = Path(out_dir) / "summary.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `python -m ebft_repro reproduce` first")
    summary = pd.read_csv(path)
    summary = summary[summary["task"] == task]
    wanted = default_metrics(task)
    wanted.insert(len(wanted) - 3, "unit_test_pass_frac")  # after the accuracy metrics, before the losses
    metrics = [m for m in wanted if m in summary and summary[m].notna().any()]
    rows = []
    for _, row in summary.iterrows():
        cells = {metric: summary_cell(row, metric) for metric in metrics}
        method = method_cell(row["method"])
        rows.append({"method": method, "seeds": int(row["n_seeds"]), "lr": lr_cell(row["lr"])} | cells)
    return pd.DataFrame(rows).set_index("method")


def default_metrics(task: str) -> list[str]:
    """The final metrics shown for a task: accuracy first, then the CE and CFM losses."""
    accuracy = ["bleu", "chrf", "bleu_en-es", "bleu_es-en"] if task == "translation" else ["pass@1", "pass@4"]
    return accuracy + ["val_ce", "val_ce_answer", "val_fm_loss"]
