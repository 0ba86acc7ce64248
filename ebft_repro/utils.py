"""Small shared helpers: seeding, paths, atomic writes and checked reads, locks, progress, environment."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import platform
import random
import subprocess
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


class CorruptFileError(ValueError):
    """A result or cache file that exists but cannot be read back (truncated, garbage, wrong format)."""


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


def file_mode(*, directory: bool = False) -> int:
    """The mode the umask gives a new file (0o666 & ~umask) or directory (0o777 & ~umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success it replaces ``path`` in one rename.

    A process killed mid-write leaves the old file (or none), never half a file. The temp name carries the
    pid, so concurrent writers do not share it, and the result gets the umask's mode (``file_mode``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (see :func:`atomic_path`)."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    """Parse a JSON file.

    Raises:
        CorruptFileError: naming the file and what is wrong, when it is not valid JSON.
    """
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptFileError(f"{path} is corrupt (not valid JSON: {err})") from None


def read_jsonl(path: Path) -> list[dict]:
    """Parse a JSON-lines file (empty list when it does not exist).

    Raises:
        CorruptFileError: naming the file and the first bad line (a truncated file ends in one).
    """
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                problem = f"line {number} is not valid JSON ({err})"
                raise CorruptFileError(f"{path} is corrupt: {problem}") from None
    return rows


def ensure_writable(directory: Path) -> None:
    """Create ``directory`` if needed and check that a file can be written in it.

    Raises:
        ValueError: naming the folder and the reason (permission denied, a file in the way...).
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        reason = "permission denied" if isinstance(err, PermissionError) else (err.strerror or str(err))
        raise ValueError(f"output folder {directory} is not writable ({reason})") from None


@contextmanager
def file_lock(path: Path, *, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing); log when another process holds it.

    The lock file is opened read-only when it exists, so users who may only read a shared folder can
    still wait on it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, file_mode())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("waiting for another process to finish %s (lock %s)", what, path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def progress(iterable: Iterable | None = None, **kwargs: Any):
    """A tqdm bar that stays quiet in CI and when stderr is not a terminal (logs stay readable)."""
    from tqdm.auto import tqdm

    disable = bool(os.environ.get("CI")) or not sys.stderr.isatty()
    if os.environ.get("EBFT_PROGRESS") == "1":
        disable = False
    return tqdm(iterable, disable=disable, dynamic_ncols=True, **({"leave": False} | kwargs))


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
