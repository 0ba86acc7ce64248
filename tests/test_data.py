"""Packing into fixed chunks (spec 6.1) and split hygiene."""

import pytest
import torch

from ebft_repro.data import pack_examples
from ebft_repro.tasks.base import Example


class CharTokenizer:
    """One token per character; EOS = 0, PAD = 1 (enough to check packing by hand)."""

    eos_token_id, pad_token_id = 0, 1

    def __call__(self, text, add_special_tokens=False):
        assert add_special_tokens is False  # training chunks never get a BOS (pitfall 12)
        return {"input_ids": [ord(c) for c in text]}


def test_packing_by_hand():
    examples = [
        Example(prompt="ab", completion="c"),
        Example(prompt="", completion="de"),
        Example(prompt="f", completion="g"),
    ]
    packed = pack_examples(examples, CharTokenizer(), seq_len=4)
    # stream: a b c EOS | d e EOS f | g EOS PAD PAD   (one EOS between examples; only the last chunk padded)
    a, b, c, d, e, f, g = (ord(x) for x in "abcdefg")
    assert packed.input_ids.tolist() == [[a, b, c, 0], [d, e, 0, f], [g, 0, 1, 1]]
    assert packed.doc_ids.tolist() == [[0, 0, 0, 0], [1, 1, 1, 2], [2, 2, -1, -1]]
    assert packed.answer_mask.tolist() == [
        [False, False, True, True],
        [True, True, True, False],
        [True, True, False, False],
    ]
    # next-token targets: padding never counts
    assert packed.target_mask[2].tolist() == [True, False, False]
    assert packed.answer_target_mask[0].tolist() == [False, True, True]


def test_packing_caps_chunks_and_rejects_empty_input():
    examples = [Example(prompt="x" * 10, completion="y" * 10)] * 5
    assert len(pack_examples(examples, CharTokenizer(), seq_len=8, max_chunks=3)) == 3
    with pytest.raises(ValueError):
        pack_examples([], CharTokenizer(), seq_len=8)


def test_packing_shapes_and_dtypes():
    packed = pack_examples([Example(prompt="hello", completion=" world")] * 7, CharTokenizer(), seq_len=16)
    assert packed.input_ids.dtype == torch.long and packed.answer_mask.dtype == torch.bool
    assert packed.input_ids.shape == packed.doc_ids.shape == packed.answer_mask.shape
    assert (packed.doc_ids[:-1] >= 0).all()  # only the final chunk can hold padding


def test_no_test_prompt_appears_in_training_data():
    from ebft_repro import config
    from ebft_repro.data import load_task

    data = config.tiny().data
    for task in config.TASKS:
        splits = load_task(task, data)
        train_text = "\n".join(ex.prompt + ex.completion for ex in splits.train)
        train_uids = {ex.uid for ex in splits.train}
        for ex in splits.test + splits.validation:
            assert ex.uid not in train_uids, (task, ex.uid)
            if ex.prompt:
                assert ex.prompt not in train_text, (task, ex.uid)
