"""Random-init causal LMs from a :class:`BaseModelConfig` (Llama, Qwen2 or GPT-2), built without a network.

Used by the built-in base model's pretraining (:mod:`ebft_repro.pretrain`), the benchmarks and the tests.
"""

from __future__ import annotations

import torch

from ebft_repro.config import BaseModelConfig

SPECIAL_TOKENS = {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "pad_token": "<|pad|>"}


def make_causal_lm(cfg: BaseModelConfig, vocab_size: int, *, bos_id: int, eos_id: int, pad_id: int):
    """A random-init causal LM of the configured architecture (Llama, Qwen2 or GPT-2)."""
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    common = dict(vocab_size=vocab_size, bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id)
    if cfg.architecture == "gpt2":
        config = GPT2Config(
            n_embd=cfg.hidden_size,
            n_layer=cfg.n_layers,
            n_head=cfg.n_heads,
            n_inner=cfg.intermediate_size,
            n_positions=cfg.max_position_embeddings,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **common,
        )
        model = GPT2LMHeadModel(config)
    else:
        config_cls, model_cls = (
            (LlamaConfig, LlamaForCausalLM)
            if cfg.architecture == "llama"
            else (Qwen2Config, Qwen2ForCausalLM)
        )
        config = config_cls(
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.n_layers,
            num_attention_heads=cfg.n_heads,
            num_key_value_heads=cfg.n_heads,
            intermediate_size=cfg.intermediate_size,
            max_position_embeddings=cfg.max_position_embeddings,
            tie_word_embeddings=True,
            **common,
        )
        model = model_cls(config)
    model.config._attn_implementation = "sdpa"
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """All parameters, tied embeddings counted once."""
    return sum(p.numel() for p in model.parameters())
