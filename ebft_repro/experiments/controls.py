"""EBFT's gamma = 0 control (``ebft_fm``, feature matching alone): how much of EBFT's effect it keeps.

EBFT's loss adds gamma * CE on the same chunks (spec 4.2), so its CE advantage could be that term's. The
control trains the same way with gamma = 0; per task and metric, the share of EBFT's change from the base
model that the control keeps is

    share = (mean(EBFT_fm) - base) / (mean(EBFT) - base)

on the seed means: 1 when feature matching alone gives all of EBFT's change, 0 when it gives none of it
(negative: it moves the other way). It is n/a when EBFT's own change is about 0, i.e.
|mean(EBFT) - base| <= ``MIN_RELATIVE_EFFECT`` x |base|, where the ratio would divide by noise.
"""

from __future__ import annotations

import math

from ebft_repro.evaluation.downstream import primary_metric

MIN_RELATIVE_EFFECT = 0.01
"""EBFT's effect counts as about 0 (share n/a) when |EBFT - base| is at most 1% of |base|."""
CONTROL, FULL = "ebft_fm", "ebft"
METHOD_NOTES = {CONTROL: "EBFT, γ=0"}
"""What a summary table adds after a method's name: ``ebft_fm`` is EBFT trained with gamma = 0."""


def method_cell(method: str) -> str:
    """A summary row's method as the tables print it: ``ebft_fm (EBFT, γ=0)``, else the name."""
    return f"{method} ({METHOD_NOTES[method]})" if method in METHOD_NOTES else method


def retained_share(
    base: float, full: float, control: float, *, min_relative_effect: float = MIN_RELATIVE_EFFECT
) -> float:
    """(control - base) / (full - base): the share of the full method's change from ``base`` that the
    control keeps; nan (n/a) when ``|full - base| <= min_relative_effect * |base|`` or a value is nan."""
    effect = full - base
    if any(math.isnan(v) for v in (base, full, control)) or abs(effect) <= min_relative_effect * abs(base):
        return math.nan
    return (control - base) / effect


def control_shares(summary) -> list[dict]:
    """One row per (task, metric) of a runner ``summary`` (DataFrame of seed means) that has base, EBFT and
    ``ebft_fm`` rows: the three means and :func:`retained_share`. Metrics: the task's accuracy and val CE."""
    rows = []
    for task in sorted(summary["task"].unique()):
        means = summary[summary["task"] == task].set_index("method")
        if not {"base", FULL, CONTROL} <= set(means.index):
            continue
        for metric in (primary_metric(task), "val_ce"):
            if metric not in means.columns:
                continue
            base, full, control = (float(means.at[m, metric]) for m in ("base", FULL, CONTROL))
            rows.append(
                {
                    "task": task,
                    "metric": metric,
                    "base": base,
                    FULL: full,
                    CONTROL: control,
                    "share": retained_share(base, full, control),
                }
            )
    return rows
