"""Strided layout, mask and positions (spec 3.3), and the KV-cached sampler against two references."""

import pytest
import torch

from ebft_repro.sampler import (
    StridedLayout,
    deinterleave_blocks,
    strided_attention_mask,
    strided_generate,
    strided_logprobs,
    strided_position_ids,
)

# The worked example of spec section 3.3 (L=16, s=4, C=4, G=4 -> K=3, S=28), generated rows 16..27.
WORKED_ROWS = {
    16: "####............|#...........",
    17: "########........|.#..........",
    18: "############....|..#.........",
    19: "####............|#..#........",
    20: "########........|.#..#.......",
    21: "############....|..#..#......",
    22: "####............|#..#..#.....",
    23: "########........|.#..#..#....",
    24: "############....|..#..#..#...",
    25: "####............|#..#..#..#..",
    26: "########........|.#..#..#..#.",
    27: "############....|..#..#..#..#",
}
WORKED_POSITIONS = list(range(16)) + [4, 8, 12, 5, 9, 13, 6, 10, 14, 7, 11, 15]


def _draw(row: torch.Tensor) -> str:
    chars = "".join("#" if allowed else "." for allowed in row.tolist())
    return chars[:16] + "|" + chars[16:]


def test_layout_geometry():
    layout = StridedLayout(16, 4, 4, 4)
    assert (layout.n_blocks, layout.total_len) == (3, 28)
    assert [layout.anchor(k) for k in range(3)] == [4, 8, 12]
    assert [layout.gen_index(0, t) for t in range(4)] == [16, 19, 22, 25]
    assert [layout.gen_index(2, t) for t in range(4)] == [18, 21, 24, 27]
    assert [layout.gen_position(1, t) for t in range(4)] == [8, 9, 10, 11]
    paper = StridedLayout(1024, 8, 8, 8)
    assert (paper.n_blocks, paper.total_len) == (127, 2040)
    translation = StridedLayout(1024, 2, 4, 4)
    assert (translation.n_blocks, translation.total_len) == (509, 3060)


@pytest.mark.parametrize(
    "args, field",
    [
        ((17, 4, 4, 4), "stride"),
        ((16, 4, 0, 4), "context_len"),
        ((16, 4, 4, 0), "gen_len"),
        ((6, 1, 4, 4), "seq_len"),
    ],
)
def test_layout_errors_name_the_field(args, field):
    with pytest.raises(ValueError, match=field):
        StridedLayout(*args)


def test_worked_example_mask_and_positions():
    layout = StridedLayout(16, 4, 4, 4)
    mask = strided_attention_mask(layout)
    assert mask.dtype == torch.bool and mask.shape == (28, 28)
    for row in range(16):  # prompt rows: plain causal, blind to generated columns
        assert _draw(mask[row]) == _draw(torch.arange(28) <= row) and not mask[row, 16:].any()
    for row, drawn in WORKED_ROWS.items():
        assert _draw(mask[row]) == drawn, row
    assert strided_position_ids(layout).tolist() == WORKED_POSITIONS


def test_partial_mask_is_a_prefix_of_the_full_mask():
    layout = StridedLayout(16, 4, 4, 4)
    full = strided_attention_mask(layout)
    for n_steps in range(5):
        size = 16 + 3 * n_steps
        assert torch.equal(strided_attention_mask(layout, n_steps), full[:size, :size])
        assert torch.equal(strided_position_ids(layout, n_steps), strided_position_ids(layout)[:size])


def test_deinterleave_is_step_major_to_block_major():
    layout = StridedLayout(16, 4, 4, 4)
    gen_index = torch.arange(16, 28)[None]  # (1, G*K): the index of each generated column
    blocks = deinterleave_blocks(gen_index, layout)  # (1, K, G)
    assert blocks[0].tolist() == [[layout.gen_index(k, t) for t in range(4)] for k in range(3)]


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.6, 0.9)])
def test_cache_and_no_cache_give_identical_tokens(any_model, temperature, top_p):
    input_ids = torch.randint(0, 64, (3, 24), generator=torch.Generator().manual_seed(0))
    kwargs = dict(stride=4, context_len=4, gen_len=4, temperature=temperature, top_p=top_p)
    cached = strided_generate(
        any_model, input_ids, generator=torch.Generator().manual_seed(7), use_cache=True, **kwargs
    )
    full = strided_generate(
        any_model, input_ids, generator=torch.Generator().manual_seed(7), use_cache=False, **kwargs
    )
    assert torch.equal(cached.sequences, full.sequences)
    assert cached.sequences.shape == (3, 24 + 5 * 4) and cached.blocks.shape == (3, 5, 4)
    assert torch.equal(cached.sequences[:, :24], input_ids)
    other = strided_generate(any_model, input_ids, generator=torch.Generator().manual_seed(8), **kwargs)
    assert not torch.equal(other.sequences, cached.sequences)  # the generator really drives the draws


def test_greedy_equals_independent_generate_per_prefix(any_model):
    layout = StridedLayout(24, 4, 4, 4)
    input_ids = torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(1))
    rollouts = strided_generate(any_model, input_ids, stride=4, context_len=4, gen_len=4, temperature=0.0)
    for k in range(layout.n_blocks):
        prefix = input_ids[:, : layout.anchor(k)]
        reference = any_model.generate(
            prefix, attention_mask=torch.ones_like(prefix), max_new_tokens=4, do_sample=False, pad_token_id=0
        )
        assert torch.equal(reference[:, layout.anchor(k) :], rollouts.blocks[:, k]), k


def test_blocks_match_sequence_layout(tiny_llama):
    rollouts = strided_generate(
        tiny_llama,
        torch.randint(0, 64, (2, 16)),
        stride=4,
        context_len=4,
        gen_len=4,
        generator=torch.Generator(),
    )
    layout = rollouts.layout
    for k in range(layout.n_blocks):
        for t in range(layout.gen_len):
            assert torch.equal(rollouts.sequences[:, layout.gen_index(k, t)], rollouts.blocks[:, k, t])


def test_strided_logprobs_match_separate_forwards(tiny_llama):
    """Row alignment of spec 3.4: each generated log-prob equals a plain forward over prefix + block."""
    layout = StridedLayout(16, 4, 4, 4)
    input_ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(3))
    rollouts = strided_generate(
        tiny_llama, input_ids, stride=4, context_len=4, gen_len=4, generator=torch.Generator()
    )
    gen_logps, gt_logps = strided_logprobs(tiny_llama, rollouts.sequences, layout, temperature=0.5)
    plain = torch.log_softmax(tiny_llama(input_ids).logits, -1)
    expected_gt = plain[:, :-1].gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(gt_logps, expected_gt, atol=1e-5, rtol=1e-5)
    for k in range(layout.n_blocks):
        seq = torch.cat([input_ids[:, : layout.anchor(k)], rollouts.blocks[:, k]], dim=1)
        logits = tiny_llama(seq).logits[:, layout.anchor(k) - 1 : -1] / 0.5
        expected = torch.log_softmax(logits, -1).gather(-1, rollouts.blocks[:, k, :, None]).squeeze(-1)
        torch.testing.assert_close(gen_logps[:, k], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("use_cache", [True, False])
def test_sampling_forwards_counts_the_tokens_the_model_sees(any_model, use_cache):
    """The EBFT step's token count (and bench step's FLOPs) used the cached formula for both paths."""
    seen = []

    def count(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        seen.append(ids.shape[1])

    input_ids = torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(0))
    handle = any_model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        out = strided_generate(
            any_model, input_ids, stride=4, context_len=4, gen_len=4, use_cache=use_cache,
            generator=torch.Generator().manual_seed(1),
        )  # fmt: skip
    finally:
        handle.remove()
    assert sum(seen) == out.layout.sampling_forwards(use_cache)
    assert out.layout.sampling_forwards(False) == 4 * 24 + 5 * 4 * 3 // 2
