"""The frozen feature network: layer choice, normalisation, strided vs separate forwards, frozen weights."""

import pytest
import torch

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


@pytest.mark.parametrize("pooling", ["last_token", "mean", "concat"])
def test_strided_features_equal_separate_forwards(any_model, pooling):
    layout = StridedLayout(24, 4, 4, 4)
    net = FeatureNetwork(any_model, pooling=pooling)
    input_ids = torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(0))
    rollouts = strided_generate(
        any_model, input_ids, stride=4, context_len=4, gen_len=4, generator=torch.Generator()
    )
    gen_feats, gt_feats = net.strided_features(rollouts.sequences, layout)
    assert gen_feats.shape == gt_feats.shape == (2, layout.n_blocks, net.feature_dim)
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
