"""Command line: ``python -m ebft_repro {prepare,train,evaluate,reproduce}`` (script ``ebft-repro``).

Every bad input ends in one line ``ebft-repro: error: ...`` and exit code 2 (a config value, an unknown
field, an unwritable ``--out``, a run folder holding another config or a corrupt file); a run whose loss
becomes non-finite ends the same way with exit code 1. ``docs/runs.md`` lists the checks.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ebft_repro.config import METHODS, PRESETS, TASKS, apply_overrides, get_preset


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="qa_code", help=f"task family, one of {TASKS} (default: qa_code)")
    parser.add_argument(
        "--preset", default="tiny", help=f"hyper-parameter preset, one of {PRESETS} (default: tiny)"
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    parser.add_argument(
        "--model",
        default=None,
        help="policy to fine-tune: a local directory or any Hugging Face causal-LM name"
        " (default: the preset's built-in base model, built offline)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a config field, e.g. --set sampler.stride=4 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ebft-repro", description="Reproduce EBFT vs SFT vs RLVR (arXiv 2603.12248) on small models."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    prepare = sub.add_parser("prepare", help="build the tokenizer, the base model and the task datasets")
    prepare.add_argument("--task", default="all", help=f"one of {TASKS} or 'all' (default: all)")
    prepare.add_argument("--preset", default="tiny", help=f"one of {PRESETS} (default: tiny)")
    prepare.add_argument("--skip-model", action="store_true", help="prepare the data only")
    prepare.add_argument(
        "--verify",
        default="eval",
        choices=("eval", "all", "none"),
        help="sandbox-check Q&A reference solutions: validation+test (default), all, or none",
    )

    train = sub.add_parser("train", help="train one (task, method, seed) run and print its summary")
    _add_run_options(train)
    train.add_argument("--method", default="ebft", help=f"one of {METHODS} (default: ebft)")
    train.add_argument(
        "--out", default=None, help="run directory (default: results/<preset>/runs/<run name>)"
    )
    train.add_argument(
        "--force",
        action="store_true",
        help="discard the run folder's summary, metrics and checkpoint and recompute (needed when the folder"
        " holds a run of another config, or a corrupt file)",
    )

    evaluate = sub.add_parser("evaluate", help="evaluate a model (no training) on a task")
    _add_run_options(evaluate)
    evaluate.add_argument(
        "--split", default="test", help="downstream split: test or validation (default: test)"
    )

    reproduce = sub.add_parser("reproduce", help="run every (task, method, seed) of a preset and aggregate")
    reproduce.add_argument("--preset", default="tiny", help=f"one of {PRESETS} (default: tiny)")
    reproduce.add_argument("--tasks", nargs="+", default=list(TASKS), help=f"subset of {TASKS}")
    reproduce.add_argument("--methods", nargs="+", default=list(METHODS), help=f"subset of {METHODS}")
    reproduce.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds (default: the preset's)")
    reproduce.add_argument("--out", default=None, help="output folder (default: results/<preset>)")
    reproduce.add_argument(
        "--force", action="store_true", help="recompute every run instead of reusing finished ones"
    )
    reproduce.add_argument(
        "--no-lr-sweep", action="store_true", help="use each preset's first learning rate only"
    )
    reproduce.add_argument(
        "--set", dest="overrides", action="append", default=[], help="config override (repeatable)"
    )
    aggregate = sub.add_parser(
        "aggregate", help="redo a reproduction's tables, verdicts and figures from its finished runs"
    )
    aggregate.add_argument("--out", required=True, help="the reproduction's folder, e.g. results/cpu")
    return parser


def _cmd_aggregate(args: argparse.Namespace) -> int:
    from ebft_repro.experiments.runner import aggregate, read_selection

    out = Path(args.out)
    if not (out / "runs").is_dir():
        raise ValueError(f"--out {out}: no runs/ folder (not a reproduction's output)")
    aggregate(out, read_selection(out))
    print(f"re-aggregated {out}: summary.csv, summary.md, verdicts.csv, runs.csv, figures (no run trained)")
    return 0


def _config(args: argparse.Namespace, method: str):
    cfg = get_preset(args.preset, args.task, method, seed=args.seed)
    overrides = list(args.overrides)
    if args.model:
        overrides.append(f"model={args.model}")
    return apply_overrides(cfg, overrides)


def _cmd_prepare(args: argparse.Namespace) -> int:
    from ebft_repro.experiments.prepare import prepare

    tasks = list(TASKS) if args.task == "all" else [args.task]
    report = prepare(tasks, args.preset, build_model=not args.skip_model, verify=args.verify)
    print(json.dumps(report, indent=2))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from ebft_repro.models import resolve_model_path
    from ebft_repro.trainer import train
    from ebft_repro.utils import ensure_writable, results_dir

    cfg = _config(args, args.method)
    if not cfg.model.startswith("builtin:"):
        resolve_model_path(cfg.model)  # fail on a bad path before any run file is written
    out = Path(args.out) if args.out else results_dir() / cfg.preset / "runs" / cfg.run_name
    ensure_writable(out)  # before any model is loaded or built
    result = train(cfg, run_dir=out, force=args.force)
    print(json.dumps({k: v for k, v in result.summary.items() if k != "config"}, indent=2))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ebft_repro.context import build_context
    from ebft_repro.run_eval import evaluate

    cfg = _config(args, "sft")
    cfg = replace(cfg, eval=replace(cfg.eval, split=args.split))
    metrics = evaluate(build_context(cfg), step=0)
    print(json.dumps(metrics, indent=2))
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from ebft_repro.experiments.runner import run_reproduction
    from ebft_repro.utils import ensure_writable, results_dir

    for task in args.tasks:  # every config is checked before the first run starts
        for method in args.methods:
            for seed in args.seeds or [None]:
                apply_overrides(get_preset(args.preset, task, method, seed=seed), args.overrides)
    out = Path(args.out) if args.out else results_dir() / args.preset
    ensure_writable(out)
    result = run_reproduction(
        args.preset,
        tasks=args.tasks,
        methods=args.methods,
        seeds=args.seeds,
        out_dir=out,
        force=args.force,
        lr_sweep=not args.no_lr_sweep,
        overrides=args.overrides,
    )
    print(result.message())
    return 0


def _validate(args: argparse.Namespace) -> None:
    """Errors that name the option and the allowed values (before anything heavy is loaded)."""
    if hasattr(args, "preset") and args.preset not in PRESETS:
        raise ValueError(f"--preset {args.preset!r} is not one of {PRESETS}")
    task = getattr(args, "task", None)
    if task is not None and task not in TASKS and not (args.command == "prepare" and task == "all"):
        raise ValueError(f"--task {task!r} is not one of {TASKS}")
    if getattr(args, "method", None) is not None and args.method not in METHODS:
        raise ValueError(f"--method {args.method!r} is not one of {METHODS}")
    for name, allowed in (("tasks", TASKS), ("methods", METHODS)):
        bad = [v for v in getattr(args, name, None) or [] if v not in allowed]
        if bad:
            raise ValueError(f"--{name} {bad} not in {allowed}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    commands = {
        "prepare": _cmd_prepare,
        "train": _cmd_train,
        "evaluate": _cmd_evaluate,
        "reproduce": _cmd_reproduce,
        "aggregate": _cmd_aggregate,
    }
    try:
        _validate(args)
        return commands[args.command](args)
    except (ValueError, OSError) as err:  # bad input, a run folder or file that cannot be used
        print(f"ebft-repro: error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:  # trainer.NonFiniteError: the input was valid, training diverged
        print(f"ebft-repro: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
