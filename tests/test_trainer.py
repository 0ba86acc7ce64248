"""Two-step runs of each method on tiny saved models: parameters change, the feature net does not, runs are
deterministic, resume exactly (also after kill -9), and the verifier rewards are right."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from ebft_repro import batching, ebft
from ebft_repro import trainer as trainer_module
from ebft_repro.context import build_context
from ebft_repro.evaluation.downstream import verifier_rewards
from ebft_repro.trainer import train

from .conftest import fast_config


def _snapshot(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


@pytest.mark.parametrize("method", ["ebft", "sft", "rlvr"])
def test_two_steps_change_every_parameter_and_not_the_feature_net(model_dirs, method):
    cfg = fast_config(model_dirs["llama"], method=method)
    ctx = build_context(cfg)
    before, feature_before = _snapshot(ctx.policy), _snapshot(ctx.feature_net)
    optimizer = torch.optim.AdamW(ctx.policy.parameters(), lr=1e-2, betas=(0.9, 0.95))
    for step in range(2):
        optimizer.zero_grad()
        metrics = trainer_module.STEPS[method](ctx, step)
        optimizer.step()
        assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values()), metrics
    after = _snapshot(ctx.policy)
    unchanged = [name for name in before if torch.equal(before[name], after[name])]
    assert not unchanged, f"{method}: parameters that did not change: {unchanged}"
    for name, value in _snapshot(ctx.feature_net).items():
        assert torch.equal(value, feature_before[name]), name  # bit-for-bit


@pytest.mark.parametrize("arch, task", [("gpt2", "translation"), ("llama", "code")])
def test_train_runs_end_to_end_and_is_deterministic(model_dirs, tmp_path, arch, task):
    cfg = fast_config(model_dirs[arch], task=task, method="ebft")
    first = train(cfg, run_dir=tmp_path / "a")
    second = train(cfg, run_dir=tmp_path / "b")
    assert first.metrics == second.metrics
    assert {"val_ce", "val_ce_answer", "val_fm_loss"} <= set(first.summary["final"])
    for name in ("config.json", "metrics.jsonl", "summary.json", "environment.json"):
        assert (tmp_path / "a" / name).exists(), name
    assert not (tmp_path / "a" / "checkpoint.pt").exists()


def test_finished_runs_are_reused_unless_forced(model_dirs, tmp_path):
    cfg = fast_config(model_dirs["llama"], method="sft")
    train(cfg, run_dir=tmp_path)
    stamp = (tmp_path / "summary.json").stat().st_mtime_ns
    train(cfg, run_dir=tmp_path)
    assert (tmp_path / "summary.json").stat().st_mtime_ns == stamp
    train(cfg, run_dir=tmp_path, force=True)
    assert (tmp_path / "summary.json").stat().st_mtime_ns != stamp


def test_resume_after_interruption_matches_uninterrupted(model_dirs, tmp_path):
    cfg = fast_config(model_dirs["llama"], method="ebft", n_steps=4)
    reference = train(cfg, run_dir=tmp_path / "ref")
    partial = train(cfg, run_dir=tmp_path / "run", stop_after=3)
    assert not (tmp_path / "run" / "summary.json").exists()  # an interrupted run never looks complete
    assert (tmp_path / "run" / "checkpoint.pt").exists() and len(partial.metrics) < len(reference.metrics)
    resumed = train(cfg, run_dir=tmp_path / "run")
    assert resumed.metrics == reference.metrics


def test_resume_after_kill_9(model_dirs, tmp_path):
    cfg = fast_config(model_dirs["llama"], method="sft", n_steps=40)
    from ebft_repro.utils import write_json

    write_json(tmp_path / "cfg.json", cfg.to_dict())
    script = (
        "import sys; from ebft_repro.config import from_dict; from ebft_repro.trainer import train;"
        "from ebft_repro.utils import read_json;"
        "train(from_dict(read_json(sys.argv[1])), run_dir=sys.argv[2])"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "cfg.json"), str(tmp_path / "run")])
    deadline = time.time() + 120
    while (
        not (tmp_path / "run" / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None
    ):
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "run" / "summary.json").exists(), "the run finished before it could be killed"
    resumed = train(cfg, run_dir=tmp_path / "run")
    reference = train(cfg, run_dir=tmp_path / "ref")
    assert resumed.metrics == reference.metrics


def test_rlvr_verifier_rewards_known_answers():
    from ebft_repro import config
    from ebft_repro.data import load_task

    data = config.tiny().data
    problem = load_task("qa_code", data).train[0]
    wrong = f"def {problem.entry_point}(*args):\n    return None\n"
    assert verifier_rewards([problem, problem], [problem.completion, wrong]) == [1.0, 0.0]
    pair = load_task("translation", data).train[0]
    rewards = verifier_rewards([pair, pair], [pair.completion, " zzz qqq"])
    assert rewards[0] == pytest.approx(1.0) and rewards[1] < 0.1


def test_batch_order_is_shared_across_methods_and_a_function_of_seed_and_step():
    first = [batching.batch_indices(10, 4, seed=3, step=s) for s in range(5)]
    assert first == [batching.batch_indices(10, 4, seed=3, step=s) for s in range(5)]
    assert first != [batching.batch_indices(10, 4, seed=4, step=s) for s in range(5)]
    epoch = sorted(first[0] + first[1] + first[2][:2])  # the first 10 draws cover every item once
    assert epoch == list(range(10))


def test_kl_coef_reaches_the_loss_with_the_initial_policy_as_reference(model_dirs):
    """loss.kl_coef used to be validated and then dropped; now it adds beta * KL(policy || initial)."""
    from dataclasses import replace

    def step_metrics(kl_coef: float) -> dict:
        cfg = fast_config(model_dirs["llama"], method="ebft")
        cfg = replace(cfg, loss=replace(cfg.loss, kl_coef=kl_coef))
        ctx = build_context(cfg)
        with torch.no_grad():  # move the policy away from its frozen initial copy, so the KL is not 0
            for param in ctx.policy.parameters():
                param.add_(0.02 * torch.randn(param.shape, generator=torch.Generator().manual_seed(1)))
        return ebft.ebft_step(ctx, 0)

    off, on = step_metrics(0.0), step_metrics(0.5)
    assert "kl" not in off and on["kl"] > 0
    assert on["loss"] == pytest.approx(off["loss"] + 0.5 * on["kl"], rel=1e-5)


def test_kl_with_a_separate_feature_model_is_rejected():
    from ebft_repro.config import apply_overrides, get_preset

    with pytest.raises(ValueError, match="kl_coef"):
        apply_overrides(
            get_preset("tiny", "qa_code", "ebft"), ["loss.kl_coef=0.1", "featurizer.feature_model=x"]
        )


def test_group_and_ungroup_are_inverse_and_match_the_rloo_layout():
    """Sequence b*N + j of block k lands in group b*K + k at position j, and back."""
    n_chunks, n_samples, n_blocks, dim = 3, 4, 5, 2
    values = torch.arange(n_chunks * n_samples * n_blocks * dim).view(n_chunks * n_samples, n_blocks, dim)
    grouped = ebft.group(values, n_samples)  # (B*K, N, D)
    assert grouped.shape == (n_chunks * n_blocks, n_samples, dim)
    for b in range(n_chunks):
        for k in range(n_blocks):
            for j in range(n_samples):
                assert torch.equal(grouped[b * n_blocks + k, j], values[b * n_samples + j, k])
    assert torch.equal(ebft.ungroup(grouped, n_chunks), values)
    scalars = values[..., 0]  # (B*N, K), e.g. advantages
    assert torch.equal(ebft.ungroup(ebft.group(scalars, n_samples), n_chunks), scalars)


def test_base_validation_is_what_a_run_with_zero_learning_rate_scores(model_dirs, tmp_path, monkeypatch):
    from dataclasses import replace

    from ebft_repro.run_eval import base_validation

    cfg = fast_config(model_dirs["gpt2"], task="translation", method="sft")
    with monkeypatch.context() as patch:  # updates of size 0 (the config rejects lr=0): a full run, no step
        patch.setattr(torch.optim.AdamW, "step", lambda self, closure=None: None)
        still = train(cfg).summary["final"]
    base = base_validation(cfg, tmp_path)
    assert base["val_chrf"] > 0 and base["val_eval_prompts"] > 0
    assert base == {key: still[key] for key in base}  # same weights, same validation sampling stream
    assert base_validation(cfg, tmp_path) == base and len(list(tmp_path.glob("*-validation-step*.json"))) == 1
    moved = train(replace(cfg, optim=replace(cfg.optim, lr=1e-2))).summary["final"]
    assert moved["val_chrf"] != base["val_chrf"]  # the comparison sees training


def test_ebft_fm_is_the_ebft_step_without_the_ce_term(model_dirs):
    """The gamma = 0 control: same rollouts and advantages as EBFT at step 0, and no CE in its loss."""
    assert trainer_module.STEPS["ebft_fm"] is ebft.ebft_step

    def step_metrics(method: str) -> dict:
        ctx = build_context(fast_config(model_dirs["llama"], method=method))
        return trainer_module.STEPS[method](ctx, 0)

    full, control = step_metrics("ebft"), step_metrics("ebft_fm")
    assert control["pg_loss"] == pytest.approx(full["pg_loss"]) and control["ce_loss"] == full["ce_loss"]
    assert control["loss"] == control["pg_loss"]  # the CE is measured, not trained on
    assert full["loss"] == pytest.approx(full["pg_loss"] + 0.03 * full["ce_loss"], rel=1e-5)
    assert full["ce_loss"] > 0.1  # so the line above tells 0.03 from 0


def test_rlvr_metrics_rows_record_the_share_of_zero_advantage_groups(model_dirs, tmp_path):
    from ebft_repro.utils import read_jsonl

    cfg = fast_config(model_dirs["llama"], method="rlvr")
    train(cfg, run_dir=tmp_path)
    rows = [row for row in read_jsonl(tmp_path / "metrics.jsonl") if row["kind"] == "train"]
    assert len(rows) == cfg.train.n_steps
    for row in rows:  # a share of the step's prompts_per_step groups
        share = row["zero_adv_group_frac"] * cfg.rlvr.prompts_per_step
        assert 0 <= row["zero_adv_group_frac"] <= 1 and share == pytest.approx(round(share))


def test_every_evaluation_records_its_prompts_outcomes_before_its_metrics(model_dirs, tmp_path):
    from dataclasses import replace

    from ebft_repro.evaluation.metrics import mean_pass_at_k
    from ebft_repro.utils import read_jsonl

    cfg = fast_config(model_dirs["llama"], method="sft")
    cfg = replace(cfg, data=replace(cfg.data, seq_len=160))  # room for the Q&A prompts
    for run, cache in (("first", None), ("cached", tmp_path / "_step0"), ("reused", tmp_path / "_step0")):
        train(cfg, run_dir=tmp_path / run, step0_cache=cache)
        rows = read_jsonl(tmp_path / run / "metrics.jsonl")
        assert rows[-1]["kind"] == "eval"  # what marks a finished run
        evals = [i for i, row in enumerate(rows) if row["kind"] == "eval"]
        for i in evals:
            prompts, metrics = rows[i - 1], rows[i]
            assert (prompts["kind"], prompts["step"]) == ("prompts", metrics["step"])
            assert len(prompts["correct"]) == metrics["eval_prompts"] > 0
            assert sum(prompts["correct"]) == metrics["correct_samples"]
            assert mean_pass_at_k(prompts["correct"], prompts["n_samples"], 1) == metrics["pass@1"]
        if run == "first":
            expected = rows
        assert rows == expected  # computed, cached or reused: the same records
