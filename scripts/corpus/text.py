"""Text cleaning and filtering: markup, mnemonics, script and untranslated checks, templates."""

from __future__ import annotations

import html
import re
import unicodedata
from typing import NamedTuple

from corpus.config import MAX_CHARS, SHORT_TEMPLATE_WORDS

# --------------------------------------------------------------------------------------
# Text cleaning and filtering
# --------------------------------------------------------------------------------------

WS_RE = re.compile(r"\s+")
TAG_RE = re.compile(r"</?[A-Za-z][^<>]{0,300}>")
PLACEHOLDER_RE = re.compile(
    r"%(?:\d+\$)?[-+ #0]*\d*(?:\.\d+)?(?:ll|l|h|z|j|I64)?[sdiufgeExXcpo]"
    r"|%\d+|\$\(\w+\)|\$\{\w+\}|\{\w*\}|\$\w+|%[A-Z][A-Z_]+%?|@\w+@|<\w+>"
)
CODE_CHARS = set("{}[]<>=;\\|$#@^`*")
MNEMONIC_PAREN_RE = re.compile(r"\s*[(（](?:_|&|~)[A-Za-z0-9][)）]")
DROP_CHARS = {"\u00ad", "\ufeff", "\u200b", "\u2060"}

STOPWORDS = {
    "en": set(
        [
            "the",
            "and",
            "of",
            "to",
            "is",
            "are",
            "with",
            "this",
            "that",
            "you",
            "your",
            "which",
            "from",
            "will",
            "be",
            "by",
            "can",
            "for",
            "it",
            "not",
            "was",
            "were",
            "has",
            "have",
            "when",
            "there",
            "their",
            "these",
            "those",
            "into",
        ]
    ),
    "fr": set(
        [
            "le",
            "la",
            "les",
            "des",
            "du",
            "et",
            "est",
            "une",
            "pour",
            "dans",
            "sur",
            "que",
            "qui",
            "vous",
            "avec",
            "aux",
            "pas",
            "par",
            "ce",
            "cette",
            "sont",
            "ou",
            "être",
            "votre",
            "vos",
            "peut",
        ]
    ),
    "de": set(
        [
            "der",
            "die",
            "das",
            "und",
            "ist",
            "mit",
            "für",
            "von",
            "den",
            "dem",
            "ein",
            "eine",
            "zu",
            "nicht",
            "auf",
            "wird",
            "werden",
            "des",
            "im",
            "auch",
            "oder",
            "kann",
            "sich",
            "wenn",
            "sie",
        ]
    ),
    "es": set(
        [
            "el",
            "la",
            "los",
            "las",
            "del",
            "y",
            "es",
            "una",
            "para",
            "con",
            "que",
            "por",
            "se",
            "su",
            "al",
            "lo",
            "como",
            "esta",
            "este",
            "pueden",
            "puede",
            "sus",
        ]
    ),
}


def clean_text(s: str, markup: bool = False, mnemonics: bool = False) -> str:
    """Normalise one string: optional tag stripping/entity decoding, mnemonics, whitespace."""
    if markup:
        s = TAG_RE.sub(" ", s)
        s = html.unescape(s)
    if mnemonics:
        s = MNEMONIC_PAREN_RE.sub("", s)
        if s.count("_") == 1:
            s = re.sub(r"_(?=\w)", "", s)
        s = re.sub(r"~(?=\w)", "", s)
    s = s.replace("%PRODUCTNAME", "LibreOffice").replace("$[officename]", "LibreOffice")
    s = unicodedata.normalize("NFC", s)
    s = "".join(ch for ch in s if ch not in DROP_CHARS and (ch in "\t\n" or unicodedata.category(ch) != "Cc"))
    return WS_RE.sub(" ", s).strip()


def script_profile(s: str) -> tuple[int, int, int, int]:
    """(letters, latin, cyrillic, devanagari) counts; letters include combining marks."""
    letters = latin = cyr = deva = 0
    for ch in s:
        cat = unicodedata.category(ch)
        if cat[0] not in "LM":
            continue
        letters += 1
        o = ord(ch)
        if o < 0x250 or 0x1E00 <= o < 0x1F00:
            latin += 1
        elif 0x400 <= o < 0x530:
            cyr += 1
        elif 0x900 <= o < 0x980:
            deva += 1
    return letters, latin, cyr, deva


def words_of(s: str) -> list[str]:
    """Lower-cased word tokens with surrounding punctuation removed (keeps Devanagari marks)."""
    out = []
    for tok in s.split():
        tok = tok.strip("".join(ch for ch in set(tok) if unicodedata.category(ch)[0] in "PS"))
        if tok:
            out.append(tok.casefold())
    return out


def looks_english(s: str, lang: str) -> bool:
    """Function-word check: a fr/de/es line with more English than target stop words."""
    if lang not in STOPWORDS or lang == "en":
        return False
    toks = words_of(s)
    en = sum(t in STOPWORDS["en"] for t in toks)
    tgt = sum(t in STOPWORDS[lang] for t in toks)
    return en >= 2 and en > tgt


def text_ok(s: str, lang: str, min_words: int = 3) -> bool:
    """Length, markup/code, placeholder and script checks for one side."""
    if not s or len(s) > MAX_CHARS:
        return False
    n_words = len(s.split())
    nonspace = len(s) - s.count(" ")
    if lang in ("hi", "ne"):
        if nonspace < 10 or n_words < 2:
            return False
    elif n_words < min_words:
        return False
    letters, latin, cyr, deva = script_profile(s)
    if letters < 0.6 * nonspace:
        return False
    if sum(ch in CODE_CHARS for ch in s) > 0.05 * nonspace:
        return False
    if len(PLACEHOLDER_RE.findall(s)) * 3 > n_words:
        return False
    if lang in ("en", "fr", "de", "es"):
        return latin >= 0.9 * letters
    if lang == "ru":
        return cyr >= 0.5 * letters
    if lang in ("hi", "ne"):
        return deva >= 0.5 * letters
    raise ValueError(lang)


def template_key(s: str) -> str:
    s = PLACEHOLDER_RE.sub(" % ", s.casefold())
    s = re.sub(r"\d+", "0", s)
    return " ".join(words_of(s))


class Pair(NamedTuple):
    en: str
    xx: str
    src: str  # source tag: handbook / lohelp / lo-ui / gettext:<package>


def make_pair(en: str, xx: str, lang: str, src: str, gettext: bool = False) -> Pair | None:
    en = clean_text(en, markup=gettext, mnemonics=gettext)
    xx = clean_text(xx, markup=gettext, mnemonics=gettext)
    if not text_ok(en, "en") or not text_ok(xx, lang):
        return None
    if en.casefold() == xx.casefold() or looks_english(xx, lang):
        return None
    return Pair(en, xx, src)


def dedup_pairs(cands: list[Pair], english: set[str]) -> list[Pair]:
    """``cands`` in order, each (en, xx) once, without those whose xx side is a known English
    string (``english``: casefolded). Short pairs (up to ``SHORT_TEMPLATE_WORDS`` English words)
    that differ only in numbers, placeholders, case or punctuation ("Column 1 width",
    "Column 2 width") are kept once: the first pair of each English template."""
    seen: set[tuple[str, str]] = set()
    seen_tpl: set[tuple[str, str]] = set()
    first_of_template: dict[str, str] = {}
    kept = []
    for p in cands:
        if (p.en, p.xx) in seen or p.xx.casefold() in english:
            continue
        seen.add((p.en, p.xx))
        if len(p.en.split()) <= SHORT_TEMPLATE_WORDS:
            tk_en, tk_xx = template_key(p.en), template_key(p.xx)
            if first_of_template.setdefault(tk_en, p.en) != p.en or (tk_en, tk_xx) in seen_tpl:
                continue
            seen_tpl.add((tk_en, tk_xx))
        kept.append(p)
    return kept
