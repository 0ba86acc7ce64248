"""Runs that never silently lie (issue 12): config-checked resume, safe checkpoints, clear errors for corrupt
files and non-finite values, one process per run folder, shared caches that other users can read."""

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ebft_repro import run_eval
from ebft_repro import trainer as steps
from ebft_repro.config import BaseModelConfig, DataConfig
from ebft_repro.trainer import lr_lambda, train
from ebft_repro.utils import write_json

from .conftest import fast_config

# ------------------------------------------------------------------------------ 1. config-checked resume


def _interrupted(model_dirs, run_dir, **kwargs):
    """A run of 4 steps stopped after 2 (checkpoints every step), and its config."""
    cfg = fast_config(model_dirs["llama"], method="ebft", n_steps=4, **kwargs)
    train(cfg, run_dir=run_dir, stop_after=2)
    assert (run_dir / "checkpoint.pt").exists()
    return cfg


def test_resume_under_a_changed_config_names_the_fields_and_force(model_dirs, tmp_path):
    cfg = _interrupted(model_dirs, tmp_path)
    changed = replace(cfg, optim=replace(cfg.optim, lr=0.05), train=replace(cfg.train, n_steps=6))
    with pytest.raises(ValueError, match=r"optim\.lr: 0\.01 -> 0\.05.*--force"):
        train(changed, run_dir=tmp_path)
    assert (tmp_path / "checkpoint.pt").exists()  # never silently deleted
    forced = train(changed, run_dir=tmp_path, force=True)
    assert {row["lr"] for row in forced.metrics if row["kind"] == "train"} == {0.05}
    assert forced.summary["lr"] == 0.05 and forced.status == "computed"


def test_extending_n_steps_resumes_to_the_same_metrics_as_an_uninterrupted_run(model_dirs, tmp_path):
    cfg = _interrupted(model_dirs, tmp_path / "run")
    longer = replace(cfg, train=replace(cfg.train, n_steps=6, checkpoint_every_steps=2))
    resumed = train(longer, run_dir=tmp_path / "run")
    assert resumed.status == "resumed"
    reference = train(longer, run_dir=tmp_path / "ref")
    assert resumed.metrics == reference.metrics


def test_only_the_documented_fields_may_change_on_resume():
    from ebft_repro import config
    from ebft_repro.run_state import RESUMABLE_FIELDS, blocking_changes, plain

    ebft = config.tiny(method="ebft")  # constant schedule, warmup ceil(0.03 * 16) = 1 step
    stored = plain(ebft.to_dict())
    longer = replace(ebft, train=replace(ebft.train, n_steps=20, checkpoint_every_steps=4, save_model=True))
    assert blocking_changes(stored, longer, next_step=8, lr_factor=lr_lambda) == {}
    shorter = replace(ebft, train=replace(ebft.train, n_steps=6))
    assert blocking_changes(stored, shorter, next_step=6, lr_factor=lr_lambda) == {}
    assert "train.n_steps" in blocking_changes(stored, shorter, next_step=8, lr_factor=lr_lambda)  # done more
    many_warmup = replace(longer, train=replace(longer.train, n_steps=40))  # warmup becomes 2 steps
    assert "train.n_steps" in blocking_changes(stored, many_warmup, next_step=8, lr_factor=lr_lambda)
    sft = config.tiny(method="sft")  # cosine: every learning rate depends on n_steps
    sft_longer = replace(sft, train=replace(sft.train, n_steps=20))
    assert "train.n_steps" in blocking_changes(plain(sft.to_dict()), sft_longer, 8, lr_lambda)
    other = replace(ebft, loss=replace(ebft.loss, ce_coef=0.1))
    assert list(blocking_changes(stored, other, 8, lr_lambda)) == ["loss.ce_coef"]
    assert set(RESUMABLE_FIELDS) == {"train.n_steps", "train.checkpoint_every_steps", "train.save_model"}


def test_a_finished_run_of_another_config_is_not_silently_replaced(model_dirs, tmp_path):
    cfg = fast_config(model_dirs["llama"], method="sft")
    train(cfg, run_dir=tmp_path)
    stamp = (tmp_path / "summary.json").stat().st_mtime_ns
    with pytest.raises(ValueError, match=r"finished run with a different config: optim\.lr.*--force"):
        train(replace(cfg, optim=replace(cfg.optim, lr=0.02)), run_dir=tmp_path)
    assert (tmp_path / "summary.json").stat().st_mtime_ns == stamp


def test_a_finished_run_that_does_not_name_its_base_model_is_not_reused(model_dirs, tmp_path):
    """Summaries written before runs recorded their base model must not pass for runs of today's base."""
    cfg = fast_config(model_dirs["llama"], method="sft")
    train(cfg, run_dir=tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    del summary["base_model"]
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ValueError, match=r"base model: .*not recorded.*--force"):
        train(cfg, run_dir=tmp_path)
    assert train(cfg, run_dir=tmp_path, force=True).status == "computed"


# -------------------------------------------------------------------------------- 2. safe checkpoints


class _Planted:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_planted_pickle_in_a_run_folder_never_runs(model_dirs, tmp_path):
    cfg = fast_config(model_dirs["llama"], method="sft")
    marker = tmp_path / "pwned"
    (tmp_path / "run").mkdir()
    torch.save({"policy": _Planted(str(marker))}, tmp_path / "run" / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"checkpoint\.pt is corrupt or not a safe checkpoint.*--force"):
        train(cfg, run_dir=tmp_path / "run")
    assert not marker.exists()


def test_checkpoints_load_with_weights_only(model_dirs, tmp_path):
    from ebft_repro.run_state import plain

    cfg = fast_config(model_dirs["llama"], method="ebft", n_steps=3)
    train(cfg, run_dir=tmp_path, stop_after=2)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["next_step"] == 2 and state["config"] == plain(cfg.to_dict())
    assert isinstance(state["base_model"], str) and state["metrics"]


# ------------------------------------------------------------------------ 3. corrupt and truncated files


@pytest.mark.parametrize("damage", ["garbage", "truncated", "old_format"])
def test_a_corrupt_checkpoint_is_named_and_kept(model_dirs, tmp_path, damage):
    cfg = _interrupted(model_dirs, tmp_path)
    path = tmp_path / "checkpoint.pt"
    if damage == "garbage":
        path.write_bytes(b"\x00not a checkpoint" * 50)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        state = torch.load(path, weights_only=True)
        torch.save({k: v for k, v in state.items() if k not in ("format", "config")}, path)
    size = path.stat().st_size
    with pytest.raises(ValueError, match=rf"{path}.*(corrupt|not a checkpoint this version).*--force"):
        train(cfg, run_dir=tmp_path)
    assert path.stat().st_size == size


@pytest.mark.parametrize(
    "name, cut", [("metrics.jsonl", 0.5), ("metrics.jsonl", "last_line"), ("summary.json", 0.5)]
)
def test_a_damaged_finished_run_is_named_with_its_recovery(model_dirs, tmp_path, name, cut):
    cfg = fast_config(model_dirs["llama"], method="sft")
    train(cfg, run_dir=tmp_path)
    path = tmp_path / name
    text = path.read_text()
    path.write_text(
        "".join(text.splitlines(True)[:-1]) if cut == "last_line" else text[: int(len(text) * cut)]
    )
    with pytest.raises(ValueError, match=rf"{name} is (corrupt|incomplete).*--force"):
        train(cfg, run_dir=tmp_path)
    assert train(cfg, run_dir=tmp_path, force=True).status == "computed"


def test_atomic_writes_keep_the_old_file_when_interrupted(tmp_path):
    from ebft_repro.utils import atomic_path

    path = tmp_path / "summary.json"
    write_json(path, {"ok": 1})
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text('{"half": ')
        raise RuntimeError("killed")
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temp file left behind


# ------------------------------------------------------------------------------------- 4. non-finite runs


def test_a_non_finite_loss_stops_the_run_naming_the_step(model_dirs, tmp_path, monkeypatch):
    real = steps.STEPS["sft"]

    def diverging(ctx, step):
        metrics = real(ctx, step)
        return metrics | {"loss": float("nan")} if step == 1 else metrics

    monkeypatch.setitem(steps.STEPS, "sft", diverging)
    cfg = fast_config(model_dirs["llama"], method="sft", n_steps=3)
    with pytest.raises(FloatingPointError, match=r"qa_code-sft-seed0: the training step at step 1.*loss=nan"):
        train(cfg, run_dir=tmp_path)
    assert not (tmp_path / "summary.json").exists()


def test_a_non_finite_evaluation_never_reaches_a_summary(model_dirs, tmp_path, monkeypatch):
    real = run_eval.evaluate  # the step-0 evaluation (run_eval.evaluate_step0) calls it from run_eval
    monkeypatch.setattr(
        run_eval, "evaluate", lambda ctx, step, *rest: real(ctx, step, *rest) | {"val_ce": float("inf")}
    )
    with pytest.raises(FloatingPointError, match=r"evaluation at step 0.*val_ce=inf"):
        train(fast_config(model_dirs["llama"], method="sft"), run_dir=tmp_path)
    assert not (tmp_path / "summary.json").exists()


# --------------------------------------------------------------------------------- 6. one process per run


def test_a_second_process_on_the_same_run_waits_and_reuses_it(model_dirs, tmp_path):
    cfg = fast_config(model_dirs["llama"], method="sft", n_steps=6)
    write_json(tmp_path / "cfg.json", cfg.to_dict())
    script = (
        "import sys; from ebft_repro.config import from_dict; from ebft_repro.trainer import train;"
        "from ebft_repro.utils import read_json;"
        "train(from_dict(read_json(sys.argv[1])), run_dir=sys.argv[2])"
    )
    run_dir = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "cfg.json"), str(run_dir)])
    deadline = time.time() + 120
    while not (run_dir / "config.json").exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.02)  # config.json is written once the first process holds the run's lock
    assert first.poll() is None, "the first run finished before the second started"
    second = train(cfg, run_dir=run_dir)
    assert first.wait() == 0
    assert second.status == "reused"
    assert second.summary == json.loads((run_dir / "summary.json").read_text())


# ------------------------------------------------------------------------------ 7. shared base-model cache

MICRO_BASE = BaseModelConfig(
    vocab_size=300,
    hidden_size=16,
    n_layers=1,
    n_heads=2,
    intermediate_size=32,
    max_position_embeddings=64,
    pretrain_steps=2,
    pretrain_batch_size=2,
    pretrain_seq_len=32,
    n_qa_docs=30,
    n_code_files=2,
    n_translation_pairs=30,
)
MICRO_DATA = DataConfig(seq_len=64, n_train=20, n_val=4, n_test=4, n_val_chunks=2, max_chars_per_file=600)


@pytest.fixture(scope="module")
def micro_cache(tmp_path_factory):
    """A base model built by ``ensure_base_model`` (seconds) in a cache of its own, under umask 022."""
    from ebft_repro.pretrain import ensure_base_model

    old_mask = os.umask(0o022)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EBFT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        try:
            yield ensure_base_model(MICRO_BASE, MICRO_DATA, name="micro")
        finally:
            os.umask(old_mask)


def test_cached_base_model_files_follow_the_umask(micro_cache):
    modes = {path.name: path.stat().st_mode & 0o777 for path in micro_cache.iterdir()}
    assert modes["model.safetensors"] == 0o644, modes  # safetensors alone would write 0600
    assert set(modes.values()) == {0o644}


@pytest.mark.parametrize("legacy", [False, True])
def test_a_truncated_cached_base_model_is_rebuilt_with_a_warning(micro_cache, caplog, monkeypatch, legacy):
    from ebft_repro.pretrain import cache_problem, ensure_base_model

    monkeypatch.setenv("EBFT_CACHE_DIR", str(micro_cache.parent))
    weights = micro_cache / "model.safetensors"
    size = weights.stat().st_size
    if legacy:  # a cache from before manifests: DONE says "ok"
        (micro_cache / "DONE").write_text("ok\n")
    weights.write_bytes(weights.read_bytes()[: size // 2])
    assert "model.safetensors" in cache_problem(micro_cache)
    with caplog.at_level(logging.WARNING):
        assert ensure_base_model(MICRO_BASE, MICRO_DATA, name="micro") == micro_cache
    assert "damaged" in caplog.text and "rebuilding" in caplog.text
    assert weights.stat().st_size == size and cache_problem(micro_cache) is None


def test_an_unreadable_model_file_says_permission_denied(micro_cache):
    from ebft_repro.models import resolve_model_path

    shared = Path(tempfile.mkdtemp(prefix="ebft-shared-"))
    try:
        shared.chmod(0o755)
        for path in micro_cache.iterdir():
            (shared / path.name).write_bytes(path.read_bytes())
        (shared / "model.safetensors").chmod(0o000)  # another user's 0600 file, for whoever runs this
        euid = os.geteuid()
        if euid == 0:
            os.seteuid(65534)  # root reads anything: check as "nobody"
        try:
            with pytest.raises(PermissionError, match=r"permission denied: cannot read .*model\.safetensors"):
                resolve_model_path(str(shared))
        finally:
            if euid == 0:
                os.seteuid(0)
    finally:
        for path in shared.iterdir():
            path.unlink()
        shared.rmdir()


def test_run_lock_files_are_git_ignored():
    root = Path(__file__).resolve().parent.parent
    paths = ["results/tiny/runs/qa_code-ebft-seed0/run.lock", "results/tiny/lr_selection.lock"]
    out = subprocess.run(["git", "check-ignore", *paths], cwd=root, capture_output=True, text=True)
    assert out.stdout.split() == paths


def test_a_run_from_a_rebuilt_base_with_other_weights_is_recomputed_not_reused(
    micro_cache, tmp_path, monkeypatch, caplog
):
    """Same recipe (folder name), other weights (e.g. built on another CPU): the finished run is never
    reused; it is recomputed with a warning that says why (nothing the user chose changed). A rebuild that
    changes only the build log keeps the identity and the run is reused. A config change still stops."""
    import shutil

    from safetensors.torch import load_file, save_file

    from ebft_repro.pretrain import BUILD_LOG_NAME, MANIFEST_NAME, _manifest
    from ebft_repro.run_state import FORCE_HINT

    cache = tmp_path / "cache"
    base_dir = cache / micro_cache.name
    shutil.copytree(micro_cache, base_dir)
    monkeypatch.setenv("EBFT_CACHE_DIR", str(cache))
    cfg = replace(
        fast_config("unused", method="sft"), model="builtin:micro", base=MICRO_BASE, data=MICRO_DATA
    )
    first, first_key = run_eval.base_model_identity(cfg), run_eval.step0_key(cfg)
    assert first.startswith(f"{micro_cache.name}@")
    train(cfg, run_dir=tmp_path / "run")

    def rebuild(change):  # what another build leaves: changed files and a manifest that matches them
        change()
        write_json(base_dir / MANIFEST_NAME, _manifest(base_dir))

    log = base_dir / BUILD_LOG_NAME
    rebuild(lambda: log.write_text(log.read_text().replace('"seconds"', '"seconds_again"')))
    assert run_eval.base_model_identity(cfg) == first
    assert train(cfg, run_dir=tmp_path / "run").status == "reused"

    weights = base_dir / "model.safetensors"
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    rebuild(lambda: save_file({**tensors, name: tensors[name] + 1e-6}, weights, metadata={"format": "pt"}))
    second = run_eval.base_model_identity(cfg)
    assert second != first and second.split("@")[0] == first.split("@")[0]
    assert run_eval.step0_key(cfg) != first_key  # nor is its cached step-0 evaluation
    changed = replace(cfg, optim=replace(cfg.optim, lr=0.02))
    with pytest.raises(ValueError, match=r"optim\.lr.*base model: .*built into different weights.*--force"):
        train(changed, run_dir=tmp_path / "run")
    with caplog.at_level(logging.WARNING):
        rerun = train(cfg, run_dir=tmp_path / "run")
    assert rerun.status == "computed" and "built into different weights" in caplog.text
    assert "Recomputing it" in caplog.text and FORCE_HINT not in caplog.text  # recomputed: no hint to force
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["base_model"] == second
    assert train(cfg, run_dir=tmp_path / "run").status == "reused"
