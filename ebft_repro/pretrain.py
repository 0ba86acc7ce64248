"""Build this package's own base model offline: a byte-level BPE tokenizer and a small causal LM.

No hub is reachable here, so the ``builtin:<preset>`` base model is pretrained from scratch on a mixture of
the three task corpora (their ``pretrain`` splits, disjoint from the fine-tuning and evaluation splits):
generated Q&A coding problems, CPython standard-library source, and Spanish/English Bible verse pairs
(docs/data.md). The base therefore knows the task formats and has non-zero task accuracy, which RLVR needs for
a reward signal, while the fine-tuning examples are new to it. The result is saved with ``save_pretrained``
under ``data/cache/base-<name>-<hash>/``, keyed by a hash of the base and data configs, and reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import random
import shutil
import time
from pathlib import Path

import torch

from ebft_repro.config import BaseModelConfig, DataConfig
from ebft_repro.utils import (
    cache_dir,
    config_hash,
    file_lock,
    file_mode,
    progress,
    seed_everything,
    write_json,
)

log = logging.getLogger(__name__)

CORPUS_VERSION = 3  # bump when the corpus recipe changes, so cached base models are rebuilt


def pretraining_corpus(base: BaseModelConfig, data: DataConfig) -> list[str]:
    """Documents for LM pretraining: each task's ``pretrain`` split, never its train or evaluation splits.

    Every task has four disjoint splits (docs/data.md): fine-tuning data (train) is new to the base model,
    as in the paper, and nothing evaluated is seen in pretraining. The corpus does not depend on
    ``data.n_train``; as a safety net any document equal to a train/validation/test example is dropped.
    """
    from ebft_repro import tasks
    from ebft_repro.data import load_task

    held_out: set[str] = set()
    for task in tasks.TASKS:
        task_data = load_task(task, data)
        for ex in task_data.train + task_data.validation + task_data.test:
            held_out.add(ex.prompt + ex.completion)
            if ex.uid:
                held_out.add(ex.uid)

    sources = pretraining_sources(base, data)
    documents = []
    for examples in sources.values():
        for ex in examples:
            if ex.prompt + ex.completion in held_out or (ex.uid and ex.uid in held_out):
                continue
            documents.append(ex.prompt + ex.completion)
    random.Random(base.seed).shuffle(documents)
    return documents


def pretraining_sources(base: BaseModelConfig, data: DataConfig) -> dict:
    """Per task, the ``pretrain`` split the corpus draws from (before dropping held-out twins)."""
    from ebft_repro import tasks

    seed, chars = data.split_seed, data.max_chars_per_file
    qa = tasks.build_splits("qa_code", n_train=0, n_val=0, n_test=0, seed=seed, n_pretrain=base.n_qa_docs)
    caps = {"pretrain": base.n_code_files}
    code = tasks.build_splits("code", max_files_per_split=caps, max_chars_per_file=chars, seed=seed)
    sizes = {"n_train": 0, "n_val": data.n_val, "n_test": data.n_test, "n_pretrain": base.n_translation_pairs}
    translation = tasks.build_splits(
        "translation", seed=seed, max_source_chars=data.max_source_chars, **sizes
    )
    return {"qa_code": qa["pretrain"], "code": code["pretrain"], "translation": translation["pretrain"]}


def train_tokenizer(documents: list[str], vocab_size: int, out_dir: Path):
    """Train a byte-level BPE tokenizer and save it as a ``PreTrainedTokenizerFast`` directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from ebft_repro.architectures import SPECIAL_TOKENS

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = [SPECIAL_TOKENS["eos_token"], SPECIAL_TOKENS["pad_token"]]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(documents, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)
    fast.save_pretrained(out_dir)
    return fast


def _token_stream(documents: list[str], tokenizer, seq_len: int) -> torch.Tensor:
    ids: list[int] = []
    for doc in documents:
        ids += tokenizer(doc, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    n_chunks = len(ids) // seq_len
    return torch.tensor(ids[: n_chunks * seq_len]).view(n_chunks, seq_len)  # (N, L)


def pretrain_lm(model, chunks: torch.Tensor, base: BaseModelConfig) -> list[dict]:
    """Plain next-token pretraining with AdamW, linear warmup and cosine decay; returns the loss curve."""
    generator = torch.Generator().manual_seed(base.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=base.pretrain_lr, betas=(0.9, 0.95), weight_decay=0.1
    )
    warmup = max(1, base.pretrain_steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (
            1 + math.cos(math.pi * (step - warmup) / max(1, base.pretrain_steps - warmup))
        )

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    model.train()
    curve = []
    bar = progress(range(base.pretrain_steps), desc="pretrain base model")
    for step in bar:
        rows = torch.randint(0, chunks.shape[0], (base.pretrain_batch_size,), generator=generator)
        batch = chunks[rows].to(next(model.parameters()).device)  # (B, L)
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step % 10 == 0 or step == base.pretrain_steps - 1:
            curve.append({"step": step, "loss": loss.item()})
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return curve


CORPUS_DATA_FIELDS = ("n_val", "n_test", "max_source_chars", "max_chars_per_file", "split_seed", "source")
"""The data fields that shape the pretraining corpus (its held-out sets and texts); others do not."""


def base_model_dir(base: BaseModelConfig, data: DataConfig, name: str) -> Path:
    """Cache folder of a built-in base model, keyed by everything its corpus and training depend on."""
    corpus = {field: getattr(data, field) for field in CORPUS_DATA_FIELDS}
    key = config_hash({"base": dataclasses.asdict(base), "data": corpus, "v": CORPUS_VERSION})
    return cache_dir() / f"base-{name}-{key}"


MANIFEST_NAME = "DONE"
"""Written last by a build: the size and sha256 of every file of the model, checked on every load."""
BUILD_LOG_NAME = "pretrain_log.json"
"""The build's record (corpus size, loss curve, seconds): not part of the model, its timings vary."""


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest(out_dir: Path) -> dict[str, dict]:
    return {
        path.name: {"size": path.stat().st_size, "sha256": _file_digest(path)}
        for path in sorted(out_dir.iterdir())
        if path.is_file() and path.name != MANIFEST_NAME
    }


def _recorded_manifest(out_dir: Path) -> dict[str, dict] | None:
    """The manifest a build wrote in ``DONE``; None for a folder from before manifests (``ok``)."""
    return None if (text := (out_dir / MANIFEST_NAME).read_text()).strip() == "ok" else json.loads(text)


def weights_digest(out_dir: Path) -> str:
    """A short sha256 over the weights, config and tokenizer files of a built folder (from its manifest):
    what the recipe (the folder name) produced, which differs across CPUs, whose float kernels round
    differently (``docs/runs.md`` section 3). The build log is left out."""
    manifest = _recorded_manifest(out_dir) or _manifest(out_dir)
    return config_hash({name: entry["sha256"] for name, entry in manifest.items() if name != BUILD_LOG_NAME})


def _safetensors_problem(path: Path) -> str | None:
    """Why a ``.safetensors`` file is truncated or garbage (header vs size), or None if it is whole."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        n_header = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n_header < 0 or 8 + n_header > size:
            return "its header is cut off"
        try:
            header = json.loads(handle.read(n_header))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return "its header is not valid JSON"
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    expected = 8 + n_header + max(ends, default=0)
    return None if size == expected else f"it has {size} bytes where its header describes {expected}"


def cache_problem(out_dir: Path) -> str | None:
    """What is wrong with a built base model folder, or None when it is complete and unchanged.

    Builds record every file's size and sha256 in ``DONE`` (the manifest). Folders from before manifests
    (``DONE`` reads ``ok``) get a structural check: the safetensors header against the file size, and
    every JSON file parses.

    Raises:
        PermissionError: saying "permission denied" and the file, when a file cannot be read.
    """
    if not (out_dir / MANIFEST_NAME).exists():
        return "it was never finished (no DONE marker)"
    try:
        manifest = _recorded_manifest(out_dir)
        if manifest is not None:
            actual = _manifest(out_dir)
            changed = sorted(
                name for name in manifest.keys() | actual.keys() if manifest.get(name) != actual.get(name)
            )
            return f"files differ from its manifest: {changed}" if changed else None
        for path in sorted(out_dir.iterdir()):
            problem = _safetensors_problem(path) if path.suffix == ".safetensors" else None
            if path.suffix == ".json":
                json.loads(path.read_text())
            if problem:
                return f"{path.name}: {problem}"
    except PermissionError as err:
        raise PermissionError(
            f"permission denied reading the cached base model file {err.filename}"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError, KeyError, TypeError, IndexError) as err:
        return f"a file cannot be read back ({type(err).__name__}: {err})"
    return None


def share_with_umask(directory: Path) -> None:
    """Give a built folder the modes the umask allows (``save_pretrained`` writes safetensors as 0600,
    which other users of a shared cache could not read)."""
    directory.chmod(file_mode(directory=True))
    for path in directory.iterdir():
        if path.is_file():
            path.chmod(file_mode())


def ensure_base_model(
    base: BaseModelConfig, data: DataConfig, *, name: str = "tiny", force: bool = False
) -> Path:
    """Return the directory of the built-in base model, building it first if it is not cached.

    A cached folder whose files do not match its manifest (truncated, edited, half-copied) is rebuilt with
    a warning: it is a cache, so nothing is lost.
    """
    out_dir = base_model_dir(base, data, name)
    if not force and cache_problem(out_dir) is None:
        return out_dir
    # One builder at a time (notebooks, tests and the runner may ask for the same model concurrently).
    with file_lock(out_dir.with_suffix(".lock"), what=f"building {out_dir.name}"):
        problem = None if force else cache_problem(out_dir)
        if not force and problem is None:
            return out_dir
        if out_dir.exists():
            if (out_dir / MANIFEST_NAME).exists() and not force:
                log.warning("cached base model %s is damaged (%s); rebuilding it", out_dir, problem)
            shutil.rmtree(out_dir)
        _build_base_model(base, data, name, out_dir)
    return out_dir


def _build_base_model(base: BaseModelConfig, data: DataConfig, name: str, out_dir: Path) -> None:
    from ebft_repro.architectures import count_parameters, make_causal_lm

    started = time.time()
    seed_everything(base.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    documents = pretraining_corpus(base, data)
    log.info("pretraining corpus: %d documents", len(documents))
    tokenizer = train_tokenizer(documents, base.vocab_size, out_dir)
    chunks = _token_stream(documents, tokenizer, base.pretrain_seq_len)
    seed_everything(base.seed)
    model = make_causal_lm(
        base,
        len(tokenizer),
        bos_id=tokenizer.bos_token_id,
        eos_id=tokenizer.eos_token_id,
        pad_id=tokenizer.pad_token_id,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    curve = pretrain_lm(model.to(device), chunks, base)
    model.to("cpu").save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    write_json(
        out_dir / BUILD_LOG_NAME,
        {
            "name": name,
            "base": dataclasses.asdict(base),
            "data": dataclasses.asdict(data),
            "n_documents": len(documents),
            "n_chunks": int(chunks.shape[0]),
            "n_parameters": count_parameters(model),
            "loss_curve": curve,
            "seconds": round(time.time() - started, 1),
        },
    )
    share_with_umask(out_dir)
    write_json(out_dir / MANIFEST_NAME, _manifest(out_dir))  # last: its presence means the build finished
