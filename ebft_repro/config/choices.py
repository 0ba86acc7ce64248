"""The allowed values of the configuration's choice fields; validation errors list them."""

from __future__ import annotations

import re

TASKS = ("qa_code", "code", "translation")
METHODS = ("ebft", "sft", "rlvr", "ebft_fm")
"""``ebft_fm``: EBFT with ``loss.ce_coef`` (gamma) = 0, feature matching alone; a control for how much of
EBFT's effect comes from its gamma * CE term (issue 27). It trains through the EBFT step."""
CONTROLS = ("ebft_fm",)
"""Methods that are controls of EBFT rather than the paper's baselines: no claim of the paper names them."""
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
