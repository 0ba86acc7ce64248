"""Paired comparisons of two methods evaluated on the same prompts: bootstrap intervals and verdicts.

Every method is evaluated on the same test prompts (and, per seed, with the same sampling stream), so a
prompt that is hard for one method is hard for the other: comparing per-seed means with Welch's interval
counts that shared difficulty as noise. Here the unit of resampling is the prompt, shared by both methods,
and the seed, paired across methods (seed s of A with seed s of B), as in a hierarchical bootstrap:

    for each replicate b:  seeds S_b ~ U{1..S}^S,  prompts P_b ~ U{1..P}^P  (with replacement)
        Delta_b = mean_{s in S_b} stat(A[s][P_b]) - mean_{s in S_b} stat(B[s][P_b])

and the interval is the (alpha/2, 1 - alpha/2) percentile interval of Delta_b. ``stat`` is the mean of
per-prompt pass@1 estimates for code, and corpus BLEU recomputed from the resampled sentences' summed
statistics for translation (:func:`~ebft_repro.evaluation.metrics.bleu_from_statistics`).

Verdicts (``docs/statistics.md``): "beats" is reproduced when the 95% interval lies above 0 and not
reproduced when it lies below 0; "matches" is an equivalence test (two one-sided tests at 5%, i.e. the
90% interval) against an absolute margin m: reproduced when the interval lies inside (-m, m), not
reproduced when it lies wholly outside [-m, m], inconclusive otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Statistic = Callable[[list], float]


@dataclass(frozen=True)
class PairedInterval:
    """A paired difference A - B (oriented: positive favours A) and its bootstrap percentile interval."""

    difference: float
    low: float
    high: float
    level: float
    n_boot: int


def mean_statistic(rows: list) -> float:
    """The mean of per-prompt values (e.g. pass@1 estimates correct/n)."""
    return float(np.mean(rows))


def paired_interval(
    a: Sequence[Sequence],
    b: Sequence[Sequence],
    statistic: Statistic = mean_statistic,
    *,
    higher_is_better: bool = True,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> PairedInterval:
    """Bootstrap interval of ``mean_s stat(a[s]) - mean_s stat(b[s])``, resampling seeds and prompts.

    Args:
        a, b: per seed (same seeds, same order), per prompt (same prompts, same order) records: a float
            per prompt, or any row ``statistic`` accepts (e.g. BLEU statistics of one sentence).
        statistic: maps one seed's list of prompt records to a number.
        higher_is_better: False for losses (the difference is then B - A, so positive still favours A).
        level: the interval's coverage.
        n_boot: bootstrap replicates.
        seed: the bootstrap's own random seed (same inputs, same interval).

    Raises:
        ValueError: on empty inputs or on seeds/prompts that do not line up.
    """
    n_seeds, n_prompts = _shape(a, b)
    sign = 1.0 if higher_is_better else -1.0

    def difference(seeds: np.ndarray, prompts: np.ndarray) -> float:
        per_seed = [
            statistic([a[s][p] for p in prompts]) - statistic([b[s][p] for p in prompts]) for s in seeds
        ]
        return sign * float(np.mean(per_seed))

    rng = np.random.default_rng(seed)
    replicates = np.array(
        [
            difference(rng.integers(n_seeds, size=n_seeds), rng.integers(n_prompts, size=n_prompts))
            for _ in range(n_boot)
        ]
    )
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(replicates, [tail, 1.0 - tail])
    point = difference(np.arange(n_seeds), np.arange(n_prompts))
    return PairedInterval(point, float(low), float(high), level, n_boot)


def superiority_verdict(interval: PairedInterval) -> str:
    """ "A beats B": reproduced above 0, not reproduced below 0, else inconclusive (use a 95% interval)."""
    if interval.low > 0:
        return "reproduced"
    if interval.high < 0:
        return "not reproduced"
    return "inconclusive"


def equivalence_verdict(interval: PairedInterval, margin: float) -> str:
    """ "A matches B" within +-``margin`` (use a 90% interval: two one-sided tests at 5%).

    Raises:
        ValueError: if ``margin`` is not positive.
    """
    if not margin > 0:
        raise ValueError(f"margin must be positive, got {margin!r}")
    if -margin < interval.low and interval.high < margin:
        return "reproduced"
    if interval.low >= margin or interval.high <= -margin:
        return "not reproduced"
    return "inconclusive"


def equivalence_margin(reference_effect: float, fraction: float = 0.5) -> float:
    """The "matches" margin: ``fraction`` of a reference effect's size (e.g. SFT over the base model)."""
    return abs(reference_effect) * fraction


def _shape(a: Sequence[Sequence], b: Sequence[Sequence]) -> tuple[int, int]:
    if not a or len(a) != len(b):
        raise ValueError(f"need the same seeds for both methods, got {len(a)} and {len(b)}")
    n_prompts = {len(rows) for rows in (*a, *b)}
    if len(n_prompts) != 1 or 0 in n_prompts:
        raise ValueError(
            f"every seed of both methods must score the same prompts, got sizes {sorted(n_prompts)}"
        )
    return len(a), n_prompts.pop()
