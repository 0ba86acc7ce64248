"""How many programs per second does the sandbox verify, and how does that compare with an earlier commit?

Run as ``python -m ebft_repro.experiments.bench sandbox [--baseline-ref REF]``. The mix: every 20th
program loops forever (1 s timeout), the others alternate between a correct and a partly wrong solution
with three tests each. The verdicts are checked, so a broken sandbox cannot produce a number. With a
baseline, the code at ``REF`` is checked out into a temporary git worktree and measured in a subprocess,
alternating with this checkout round by round, so both see the same machine and the same load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4 and add(0, 0) == 0"]
SOLUTIONS = {
    "ok": "def add(a, b):\n    return a + b\n",
    "fail": "def add(a, b):\n    return a * b\n",  # only the third test holds
    "timeout": "def add(a, b):\n    while True:\n        pass\n",
}
EXPECTED_PASSED = {"ok": 3, "fail": 1, "timeout": 0}
# The same mix through an older commit's API: ``run_unit_tests_batch`` of (code, tests) pairs.
_BASELINE_SCRIPT = """
import json, sys, time
from ebft_repro.evaluation.sandbox import run_unit_tests_batch
kinds, solutions, tests, expected = json.loads(sys.argv[1])
start = time.perf_counter()
verdicts = run_unit_tests_batch([(solutions[k], tests) for k in kinds], timeout_s=1.0)
seconds = time.perf_counter() - start
assert all(v.status == k and v.n_passed == expected[k] for k, v in zip(kinds, verdicts)), "wrong verdicts"
print(json.dumps(seconds))
"""


def program_kinds(n_programs: int) -> list[str]:
    """The benchmark's mix, in order."""
    return ["timeout" if i % 20 == 19 else ("ok" if i % 2 == 0 else "fail") for i in range(n_programs)]


def measure_throughput(n_programs: int = 200, *, n_workers: int | None = None) -> dict:
    """Time :func:`~ebft_repro.evaluation.sandbox.run_unit_tests_batch` on the benchmark's mix.

    Returns:
        ``{"n_programs", "seconds", "programs_per_s", "n_workers", "isolation"}``.

    Raises:
        RuntimeError: if some verdict differs from the expected one.
    """
    from ebft_repro.evaluation._sandbox_backend import backend
    from ebft_repro.evaluation.sandbox import run_unit_tests_batch

    kinds = program_kinds(n_programs)
    workers = n_workers or os.cpu_count() or 1
    start = time.perf_counter()
    verdicts = run_unit_tests_batch([(SOLUTIONS[k], TESTS) for k in kinds], timeout_s=1.0, n_workers=workers)
    seconds = time.perf_counter() - start
    for index, (kind, verdict) in enumerate(zip(kinds, verdicts)):
        if verdict.status != kind or verdict.n_passed != EXPECTED_PASSED[kind]:
            raise RuntimeError(f"program {index} ({kind}) got an unexpected verdict: {verdict}")
    return {
        "n_programs": n_programs,
        "seconds": seconds,
        "programs_per_s": n_programs / seconds,
        "n_workers": workers,
        "isolation": backend().name,
    }


def compare_with_baseline(n_programs: int, baseline_ref: str, rounds: int) -> dict:
    """Programs per second of this checkout and of ``baseline_ref``, measured alternately ``rounds`` times."""
    repo = Path(__file__).resolve().parents[2]
    arguments = json.dumps([program_kinds(n_programs), SOLUTIONS, TESTS, EXPECTED_PASSED])
    rates: dict[str, list[float]] = {"current": [], baseline_ref: []}
    with tempfile.TemporaryDirectory(prefix="ebft_bench_") as folder:
        worktree = Path(folder) / "baseline"
        subprocess.run(
            ["git", "-C", str(repo), "worktree", "add", "--detach", str(worktree), baseline_ref],
            check=True,
            capture_output=True,
        )
        try:
            for _ in range(rounds):
                rates["current"].append(measure_throughput(n_programs)["programs_per_s"])
                done = subprocess.run(
                    [sys.executable, "-c", _BASELINE_SCRIPT, arguments],
                    cwd=worktree,
                    env=os.environ | {"PYTHONPATH": str(worktree)},
                    capture_output=True,
                    text=True,
                    check=True,
                )
                rates[baseline_ref].append(n_programs / json.loads(done.stdout.strip().splitlines()[-1]))
        finally:
            subprocess.run(
                ["git", "-C", str(repo), "worktree", "remove", "--force", str(worktree)], capture_output=True
            )
    medians = {name: sorted(values)[len(values) // 2] for name, values in rates.items()}
    return {"programs_per_s": rates, "median": medians, "ratio": medians["current"] / medians[baseline_ref]}
