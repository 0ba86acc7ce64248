"""A small plain-Python reader of SWORD ``zText`` Bible modules (as packaged by Debian's ``sword-text-*``).

Layout of a module (``DataPath`` in its ``mods.d/*.conf``), one file triple per testament (``ot``, ``nt``):

* ``.bzs``: the block index, one 12-byte record per compressed block: offset (u32), compressed size (u32),
  uncompressed size (u32), little-endian.
* ``.bzv``: the verse index, one record per versification slot: block number (u32), offset inside the
  uncompressed block (u32), size (u16 for ``zText``, 10-byte records; u32 for ``zText4``, 12 bytes).
  The record size was checked empirically: the Debian KJV/RV1909 modules hold 24,115 OT and 8,246 NT
  records, exactly the KJV slot count (see below).
* ``.bzz``: the concatenated compressed blocks (``CompressType=ZIP`` means zlib).

Slots follow the module's versification: slot 0 (module heading), slot 1 (testament heading), then
per book a book-introduction slot and per chapter a chapter-introduction slot followed by the verses.
Book and chapter structure is recovered from the ``<chapter sID=... osisID="Book.N"/>`` start tags that
``osis2mod`` writes into chapter-introduction slots, so no versification tables are embedded. A verse slot
that itself contains chapter, book or glossary start tags (``osis2mod`` appends material the
versification lacks, e.g. the WEB's glossary, to the preceding verse) is cut there and flagged
``truncated``.

Verse indices are global: OT slots first, then NT slots offset by the number of OT slots.
"""

from __future__ import annotations

import bz2
import html
import logging
import lzma
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

TESTAMENTS = ("ot", "nt")
_CHAPTER_START = re.compile(r'<chapter\b[^>]*\bsID="([^".]+)\.(\d+)"')
_STRUCTURE_START = re.compile(
    r'<chapter\b[^>]*\bsID=|<div\b(?=[^>]*\bsID=)(?=[^>]*\btype="(?:book|bookGroup|glossary|front|back|introduction)")'
)
_DROP_ELEMENTS = re.compile(
    r"<(note|speaker)\b[^>]*?(?<!/)>.*?</\1>|<title\b(?![^>]*canonical=\"true\")[^>]*?(?<!/)>.*?</title>",
    re.S,
)
_TAG = re.compile(r"<[^>]*>")
_GBF_NOTE = re.compile(r"<RF>.*?<Rf>", re.S)
_SPACE_BEFORE = re.compile(r"\s+([,.;:!?)\]”’»])")
_SPACE_AFTER = re.compile(r"([(\[“«¿¡])\s+")


@dataclass(frozen=True)
class SwordModule:
    """A located SWORD module and its configuration.

    Attributes:
        name: the module identifier (the ``[section]`` of its .conf).
        path: the directory holding its data files.
        conf: the .conf key/value pairs (the last value wins for repeated keys).
    """

    name: str
    path: Path
    conf: dict[str, str]

    @property
    def versification(self) -> str:
        """The ``Versification`` key (SWORD's default is KJV)."""
        return self.conf.get("Versification", "KJV")


@dataclass(frozen=True)
class Verse:
    """One verse slot of a module.

    Attributes:
        index: global slot index (OT slots, then NT slots).
        ref: OSIS reference such as ``"Gen.1.1"``, recovered from chapter markers.
        text: the verse as plain text (markup stripped, whitespace normalised); may be "".
        truncated: True when the slot also held material outside the versification (another book, a
            glossary...), which was cut off.
    """

    index: int
    ref: str
    text: str
    truncated: bool = False


def parse_conf(path: str | Path) -> tuple[str, dict[str, str]]:
    """Parse a SWORD .conf file into (module name, key/value dict); continuation lines are skipped."""
    name, conf = "", {}
    continuing = False
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if continuing:
            continuing = line.endswith("\\")
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("[") and stripped.endswith("]") and not name:
            name = stripped[1:-1]
        elif "=" in stripped:
            key, value = stripped.split("=", 1)
            conf[key.strip()] = value.strip()
            continuing = line.endswith("\\")
    return name, conf


def open_module(name: str, sword_dir: str | Path) -> SwordModule:
    """Locate module ``name`` (case-insensitive) under a SWORD root holding ``mods.d/``.

    Raises:
        FileNotFoundError: when no .conf declares that module.
    """
    root = Path(sword_dir)
    for conf_path in sorted((root / "mods.d").glob("*.conf")):
        mod_name, conf = parse_conf(conf_path)
        if mod_name.lower() == name.lower():
            data_path = conf.get("DataPath", "").lstrip("./")
            return SwordModule(name=mod_name, path=root / data_path, conf=conf)
    raise FileNotFoundError(f"SWORD module {name!r} not found under {root / 'mods.d'}")


def _decompressor(compress_type: str):
    kinds = {"ZIP": zlib.decompress, "BZIP2": bz2.decompress, "XZ": lzma.decompress}
    if compress_type.upper() not in kinds:
        raise NotImplementedError(f"CompressType={compress_type} is not supported (ZIP, BZIP2, XZ are)")
    return kinds[compress_type.upper()]


def read_raw_slots(module: SwordModule, testament: str) -> list[str]:
    """Return the raw (markup) text of every slot of one testament; [] when the testament is absent.

    Raises:
        NotImplementedError: for drivers other than zText/zText4 or unsupported compression.
        ValueError: when the index files are inconsistent.
    """
    driver = module.conf.get("ModDrv", "zText")
    if driver.lower() not in ("ztext", "ztext4"):
        raise NotImplementedError(f"{module.name}: ModDrv={driver} is not supported (zText only)")
    record, size_fmt = (12, "<IIL") if driver.lower() == "ztext4" else (10, "<IIH")
    files = [module.path / f"{testament}.{ext}" for ext in ("bzs", "bzv", "bzz")]
    if not all(f.exists() for f in files):
        return []
    bzs, bzv, bzz = (f.read_bytes() for f in files)
    if len(bzs) % 12 or len(bzv) % record:
        raise ValueError(
            f"{module.name}/{testament}: index sizes {len(bzs)}, {len(bzv)} are not whole records"
        )
    decompress = _decompressor(module.conf.get("CompressType", "ZIP"))
    encoding = "utf-8" if module.conf.get("Encoding", "").upper().replace("-", "") == "UTF8" else "latin-1"
    blocks = [struct.unpack_from("<III", bzs, i) for i in range(0, len(bzs), 12)]
    cache: dict[int, bytes] = {}
    slots = []
    for pos in range(0, len(bzv), record):
        block, offset, size = struct.unpack_from(size_fmt, bzv, pos)
        if size == 0 or block >= len(blocks):
            slots.append("")
            continue
        if block not in cache:
            start, csize, usize = blocks[block]
            cache[block] = decompress(bzz[start : start + csize])
            if len(cache[block]) != usize:
                logger.warning(
                    "%s/%s block %d: size %d != %d", module.name, testament, block, len(cache[block]), usize
                )
        slots.append(cache[block][offset : offset + size].decode(encoding, errors="replace"))
    return slots


def strip_markup(raw: str, source_type: str = "OSIS") -> str:
    """Turn OSIS/ThML/GBF verse markup into plain text.

    Notes, cross-references, speakers and non-canonical titles are removed with their content; the text
    of every other element (``<w>``, ``<transChange>``, ``<divineName>``, ``<q>``, canonical psalm titles)
    is kept. Entities are unescaped, pilcrows dropped, whitespace collapsed, and spaces before closing
    punctuation removed.
    """
    text = raw
    if source_type.upper() == "GBF":
        text = _GBF_NOTE.sub(" ", text)
    else:
        text = _DROP_ELEMENTS.sub(" ", text)
    text = html.unescape(_TAG.sub(" ", text)).replace("\u00b6", " ")  # KJV pilcrows
    text = " ".join(text.split())
    text = _SPACE_BEFORE.sub(r"\1", text)
    return _SPACE_AFTER.sub(r"\1", text)


def module_verses(module: SwordModule) -> list[Verse]:
    """Return every verse slot of a module (introduction slots excluded) in index order.

    Book and chapter boundaries come from the chapter start tags; a slot with more than one such tag is
    not a chapter introduction (such a slot holds out-of-versification material).
    """
    source_type = module.conf.get("SourceType", "OSIS")
    verses: list[Verse] = []
    offset = 0
    for testament in TESTAMENTS:
        slots = read_raw_slots(module, testament)
        marks = []
        for i, raw in enumerate(slots):
            found = _CHAPTER_START.findall(raw)
            if len(found) == 1:
                marks.append((i, found[0][0], int(found[0][1])))
        for k, (slot, book, chapter) in enumerate(marks):
            end = marks[k + 1][0] if k + 1 < len(marks) else len(slots)
            if k + 1 < len(marks) and marks[k + 1][2] == 1:
                end -= 1  # the book-introduction slot of the next book
            expected = marks[k - 1][2] + 1 if k and marks[k - 1][1] == book else 1
            if chapter != expected:
                logger.warning(
                    "%s: chapter %s.%d found where %d was expected", module.name, book, chapter, expected
                )
            for number, i in enumerate(range(slot + 1, end), start=1):
                extra = _STRUCTURE_START.search(slots[i])
                raw = slots[i][: extra.start()] if extra else slots[i]
                text = strip_markup(raw, source_type)
                verses.append(Verse(offset + i, f"{book}.{chapter}.{number}", text, extra is not None))
        offset += len(slots)
    return verses


def verse_texts(module: SwordModule) -> dict[int, str]:
    """Map global verse index to plain text, skipping empty verses."""
    return {v.index: v.text for v in module_verses(module) if v.text}
