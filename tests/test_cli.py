"""The command line: help, clear errors naming the bad input, and training any saved HF model."""

import json
import os
import subprocess
import sys

import pytest

from ebft_repro.experiments.cli import main
from ebft_repro.models import check_vocab, load_causal_lm, load_tokenizer, resolve_model_path


@pytest.mark.parametrize("command", ["prepare", "train", "evaluate", "reproduce", "aggregate"])
def test_help_documents_every_subcommand(command):
    out = subprocess.run(
        [sys.executable, "-m", "ebft_repro", command, "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "usage" in out.stdout
    if command == "train":
        for option in ("--task", "--method", "--preset", "--seed", "--model", "--set"):
            assert option in out.stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--task", "math"], "--task 'math'"),
        (["train", "--method", "ppo"], "--method 'ppo'"),
        (["train", "--preset", "huge"], "--preset 'huge'"),
        (["train", "--set", "sampler.strid=4"], "strid"),
        (
            ["train", "--model", "/nonexistent/model/dir", "--out", "/tmp/ebft_cli_never_written"],
            "no such local directory",
        ),
    ],
)
def test_bad_input_is_named(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        resolve_model_path(str(tmp_path))


def test_tokenizer_vocab_mismatch_is_rejected(model_dirs):
    from transformers import LlamaConfig, LlamaForCausalLM

    small = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
    )
    with pytest.raises(ValueError, match="vocabulary"):
        check_vocab(small, load_tokenizer(str(model_dirs["llama"])))
    check_vocab(load_causal_lm(str(model_dirs["llama"])), load_tokenizer(str(model_dirs["llama"])))


def _overrides(**fields) -> list[str]:
    """``--set`` options for a run small enough for a unit test."""
    return [arg for key, value in fields.items() for arg in ("--set", f"{key.replace('__', '.')}={value}")]


SMALL_DATA = dict(data__n_train=40, data__n_val=4, data__n_test=4)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_train_command_accepts_a_saved_model(model_dirs, tmp_path, capsys, arch):
    argv = [
        "train",
        "--model",
        str(model_dirs[arch]),
        "--task",
        "qa_code",
        "--method",
        "sft",
        "--out",
        str(tmp_path),
    ]
    argv += _overrides(data__seq_len=64, **SMALL_DATA, train__n_steps=2, eval__every_steps=2)
    argv += _overrides(eval__n_prompts=2, eval__max_new_tokens=8)
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["method"] == "sft" and summary["n_steps"] == 2
    assert (tmp_path / "summary.json").exists()


def test_evaluate_command_prints_metrics(model_dirs, capsys):
    argv = ["evaluate", "--model", str(model_dirs["gpt2"]), "--task", "translation", "--split", "validation"]
    argv += _overrides(sampler__stride=2, data__seq_len=128, **SMALL_DATA, data__n_val_chunks=1)
    argv += _overrides(eval__n_prompts=2, eval__max_new_tokens=8)
    assert main(argv) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"val_ce", "val_ce_answer", "bleu", "chrf"} <= set(metrics)


def _fast_train_argv(model_dir, out, method="sft", **fields) -> list[str]:
    argv = ["train", "--model", str(model_dir), "--task", "qa_code", "--method", method, "--out", str(out)]
    argv += _overrides(data__seq_len=64, **SMALL_DATA, train__n_steps=2, eval__every_steps=2)
    return argv + _overrides(eval__n_prompts=2, eval__max_new_tokens=8, **fields)


def _one_line_error(capsys) -> str:
    """The error line (stderr may also hold progress bars of model loading), and no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("ebft-repro: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lr=inf", "optim.lr=inf must be finite"),
        ("sampler.temperature=nan", "sampler.temperature=nan must be finite"),
        ("optim.betas=0.9", "optim.betas=0.9"),
        ("train.device=banana", "train.device='banana' is not one of"),
        ("train.n_steps=none", "expected an integer, got 'none'"),
    ],
)
def test_bad_values_end_in_one_line_and_exit_2(model_dirs, tmp_path, capsys, override, message):
    assert main(_fast_train_argv(model_dirs["llama"], tmp_path / "run") + ["--set", override]) == 2
    assert message in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()  # nothing was written


def test_ebft_fm_with_a_ce_term_is_refused(model_dirs, tmp_path, capsys):
    argv = _fast_train_argv(model_dirs["llama"], tmp_path / "run", method="ebft_fm")
    assert main(argv + ["--set", "loss.ce_coef=0.03"]) == 2
    assert "loss.ce_coef=0.03 must be 0 for method='ebft_fm'" in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_overrides_combine_in_any_order_on_the_command_line(model_dirs, capsys):
    argv = ["evaluate", "--model", str(model_dirs["gpt2"]), "--task", "qa_code", "--split", "validation"]
    argv += _overrides(**SMALL_DATA, data__n_val_chunks=1, eval__n_prompts=1, eval__max_new_tokens=4)
    assert main(argv + ["--set", "sampler.stride=3", "--set", "data.seq_len=124"]) == 0
    assert main(argv + ["--set", "data.seq_len=124", "--set", "sampler.stride=3"]) == 0


def test_an_unwritable_out_is_reported_before_training(model_dirs, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(_fast_train_argv(model_dirs["llama"], blocker / "run")) == 2
    assert f"output folder {blocker / 'run'} is not writable" in _one_line_error(capsys)
    if os.geteuid() != 0:  # root writes anywhere
        read_only = tmp_path / "read_only"
        read_only.mkdir(mode=0o555)
        assert main(_fast_train_argv(model_dirs["llama"], read_only / "run")) == 2
        assert "permission denied" in _one_line_error(capsys)


def test_resuming_under_another_config_stops_naming_the_fields(model_dirs, tmp_path, capsys):
    """The issue's scenario: a run interrupted after a checkpoint, rerun with another lr and more steps."""
    out = tmp_path / "run"
    argv = _fast_train_argv(model_dirs["llama"], out, method="ebft", train__checkpoint_every_steps=1)
    assert main(argv + ["--set", "train.n_steps=4"]) == 0
    (out / "summary.json").unlink()  # as if killed after the last checkpoint: resume from it
    from ebft_repro.experiments.cli import _config, build_parser
    from ebft_repro.trainer import train

    cfg = _config(build_parser().parse_args(argv + ["--set", "train.n_steps=4"]), "ebft")
    train(cfg, run_dir=out, force=True, stop_after=2)
    capsys.readouterr()
    assert main(argv + ["--set", "train.n_steps=6", "--set", "optim.lr=0.01"]) == 2
    err = _one_line_error(capsys)
    assert "optim.lr: 0.0003 -> 0.01" in err and "--force" in err and "train.n_steps: 4" not in err
    assert not (out / "summary.json").exists()
    assert main(argv + ["--set", "train.n_steps=6", "--set", "optim.lr=0.01", "--force"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert summary["lr"] == 0.01 and {row["lr"] for row in rows if row["kind"] == "train"} == {0.01}


def test_a_diverging_run_ends_in_one_line_and_exit_1(model_dirs, tmp_path, capsys, monkeypatch):
    from ebft_repro import trainer as steps

    real = steps.STEPS["sft"]
    monkeypatch.setitem(steps.STEPS, "sft", lambda ctx, step: real(ctx, step) | {"loss": float("inf")})
    assert main(_fast_train_argv(model_dirs["llama"], tmp_path)) == 1
    assert "at step 0 is not finite (loss=inf)" in _one_line_error(capsys)


def test_reproduce_says_what_was_reused_and_how_to_recompute(model_dirs, tmp_path, capsys):
    argv = ["reproduce", "--tasks", "qa_code", "--methods", "sft", "--seeds", "0", "--no-lr-sweep"]
    argv += ["--out", str(tmp_path), "--set", f"model={model_dirs['llama']}"]
    argv += _overrides(data__seq_len=64, **SMALL_DATA, data__n_val_chunks=1, train__n_steps=2)
    argv += _overrides(eval__every_steps=2, eval__n_prompts=2, eval__max_new_tokens=4, eval__n_fm_chunks=1)
    assert main(argv) == 0
    assert "0 run(s) reused from cache" in capsys.readouterr().out
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "1 run(s) reused from cache" in out and "0 computed" in out and "--force" in out


def test_aggregate_redoes_tables_and_figures_without_training(tmp_path, capsys, monkeypatch):
    import shutil

    from ebft_repro import trainer
    from ebft_repro.utils import repo_root

    out = tmp_path / "tiny"
    shutil.copytree(repo_root() / "results" / "tiny", out)
    for name in ("summary.md", "verdicts.csv", "lr_sweep.png"):
        (out / name).unlink()
    monkeypatch.setattr(trainer, "train", lambda *a, **k: pytest.fail("aggregate must not train"))
    assert main(["aggregate", "--out", str(out)]) == 0
    assert "no run trained" in capsys.readouterr().out
    committed = repo_root() / "results" / "tiny"
    assert (out / "verdicts.csv").read_text() == (committed / "verdicts.csv").read_text()
    assert (out / "lr_sweep.png").stat().st_size > 1000
    assert main(["aggregate", "--out", str(tmp_path / "nothing")]) == 2
    assert "no runs/ folder" in capsys.readouterr().err
