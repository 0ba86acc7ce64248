"""Evaluation loops returning metric dicts: validation CE, feature matching, downstream accuracy.

- Validation CE (spec 6.3): token-mean NLL over packed validation chunks, over all tokens (the authors'
  ``evaluate``) and over answer tokens only; both are reported (project decision, spec 12).
- Feature matching: the unbiased CFM estimate (paper eq. 2) on strided rollouts of validation chunks, plus
  the mean training reward (with the training whitening, so its scale depends on that choice).
- Downstream: n samples per test prompt (KV cache, T=0.6, top-p 0.95); coding verdicts come from the
  sandbox and are summarised by the unbiased pass@k of Chen et al. (2021); translation by corpus BLEU and
  chrF on the first sample, per direction and macro-averaged.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import torch

from ebft_repro.data import PackedChunks
from ebft_repro.ebft import sample_rollouts, score_rollouts
from ebft_repro.evaluation.metrics import (
    bleu_statistics,
    clean_translation,
    corpus_bleu,
    corpus_chrf,
    extract_code,
    mean_pass_at_k,
    pass_at_k,
    sentence_chrf,
)
from ebft_repro.evaluation.sandbox import Program, run_unit_tests_batch
from ebft_repro.generation import concat_completions, decode_completions, left_pad, sample_completions
from ebft_repro.losses import cfm_estimate
from ebft_repro.tasks.base import LANG_NAMES, QA_STOP_MARKER, Example

log = logging.getLogger(__name__)

__all__ = [
    "pass_at_k",
    "validation_ce",
    "feature_matching_eval",
    "downstream_eval",
    "verifier_rewards",
]


@torch.no_grad()
def validation_ce(model: torch.nn.Module, chunks: PackedChunks, *, batch_size: int = 8) -> dict[str, float]:
    """Token-mean NLL over all targets and over answer targets of packed chunks (plain causal mask)."""
    device = next(model.parameters()).device
    total = {"all": 0.0, "answer": 0.0}
    counts = {"all": 0, "answer": 0}
    was_training = model.training
    model.eval()
    for start in range(0, len(chunks), batch_size):
        ids = chunks.input_ids[start : start + batch_size].to(device)  # (b, L)
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()  # (b, L-1, V)
        nll = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), ids[:, 1:], reduction="none"
        )  # (b, L-1)
        for name, mask in (
            ("all", chunks.target_mask[start : start + batch_size]),
            ("answer", chunks.answer_target_mask[start : start + batch_size]),
        ):
            mask = mask.to(device)
            total[name] += float((nll * mask).sum())
            counts[name] += int(mask.sum())
    model.train(was_training)
    return {
        "val_ce": total["all"] / max(counts["all"], 1),
        "val_ce_answer": total["answer"] / max(counts["answer"], 1),
    }


@torch.no_grad()
def feature_matching_eval(
    policy: torch.nn.Module,
    feature_net,
    chunks: torch.Tensor,
    *,
    sampler_cfg,
    loss_cfg,
    generator: torch.Generator,
) -> dict[str, float]:
    """CFM estimate and mean reward of n strided rollouts per validation chunk.

    Args:
        chunks: (B, L) validation chunks.
    """
    n_samples = sampler_cfg.n_samples
    device = next(policy.parameters()).device
    was_training = policy.training
    policy.eval()
    repeated = chunks.to(device).repeat_interleave(n_samples, dim=0)  # (B*N, L)
    rollouts = sample_rollouts(policy, repeated, sampler_cfg, generator)
    policy.train(was_training)
    scores = score_rollouts(feature_net, rollouts, n_samples, loss_cfg)
    metrics = {"val_fm_reward": scores.rewards.reward.mean().item()}
    if n_samples > 1:
        metrics["val_fm_loss"] = cfm_estimate(scores.gen_feats, scores.gt_feats).mean().item()
    return metrics


def sandbox_program(example: Example, code: str) -> Program:
    """What the sandbox runs for ``code`` written for a coding example.

    HumanEval examples carry their ``check`` function in ``meta["check_program"]`` and their prompt holds
    the signature: the program is prompt + completion, the one test is the check program followed by
    ``check(<entry point>)``, and the prompt is also the trusted ``setup``, so helpers it defines (e.g.
    ``poly``) are the task's own when the test calls them. Q&A problems run the code against their own
    unit tests.
    """
    check = example.meta.get("check_program") if example.meta else None
    if check:
        test = check + "\n\n" + "\n".join(example.unit_tests)
        return Program(example.prompt + code, (test,), setup=example.prompt, entry_point=example.entry_point)
    return Program(code, tuple(example.unit_tests))


def verifier_rewards(examples: list[Example], texts: list[str], *, timeout_s: float = 3.0) -> list[float]:
    """The task verifier: unit-test pass fraction (sandboxed) for code, sentence chrF for translation."""
    rewards: list[float | None] = [None] * len(texts)
    programs, slots = [], []
    for i, (example, text) in enumerate(zip(examples, texts)):
        if example.direction is not None:
            rewards[i] = sentence_chrf(
                clean_translation(text, _target_name(example)), example.completion.strip()
            )
            continue
        programs.append(sandbox_program(example, extract_code(text, QA_STOP_MARKER)))
        slots.append(i)
    for i, verdict in zip(slots, run_unit_tests_batch(programs, timeout_s=timeout_s)):
        rewards[i] = verdict.pass_fraction
    return [float(r) for r in rewards]


@torch.no_grad()
def sample_for_prompts(
    model: torch.nn.Module,
    tokenizer,
    examples: list[Example],
    *,
    n_samples: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    generator,
    batch_size: int = 64,
) -> tuple[list[str], object]:
    """Sample ``n_samples`` completions per example (prompt-major order).  Prompts use special tokens.

    ``generator`` is one torch generator, or one per completion row (prompt-major).  Rows are generated
    ``batch_size`` at a time; the returned Completions hold every row (B = examples x n_samples).
    """
    device = next(model.parameters()).device
    prompt_tokens = [tokenizer(ex.prompt, add_special_tokens=True)["input_ids"] for ex in examples]
    rows = [ids for ids in prompt_tokens for _ in range(n_samples)]
    texts, parts = [], []
    was_training = model.training
    model.eval()
    for start in range(0, len(rows), batch_size):
        ids, mask = left_pad(rows[start : start + batch_size], tokenizer.pad_token_id)
        part = sample_completions(
            model,
            ids.to(device),
            mask.to(device),
            max_new_tokens=max_new_tokens,
            eos_id=tokenizer.eos_token_id,
            pad_id=tokenizer.pad_token_id,
            temperature=temperature,
            top_p=top_p,
            generator=generator[start : start + batch_size] if isinstance(generator, list) else generator,
        )
        texts += decode_completions(tokenizer, part)
        parts.append(part)
    model.train(was_training)
    return texts, concat_completions(parts, tokenizer.pad_token_id)


def downstream_eval(
    model: torch.nn.Module,
    tokenizer,
    examples: list[Example],
    eval_cfg,
    *,
    generator: torch.Generator,
    records: dict | None = None,
) -> dict[str, float]:
    """Downstream accuracy on test prompts: pass@1 / pass@n for code, BLEU / chrF for translation.

    With ``records`` (a dict), also the per-prompt outcomes a paired comparison resamples
    (``experiments/paired.py``), in prompt order: ``correct`` (correct samples of each prompt, out of
    ``n_samples``) for code; ``directions`` and ``bleu_stats`` (BLEU's sufficient statistics of each first
    sample, :func:`~ebft_repro.evaluation.metrics.bleu_statistics`) for translation.
    """
    if not examples:
        log.warning("downstream_eval: no prompts to evaluate (all filtered or empty split)")
        return {}
    n_samples = eval_cfg.n_samples
    texts, _ = sample_for_prompts(
        model,
        tokenizer,
        examples,
        n_samples=n_samples,
        max_new_tokens=eval_cfg.max_new_tokens,
        temperature=eval_cfg.temperature,
        top_p=eval_cfg.top_p,
        generator=generator,
    )
    if examples and examples[0].direction is not None:
        if records is not None:
            records |= translation_records(examples, texts[::n_samples])
        return translation_scores(examples, texts[::n_samples]) | {"eval_prompts": len(examples)}
    repeated = [ex for ex in examples for _ in range(n_samples)]
    fractions = verifier_rewards(repeated, texts)
    correct = [
        sum(f == 1.0 for f in fractions[i * n_samples : (i + 1) * n_samples]) for i in range(len(examples))
    ]
    if records is not None:
        records |= {"n_samples": n_samples, "correct": correct}
    return {
        "pass@1": mean_pass_at_k(correct, n_samples, 1),
        f"pass@{n_samples}": mean_pass_at_k(correct, n_samples, n_samples),
        "unit_test_pass_frac": sum(fractions) / max(len(fractions), 1),
        "correct_samples": sum(correct),
        "eval_samples": len(fractions),
        "solved_prompts": sum(c > 0 for c in correct),
        "eval_prompts": len(examples),
    }


def translation_records(examples: list[Example], first_samples: list[str]) -> dict[str, list]:
    """Per prompt, its direction and the BLEU statistics of its cleaned first sample."""
    hyps = [clean_translation(text, _target_name(ex)) for ex, text in zip(examples, first_samples)]
    stats = bleu_statistics(hyps, [ex.completion.strip() for ex in examples])
    return {"directions": [ex.direction for ex in examples], "bleu_stats": stats}


def _target_name(example: Example) -> str:
    return LANG_NAMES.get(example.direction.split("-")[1], "English")


def translation_scores(examples: list[Example], first_samples: list[str]) -> dict[str, float]:
    """Corpus BLEU and chrF per direction on the first sample, and their macro-average."""
    by_direction: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for example, text in zip(examples, first_samples):
        hyps, refs = by_direction[example.direction]
        hyps.append(clean_translation(text, _target_name(example)))
        refs.append(example.completion.strip())
    metrics = {}
    for direction, (hyps, refs) in sorted(by_direction.items()):
        metrics[f"bleu_{direction}"] = corpus_bleu(hyps, refs)
        metrics[f"chrf_{direction}"] = corpus_chrf(hyps, refs)
    directions = sorted(by_direction)
    metrics["bleu"] = sum(metrics[f"bleu_{d}"] for d in directions) / len(directions)
    metrics["chrf"] = sum(metrics[f"chrf_{d}"] for d in directions) / len(directions)
    return metrics


def primary_metric(task: str) -> str:
    """The downstream accuracy each task is judged by."""
    return "bleu" if task == "translation" else "pass@1"
