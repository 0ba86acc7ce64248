"""Unstructured coding task: raw Python source files (embedded default: the CPython standard library).

Each Example is one file: ``prompt`` is "", ``completion`` the file text (optionally truncated at a line
boundary), ``uid`` the path relative to the stdlib root. Test folders (any path component starting with
``test``, and ``idlelib/idle_test``), ``site-packages``/``dist-packages``, empty and non-UTF-8 files are
excluded. Files are assigned to train/pretrain/validation/test (45/45/5/5) by a sha256 hash of their
relative path, so the assignment is the same on every machine with the same Python version; ``pretrain``
files feed the built-in base model's corpus, ``train`` files the fine-tuning. Validation and test files
that near-duplicate a train or pretrain file (more than ``MAX_SHINGLE_SHARE`` of their 8-line shingles in
one such file, :func:`ebft_repro.tasks.overlap.max_shingle_share`) are dropped.

Downstream accuracy for this task is not measured on these files: as in the paper (which scores
HumanEval after training on raw code), the evaluation code measures unit-test pass rate on the Q&A coding
test set (:mod:`ebft_repro.tasks.qa_code`); this module only supplies the training/CE text.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import random
import sysconfig
from pathlib import Path

from ebft_repro.tasks import overlap
from ebft_repro.tasks.base import Example
from ebft_repro.tasks.records import iter_mapping_records, record_skip

logger = logging.getLogger(__name__)

SPLIT_FRACTIONS = {"train": 0.45, "pretrain": 0.45, "validation": 0.05, "test": 0.05}
_EXCLUDED_DIRS = {"site-packages", "dist-packages", "__pycache__", "idle_test"}
MAX_SHINGLE_SHARE = 0.5
"""Validation/test files sharing more than this share of their 8-line shingles with one train or pretrain
file are dropped. At Python 3.11 (4,000-character files) the shares fall in two groups, <= 0.33 and >= 0.73
(docs/data.md), so any threshold between them drops the same files."""


def split_of(rel_path: str) -> str:
    """The split of a file, from a sha256 hash of its relative path (buckets in SPLIT_FRACTIONS order)."""
    bucket = int(hashlib.sha256(rel_path.encode()).hexdigest()[:8], 16) / 16**8
    edge = 0.0
    for name, fraction in SPLIT_FRACTIONS.items():
        edge += fraction
        if bucket < edge:
            return name
    return "test"


def is_excluded(rel_path: str) -> bool:
    """True for test folders/files, installed packages and caches."""
    parts = Path(rel_path).parts
    return any(p.startswith("test") or p in _EXCLUDED_DIRS for p in parts)


def truncate_at_line(text: str, max_chars: int | None) -> str:
    """Cut ``text`` to at most ``max_chars`` characters, at the last line boundary if there is one."""
    if max_chars is None or len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    newline = cut.rfind("\n")
    return cut[: newline + 1] if newline >= 0 else cut


def stdlib_files(stdlib_dir: str | Path | None = None) -> list[tuple[str, str]]:
    """Return sorted (relative path, text) of the usable stdlib ``.py`` files (cached per directory)."""
    return list(_read_sources(str(stdlib_dir or sysconfig.get_paths()["stdlib"])))


@functools.lru_cache(maxsize=2)
def _read_sources(root_dir: str) -> tuple[tuple[str, str], ...]:
    root = Path(root_dir)
    files, non_utf8, empty = [], 0, 0
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if is_excluded(rel) or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            non_utf8 += 1
            continue
        if not text.strip():
            empty += 1
            continue
        files.append((rel, text))
    logger.info("%s: %d source files (%d non-UTF-8, %d empty skipped)", root, len(files), non_utf8, empty)
    return tuple(files)


def build_splits(
    max_files_per_split: dict[str, int] | None = None,
    max_chars_per_file: int | None = None,
    seed: int = 0,
    stdlib_dir: str | Path | None = None,
    max_shingle_share: float | None = MAX_SHINGLE_SHARE,
) -> dict[str, list[Example]]:
    """Train/validation/test Examples of stdlib source files, disjoint by path.

    Near-duplicates are dropped from validation and test before any cap, by comparing the (truncated)
    files with every train and pretrain file, so the evaluation splits do not depend on the caps.

    Args:
        max_files_per_split: optional cap per split name (e.g. ``{"train": 200}``); a capped split is a
            seeded random subset, kept in path order.
        max_chars_per_file: truncate each file at a line boundary to at most this many characters.
        seed: seed of the subsampling.
        stdlib_dir: source root; default ``sysconfig.get_paths()["stdlib"]``.
        max_shingle_share: drop validation and test files with more than this share of their 8-line
            shingles in one train or pretrain file (:func:`near_duplicates`); None keeps them all.

    Returns:
        ``{"train": [...], "pretrain": [...], "validation": [...], "test": [...]}``, each sorted by path.
    """
    splits: dict[str, list[Example]] = {name: [] for name in SPLIT_FRACTIONS}
    for rel, text in stdlib_files(stdlib_dir):
        completion = truncate_at_line(text, max_chars_per_file)
        splits[split_of(rel)].append(Example(prompt="", completion=completion, uid=rel))
    if max_shingle_share is not None:
        training = splits["train"] + splits["pretrain"]
        for name in ("validation", "test"):
            dropped = set(near_duplicates(splits[name], training, max_shingle_share))
            logger.info("code %s: dropped %d near-duplicates %s", name, len(dropped), sorted(dropped))
            splits[name] = [ex for ex in splits[name] if ex.uid not in dropped]
    for name, examples in splits.items():
        cap = (max_files_per_split or {}).get(name)
        if cap is not None and cap < len(examples):
            keep = set(random.Random(f"{seed}-{name}").sample(range(len(examples)), cap))
            splits[name] = [ex for i, ex in enumerate(examples) if i in keep]
    return splits


def near_duplicates(
    examples: list[Example], training: list[Example], max_share: float = MAX_SHINGLE_SHARE
) -> list[str]:
    """uids of the examples with more than ``max_share`` of their 8-line shingles in one training file."""
    shares = overlap.max_shingle_share([ex.completion for ex in examples], [ex.completion for ex in training])
    return [ex.uid for ex, (share, _) in zip(examples, shares) if share > max_share]


def pretraining_documents(train_examples: list[Example]) -> list[str]:
    """Text documents (prompt + completion) used to pretrain the base LM on this task's train split."""
    return [ex.prompt + ex.completion for ex in train_examples]


def load_text_records(
    path_or_name: str, split: str = "train", text_field: str = "text", max_records: int | None = None
) -> tuple[list[Example], dict[str, int]]:
    """Load raw-text records (a ``text_field`` string each) from a .json/.jsonl file or ``datasets`` name.

    Bad records (not a mapping, missing, non-string or blank text) are skipped with a logged warning
    naming the record index and reason.

    Args:
        path_or_name: local file path or hub dataset name (e.g. a SwallowCode-style corpus).
        split: the split to read.
        text_field: the field holding the text.
        max_records: read at most the first this many raw records (None: all).

    Returns:
        (examples with prompt "" and the text as completion, skip counts by reason).
    """
    examples: list[Example] = []
    skips: dict[str, int] = {}
    for i, rec in iter_mapping_records(path_or_name, split, max_records, skips):
        if text_field not in rec:
            record_skip(skips, i, f"missing_{text_field}", path_or_name, f"fields {sorted(rec)}")
        elif not isinstance(rec[text_field], str):
            record_skip(skips, i, f"non_string_{text_field}", path_or_name, type(rec[text_field]).__name__)
        elif not rec[text_field].strip():
            record_skip(skips, i, f"empty_{text_field}", path_or_name)
        else:
            examples.append(Example(prompt="", completion=rec[text_field], uid=f"text-{split}-{i}"))
    return examples, skips
