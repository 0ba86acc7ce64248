"""Templates of the synthetic Q&A coding problems (see :mod:`ebft_repro.tasks.qa_code`).

A :class:`Template` is a family of short Python function-writing problems. An instance is one choice of
function name (a few synonyms), argument names and parameter variant (thresholds, characters, moduli...),
so every template has many distinct instances. ``question`` and ``body`` are ``str.format`` patterns over
``{a0}``, ``{a1}`` (argument names) and the variant's keys; ``inputs(rng, variant)`` draws one argument
tuple for a unit test (expected values are computed by running the reference body).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

Sampler = Callable[[random.Random, dict], tuple]

LIST = (("nums",), ("numbers",), ("values",), ("lst",), ("data",))
STR = (("s",), ("text",), ("word",), ("phrase",))
WORDS = (("words",), ("items",), ("tokens",), ("strings",))
INT = (("n",), ("num",), ("value",))
PAIR = (("xs", "ys"), ("first", "second"), ("left", "right"), ("list1", "list2"))
SYLLABLES = ("ba", "na", "to", "ke", "mi", "lo", "su", "ra", "pe", "di", "an", "el", "or", "ut")
LETTERS = "abdeiklmnorstu"
VOCAB = ("apple", "sky", "river", "cat", "moon", "tree", "a", "stone", "bird", "hello", "sun", "data", "go")


@dataclass(frozen=True)
class Template:
    """One family of problems.

    Attributes:
        name: template identifier (part of the uid).
        names: function-name synonyms (formatted with the variant).
        args: alternative argument-name tuples.
        question: what the function returns, after "Write a Python function `f(args)` that ".
        body: reference function body (may span lines; indented by the caller).
        variants: parameter dicts; one is drawn per instance.
        inputs: draws one argument tuple for a unit test, given the variant.
    """

    name: str
    names: tuple[str, ...]
    args: tuple[tuple[str, ...], ...]
    question: str
    body: str
    variants: tuple[dict, ...]
    inputs: Sampler


def _v(key: str, values) -> tuple[dict, ...]:
    return tuple({key: v} for v in values)


def _ints(lo: int, hi: int, min_len: int = 0, max_len: int = 7) -> Sampler:
    return lambda r, p: ([r.randint(lo, hi) for _ in range(r.randint(min_len, max_len))],)


def _int(lo: int, hi: int) -> Sampler:
    return lambda r, p: (r.randint(lo, hi),)


def _word(r: random.Random, max_syllables: int = 4, min_syllables: int = 0) -> str:
    return "".join(r.choice(SYLLABLES) for _ in range(r.randint(min_syllables, max_syllables)))


def _string(r: random.Random, p: dict) -> tuple:
    word = _word(r)
    if "c" in p and r.random() < 0.5:  # make sure the character of interest shows up
        at = r.randint(0, len(word))
        word = word[:at] + p["c"] + word[at:]
    return (word,)


def _words(min_len: int = 0) -> Sampler:
    return lambda r, p: ([r.choice(VOCAB) for _ in range(r.randint(min_len, 5))],)


def _sentence(r: random.Random, p: dict) -> tuple:
    return (" ".join(r.choice(VOCAB) for _ in range(r.randint(0, 5))),)


def _mixed_case(r: random.Random, p: dict) -> tuple:
    return (
        "".join(c.upper() if r.random() < 0.4 else c for c in _word(r, 4, 1)) + r.choice(["", " ", "!", "1"]),
    )


def _palindrome(r: random.Random, p: dict) -> tuple:
    half = _word(r, 2)
    return (half + r.choice(["", "x", "y"]) + (half[::-1] if r.random() < 0.5 else _word(r, 2)),)


def _fix_string(r: random.Random, p: dict) -> tuple:
    word = _word(r, 3)
    if r.random() < 0.5:
        word = p["fix"] + word if p["verb"] == "starts" else word + p["fix"]
    return (word,)


def _pair(r: random.Random, p: dict) -> tuple:
    n = r.randint(0, 5)
    return [r.randint(-5, 9) for _ in range(n)], [r.randint(-5, 9) for _ in range(n)]


_LETTER_PAIRS = tuple({"c": c, "d": d} for c in LETTERS for d in LETTERS if c != d)
_EXTREMES = ({"word": "largest", "fn": "max"}, {"word": "smallest", "fn": "min"})
_ORDERS = ({"order": "increasing", "rev": ""}, {"order": "decreasing", "rev": ", reverse=True"})
_PAIRWISE = ({"what": "sum", "op": "+"}, {"what": "product", "op": "*"}, {"what": "difference", "op": "-"})
_NTH = (
    {"k": 2, "nth": "second"},
    {"k": 3, "nth": "third"},
    {"k": 4, "nth": "fourth"},
    {"k": 5, "nth": "fifth"},
)
_FIX = tuple(
    {"verb": v, "fix": s, "kind": k} for v, k in (("starts", "prefix"), ("ends", "suffix")) for s in SYLLABLES
)
_CLAMP = tuple({"lo": lo, "hi": lo + w} for lo in range(0, 11) for w in (5, 10, 20, 50))
_LINEAR = tuple({"a": a, "b": b} for a in range(2, 10) for b in range(1, 10))
_T = Template
# fmt: off
TEMPLATES: tuple[Template, ...] = (
    _T("filter_greater", ("keep_greater", "filter_greater", "greater_than", "select_above"), LIST,
       "returns a list of the numbers in `{a0}` that are greater than {k}, in their original order.",
       "return [x for x in {a0} if x > {k}]", _v("k", range(-5, 21)), _ints(-10, 25)),
    _T("filter_less", ("keep_less", "filter_less", "less_than", "select_below"), LIST,
       "returns a list of the numbers in `{a0}` that are less than {k}, in their original order.",
       "return [x for x in {a0} if x < {k}]", _v("k", range(-5, 21)), _ints(-10, 25)),
    _T("filter_divisible", ("multiples_of", "keep_multiples", "filter_divisible", "divisible_only"), LIST,
       "returns a list of the numbers in `{a0}` that are divisible by {k}, in their original order.",
       "return [x for x in {a0} if x % {k} == 0]", _v("k", range(2, 13)), _ints(0, 40)),
    _T("filter_parity", ("keep_{p}", "filter_{p}", "{p}_numbers", "only_{p}"), LIST,
       "returns a list of the {p} numbers in `{a0}`, in their original order.",
       "return [x for x in {a0} if x % 2 == {rem}]", ({"p": "even", "rem": 0}, {"p": "odd", "rem": 1}),
       _ints(-10, 20)),
    _T("map_add", ("add_to_all", "add_constant", "shift_all", "increment_all"), LIST,
       "returns a new list with {k} added to each number in `{a0}`.",
       "return [x + {k} for x in {a0}]", _v("k", range(1, 21)), _ints(-10, 20)),
    _T("map_mul", ("scale", "multiply_each", "scale_list", "times_all"), LIST,
       "returns a new list with each number in `{a0}` multiplied by {k}.",
       "return [x * {k} for x in {a0}]", _v("k", range(2, 13)), _ints(-10, 20)),
    _T("map_power", ("{w}_all", "{w}s", "{w}_each", "to_{w}s"), LIST,
       "returns a new list containing the {w} of each number in `{a0}`.",
       "return [x ** {k} for x in {a0}]", ({"w": "square", "k": 2}, {"w": "cube", "k": 3}), _ints(-6, 9)),
    _T("map_mod", ("remainders", "mod_all", "mod_each", "remainder_list"), LIST,
       "returns a new list with the remainder of each number in `{a0}` divided by {k}.",
       "return [x % {k} for x in {a0}]", _v("k", range(2, 13)), _ints(0, 50)),
    _T("sum_greater", ("sum_above", "sum_greater", "total_above", "sum_over"), LIST,
       "returns the sum of the numbers in `{a0}` that are greater than {k}.",
       "return sum(x for x in {a0} if x > {k})", _v("k", range(-5, 21)), _ints(-10, 25)),
    _T("count_greater", ("count_above", "count_greater", "num_greater", "count_over"), LIST,
       "returns how many numbers in `{a0}` are greater than {k}.",
       "return len([x for x in {a0} if x > {k}])", _v("k", range(-5, 21)), _ints(-10, 25)),
    _T("count_value", ("count_value", "count_occurrences", "how_many", "count_equal"), LIST,
       "returns how many times the number {k} appears in `{a0}`.",
       "return {a0}.count({k})", _v("k", range(0, 10)), _ints(0, 9)),
    _T("list_extreme", ("{word}_value", "find_{word}", "get_{word}", "{word}_of"), LIST,
       "returns the {word} number in the non-empty list `{a0}`.",
       "return {fn}({a0})", _EXTREMES, _ints(-20, 20, 1)),
    _T("range_diff", ("value_range", "spread", "max_minus_min", "range_width"), LIST,
       "returns the difference between the largest and the smallest number in the non-empty list `{a0}`.",
       "return max({a0}) - min({a0})", ({},), _ints(-20, 20, 1)),
    _T("sort_list", ("sort_numbers", "sorted_list", "order_values", "sort_{order}"), LIST,
       "returns the numbers in `{a0}` sorted in {order} order.",
       "return sorted({a0}{rev})", _ORDERS, _ints(-10, 20)),
    _T("first_n", ("first_k", "take_first", "head", "first_items"), LIST,
       "returns a list of the first {k} elements of `{a0}` (all of them if there are fewer).",
       "return {a0}[:{k}]", _v("k", range(1, 10)), _ints(0, 20, 0, 10)),
    _T("last_n", ("last_k", "take_last", "tail", "last_items"), LIST,
       "returns a list of the last {k} elements of `{a0}` (all of them if there are fewer).",
       "return {a0}[-{k}:]", _v("k", range(1, 10)), _ints(0, 20, 0, 10)),
    _T("every_kth", ("every_nth", "take_every", "stride", "step_items"), LIST,
       "returns a list of every {nth} element of `{a0}`, starting with the first one.",
       "return {a0}[::{k}]", _NTH, _ints(0, 20, 0, 10)),
    _T("reverse_list", ("reverse_list", "reversed_list", "flip", "backwards"), LIST,
       "returns a new list with the elements of `{a0}` in reverse order.",
       "return {a0}[::-1]", ({},), _ints(0, 20)),
    _T("product", ("product", "list_product", "prod_all", "multiply_together"), LIST,
       "returns the product of all numbers in `{a0}` (1 for an empty list).",
       "result = 1\nfor x in {a0}:\n    result *= x\nreturn result", ({},), _ints(-3, 6, 0, 6)),
    _T("unique_sorted", ("unique_sorted", "distinct_sorted", "sorted_unique", "dedupe_sorted"), LIST,
       "returns the distinct numbers of `{a0}` in increasing order.",
       "return sorted(set({a0}))", ({},), _ints(0, 9, 0, 9)),
    _T("contains_value", ("contains", "has_value", "includes", "appears"), LIST,
       "returns True if the number {k} appears in `{a0}` and False otherwise.",
       "return {k} in {a0}", _v("k", range(0, 10)), _ints(0, 9)),
    _T("pairwise", ("pairwise_{what}", "elementwise_{what}", "{what}_pairs", "zip_{what}"), PAIR,
       "returns a list whose i-th element is the {what} of the i-th elements of `{a0}` and `{a1}` "
       "(the two lists have the same length).",
       "return [x {op} y for x, y in zip({a0}, {a1})]", _PAIRWISE, _pair),
    _T("index_of_max", ("argmax", "index_of_max", "position_of_max", "max_index"), LIST,
       "returns the index of the first occurrence of the largest number in the non-empty list `{a0}`.",
       "return {a0}.index(max({a0}))", ({},), _ints(0, 9, 1)),
    _T("count_char", ("count_char", "count_letter", "occurrences", "char_count"), STR,
       "returns the number of times the character '{c}' appears in the string `{a0}`.",
       "return {a0}.count({c!r})", _v("c", LETTERS), _string),
    _T("count_vowels", ("count_{w}", "{w}_count", "num_{w}", "{w}_in"), STR,
       "returns the number of {w} in the string `{a0}` (the vowels are a, e, i, o and u).",
       "return sum(1 for ch in {a0} if ch {op} 'aeiou')",
       ({"w": "vowels", "op": "in"}, {"w": "consonants", "op": "not in"}), _string),
    _T("case_change", ("to_{case}", "make_{case}", "{case}_case", "convert_{case}"), STR,
       "returns the string `{a0}` converted to {case}case.",
       "return {a0}.{case}()", _v("case", ("upper", "lower")), _mixed_case),
    _T("reverse_string", ("reverse_string", "reverse_text", "backwards_string", "flip_string"), STR,
       "returns the string `{a0}` reversed.", "return {a0}[::-1]", ({},), _string),
    _T("is_palindrome", ("is_palindrome", "palindrome", "reads_same_backwards", "check_palindrome"), STR,
       "returns True if the string `{a0}` reads the same forwards and backwards, and False otherwise.",
       "return {a0} == {a0}[::-1]", ({},), _palindrome),
    _T("replace_char", ("replace_char", "swap_letter", "substitute", "replace_letter"), STR,
       "returns a copy of the string `{a0}` with every '{c}' replaced by '{d}'.",
       "return {a0}.replace({c!r}, {d!r})", _LETTER_PAIRS, _string),
    _T("remove_char", ("remove_char", "strip_letter", "delete_char", "drop_letter"), STR,
       "returns the string `{a0}` with every occurrence of the character '{c}' removed.",
       "return {a0}.replace({c!r}, '')", _v("c", LETTERS), _string),
    _T("first_chars", ("prefix", "first_chars", "head_string", "take_chars"), STR,
       "returns the first {k} characters of the string `{a0}` (all of it if it is shorter).",
       "return {a0}[:{k}]", _v("k", range(1, 9)), _string),
    _T("affix", ("{verb}_with", "has_{kind}", "check_{kind}", "{kind}_is"), STR,
       "returns True if the string `{a0}` {verb} with '{fix}' and False otherwise.",
       "return {a0}.{verb}with({fix!r})", _FIX, _fix_string),
    _T("repeat_string", ("repeat", "repeat_string", "times", "duplicate"), STR,
       "returns the string `{a0}` repeated {k} times.", "return {a0} * {k}", _v("k", range(2, 7)), _string),
    _T("join_words", ("join_words", "join_with", "combine_words", "glue"), WORDS,
       "returns the strings in the list `{a0}` joined together with '{sep}' between them.",
       "return {sep!r}.join({a0})", _v("sep", (" ", ", ", "-", "_", "+", "/", "; ", ":")), _words()),
    _T("word_count", ("word_count", "count_words", "num_words", "words_in"), (("sentence",), ("line",)) + STR,
       "returns the number of words in the string `{a0}`, where words are separated by spaces.",
       "return len({a0}.split())", ({},), _sentence),
    _T("capitalize_words", ("capitalize_words", "title_words", "cap_each_word", "capitalize_all"),
       (("sentence",), ("line",)) + STR,
       "returns the string `{a0}` with the first letter of every word capitalized (words are separated by "
       "single spaces).", "return ' '.join(w.capitalize() for w in {a0}.split(' '))", ({},), _sentence),
    _T("longest_word", ("longest_word", "longest", "find_longest", "max_word"), WORDS,
       "returns the longest string in the non-empty list `{a0}` (the first one if there is a tie).",
       "return max({a0}, key=len)", ({},), _words(1)),
    _T("filter_long_words", ("long_words", "words_longer", "filter_long", "keep_long"), WORDS,
       "returns a list of the strings in `{a0}` that have more than {k} characters, in their original order.",
       "return [w for w in {a0} if len(w) > {k}]", _v("k", range(1, 8)), _words()),
    _T("word_lengths", ("word_lengths", "lengths", "length_list", "sizes"), WORDS,
       "returns a list with the length of each string in `{a0}`.", "return [len(w) for w in {a0}]", ({},),
       _words()),
    _T("sum_digits", ("digit_sum", "sum_digits", "add_digits", "sum_of_digits"), INT,
       "returns the sum of the decimal digits of the non-negative integer `{a0}`.",
       "return sum(int(d) for d in str({a0}))", ({},), _int(0, 99999)),
    _T("is_divisible", ("is_divisible", "divisible", "is_multiple", "check_divisible"), INT,
       "returns True if the integer `{a0}` is divisible by {k} and False otherwise.",
       "return {a0} % {k} == 0", _v("k", range(2, 13)), _int(0, 100)),
    _T("sum_multiples", ("sum_multiples", "multiples_sum", "add_multiples", "total_multiples"), INT,
       "returns the sum of the multiples of {k} between 1 and `{a0}` (inclusive).",
       "return sum(x for x in range(1, {a0} + 1) if x % {k} == 0)", _v("k", range(2, 10)), _int(0, 60)),
    _T("factorial", ("factorial", "fact", "compute_factorial", "product_up_to"), INT,
       "returns the factorial of the non-negative integer `{a0}` (1 for 0).",
       "result = 1\nfor i in range(2, {a0} + 1):\n    result *= i\nreturn result", ({},), _int(0, 10)),
    _T("linear", ("apply_formula", "compute", "evaluate", "linear"), INT,
       "returns {a} * `{a0}` + {b}.", "return {a} * {a0} + {b}", _LINEAR, _int(-20, 50)),
    _T("count_digits", ("count_digits", "num_digits", "digit_count", "number_length"), INT,
       "returns the number of decimal digits of the non-negative integer `{a0}`.",
       "return len(str({a0}))", ({},), _int(0, 10**6)),
    _T("clamp", ("clamp", "clip", "bound", "limit"), INT,
       "returns `{a0}` limited to the range {lo} to {hi}: {lo} if it is smaller, {hi} if it is larger, "
       "and `{a0}` itself otherwise.", "return max({lo}, min({hi}, {a0}))", _CLAMP, _int(-10, 70)),
    _T("power", ("power", "raise_to", "to_the", "pow_k"), INT,
       "returns `{a0}` raised to the power {k}.", "return {a0} ** {k}", _v("k", range(2, 6)), _int(-9, 12)),
    _T("last_digit", ("last_digit", "ones_digit", "final_digit", "units_digit"), INT,
       "returns the last decimal digit of the non-negative integer `{a0}`.", "return {a0} % 10", ({},),
       _int(0, 10**5)),
)
# fmt: on
TEMPLATE_BY_NAME = {t.name: t for t in TEMPLATES}
