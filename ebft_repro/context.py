"""What a run needs loaded: the policy (optionally with LoRA), its tokenizer, the frozen feature network and
the task data, as one :class:`ebft_repro.batching.Context` built by :func:`build_context`.

Prompts that do not fit in ``data.seq_len`` tokens are dropped here, each one logged (:func:`fit_prompts`).
"""

from __future__ import annotations

import logging

import torch

from ebft_repro.batching import Context
from ebft_repro.config import ExperimentConfig
from ebft_repro.data import load_eval_examples, load_task, packed_split
from ebft_repro.featurizer import FeatureNetwork
from ebft_repro.models import load_causal_lm, load_policy_and_tokenizer, resolve_model_path
from ebft_repro.utils import resolve_device

log = logging.getLogger(__name__)


def fit_prompts(examples: list, tokenizer, max_tokens: int, *, what: str) -> list:
    """Drop prompts longer than ``max_tokens`` tokens, logging each skipped record by uid (never silent)."""
    kept, skipped = [], []
    for example in examples:
        n_tokens = len(tokenizer(example.prompt)["input_ids"])
        (kept if n_tokens <= max_tokens else skipped).append(example)
    if skipped:
        uids = ", ".join(ex.uid or "?" for ex in skipped[:5])
        log.warning(
            "%s: skipped %d prompts longer than %d tokens (%s...)", what, len(skipped), max_tokens, uids
        )
    return kept


def build_models(cfg: ExperimentConfig, device: torch.device):
    """The policy (optionally with LoRA adapters and gradient checkpointing), its tokenizer and the frozen
    feature network: a deep copy of the initial policy, a separately named model, or, with LoRA, the same
    weights with the adapters disabled (no second copy)."""
    policy, tokenizer = load_policy_and_tokenizer(cfg, device=device)
    layers, pooling = cfg.featurizer.layers, cfg.featurizer.pooling
    feature_dtype = getattr(torch, cfg.train.feature_dtype)
    if cfg.train.lora_rank > 0:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=cfg.train.lora_rank,
            lora_alpha=cfg.train.lora_alpha,
            lora_dropout=0.0,
            target_modules="all-linear",
        )
        policy = get_peft_model(policy, lora)
    if cfg.featurizer.feature_model is not None:
        path = resolve_model_path(cfg.featurizer.feature_model, cfg)
        base = load_causal_lm(path, dtype=cfg.train.feature_dtype, device=device)
        feature_net = FeatureNetwork(base, layers, pooling, copy_model=False)
    elif cfg.train.lora_rank > 0:
        feature_net = FeatureNetwork(policy, layers, pooling, copy_model=False, adapters_off=True)
    else:
        feature_net = FeatureNetwork(policy, layers, pooling).to(feature_dtype)
    if cfg.train.gradient_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return policy, tokenizer, feature_net


def build_context(cfg: ExperimentConfig, *, rank: int = 0, world_size: int = 1) -> Context:
    """Load the models and the task data for a run."""
    device = resolve_device(cfg.train.device)
    if device.type == "cuda" and world_size > 1:
        device = torch.device("cuda", torch.cuda.current_device())
    policy, tokenizer, feature_net = build_models(cfg, device)
    train_packed = packed_split(cfg.task, cfg.data, "train", tokenizer)
    task_data = load_task(cfg.task, cfg.data)
    limit = cfg.data.seq_len
    rl_examples = fit_prompts(
        load_task(task_data.eval_task, cfg.data).train, tokenizer, limit, what="rlvr prompts"
    )
    if cfg.method == "rlvr" and not rl_examples:
        raise ValueError(f"no RLVR training prompt fits in data.seq_len={limit} tokens")
    eval_examples = load_eval_examples(cfg.task, cfg.data, cfg.eval.split)[: cfg.eval.n_prompts]
    eval_examples = fit_prompts(eval_examples, tokenizer, limit, what=f"{cfg.eval.split} prompts")
    val_examples = load_eval_examples(cfg.task, cfg.data, "validation")[: cfg.eval.n_prompts]
    return Context(
        cfg=cfg,
        policy=policy,
        tokenizer=tokenizer,
        feature_net=feature_net,
        train_chunks=train_packed.input_ids,
        train_target_mask=train_packed.target_mask,
        val_chunks=packed_split(cfg.task, cfg.data, "validation", tokenizer),
        rl_examples=rl_examples,
        eval_examples=eval_examples,
        val_examples=fit_prompts(val_examples, tokenizer, limit, what="validation prompts"),
        device=device,
        rank=rank,
        world_size=world_size,
    )
