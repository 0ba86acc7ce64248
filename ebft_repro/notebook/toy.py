"""The toy problem of notebook 01 (the feature-matching objective): exact CFM loss, gradient and estimates.

The toy problem is a categorical policy p_theta = softmax(theta) over a handful of short token sequences,
with a random unit-norm feature map phi. It is small enough that E_p phi, the CFM loss ||E_p phi - phi_gt||^2
(paper eq. 2) and its gradient are exact (autograd), so the REINFORCE + RLOO estimate built from
:func:`ebft_repro.losses.feature_matching_rewards` and :func:`ebft_repro.losses.rloo_advantages` (paper
eq. 7, spec sections 1, 2 and 4.1) can be checked against them: mean, variance and the effect of whitening.
The notebook calls these through :mod:`ebft_repro.notebook.teaching`, which re-exports them.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ebft_repro.losses import feature_matching_rewards, rloo_advantages

BASELINES = ("rloo", "naive", "none")


@dataclass(frozen=True)
class ToyProblem:
    """A categorical policy over V short sequences, their features and one ground-truth completion."""

    sequences: tuple[str, ...]
    """The V sequences the policy can emit (e.g. ``"ab"``)."""
    features: torch.Tensor
    """(V, D) float64 unit-norm features phi(y)."""
    gt_index: int
    """Which sequence is the observed completion y (its feature is phi_gt)."""
    logits: torch.Tensor
    """(V,) float64 policy logits theta."""

    @property
    def gt_feature(self) -> torch.Tensor:
        return self.features[self.gt_index]  # (D,)

    @property
    def probs(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=0)  # (V,)


def make_toy_problem(
    alphabet: str = "abc",
    seq_len: int = 2,
    feature_dim: int = 8,
    gt_index: int = 0,
    shared: float = 0.0,
    logit_scale: float = 0.5,
    seed: int = 0,
) -> ToyProblem:
    """All ``len(alphabet) ** seq_len`` sequences with features normalize(shared * u + tanh(W onehot(y))).

    ``shared`` adds a common direction u to every feature, as in LM hidden states, whose features of
    different continuations have large cosines; the logits theta are ``logit_scale`` times standard normals.
    """
    generator = torch.Generator().manual_seed(seed)
    sequences = tuple("".join(chars) for chars in itertools.product(alphabet, repeat=seq_len))
    onehots = torch.zeros(len(sequences), seq_len * len(alphabet), dtype=torch.float64)  # (V, seq_len * A)
    for row, seq in enumerate(sequences):
        for t, char in enumerate(seq):
            onehots[row, t * len(alphabet) + alphabet.index(char)] = 1.0
    weights = torch.randn(onehots.shape[1], feature_dim, generator=generator, dtype=torch.float64)
    common = F.normalize(torch.randn(feature_dim, generator=generator, dtype=torch.float64), dim=0)  # (D,)
    features = F.normalize(shared * common + torch.tanh(onehots @ weights), dim=-1)  # (V, D)
    logits = logit_scale * torch.randn(len(sequences), generator=generator, dtype=torch.float64)  # (V,)
    return ToyProblem(sequences, features, gt_index, logits)


def exact_cfm(problem: ToyProblem) -> float:
    """||E_p phi - phi_gt||^2, computed exactly."""
    return float(((problem.probs @ problem.features - problem.gt_feature) ** 2).sum())


def exact_gradient(problem: ToyProblem) -> torch.Tensor:
    """d/dtheta ||E_p phi - phi_gt||^2 by autograd.  -> (V,) float64."""
    logits = problem.logits.clone().requires_grad_(True)
    moment = torch.softmax(logits, dim=0) @ problem.features  # (D,)
    loss = ((moment - problem.gt_feature) ** 2).sum()
    (grad,) = torch.autograd.grad(loss, logits)
    return grad


@dataclass
class GradientDraws:
    """Independent one-group gradient estimates and the rewards behind them."""

    estimates: torch.Tensor
    """(M, V) one estimate per group of n samples."""
    picks: torch.Tensor
    """(M, n) indices of the sampled sequences."""
    advantages: torch.Tensor
    """(M, n) A_j used by the estimate."""
    alignment: torch.Tensor
    """(M, n) a_j."""
    diversity: torch.Tensor
    """(M, n) d_j."""
    feature_map_reward: torch.Tensor
    """(M, n) a_j - d_j / 2 (estimates 1 - CFM for unit features without whitening)."""
    has_duplicate: torch.Tensor
    """(M,) bool: some sequence was drawn twice in the group."""


def gradient_draws(
    problem: ToyProblem,
    n_samples: int,
    n_draws: int,
    *,
    whitening: str = "none",
    baseline: str = "rloo",
    diversity_coef: float = 1.0,
    seed: int = 0,
) -> GradientDraws:
    """REINFORCE estimates of the CFM gradient, one per group of n i.i.d. samples from p_theta.

    g_hat = -(1/n) sum_j A_j grad log p(y_j), with grad_theta log p(y) = onehot(y) - p for a softmax policy.
    ``baseline``: ``rloo`` is the package's :func:`rloo_advantages` (exact leave-one-out, unbiased);
    ``naive`` subtracts the mean of the other samples' full rewards, whose diversity part still depends on
    y_j (biased); ``none`` uses A_j = r_j.

    Returns:
        GradientDraws with (M, V) estimates, M = n_draws.
    """
    if baseline not in BASELINES:
        raise ValueError(f"baseline={baseline!r} is not one of {BASELINES}")
    generator = torch.Generator().manual_seed(seed)
    probs = problem.probs
    picks = torch.multinomial(
        probs.expand(n_draws, -1), n_samples, replacement=True, generator=generator
    )  # (M, n)
    gen_feats = problem.features[picks]  # (M, n, D)
    gt_feats = problem.gt_feature.expand(n_draws, -1)  # (M, D)
    rewards = feature_matching_rewards(
        gen_feats, gt_feats, diversity_coef=diversity_coef, whitening=whitening
    )
    if baseline == "rloo":
        advantages = rloo_advantages(
            rewards.alignment, rewards.diversity, alignment_coef=1.0, diversity_coef=diversity_coef
        )  # (M, n)
    elif baseline == "naive":
        others = (rewards.reward.sum(dim=1, keepdim=True) - rewards.reward) / (n_samples - 1)  # (M, n)
        advantages = rewards.reward - others
    else:
        advantages = rewards.reward
    scores = F.one_hot(picks, len(problem.sequences)).to(probs.dtype) - probs  # (M, n, V)
    estimates = -(advantages[:, :, None] * scores).mean(dim=1)  # (M, V)
    sorted_picks = picks.sort(dim=1).values
    has_duplicate = (sorted_picks[:, 1:] == sorted_picks[:, :-1]).any(dim=1)  # (M,)
    return GradientDraws(
        estimates,
        picks,
        advantages,
        rewards.alignment,
        rewards.diversity,
        rewards.feature_map_reward,
        has_duplicate,
    )


def group_table(problem: ToyProblem, draws: GradientDraws, index: int = 0):
    """The samples of one group with their alignment, diversity, reward and advantage (a DataFrame)."""
    import pandas as pd

    picks = draws.picks[index].tolist()
    return pd.DataFrame(
        {
            "sample y_j": [problem.sequences[i] for i in picks],
            "alignment a_j": draws.alignment[index].tolist(),
            "diversity d_j": draws.diversity[index].tolist(),
            "reward r_j = a_j - d_j": (draws.alignment[index] - draws.diversity[index]).tolist(),
            "advantage A_j (RLOO)": draws.advantages[index].tolist(),
        }
    )


def bias_check(draws: GradientDraws, exact: torch.Tensor) -> dict[str, float]:
    """Mean estimate vs the exact gradient: max |z|, relative error of the mean and cosine similarity."""
    n_draws = draws.estimates.shape[0]
    mean = draws.estimates.mean(dim=0)  # (V,)
    stderr = draws.estimates.std(dim=0) / math.sqrt(n_draws)  # (V,)
    z = (mean - exact) / stderr.clamp(min=1e-12)
    return {
        "max_abs_z": float(z.abs().max()),
        "relative_error": float((mean - exact).norm() / exact.norm()),
        "cosine_to_exact": float(F.cosine_similarity(mean, exact, dim=0)),
        "variance": float(draws.estimates.var(dim=0).sum()),
    }


def variance_vs_n(
    problem: ToyProblem,
    n_values: tuple[int, ...],
    n_draws: int,
    *,
    whitenings: tuple[str, ...] = ("none", "sample"),
    baselines: tuple[str, ...] = ("rloo", "none"),
):
    """Variance (trace of Cov g_hat) and bias of one-group estimates per whitening, baseline and n."""
    import pandas as pd

    exact = exact_gradient(problem)
    rows = []
    for whitening in whitenings:
        for baseline in baselines:
            for n_samples in n_values:
                draws = gradient_draws(
                    problem, n_samples, n_draws, whitening=whitening, baseline=baseline, seed=n_samples
                )
                rows.append(
                    {"whitening": whitening, "baseline": baseline, "n": n_samples} | bias_check(draws, exact)
                )
    return pd.DataFrame(rows)


def whitening_study(problem: ToyProblem, n_samples: int, n_draws: int, *, seed: int = 0):
    """Diversity term and gradient direction under each whitening mode (spec 2.1), as a DataFrame.

    Whitening changes the reward, so its estimate is no longer the gradient of the raw-feature CFM loss:
    ``relative_error`` and ``cosine_to_exact`` measure how far it moves from that gradient.
    """
    import pandas as pd

    exact = exact_gradient(problem)
    rows = []
    for mode in ("none", "sample", "feature"):
        draws = gradient_draws(problem, n_samples, n_draws, whitening=mode, seed=seed)
        dup = draws.has_duplicate
        rows.append(
            {
                "whitening": mode,
                "diversity (all distinct)": float(draws.diversity[~dup].mean()) if (~dup).any() else math.nan,
                "diversity (with a duplicate)": float(draws.diversity[dup].mean()) if dup.any() else math.nan,
                "groups with a duplicate": float(dup.float().mean()),
                "alignment": float(draws.alignment.mean()),
            }
            | bias_check(draws, exact)
        )
    return pd.DataFrame(rows)
