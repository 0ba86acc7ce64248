"""Metric tests against values computed by hand (the arithmetic is written out in the comments)."""

import math

import pytest

from ebft_repro.evaluation.metrics import (
    clean_translation,
    corpus_bleu,
    corpus_chrf,
    extract_code,
    mean_pass_at_k,
    pass_at_k,
    sentence_chrf,
)

# --- pass@k ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 1, 0.4),  # 1 - C(3,1)/C(5,1) = 1 - 3/5
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5) = 1 - 21/252 = 0.91666...
        (4, 0, 1, 0.0),  # no correct sample
        (4, 0, 4, 0.0),
        (4, 4, 1, 1.0),  # every sample correct
        (5, 3, 3, 1.0),  # n - c = 2 < k = 3: every 3-subset holds a correct sample
        (1, 1, 1, 1.0),
    ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_is_stable_for_large_n():
    # 1 - C(190, 10)/C(200, 10) = 1 - prod_{i=191}^{200} (1 - 10/i); the closed form needs ~1e16-sized ints
    expected = 1 - math.comb(190, 10) / math.comb(200, 10)
    assert pass_at_k(200, 10, 10) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_pass_at_k_rejects_invalid_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_mean_pass_at_k():
    # pass@1 with n=5 is c/5: (2/5 + 0/5 + 5/5) / 3 = 1.4 / 3
    assert mean_pass_at_k([2, 0, 5], n=5, k=1) == pytest.approx(1.4 / 3)
    # pass@2: (0.7 + 0 + 1) / 3
    assert mean_pass_at_k([2, 0, 5], n=5, k=2) == pytest.approx(1.7 / 3)
    with pytest.raises(ValueError):
        mean_pass_at_k([], n=5, k=1)


# --- extract_code ------------------------------------------------------------------------------------


def test_extract_code_from_fenced_block():
    completion = "Here is the code:\n```python\ndef f(x):\n    return x + 1\n```\nIt adds one.\n"
    assert extract_code(completion) == "def f(x):\n    return x + 1"
    assert extract_code("```\ndef g():\n    pass\n```") == "def g():\n    pass"


def test_extract_code_with_only_a_closing_fence():
    # the prompt opened the fence, so the completion is code followed by a bare closing fence
    assert extract_code("def f():\n    return 2\n```\ntrailing prose") == "def f():\n    return 2"


def test_extract_code_cuts_at_stop_marker_and_endoftext():
    completion = "def f(x):\n    return x\n### Question\nWrite g\n### Answer\ndef g(): pass"
    assert extract_code(completion) == "def f(x):\n    return x"
    assert extract_code("def f():\n    return 1\n<|endoftext|>def junk(): pass") == "def f():\n    return 1"
    assert extract_code("def f():\n    return 1\nEND more", stop_marker="\nEND") == "def f():\n    return 1"


def test_extract_code_keeps_indentation_and_strips_trailing_whitespace():
    # a HumanEval-style body completion must keep its leading indentation
    assert extract_code("\n    return a + b   \n\n  ") == "    return a + b"
    assert extract_code("def f():\n\n    x = 1\n\n    return x\n") == "def f():\n\n    x = 1\n\n    return x"


# --- clean_translation -------------------------------------------------------------------------------


def test_clean_translation_strips_prefixes_and_takes_first_line():
    assert clean_translation(" Hola mundo.\nEnglish: Hello world.", "Spanish") == "Hola mundo."
    assert clean_translation("Translation: Hola mundo.\nMore", "Spanish") == "Hola mundo."
    assert clean_translation("Spanish: Hola.", "Spanish") == "Hola."
    assert clean_translation("Translation: Spanish:  Hola.  ", "Spanish") == "Hola."
    assert clean_translation("\n\n  Spanish:\n  Hola mundo  \nsecond line", "Spanish") == "Hola mundo"
    assert clean_translation("English: The house.", "English") == "The house."
    assert clean_translation("  \n Translation: \n", "Spanish") == ""


# --- BLEU / chrF -------------------------------------------------------------------------------------


def test_bleu_identical_and_disjoint():
    assert corpus_bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    assert corpus_bleu(["alpha beta gamma delta"], ["one two three four"]) == pytest.approx(0.0)


def test_bleu_hand_computed_precisions():
    # hyp "the cat sat on the mat" vs ref "the cat sat on a mat" (6 tokens each, so BP = 1)
    # 1-grams: the(clipped to 1), cat, sat, on, mat       -> 5/6
    # 2-grams: "the cat", "cat sat", "sat on"             -> 3/5
    # 3-grams: "the cat sat", "cat sat on"                -> 2/4
    # 4-grams: "the cat sat on"                           -> 1/3
    # BLEU = 100 * (5/6 * 3/5 * 2/4 * 1/3) ** (1/4) = 100 * (1/12) ** 0.25 = 53.7285
    score = corpus_bleu(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert score == pytest.approx(100 * (1 / 12) ** 0.25, abs=1e-3)
    assert score == pytest.approx(53.7285, abs=1e-3)


def test_bleu_hand_computed_brevity_penalty():
    # hyp "the cat sat on the" (5 tokens) vs ref "the cat sat on the mat" (6 tokens): all n-gram precisions
    # are 1 (5/5, 4/4, 3/3, 2/2), so BLEU = BP = exp(1 - 6/5) = exp(-0.2) = 0.818731 -> 81.8731
    score = corpus_bleu(["the cat sat on the"], ["the cat sat on the mat"])
    assert score == pytest.approx(100 * math.exp(-0.2), abs=1e-3)


def test_bleu_is_corpus_level_not_mean_of_sentences():
    # counts are pooled: sentence 1 is identical (6 tokens), sentence 2 is "the cat sat on the" vs
    # "the cat sat on the mat"; pooled precisions 11/11, 9/9, 7/7, 5/5, BP = exp(1 - 12/11)
    score = corpus_bleu(
        ["the cat sat on the mat", "the cat sat on the"], ["the cat sat on the mat", "the cat sat on the mat"]
    )
    assert score == pytest.approx(100 * math.exp(1 - 12 / 11), abs=1e-3)


def test_bleu_and_chrf_validate_inputs():
    with pytest.raises(ValueError):
        corpus_bleu(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        corpus_chrf([], [])


def test_chrf_identical_disjoint_and_partial():
    assert corpus_chrf(["Hola mundo"], ["Hola mundo"]) == pytest.approx(100.0)
    assert corpus_chrf(["xyz"], ["abc"]) == pytest.approx(0.0)
    assert sentence_chrf("Hola mundo", "Hola mundo") == pytest.approx(1.0)
    assert sentence_chrf("qqq", "abc") == pytest.approx(0.0)
    partial = sentence_chrf("Hola mundo cruel", "Hola mundo")
    assert 0.0 < partial < 1.0


def test_sentence_chrf_hand_computed_small_case():
    # "ab" vs "abc" (chrF: character n-grams of orders 1..6, beta = 2, whitespace ignored).
    # sacrebleu averages precision and recall over the orders with n-grams on both sides (effective order):
    #   order 1: hyp {a, b}, ref {a, b, c}, 2 matches -> P = 2/2, R = 2/3
    #   order 2: hyp {ab},   ref {ab, bc},  1 match   -> P = 1/1, R = 1/2
    #   order 3: no hypothesis 3-grams; orders 4-6: none on either side -> not averaged
    # P = (1 + 1) / 2 = 1, R = (2/3 + 1/2) / 2 = 7/12
    # chrF = (1 + 4) P R / (4 P + R) = (35/12) / (4 + 7/12) = 35/55 = 7/11 = 0.636364
    assert sentence_chrf("ab", "abc") == pytest.approx(7 / 11, abs=1e-9)
