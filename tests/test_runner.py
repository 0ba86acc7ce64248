"""The reproduction runner: learning-rate selection, seeds, aggregation files and figures."""

import math

import pandas as pd
import pytest

from ebft_repro.config import METHODS, PRESETS
from ebft_repro.experiments.runner import aggregate, extend_grid, reproduce, select_lr
from ebft_repro.utils import read_json

FAST = [
    "data.seq_len=128", "data.n_train=60", "data.n_val=4", "data.n_test=4", "data.n_val_chunks=2",
    "train.n_steps=2", "train.chunks_per_step=2", "eval.every_steps=2", "eval.n_prompts=2",
    "eval.n_samples=2", "eval.max_new_tokens=8", "eval.n_fm_chunks=1", "rlvr.max_new_tokens=8",
    "optim.lr_grid=1e-3,1e-2",
]  # fmt: skip


def test_select_lr_prefers_validation_accuracy_then_lower_ce():
    runs = {
        1e-3: {"final": {"val_pass@1": 0.5, "val_ce": 2.0}},
        1e-2: {"final": {"val_pass@1": 0.5, "val_ce": 1.5}},
        1e-4: {"final": {"val_pass@1": 0.2, "val_ce": 1.0}},
    }
    assert select_lr(runs, "qa_code") == 1e-2
    assert (
        select_lr({1.0: {"final": {"val_bleu": 3.0}}, 2.0: {"final": {"val_bleu": 4.0}}}, "translation")
        == 2.0
    )


def test_reproduce_writes_summary_tables_and_figures(model_dirs, tmp_path):
    run = {
        "tasks": ["qa_code"],
        "methods": ["ebft", "sft"],
        "seeds": [0, 1],
        "out_dir": tmp_path,
        "overrides": FAST + [f"model={model_dirs['llama']}"],
    }
    out = reproduce("tiny", **run)
    selection = read_json(out / "lr_selection.json")
    assert set(selection) == {"qa_code-ebft", "qa_code-sft"}
    assert all(len(s["grid"]) == 2 and s["picked"] in s["grid"] for s in selection.values())
    # the lr -> 0 end, and how many samples the pass@1 rates count (to judge a difference against noise)
    base = read_json(next((out / "runs" / "_step0").glob("qa_code-seed0-*-validation-step*.json")))
    for entry in selection.values():
        assert entry["base_validation"] == base["val_pass@1"]
        assert entry["validation_samples"] == base["val_eval_samples"] > 0
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["method"]) == ["base", "ebft", "sft"] and (summary["n_seeds"] == 2).all()
    for column in ("pass@1", "val_ce", "val_ce_ci95", "train_s", "tokens_processed"):
        assert column in summary.columns, column
    assert summary["val_ce_ci95"].notna().all()  # two seeds give an interval
    assert "± " in (out / "summary.md").read_text()
    figures = ("accuracy_vs_step.png", "val_ce_vs_step.png", "accuracy_vs_ce.png", "lr_sweep.png")
    for name in (*figures, "objectives_vs_step.png"):
        assert (out / name).stat().st_size > 1000, name
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 6  # the picked lr of each method and the base row, two seeds each
    # the base row is the step-0 evaluation, identical for every method of a seed (computed once, then read)
    for seed in (0, 1):
        base = runs[(runs["method"] == "base") & (runs["seed"] == seed)].iloc[0]
        initial = {
            p.parent.name: read_json(p)["initial"] for p in (out / "runs").glob(f"*seed{seed}*/summary.json")
        }
        assert len(initial) >= 2 and all(v == next(iter(initial.values())) for v in initial.values())
        assert math.isclose(base["val_ce"], next(iter(initial.values()))["val_ce"])
        reused = [
            read_json(p)["step0_eval_reused"] for p in (out / "runs").glob(f"*seed{seed}*/summary.json")
        ]
        assert reused.count(False) == 1, reused  # computed by the first run of the seed only
    counts = summary[summary["method"] == "ebft"].iloc[0]
    assert counts["eval_samples"] == runs[runs["method"] == "ebft"]["eval_samples"].sum() > 0
    assert math.isclose(counts["pass@1"], counts["correct_samples"] / counts["eval_samples"])
    assert (
        f"({int(counts['correct_samples'])}/{int(counts['eval_samples'])})"
        in (out / "summary.md").read_text()
    )
    # mean and interval are computed from the per-run values
    ebft = runs[runs["method"] == "ebft"]["val_ce"]
    row = summary[summary["method"] == "ebft"].iloc[0]
    assert math.isclose(row["val_ce"], ebft.mean())
    assert math.isclose(row["val_ce_ci95"], 12.706 * ebft.std(ddof=1) / math.sqrt(2))
    # re-aggregating is idempotent and needs no training
    again = aggregate(out, selection)
    pd.testing.assert_frame_equal(again, summary)
    assert "## Learning rates" in (out / "summary.md").read_text()
    # a rerun that reuses every run keeps the environment of the run that computed them
    environment = (out / "environment.json").read_bytes()
    reproduce("tiny", **run)
    assert (out / "environment.json").read_bytes() == environment


def test_extend_grid_steps_past_an_edge_pick_only():
    grid = [1e-4, 3e-4, 1e-3]
    assert math.isclose(extend_grid(grid, 1e-4), 1e-4 / 3)
    assert math.isclose(extend_grid(grid, 1e-3), 1e-3 * 10 / 3)
    assert extend_grid(grid, 3e-4) is None
    assert extend_grid([1e-3, 1e-2], 1e-3) is None  # two points: every pick is an edge; not extended


def test_an_edge_pick_extends_the_grid_and_is_recorded(model_dirs, tmp_path, monkeypatch):
    import ebft_repro.experiments.runner as runner

    # validation accuracy ties at this size, so val_ce decides: force the pick to the lowest rate
    monkeypatch.setattr(runner, "select_lr", lambda sweep, task: min(sweep))
    monkeypatch.setattr(runner, "MAX_GRID_EXTENSIONS", 1)
    fast = [o for o in FAST if not o.startswith("optim.lr_grid")] + ["optim.lr_grid=1e-4,3e-4,1e-3"]
    out = reproduce(
        "tiny", tasks=["qa_code"], methods=["sft"], seeds=[0], out_dir=tmp_path,
        overrides=fast + [f"model={model_dirs['llama']}", "train.n_steps=1"],
    )  # fmt: skip
    entry = read_json(out / "lr_selection.json")["qa_code-sft"]
    assert len(entry["extended_with"]) == 1 and math.isclose(entry["extended_with"][0], 1e-4 / 3)
    assert len(entry["grid"]) == 4 and entry["picked"] == min(entry["grid"]) and entry["interior"] is False
    assert len(list((out / "runs").glob("qa_code-sft-seed0-lr*/summary.json"))) == 4


def test_ebft_fm_has_its_own_runs_and_a_summary_section(model_dirs, tmp_path):
    fast = [o for o in FAST if not o.startswith("optim.lr_grid")] + [f"model={model_dirs['llama']}"]
    run = dict(tasks=["qa_code"], methods=["ebft", "ebft_fm"], seeds=[0], out_dir=tmp_path, lr_sweep=False)
    out = reproduce("tiny", overrides=fast, **run)
    runs = {p.parent.name: read_json(p) for p in (out / "runs").glob("*/summary.json")}
    assert set(runs) == {"qa_code-ebft-seed0", "qa_code-ebft_fm-seed0"}
    assert runs["qa_code-ebft_fm-seed0"]["config"]["loss"]["ce_coef"] == 0.0  # gamma is recorded
    assert runs["qa_code-ebft-seed0"]["config"]["loss"]["ce_coef"] == 0.03
    # gamma changes no evaluation: the second run reads the first one's step-0 evaluation
    assert sorted(run["step0_eval_reused"] for run in runs.values()) == [False, True]
    assert list(pd.read_csv(out / "summary.csv")["method"]) == ["base", "ebft", "ebft_fm"]
    text = (out / "summary.md").read_text()
    assert "## Feature matching alone: EBFT with γ = 0 (`ebft_fm`)" in text
    assert "| qa_code | pass@1 |" in text and "| qa_code | val_ce |" in text
    assert "| qa_code | ebft_fm (EBFT, γ=0) | 1 |" in text


@pytest.mark.parametrize("preset", PRESETS)
def test_reproduce_runs_every_method_by_default(preset, tmp_path, monkeypatch):
    import ebft_repro.experiments.runner as runner
    from ebft_repro.trainer import RunResult

    seen = []

    def fake_train(cfg, **kwargs):
        seen.append((cfg.method, cfg.loss.ce_coef))
        return RunResult(None, {"final": {}}, [])

    monkeypatch.setattr(runner, "train", fake_train)
    monkeypatch.setattr(runner, "base_validation", lambda *args, **kwargs: {})
    monkeypatch.setattr(runner, "aggregate", lambda *args, **kwargs: None)
    runner.run_reproduction(preset, tasks=["qa_code"], seeds=[0], out_dir=tmp_path)
    assert {method for method, _ in seen} == set(METHODS) and "ebft_fm" in METHODS
    assert {gamma for method, gamma in seen if method == "ebft_fm"} == {0.0}


def test_the_progress_line_counts_runs_and_estimates_from_computed_ones_only():
    from collections import Counter

    from ebft_repro.experiments.progress_line import planned_runs, remaining_text

    # 3 reused (instant), 2 computed in 60 s and 120 s: 90 s each for the 40 left = 60 min
    counts = Counter(reused=3, computed=1, resumed=1)
    assert (
        remaining_text(counts, [60.0, 120.0], 40)
        == "3 reused, 2 computed, ~1 h 00 min left if the rest is computed"
    )
    assert (
        remaining_text(counts, [50.0], 1) == "3 reused, 2 computed, ~0 min 50 s left if the rest is computed"
    )
    assert remaining_text(Counter(reused=2), [], 5).endswith("after the first computed run")
    assert remaining_text(counts, [60.0], 0) == "3 reused, 2 computed"
    # tiny: 2-point grids, one seed -> 2 runs per (task, method); a single lr -> 1
    assert planned_runs("tiny", ["qa_code", "code"], ["sft", "ebft"], 1, True, []) == 8
    assert planned_runs("tiny", ["qa_code"], ["sft"], 3, False, []) == 3
    assert planned_runs("tiny", ["qa_code"], ["sft"], 1, True, ["optim.lr_grid=[0.1,0.2,0.3]"]) == 3


def test_figure_axes_say_what_was_measured_on_which_split():
    from ebft_repro.experiments.plotting import OBJECTIVES, metric_label

    assert metric_label("code", "pass@1") == "pass@1 on Q&A test"  # raw code is scored on the Q&A tests
    assert metric_label("qa_code", "unit_test_pass_frac") == "unit tests passed (fraction) on Q&A test"
    assert metric_label("translation", "bleu") == "BLEU (mean of directions) on translation test"
    assert metric_label("code", "val_ce") == "CE (nats/token) on code validation"
    assert metric_label("translation", "val_fm_loss") == "CFM loss on translation validation"
    assert set(OBJECTIVES) == set(__import__("ebft_repro.config", fromlist=["METHODS"]).METHODS)


@pytest.mark.parametrize("n_train_steps", [1, 3, 8])
def test_objectives_figure_draws_runs_of_any_length(tmp_path, n_train_steps):
    import json

    from ebft_repro.experiments.plotting import plot_objectives

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rows = [{"step": 0, "kind": "eval", "val_fm_loss": 0.5}]
    rows += [{"step": s, "kind": "train", "reward_mean": 0.1 * s} for s in range(n_train_steps)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    runs = [{"task": "qa_code", "method": m, "run_dir": str(run_dir)} for m in ("rlvr", "ebft")]
    assert plot_objectives(runs, tmp_path / "objectives.png", title="t").stat().st_size > 1000
