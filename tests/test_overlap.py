"""Overlap measures between splits (tasks/overlap.py) and the raw-code near-duplicate filter (code.py)."""

import pytest

from ebft_repro.tasks import code, overlap


def test_code_tokens_rename_identifiers_and_keep_builtins_attributes_literals():
    tokens = overlap.code_tokens("def add_one(x):\n    return x + 1  # comment\n")
    # names in order of first use: add_one -> v0, x -> v1; the comment is dropped
    assert tokens[:8] == ["def", "v0", "(", "v1", ")", ":", "<NEWLINE>", "<INDENT>"]
    assert tokens[8:] == ["return", "v1", "+", "1", "<NEWLINE>", "<DEDENT>"]
    assert tokens == overlap.code_tokens("def inc(value):\n\n    return value + 1\n")  # renaming only
    tokens = overlap.code_tokens("def f(xs):\n    return sorted(xs).count('a')\n")
    assert tokens[8:-2] == ["return", "sorted", "(", "v1", ")", ".", "count", "(", "'a'", ")"]
    # a file cut inside a string keeps the tokens read before it
    assert overlap.code_tokens('s = """abc\n') == ["v0", "="]


def test_similarity_is_difflib_ratio_of_tokens():
    one = overlap.code_tokens("def f(x):\n    return x + 1\n")
    two = overlap.code_tokens("def g(y):\n    return y + 2\n")
    # 14 tokens each, 13 match (only the literal differs): 2 * 13 / (14 + 14)
    assert overlap.similarity(one, two) == pytest.approx(26 / 28)
    assert overlap.similarity(one, one) == 1.0
    assert overlap.word_tokens("Yahweh’s word CAME, again!") == ["yahweh", "s", "word", "came", "again"]


def test_max_similarity_single_field_ties_and_no_references():
    query = ("a b c d".split(),)
    refs = [("a b c x".split(),), ("a b c d e".split(),), ("a b c d e".split(),), ("z".split(),)]
    # ref 0: 3 of 4 match, 2*3/8 = 0.75; refs 1 and 2: 4 match, 2*4/9 = 0.889 (tie: lowest index); ref 3: 0
    assert overlap.max_similarity([query], refs) == [(pytest.approx(8 / 9), 1)]
    assert overlap.max_similarity([query], []) == [(0.0, -1)]
    assert overlap.max_similarity([query], [("z",)]) == [(0.0, 0)]


def test_max_similarity_of_pairs_is_the_less_similar_side():
    query = ("el rey".split(), "the king".split())
    refs = [
        ("el rey".split(), "a queen".split()),  # Spanish 1.0, English 0: pair 0
        ("el rey dijo".split(), "the king said".split()),  # 2*2/5 = 0.8 on both sides: pair 0.8
    ]
    assert overlap.max_similarity([query], refs) == [(pytest.approx(0.8), 1)]


def test_max_similarity_pruning_matches_brute_force():
    words = "a b c d e f".split()
    items = [(words[i % 6 : i % 6 + 1 + i % 4] + words[: i % 3],) for i in range(24)]
    queries, refs = items[:6], items[6:]
    for query, (best, index) in zip(queries, overlap.max_similarity(queries, refs)):
        brute = [overlap.similarity(query[0], ref[0]) for ref in refs]
        assert best == max(brute) and index == brute.index(max(brute))


def test_line_shingles_normalise_whitespace_and_skip_blank_lines():
    assert overlap.line_shingles("a  =  1\n\n   b=2\nc\n", n_lines=2) == {("a = 1", "b=2"), ("b=2", "c")}
    assert overlap.line_shingles("x\ny\n", n_lines=3) == {("x", "y")}  # fewer lines: one shingle
    assert overlap.line_shingles(" \n\n", n_lines=3) == set()


def test_max_shingle_share_by_hand():
    query = "a\nb\nc\nd\ne\n"  # 3-line shingles: abc, bcd, cde
    refs = ["c\nd\ne\n", "z\na\nb\nc\n    d\n", "unrelated\n"]
    # ref 0 holds cde (1/3); ref 1 holds abc and bcd (2/3), whitespace ignored; ref 2 nothing
    assert overlap.max_shingle_share([query, "q\nr\ns\n"], refs, n_lines=3) == [
        (pytest.approx(2 / 3), 1),
        (0.0, -1),
    ]
    # the share is asymmetric: all of ref 0's single shingle is in the query
    assert overlap.max_shingle_share([refs[0]], [query], n_lines=3) == [(1.0, 0)]


def test_exact_duplicates():
    assert overlap.exact_duplicates(["x", "y", "x", "z"], ["z", "x"]) == [0, 2, 3]


def _stdlib(tmp_path, files):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_code_split_drops_validation_and_test_near_duplicates(tmp_path):
    # split_of: mod0.py -> train, mod3.py -> test, mod13.py -> validation
    assert [code.split_of(f"mod{i}.py") for i in (0, 3, 13)] == ["train", "test", "validation"]
    train = [f"t{i} = {i}" for i in range(10)]
    root = _stdlib(
        tmp_path,
        {
            "mod0.py": "\n".join(train) + "\n",
            # 12 lines, 5 shingles of 8; the 3 inside t0..t9 are shared: 3/5 = 0.6 > 0.5, dropped
            "mod3.py": "\n".join(train + ["a = 1", "b = 2"]) + "\n",
            # 12 lines, 5 shingles; only t0..t7 is shared: 1/5 = 0.2, kept
            "mod13.py": "\n".join(train[:8] + ["c = 3", "d = 4", "e = 5", "f = 6"]) + "\n",
        },
    )
    splits = code.build_splits(stdlib_dir=root)
    assert [ex.uid for ex in splits["train"]] == ["mod0.py"]
    assert splits["test"] == [] and [ex.uid for ex in splits["validation"]] == ["mod13.py"]
    unfiltered = code.build_splits(stdlib_dir=root, max_shingle_share=None)
    assert [ex.uid for ex in unfiltered["test"]] == ["mod3.py"]
    kept = code.build_splits(stdlib_dir=root, max_shingle_share=0.6)  # the threshold is exclusive
    assert [ex.uid for ex in kept["test"]] == ["mod3.py"]


def test_stdlib_code_splits_hold_no_near_duplicate():
    splits = code.build_splits(max_chars_per_file=4000)
    unfiltered = code.build_splits(max_chars_per_file=4000, max_shingle_share=None)
    training = [ex.completion for ex in splits["train"] + splits["pretrain"]]
    for name in ("validation", "test"):
        shares = overlap.max_shingle_share([ex.completion for ex in splits[name]], training)
        assert max(share for share, _ in shares) <= code.MAX_SHINGLE_SHARE, name
        assert set(splits[name]) <= set(unfiltered[name])
    assert splits["train"] == unfiltered["train"] and splits["pretrain"] == unfiltered["pretrain"]
