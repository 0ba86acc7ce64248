"""The record every task produces, and the prompt templates shared by tasks and evaluation.

A task is plain text: tokenization and packing live in :mod:`ebft_repro.data`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

QA_PROMPT_TEMPLATE = "### Question\n{question}\n### Answer\n"
"""Prompt of a Q&A coding example; the reference completion is the function source plus a newline."""

QA_STOP_MARKER = "\n###"
"""Where a generated coding answer ends (besides EOS): the start of a new section."""

TRANSLATION_PROMPT_TEMPLATE = "Translate {src_lang} to {tgt_lang}:\n{source}\n{tgt_lang}:"
"""Prompt of a translation example; the completion is ``" " + target``."""

LANG_NAMES = {"es": "Spanish", "en": "English"}


@dataclass(frozen=True)
class Example:
    """One task example, as text.

    Attributes:
        prompt: what the model is conditioned on (question or translation prompt; "" for raw code).
        completion: the reference continuation (answer, target sentence or raw file text).
        unit_tests: for coding, one Python ``assert`` statement per test; empty otherwise.
        entry_point: for coding, the function the tests call.
        direction: for translation, e.g. ``"es-en"``; None otherwise.
        source: for translation, the untemplated source sentence; the reference is ``completion``.
        uid: a stable identifier of the record (used in logs, skips and leakage checks).
    """

    prompt: str
    completion: str
    unit_tests: tuple[str, ...] = ()
    entry_point: str | None = None
    direction: str | None = None
    source: str | None = None
    uid: str = ""
    meta: dict = field(default_factory=dict, compare=False, hash=False)
