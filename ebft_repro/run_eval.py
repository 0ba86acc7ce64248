"""Evaluation during training, the step-0 evaluation shared between runs, and the summary of a run.

:func:`evaluate` is what the training loop calls every ``eval.every_steps`` steps; :func:`evaluate_step0`
caches the step-0 evaluation (the base model's) under a key of everything it depends on (:func:`step0_key`),
and :func:`summarize` turns a run's metric rows into its ``summary.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ebft_repro.batching import Context, autocast
from ebft_repro.config import ExperimentConfig, LossConfig
from ebft_repro.evaluation.downstream import downstream_eval, feature_matching_eval, validation_ce
from ebft_repro.utils import CorruptFileError, config_hash, read_json, step_generator, write_json

log = logging.getLogger(__name__)

STREAM_EVAL, STREAM_FM = "eval", "fm"
STEP0_DIR = "_step0"
"""The runner's folder, next to its run folders, of cached step-0 evaluations (the base model)."""


def evaluate(ctx: Context, step: int, records: dict | None = None) -> dict[str, float]:
    """Validation CE, feature matching and downstream accuracy at ``step``; with ``records`` (a dict),
    also the per-prompt outcomes of the test prompts (:func:`downstream_eval`)."""
    cfg = ctx.cfg
    with autocast(ctx):
        metrics = validation_ce(ctx.policy, ctx.val_chunks)
        if cfg.eval.n_fm_chunks > 0:
            metrics |= feature_matching_eval(
                ctx.policy,
                ctx.feature_net,
                ctx.val_chunks.input_ids[: cfg.eval.n_fm_chunks],
                sampler_cfg=cfg.sampler,
                loss_cfg=cfg.loss,
                generator=step_generator(cfg.seed, step, STREAM_FM),
            )
        metrics |= downstream_eval(
            ctx.policy,
            ctx.tokenizer,
            ctx.eval_examples,
            cfg.eval,
            generator=step_generator(cfg.seed, step, STREAM_EVAL),
            records=records,
        )
        if step == cfg.train.n_steps and ctx.val_examples:  # for learning-rate selection, never for reporting
            val = downstream_eval(
                ctx.policy,
                ctx.tokenizer,
                ctx.val_examples,
                cfg.eval,
                generator=step_generator(cfg.seed, step, STREAM_EVAL),
            )
            metrics |= {f"val_{k}": v for k, v in val.items()}
    return metrics


def step0_key(cfg: ExperimentConfig) -> str:
    """Everything the step-0 evaluation depends on: the base model, task, data, sampler, features, loss,
    evaluation settings and seed, but not the method, optimizer, run length (no update has happened) or
    the loss's gamma (``ce_coef``)."""
    values = cfg.to_dict()
    for name in ("method", "optim", "rlvr"):
        values.pop(name)
    values["train"] = {
        k: values["train"][k] for k in ("dtype", "autocast_bf16", "lora_rank", "feature_dtype")
    }
    values["eval"].pop("every_steps")
    # gamma weights a training loss no evaluation computes, so EBFT and its gamma = 0 control share one
    # step-0 evaluation; set to the default (not dropped) so that keys written before this line still match
    values["loss"]["ce_coef"] = LossConfig.ce_coef
    values["base_model"] = base_model_identity(cfg)
    return config_hash(values)


def evaluate_step0(
    ctx: Context, cache: Path | None, *, reuse: bool, records: dict | None = None
) -> tuple[dict[str, float], bool]:
    """The step-0 evaluation, shared by every run that starts from the same base under the same evaluation.

    Every method and learning rate of a (task, seed) starts from the same weights and evaluates with the
    same random streams, so their step-0 metrics are identical; the first run computes them into ``cache``
    (and the per-prompt ``records`` beside it, ``<cache>.prompts.json``) and the others read them. Returns
    the metrics and whether they were reused.
    """
    records_cache = cache.with_suffix(".prompts.json") if cache is not None else None
    wanted = [cache] + ([records_cache] if records is not None else [])
    if cache is not None and reuse and all(path.exists() for path in wanted):
        try:
            metrics = read_json(cache)
            if records is not None:
                records |= read_json(records_cache)
        except CorruptFileError as err:
            log.warning("%s; recomputing the step-0 evaluation", err)
        else:
            log.info("%s: step-0 evaluation reused from %s", ctx.cfg.run_name, cache)
            return metrics, True
    fresh: dict = {}
    metrics = evaluate(ctx, 0, fresh)
    if records is not None:
        records |= fresh
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_json(records_cache, fresh)
        write_json(cache, metrics)
    return metrics, False


def base_validation(cfg: ExperimentConfig, cache_dir: Path | None, *, reuse: bool = True) -> dict[str, float]:
    """The base model's validation accuracy, the lr -> 0 end of a learning-rate grid (for selection only).

    A run's last-step validation samples from ``step_generator(seed, n_steps, "eval")``
    (:func:`evaluate`); this samples the untouched base model from that same stream, so it is exactly what
    a run whose updates have size 0 would score. The runner records it in ``lr_selection.json`` next to the
    grid, so a pick at the grid's low edge can be read against not training at all. Cached in ``cache_dir``
    (the runner's ``_step0`` folder) under :func:`step0_key` and the run length. Never for reporting: the
    base row of a summary is the step-0 evaluation on the test prompts.
    """
    name = f"{cfg.task}-seed{cfg.seed}-{step0_key(cfg)}-validation-step{cfg.train.n_steps}.json"
    cache = cache_dir / name if cache_dir is not None else None
    if cache is not None and reuse and cache.exists():
        try:
            return read_json(cache)
        except CorruptFileError as err:
            log.warning("%s; recomputing the base model's validation accuracy", err)
    from ebft_repro.context import build_context

    ctx = build_context(cfg)
    with autocast(ctx):
        val = downstream_eval(
            ctx.policy,
            ctx.tokenizer,
            ctx.val_examples,
            cfg.eval,
            generator=step_generator(cfg.seed, cfg.train.n_steps, STREAM_EVAL),
        )
    metrics = {f"val_{k}": v for k, v in val.items()}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_json(cache, metrics)
    return metrics


def base_model_identity(cfg: ExperimentConfig) -> str:
    """Which base checkpoint a run starts from: for a built-in base, its cache folder's name (the recipe)
    and :func:`~ebft_repro.pretrain.weights_digest` (what the recipe produced on the machine that built
    it), e.g. ``base-cpu-3976bb63a6f1@9a0c1e2f3b4d``; else the model name. A built-in base that is not
    built yet is built first (every caller is about to start from it)."""
    if cfg.model.startswith("builtin:"):
        from ebft_repro.pretrain import ensure_base_model, weights_digest

        folder = ensure_base_model(cfg.base, cfg.data, name=cfg.model.split(":", 1)[1])
        return f"{folder.name}@{weights_digest(folder)}"
    return cfg.model


def summarize(cfg: ExperimentConfig, rows: list[dict], cost: dict) -> dict:
    """Final eval metrics, cost, and the config, as one JSON-able dict."""
    evals = [row for row in rows if row["kind"] == "eval"]
    final = {k: v for k, v in evals[-1].items() if k not in ("step", "kind")} if evals else {}
    initial = {k: v for k, v in evals[0].items() if k not in ("step", "kind")} if evals else {}
    return {
        "run_name": cfg.run_name,
        "task": cfg.task,
        "method": cfg.method,
        "seed": cfg.seed,
        "preset": cfg.preset,
        "lr": cfg.optim.lr,
        "final": final,
        "initial": initial,
        "n_steps": cfg.train.n_steps,
        "train_s": round(cost["train_s"], 3),
        "eval_s": round(cost["eval_s"], 3),
        "tokens_processed": cost["tokens"],
        "step0_eval_reused": bool(cost.get("step0_eval_reused", False)),
        "base_model": base_model_identity(cfg),
        "config": cfg.to_dict(),
    }
