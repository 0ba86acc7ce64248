"""One line for a whole comparison: runs done of the planned total, reused and computed, time left.

A ``make reproduce`` of the ``cpu`` preset runs for hours; each run's own bar says little about the
whole. The runner plans the runs it knows of (every grid point of seed 0 and the other seeds at the pick),
adds one whenever a grid is extended, and after each run updates this line. The time left assumes every
remaining run is computed, at the mean time of the runs computed so far (reused runs cost nothing).
"""

from __future__ import annotations

from collections import Counter

from ebft_repro.utils import progress


def planned_runs(
    preset: str, tasks: list[str], methods: list[str], n_seeds: int, lr_sweep: bool, overrides: list[str]
) -> int:
    """Runs the runner knows of before any grid extension: each grid of seed 0, then the other seeds."""
    from ebft_repro.config import apply_overrides, get_preset

    total = 0
    for task in tasks:
        for method in methods:
            grid = apply_overrides(get_preset(preset, task, method), overrides).optim.lr_grid
            total += (len(grid) if lr_sweep and grid else 1) + n_seeds - 1
    return total


def remaining_text(counts: Counter, computed_seconds: list[float], remaining: int) -> str:
    """``"3 reused, 2 computed, ~1 h 05 min left"``; no estimate before the first computed run."""
    done = f"{counts['reused']} reused, {counts['computed'] + counts['resumed']} computed"
    if remaining <= 0:
        return done
    if not computed_seconds:
        return f"{done}, time left: after the first computed run"
    seconds = round(sum(computed_seconds) / len(computed_seconds) * remaining)
    hours, minutes = divmod(seconds // 60, 60)
    left = f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds % 60:02d} s"
    return f"{done}, ~{left} left if the rest is computed"


class ComparisonProgress:
    """The comparison's progress line (quiet where :func:`~ebft_repro.utils.progress` is)."""

    def __init__(self, planned: int) -> None:
        self.counts: Counter = Counter()
        self.computed_seconds: list[float] = []
        # tqdm's own rate and estimate would count the instant reused runs: show elapsed time only
        line = "{desc}: {n_fmt}/{total_fmt} runs, {elapsed} elapsed{postfix}"
        self.bar = progress(total=planned, desc="comparison", bar_format=line, leave=True, position=0)

    def plan_more(self, n_runs: int = 1) -> None:
        """A grid was extended: ``n_runs`` more runs are planned."""
        self.bar.total += n_runs
        self.bar.refresh()

    def record(self, status: str, seconds: float) -> None:
        """One run ended with ``status`` (``computed``, ``resumed``, ``reused``...) after ``seconds``."""
        self.counts[status] += 1
        if status in ("computed", "resumed"):
            self.computed_seconds.append(seconds)
        self.bar.update(1)
        remaining = self.bar.total - self.bar.n
        self.bar.set_postfix_str(remaining_text(self.counts, self.computed_seconds, remaining))

    def close(self) -> None:
        self.bar.close()
