"""The configuration's sections, one frozen dataclass each: base model, data, sampler, featurizer, loss,
optimizer, RLVR, evaluation and training loop. ``__post_init__`` validates every field."""

from __future__ import annotations

from dataclasses import dataclass

from ebft_repro.config._checks import _check_choice, _check_fields, _check_positive, _check_range
from ebft_repro.config.choices import (
    _DEVICE_PATTERN,
    ARCHITECTURES,
    DEVICES,
    DTYPES,
    KL_ESTIMATORS,
    POOLINGS,
    SCHEDULES,
    WHITENINGS,
)


@dataclass(frozen=True)
class BaseModelConfig:
    """The small causal LM this package pretrains from scratch (no hub access needed)."""

    architecture: str = "llama"
    """Model family built from a config: one of ARCHITECTURES."""
    vocab_size: int = 2048
    """Byte-level BPE vocabulary size (tokenizer trained on the local corpora)."""
    hidden_size: int = 128
    n_layers: int = 4
    n_heads: int = 4
    intermediate_size: int = 384
    max_position_embeddings: int = 1024
    pretrain_steps: int = 1000
    """Optimizer steps of from-scratch LM pretraining."""
    pretrain_batch_size: int = 16
    pretrain_seq_len: int = 128
    pretrain_lr: float = 3e-3
    n_qa_docs: int = 4000
    """Generated Q&A coding problems (their `pretrain` split: at most ~2.5k) in the pretraining corpus."""
    n_code_files: int = 150
    """Standard-library files (their `pretrain` split) in the pretraining corpus."""
    n_translation_pairs: int = 4000
    """Bible verse Examples (their `pretrain` split, disjoint from train) in the pretraining corpus."""
    seed: int = 0

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_choice(self, "architecture", ARCHITECTURES)
        _check_positive(self, "vocab_size", "hidden_size", "n_layers", "n_heads", "intermediate_size")
        _check_positive(self, "max_position_embeddings", "pretrain_batch_size", "pretrain_seq_len")
        _check_positive(self, "pretrain_lr")
        counts = ("pretrain_steps", "n_qa_docs", "n_code_files", "n_translation_pairs", "seed")
        _check_positive(self, *counts, allow_zero=True)
        if self.hidden_size % self.n_heads:
            raise ValueError(
                f"base.hidden_size={self.hidden_size} must be divisible by base.n_heads={self.n_heads}"
            )
        if self.pretrain_seq_len > self.max_position_embeddings:
            raise ValueError(
                f"base.pretrain_seq_len={self.pretrain_seq_len} must be <= base.max_position_embeddings"
                f"={self.max_position_embeddings}"
            )


@dataclass(frozen=True)
class DataConfig:
    """Task data: split sizes, packing length and filters."""

    seq_len: int = 128
    """L: tokens per packed training chunk (spec section 6.1)."""
    n_train: int = 2000
    """Training examples (qa_code problems, translation verse pairs, or code files)."""
    n_val: int = 64
    n_test: int = 64
    max_source_chars: int | None = 120
    """Translation: keep verse pairs whose both sides are at most this long (None = all)."""
    max_chars_per_file: int | None = 4000
    """Unstructured code: truncate each source file to this many characters."""
    n_val_chunks: int = 16
    """Packed validation chunks used for validation CE."""
    source: str | None = None
    """Optional local file or hub dataset in the paper's format, replacing the embedded default."""
    split_seed: int = 0
    """Seed of the split generator, independent of the training seed."""

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_positive(self, "seq_len", "n_train", "n_val", "n_test", "n_val_chunks")
        _check_positive(self, "max_source_chars", "max_chars_per_file")  # None = no limit
        _check_positive(self, "split_seed", allow_zero=True)
        if self.source is not None and not self.source.strip():
            raise ValueError("data.source='' must be none or a file / dataset name")


@dataclass(frozen=True)
class SamplerConfig:
    """Strided block-parallel sampling (spec section 3)."""

    stride: int = 8
    """s: distance between consecutive block anchors."""
    context_len: int = 8
    """C: anchor of the first block; block k sees the whole prefix x[0 : C + k*s]."""
    gen_len: int = 8
    """G: tokens generated per block."""
    n_samples: int = 4
    """n: rollouts per (chunk, block) context; one RLOO group."""
    temperature: float = 0.6
    top_p: float = 1.0
    use_cache: bool = True
    """KV-cached sampling (this package's default) vs the authors' full recompute per step."""

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_positive(self, "stride", "context_len", "gen_len", "n_samples")
        _check_positive(self, "temperature")  # rollout log-probs divide by it; 0 would make them NaN
        _check_range(self, "top_p", "(0, 1]")


@dataclass(frozen=True)
class FeaturizerConfig:
    """The frozen feature network (spec section 5)."""

    layers: tuple[float | int, ...] = (0.25, 0.5, 0.75)
    """Depth fractions in (0, 1) or explicit hidden-state indices (0 = embeddings)."""
    pooling: str = "last_token"
    """How a block's token features become one vector: one of POOLINGS."""
    feature_model: str | None = None
    """None: a frozen copy of the initial policy; else a model name or path (e.g. the base in warm starts)."""

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_choice(self, "pooling", POOLINGS)
        if not self.layers:
            raise ValueError("featurizer.layers must name at least one layer")
        for layer in self.layers:
            bad_fraction = isinstance(layer, float) and not 0.0 < layer < 1.0
            if bad_fraction or (isinstance(layer, int) and layer < 0):
                raise ValueError(
                    f"featurizer.layers={self.layers!r}: {layer!r} must be a depth fraction in (0, 1)"
                    " or a hidden-state index >= 0"
                )
        if self.feature_model is not None and not self.feature_model.strip():
            raise ValueError("featurizer.feature_model='' must be none or a model name or path")


@dataclass(frozen=True)
class LossConfig:
    """EBFT reward and loss coefficients (spec sections 2 and 4)."""

    alignment_coef: float = 1.0
    """alpha in r_j = alpha * a_j - delta * d_j."""
    diversity_coef: float = 1.0
    """delta; the paper sweeps {0, 0.5, 1}."""
    ce_coef: float = 0.03
    """gamma: weight of the teacher-forced CE on ground-truth tokens; swept over {0, 0.03, 0.1}."""
    whitening: str = "sample"
    """one of WHITENINGS: the authors' n x n operator, the paper's D x D transform, or none (spec 2.1)."""
    rl_coef: float = 1.0
    kl_coef: float = 0.0
    """beta: KL(policy || frozen initial policy) on the generated tokens; 0 (off) in every released config."""
    kl_estimator: str = "k2"
    """one of KL_ESTIMATORS: k1 = log-ratio, k2 = half squared log-ratio, k3 = exp(-r) - 1 + r (Schulman)."""

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_choice(self, "whitening", WHITENINGS)
        _check_choice(self, "kl_estimator", KL_ESTIMATORS)
        _check_positive(
            self, "alignment_coef", "diversity_coef", "ce_coef", "rl_coef", "kl_coef", allow_zero=True
        )


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with warmup, shared by every method."""

    lr: float = 1e-4
    lr_grid: tuple[float, ...] = ()
    """Learning rates the runner sweeps for this method (picked on validation); empty = just ``lr``."""
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    warmup_frac: float = 0.03
    """Warmup steps = ceil(warmup_frac * n_steps), linear from 0."""
    schedule: str = "constant"
    """one of SCHEDULES: constant after warmup (EBFT, RLVR) or cosine to min_lr_ratio * lr (SFT)."""
    min_lr_ratio: float = 0.1

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_choice(self, "schedule", SCHEDULES)
        _check_positive(self, "lr", "grad_clip")
        _check_positive(self, "weight_decay", allow_zero=True)
        _check_range(self, "warmup_frac", "[0, 1]")
        _check_range(self, "min_lr_ratio", "[0, 1]")
        if any(lr <= 0 for lr in self.lr_grid):
            raise ValueError(f"optim.lr_grid={self.lr_grid} must hold positive learning rates")
        if not all(0.0 <= beta < 1.0 for beta in self.betas):
            raise ValueError(f"optim.betas={self.betas} must be two numbers in [0, 1)")


@dataclass(frozen=True)
class RLVRConfig:
    """The verifier-reward baseline (spec section 12): RLOO over n full completions per prompt."""

    prompts_per_step: int = 4
    max_new_tokens: int = 64
    temperature: float = 0.6
    top_p: float = 1.0

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_positive(self, "prompts_per_step", "max_new_tokens")
        _check_positive(self, "temperature")  # log-probs divide by it
        _check_range(self, "top_p", "(0, 1]")


@dataclass(frozen=True)
class EvalConfig:
    """What is measured every ``every_steps`` optimizer steps (and at step 0)."""

    every_steps: int = 10
    n_prompts: int = 32
    """Downstream test prompts (coding: pass@k; translation: BLEU/chrF)."""
    n_samples: int = 4
    """Completions per prompt for pass@1 / pass@n."""
    max_new_tokens: int = 64
    temperature: float = 0.6
    top_p: float = 0.95
    n_fm_chunks: int = 4
    """Validation chunks for the feature-matching (CFM) estimate."""
    split: str = "test"
    """Downstream split: ``test`` for reporting, ``validation`` for learning-rate selection."""

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_positive(self, "every_steps", "n_prompts", "n_samples", "max_new_tokens")
        _check_positive(self, "n_fm_chunks", "temperature", allow_zero=True)  # temperature 0 = greedy
        _check_range(self, "top_p", "(0, 1]")
        _check_choice(self, "split", ("test", "validation"))


@dataclass(frozen=True)
class TrainConfig:
    """Loop length, batching, device and checkpointing."""

    n_steps: int = 40
    """Optimizer steps; identical for every method of a comparison."""
    chunks_per_step: int = 4
    """Packed chunks per EBFT/SFT step (EBFT repeats each n times: one rollout batch, one step)."""
    micro_batch_size: int = 0
    """Sequences per forward/backward (gradient accumulation); 0 = the whole batch at once."""
    checkpoint_every_steps: int = 10
    device: str = "auto"
    dtype: str = "float32"
    """Parameter dtype of the policy."""
    autocast_bf16: bool = False
    """Run forwards under ``torch.autocast(bfloat16)`` (CUDA or CPU)."""
    deterministic: bool = False
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (memory saver for large models)."""
    lora_rank: int = 0
    """> 0: train LoRA adapters (peft) on every linear layer; the feature network is then the same base
    weights with the adapters disabled, so no second copy of the model is held."""
    lora_alpha: float = 16.0
    feature_dtype: str = "float32"
    """dtype of the frozen feature-network copy (``bfloat16`` halves its memory)."""
    save_model: bool = False
    """Save the final policy under ``<run_dir>/model`` (git-ignored)."""

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_positive(self, "n_steps", "chunks_per_step", "checkpoint_every_steps", "lora_alpha")
        _check_positive(self, "micro_batch_size", "lora_rank", allow_zero=True)
        _check_choice(self, "dtype", DTYPES)
        _check_choice(self, "feature_dtype", DTYPES)
        if not _DEVICE_PATTERN.fullmatch(self.device):
            raise ValueError(f"train.device={self.device!r} is not one of {DEVICES} (N: a GPU index)")
