"""Task data: Q&A coding, unstructured coding and translation, each as lists of :class:`Example`."""

from __future__ import annotations

import importlib

from ebft_repro.config import TASKS
from ebft_repro.tasks.base import Example

__all__ = ["TASKS", "Example", "build_splits"]


def build_splits(task: str, **kwargs) -> dict[str, list[Example]]:
    """Build the ``{"train", "validation", "test"}`` splits of ``task`` (kwargs go to its build_splits).

    Raises:
        ValueError: for an unknown task name.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; allowed values: {', '.join(TASKS)}")
    return importlib.import_module(f"ebft_repro.tasks.{task}").build_splits(**kwargs)
