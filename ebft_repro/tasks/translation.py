"""Translation task: Spanish<->English Bible verse pairs (embedded default) or ALMA-style records.

The default data are real parallel verses from the Debian SWORD packages ``sword-text-sparv`` (Spanish
Reina-Valera 1909, ``spaRV1909eb``) and ``sword-text-web`` (World English Bible, ``engWEB2015eb``) or
``sword-text-kjv`` (``engKJV2006eb``), read by :mod:`ebft_repro.tasks.sword`.

Alignment: modules with the same ``Versification`` (RV1909 and KJV are both KJV) are aligned by slot
index. Otherwise (the WEB uses NRSVA) verses are aligned by OSIS reference (``Gen.1.1``) recovered from
chapter markers; for the 66 shared books NRSVA and KJV references agree except where the traditions split
verses differently (3 John 1:14-15, Rev 12:17-18), where a pair may be slightly misaligned.

The RV1909 module follows Spanish verse numbering in a few chapters although it declares KJV: there it
leaves verse slots empty (Num 12:16, Job 38:39-41, Jonah 1:17, ...) and the following text is shifted.
Verified against both English modules, such chapters are misaligned, so every chapter holding an empty
Spanish verse slot, and the chapter after it, is dropped (568 verses). Pairs whose character lengths differ
by more than ``MAX_LENGTH_RATIO`` (local verse-boundary differences, Spanish epistle subscriptions) and
pairs with an empty side are dropped too. Counts are logged.

Splits: verses are ordered by a stable hash (sha256) of ``(seed, verse index)``; the first verses go to
test, the next to validation, then train; pretrain (the built-in base model's corpus) is dealt from the far
end, so a verse is never in two splits and neither the test set nor the base model depends on ``n_train``.
Each verse yields an ``es-en`` and an ``en-es`` Example in the same split.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

from ebft_repro.tasks import sword
from ebft_repro.tasks.base import LANG_NAMES, TRANSLATION_PROMPT_TEMPLATE, Example
from ebft_repro.tasks.records import iter_mapping_records, record_skip

logger = logging.getLogger(__name__)

SPANISH_MODULE = "spaRV1909eb"
DEFAULT_SWORD_DIRS = ("/usr/share/sword",)
APT_PACKAGES = ("sword-text-sparv", "sword-text-kjv", "sword-text-web")
ALMA_LANG_NAMES = {
    **LANG_NAMES,
    "cs": "Czech",
    "de": "German",
    "is": "Icelandic",
    "ru": "Russian",
    "zh": "Chinese",
}
MAX_LENGTH_RATIO = 2.0
_LEADING_CAPS = re.compile(r"^([¡¿\"“(]?)([A-ZÁÉÍÓÚÑÜ]{2,})\b")


def _has_modules(root: Path, modules: tuple[str, ...]) -> bool:
    return (root / "mods.d").is_dir() and all(_module_exists(root, m) for m in modules)


def _module_exists(root: Path, name: str) -> bool:
    try:
        sword.open_module(name, root)
    except FileNotFoundError:
        return False
    return True


def ensure_sword_modules(
    auto_install: bool = True, modules: tuple[str, ...] = (SPANISH_MODULE, "engWEB2015eb")
) -> Path:
    """Return the SWORD root holding ``modules`` (Spanish and English Bibles), installing them if allowed.

    Looks in ``$EBFT_SWORD_DIR``, ``/usr/share/sword`` and ``~/.sword``. When they are missing, running as
    root with ``apt-get`` available and ``auto_install``, runs ``apt-get install -y`` on the three packages
    (after ``apt-get update`` only if the first attempt fails).

    Raises:
        RuntimeError: when the modules cannot be found or installed; the message says what to install.
    """
    candidates = [Path(p) for p in (os.environ.get("EBFT_SWORD_DIR"), *DEFAULT_SWORD_DIRS) if p]
    candidates.append(Path.home() / ".sword")
    for root in candidates:
        if _has_modules(root, modules):
            return root
    can_apt = shutil.which("apt-get") is not None and hasattr(os, "geteuid") and os.geteuid() == 0
    if auto_install and can_apt:
        cmd = ["apt-get", "install", "-y", *APT_PACKAGES]
        logger.info("Installing SWORD modules: %s", " ".join(cmd))
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True)
            subprocess.run(cmd, env=env, capture_output=True)
        if _has_modules(Path(DEFAULT_SWORD_DIRS[0]), modules):
            return Path(DEFAULT_SWORD_DIRS[0])
    raise RuntimeError(
        "SWORD Bible modules not found. Install them with "
        f"`sudo apt-get install {' '.join(APT_PACKAGES)}`, or set EBFT_SWORD_DIR to a SWORD root "
        "holding mods.d/ and modules/ with spaRV1909eb and engWEB2015eb (or engKJV2006eb)."
    )


def fix_leading_caps(text: str) -> str:
    """Turn the RV1909's all-caps first word of a chapter (``"EN el principio"``) into ``"En el ..."``."""
    return _LEADING_CAPS.sub(lambda m: m.group(1) + m.group(2).capitalize(), text)


@functools.lru_cache(maxsize=4)
def aligned_verses(english_module: str = "engWEB2015eb", sword_dir: str | None = None) -> tuple:
    """Return aligned (verse index, OSIS ref, Spanish text, English text) tuples in verse order.

    The verse index is the Spanish module's global slot index. Cached per (module, directory).
    """
    root = Path(sword_dir) if sword_dir else ensure_sword_modules(modules=(SPANISH_MODULE, english_module))
    es_mod, en_mod = sword.open_module(SPANISH_MODULE, root), sword.open_module(english_module, root)
    es_verses = sword.module_verses(es_mod)
    by_index = es_mod.versification == en_mod.versification
    english = {(v.index if by_index else v.ref): v.text for v in sword.module_verses(en_mod)}
    irregular = set()
    for v in es_verses:
        if not v.text:
            book, chapter, _ = v.ref.split(".")
            irregular.update({(book, int(chapter)), (book, int(chapter) + 1)})
    pairs, dropped = [], {"empty": 0, "irregular_chapter": 0, "length_ratio": 0}
    for es in es_verses:
        en = english.get(es.index if by_index else es.ref, "")
        book, chapter, _ = es.ref.split(".")
        if not es.text or not en:
            dropped["empty"] += 1
        elif (book, int(chapter)) in irregular:
            dropped["irregular_chapter"] += 1
        elif max(len(es.text), len(en)) > MAX_LENGTH_RATIO * min(len(es.text), len(en)):
            dropped["length_ratio"] += 1
        else:
            pairs.append((es.index, es.ref, fix_leading_caps(es.text), en))
    logger.info(
        "%d aligned verses (%s vs %s, by %s); dropped %s",
        len(pairs),
        es_mod.name,
        en_mod.name,
        "index" if by_index else "reference",
        dropped,
    )
    return tuple(pairs)


def make_example(source: str, target: str, direction: str, uid: str, **meta) -> Example:
    """Build a translation Example; ``direction`` is ``"<src>-<tgt>"`` with codes in ALMA_LANG_NAMES."""
    src, tgt = direction.split("-")
    prompt = TRANSLATION_PROMPT_TEMPLATE.format(
        src_lang=ALMA_LANG_NAMES[src], tgt_lang=ALMA_LANG_NAMES[tgt], source=source
    )
    return Example(
        prompt=prompt, completion=" " + target, direction=direction, source=source, uid=uid, meta=meta
    )


def _hash_key(seed: int, index: int) -> str:
    return hashlib.sha256(f"{seed}:{index}".encode()).hexdigest()


def _examples(chunk, n: int | None, name: str) -> list[Example]:
    """Both directions of each verse in ``chunk``, cut to ``n`` Examples (None: all)."""
    examples = []
    for index, ref, es, en in chunk:
        examples.append(make_example(es, en, "es-en", f"es-en-{index}", ref=ref, verse_index=index))
        examples.append(make_example(en, es, "en-es", f"en-es-{index}", ref=ref, verse_index=index))
    if n is not None and len(examples) < n:
        logger.warning("translation %s split: %d examples requested, %d available", name, n, len(examples))
    return examples if n is None else examples[:n]


def build_splits(
    n_train: int | None,
    n_val: int | None,
    n_test: int | None,
    seed: int = 0,
    max_source_chars: int | None = None,
    english_module: str = "engWEB2015eb",
    sword_dir: str | Path | None = None,
    n_pretrain: int | None = 0,
) -> dict[str, list[Example]]:
    """Build train/validation/test/pretrain Spanish<->English Examples from aligned Bible verses.

    Args:
        n_train: number of Examples (not verses) in train; None for all remaining verses. Each verse gives
            two Examples (es-en, en-es); an odd count drops the last verse's en-es Example.
        n_val: number of validation Examples (None: all remaining verses).
        n_test: number of test Examples (None: all remaining).
        seed: selects the hash order, hence which verses fall in which split.
        max_source_chars: keep only verses whose Spanish and English texts are both at most this long.
        english_module: ``engWEB2015eb`` (modern English) or ``engKJV2006eb``.
        sword_dir: SWORD root; default :func:`ensure_sword_modules`.
        n_pretrain: Examples for the built-in base model's pretraining corpus, taken from the far end of
            the verse order so that they never depend on ``n_train`` (None: every verse not in another split;
            0: none).

    Returns:
        ``{"train": [...], "validation": [...], "test": [...], "pretrain": [...]}``; no verse is in two.
    """
    pairs = aligned_verses(english_module, str(sword_dir) if sword_dir else None)
    if max_source_chars is not None:
        pairs = tuple(p for p in pairs if len(p[2]) <= max_source_chars and len(p[3]) <= max_source_chars)
    ordered = sorted(pairs, key=lambda p: _hash_key(seed, p[0]))
    # Pretraining verses come from the far end of the hash order, so the base model's corpus does not
    # depend on n_train; test, validation and train are dealt from the front.
    n_pre_verses = len(ordered) if n_pretrain is None else math.ceil(n_pretrain / 2)
    splits: dict[str, list[Example]] = {}
    start = 0
    for name, n in (("test", n_test), ("validation", n_val), ("train", n_train)):
        n_verses = len(ordered) - start if n is None else math.ceil(n / 2)
        if name == "train" and n_pretrain is not None:
            n_verses = min(n_verses, max(0, len(ordered) - n_pre_verses - start))
        chunk = ordered[start : start + n_verses]
        start += len(chunk)
        splits[name] = _examples(chunk, n, name)
    splits["pretrain"] = _examples(
        ordered[max(start, len(ordered) - n_pre_verses) :][::-1], n_pretrain, "pretrain"
    )
    return {k: splits[k] for k in ("train", "validation", "test", "pretrain")}


def english_spanish_text(train_examples: list[Example]) -> list[str]:
    """Monolingual Spanish and English texts of the TRAIN verses only (base-model pretraining corpus)."""
    texts = []
    for ex in train_examples:
        if ex.direction == "es-en":
            texts.extend([ex.source or "", ex.completion.strip()])
    return [t for t in texts if t]


def pretraining_documents(train_examples: list[Example]) -> list[str]:
    """Text documents (prompt + completion) used to pretrain the base LM on this task's train split."""
    return [ex.prompt + ex.completion for ex in train_examples]


def _alma_pairs(rec: dict) -> list[tuple[str, str, str]]:
    """(direction, source, target) tuples of one ALMA-style record; raises ValueError with a reason."""
    if "translation" in rec:
        tr = rec["translation"]
        if not isinstance(tr, dict) or len(tr) != 2:
            raise ValueError("bad_translation_field")
        codes = sorted(tr)
        wanted = rec.get("direction") or rec.get("lp")
        directions = [wanted] if wanted else [f"{codes[0]}-{codes[1]}", f"{codes[1]}-{codes[0]}"]
        texts = tr
    elif "source" in rec and "target" in rec and "direction" in rec:
        directions = [rec["direction"]]
        src, tgt = str(rec["direction"]).split("-") if "-" in str(rec["direction"]) else ("", "")
        texts = {src: rec["source"], tgt: rec["target"]}
    else:
        raise ValueError("missing_fields")
    out = []
    for direction in directions:
        src, _, tgt = str(direction).partition("-")
        if src not in ALMA_LANG_NAMES or tgt not in ALMA_LANG_NAMES:
            raise ValueError("unknown_language")
        source, target = texts.get(src), texts.get(tgt)
        if not isinstance(source, str) or not isinstance(target, str):
            raise ValueError("non_string_text")
        if not source.strip() or not target.strip():
            raise ValueError("empty_text")
        out.append((direction, source.strip(), target.strip()))
    return out


def load_alma_records(
    path_or_name: str, split: str = "train", max_records: int | None = None
) -> tuple[list[Example], dict[str, int]]:
    """Load ALMA-style parallel records from a local .json/.jsonl file or a ``datasets`` hub name.

    Accepted records: ``{"translation": {"de": ..., "en": ...}}`` (both directions are produced, unless
    the record also has ``"direction"``/``"lp"`` such as ``"de-en"``) and flat
    ``{"source": ..., "target": ..., "direction": "de-en"}``. Bad records are skipped with a logged
    warning naming the record index and reason.

    Args:
        path_or_name: local file path or hub dataset name.
        split: the split to read.
        max_records: read at most the first this many raw records (None: all).

    Returns:
        (examples, skip counts by reason).
    """
    examples: list[Example] = []
    skips: dict[str, int] = {}
    for i, rec in iter_mapping_records(path_or_name, split, max_records, skips):
        try:
            pairs = _alma_pairs(rec)
        except ValueError as err:
            record_skip(skips, i, str(err), path_or_name)
            continue
        for direction, source, target in pairs:
            examples.append(make_example(source, target, direction, f"{direction}-{split}-{i}"))
    return examples, skips
