"""Pure evaluation metrics: pass@k, code/translation post-processing, BLEU/chrF and token cross-entropy.

``sacrebleu`` and ``torch`` are imported inside the functions that need them, so importing this module is
cheap and the text metrics work without torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

ENDOFTEXT = "<|endoftext|>"


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator of Chen et al. (2021): ``1 - C(n - c, k) / C(n, k)``.

    Uses the product form ``1 - prod_{i = n - c + 1}^{n} (1 - k / i)``, which avoids the huge binomial
    coefficients of the closed form.

    Args:
        n: samples drawn for the problem.
        c: samples that passed all tests.
        k: the k of pass@k.

    Returns:
        The probability that at least one of k samples drawn without replacement from the n is correct.

    Raises:
        ValueError: unless ``0 <= c <= n`` and ``1 <= k <= n``.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0  # every k-subset contains a correct sample
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def mean_pass_at_k(correct_counts: Sequence[int], n: int, k: int) -> float:
    """Mean of :func:`pass_at_k` over problems that each drew ``n`` samples.

    Args:
        correct_counts: number of correct samples per problem.
        n: samples per problem.
        k: the k of pass@k.

    Raises:
        ValueError: if ``correct_counts`` is empty or any count is out of range.
    """
    if len(correct_counts) == 0:
        raise ValueError("correct_counts is empty")
    return sum(pass_at_k(n, c, k) for c in correct_counts) / len(correct_counts)


def extract_code(completion: str, stop_marker: str = "\n###") -> str:
    """The code in a generated answer.

    Cuts at the first ``stop_marker`` and at ``<|endoftext|>``, keeps only the body of a Markdown code
    fence (```` ``` ```` or ```` ```python ````) if there is one, drops leading blank lines and trailing
    whitespace, and keeps the indentation of every line (completions may be indented function bodies).

    Args:
        completion: the generated text.
        stop_marker: where a new prompt section starts; ignored if empty.

    Returns:
        The extracted code ("" if nothing is left).
    """
    text = completion
    for marker in (stop_marker, ENDOFTEXT):
        if marker and marker in text:
            text = text[: text.index(marker)]
    lines = text.split("\n")
    fences = [i for i, line in enumerate(lines) if line.strip().startswith("```")]
    if fences:
        first = fences[0]
        bare = lines[first].strip() == "```"
        if bare and any(line.strip() for line in lines[:first]):
            # a bare fence after code closes a block the prompt opened
            lines = lines[:first]
        else:
            end = fences[1] if len(fences) > 1 else len(lines)
            lines = lines[first + 1 : end]
    while lines and not lines[0].strip():
        lines.pop(0)
    return "\n".join(lines).rstrip()


def clean_translation(text: str, tgt_lang_name: str) -> str:
    """The translation in a generated answer: the first line that is non-empty after removing prefixes.

    Leading ``"Translation:"`` and ``"<tgt_lang_name>:"`` prefixes (case-insensitive, possibly repeated)
    and surrounding whitespace are removed from each line; a line that is only a prefix is skipped.

    Args:
        text: the generated text.
        tgt_lang_name: the target language's name as used in the prompt, e.g. ``"Spanish"``.

    Returns:
        The cleaned translation ("" if there is none).
    """
    prefixes = [p.lower() for p in ("Translation:", f"{tgt_lang_name}:") if p != ":"]
    for line in text.splitlines():
        line = line.strip()
        stripped = True
        while stripped:
            stripped = False
            for prefix in prefixes:
                if line.lower().startswith(prefix):
                    line = line[len(prefix) :].strip()
                    stripped = True
        if line:
            return line
    return ""


def _check_pairs(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if len(hypotheses) == 0:
        raise ValueError("no hypotheses")


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu defaults, ``13a`` tokenization, one reference per sentence), 0-100.

    Raises:
        ValueError: if the inputs are empty or have different lengths.
    """
    import sacrebleu

    _check_pairs(hypotheses, references)
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize="13a").score)


def bleu_statistics(hypotheses: Sequence[str], references: Sequence[str]) -> list[list[int]]:
    """Per sentence, BLEU's sufficient statistics ``[hyp_len, ref_len, match_1..4, total_1..4]``.

    Corpus BLEU is a function of their sums (:func:`bleu_from_statistics`), so a bootstrap can resample
    sentences without re-tokenizing. Same tokenization as :func:`corpus_bleu`.

    Raises:
        ValueError: if the inputs are empty or have different lengths.
    """
    from sacrebleu.metrics import BLEU

    _check_pairs(hypotheses, references)
    rows = BLEU(tokenize="13a")._extract_corpus_statistics(list(hypotheses), [list(references)])
    return [[int(value) for value in row] for row in rows]


def bleu_from_statistics(rows: Sequence[Sequence[int]]) -> float:
    """Corpus BLEU (0-100) of the sentences whose :func:`bleu_statistics` are ``rows`` (summed)."""
    from sacrebleu.metrics import BLEU

    totals = [sum(column) for column in zip(*rows)]
    score = BLEU.compute_bleu(totals[2:6], totals[6:10], totals[0], totals[1], smooth_method="exp")
    return float(score.score)


def corpus_chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (sacrebleu defaults: character 6-grams, beta 2), 0-100.

    Raises:
        ValueError: if the inputs are empty or have different lengths.
    """
    import sacrebleu

    _check_pairs(hypotheses, references)
    return float(sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score)


def sentence_chrf(hypothesis: str, reference: str) -> float:
    """Sentence chrF in [0, 1] (sacrebleu's 0-100 score divided by 100); the translation RLVR reward."""
    import sacrebleu

    return float(sacrebleu.sentence_chrf(hypothesis, [reference]).score) / 100.0
