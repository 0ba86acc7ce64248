"""Full-completion sampling (RLVR rollouts, downstream evaluation) split into micro-batches."""

import torch

from ebft_repro.evaluation.downstream import sample_for_prompts
from ebft_repro.generation import completion_logprobs
from ebft_repro.models import load_causal_lm, load_tokenizer
from ebft_repro.tasks.base import Example
from ebft_repro.utils import row_generators


def _sample(model, tokenizer, examples, batch_size):
    n_samples = 2
    return sample_for_prompts(
        model,
        tokenizer,
        examples,
        n_samples=n_samples,
        max_new_tokens=6,
        temperature=1.0,
        top_p=1.0,
        generator=row_generators(0, 0, "sample", list(range(len(examples) * n_samples))),
        batch_size=batch_size,
    )


def test_micro_batched_sampling_returns_every_row(model_dirs):
    """Defect: only the last micro-batch's Completions came back, so RLVR needed one batch for everything."""
    model = load_causal_lm(str(model_dirs["llama"])).eval()
    tokenizer = load_tokenizer(str(model_dirs["llama"]))
    prompts = ["def f(x):", "Write a function that adds two numbers.", "print(", "Q: reverse a list"]
    examples = [Example(prompt=p, completion="") for p in prompts]

    texts_whole, whole = _sample(model, tokenizer, examples, batch_size=64)
    texts_split, split = _sample(model, tokenizer, examples, batch_size=3)  # 8 rows -> 3 + 3 + 2

    assert texts_split == texts_whole  # per-row generators: batching never changes what is sampled
    assert split.completion_ids.shape[0] == len(texts_split) == 8
    for field in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask"):
        assert getattr(split, field).shape[0] == 8, field
    # The padded rows are the same sequences: identical masked tokens and log-probs.
    assert torch.equal(split.completion_mask.sum(1), whole.completion_mask.sum(1))
    keep = whole.completion_mask
    assert torch.equal(split.completion_ids[:, : keep.shape[1]][keep], whole.completion_ids[keep])
    with torch.no_grad():
        lp_whole = completion_logprobs(model, whole, temperature=1.0).sum(1)
        lp_split = completion_logprobs(model, split, temperature=1.0).sum(1)
    torch.testing.assert_close(lp_split, lp_whole, rtol=1e-5, atol=1e-5)
