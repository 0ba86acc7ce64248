"""Rewards, whitening, RLOO and losses on hand-computed tensors (expected values worked out in comments)."""

import pytest
import torch

from ebft_repro.losses import (
    approx_kl,
    cfm_estimate,
    ebft_loss,
    feature_matching_rewards,
    rloo_advantages,
    rlvr_loss,
    sft_loss,
    whiten,
)


@pytest.fixture(autouse=True)
def _seeded():
    """Every random tensor below is the same on every run (the whitening tests draw features at random)."""
    torch.manual_seed(0)


# One group, n = 3 unit features in D = 2, GT = e1:
#   phi_0 = (1, 0), phi_1 = (0, 1), phi_2 = (0.6, 0.8)
#   <0,1> = 0, <0,2> = 0.6, <1,2> = 0.8
#   a = 2 cos(phi_j, gt)            = [2.0, 0.0, 1.2]
#   d = 2/(n-1) sum_{k!=j} <j, k>    = [0.6, 0.8, 1.4]
#   r = a - d                        = [1.4, -0.8, -0.2]
#   alignment baseline (sum a - a_j)/2          = [0.6, 1.6, 1.0]
#   diversity baseline (sum d - 2 d_j)/(n - 2)  = [1.6, 1.2, 0.0]   (sum d = 2.8)
#   b = [0.6 - 1.6, 1.6 - 1.2, 1.0 - 0.0] = [-1.0, 0.4, 1.0]
#   A = r - b = [2.4, -1.2, -1.2]
GEN = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]])
GT = torch.tensor([[1.0, 0.0]])


def test_rewards_on_hand_computed_tensors():
    rewards = feature_matching_rewards(GEN, GT, whitening="none")
    torch.testing.assert_close(rewards.alignment, torch.tensor([[2.0, 0.0, 1.2]]))
    torch.testing.assert_close(rewards.diversity, torch.tensor([[0.6, 0.8, 1.4]]))
    torch.testing.assert_close(rewards.reward, torch.tensor([[1.4, -0.8, -0.2]]))
    half = feature_matching_rewards(GEN, GT, diversity_coef=0.5, whitening="none")
    torch.testing.assert_close(half.reward, torch.tensor([[2.0 - 0.3, 0.0 - 0.4, 1.2 - 0.7]]))


def test_alignment_is_a_cosine_and_diversity_a_raw_dot_product():
    scaled = feature_matching_rewards(3.0 * GEN, 2.0 * GT, whitening="none")
    torch.testing.assert_close(scaled.alignment, torch.tensor([[2.0, 0.0, 1.2]]))  # scale-free
    torch.testing.assert_close(scaled.diversity, 9.0 * torch.tensor([[0.6, 0.8, 1.4]]))  # scales with |phi|^2


def test_rloo_advantages_hand_computed():
    rewards = feature_matching_rewards(GEN, GT, whitening="none")
    advantages = rloo_advantages(rewards.alignment, rewards.diversity, alignment_coef=1.0, diversity_coef=1.0)
    torch.testing.assert_close(advantages, torch.tensor([[2.4, -1.2, -1.2]]))


def test_rloo_diversity_baseline_is_the_exact_leave_one_out_pairwise_term():
    gen = torch.nn.functional.normalize(torch.randn(5, 6, 8), dim=-1)
    rewards = feature_matching_rewards(gen, torch.randn(5, 8), whitening="none")
    advantages = rloo_advantages(rewards.alignment, rewards.diversity, alignment_coef=0.0, diversity_coef=1.0)
    for j in range(6):
        others = [k for k in range(6) if k != j]
        sub = gen[:, others]  # the diversity rewards the other 5 samples would give each other
        gram = sub @ sub.transpose(1, 2)
        loo = 2 * (gram.sum((1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(-1)) / (5 * 4)
        torch.testing.assert_close(advantages[:, j], -(rewards.diversity[:, j] - loo))


def test_rloo_small_groups():
    a, d = torch.tensor([[1.0, 3.0]]), torch.tensor([[0.5, 0.5]])
    # n = 2: the diversity baseline is 0; alignment baseline is the other sample's a
    torch.testing.assert_close(
        rloo_advantages(a, d, alignment_coef=1, diversity_coef=1), torch.tensor([[-2.5, 1.5]])
    )
    torch.testing.assert_close(
        rloo_advantages(a[:, :1], d[:, :1], alignment_coef=1, diversity_coef=1), torch.tensor([[0.5]])
    )


def test_feature_map_reward_is_one_minus_unbiased_cfm():
    gen = torch.nn.functional.normalize(torch.randn(7, 4, 16), dim=-1)
    gt = torch.nn.functional.normalize(torch.randn(7, 16), dim=-1)
    rewards = feature_matching_rewards(gen, gt, whitening="none")
    torch.testing.assert_close(rewards.feature_map_reward.mean(1), 1.0 - cfm_estimate(gen, gt))


def test_cfm_estimate_is_unbiased():
    # phi ~ N(mu, I) in D=3; E phi = mu, so the CFM target is ||mu - g||^2 exactly.
    torch.manual_seed(0)
    mu, g = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 1.0, 1.0])
    samples = mu + torch.randn(20000, 4, 3)
    estimate = cfm_estimate(samples, g.expand(20000, 3)).mean()
    assert abs(estimate.item() - ((mu - g) ** 2).sum().item()) < 0.1  # 9.25; the biased ||mean||^2 adds 0.75


def test_sample_whitening_makes_rollouts_orthonormal():
    gen = torch.randn(3, 4, 32)  # rank n = 4
    white_gen, white_gt = whiten(gen, torch.randn(3, 32), "sample")
    gram = white_gen @ white_gen.transpose(1, 2)
    torch.testing.assert_close(gram, torch.eye(4).expand(3, 4, 4), atol=1e-4, rtol=0)
    rewards = feature_matching_rewards(gen, torch.randn(3, 32), whitening="sample")
    assert rewards.diversity.abs().max() < 1e-4  # the diversity term vanishes (spec 2.1)


def test_sample_whitening_gt_is_a_scalar_multiple_and_duplicates_are_penalised():
    base = torch.randn(3, 32)
    gen = torch.stack([base[0], base[0], base[1], base[2]])[None]  # a duplicated pair
    gt = torch.randn(1, 32)
    white_gen, white_gt = whiten(gen, gt, "sample")
    gram = white_gen[0] @ white_gen[0].T
    assert abs(gram[0, 1].item() - 0.5) < 1e-4  # a cluster of m identical samples has pairwise dot 1/m
    for row in white_gt[0]:  # (sum_j W_ij) * g: parallel to the unwhitened g
        torch.testing.assert_close(
            torch.nn.functional.cosine_similarity(row, gt[0], dim=0).abs(), torch.tensor(1.0)
        )


def test_feature_whitening_matches_explicit_pseudo_inverse_sqrt():
    gen, gt = torch.randn(1, 4, 6, dtype=torch.float64), torch.randn(1, 6, dtype=torch.float64)
    white_gen, white_gt = whiten(gen, gt, "feature")
    sigma = gen[0].T @ gen[0] / 4  # D x D second moment, rank 4
    eigvals, eigvecs = torch.linalg.eigh(sigma)
    keep = eigvals > 1e-10 * eigvals.max()
    inv_sqrt = eigvecs[:, keep] @ torch.diag(eigvals[keep] ** -0.5) @ eigvecs[:, keep].T
    torch.testing.assert_close(white_gen[0], gen[0] @ inv_sqrt, atol=1e-8, rtol=1e-6)
    torch.testing.assert_close(white_gt[0, 0], gt[0] @ inv_sqrt, atol=1e-8, rtol=1e-6)


def test_whitening_rejects_unknown_mode():
    with pytest.raises(ValueError, match="whitening"):
        whiten(GEN, GT, "zca")


def test_ebft_loss_gradient_equals_naive_reinforce():
    torch.manual_seed(0)
    n_seqs, n_blocks, gen_len, vocab, seq_len = 3, 2, 4, 5, 6
    gen_logits = torch.randn(n_seqs, n_blocks, gen_len, vocab, requires_grad=True)
    gt_logits = torch.randn(n_seqs, seq_len - 1, vocab, requires_grad=True)
    tokens = torch.randint(0, vocab, (n_seqs, n_blocks, gen_len))
    targets = torch.randint(0, vocab, (n_seqs, seq_len - 1))
    advantages = torch.randn(n_seqs, n_blocks)
    gen_logps = torch.log_softmax(gen_logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    gt_logps = torch.log_softmax(gt_logits, -1).gather(-1, targets[..., None]).squeeze(-1)
    loss, metrics = ebft_loss(gen_logps, advantages, gt_logps, ce_coef=0.1)
    loss.backward()
    fast = (gen_logits.grad.clone(), gt_logits.grad.clone())
    gen_logits.grad, gt_logits.grad = None, None
    naive = 0.0
    for i in range(n_seqs):  # sum_i [ mean_{k,t} -A_ik log p(y_ikt) + 0.1 * mean_t -log p(x_it) ] / N
        log_p = torch.log_softmax(gen_logits[i], -1)
        pg = sum(
            -advantages[i, k] * log_p[k, t, tokens[i, k, t]] for k in range(n_blocks) for t in range(gen_len)
        )
        ce = sum(-torch.log_softmax(gt_logits[i, t], -1)[targets[i, t]] for t in range(seq_len - 1))
        naive = naive + (pg / (n_blocks * gen_len) + 0.1 * ce / (seq_len - 1)) / n_seqs
    naive.backward()
    torch.testing.assert_close(fast[0], gen_logits.grad)
    torch.testing.assert_close(fast[1], gt_logits.grad)
    assert metrics["loss"].item() == pytest.approx(naive.item(), rel=1e-5)


def test_ebft_loss_kl_term():
    logps = torch.tensor([[[-1.0, -2.0]]])
    loss, metrics = ebft_loss(
        logps, torch.zeros(1, 1), torch.zeros(1, 3), ce_coef=0.0, ref_gen_logps=logps - 1.0, kl_coef=1.0
    )
    assert metrics["kl"].item() == pytest.approx(0.5)  # k2 = (1/2) * 1^2 per token
    assert approx_kl(logps, logps).abs().max() == 0


def test_sft_and_rlvr_losses_hand_computed():
    loss, _ = sft_loss(
        torch.tensor([[-1.0, -3.0], [-2.0, -10.0]]), torch.tensor([[True, True], [True, False]])
    )
    assert loss.item() == pytest.approx(2.0)  # (1 + 3 + 2) / 3
    # rewards [1, 0, 0, 1]: LOO baselines [1/3, 2/3, 2/3, 1/3] -> A = [2/3, -2/3, -2/3, 2/3]. The loss is
    # 0 here whatever A is (sum_j A_j = 0), so the gradient is what is checked:
    # d loss / d logp_(j,t) = -A_j / (T * B * N) = -A_j / 8 (the last token of sample 1 is masked out)
    logps = torch.full((1, 4, 2), -1.0, requires_grad=True)
    mask = torch.tensor([[[True, True], [True, False], [True, True], [True, True]]])
    loss, metrics = rlvr_loss(logps, mask, torch.tensor([[1.0, 0.0, 0.0, 1.0]]))
    loss.backward()
    third = 1 / 3
    expected = torch.tensor([[[-third / 4] * 2, [third / 2, 0.0], [third / 4] * 2, [-third / 4] * 2]])
    torch.testing.assert_close(logps.grad, expected)  # T = 1 for sample 1: -A_1 / (1 * 4) = 1/6
    assert (logps.grad[0, [0, 3]] < 0).all()  # descent raises the log-probs of the rewarded samples
    assert metrics["zero_adv_group_frac"].item() == 0.0 and metrics["reward_mean"].item() == 0.5
    logps = torch.tensor([[[-1.0], [-2.0], [-3.0], [-4.0]]], requires_grad=True)
    loss, _ = rlvr_loss(logps, torch.ones(1, 4, 1, dtype=torch.bool), torch.tensor([[1.0, 0.0, 0.0, 1.0]]))
    # mean_j -A_j * logp_j = (2/3 * 1 - 2/3 * 2 - 2/3 * 3 + 2/3 * 4) / 4 = 0; gradient -A_j / 4
    loss.backward()
    torch.testing.assert_close(logps.grad, torch.tensor([[[-1 / 6], [1 / 6], [1 / 6], [-1 / 6]]]))
    loss, _ = rlvr_loss(logps, torch.ones(1, 4, 1, dtype=torch.bool), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    # baselines [0, 1/3, 1/3, 1/3] -> A = [1, -1/3, -1/3, -1/3]; mean -A*logp = (1 - 2/3 - 1 - 4/3) / 4 = -0.5
    assert loss.item() == pytest.approx(-0.5)


def test_rlvr_zero_advantage_group_fraction():
    # groups of n = 2: [1, 1] and [0, 0] have equal rewards (A = 0, no gradient), [0, 1] does not -> 2/3
    rewards = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    logps = torch.full((3, 2, 2), -1.0, requires_grad=True)
    _, metrics = rlvr_loss(logps, torch.ones(3, 2, 2, dtype=torch.bool), rewards)
    assert metrics["zero_adv_group_frac"].item() == pytest.approx(2 / 3)
    _, metrics = rlvr_loss(logps, torch.ones(3, 2, 2, dtype=torch.bool), torch.tensor([[0.5, 0.5]] * 3))
    assert metrics["zero_adv_group_frac"].item() == 1.0  # fractional rewards, all equal
    # n = 1 has no baseline (A = r): only a zero reward gives no gradient -> 1/2
    _, metrics = rlvr_loss(
        torch.full((2, 1, 1), -1.0), torch.ones(2, 1, 1, dtype=torch.bool), torch.tensor([[0.0], [1.0]])
    )
    assert metrics["zero_adv_group_frac"].item() == 0.5
