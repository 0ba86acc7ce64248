"""The frozen feature network phi (spec sections 2 item 1, 3.4 and 5).

Features are hidden states of a frozen copy of the pre-trained model: three layers at 25/50/75% depth are
concatenated per token and L2-normalised jointly over the concatenation (not layer by layer), then pooled
over the G tokens of a block. Ground-truth and generated block features come from ONE forward pass over the
strided sequence, so both condition on exactly the same true prefix c_k (pitfall 6).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ebft_repro.config import POOLINGS
from ebft_repro.hf_compat import forward_params, model_attention_mask
from ebft_repro.sampler import (
    StridedLayout,
    deinterleave_blocks,
    strided_attention_mask,
    strided_position_ids,
)


def resolve_layers(layers: Sequence[float | int], n_layers: int) -> tuple[int, ...]:
    """Map depth fractions to hidden-state indices: i = max(1, floor(N * q)); ints are taken as indices.

    Index 0 is the embedding output, so a fraction never selects it (as the authors' ``critic.py``).
    """
    indices = []
    for layer in layers:
        if isinstance(layer, float):
            if not 0.0 < layer < 1.0:
                raise ValueError(f"layer fraction {layer} must be in (0, 1)")
            indices.append(max(1, math.floor(n_layers * layer)))
        else:
            index = int(layer)
            if not 0 <= index <= n_layers:
                raise ValueError(f"layer index {index} must be in [0, {n_layers}]")
            indices.append(index)
    return tuple(indices)


def _n_layers(model: torch.nn.Module) -> int:
    config = model.config
    for name in ("num_hidden_layers", "n_layer", "num_layers"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    raise ValueError(f"cannot find the number of layers in {type(config).__name__}")


class FeatureNetwork(torch.nn.Module):
    """A frozen copy of a causal LM that maps token sequences to per-block features.

    Args:
        model: the model to copy (deep-copied; never shares parameters with the policy).
        layers: depth fractions in (0, 1) or explicit hidden-state indices.
        pooling: one of POOLINGS: ``last_token`` (code tasks), ``mean`` (translation; not
            re-normalised), ``concat_quartiles`` (the tokens at 25/50/75% of the block concatenated, the
            authors' ``concat``) or ``concat_all`` (all G tokens concatenated: D' = G x D).
        copy_model: set False to wrap ``model`` itself (it is then frozen in place), e.g. a separate base.
        adapters_off: ``model`` is a peft model being trained with LoRA; features come from it with the
            adapters disabled (the base weights, shared, not copied). It is neither frozen nor registered
            as a submodule here, so the trainable adapters stay the policy's.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        layers: Sequence[float | int] = (0.25, 0.5, 0.75),
        pooling: str = "last_token",
        *,
        copy_model: bool = True,
        adapters_off: bool = False,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r} is not one of {POOLINGS}")
        self.adapters_off = adapters_off
        if adapters_off:
            object.__setattr__(self, "model", model)  # not a submodule: the policy owns these weights
        else:
            self.model = copy.deepcopy(model) if copy_model else model
            self.model.eval()
            self.model.requires_grad_(False)
        self.layer_indices = resolve_layers(layers, _n_layers(self.model))
        self.pooling = pooling

    def train(self, mode: bool = True) -> FeatureNetwork:
        """The feature network stays in eval mode whatever the caller asks."""
        return super().train(False)

    def feature_dim(self, gen_len: int) -> int:
        """D' of a pooled block feature for blocks of ``gen_len`` tokens."""
        hidden = getattr(self.model.config, "hidden_size", None) or self.model.config.n_embd
        factor = {"concat_quartiles": 3, "concat_all": gen_len}.get(self.pooling, 1)
        return factor * hidden * len(self.layer_indices)

    @torch.no_grad()
    def token_features(
        self,
        input_ids: torch.Tensor,
        *,
        allowed: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-token features, concatenated over the chosen layers and L2-normalised jointly.

        Args:
            input_ids: (B, S) tokens.
            allowed: optional (S, S) bool mask (default causal); position_ids: optional (S,).

        Returns:
            (B, S, D) float32, unit norm per token (normalised in the network's own dtype).
        """
        n_batch, length = input_ids.shape
        device = input_ids.device
        if allowed is None:
            allowed = torch.ones(length, length, dtype=torch.bool, device=device).tril()
        if position_ids is None:
            position_ids = torch.arange(length, device=device)
        dtype = next(self.model.parameters()).dtype
        was_training = self.model.training
        self.model.eval()
        with self.model.disable_adapter() if self.adapters_off else contextlib.nullcontext():
            outputs = self.model(
                input_ids=input_ids,
                attention_mask=model_attention_mask(allowed.to(device), self.model, dtype),
                position_ids=position_ids.to(device)[None].expand(n_batch, -1),
                output_hidden_states=True,
                use_cache=False,
                **({"logits_to_keep": 1} if "logits_to_keep" in forward_params(self.model) else {}),
            )
        self.model.train(was_training and self.adapters_off)
        hidden = torch.cat([outputs.hidden_states[i] for i in self.layer_indices], dim=-1)  # (B, S, D)
        # Normalised in the network's dtype, as the authors do in bf16 (train.feature_dtype), then float32.
        return F.normalize(hidden, dim=-1).float()

    def pool(self, block_feats: torch.Tensor) -> torch.Tensor:
        """Pool (..., G, D) token features of a block to (..., D') (spec section 2 item 2)."""
        if self.pooling == "last_token":
            return block_feats[..., -1, :]  # (..., D)
        if self.pooling == "mean":
            return block_feats.mean(dim=-2)  # (..., D)
        if self.pooling == "concat_all":
            return block_feats.flatten(-2)  # (..., G*D)
        gen_len = block_feats.shape[-2]  # concat_quartiles: (..., 3*D)
        picks = [min(gen_len - 1, max(0, math.floor(gen_len * q))) for q in (0.25, 0.5, 0.75)]
        return torch.cat([block_feats[..., i, :] for i in picks], dim=-1)

    @torch.no_grad()
    def strided_features(
        self, sequences: torch.Tensor, layout: StridedLayout
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Generated and ground-truth block features from one strided forward (spec 3.4).

        Args:
            sequences: (B, S) strided sequences (ground truth then step-major rollouts).

        Returns:
            gen_feats (B, K, D) for phi(c_k : y_hat_k) and gt_feats (B, K, D) for phi(c_k : y_k).
        """
        assert sequences.shape[1] == layout.total_len, (sequences.shape, layout)
        feats = self.token_features(
            sequences, allowed=strided_attention_mask(layout), position_ids=strided_position_ids(layout)
        )  # (B, S, D)
        seq_len, ctx, gen_len = layout.seq_len, layout.context_len, layout.gen_len
        # GT windows: positions C + k*s .. C + k*s + G - 1, unfolded with step s (they overlap when s < G).
        gt_tokens = feats[:, ctx:seq_len].unfold(1, gen_len, layout.stride)  # (B, K, D, G)
        gt_tokens = gt_tokens.transpose(-1, -2)  # (B, K, G, D)
        gen_tokens = deinterleave_blocks(feats[:, seq_len:], layout)  # (B, K, G, D)
        assert gt_tokens.shape == gen_tokens.shape, (gt_tokens.shape, gen_tokens.shape)
        return self.pool(gen_tokens), self.pool(gt_tokens)

    @torch.no_grad()
    def block_features(self, prefix_and_block: torch.Tensor, gen_len: int) -> torch.Tensor:
        """Features of the last ``gen_len`` tokens of plain causal sequences: (B, P+G) -> (B, D)."""
        feats = self.token_features(prefix_and_block)  # (B, P+G, D)
        return self.pool(feats[:, -gen_len:])
