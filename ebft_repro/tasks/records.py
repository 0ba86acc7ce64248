"""Reading raw records of user datasets (local .json / .jsonl files or ``datasets`` hub names).

Nothing is dropped silently: every skipped record is logged with its index and reason and counted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InvalidRecord:
    """Placeholder yielded by :func:`iter_raw_records` for a record that could not be decoded."""

    reason: str
    detail: str


def iter_raw_records(path_or_name: str, split: str = "train") -> Iterator[tuple[int, Any]]:
    """Yield (record index, record) from a local .json/.jsonl file or a ``datasets`` hub name.

    A .json file holds a list of records, or a mapping from split name to such a list. Undecodable
    .jsonl lines are yielded as :class:`InvalidRecord`; blank lines are not records.
    """
    path = Path(path_or_name)
    if path.is_file() and path.suffix == ".jsonl":
        lines = (line for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
        for i, line in enumerate(lines):
            try:
                yield i, json.loads(line)
            except json.JSONDecodeError as err:
                yield i, InvalidRecord("invalid_json", str(err))
    elif path.is_file() and path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get(split), list):
            data = data[split]
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list of records or a {{split: list}} mapping")
        yield from enumerate(data)
    else:
        import datasets  # lazy: heavy

        yield from enumerate(datasets.load_dataset(path_or_name, split=split))


def record_skip(skips: dict[str, int], index: int, reason: str, source: str, detail: str = "") -> None:
    """Count a skipped record under ``reason`` and log a warning naming it."""
    skips[reason] = skips.get(reason, 0) + 1
    logger.warning("%s: record %d skipped (%s)%s", source, index, reason, f": {detail}" if detail else "")


def iter_mapping_records(
    path_or_name: str, split: str, max_records: int | None, skips: dict[str, int]
) -> Iterator[tuple[int, dict]]:
    """Yield (index, record) for the records that are mappings; count and log the others in ``skips``."""
    for i, rec in iter_raw_records(path_or_name, split):
        if max_records is not None and i >= max_records:
            break
        if isinstance(rec, InvalidRecord):
            record_skip(skips, i, rec.reason, path_or_name, rec.detail)
        elif not isinstance(rec, dict):
            record_skip(skips, i, "not_a_mapping", path_or_name, type(rec).__name__)
        else:
            yield i, rec
