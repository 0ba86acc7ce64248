"""Build this package's own base model offline: a byte-level BPE tokenizer and a small causal LM.

No hub is reachable here, so the ``builtin:<preset>`` base model is pretrained from scratch on a mixture of
the three task corpora (train splits only): generated Q&A coding problems, CPython standard-library source,
and Spanish/English Bible verse pairs. The base therefore knows the task formats and has non-zero task
accuracy, which RLVR needs for a reward signal. The result is saved with ``save_pretrained`` under
``data/cache/base-<name>-<hash>/``, keyed by a hash of the base and data configs, and reused.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import math
import random
import time
from pathlib import Path

import torch

from .config import BaseModelConfig, DataConfig
from .utils import cache_dir, config_hash, progress, seed_everything, write_json

log = logging.getLogger(__name__)

CORPUS_VERSION = 2  # bump when the corpus recipe changes, so cached base models are rebuilt


def pretraining_corpus(base: BaseModelConfig, data: DataConfig) -> list[str]:
    """Documents for LM pretraining, with every validation/test example of every task held out."""
    from . import tasks
    from .data import load_task

    held_out: set[str] = set()
    for task in tasks.TASK_NAMES:
        task_data = load_task(task, data)
        held_out |= {ex.prompt + ex.completion for ex in task_data.validation + task_data.test}
        held_out |= {ex.uid for ex in task_data.validation + task_data.test if ex.uid}

    qa = tasks.build_splits(
        "qa_code", n_train=base.n_qa_docs, n_val=data.n_val, n_test=data.n_test, seed=data.split_seed
    )
    code = tasks.build_splits(
        "code",
        max_files_per_split={"train": base.n_code_files, "validation": 1, "test": 1},
        max_chars_per_file=data.max_chars_per_file,
        seed=data.split_seed,
    )
    translation = tasks.build_splits(
        "translation",
        n_train=base.n_translation_pairs,
        n_val=data.n_val,
        n_test=data.n_test,
        seed=data.split_seed,
        max_source_chars=data.max_source_chars,
    )
    documents = []
    for examples in (qa["train"], code["train"], translation["train"]):
        for ex in examples:
            if ex.prompt + ex.completion in held_out or (ex.uid and ex.uid in held_out):
                continue
            documents.append(ex.prompt + ex.completion)
    random.Random(base.seed).shuffle(documents)
    return documents


def train_tokenizer(documents: list[str], vocab_size: int, out_dir: Path):
    """Train a byte-level BPE tokenizer and save it as a ``PreTrainedTokenizerFast`` directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from .models import SPECIAL_TOKENS

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


def ensure_base_model(
    base: BaseModelConfig, data: DataConfig, *, name: str = "tiny", force: bool = False
) -> Path:
    """Return the directory of the built-in base model, building it first if it is not cached."""

    out_dir = base_model_dir(base, data, name)
    if (out_dir / "DONE").exists() and not force:
        return out_dir
    # One builder at a time (notebooks, tests and the runner may ask for the same model concurrently).
    with open(out_dir.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out_dir / "DONE").exists() and not force:
            return out_dir
        _build_base_model(base, data, name, out_dir)
    return out_dir


def _build_base_model(base: BaseModelConfig, data: DataConfig, name: str, out_dir: Path) -> None:
    from .models import count_parameters, make_causal_lm

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
        out_dir / "pretrain_log.json",
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
    (out_dir / "DONE").write_text("ok\n")
