"""The command line: help, clear errors naming the bad input, and training any saved HF model."""

import json
import subprocess
import sys

import pytest

from ebft_repro.cli import main
from ebft_repro.models import check_vocab, load_causal_lm, load_tokenizer, resolve_model_path


@pytest.mark.parametrize("command", ["prepare", "train", "evaluate", "reproduce"])
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
