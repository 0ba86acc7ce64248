"""Small shared helpers: seeding, paths, JSON I/O, progress bars, environment capture."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (CPU and CUDA); optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def step_generator(
    seed: int, step: int, *keys: int | str, device: str | torch.device = "cpu"
) -> torch.Generator:
    """A torch generator keyed by (seed, step, *keys), so resumed runs draw the same numbers.

    Keys name the stream (sampling, evaluation...) and, for per-sample streams, the sample's global position
    in the batch, which makes the draws independent of micro-batching and of the number of ranks.
    """
    digest = hashlib.sha256(":".join(map(str, (seed, step, *keys))).encode()).digest()
    generator = torch.Generator(device=device)
    generator.manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    return generator


def row_generators(seed: int, step: int, stream: int | str, positions: list[int]) -> list[torch.Generator]:
    """One generator per sample, keyed by its global position in the step's batch."""
    return [step_generator(seed, step, stream, position) for position in positions]


def repo_root() -> Path:
    """The repository root, found from the package location (never from the working directory)."""
    env = os.environ.get("EBFT_REPO_ROOT")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Where tokenizers, base models and prepared data are cached (git-ignored)."""
    env = os.environ.get("EBFT_CACHE_DIR")
    path = Path(env) if env else repo_root() / "data" / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_dir() -> Path:
    """Root folder of run outputs, ``results/`` unless ``EBFT_RESULTS_DIR`` says otherwise."""
    env = os.environ.get("EBFT_RESULTS_DIR")
    return Path(env) if env else repo_root() / "results"


def config_hash(obj: Any, n_chars: int = 12) -> str:
    """A stable short hash of a JSON-serialisable object (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n_chars]


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically: a temp file then a rename, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def progress(iterable: Iterable | None = None, **kwargs: Any):
    """A tqdm bar that stays quiet in CI and when stderr is not a terminal (logs stay readable)."""
    from tqdm.auto import tqdm

    disable = bool(os.environ.get("CI")) or not sys.stderr.isatty()
    if os.environ.get("EBFT_PROGRESS") == "1":
        disable = False
    return tqdm(iterable, disable=disable, dynamic_ncols=True, leave=False, **kwargs)


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info() -> dict[str, Any]:
    """Package versions, device and git commit, saved next to every run's metrics."""
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for name in ("torch", "transformers", "tokenizers", "datasets", "numpy", "pandas", "sacrebleu"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    device = "cpu"
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": packages,
        "device": device,
        "n_threads": torch.get_num_threads(),
        "git_commit": git_commit(),
    }


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
