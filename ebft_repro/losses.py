"""Feature-matching rewards, RLOO advantages and the three methods' losses. Pure tensor functions: torch only.

Equation references are to the spec (``docs/ebft_spec.md``), which follows the paper and the authors' code:

- CFM loss (paper eq. 2):  L_CFM = E_(c,y) || E_{y_hat ~ p_theta} phi_c(y_hat) - phi_c(y) ||^2.
- Its REINFORCE gradient (paper eq. 7) uses the per-sample reward
  r_j = 2 <phi_j, phi_gt> - (2 / (n-1)) sum_{k != j} <phi_j, phi_k>, coded as alignment (2 * cosine) minus
  diversity (2 * mean raw dot product); spec section 2 ("Variant (i)", eq. 49).
- RLOO baseline with the exact pairwise leave-one-out term for diversity: spec section 4.1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ebft_repro.config import WHITENINGS

_SV_RELATIVE_CUTOFF = 1e-5  # singular values below this fraction of the largest are treated as zero (code)
_SV_GUARD = 1e-12


@dataclass
class FeatureRewards:
    """Per-sample rewards of M groups of N rollouts (spec section 2). All fields are (M, N)."""

    reward: torch.Tensor
    """r_j = alignment_coef * a_j - diversity_coef * d_j."""
    alignment: torch.Tensor
    """a_j = 2 cos(phi~_j, phi~_gt)."""
    diversity: torch.Tensor
    """d_j = 2 / (n-1) sum_{k != j} <phi~_j, phi~_k> (raw dot product)."""

    @property
    def feature_map_reward(self) -> torch.Tensor:
        """a - d/2: with unit features and no whitening, an unbiased estimate of 1 - CFM (spec 2 item 8)."""
        return self.alignment - self.diversity / 2


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) at every position: (..., V) logits and (...) token ids -> (...) log-probs."""
    return F.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)


def _thin_svd(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Batched thin SVD with the authors' fallback: retry once with 1e-6 * mean|X| noise, else give up."""
    try:
        return torch.linalg.svd(feats, full_matrices=False)
    except RuntimeError:
        noise = 1e-6 * feats.abs().mean() * torch.randn_like(feats)
        try:
            return torch.linalg.svd(feats + noise, full_matrices=False)
        except RuntimeError:
            return None


def whiten(gen_feats: torch.Tensor, gt_feats: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Whiten each group's rollout features and its ground-truth feature (spec section 2.1).

    ``sample`` is the authors' code: W = (X X^T)^{+1/2} (n x n, no centring), X~ = W X = U V^T, and the GT
    copies are transformed by the same W, giving (sum_j W_ij) * g for row i. ``feature`` is the paper's
    D x D transform (Sigma^+)^{1/2} with Sigma = X^T X / n, applied to rollouts (X~ = sqrt(n) U V^T) and GT
    alike (a projection of g onto the rollout span, rescaled). Singular values below 1e-5 of the largest are
    dropped in both.

    Args:
        gen_feats: (M, N, D) rollout features; gt_feats: (M, D).

    Returns:
        whitened rollouts (M, N, D) and whitened GT, one copy per rollout (M, N, D).
    """
    n_groups, n_samples, dim = gen_feats.shape
    gt_copies = gt_feats[:, None, :].expand(n_groups, n_samples, dim)  # (M, N, D)
    if mode == "none":
        return gen_feats, gt_copies
    if mode not in WHITENINGS:
        raise ValueError(f"whitening={mode!r} is not one of {WHITENINGS}")
    # float32 at least (the authors whiten in float32); float64 inputs keep their precision
    gen_feats = gen_feats if gen_feats.dtype == torch.float64 else gen_feats.float()
    gt_feats = gt_feats.to(gen_feats.dtype)
    svd = _thin_svd(gen_feats)
    if svd is None:
        return gen_feats, gt_copies
    left, singular, right_h = svd  # (M, N, r), (M, r), (M, r, D)
    keep = singular > _SV_RELATIVE_CUTOFF * singular.max(dim=-1, keepdim=True).values  # (M, r)
    inv_singular = torch.where(keep, 1.0 / (singular + _SV_GUARD), torch.zeros_like(singular))  # (M, r)
    if mode == "sample":
        operator = left @ torch.diag_embed(inv_singular) @ left.transpose(1, 2)  # (M, N, N)
        white_gen = operator @ gen_feats  # (M, N, D)
        white_gt = operator.sum(dim=-1, keepdim=True) * gt_feats[:, None, :]  # (M, N, D)
        return white_gen, white_gt
    scale = n_samples**0.5 * inv_singular  # (M, r): Sigma^{+1/2} = V diag(sqrt(n) / S) V^T
    white_gen = gen_feats @ right_h.transpose(1, 2) @ torch.diag_embed(scale) @ right_h  # (M, N, D)
    projected = (gt_feats[:, None, :] @ right_h.transpose(1, 2)) * scale[:, None, :]  # (M, 1, r)
    white_gt = (projected @ right_h).expand(n_groups, n_samples, dim)  # (M, N, D)
    return white_gen, white_gt


def feature_matching_rewards(
    gen_feats: torch.Tensor,
    gt_feats: torch.Tensor,
    *,
    alignment_coef: float = 1.0,
    diversity_coef: float = 1.0,
    whitening: str = "sample",
) -> FeatureRewards:
    """Alignment and leave-one-out diversity rewards per rollout (spec section 2, items 3-6).

    Args:
        gen_feats: (M, N, D) features of N rollouts for each of M (chunk, block) contexts.
        gt_feats: (M, D) ground-truth feature of each context.

    Returns:
        FeatureRewards with (M, N) fields. Computed without gradient.
    """
    n_groups, n_samples, dim = gen_feats.shape
    assert gt_feats.shape == (n_groups, dim), (gen_feats.shape, gt_feats.shape)
    with torch.no_grad():
        white_gen, white_gt = whiten(gen_feats, gt_feats, whitening)  # (M, N, D), (M, N, D)
        alignment = 2.0 * F.cosine_similarity(white_gen, white_gt, dim=-1)  # (M, N)
        if n_samples > 1:
            gram = white_gen @ white_gen.transpose(1, 2)  # (M, N, N)
            off_diagonal = gram.sum(dim=-1) - gram.diagonal(dim1=1, dim2=2)  # (M, N)
            diversity = 2.0 * off_diagonal / (n_samples - 1)
        else:
            diversity = torch.zeros_like(alignment)
        reward = alignment_coef * alignment - diversity_coef * diversity
    return FeatureRewards(reward=reward, alignment=alignment, diversity=diversity)


def rloo_advantages(
    alignment: torch.Tensor, diversity: torch.Tensor, *, alignment_coef: float, diversity_coef: float
) -> torch.Tensor:
    """REINFORCE advantages with a leave-one-out baseline per group (spec section 4.1).

    b_j = alpha * mean_{k != j} a_k - delta * (sum_k d_k - 2 d_j) / (n - 2). The diversity part is the exact
    leave-one-out baseline of the pairwise term: removing every pair that involves j (pitfall 9). For
    n <= 2 it is 0, and for n = 1 the whole baseline is 0. No std or global normalisation.

    Args:
        alignment, diversity: (M, N).

    Returns:
        (M, N) advantages A_j = r_j - b_j.
    """
    assert alignment.shape == diversity.shape and alignment.dim() == 2, (alignment.shape, diversity.shape)
    n_samples = alignment.shape[1]
    reward = alignment_coef * alignment - diversity_coef * diversity  # (M, N)
    if n_samples == 1:
        return reward
    align_base = (alignment.sum(dim=1, keepdim=True) - alignment) / (n_samples - 1)  # (M, N)
    if n_samples > 2:
        div_base = (diversity.sum(dim=1, keepdim=True) - 2.0 * diversity) / (n_samples - 2)  # (M, N)
    else:
        div_base = torch.zeros_like(diversity)
    return reward - (alignment_coef * align_base - diversity_coef * div_base)


def cfm_estimate(gen_feats: torch.Tensor, gt_feats: torch.Tensor) -> torch.Tensor:
    """Unbiased estimate of || E phi(y_hat) - phi(y) ||^2 per group (the CFM loss, paper eq. 2).

    ||E phi||^2 is estimated by the mean off-diagonal Gram entry (unbiased), unlike ||mean_j phi_j||^2.

    Args:
        gen_feats: (M, N, D) with n >= 2; gt_feats: (M, D).

    Returns:
        (M,) estimates.
    """
    n_samples = gen_feats.shape[1]
    if n_samples < 2:
        raise ValueError("cfm_estimate needs n >= 2 samples per group")
    gram = gen_feats @ gen_feats.transpose(1, 2)  # (M, N, N)
    moment_sq = (gram.sum(dim=(1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(-1)) / (n_samples * (n_samples - 1))
    cross = (gen_feats * gt_feats[:, None, :]).sum(-1).mean(-1)  # (M,)
    return moment_sq - 2.0 * cross + (gt_feats * gt_feats).sum(-1)


def approx_kl(logps: torch.Tensor, ref_logps: torch.Tensor, estimator: str = "k2") -> torch.Tensor:
    """Per-token KL estimate to a reference policy (spec 4.4), clamped to [-10, 10]."""
    log_ratio = logps - ref_logps
    if estimator == "k1":
        kl = log_ratio
    elif estimator == "k2":
        kl = 0.5 * log_ratio**2
    elif estimator == "k3":
        kl = torch.exp(-log_ratio) - 1.0 + log_ratio
    else:
        raise ValueError(f"kl_estimator={estimator!r} is not one of ('k1', 'k2', 'k3')")
    return kl.clamp(-10.0, 10.0)


def _masked_seq_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Token mean within each sequence, then the mean over sequences (pitfall 13). values: (N, ...)."""
    flat = values.reshape(values.shape[0], -1)  # (N, T')
    if mask is None:
        return flat.mean(dim=1).mean()
    weights = mask.reshape(values.shape[0], -1).to(flat.dtype)  # (N, T')
    per_seq = (flat * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return per_seq.mean()


def ebft_loss(
    gen_logps: torch.Tensor,
    advantages: torch.Tensor,
    gt_logps: torch.Tensor,
    *,
    ce_coef: float,
    rl_coef: float = 1.0,
    gt_mask: torch.Tensor | None = None,
    ref_gen_logps: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k2",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """EBFT loss: on-policy REINFORCE on generated tokens + gamma * CE on ground truth (spec section 4.2).

    loss = rl_coef * mean_N[ tokenmean_{K,G}( -A_(n,k) * log p^(1/T)(y_hat_(n,k,t)) ) ]
         + ce_coef * mean_N[ tokenmean_{L-1}( -log p(x_i | x_<i) ) ] + kl_coef * KL.
    The ratio exp(logp - logp.detach()) is identically 1, so no ratio or clipping appears (pitfall 11).

    Args:
        gen_logps: (N, K, G) log-probs of the generated tokens, with gradient.
        advantages: (N, K) per-block advantages (constants), broadcast to the block's G tokens.
        gt_logps: (N, L-1) log-probs of the ground-truth next tokens, with gradient.
        gt_mask: (N, L-1) which ground-truth targets count (padding excluded); None = all.
        ref_gen_logps: (N, K, G) reference-policy log-probs for the optional KL term.

    Returns:
        (loss, metrics); the metrics are detached 0-d tensors (the step converts them once, where it logs).
    """
    n_seqs, n_blocks, _ = gen_logps.shape
    assert advantages.shape == (n_seqs, n_blocks), (advantages.shape, gen_logps.shape)
    assert gt_logps.shape[0] == n_seqs, (gt_logps.shape, gen_logps.shape)
    pg_loss = _masked_seq_mean(-advantages.detach()[:, :, None] * gen_logps, None)
    ce_loss = _masked_seq_mean(-gt_logps, gt_mask)
    loss = rl_coef * pg_loss + ce_coef * ce_loss
    metrics = {"pg_loss": pg_loss.detach(), "ce_loss": ce_loss.detach()}
    if kl_coef > 0:
        if ref_gen_logps is None:
            raise ValueError("kl_coef > 0 needs ref_gen_logps")
        kl = _masked_seq_mean(approx_kl(gen_logps, ref_gen_logps.detach(), kl_estimator), None)
        loss = loss + kl_coef * kl
        metrics["kl"] = kl.detach()
    metrics["loss"] = loss.detach()
    return loss, metrics


def sft_loss(
    gt_logps: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Teacher-forced cross-entropy, token-weighted over the batch.

    Args:
        gt_logps: (B, T) log-probs of the target tokens; mask: (B, T) which targets count.
    """
    mask = torch.ones_like(gt_logps, dtype=torch.bool) if mask is None else mask
    weights = mask.to(gt_logps.dtype)
    loss = -(gt_logps * weights).sum() / weights.sum().clamp(min=1.0)
    return loss, {"loss": loss.detach(), "ce_loss": loss.detach()}


def rlvr_loss(
    logps: torch.Tensor, completion_mask: torch.Tensor, rewards: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """RLVR baseline: REINFORCE with a leave-one-out (RLOO) baseline over n completions per prompt.

    A_j = r_j - mean_{k != j} r_k; loss = mean over samples of the token mean of -A_j * log p(y_j,t).

    Args:
        logps: (B, N, T) completion-token log-probs (with gradient).
        completion_mask: (B, N, T) True on completion tokens (through EOS).
        rewards: (B, N) verifier rewards in [0, 1].

    Returns:
        (loss, metrics); ``zero_adv_group_frac`` is the share of the B groups whose advantages are all 0 (n
        equal rewards; with n = 1, a zero reward), which contribute no gradient.
    """
    n_prompts, n_samples, _ = logps.shape
    assert rewards.shape == (n_prompts, n_samples), (rewards.shape, logps.shape)
    baseline = (rewards.sum(1, keepdim=True) - rewards) / max(n_samples - 1, 1)  # (B, N)
    advantages = (rewards - baseline) if n_samples > 1 else rewards
    weights = completion_mask.to(logps.dtype)
    per_token = -advantages.detach()[:, :, None] * logps * weights  # (B, N, T)
    per_seq = per_token.sum(-1) / weights.sum(-1).clamp(min=1.0)  # (B, N)
    loss = per_seq.mean()
    if n_samples > 1:  # equal rewards: every leave-one-out advantage is 0
        zero_adv = rewards.max(dim=1).values == rewards.min(dim=1).values  # (B,)
    else:  # no baseline: A = r
        zero_adv = rewards[:, 0] == 0  # (B,)
    metrics = {
        "loss": loss.detach(),
        "pg_loss": loss.detach(),
        "reward_mean": rewards.mean(),
        "reward_std": rewards.std() if rewards.numel() > 1 else rewards.new_zeros(()),
        "zero_adv_group_frac": zero_adv.float().mean(),
        "completion_len": weights.sum(-1).mean(),
    }
    return loss, metrics
