"""Paired bootstrap intervals and the verdict rules of ebft_repro.experiments.paired."""

import numpy as np
import pytest

from ebft_repro.evaluation.metrics import bleu_from_statistics, bleu_statistics, corpus_bleu
from ebft_repro.experiments.paired import (
    PairedInterval,
    equivalence_margin,
    equivalence_verdict,
    paired_interval,
    superiority_verdict,
)


def _interval(low: float, high: float) -> PairedInterval:
    return PairedInterval((low + high) / 2, low, high, 0.9, 0)


def test_identical_methods_differ_by_exactly_zero():
    scores = [[0.0, 0.25, 1.0, 0.5], [0.5, 0.75, 1.0, 0.0]]
    interval = paired_interval(scores, scores, n_boot=200)
    assert (interval.difference, interval.low, interval.high) == (0.0, 0.0, 0.0)
    assert superiority_verdict(interval) == "inconclusive"
    assert equivalence_verdict(interval, margin=0.01) == "reproduced"


def test_pairing_removes_prompt_difficulty_from_the_noise():
    # 3 seeds x 128 prompts whose difficulty spans [0, 1]; A solves 0.05 more of every prompt than B.
    # Unpaired, the per-prompt spread (sd ~0.29) would swamp 0.05; paired, every prompt says +0.05.
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(0.0, 0.9, size=128)
    b = [list(difficulty + rng.normal(0, 0.01, size=128)) for _ in range(3)]
    a = [[value + 0.05 for value in row] for row in b]
    interval = paired_interval(a, b, n_boot=500)
    assert interval.difference == pytest.approx(0.05)
    assert 0.04 < interval.low <= interval.high < 0.06
    assert superiority_verdict(interval) == "reproduced"


def test_hand_computed_point_and_bounds():
    # One seed, two prompts: A = [1, 0], B = [0, 0]. The difference is 0.5; a resample of the prompts
    # gives 1 (prompt 0 twice), 0.5 (one of each) or 0 (prompt 1 twice), so the interval is inside [0, 1].
    interval = paired_interval([[1.0, 0.0]], [[0.0, 0.0]], n_boot=400, level=0.9)
    assert interval.difference == 0.5
    assert interval.low == 0.0 and interval.high == 1.0  # P(0) = P(1) = 1/4 > 5%


def test_lower_is_better_flips_the_orientation():
    losses_a, losses_b = [[1.0, 2.0, 3.0]], [[1.5, 2.5, 3.5]]
    interval = paired_interval(losses_a, losses_b, higher_is_better=False, n_boot=100)
    assert interval.difference == pytest.approx(0.5) and interval.low == pytest.approx(0.5)


def test_same_seed_same_interval_and_seed_matters():
    rng = np.random.default_rng(1)
    a = [list(rng.uniform(size=20)) for _ in range(3)]
    b = [list(rng.uniform(size=20)) for _ in range(3)]
    first, again = paired_interval(a, b, seed=3, n_boot=300), paired_interval(a, b, seed=3, n_boot=300)
    assert first == again
    assert paired_interval(a, b, seed=4, n_boot=300) != first


def test_inputs_must_line_up():
    with pytest.raises(ValueError, match="same seeds"):
        paired_interval([[1.0]], [[1.0], [0.0]])
    with pytest.raises(ValueError, match="same prompts"):
        paired_interval([[1.0, 0.0]], [[1.0]])
    with pytest.raises(ValueError, match="same seeds"):
        paired_interval([], [])


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (-0.01, 0.02, "reproduced"),  # inside (-0.03, 0.03)
        (0.05, 0.10, "not reproduced"),  # wholly above the margin: A is better by more than m
        (-0.09, -0.04, "not reproduced"),  # wholly below -m
        (-0.01, 0.05, "inconclusive"),  # straddles +m
        (0.03, 0.04, "not reproduced"),  # touching the margin counts as outside
    ],
)
def test_equivalence_verdict_against_an_absolute_margin(low, high, expected):
    assert equivalence_verdict(_interval(low, high), margin=0.03) == expected


def test_superiority_verdict():
    assert superiority_verdict(_interval(0.01, 0.2)) == "reproduced"
    assert superiority_verdict(_interval(-0.2, -0.01)) == "not reproduced"
    assert superiority_verdict(_interval(-0.01, 0.2)) == "inconclusive"


def test_margin_is_a_fraction_of_the_reference_effect_size():
    assert equivalence_margin(0.076) == pytest.approx(0.038)
    assert equivalence_margin(-0.2, fraction=0.25) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="positive"):
        equivalence_verdict(_interval(0.0, 0.0), margin=equivalence_margin(0.0))


def test_bleu_from_summed_sentence_statistics_is_sacrebleus_corpus_bleu():
    hyps = ["the cat sat on the mat", "a dog barked", "in the beginning was the word", "xyz"]
    refs = ["the cat is on the mat", "a big dog barked loudly", "in the beginning was the word", "abc"]
    rows = bleu_statistics(hyps, refs)
    assert len(rows) == 4 and all(len(row) == 10 for row in rows)
    assert bleu_from_statistics(rows) == pytest.approx(corpus_bleu(hyps, refs))
    assert bleu_from_statistics(rows[:2]) == pytest.approx(corpus_bleu(hyps[:2], refs[:2]))
    # and as the bootstrap's statistic: one seed, BLEU of A's sentences vs B's on the same references
    worse = bleu_statistics(["the", "dog", "in the", "xyz"], refs)
    interval = paired_interval([rows], [worse], bleu_from_statistics, n_boot=200)
    assert interval.difference == pytest.approx(corpus_bleu(hyps, refs) - bleu_from_statistics(worse))


def test_translation_records_give_each_directions_corpus_bleu():
    from ebft_repro.evaluation.downstream import translation_records, translation_scores
    from ebft_repro.tasks.base import Example

    pairs = [
        ("es-en", "the cat sat on the mat", "the cat is on the mat"),
        ("es-en", "a dog barked", "a big dog barked loudly"),
        ("en-es", "el gato está en la alfombra", "el gato está sobre la alfombra"),
        ("en-es", "hola mundo", "hola a todo el mundo"),
    ]
    examples = [
        Example(prompt="", completion=ref, direction=d, uid=str(i)) for i, (d, _, ref) in enumerate(pairs)
    ]
    samples = [hyp for _, hyp, _ in pairs]
    records, scores = translation_records(examples, samples), translation_scores(examples, samples)
    assert records["directions"] == [d for d, _, _ in pairs]
    for direction in ("es-en", "en-es"):
        rows = [row for row, d in zip(records["bleu_stats"], records["directions"]) if d == direction]
        assert bleu_from_statistics(rows) == pytest.approx(scores[f"bleu_{direction}"])
