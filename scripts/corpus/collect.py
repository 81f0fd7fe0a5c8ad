"""Collection: every source read, aligned into (en, xx) pairs and monolingual lines, deduplicated."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from corpus.config import (
    CORPUS_LANGS,
    GETTEXT_PKGS,
    HANDBOOK_DIRS,
    HANDBOOK_PKG,
    LO_L10N_PKGS,
    LOHELP_PKGS,
    LOWRES_LANG,
    PAIR_LANGS,
    SHORT_TEMPLATE_WORDS,
)
from corpus.packages import Packages
from corpus.readers import catalogs, handbook_pages, lohelp_paragraphs, read_mo
from corpus.text import Pair, clean_text, dedup_pairs, looks_english, make_pair, template_key, text_ok
from corpus.util import log

# --------------------------------------------------------------------------------------
# Collection
# --------------------------------------------------------------------------------------


class Collected(NamedTuple):
    pairs: dict[str, list[Pair]]  # xx -> deduplicated pairs
    mono: dict[str, list[str]]  # lang -> candidate monolingual lines (ordered, dedup)
    lohelp: dict[str, dict]  # lang -> {(file, id): text}
    ne_lines: list[tuple[str, str]]  # (ne line, source)
    source_counts: dict[str, Counter]  # lang -> Counter(source tag) of kept pairs/lines


@dataclass
class _Gathered:
    """What the readers found, in reading order, before filtering and deduplication."""

    pairs: dict[str, list[Pair]] = field(default_factory=lambda: {xx: [] for xx in PAIR_LANGS})
    english: list[str] = field(default_factory=list)  # English texts seen anywhere (for untranslated detection)
    mono: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: {lang: [] for lang in CORPUS_LANGS})
    ne: list[tuple[str, str, str]] = field(default_factory=list)  # Nepali catalogs: (msgid, msgstr, source)

    def english_text(self, text: str, src: str) -> None:
        self.english.append(text)
        self.mono["en"].append((text, src))

    def translation(self, en: str, xx: str, lang: str, src: str, gettext: bool = False) -> None:
        """``xx`` as a monolingual line of ``lang``, and (en, xx) as a pair where it passes the filters."""
        self.mono[lang].append((clean_text(xx, markup=True, mnemonics=True) if gettext else xx, src))
        p = make_pair(en, xx, lang, src, gettext=gettext)
        if p:
            self.pairs[lang].append(p)


def collect(pk: Packages) -> Collected:
    got = _Gathered()
    _read_handbook(pk, got)
    lohelp = _read_lohelp(pk, got)
    _read_catalogs(pk, got)
    english = {e.casefold() for e in got.english if e}

    # Deduplicate pairs: exact (en, xx), then short templates on the English side.
    pairs: dict[str, list[Pair]] = {}
    counts: dict[str, Counter] = {}
    for xx in PAIR_LANGS:
        pairs[xx] = dedup_pairs(got.pairs[xx], english)
        counts[xx] = Counter(p.src for p in pairs[xx])
        log(f"  en-{xx}: {len(pairs[xx])} pairs")

    mono: dict[str, list[str]] = {}
    for lang in CORPUS_LANGS:
        mono[lang], counts[f"mono:{lang}"] = _dedup_mono(got.mono[lang], lang, english)
        log(f"  mono {lang}: {len(mono[lang])} lines")

    ne_lines, counts[f"mono:{LOWRES_LANG}"] = _nepali_lines(got.ne, english)
    log(f"  mono ne: {len(ne_lines)} lines")
    return Collected(pairs, mono, lohelp, ne_lines, counts)


def _read_handbook(pk: Packages, got: _Gathered) -> None:
    """The Debian Administrator's Handbook: paragraphs aligned by position within a page."""
    log("reading the Debian Administrator's Handbook")
    hb = pk.get(HANDBOOK_PKG)
    en_pages = handbook_pages(hb, "en")
    for para in (t for page in en_pages.values() for t in page):
        got.english_text(para, "handbook")
    for xx in PAIR_LANGS:
        if xx not in HANDBOOK_DIRS:
            continue
        pk.note(HANDBOOK_PKG, f"en-{xx}")
        skipped = 0
        for name, en_paras in en_pages.items():
            xx_paras = handbook_pages_cache(hb, xx).get(name)
            if xx_paras is None or len(xx_paras) != len(en_paras):
                skipped += 1
                continue
            for e, x in zip(en_paras, xx_paras):
                got.translation(e, x, xx, "handbook")
        if skipped:
            log(f"  {xx}: {skipped} handbook pages with a different paragraph count skipped")


def _read_lohelp(pk: Packages, got: _Gathered) -> dict[str, dict]:
    """The LibreOffice help: paragraphs aligned by (file, id). Returns them per language."""
    log("reading the LibreOffice help")
    lohelp = {}
    for lang in CORPUS_LANGS:
        root = pk.get(LOHELP_PKGS[lang])
        lohelp[lang] = lohelp_paragraphs(root, lang)
        pk.note(LOHELP_PKGS[lang], "corpus, classify")
        log(f"  {lang}: {len(lohelp[lang])} paragraphs")
    for e in lohelp["en"].values():
        got.english_text(e, "lohelp")
    for xx in PAIR_LANGS:
        for key, x in lohelp[xx].items():
            e = lohelp["en"].get(key)
            if e is None:
                got.mono[xx].append((x, "lohelp"))
            else:
                got.translation(e, x, xx, "lohelp")
    return lohelp


def _read_catalogs(pk: Packages, got: _Gathered) -> None:
    """gettext catalogs (LibreOffice UI and the desktop packages): English msgid -> msgstr."""
    log("reading gettext catalogs")
    sources = [(LO_L10N_PKGS[lang], "lo-ui", (lang,)) for lang in PAIR_LANGS + (LOWRES_LANG,)]
    sources += [(name, f"gettext:{name}", PAIR_LANGS + (LOWRES_LANG,)) for name in GETTEXT_PKGS]
    for name, tag, langs in sources:
        root = pk.get(name, required=name.startswith("libreoffice"))
        if root is None:
            continue
        for lang in langs:
            mos = catalogs(root, lang)
            if not mos:
                continue
            pk.note(name, "lowres" if lang == LOWRES_LANG else f"en-{lang}")
            for msgid, msgstr in (m for mo in mos for m in read_mo(mo)):
                if lang == LOWRES_LANG:
                    got.ne.append((msgid, msgstr, tag))
                    continue
                got.english_text(clean_text(msgid, markup=True, mnemonics=True), tag)
                got.translation(msgid, msgstr, lang, tag, gettext=True)


def _nepali_lines(ne: list[tuple[str, str, str]], english: set[str]) -> tuple[list[tuple[str, str]], Counter]:
    """Nepali is monolingual: the English msgid only detects untranslated strings."""
    cands = []
    for msgid, msgstr, tag in ne:
        e = clean_text(msgid, markup=True, mnemonics=True)
        x = clean_text(msgstr, markup=True, mnemonics=True)
        if e.casefold() != x.casefold():
            cands.append((x, tag))
    return _dedup_mono(cands, LOWRES_LANG, english)


_HB_CACHE: dict[tuple[str, str], dict[str, list[str]]] = {}


def handbook_pages_cache(root: Path, lang: str) -> dict[str, list[str]]:
    k = (str(root), lang)
    if k not in _HB_CACHE:
        _HB_CACHE[k] = handbook_pages(root, lang)
    return _HB_CACHE[k]


def _dedup_mono(cands: list[tuple[str, str]], lang: str, english: set[str]):
    out, seen, seen_tpl, c = [], set(), set(), Counter()
    for text, src in cands:
        if text in seen or not text_ok(text, lang):
            continue
        if lang != "en" and (text.casefold() in english or looks_english(text, lang)):
            continue
        seen.add(text)
        if len(text.split()) <= SHORT_TEMPLATE_WORDS:
            tk = template_key(text)
            if tk in seen_tpl:
                continue
            seen_tpl.add(tk)
        out.append((text, src))
        c[src] += 1
    return out, c
