"""Config validation, presets, overrides, and the packaging promises (environment.yml, lazy imports)."""

import subprocess
import sys
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


def test_import_is_light():
    heavy = "('datasets', 'sacrebleu', 'matplotlib', 'transformers')"
    code = f"import sys, ebft_repro.losses; print([m for m in {heavy} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
