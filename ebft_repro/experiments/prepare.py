"""``ebft-repro prepare``: build the task datasets (and the base model), report counts, verify references."""

from __future__ import annotations

import time

from ebft_repro.config import get_preset
from ebft_repro.data import load_task, packed_split


def verify_references(examples) -> dict:
    """Run every coding reference solution against its own unit tests in the sandbox."""
    from ebft_repro.evaluation.downstream import sandbox_program
    from ebft_repro.evaluation.sandbox import run_unit_tests_batch

    started = time.time()
    programs = [sandbox_program(ex, ex.completion) for ex in examples]
    verdicts = run_unit_tests_batch(programs)
    failed = [ex.uid for ex, verdict in zip(examples, verdicts) if not verdict.passed]
    seconds = time.time() - started
    return {
        "n_programs": len(programs),
        "n_failed": len(failed),
        "failed_uids": failed[:20],
        "programs_per_s": round(len(programs) / max(seconds, 1e-9), 1),
    }


def prepare(tasks: list[str], preset: str, *, build_model: bool = True, verify: str = "eval") -> dict:
    """Build each task's splits (and the preset's base model); return per-split counts.

    ``verify`` runs Q&A coding reference solutions through the sandbox: ``"eval"`` (validation and test,
    the default), ``"all"`` (every split) or ``"none"``.

    Raises:
        RuntimeError: if ``verify`` finds a reference solution that fails its own tests.
    """
    report: dict = {}
    tokenizer = None
    if build_model:
        from ebft_repro.models import load_tokenizer, resolve_model_path

        cfg = get_preset(preset, tasks[0], "ebft")
        path = resolve_model_path(cfg.model, cfg)
        tokenizer = load_tokenizer(path)
        report["base_model"] = path
    for task in tasks:
        cfg = get_preset(preset, task, "ebft")
        data = load_task(task, cfg.data)
        entry = {split: len(data.split(split)) for split in ("train", "validation", "test")}
        if tokenizer is not None:
            entry["train_chunks"] = len(packed_split(task, cfg.data, "train", tokenizer))
            entry["validation_chunks"] = len(packed_split(task, cfg.data, "validation", tokenizer))
        if task == "qa_code" and verify != "none":
            checked = (
                data.train + data.validation + data.test if verify == "all" else data.validation + data.test
            )
            entry["reference_check"] = verify_references(checked)
            if entry["reference_check"]["n_failed"]:
                raise RuntimeError(
                    f"{task}: reference solutions failed their tests: {entry['reference_check']}"
                )
        report[task] = entry
    return report
