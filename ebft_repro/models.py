"""Load policies, tokenizers and feature networks; build random-init models from a config (no network).

``model`` names resolve as follows: ``builtin:<preset>`` is this package's own base model (pretrained here by
:mod:`ebft_repro.pretrain` and cached under ``data/cache/``); an existing local directory is loaded with
``from_pretrained``; anything else is treated as a Hugging Face hub name (which needs network access or a
populated local HF cache).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ebft_repro.architectures import SPECIAL_TOKENS, count_parameters, make_causal_lm
from ebft_repro.pretrain import ensure_base_model

__all__ = ["SPECIAL_TOKENS", "count_parameters", "make_causal_lm", "load_causal_lm", "load_tokenizer"]

log = logging.getLogger(__name__)


def check_readable(directory: Path) -> None:
    """Open every file of a model folder, so that an unreadable one fails here and not as a confusing
    "file not found" deep inside ``from_pretrained``.

    Raises:
        PermissionError: saying "permission denied", naming the file and how to fix it.
    """
    directory = Path(directory)
    current = directory
    try:
        for current in sorted(directory.iterdir()):
            if current.is_file():
                with open(current, "rb"):
                    pass
    except PermissionError:
        try:
            info = current.stat()
            detail = f" (mode {info.st_mode & 0o777:o}, owner uid {info.st_uid})"
        except OSError:
            detail = ""
        raise PermissionError(
            f"permission denied: cannot read {current}{detail}: ask its owner to make it readable"
            " (chmod a+r), or set EBFT_CACHE_DIR to a cache folder of your own"
        ) from None


def resolve_model_path(name: str, cfg: object | None = None) -> str:
    """Turn ``builtin:<preset>`` into the cached base-model directory (building it if needed).

    Raises:
        ValueError: for a path that is not a saved model; PermissionError for one that cannot be read.
    """
    if name.startswith("builtin:"):
        if cfg is None:
            raise ValueError(f"model={name!r} needs the experiment config to locate the built-in base model")
        path = ensure_base_model(cfg.base, cfg.data, name=name.split(":", 1)[1])
        check_readable(path)
        return str(path)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ValueError(
                f"model={name!r}: the directory has no config.json (not a saved Hugging Face model)"
            )
        check_readable(path)
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ValueError(
            f"model={name!r}: no such local directory (and it is not a hub name like 'org/model')"
        )
    return name


def load_tokenizer(path: str):
    """Load a tokenizer and make sure it has EOS and PAD tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer at {path!r} has no EOS token; EBFT packing needs one")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path: str, *, dtype: str = "float32", device: str | torch.device = "cpu"):
    """Load any Hugging Face causal LM with SDPA attention (eager if SDPA is unsupported)."""
    from transformers import AutoModelForCausalLM

    torch_dtype = getattr(torch, dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, attn_implementation="sdpa")
    except (ValueError, ImportError):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, attn_implementation="eager")
    return model.to(device)


def check_vocab(model, tokenizer, *, where: str = "model") -> None:
    """Raise if the tokenizer can produce ids the model's embedding table does not have."""
    n_embed = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > n_embed:
        raise ValueError(
            f"tokenizer vocabulary ({len(tokenizer)} tokens) does not match the {where}'s embedding table"
            f" ({n_embed} rows): use the tokenizer saved with the model"
        )


def load_policy_and_tokenizer(cfg, device: str | torch.device = "cpu"):
    """The policy to fine-tune and its tokenizer, from ``cfg.model`` (see module docstring)."""
    path = resolve_model_path(cfg.model, cfg)
    tokenizer = load_tokenizer(path)
    model = load_causal_lm(path, dtype=cfg.train.dtype, device=device)
    check_vocab(model, tokenizer)
    return model, tokenizer
