"""Task splits and packed chunks (spec section 6.1).

Each example becomes prompt + completion tokens (no special tokens, so no BOS), examples are joined with
one EOS separator, and the stream is cut into fixed chunks of L tokens; only the last chunk is padded, with
document id -1. Every token carries its document id and whether it belongs to an answer (completion or the
EOS that ends it), for the optional QA masking and the answer-only validation CE.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import torch

from ebft_repro import tasks
from ebft_repro.config import DataConfig
from ebft_repro.tasks import qa_loaders
from ebft_repro.tasks.base import Example

log = logging.getLogger(__name__)


@dataclass
class PackedChunks:
    """Fixed-length training or validation chunks. All tensors are (N, L)."""

    input_ids: torch.Tensor
    doc_ids: torch.Tensor
    """Index of the example each token comes from; -1 on padding."""
    answer_mask: torch.Tensor
    """True on completion tokens and the EOS that ends them."""

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def target_mask(self) -> torch.Tensor:
        """(N, L-1): next-token targets that count (not padding)."""
        return self.doc_ids[:, 1:] >= 0

    @property
    def answer_target_mask(self) -> torch.Tensor:
        """(N, L-1): next-token targets inside an answer."""
        return self.answer_mask[:, 1:] & self.target_mask


@dataclass
class TaskData:
    """The three splits of a task, as text examples."""

    task: str
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    eval_task: str
    """Task whose test prompts measure downstream accuracy (``qa_code`` for unstructured code)."""

    def split(self, name: str) -> list[Example]:
        if name not in ("train", "validation", "test"):
            raise ValueError(f"split={name!r} is not one of ('train', 'validation', 'test')")
        return getattr(self, name)


def _build(task: str, data: DataConfig) -> dict[str, list[Example]]:
    if task == "qa_code":
        if data.source:
            records, skipped = qa_loaders.load_records(data.source, split="train")
            log.info("loaded %d records from %s (skipped: %s)", len(records), data.source, skipped)
            n_hold = data.n_val + data.n_test
            return {
                "train": records[n_hold:],
                "validation": records[: data.n_val],
                "test": records[data.n_val : n_hold],
            }
        return tasks.build_splits(
            "qa_code", n_train=data.n_train, n_val=data.n_val, n_test=data.n_test, seed=data.split_seed
        )
    if task == "code":
        limits = {"train": data.n_train, "validation": data.n_val, "test": data.n_test}
        return tasks.build_splits(
            "code",
            max_files_per_split=limits,
            max_chars_per_file=data.max_chars_per_file,
            seed=data.split_seed,
        )
    return tasks.build_splits(
        "translation",
        n_train=data.n_train,
        n_val=data.n_val,
        n_test=data.n_test,
        seed=data.split_seed,
        max_source_chars=data.max_source_chars,
    )


@lru_cache(maxsize=16)
def load_task(task: str, data: DataConfig) -> TaskData:
    """Build (or fetch from the in-process cache) the splits of ``task`` for a data config."""
    splits = _build(task, data)
    eval_task = "qa_code" if task == "code" else task
    return TaskData(task, splits["train"], splits["validation"], splits["test"], eval_task)


def load_eval_examples(task: str, data: DataConfig, split: str) -> list[Example]:
    """Downstream prompts: the task's own split, or Q&A coding's for unstructured code."""
    task_data = load_task(task, data)
    if task_data.eval_task == task:
        return task_data.split(split)
    return load_task(task_data.eval_task, data).split(split)


def pack_examples(
    examples: list[Example], tokenizer, seq_len: int, *, max_chunks: int | None = None
) -> PackedChunks:
    """Pack examples into fixed chunks of ``seq_len`` tokens (spec 6.1; see module docstring).

    Raises:
        ValueError: if there is nothing to pack or the tokenizer has no EOS token.
    """
    if not examples:
        raise ValueError("pack_examples got no examples")
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    if eos_id is None:
        raise ValueError("the tokenizer has no EOS token; packing needs one as the separator")
    pad_id = eos_id if pad_id is None else pad_id
    ids: list[int] = []
    docs: list[int] = []
    answer: list[bool] = []
    budget = None if max_chunks is None else max_chunks * seq_len
    for doc, example in enumerate(examples):
        prompt_ids = (
            tokenizer(example.prompt, add_special_tokens=False)["input_ids"] if example.prompt else []
        )
        completion_ids = tokenizer(example.completion, add_special_tokens=False)["input_ids"]
        if not prompt_ids and not completion_ids:
            log.warning("pack_examples: skipping empty example %s", example.uid or doc)
            continue
        ids += prompt_ids + completion_ids + [eos_id]
        docs += [doc] * (len(prompt_ids) + len(completion_ids) + 1)
        answer += [False] * len(prompt_ids) + [True] * (len(completion_ids) + 1)
        if budget is not None and len(ids) >= budget:
            break
    n_chunks = -(-len(ids) // seq_len)
    if max_chunks is not None:
        n_chunks = min(n_chunks, max_chunks)
    total = n_chunks * seq_len
    n_pad = max(0, total - len(ids))
    input_ids = torch.tensor((ids + [pad_id] * n_pad)[:total]).view(n_chunks, seq_len)  # (N, L)
    doc_ids = torch.tensor((docs + [-1] * n_pad)[:total]).view(n_chunks, seq_len)  # (N, L)
    answer_mask = torch.tensor((answer + [False] * n_pad)[:total]).view(n_chunks, seq_len)  # (N, L)
    return PackedChunks(input_ids, doc_ids, answer_mask)


_PACKED: dict[tuple, PackedChunks] = {}


def packed_split(task: str, data: DataConfig, split: str, tokenizer) -> PackedChunks:
    """Packed chunks of one split (validation is capped at ``data.n_val_chunks``); cached per tokenizer."""
    key = (task, data, split, getattr(tokenizer, "name_or_path", ""), len(tokenizer))
    if key not in _PACKED:
        examples = load_task(task, data).split(split)
        max_chunks = data.n_val_chunks if split != "train" else None
        _PACKED[key] = pack_examples(examples, tokenizer, data.seq_len, max_chunks=max_chunks)
    return _PACKED[key]
