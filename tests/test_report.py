"""Verdict logic of the reproduction report on synthetic summaries."""

import math

import pandas as pd
import pytest

from ebft_repro.experiments import report
from ebft_repro.experiments.report import CLAIMS
from ebft_repro.utils import write_json

BEATS_SFT, MATCHES_RLVR, CE_VS_SFT, CE_VS_RLVR = CLAIMS


def test_t_quantiles():
    assert report.t_quantile_975(1) == pytest.approx(12.706)
    assert report.t_quantile_975(2.9) == pytest.approx(4.303)  # rounded down: a wider interval
    assert report.t_quantile_975(22) == pytest.approx(2.086)
    assert report.t_quantile_975(500) == pytest.approx(1.96)
    assert report.t_quantile_975(0.5) == math.inf


def test_mean_interval_by_hand():
    mean, half = report.mean_interval([1.0, 2.0, 3.0])
    # s = 1, n = 3: 4.303 * 1 / sqrt(3)
    assert mean == 2.0 and half == pytest.approx(4.303 / math.sqrt(3))
    assert math.isnan(report.mean_interval([5.0])[1])


def test_identical_values_have_an_exact_zero_interval():
    value = 0.1  # three equal floats whose naive mean is not exactly the value
    assert sum([value] * 3) / 3 != value
    assert report.mean_interval([value] * 3) == (value, 0.0)


def test_welch_interval_by_hand():
    # means 2 and 0.5; variances 1 and 0.25; se^2 = 1/3 + 0.25/3 = 0.41667
    # dof = 0.41667^2 / ((1/3)^2/2 + (0.25/3)^2/2) = 2.94 -> 2 -> t = 4.303; half = 4.303 * 0.6455 = 2.7776
    delta, low, high = report.welch_interval([1.0, 2.0, 3.0], [0.0, 0.5, 1.0], lower_is_better=False)
    assert delta == pytest.approx(1.5)
    assert low == pytest.approx(1.5 - 2.7776, abs=1e-3) and high == pytest.approx(1.5 + 2.7776, abs=1e-3)
    flipped = report.welch_interval([1.0, 2.0, 3.0], [0.0, 0.5, 1.0], lower_is_better=True)
    assert flipped[0] == pytest.approx(-1.5) and flipped[2] == pytest.approx(-low)


@pytest.mark.parametrize(
    ("ebft", "sft", "expected"),
    [
        ([0.30, 0.31, 0.32], [0.20, 0.21, 0.22], "reproduced"),  # clearly better
        ([0.10, 0.11, 0.12], [0.20, 0.21, 0.22], "not reproduced"),  # clearly worse
        ([0.10, 0.30, 0.20], [0.15, 0.25, 0.20], "inconclusive"),  # intervals overlap 0
        ([0.90], [0.10], "inconclusive"),  # one seed: no interval, however large the gap
        ([0.30, 0.31, 0.32], [], "inconclusive"),  # baseline missing
    ],
)
def test_superiority_verdicts(ebft, sft, expected):
    assert report.verdict(BEATS_SFT, ebft, sft)[0] == expected


def test_lower_is_better_for_cross_entropy():
    lower = ([1.00, 1.01, 1.02], [1.20, 1.21, 1.22])
    assert report.verdict(CE_VS_SFT, *lower)[0] == "reproduced"
    assert report.verdict(CE_VS_RLVR, lower[1], lower[0])[0] == "not reproduced"


def test_noninferiority_verdicts():
    rlvr = [0.40, 0.41, 0.42]
    # a tie within noise: interval around 0, entirely above -10% of 0.41 = -0.041
    assert report.verdict(MATCHES_RLVR, [0.405, 0.41, 0.415], rlvr)[0] == "reproduced"
    # EBFT better: reproduced ("matches or exceeds")
    assert report.verdict(MATCHES_RLVR, [0.60, 0.61, 0.62], rlvr)[0] == "reproduced"
    # clearly worse by more than the margin
    assert report.verdict(MATCHES_RLVR, [0.20, 0.21, 0.22], rlvr)[0] == "not reproduced"
    # too noisy to tell
    assert report.verdict(MATCHES_RLVR, [0.10, 0.70, 0.40], rlvr)[0] == "inconclusive"
    # a deficit of 0.1, 95% CI [-0.123, -0.077]: beyond a 10% margin (-0.041), within a 40% one (-0.164)
    worse = [0.30, 0.31, 0.32]
    assert report.verdict(MATCHES_RLVR, worse, rlvr, margin=0.1)[0] == "not reproduced"
    assert report.verdict(MATCHES_RLVR, worse, rlvr, margin=0.4)[0] == "reproduced"


def _frame(values: dict, metric: str, task: str = "qa_code") -> pd.DataFrame:
    rows = []
    for method, per_seed in values.items():
        rows += [
            {"task": task, "method": method, "seed": s, "lr": 1e-3, metric: v} for s, v in enumerate(per_seed)
        ]
    return pd.DataFrame(rows)


def test_claims_table_one_row_per_claim_and_task():
    acc = _frame(
        {"ebft": [0.30, 0.31, 0.32], "sft": [0.20, 0.21, 0.22], "rlvr": [0.30, 0.31, 0.32]}, "pass@1"
    )
    ce = _frame({"ebft": [1.0, 1.01, 1.02], "sft": [0.9, 0.91, 0.92], "rlvr": [1.5, 1.51, 1.52]}, "val_ce")
    frame = acc.merge(ce, on=["task", "method", "seed", "lr"])
    bleu = _frame({"ebft": [10.0], "sft": [9.0], "rlvr": [8.0]}, "bleu", task="translation")
    bleu["val_ce"] = 1.0
    table = report.claims_table(pd.concat([frame, bleu]))
    assert len(table) == 8
    verdicts = {(row.claim[1], row.task): row.verdict for row in table.itertuples()}
    assert verdicts[("a", "qa_code")] == "reproduced"
    assert verdicts[("b", "qa_code")] == "reproduced"
    assert verdicts[("c", "qa_code")] == "not reproduced"
    assert verdicts[("d", "qa_code")] == "reproduced"
    assert all(verdicts[(key, "translation")] == "inconclusive" for key in "abcd")  # one seed
    assert set(table["metric"]) >= {"pass@1", "bleu", "val_ce (lower is better)"}
    advantage = {(c[1], t): a for c, t, a in zip(table["claim"], table["task"], table["EBFT advantage"])}
    assert advantage[("c", "qa_code")] == pytest.approx(-0.1)  # EBFT's CE is 0.1 higher than SFT's
    assert advantage[("a", "translation")] == pytest.approx(1.0)


def test_load_runs_keeps_only_the_selected_learning_rate(tmp_path):
    for lr, value in ((3e-4, 0.1), (1e-3, 0.2)):
        summary = {"task": "qa_code", "method": "ebft", "seed": 0, "lr": lr, "final": {"pass@1": value}}
        write_json(tmp_path / "runs" / f"qa_code-ebft-seed0-lr{lr}" / "summary.json", summary)
    grid = {"grid": [3e-4, 1e-3], "picked": 1e-3}
    write_json(tmp_path / "lr_selection.json", {"qa_code-ebft": grid})
    frame = report.load_runs(tmp_path)
    assert frame["pass@1"].tolist() == [0.2]


def test_task_summary_shows_the_base_row_intervals_and_counts(tmp_path):
    import pandas as pd

    rows = [
        {"task": "qa_code", "method": "base", "n_seeds": 3, "lr": float("nan"), "pass@1": 0.0345,
         "pass@1_ci95": 0.0028, "correct_samples": 53, "eval_samples": 1536, "val_ce": 0.57},
        {"task": "qa_code", "method": "ebft", "n_seeds": 1, "lr": 1e-4, "pass@1": 0.5,
         "pass@1_ci95": float("nan"), "correct_samples": 2, "eval_samples": 4, "val_ce": 0.5},
        {"task": "translation", "method": "sft", "n_seeds": 1, "lr": 3e-4, "bleu": 3.0, "val_ce": 3.3},
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "summary.csv", index=False)
    table = report.task_summary(tmp_path, "qa_code")
    assert list(table.index) == ["base", "ebft"]
    assert table.loc["base", "pass@1"] == "0.0345 ± 0.0028 (53/1536)"
    assert table.loc["ebft", "pass@1"] == "0.5 (2/4)" and table.loc["ebft", "lr"] == "1.0e-04"
    assert table.loc["base", "lr"] == "—" and "bleu" not in table
    assert report.lr_cell(1e-4 / 9) == "1.1e-05"  # an extended grid's step is told apart from 1e-05
    with pytest.raises(FileNotFoundError, match="reproduce"):
        report.task_summary(tmp_path / "missing", "qa_code")


def test_seeds_to_settle_hand_computed():
    claim = report.CLAIMS[0]  # EBFT beats SFT on accuracy (superiority)
    # means 2 vs 1, both sample variances 1 -> pooled s = 1, gap 1: need t(2n-2) * sqrt(2/n) < 1;
    # n = 8: 2.145 * 0.5 = 1.07 (no); n = 9: 2.120 * 0.4714 = 0.999 (yes)
    assert report.seeds_to_settle(claim, [1.0, 2.0, 3.0], [0.0, 1.0, 2.0]) == 9
    assert report.seeds_to_settle(claim, [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) is None  # no difference
    assert report.seeds_to_settle(claim, [2.0, 2.0], [1.0, 1.0]) == 1  # no spread
    assert report.seeds_to_settle(claim, [2.0], [1.0, 1.0]) is None  # no spread estimate
    # non-inferiority: the gap is the distance to the margin (10% of the baseline mean 10 -> -1)
    noninferior = report.CLAIMS[1]
    assert report.seeds_to_settle(
        noninferior, [8.0, 10.0, 12.0], [9.0, 10.0, 11.0]
    ) == report.seeds_to_settle(claim, [9.0, 11.0, 13.0], [9.0, 10.0, 11.0])


def test_summary_flags_learning_rate_picks_on_a_grid_edge():
    from ebft_repro.experiments.summary_md import lr_picks_markdown

    def entry(picked, interior):
        grid = [1e-5, 3e-5, 1e-4]
        return {
            "grid": grid,
            "picked": picked,
            "interior": interior,
            "extended_with": [3e-5, 1e-5] if not interior else [],
            "validation": {repr(lr): 0.1 for lr in grid},
            "validation_ce": {repr(lr): 0.5 for lr in grid},
        }

    text = lr_picks_markdown({"qa_code-ebft": entry(1e-5, False), "qa_code-sft": entry(3e-5, True)})
    rows = {
        line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| qa_code")
    }
    assert "**no**, edge after 2 extension(s)" in rows["qa_code-ebft"] and "| yes |" in rows["qa_code-sft"]
    assert "Picks on a grid edge (qa_code-ebft)" in text
    assert lr_picks_markdown({}) == ""
    two_point = entry(3e-5, True) | {"grid": [3e-5, 1e-4]}
    assert "n/a (2-point grid)" in lr_picks_markdown({"qa_code-sft": two_point})
    # the base model's validation score (the lr -> 0 end) tells how to read a low-edge pick
    low = entry(1e-5, False) | {"validation": {repr(1e-5): 0.4, repr(3e-5): 0.3, repr(1e-4): 0.2}}
    bracketed = lr_picks_markdown({"qa_code-ebft": low | {"base_validation": 0.35}})
    assert "| 0.35 |" in bracketed and "the optimum lies between 0 and 3e-05" in bracketed
    counted = low | {"base_validation": 0.35, "validation_samples": 512}  # 0.05 > one s.e. (0.030)
    assert "the optimum lies between 0 and 3e-05" in lr_picks_markdown({"qa_code-ebft": counted})
    close = lr_picks_markdown({"qa_code-ebft": counted | {"base_validation": 0.395}})
    assert "3 more correct of 512 samples, within one standard error" in close
    assert "does not resolve whether training at a small rate beats not training" in close
    flat = lr_picks_markdown({"qa_code-ebft": low | {"base_validation": 0.4}})
    assert "no rate tried beats the base model on validation (0.4 at 1e-05 against 0.4)" in flat
    assert "may lie below it" in text and "| — |" in text  # no base score recorded
    high = lr_picks_markdown({"qa_code-ebft": entry(1e-4, False) | {"base_validation": 0.0}})
    assert "picked the highest rate tried, 0.0001; the optimum may lie above it" in high


def test_retained_share_hand_computed():
    from ebft_repro.experiments.controls import retained_share

    # accuracy: base 0.10, EBFT 0.30, EBFT gamma=0 0.25 -> (0.25 - 0.10) / (0.30 - 0.10) = 0.75
    assert retained_share(0.10, 0.30, 0.25) == pytest.approx(0.75)
    # CE (lower is better, no orientation needed): base 2.0, EBFT 1.5, gamma=0 1.9 -> -0.1 / -0.5 = 0.2
    assert retained_share(2.0, 1.5, 1.9) == pytest.approx(0.2)
    assert retained_share(2.0, 1.5, 2.1) == pytest.approx(-0.2)  # the control moves the other way
    # n/a when |EBFT - base| <= 1% of |base|: 0.015 <= 0.02 (n/a); 0.03 > 0.02 (defined)
    assert math.isnan(retained_share(2.0, 2.015, 1.9))
    assert retained_share(2.0, 1.97, 1.985) == pytest.approx(0.5)
    assert math.isnan(retained_share(0.0, 0.0, 0.1))  # no effect at all
    assert math.isnan(retained_share(0.1, float("nan"), 0.2))


def test_control_shares_reach_the_summary_markdown():
    from ebft_repro.experiments.controls import control_shares
    from ebft_repro.experiments.summary_md import controls_markdown, summary_markdown

    means = [  # task, method, accuracy, val CE
        ("qa_code", "base", 0.10, 2.0), ("qa_code", "ebft", 0.30, 1.5), ("qa_code", "sft", 0.40, 1.0),
        ("qa_code", "ebft_fm", 0.25, 1.9), ("translation", "base", 5.0, 3.0),
        ("translation", "ebft", 5.01, 2.0), ("translation", "ebft_fm", 6.0, 2.5),
        ("code", "base", 0.1, 1.0), ("code", "ebft", 0.2, 0.9),
    ]  # fmt: skip
    rows = [
        {"task": task, "method": method, "n_seeds": 3, "lr": 1e-4,
         "bleu" if task == "translation" else "pass@1": accuracy, "val_ce": ce}
        for task, method, accuracy, ce in means
    ]  # fmt: skip
    summary = pd.DataFrame(rows)
    shares = {(r["task"], r["metric"]): r["share"] for r in control_shares(summary)}
    metrics = {
        ("qa_code", "pass@1"),
        ("qa_code", "val_ce"),
        ("translation", "bleu"),
        ("translation", "val_ce"),
    }
    assert set(shares) == metrics  # code has no ebft_fm run
    assert shares["qa_code", "pass@1"] == pytest.approx(0.75)
    assert shares["qa_code", "val_ce"] == pytest.approx(0.2)
    assert math.isnan(shares["translation", "bleu"])  # EBFT's BLEU change 0.01 <= 1% of 5.0
    assert shares["translation", "val_ce"] == pytest.approx(0.5)
    text = controls_markdown(control_shares(summary))
    assert "| qa_code | pass@1 | 0.1 | 0.3 | 0.25 | 75% |" in text
    assert "| translation | bleu | 5 | 5.01 | 6 | n/a |" in text and "≤ 1% of |base|" in text
    assert controls_markdown(control_shares(summary[summary["method"] != "ebft_fm"])) == ""
    assert "| qa_code | ebft_fm (EBFT, γ=0) | 3 |" in summary_markdown(summary, ["pass@1"], "cpu")
