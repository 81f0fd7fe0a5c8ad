"""Collection: every source read, aligned into (en, xx) pairs and monolingual lines, deduplicated."""

from __future__ import annotations

from collections import Counter
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
from corpus.text import Pair, clean_text, looks_english, make_pair, template_key, text_ok
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


def collect(pk: Packages) -> Collected:
    raw: dict[str, list[Pair]] = {xx: [] for xx in PAIR_LANGS}
    english_raw: list[str] = []  # English texts seen anywhere (for untranslated detection)
    mono_raw: dict[str, list[tuple[str, str]]] = {lang: [] for lang in CORPUS_LANGS}

    # Debian Administrator's Handbook
    log("reading the Debian Administrator's Handbook")
    hb = pk.get(HANDBOOK_PKG)
    en_pages = handbook_pages(hb, "en")
    for para in (t for page in en_pages.values() for t in page):
        english_raw.append(para)
        mono_raw["en"].append((para, "handbook"))
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
                mono_raw[xx].append((x, "handbook"))
                p = make_pair(e, x, xx, "handbook")
                if p:
                    raw[xx].append(p)
        if skipped:
            log(f"  {xx}: {skipped} handbook pages with a different paragraph count skipped")

    # LibreOffice help
    log("reading the LibreOffice help")
    lohelp = {}
    for lang in CORPUS_LANGS:
        root = pk.get(LOHELP_PKGS[lang])
        lohelp[lang] = lohelp_paragraphs(root, lang)
        pk.note(LOHELP_PKGS[lang], "corpus, classify")
        log(f"  {lang}: {len(lohelp[lang])} paragraphs")
    for key, e in lohelp["en"].items():
        english_raw.append(e)
        mono_raw["en"].append((e, "lohelp"))
    for xx in PAIR_LANGS:
        for key, x in lohelp[xx].items():
            mono_raw[xx].append((x, "lohelp"))
            e = lohelp["en"].get(key)
            if e is not None:
                p = make_pair(e, x, xx, "lohelp")
                if p:
                    raw[xx].append(p)

    # gettext catalogs
    log("reading gettext catalogs")
    ne_raw: list[tuple[str, str, str]] = []  # (msgid, msgstr, src)
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
            for mo in mos:
                for msgid, msgstr in read_mo(mo):
                    if lang == LOWRES_LANG:
                        ne_raw.append((msgid, msgstr, tag))
                        continue
                    e = clean_text(msgid, markup=True, mnemonics=True)
                    english_raw.append(e)
                    mono_raw["en"].append((e, tag))
                    mono_raw[lang].append((clean_text(msgstr, markup=True, mnemonics=True), tag))
                    p = make_pair(msgid, msgstr, lang, tag, gettext=True)
                    if p:
                        raw[lang].append(p)

    english = {e.casefold() for e in english_raw if e}

    # Deduplicate pairs: exact (en, xx), then short templates on the English side.
    pairs: dict[str, list[Pair]] = {}
    counts: dict[str, Counter] = {}
    for xx in PAIR_LANGS:
        seen: set[tuple[str, str]] = set()
        seen_tpl: set[tuple[str, str]] = set()
        first_of_template: dict[str, str] = {}
        kept = []
        for p in raw[xx]:
            if (p.en, p.xx) in seen or p.xx.casefold() in english:
                continue
            seen.add((p.en, p.xx))
            if len(p.en.split()) <= SHORT_TEMPLATE_WORDS:
                # short strings that differ only in numbers/placeholders/case/punctuation
                # ("Column 1 width", "Column 2 width") are kept once
                tk_en, tk_xx = template_key(p.en), template_key(p.xx)
                if first_of_template.setdefault(tk_en, p.en) != p.en or (tk_en, tk_xx) in seen_tpl:
                    continue
                seen_tpl.add((tk_en, tk_xx))
            kept.append(p)
        pairs[xx] = kept
        counts[xx] = Counter(p.src for p in kept)
        log(f"  en-{xx}: {len(kept)} pairs")

    mono: dict[str, list[str]] = {}
    for lang in CORPUS_LANGS:
        mono[lang], c = _dedup_mono(mono_raw[lang], lang, english)
        counts[f"mono:{lang}"] = c
        log(f"  mono {lang}: {len(mono[lang])} lines")

    # Nepali (monolingual; the English msgid is only used to detect untranslated strings)
    ne_cands = []
    for msgid, msgstr, tag in ne_raw:
        e = clean_text(msgid, markup=True, mnemonics=True)
        x = clean_text(msgstr, markup=True, mnemonics=True)
        if e.casefold() == x.casefold():
            continue
        ne_cands.append((x, tag))
    ne_lines, c = _dedup_mono(ne_cands, LOWRES_LANG, english)
    counts[f"mono:{LOWRES_LANG}"] = c
    log(f"  mono ne: {len(ne_lines)} lines")
    return Collected(pairs, mono, lohelp, ne_lines, counts)


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
