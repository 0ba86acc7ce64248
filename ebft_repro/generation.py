"""Ordinary autoregressive sampling of full completions, KV-cached (RLVR rollouts and downstream evaluation).

Prompts are left-padded to a common length; every row draws its uniforms from the caller's generator, so
the same seed gives the same completions. Generation stops per row at EOS; the finished rows are padded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ebft_repro.hf_compat import cache_kwargs, forward_params, output_cache
from ebft_repro.losses import token_logprobs
from ebft_repro.sampler import Generators, sample_tokens


@dataclass
class Completions:
    """Sampled completions for a batch of prompts (B = prompts x samples, flattened prompt-major)."""

    prompt_ids: torch.Tensor
    """(B, P) left-padded prompts."""
    prompt_mask: torch.Tensor
    """(B, P) True on real prompt tokens."""
    completion_ids: torch.Tensor
    """(B, T) sampled tokens, padded after EOS."""
    completion_mask: torch.Tensor
    """(B, T) True on generated tokens up to and including EOS."""


def left_pad(token_lists: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad lists of ids: -> ids (B, P) long, mask (B, P) bool."""
    width = max(len(ids) for ids in token_lists)
    ids = torch.full((len(token_lists), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_lists), width), dtype=torch.bool)
    for row, tokens in enumerate(token_lists):
        if tokens:
            ids[row, width - len(tokens) :] = torch.tensor(tokens)
            mask[row, width - len(tokens) :] = True
    return ids, mask


@torch.no_grad()
def sample_completions(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: Generators = None,
) -> Completions:
    """Sample one completion per row with a KV cache (temperature 0 = greedy).

    Args:
        prompt_ids: (B, P) left-padded prompts; prompt_mask: (B, P) bool.

    Returns:
        Completions with (B, T) tensors, T <= max_new_tokens.
    """
    device = prompt_ids.device
    n_rows = prompt_ids.shape[0]
    attention = prompt_mask.long()  # (B, P)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)  # (B, P)
    outputs = model(
        input_ids=prompt_ids,
        attention_mask=attention,
        position_ids=positions,
        use_cache=True,
        **({"logits_to_keep": 1} if "logits_to_keep" in forward_params(model) else {}),
    )
    cache = output_cache(outputs)
    logits = outputs.logits[:, -1].float()  # (B, V)
    next_pos = positions[:, -1] + 1  # (B,)
    done = torch.zeros(n_rows, dtype=torch.bool, device=device)
    tokens, alive = [], []
    for _ in range(max_new_tokens):
        token = sample_tokens(logits, temperature=temperature, top_p=top_p, generator=generator)  # (B,)
        token = torch.where(done, torch.full_like(token, pad_id), token)
        tokens.append(token)
        alive.append(~done)
        done = done | (token == eos_id)
        if bool(done.all()):
            break
        attention = torch.cat([attention, torch.ones(n_rows, 1, dtype=attention.dtype, device=device)], dim=1)
        outputs = model(
            input_ids=token[:, None],
            attention_mask=attention,
            position_ids=next_pos[:, None],
            use_cache=True,
            **cache_kwargs(model, cache),
        )
        cache = output_cache(outputs)
        logits = outputs.logits[:, -1].float()
        next_pos = next_pos + 1
    completion_ids = torch.stack(tokens, dim=1)  # (B, T)
    completion_mask = torch.stack(alive, dim=1)  # (B, T)
    return Completions(prompt_ids, prompt_mask, completion_ids, completion_mask)


def concat_completions(parts: list[Completions], pad_id: int) -> Completions:
    """Stack micro-batches of completions into one batch: prompts re-left-padded, completions right-padded."""
    if len(parts) == 1:
        return parts[0]
    width_p = max(part.prompt_ids.shape[1] for part in parts)
    width_t = max(part.completion_ids.shape[1] for part in parts)

    def pad(tensor: torch.Tensor, width: int, value, *, left: bool) -> torch.Tensor:
        extra = width - tensor.shape[1]
        return torch.nn.functional.pad(tensor, (extra, 0) if left else (0, extra), value=value)

    return Completions(
        torch.cat([pad(part.prompt_ids, width_p, pad_id, left=True) for part in parts]),  # (B, P)
        torch.cat([pad(part.prompt_mask, width_p, False, left=True) for part in parts]),  # (B, P)
        torch.cat([pad(part.completion_ids, width_t, pad_id, left=False) for part in parts]),  # (B, T)
        torch.cat([pad(part.completion_mask, width_t, False, left=False) for part in parts]),  # (B, T)
    )


def completion_logprobs(
    model: torch.nn.Module, completions: Completions, *, temperature: float
) -> torch.Tensor:
    """Log-probs of the completion tokens under p^(1/T), with gradient.  -> (B, T)."""
    ids = torch.cat([completions.prompt_ids, completions.completion_ids], dim=1)  # (B, P+T)
    mask = torch.cat([completions.prompt_mask, completions.completion_mask], dim=1).long()  # (B, P+T)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
    n_prompt = completions.prompt_ids.shape[1]
    pred = logits[:, n_prompt - 1 : -1].float() / temperature  # (B, T, V)
    logps = token_logprobs(pred, completions.completion_ids)  # (B, T)
    return logps * completions.completion_mask  # (B, T)


def decode_completions(tokenizer, completions: Completions) -> list[str]:
    """Text of each completion up to (not including) EOS."""
    texts = []
    for ids, mask in zip(completions.completion_ids.tolist(), completions.completion_mask.tolist()):
        kept = [tok for tok, keep in zip(ids, mask) if keep and tok != tokenizer.eos_token_id]
        texts.append(tokenizer.decode(kept, skip_special_tokens=True))
    return texts
