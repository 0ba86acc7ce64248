"""How much do the splits of the three tasks overlap? Prints the Markdown tables of docs/data.md.

    python scripts/data_overlap.py --preset cpu

For every task of the preset's data config, each evaluation split (validation, test) is compared with the
fine-tuning split (train), with the built-in base model's pretraining text of that task (the documents of
``pretrain.pretraining_corpus``) and, for test, with validation (measures: ``ebft_repro.tasks.overlap``):

- Q&A coding: exact = the same prompt and answer; sim = difflib ratio of the answers' Python tokens with
  identifiers renamed to placeholders, against the most similar reference answer;
- unstructured code: exact = the same file text; sim = the largest share of the file's 8-line shingles
  found in one reference file;
- translation: one row per verse (its es-en example; the en-es one is in the same split); exact = the
  same Spanish and English sentences; sim = the smaller of the two sides' word-level difflib ratios.

A second table counts the raw-code validation and test files that ``tasks.code.build_splits`` drops as
near-duplicates of a train or pretrain file, at the ``cpu`` and ``tiny`` presets.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

from ebft_repro import tasks
from ebft_repro.config import BaseModelConfig, DataConfig, get_preset
from ebft_repro.data import load_task
from ebft_repro.pretrain import pretraining_corpus, pretraining_sources
from ebft_repro.tasks import code, overlap
from ebft_repro.tasks.base import Example

NEAR = {"qa_code": 0.9, "code": code.MAX_SHINGLE_SHARE, "translation": 0.8}
"""Similarity above which the table counts a near-duplicate."""
PAIRS = (("validation", "train"), ("validation", "pretrain"), ("test", "train"), ("test", "pretrain"))
PAIRS += (("test", "validation"),)


def pretraining_splits(base: BaseModelConfig, data: DataConfig) -> dict[str, list[Example]]:
    """Each task's documents in the base model's corpus, as Examples.

    ``pretrain.pretraining_sources`` (what ``pretraining_corpus`` draws from), checked against that
    corpus, so the rows measure exactly what the base model was pretrained on.
    """
    sources = pretraining_sources(base, data)
    corpus = pretraining_corpus(base, data)
    documents = set(corpus)
    kept = {
        task: [ex for ex in examples if ex.prompt + ex.completion in documents]
        for task, examples in sources.items()
    }
    if sum(map(len, kept.values())) != len(corpus):
        raise RuntimeError("the pretraining corpus holds documents this script does not rebuild")
    return kept


def _measure(task: str) -> tuple[Callable[[Example], str], Callable]:
    """(the text that counts as an exact duplicate, the similarity of queries against references)."""
    if task == "qa_code":
        return (
            lambda ex: ex.prompt + ex.completion,
            lambda queries, refs: overlap.max_similarity(
                [(overlap.code_tokens(ex.completion),) for ex in queries],
                [(overlap.code_tokens(ex.completion),) for ex in refs],
            ),
        )
    if task == "code":
        return (
            lambda ex: ex.completion,
            lambda queries, refs: overlap.max_shingle_share(
                [ex.completion for ex in queries], [ex.completion for ex in refs]
            ),
        )

    def pair(ex: Example) -> tuple[list[str], list[str]]:
        return overlap.word_tokens(ex.source or ""), overlap.word_tokens(ex.completion)

    return (
        lambda ex: f"{ex.source}\n{ex.completion.strip()}",
        lambda queries, refs: overlap.max_similarity(list(map(pair, queries)), list(map(pair, refs))),
    )


def overlap_rows(task: str, splits: dict[str, list[Example]]) -> list[str]:
    """Markdown rows of one task: one per (split, compared-with) pair of PAIRS."""
    if task == "translation":  # one row per verse: its en-es example is in the same split
        splits = {name: [ex for ex in exs if ex.direction == "es-en"] for name, exs in splits.items()}
    exact_text, similarities = _measure(task)
    rows = []
    for name, against in PAIRS:
        queries, refs = splits[name], splits[against]
        n_exact = len(overlap.exact_duplicates(list(map(exact_text, queries)), list(map(exact_text, refs))))
        scores = [score for score, _ in similarities(queries, refs)]
        n_one = sum(score == 1.0 for score in scores)
        n_near = sum(score > NEAR[task] for score in scores)
        median, top = statistics.median(scores), max(scores)
        rows.append(
            f"| {task} | {name} | {against} | {len(queries)} | {n_exact} | {n_one} | {n_near} "
            f"| {median:.3f} | {top:.3f} |"
        )
    return rows


def overlap_table(preset: str) -> str:
    """The overlap table of the preset's three tasks."""
    cfg = get_preset(preset, "qa_code", "ebft")
    pretraining = pretraining_splits(cfg.base, cfg.data)
    lines = [
        "| task | split | vs | n | exact | sim = 1 | sim > τ | median sim | max sim |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for task in tasks.TASKS:
        task_data = load_task(task, cfg.data)
        splits = {name: task_data.split(name) for name in ("train", "validation", "test")}
        lines += overlap_rows(task, splits | {"pretrain": pretraining[task]})
    lines.append("")
    lines.append("τ: " + ", ".join(f"{task} {value}" for task, value in NEAR.items()))
    return "\n".join(lines)


def filter_table(presets: tuple[str, ...] = ("cpu", "tiny")) -> str:
    """How many raw-code validation/test files the near-duplicate filter removes, per preset.

    A capped split is refilled from the files left, so "removed" lists the near-duplicates the unfiltered
    split held.
    """
    lines = [
        "| preset | split | files without filter | files with filter | near-duplicates removed |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for preset in presets:
        data = get_preset(preset, "code", "ebft").data
        kwargs = dict(
            max_files_per_split={"train": data.n_train, "validation": data.n_val, "test": data.n_test},
            max_chars_per_file=data.max_chars_per_file,
            seed=data.split_seed,
        )
        pool = code.build_splits(max_chars_per_file=data.max_chars_per_file, max_shingle_share=None)
        training = pool["train"] + pool["pretrain"]
        before = code.build_splits(max_shingle_share=None, **kwargs)
        after = code.build_splits(**kwargs)
        for name in ("validation", "test"):
            held = {ex.uid for ex in before[name]}
            removed = [uid for uid in code.near_duplicates(pool[name], training) if uid in held]
            lines.append(
                f"| {preset} | {name} | {len(before[name])} | {len(after[name])} "
                f"| {len(removed)}: {', '.join(removed)} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", help="preset whose data config is measured")
    args = parser.parse_args()
    print(f"## Overlap between splits ({args.preset} preset)\n")
    print(overlap_table(args.preset))
    print("\n## Raw-code files removed as near-duplicates\n")
    print(filter_table())


if __name__ == "__main__":
    main()
