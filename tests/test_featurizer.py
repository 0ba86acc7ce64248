"""The frozen feature network: layer choice, normalisation, strided vs separate forwards, frozen weights."""

import pytest
import torch

from ebft_repro.config import POOLINGS
from ebft_repro.featurizer import FeatureNetwork, resolve_layers
from ebft_repro.sampler import StridedLayout, strided_generate


def test_resolve_layers_matches_the_authors_rule():
    # Qwen2.5-1.5B: 28 layers -> 7, 14, 21; Llama-3.2-1B: 16 layers -> 4, 8, 12 (spec section 5)
    assert resolve_layers((0.25, 0.5, 0.75), 28) == (7, 14, 21)
    assert resolve_layers((0.25, 0.5, 0.75), 16) == (4, 8, 12)
    assert resolve_layers((0.1,), 4) == (1,)  # never the embedding output
    assert resolve_layers((0, 4), 4) == (0, 4)
    with pytest.raises(ValueError):
        resolve_layers((5,), 4)


def test_feature_network_is_a_frozen_copy(tiny_llama):
    net = FeatureNetwork(tiny_llama)
    net.train()
    assert not net.model.training
    assert all(not p.requires_grad for p in net.parameters())
    policy_ptrs = {p.data_ptr() for p in tiny_llama.parameters()}
    assert policy_ptrs.isdisjoint(p.data_ptr() for p in net.parameters())


@pytest.mark.parametrize("pooling", POOLINGS)
def test_strided_features_equal_separate_forwards(any_model, pooling):
    layout = StridedLayout(24, 4, 4, 4)
    net = FeatureNetwork(any_model, pooling=pooling)
    input_ids = torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(0))
    rollouts = strided_generate(
        any_model, input_ids, stride=4, context_len=4, gen_len=4, generator=torch.Generator()
    )
    gen_feats, gt_feats = net.strided_features(rollouts.sequences, layout)
    assert gen_feats.shape == gt_feats.shape == (2, layout.n_blocks, net.feature_dim(4))
    for k in range(layout.n_blocks):
        prefix = input_ids[:, : layout.anchor(k)]
        expected_gen = net.block_features(torch.cat([prefix, rollouts.blocks[:, k]], 1), 4)
        expected_gt = net.block_features(input_ids[:, : layout.anchor(k) + 4], 4)
        torch.testing.assert_close(gen_feats[:, k], expected_gen, atol=1e-4, rtol=0)
        torch.testing.assert_close(gt_feats[:, k], expected_gt, atol=1e-4, rtol=0)


def test_token_features_are_unit_norm_over_the_concatenation(tiny_llama):
    net = FeatureNetwork(tiny_llama, layers=(1, 2, 3))
    feats = net.token_features(torch.randint(0, 64, (2, 10)))
    assert feats.shape == (2, 10, 3 * 32)
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(2, 10))
    # normalised jointly, not layer by layer: the per-layer pieces are not each unit norm
    assert not torch.allclose(feats[..., :32].norm(dim=-1), torch.ones(2, 10))


def test_concat_poolings_are_named_for_what_they_keep(tiny_llama):
    """concat_quartiles: the tokens at 25/50/75% of the block (the authors' `concat`); concat_all: all G."""
    block = torch.arange(8 * 3, dtype=torch.float32).view(1, 8, 3)  # (B, G=8, D=3)
    quartiles = FeatureNetwork(tiny_llama, pooling="concat_quartiles").pool(block)
    everything = FeatureNetwork(tiny_llama, pooling="concat_all").pool(block)
    assert torch.equal(quartiles, torch.cat([block[:, 2], block[:, 4], block[:, 6]], dim=-1))
    assert torch.equal(everything, block.reshape(1, 24))
    with pytest.raises(ValueError, match="concat_quartiles"):
        FeatureNetwork(tiny_llama, pooling="concat")


def test_feature_dtype_effect_is_zero_for_the_same_dtype_and_small_for_bf16(model_dirs):
    from ebft_repro.experiments.precision import feature_dtype_effect

    from .conftest import fast_config

    cfg = fast_config(model_dirs["llama"], method="ebft")
    same = feature_dtype_effect(cfg, n_chunks=2, dtype="float32")
    assert same["advantage_rel_l2"] == 0.0 and same["advantage_sign_agreement"] == 1.0
    bf16 = feature_dtype_effect(cfg, n_chunks=2, dtype="bfloat16")
    assert 0.0 < bf16["advantage_rel_l2"] < 1.0  # bf16 moves the advantages, but does not scramble them
    assert bf16["feature_cosine_min"] > 0.99
