"""Presets: functions from (task, method, seed) to an ExperimentConfig; get_preset looks one up by name."""

from __future__ import annotations

from dataclasses import replace

from ebft_repro.config.choices import METHODS, PRESETS, TASKS
from ebft_repro.config.experiment import ExperimentConfig
from ebft_repro.config.sections import (
    BaseModelConfig,
    DataConfig,
    EvalConfig,
    LossConfig,
    RLVRConfig,
    SamplerConfig,
    TrainConfig,
)


def _method_loss(method: str, loss: LossConfig | None = None) -> LossConfig:
    """The preset's loss section; ``ebft_fm`` (feature matching alone) gets EBFT's with ``ce_coef`` = 0."""
    loss = loss or LossConfig()
    return replace(loss, ce_coef=0.0) if method == "ebft_fm" else loss


def _method_defaults(cfg: ExperimentConfig, lr_grids: dict[str, tuple[float, ...]]) -> ExperimentConfig:
    """SFT uses a cosine schedule (spec section 8); EBFT, ebft_fm and RLVR constant after warmup (4.3)."""
    grid = lr_grids[cfg.method]
    schedule = "cosine" if cfg.method == "sft" else "constant"
    return replace(cfg, optim=replace(cfg.optim, lr=grid[0], lr_grid=grid, schedule=schedule))


def _task_defaults(cfg: ExperimentConfig) -> ExperimentConfig:
    """Translation uses s=2, C=4, G=4 and mean pooling; the code tasks s=C=G=8 and last-token (spec 7)."""
    if cfg.task == "translation":
        return replace(
            cfg,
            sampler=replace(cfg.sampler, stride=2, context_len=4, gen_len=4),
            featurizer=replace(cfg.featurizer, pooling="mean"),
        )
    return cfg


def tiny(task: str = "qa_code", method: str = "ebft", seed: int = 0) -> ExperimentConfig:
    """CPU smoke-test preset: a ~1.1M-parameter base model, L=128, 16 steps."""
    cfg = ExperimentConfig(
        method=method,
        task=task,
        seed=seed,
        preset="tiny",
        model="builtin:tiny",
        loss=_method_loss(method),
        data=DataConfig(seq_len=128, n_train=1500, n_val=32, n_test=32, n_val_chunks=8),
        train=TrainConfig(n_steps=16, chunks_per_step=2, checkpoint_every_steps=8),
        eval=EvalConfig(every_steps=8, n_prompts=16, n_samples=4, max_new_tokens=40, n_fm_chunks=2),
        rlvr=RLVRConfig(prompts_per_step=2, max_new_tokens=40),
    )
    grids = {"ebft": (3e-4, 1e-3), "ebft_fm": (3e-4, 1e-3), "sft": (3e-4, 1e-3), "rlvr": (3e-4, 1e-3)}
    return _method_defaults(_task_defaults(cfg), grids)


def cpu(task: str = "qa_code", method: str = "ebft", seed: int = 0) -> ExperimentConfig:
    """Evidence on 2 CPU cores (docs/cpu.md): a ~4.5M-parameter base pretrained here, L=128, 3 seeds.

    Sized so that the base model is off the floor of every metric (Q&A pass@1 on 128 test problems x 4
    samples, BLEU on 128 test pairs) and the whole comparison (base model, 3 tasks x 4 methods, a
    3-point learning-rate grid on seed 0, seeds 1-2 at the pick) fits an afternoon on a laptop.
    """
    cfg = ExperimentConfig(
        method=method,
        task=task,
        seed=seed,
        preset="cpu",
        model="builtin:cpu",
        loss=_method_loss(method),
        base=BaseModelConfig(
            vocab_size=4096,
            hidden_size=256,
            n_layers=4,
            n_heads=4,
            intermediate_size=768,
            pretrain_steps=2400,  # 1200 left Q&A validation pass@1 at 20/512; 2400: 206/512 (docs/cpu.md)
            pretrain_batch_size=16,
            pretrain_seq_len=256,
            pretrain_lr=2e-3,
            n_qa_docs=3000,
            n_code_files=400,
            n_translation_pairs=12000,
        ),
        data=DataConfig(seq_len=128, n_train=2000, n_val=128, n_test=128, n_val_chunks=16),
        train=TrainConfig(n_steps=40, chunks_per_step=4, checkpoint_every_steps=10),
        eval=EvalConfig(every_steps=20, n_prompts=128, n_samples=4, max_new_tokens=64, n_fm_chunks=4),
        rlvr=RLVRConfig(prompts_per_step=4, max_new_tokens=64),
    )
    if task == "translation":  # BLEU/chrF are computed on one sample per prompt
        cfg = replace(cfg, eval=replace(cfg.eval, n_samples=1))
    grid = (1e-4, 3e-4, 1e-3)
    grids = {"ebft": grid, "ebft_fm": grid, "sft": grid, "rlvr": grid}
    return _method_defaults(_task_defaults(cfg), grids)


def small(task: str = "qa_code", method: str = "ebft", seed: int = 0) -> ExperimentConfig:
    """Accelerator preset: a ~30M-parameter base model, L=512, 3 seeds in the runner."""
    cfg = ExperimentConfig(
        method=method,
        task=task,
        seed=seed,
        preset="small",
        model="builtin:small",
        loss=_method_loss(method),
        base=BaseModelConfig(
            vocab_size=8192,
            hidden_size=512,
            n_layers=8,
            n_heads=8,
            intermediate_size=1536,
            pretrain_steps=3000,
            pretrain_batch_size=64,
            pretrain_seq_len=512,
            pretrain_lr=1e-3,
            n_qa_docs=6000,
            n_code_files=1500,
            n_translation_pairs=20000,
        ),
        data=DataConfig(
            seq_len=512, n_train=5000, n_val=128, n_test=128, n_val_chunks=32, max_source_chars=200
        ),
        train=TrainConfig(n_steps=100, chunks_per_step=16, checkpoint_every_steps=25, autocast_bf16=True),
        eval=EvalConfig(every_steps=25, n_prompts=128, n_samples=4, max_new_tokens=128, n_fm_chunks=8),
        rlvr=RLVRConfig(prompts_per_step=16, max_new_tokens=128),
    )
    grids = {"ebft": (1e-5, 3e-5), "ebft_fm": (1e-5, 3e-5), "sft": (1e-5, 3e-5), "rlvr": (1e-5, 3e-5)}
    return _method_defaults(_task_defaults(cfg), grids)


def paper(task: str = "qa_code", method: str = "ebft", seed: int = 43) -> ExperimentConfig:
    """The authors' hyper-parameters (spec section 7), for users with the real models and data.

    Q&A and unstructured coding: Qwen2.5-1.5B; translation: Llama-3.2-1B. L=1024, n=4, T=0.6, lr 1e-6
    constant with 3% warmup, rollout batch 16 chunks (64 sequences), micro-batch 8, whitening on,
    delta=1, gamma=0.03 (the sweep covers {0, 0.03, 0.1} x {0, 0.5, 1} x whitening on/off).
    """
    model = "meta-llama/Llama-3.2-1B" if task == "translation" else "Qwen/Qwen2.5-1.5B"
    cfg = ExperimentConfig(
        method=method,
        task=task,
        seed=seed,
        preset="paper",
        model=model,
        data=DataConfig(seq_len=1024, n_train=100_000, n_val=128, n_test=128, n_val_chunks=128),
        sampler=SamplerConfig(stride=8, context_len=8, gen_len=8, n_samples=4, temperature=0.6, top_p=1.0),
        loss=_method_loss(
            method, LossConfig(alignment_coef=1.0, diversity_coef=1.0, ce_coef=0.03, whitening="sample")
        ),
        train=TrainConfig(
            n_steps=1000,
            chunks_per_step=16,
            micro_batch_size=8,
            checkpoint_every_steps=100,
            autocast_bf16=True,
        ),
        eval=EvalConfig(every_steps=50, n_prompts=128, n_samples=4, max_new_tokens=512, n_fm_chunks=128),
        rlvr=RLVRConfig(prompts_per_step=16, max_new_tokens=512),
    )
    grids = {"ebft": (1e-6,), "ebft_fm": (1e-6,), "sft": (5e-6,), "rlvr": (1e-6,)}
    return _method_defaults(_task_defaults(cfg), grids)


_PRESET_FUNCS = {"tiny": tiny, "cpu": cpu, "small": small, "paper": paper}


def get_preset(preset: str, task: str, method: str, seed: int | None = None) -> ExperimentConfig:
    """Look up a preset by name, with errors naming the allowed values."""
    if preset not in _PRESET_FUNCS:
        raise ValueError(f"preset={preset!r} is not one of {PRESETS}")
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not one of {TASKS}")
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}")
    cfg = _PRESET_FUNCS[preset](task, method)
    return replace(cfg, seed=seed) if seed is not None else cfg
