"""What the notebooks share: the run mode, where outputs go, and which reproduction results to show.

Two run modes (style guide section 7): ``tiny`` (CI under ``pytest --nbmake``: micro runs, everything written
under ``results/_tiny/``) and ``full`` (the committed outputs: figures under ``results/figures/``, runs under
``results/notebooks/`` or the preset folders). Each notebook prints ``run mode: <mode>`` once, early, so a
committed notebook can be checked for tiny-mode outputs.

The comparison notebooks (04-08) show the best finished preset per task: ``small`` (GPU) when its runs exist,
else ``cpu`` (the CPU evidence preset), else the ``tiny`` smoke test, with a banner saying which.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ebft_repro.config import CONTROLS, METHODS
from ebft_repro.experiments.runner import MICRO_OVERRIDES
from ebft_repro.utils import read_json, repo_root, results_dir, seed_everything

RUN_MODES = ("tiny", "full")
PRESET_PREFERENCE = ("small", "cpu", "tiny")


def run_mode(value: str | None = None) -> str:
    """The run mode: ``value`` if given, else ``$EBFT_RUN_MODE``, else ``full``.

    Raises:
        ValueError: naming the allowed modes.
    """
    mode = value or os.environ.get("EBFT_RUN_MODE", "full")
    if mode not in RUN_MODES:
        raise ValueError(f"run mode {mode!r} is not one of {RUN_MODES} (set EBFT_RUN_MODE or RUN_MODE)")
    return mode


def _relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(repo_root().resolve()))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class Session:
    """One notebook execution: its name, run mode and seed, and where its outputs go."""

    name: str
    """Notebook stem, e.g. ``01_feature_matching_objective``."""
    mode: str
    seed: int = 0

    @property
    def root(self) -> Path:
        """``results/`` in full mode, ``results/_tiny/`` (git-ignored) in tiny mode."""
        return results_dir() if self.mode == "full" else results_dir() / "_tiny"

    @property
    def out_dir(self) -> Path:
        """Runs and tables made by this notebook."""
        return self.root / "notebooks" / self.name

    def figure_path(self, figure: str) -> Path:
        """``results/figures/<NN>_<figure>.png`` (under ``results/_tiny/`` in tiny mode)."""
        path = self.root / "figures" / f"{self.name[:2]}_{figure}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def __str__(self) -> str:
        return f"run mode: {self.mode} | seed: {self.seed} | outputs under {_relative(self.root)}/"


def start(name: str, mode: str | None = None, seed: int = 0) -> Session:
    """Validate the mode, seed everything (style guide section 6) and return the session.

    It also turns off the Hugging Face progress bars, which would clutter the saved outputs.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    seed_everything(seed)
    return Session(name=name, mode=run_mode(mode), seed=seed)


def by_mode(mode: str, *, full, tiny):
    """``tiny`` in tiny mode, else ``full``: a knob's value for the current mode."""
    return tiny if run_mode(mode) == "tiny" else full


def show(path: Path):
    """Display a saved PNG inline (and keep the file in ``results/``)."""
    from IPython.display import Image

    return Image(filename=str(path))


def metrics_table(rows: list[dict], kind: str, columns: list[str]):
    """The ``kind`` rows (``train`` or ``eval``) of a run's metrics, indexed by step (a DataFrame)."""
    import pandas as pd

    frame = pd.DataFrame([row for row in rows if row["kind"] == kind])
    return frame[["step"] + [c for c in columns if c in frame.columns]].set_index("step")


def read_results_csv(relative: str):
    """A CSV under ``results/`` as a DataFrame, or None when it has not been produced."""
    import pandas as pd

    path = results_dir() / relative
    return pd.read_csv(path) if path.exists() else None


def describe_config(cfg) -> str:
    """The fields of a run that matter for EBFT, on a few lines."""
    s, loss, ev = cfg.sampler, cfg.loss, cfg.eval
    return "\n".join(
        [
            f"{cfg.method} on {cfg.task}, preset {cfg.preset}, model {cfg.model}, seed {cfg.seed}",
            f"{cfg.train.n_steps} steps x {cfg.train.chunks_per_step} chunks of L={cfg.data.seq_len} tokens,"
            f" lr {cfg.optim.lr:g} ({cfg.optim.schedule})",
            f"strided sampling: s={s.stride}, C={s.context_len}, G={s.gen_len}, n={s.n_samples},"
            f" T={s.temperature}",
            f"features: layers {cfg.featurizer.layers}, pooling {cfg.featurizer.pooling}",
            f"reward: whitening {loss.whitening}, alpha={loss.alignment_coef}, delta={loss.diversity_coef},"
            f" gamma={loss.ce_coef}",
            f"eval every {ev.every_steps} steps: {ev.n_prompts} test prompts x {ev.n_samples} samples,"
            f" CFM loss on {ev.n_fm_chunks} validation chunks",
        ]
    )


# ----------------------------------------------------------------------------- reproduction results


@dataclass
class ResultsSource:
    """Which reproduction the comparison notebooks show, and why."""

    preset: str
    out_dir: Path
    micro: bool = False
    """Tiny-mode micro runs (:data:`MICRO_OVERRIDES`), not a preset's reproduction."""
    note: str = ""
    selection: dict = field(default_factory=dict)
    """The runner's ``lr_selection.json`` (picked learning rate per task-method pair)."""

    def describe_runs(self) -> str:
        """Optimizer steps and seeds per method of the finished runs, e.g. ``16 steps, 1 seed``."""
        from collections import Counter

        from ebft_repro.experiments.report import collect_runs

        runs = collect_runs(self.out_dir, self.selection)
        steps = "/".join(str(n) for n in sorted({run["n_steps"] for run in runs}))
        seeds = max(Counter((run["task"], run["method"]) for run in runs).values(), default=0)
        return f"{steps} steps, {seeds} seed{'s' if seeds != 1 else ''} per method"

    def banner(self) -> str:
        where = _relative(self.out_dir)
        note = f" {self.note}" if self.note else ""
        if self.micro:
            return (
                f"MICRO RUNS ({where}): {self.describe_runs()} and 2 test prompts, to exercise the pipeline."
                " The numbers are meaningless." + note
            )
        if self.preset == "tiny":
            return (
                f"SMOKE-TEST NUMBERS from the `tiny` preset ({where}): a CPU-sized model,"
                f" {self.describe_runs()}. Neither the `cpu` nor the `small` preset has finished runs for"
                " this task yet, so these numbers check the pipeline end to end and say nothing about the"
                " paper's claims." + note
            )
        if self.preset == "cpu":
            return (
                f"Results of the `cpu` preset ({where}): a ~4.5M-parameter base model pretrained here,"
                f" {self.describe_runs()}; evidence at this scale, not at the paper's (docs/cpu.md)." + note
            )
        return f"Results of the `{self.preset}` preset ({where}): {self.describe_runs()}." + note


def load_selection(out_dir: Path) -> dict:
    path = Path(out_dir) / "lr_selection.json"
    return read_json(path) if path.exists() else {}


def finished_tasks(out_dir: Path) -> list[str]:
    """Tasks for which every method of the paper's comparison has a finished run at its selected learning
    rate (a control such as ``ebft_fm`` is shown when present, not required: older reproductions lack it)."""
    from ebft_repro.experiments.report import collect_runs

    if not (Path(out_dir) / "runs").exists():
        return []
    selection = load_selection(out_dir)
    runs = collect_runs(out_dir, selection)
    done = {(run["task"], run["method"]) for run in runs}
    tasks = sorted({task for task, _ in done})
    compared = [m for m in METHODS if m not in CONTROLS]
    return [t for t in tasks if all((t, m) in done and f"{t}-{m}" in selection for m in compared)]


def comparison_source(
    session: Session, task: str, *, preference: tuple[str, ...] = PRESET_PREFERENCE, run_missing: bool = True
) -> ResultsSource:
    """The reproduction to show for ``task``.

    Tiny mode runs a micro reproduction (:data:`MICRO_OVERRIDES`) into ``results/_tiny/reproduce``. Full mode
    takes the first preset of ``preference`` whose runs for ``task`` are finished; when none is, it runs the
    ``tiny`` preset's reproduction of ``task`` (cached per run) if ``run_missing``.

    Raises:
        FileNotFoundError: in full mode, when nothing is finished and ``run_missing`` is False.
    """
    from ebft_repro.experiments.runner import reproduce

    if session.mode == "tiny":
        out_dir = session.root / "reproduce"
        reproduce(
            "tiny", tasks=[task], seeds=[0], out_dir=out_dir, lr_sweep=False, overrides=list(MICRO_OVERRIDES)
        )
        return ResultsSource("tiny", out_dir, micro=True, selection=load_selection(out_dir))
    for preset in preference:
        out_dir = results_dir() / preset
        if task in finished_tasks(out_dir):
            return ResultsSource(preset, out_dir, selection=load_selection(out_dir))
    if not run_missing:
        raise FileNotFoundError(
            f"no finished runs for task {task!r} under results/{{{','.join(preference)}}}"
        )
    out_dir = reproduce("tiny", tasks=[task])
    return ResultsSource("tiny", out_dir, selection=load_selection(out_dir))


def report_source(session: Session, *, preference: tuple[str, ...] = PRESET_PREFERENCE) -> ResultsSource:
    """The reproduction notebook 08 reads: the first preset of ``preference`` with any finished task.

    It only reads files. In tiny mode it prefers the micro runs of notebooks 04-06 (``results/_tiny``) and
    runs a micro reproduction of ``qa_code`` only when there is nothing at all to read.
    """
    candidates = [(preset, results_dir() / preset, False) for preset in preference]
    if session.mode == "tiny":
        candidates.insert(0, ("tiny", session.root / "reproduce", True))
    for preset, out_dir, micro in candidates:
        tasks = finished_tasks(out_dir)
        if tasks:
            note = f"Tasks with finished runs: {', '.join(tasks)}."
            return ResultsSource(preset, out_dir, micro=micro, note=note, selection=load_selection(out_dir))
    if session.mode == "tiny":
        return comparison_source(session, "qa_code")
    raise FileNotFoundError(
        f"no finished runs under results/{{{','.join(preference)}}}: run the reproduction first"
    )
