"""ebft_repro: a reference reproduction of Energy-Based Fine-Tuning (EBFT).

"Matching Features, Not Tokens: Energy-Based Fine-Tuning of Language Models"
(Jelassi et al., arXiv 2603.12248). The method is specified in ``docs/ebft_spec.md``.

Shape legend used in comments and docstrings throughout the package:

    B = prompts / packed chunks in a batch      N = samples per prompt (the paper's n)
    P = prompt tokens                           T = completion tokens
    V = vocabulary size                         D = feature dimension (3 concatenated layers x hidden)
    L = ground-truth tokens per packed chunk    s = stride between block anchors
    C = first-anchor offset (NOT a window)      G = block length (generated tokens per block)
    K = blocks per chunk = (L - G - C) / s + 1  S = L + K * G (full strided sequence)
    M = RLOO groups (B * K (chunk, block)       r = rank of a group's rollout features
        contexts in EBFT, prompts in RLVR)

Generated token (k, t) of a strided sequence lives at index L + t * K + k (step-major, block-minor) and has
position id C + k * s + t, the position of the ground-truth token it replaces (spec section 3.1).

Importing this package is cheap: no model, tokenizer or dataset is loaded and no device is chosen.
"""

__version__ = "0.1.0"
