"""Do two reproductions agree exactly? Compares every run that both folders hold, row by row.

    python scripts/compare_runs.py results/cpu /tmp/fresh_clone_results [--task qa_code]

Metrics rows (``metrics.jsonl``) must be identical, every number to the last bit; the wall-clock fields
of ``summary.json`` (``train_s``, ``eval_s``) are the only ones allowed to differ. Exit status 0 when every
shared run agrees, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ebft_repro.utils import read_json, read_jsonl

TIMING = ("train_s", "eval_s")


def compare(reference: Path, candidate: Path, task: str | None = None) -> tuple[list[str], list[str]]:
    """(names of runs that agree, messages for those that differ) over the runs both folders hold."""
    names = sorted(
        p.name
        for p in (candidate / "runs").iterdir()
        if (p / "summary.json").exists() and (reference / "runs" / p.name / "summary.json").exists()
    )
    if task:
        names = [n for n in names if n.startswith(f"{task}-")]
    same, differ = [], []
    for name in names:
        ref_rows = read_jsonl(reference / "runs" / name / "metrics.jsonl")
        new_rows = read_jsonl(candidate / "runs" / name / "metrics.jsonl")
        ref_sum = read_json(reference / "runs" / name / "summary.json")
        new_sum = read_json(candidate / "runs" / name / "summary.json")
        for key in TIMING:
            ref_sum.pop(key, None), new_sum.pop(key, None)
        if ref_rows != new_rows:
            first = (
                next(i for i, (a, b) in enumerate(zip(ref_rows, new_rows)) if a != b)
                if ref_rows and new_rows
                else 0
            )
            differ.append(
                f"{name}: metrics.jsonl differs from row {first} on ({len(ref_rows)} vs {len(new_rows)} rows)"
            )
        elif ref_sum != new_sum:
            keys = sorted(k for k in set(ref_sum) | set(new_sum) if ref_sum.get(k) != new_sum.get(k))
            differ.append(f"{name}: summary.json differs in {keys}")
        else:
            same.append(name)
    return same, differ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path)
    parser.add_argument("candidate", type=Path)
    parser.add_argument("--task", default=None)
    args = parser.parse_args()
    same, differ = compare(args.reference, args.candidate, args.task)
    for name in same:
        print(f"identical  {name}")
    for message in differ:
        print(f"DIFFERENT  {message}")
    print(f"{len(same)} identical, {len(differ)} different (of the runs both folders hold)")
    sys.exit(1 if differ or not same else 0)


if __name__ == "__main__":
    main()
