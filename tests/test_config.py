"""Config validation, presets, overrides, and the packaging promises (environment.yml, lazy imports)."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import tomllib

from ebft_repro import config

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("preset", config.PRESETS)
@pytest.mark.parametrize("task", config.TASKS)
def test_presets_are_valid_for_every_task_and_method(preset, task):
    for method in config.METHODS:
        cfg = config.get_preset(preset, task, method)
        assert cfg.task == task and cfg.method == method and cfg.preset == preset
        assert len(cfg.optim.lr_grid) == len(config.get_preset(preset, task, "ebft").optim.lr_grid)
        assert cfg.optim.schedule == ("cosine" if method == "sft" else "constant")


@pytest.mark.parametrize("preset", config.PRESETS)
@pytest.mark.parametrize("task", config.TASKS)
def test_ebft_fm_is_ebft_with_gamma_zero(preset, task):
    """The gamma = 0 control differs from EBFT in its name and loss.ce_coef only (same lr grid, same all)."""
    ebft, control = config.get_preset(preset, task, "ebft"), config.get_preset(preset, task, "ebft_fm")
    assert "ebft_fm" in config.METHODS and "ebft_fm" in config.CONTROLS
    assert control.loss.ce_coef == 0.0 and ebft.loss.ce_coef > 0
    assert control.to_dict()["loss"]["ce_coef"] == 0.0  # recorded in every run's config.json
    assert replace(control, method="ebft", loss=ebft.loss) == ebft
    assert control.optim.lr_grid == ebft.optim.lr_grid
    assert control.run_name == f"{task}-ebft_fm-seed{ebft.seed}" != ebft.run_name  # its own run folders


def test_ebft_fm_refuses_a_ce_term():
    with pytest.raises(ValueError, match=r"loss\.ce_coef=0\.03 must be 0 for method='ebft_fm'"):
        config.apply_overrides(config.tiny(method="ebft_fm"), ["loss.ce_coef=0.03"])
    with pytest.raises(ValueError, match="ebft_fm"):
        config.ExperimentConfig(method="ebft_fm")  # the default loss has gamma = 0.03


def test_paper_preset_records_the_authors_hyperparameters():
    qa, mt = config.paper("qa_code"), config.paper("translation")
    assert (qa.sampler.stride, qa.sampler.context_len, qa.sampler.gen_len, qa.sampler.n_samples) == (
        8,
        8,
        8,
        4,
    )
    assert (mt.sampler.stride, mt.sampler.context_len, mt.sampler.gen_len) == (2, 4, 4)
    assert qa.data.seq_len == 1024 and qa.sampler.temperature == 0.6 and qa.optim.lr == 1e-6
    assert qa.featurizer.pooling == "last_token" and mt.featurizer.pooling == "mean"
    assert qa.model == "Qwen/Qwen2.5-1.5B" and mt.model == "meta-llama/Llama-3.2-1B"
    assert qa.train.chunks_per_step * qa.sampler.n_samples == 64


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: config.ExperimentConfig(method="ppo"), "method"),
        (lambda: config.ExperimentConfig(task="math"), "task"),
        (lambda: config.LossConfig(whitening="zca"), "whitening"),
        (lambda: config.FeaturizerConfig(pooling="max"), "pooling"),
        (lambda: config.SamplerConfig(top_p=0.0), "top_p"),
        (lambda: config.OptimConfig(schedule="linear"), "schedule"),
        (lambda: config.ExperimentConfig(data=config.DataConfig(seq_len=130)), "stride"),
    ],
)
def test_invalid_values_name_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_overrides_parse_to_the_field_type():
    cfg = config.apply_overrides(
        config.tiny(),
        [
            "sampler.stride=4",
            "loss.whitening=none",
            "sampler.use_cache=false",
            "optim.lr_grid=1e-3,3e-3",
            "seed=5",
        ],
    )
    assert cfg.sampler.stride == 4 and cfg.loss.whitening == "none" and cfg.sampler.use_cache is False
    assert cfg.optim.lr_grid == (1e-3, 3e-3) and cfg.seed == 5


@pytest.mark.parametrize(
    "override, message",
    [
        ("sampler.strid=4", "strid"),
        ("samplr.stride=4", "samplr"),
        ("sampler.stride=four", "stride"),
        ("stride", "="),
    ],
)
def test_bad_overrides_are_named(override, message):
    with pytest.raises(ValueError, match=message):
        config.apply_overrides(config.tiny(), [override])


def test_config_round_trips_through_dict():
    cfg = config.small("translation", "rlvr", seed=2)
    assert config.from_dict(cfg.to_dict()) == cfg


def test_environment_yml_names_the_same_packages_as_pyproject():
    import yaml

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [
        d for extra in project["optional-dependencies"].values() for d in extra
    ]

    def name(spec: str) -> str:
        for sep in "<>=!~ [":
            spec = spec.split(sep)[0]
        return {"torch": "pytorch"}.get(spec.strip().lower(), spec.strip().lower())

    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {name(d) for d in env["dependencies"] if isinstance(d, str)}
    pip = {
        name(d)
        for d in next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
        if not d.startswith("-e")
    }
    assert {name(d) for d in wanted} == (conda | pip) - {"python", "pip"}
    # PyTorch stopped publishing to its own channel after 2.5: with it first, pytorch>=2.11 cannot be solved
    assert env["channels"] == ["conda-forge"]


def test_import_is_light():
    heavy = "('datasets', 'sacrebleu', 'matplotlib', 'transformers')"
    code = f"import sys, ebft_repro.losses; print([m for m in {heavy} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lr=inf", r"optim\.lr=inf must be finite"),
        ("sampler.temperature=nan", r"sampler\.temperature=nan must be finite"),
        ("loss.ce_coef=-inf", r"loss\.ce_coef=-inf must be finite"),
        ("optim.betas=0.9", r"optim\.betas=0\.9.*expected 2 comma-separated values"),
        ("optim.betas=0.9,1.5", r"optim\.betas=\(0\.9, 1\.5\) must be two numbers in \[0, 1\)"),
        ("train.device=banana", r"train\.device='banana' is not one of .*'cuda:N'"),
        ("train.n_steps=none", r"train\.n_steps=none.*expected an integer"),
        ("train.n_steps=0", r"train\.n_steps=0 must be > 0"),
        ("train.n_steps=2.5", r"train\.n_steps=2\.5.*expected an integer"),
        ("optim.warmup_frac=2", r"optim\.warmup_frac=2\.0 must be in \[0, 1\]"),
        ("optim.grad_clip=0", r"optim\.grad_clip=0\.0 must be > 0"),
        ("eval.top_p=0", r"eval\.top_p=0\.0 must be in \(0, 1\]"),
        ("featurizer.layers=1.5", r"featurizer\.layers=\(1\.5,\).*\(0, 1\)"),
        ("seed=-1", r"seed=-1 must be >= 0"),
        ("optim=1", r"'optim' is a section"),
    ],
)
def test_every_override_is_validated_naming_the_field_and_allowed_values(override, message):
    with pytest.raises(ValueError, match=message):
        config.apply_overrides(config.tiny(), [override])


def test_every_field_is_type_checked_and_finite():
    with pytest.raises(ValueError, match=r"train\.n_steps=None must be an integer"):
        config.TrainConfig(n_steps=None)
    with pytest.raises(ValueError, match=r"sampler\.use_cache='yes' must be true or false"):
        config.SamplerConfig(use_cache="yes")
    with pytest.raises(ValueError, match=r"optim\.lr=nan must be finite"):
        config.OptimConfig(lr=float("nan"))
    with pytest.raises(ValueError, match=r"optim\.lr_grid=\[0\.1\] must be a comma-separated list"):
        config.OptimConfig(lr_grid=[0.1])
    with pytest.raises(ValueError, match=r"data must be a DataConfig"):
        config.ExperimentConfig(data={"seq_len": 64})
    with pytest.raises(ValueError, match=r"unknown config field 'bogus'"):
        config.from_dict(config.tiny().to_dict() | {"bogus": 1})


@pytest.mark.parametrize(
    "overrides",
    [["sampler.stride=3", "data.seq_len=124"], ["data.seq_len=124", "sampler.stride=3"]],
)
def test_overrides_are_validated_together_in_any_order(overrides):
    cfg = config.apply_overrides(config.tiny(), overrides)
    assert (cfg.sampler.stride, cfg.data.seq_len) == (3, 124)
    with pytest.raises(ValueError, match=r"sampler\.stride=3 must divide"):
        config.apply_overrides(config.tiny(), overrides[:1] if "stride" in overrides[0] else overrides[1:])


def test_overrides_give_the_same_config_as_replace():
    from dataclasses import replace

    cfg = config.tiny("translation", "sft")
    expected = replace(
        cfg,
        seed=3,
        sampler=replace(cfg.sampler, stride=4),
        optim=replace(cfg.optim, lr=1e-3, betas=(0.8, 0.9)),
        data=replace(cfg.data, max_source_chars=None),
        featurizer=replace(cfg.featurizer, layers=(1, 2)),
    )
    overrides = [
        "seed=3",
        "sampler.stride=4",
        "optim.lr=1e-3",
        "optim.betas=[0.8, 0.9]",
        "data.max_source_chars=none",
        "featurizer.layers=1,2",
    ]
    assert config.apply_overrides(cfg, overrides) == expected
    assert config.apply_overrides(cfg, []) is cfg


def test_sampler_temperature_zero_is_rejected():
    """T=0 used to be accepted and made every rollout log-prob NaN (logits / T)."""
    from ebft_repro.config import apply_overrides, get_preset

    with pytest.raises(ValueError, match=r"sampler.temperature=0.0 must be > 0"):
        apply_overrides(get_preset("tiny", "qa_code", "ebft"), ["sampler.temperature=0"])
