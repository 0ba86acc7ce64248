"""The allowed values of the configuration's choice fields; validation errors list them."""

from __future__ import annotations

import re

TASKS = ("qa_code", "code", "translation")
METHODS = ("ebft", "sft", "rlvr")
PRESETS = ("tiny", "cpu", "small", "paper")
WHITENINGS = ("none", "sample", "feature")
"""Reward whitening (spec 2.1): none, the authors' n x n operator on rollouts, or the paper's D x D map."""
POOLINGS = ("last_token", "mean", "concat_quartiles", "concat_all")
"""How a block's G token features become one vector (spec section 5): the last token; the mean; the tokens at
25/50/75% of the block concatenated (the authors' ``concat``); or all G tokens concatenated."""
SCHEDULES = ("constant", "cosine")
KL_ESTIMATORS = ("k1", "k2", "k3")
ARCHITECTURES = ("llama", "qwen2", "gpt2")
DTYPES = ("float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
_DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
