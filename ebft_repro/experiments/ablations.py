"""One-factor-at-a-time ablations of EBFT around the default (spec section 7; paper "Figure 7" per [axo]).

Factors: whitening (none / sample / feature), diversity coefficient delta in {0, 0.5, 1}, CE coefficient
gamma in {0, 0.03, 0.1}, and pooling (last_token vs mean). Every other setting stays at the default, EBFT
only, on Q&A coding. Each setting is one :func:`ebft_repro.trainer.train` run in its own folder, so a
finished run with the same config is reused.
"""

from __future__ import annotations

from pathlib import Path

from ebft_repro.config import ExperimentConfig, apply_overrides, get_preset

FACTORS: dict[str, tuple[str, tuple]] = {
    "whitening": ("loss.whitening", ("none", "sample", "feature")),
    "diversity coef (delta)": ("loss.diversity_coef", (0.0, 0.5, 1.0)),
    "CE coef (gamma)": ("loss.ce_coef", (0.0, 0.03, 0.1)),
    "pooling": ("featurizer.pooling", ("last_token", "mean")),
}
"""factor name -> (dotted config field, values swept)."""
TINY_FACTORS: dict[str, tuple[str, tuple]] = {"whitening": ("loss.whitening", ("none", "sample"))}
FULL_OVERRIDES = ("eval.every_steps=16", "eval.n_fm_chunks=4")
"""The tiny preset's 16 steps, evaluated at steps 0 and 16 only, with the CFM loss on 4 validation chunks."""
REPORTED = ("val_ce", "val_ce_answer", "val_fm_loss", "pass@1", "pass@4")


def base_config(mode: str, seed: int = 0, overrides: tuple[str, ...] = ()) -> ExperimentConfig:
    """The default EBFT run on Q&A coding at the tiny preset, with the mode's budget (micro runs if tiny)."""
    from ebft_repro.experiments.runner import MICRO_OVERRIDES

    budget = MICRO_OVERRIDES if mode == "tiny" else FULL_OVERRIDES
    return apply_overrides(get_preset("tiny", "qa_code", "ebft", seed=seed), [*budget, *overrides])


def factors_for(mode: str) -> dict[str, tuple[str, tuple]]:
    """The full sweep, or whitening none vs sample in tiny mode (two micro runs)."""
    return TINY_FACTORS if mode == "tiny" else FACTORS


def current_value(cfg: ExperimentConfig, key: str):
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def variants(cfg: ExperimentConfig, factors: dict[str, tuple[str, tuple]]) -> list[dict]:
    """Every (factor, value) setting: its overrides, run name and whether it is the default."""
    out = []
    for factor, (key, values) in factors.items():
        for value in values:
            is_default = current_value(cfg, key) == value
            out.append(
                {
                    "factor": factor,
                    "value": value,
                    "is_default": is_default,
                    "overrides": [] if is_default else [f"{key}={value}"],
                    "run": "default" if is_default else f"{key}={value}",
                }
            )
    return out


def run_ablations(cfg: ExperimentConfig, out_dir: Path, factors=None, *, force: bool = False):
    """Train (or reuse) every setting and return one row per (factor, value) (a DataFrame).

    Columns: factor, value, is_default, the final ``REPORTED`` metrics and their step-0 values (the base
    model, seen through the run's own features for the CFM loss), ``val_ce change`` (final - step 0),
    ``train reward`` (mean over the run's steps; its scale depends on the whitening), ``train_s`` and
    ``run_dir``.
    The default run is shared by every factor.
    """
    import pandas as pd

    from ebft_repro.trainer import train

    rows, done = [], {}
    for setting in variants(cfg, factors or FACTORS):
        if setting["run"] not in done:
            run_dir = Path(out_dir) / setting["run"]
            done[setting["run"]] = train(
                apply_overrides(cfg, setting["overrides"]), run_dir=run_dir, force=force
            )
        result = done[setting["run"]]
        final, initial = result.summary["final"], result.summary["initial"]
        rewards = [r["reward"] for r in result.metrics if r["kind"] == "train"]
        row = {k: setting[k] for k in ("factor", "value", "is_default")}
        row |= {metric: final.get(metric) for metric in REPORTED}
        row |= {f"{metric} (step 0)": initial.get(metric) for metric in REPORTED}
        row["val_ce change"] = final["val_ce"] - initial["val_ce"]
        row["train reward"] = sum(rewards) / max(len(rewards), 1)
        row |= {"train_s": result.summary["train_s"], "run_dir": str(result.run_dir)}
        rows.append(row)
    return pd.DataFrame(rows)
