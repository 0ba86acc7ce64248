"""Q&A coding task: synthetic function-writing problems and their disjoint splits.

Synthetic problems come from :mod:`ebft_repro.tasks.qa_templates`. An instance (template, function name,
argument names, parameter variant) fixes the question text, the reference function and its unit tests:
test inputs are drawn from ``random.Random(uid)`` and expected values are computed by executing the
reference in-process (our own trusted code), so the same uid always means the same problem.

Every unit test is a single Python statement (an ``assert``); the test program is the candidate source
followed by one test. Records from files, hub datasets and HumanEval are read by
:mod:`ebft_repro.tasks.qa_loaders`.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import random
import textwrap
from collections.abc import Iterator
from typing import Any

from ebft_repro.tasks.base import QA_PROMPT_TEMPLATE, Example
from ebft_repro.tasks.qa_templates import TEMPLATES, Template


def make_problem(template: Template, name: str, args: tuple[str, ...], variant: dict) -> Example:
    """Build one problem instance: question, reference source, and 3-6 single-assert unit tests."""
    fmt = {f"a{i}": a for i, a in enumerate(args)} | variant
    fname = name.format(**variant)
    signature = f"{fname}({', '.join(args)})"
    question = f"Write a Python function `{signature}` that {template.question.format(**fmt)}"
    source = f"def {signature}:\n" + textwrap.indent(template.body.format(**fmt), "    ")
    key = json.dumps([fname, list(args), variant], sort_keys=True)
    uid = f"qa-{template.name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    namespace: dict[str, Any] = {}
    exec(compile(source, uid, "exec"), namespace)  # noqa: S102 - our own reference code
    fn = namespace[fname]
    rng = random.Random(uid)
    candidates, seen = [], set()
    for _ in range(60):
        inputs = template.inputs(rng, variant)
        if repr(inputs) in seen:
            continue
        seen.add(repr(inputs))
        try:
            candidates.append((inputs, fn(*copy.deepcopy(inputs))))
        except Exception:  # noqa: BLE001 - an input outside the reference's domain is just not used
            continue
    n_tests = rng.randint(3, 6)
    candidates.sort(key=lambda c: -len(repr(c[0])))  # stable: larger inputs first
    chosen = candidates[-1:]  # one edge case: the smallest input
    outputs = {repr(out) for _, out in chosen}
    for inputs, out in candidates:  # then larger inputs with distinct expected values
        if len(chosen) < n_tests and repr(out) not in outputs:
            chosen.append((inputs, out))
            outputs.add(repr(out))
    chosen += [c for c in candidates if c not in chosen][: n_tests - len(chosen)]
    if len(chosen) < 3:
        raise RuntimeError(f"template {template.name}: only {len(chosen)} usable test inputs")
    tests = []
    for inputs, out in chosen:
        call = f"{fname}({', '.join(map(repr, inputs))})"
        tests.append(f"assert {call} is {out}" if isinstance(out, bool) else f"assert {call} == {out!r}")
    return Example(
        prompt=QA_PROMPT_TEMPLATE.format(question=question),
        completion=source + "\n",
        unit_tests=tuple(tests),
        entry_point=fname,
        uid=uid,
        meta={"template": template.name, "question": question},
    )


def _iter_instances(seed: int = 0) -> Iterator[tuple[Template, str, tuple[str, ...], int]]:
    """(template, function name, argument names, variant index) in the round-robin order of the problems."""
    rng = random.Random(seed)
    pools = {}
    for t in TEMPLATES:
        pool = list(itertools.product(t.names, t.args, range(len(t.variants))))
        rng.shuffle(pool)
        pools[t.name] = (t, pool)
    while True:
        live = [name for name, (_, pool) in pools.items() if pool]
        if not live:
            return
        rng.shuffle(live)
        for name in live:
            template, pool = pools[name]
            fname, args, v = pool.pop()
            yield template, fname, args, v


def iter_problems(seed: int = 0) -> Iterator[Example]:
    """Yield distinct problems, cycling over templates in a per-round shuffled order.

    Each template's instances are enumerated and shuffled, then drawn without replacement; a template
    whose instances run out leaves the rotation. ``meta["semantic"]`` names the instance up to renaming
    (template and parameter variant), which is what splits keep disjoint.
    """
    seen: set[str] = set()
    for template, fname, args, v in _iter_instances(seed):
        example = _problem(template, fname, args, v)
        if example.prompt not in seen:
            seen.add(example.prompt)
            yield example


def _problem(template: Template, fname: str, args: tuple[str, ...], v: int) -> Example:
    example = make_problem(template, fname, args, template.variants[v])
    example.meta["semantic"] = f"{template.name}:{v}"
    return example


def generate_problems(n: int, seed: int = 0) -> list[Example]:
    """The first ``n`` problems of :func:`iter_problems`.

    Raises:
        ValueError: when fewer than ``n`` distinct problems exist.
    """
    problems = list(itertools.islice(iter_problems(seed), n))
    if len(problems) < n:
        raise ValueError(f"only {len(problems)} distinct Q&A problems exist, {n} requested")
    return problems


SPLITS = ("test", "validation", "train", "pretrain")
"""Every instance (template and parameter variant, any renaming) belongs to exactly one of these."""


def _stable_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def instance_splits(seed: int = 0) -> dict[str, str]:
    """Assign every instance (``meta["semantic"]``, i.e. template:variant) to one split.

    Within each template the variants are ordered by a seeded sha256 and dealt round-robin to test,
    validation, train and pretrain, so every evaluated template also has variants in both training pools
    (test problems are new parameter variants of templates seen in pretraining and in fine-tuning).
    Templates with fewer than four variants are never evaluated: their variants alternate between train
    and pretrain.
    """
    assignment = {}
    for template in TEMPLATES:
        keys = sorted(
            (f"{template.name}:{v}" for v in range(len(template.variants))),
            key=lambda key: _stable_hash(f"{seed}:{key}"),
        )
        cycle = SPLITS if len(keys) >= len(SPLITS) else SPLITS[2:]
        offset = 0 if cycle is SPLITS else int(_stable_hash(f"{seed}:{template.name}")[:8], 16)
        for index, key in enumerate(keys):
            assignment[key] = cycle[(index + offset) % len(cycle)]
    return assignment


def build_splits(
    n_train: int, n_val: int, n_test: int, seed: int = 0, n_pretrain: int | None = None
) -> dict[str, list[Example]]:
    """Deterministic test/validation/train/pretrain splits that share no instance.

    An instance is a template with one parameter variant, whatever the function and argument names
    (:func:`instance_splits` decides its split). Test and validation hold one renaming per instance, so
    every evaluated problem is distinct; train and pretrain hold any renamings of their instances, in the
    round-robin order of :func:`iter_problems`. The test set does not depend on ``n_train``, ``n_val`` or
    ``n_pretrain``. ``pretrain`` feeds the built-in base model's corpus (:mod:`ebft_repro.pretrain`), so
    fine-tuning data is new to the base model.

    Args:
        n_train, n_val, n_test: split sizes (problems).
        seed: the generator and split seed.
        n_pretrain: at most this many pretraining problems (None: all of its instances' renamings).

    Raises:
        ValueError: when an evaluation or train split cannot be filled.
    """
    sizes = {"test": n_test, "validation": n_val, "train": n_train, "pretrain": n_pretrain}
    assignment = instance_splits(seed)
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    seen_instances: set[str] = set()
    seen_prompts: set[str] = set()
    for template, fname, args, v in _iter_instances(seed):
        instance = f"{template.name}:{v}"
        name = assignment[instance]
        if sizes[name] is not None and len(splits[name]) >= sizes[name]:
            continue
        if name in ("test", "validation") and instance in seen_instances:
            continue
        example = _problem(template, fname, args, v)  # built only when kept: building runs the reference
        if example.prompt in seen_prompts:
            continue
        seen_prompts.add(example.prompt)
        seen_instances.add(instance)
        splits[name].append(example)
        if all(sizes[n] is not None and len(splits[n]) >= sizes[n] for n in SPLITS):
            break
    short = {n: len(splits[n]) for n in SPLITS[:3] if len(splits[n]) < sizes[n]}
    if short:
        raise ValueError(f"only {short} distinct Q&A problems fit the splits {sizes}")
    return {name: splits[name] for name in ("train", "validation", "test", "pretrain")}


def pretraining_documents(train_examples: list[Example]) -> list[str]:
    """Text documents (prompt + completion) used to pretrain the base LM on this task's train split."""
    return [ex.prompt + ex.completion for ex in train_examples]
