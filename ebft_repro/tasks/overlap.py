"""Overlap between task splits: exact duplicates, near-duplicates after renaming, shared line shingles.

Pure functions on text, used by ``scripts/data_overlap.py`` (the table in docs/data.md) and by the
raw-code split filter (:func:`ebft_repro.tasks.code.build_splits`). Three measures:

- *exact*: the same string in both collections;
- *similarity after renaming* (Q&A answers, translation sentences): items become token sequences
  (:func:`code_tokens` renames identifiers to placeholders, :func:`word_tokens` lower-cases words) and two
  sequences are compared with ``difflib.SequenceMatcher(autojunk=False).ratio()``, i.e. 2M / (|a| + |b|)
  with M the tokens in matching blocks; 1.0 means identical token sequences;
- *line-shingle share* (raw code): the fraction of a file's 8-line shingles (runs of 8 consecutive
  non-blank lines, each whitespace-normalised) that also occur in one reference file, maximised over the
  references.
"""

from __future__ import annotations

import builtins
import difflib
import io
import keyword
import re
import tokenize
from collections import Counter, defaultdict
from collections.abc import Sequence

SHINGLE_LINES = 8
"""Lines per shingle of the raw-code measure."""

_KEPT_NAMES = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(dir(builtins))
_LAYOUT = {tokenize.NEWLINE: "<NEWLINE>", tokenize.INDENT: "<INDENT>", tokenize.DEDENT: "<DEDENT>"}
_SKIPPED = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}

Tokens = Sequence[str]
Item = tuple[Tokens, ...]
"""What :func:`max_similarity` compares: one token sequence (an answer) or several (a sentence pair)."""


def code_tokens(source: str) -> list[str]:
    """Python tokens of ``source`` with identifiers renamed to ``v0, v1, ...`` in order of first use.

    Keywords, builtins (``len``, ``sorted``) and attribute names (after ``.``) are kept: they are what
    the code does, not what its author named things. Literals are kept; comments and blank lines are
    dropped; NEWLINE/INDENT/DEDENT become ``<NEWLINE>``/``<INDENT>``/``<DEDENT>``. A source that stops
    tokenizing (a file truncated inside a string) keeps the tokens read so far.
    """
    names: dict[str, str] = {}
    tokens: list[str] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in _SKIPPED:
                continue
            if tok.type == tokenize.NAME and tok.string not in _KEPT_NAMES and tokens[-1:] != ["."]:
                tokens.append(names.setdefault(tok.string, f"v{len(names)}"))
            else:
                tokens.append(_LAYOUT.get(tok.type, tok.string))
    except (tokenize.TokenError, SyntaxError):
        pass
    return tokens


def word_tokens(text: str) -> list[str]:
    """Lower-cased word tokens (``\\w+``) of a sentence: punctuation, case and spacing are ignored."""
    return re.findall(r"\w+", text.lower())


def similarity(a: Tokens, b: Tokens) -> float:
    """difflib's ratio 2M / (|a| + |b|) of two token sequences (1.0 for two empty ones)."""
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def max_similarity(queries: Sequence[Item], references: Sequence[Item]) -> list[tuple[float, int]]:
    """For each query, its highest similarity to any reference and that reference's index.

    The similarity of two items is the minimum of :func:`similarity` over their fields (a sentence pair
    is as similar as its less similar side). Ties go to the lowest index; with no references the answer
    is ``(0.0, -1)``. Duplicate references are compared once, and difflib's cheap upper bounds skip
    references that cannot beat the best so far.
    """
    unique: dict[tuple, int] = {}
    for index, ref in enumerate(references):
        unique.setdefault(tuple(tuple(field) for field in ref), index)
    results = []
    for query in queries:
        matchers = []
        for field in query:
            matcher = difflib.SequenceMatcher(None, autojunk=False)
            matcher.set_seq2(field)  # difflib caches the analysis of seq2
            matchers.append(matcher)
        best, best_index = 0.0, -1
        for ref, index in unique.items():
            score = _bounded_min_ratio(matchers, ref, best)
            if score is not None and (score > best or best_index < 0):
                best, best_index = score, index
        results.append((best, best_index))
    return results


def _bounded_min_ratio(matchers: list[difflib.SequenceMatcher], ref: tuple, best: float) -> float | None:
    """min over fields of the ratio, or None as soon as a field cannot exceed ``best``."""
    for matcher, field in zip(matchers, ref, strict=True):
        matcher.set_seq1(field)
    if best > 0 and any(m.real_quick_ratio() <= best or m.quick_ratio() <= best for m in matchers):
        return None
    return min(m.ratio() for m in matchers)


def line_shingles(text: str, n_lines: int = SHINGLE_LINES) -> set[tuple[str, ...]]:
    """Runs of ``n_lines`` consecutive non-blank lines, each with whitespace collapsed to one space.

    A text with fewer non-blank lines is one shingle (all of them); a blank text has none.
    """
    lines = [" ".join(line.split()) for line in text.splitlines()]
    lines = [line for line in lines if line]
    if len(lines) < n_lines:
        return {tuple(lines)} if lines else set()
    return {tuple(lines[i : i + n_lines]) for i in range(len(lines) - n_lines + 1)}


def max_shingle_share(
    queries: Sequence[str], references: Sequence[str], n_lines: int = SHINGLE_LINES
) -> list[tuple[float, int]]:
    """For each query text, the largest share of its shingles found in one reference, and that reference.

    share(q, r) = |S(q) ∩ S(r)| / |S(q)| with S = :func:`line_shingles`; it is asymmetric (a small file
    copied into a large one has share 1.0). Ties go to the lowest index; a query without shingles, or no
    reference sharing any, gives ``(0.0, -1)``.
    """
    holders: dict[tuple[str, ...], set[int]] = defaultdict(set)
    for index, ref in enumerate(references):
        for shingle in line_shingles(ref, n_lines):
            holders[shingle].add(index)
    results = []
    for query in queries:
        shingles = line_shingles(query, n_lines)
        shared = Counter(index for shingle in shingles for index in holders.get(shingle, ()))
        if not shared:
            results.append((0.0, -1))
            continue
        index, count = min(shared.items(), key=lambda item: (-item[1], item[0]))
        results.append((count / len(shingles), index))
    return results


def exact_duplicates(queries: Sequence[str], references: Sequence[str]) -> list[int]:
    """Indices of the queries that occur verbatim among the references."""
    seen = set(references)
    return [i for i, query in enumerate(queries) if query in seen]
