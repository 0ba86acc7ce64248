"""The one place that knows how transformers versions and attention implementations differ.

- The KV cache keyword: transformers 5.24 names it ``cache=`` (and returns ``outputs.cache``); 5.17 and
  earlier ``past_key_values=``.
- ``logits_to_keep``: logits computed only for the rows that are needed, where the forward accepts it.
- The 4D attention mask: boolean for SDPA, additive float for eager attention.
- peft wrappers: their forward signature is read from the base model.
"""

from __future__ import annotations

import inspect

import torch


def model_attention_mask(allowed: torch.Tensor, model: torch.nn.Module, dtype: torch.dtype) -> torch.Tensor:
    """Turn a (Q, KV) boolean mask into the 4D mask the model's attention implementation expects.

    SDPA (and flex/flash-style paths that accept it) take a boolean mask, shared across the batch as
    (1, 1, Q, KV), so memory never holds a dense float mask per sample. Eager attention *adds* the mask to
    the scores, so it gets an additive float mask (0 or the dtype minimum), again shared across the batch.
    """
    impl = getattr(getattr(model, "config", None), "_attn_implementation", "eager")
    mask = allowed[None, None]  # (1, 1, Q, KV)
    if impl == "sdpa":
        return mask
    blocked = torch.zeros((), dtype=dtype, device=allowed.device).new_full((), torch.finfo(dtype).min)
    return torch.where(mask, torch.zeros((), dtype=dtype, device=allowed.device), blocked)


def forward_params(model: torch.nn.Module) -> set[str]:
    """Keyword names the model's forward accepts (a peft wrapper is looked through to its base model)."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    return set(inspect.signature(target.forward).parameters)


def cache_kwargs(model: torch.nn.Module, cache: object | None) -> dict:
    """transformers 5.24 names the KV cache ``cache=``; 5.17 and earlier ``past_key_values=``."""
    name = "cache" if "cache" in forward_params(model) else "past_key_values"
    return {name: cache}


def output_cache(outputs: object) -> object:
    cache = getattr(outputs, "cache", None)
    return cache if cache is not None else getattr(outputs, "past_key_values", None)


def logits_for_rows(
    model: torch.nn.Module, kwargs: dict, rows: torch.Tensor | None
) -> tuple[torch.Tensor, object]:
    """Run the model; float32 logits of ``rows`` only (all if None), computed only there when it can."""
    device = kwargs["input_ids"].device
    if rows is not None and "logits_to_keep" in forward_params(model):
        outputs = model(**kwargs, logits_to_keep=rows.to(device))
        logits = outputs.logits  # (B, R, V)
    else:
        outputs = model(**kwargs)
        logits = outputs.logits if rows is None else outputs.logits[:, rows.to(device)]
    return logits.float(), outputs
