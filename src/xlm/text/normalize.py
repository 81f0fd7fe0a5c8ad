"""Per-language text normalization and word tokenization, as in the original XLM
pre-processing and Hugging Face's ``XLMTokenizer``:

1. replace unicode punctuation (Moses ``replace-unicode-punctuation.perl``);
2. ``sacremoses.MosesPunctNormalizer(lang)`` (``normalize-punctuation.perl -l lang``);
3. remove non-printing characters: every character of unicode category ``C*``
   (control, format, surrogate, private use, unassigned) is *dropped*, as HF's
   ``remove_non_printing_char`` does. Lines are split on ``\\n`` only, so a line never
   contains its newline; a tab or ``\\r`` inside a line is dropped like any other ``Cc``;
4. ``sacremoses.MosesTokenizer(lang).tokenize(text, escape=False)``, or for Chinese,
   Japanese and Thai the word segmenter of :mod:`xlm.text.segment` instead (as the
   original's ``tokenize.sh`` does; needs the optional extra ``segment``);
5. optionally lowercase and remove accents (lowercase, NFD, drop ``Mn``, lowercase),
   applied to the Moses tokens as ``tools/lowercase_and_remove_accent.py`` does.

The result is the tokens joined by single spaces. Romanian gets the extra WMT16
diacritics clean-up that HF applies for ``ro``.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence

from sacremoses import MosesPunctNormalizer, MosesTokenizer

from xlm.errors import DataError, XLMError
from xlm.text.segment import SEGMENTED_LANGS, segment, segmenter

# Moses replace-unicode-punctuation.perl: single characters mapped to ASCII.
UNICODE_PUNCT: dict[str, str] = {
    "，": ",",
    "、": ",",
    "”": '"',
    "“": '"',
    "∶": ":",
    "：": ":",
    "？": "?",
    "《": '"',
    "》": '"',
    "）": ")",
    "！": "!",
    "（": "(",
    "；": ";",
    "」": '"',
    "「": '"',
    "～": "~",
    "’": "'",
    "…": "...",
    "━": "-",
    "〈": "<",
    "〉": ">",
    "【": "[",
    "】": "]",
    "％": "%",
    **{chr(0xFF10 + d): str(d) for d in range(10)},  # full-width digits
}
# The two full stops also swallow the whitespace that follows them.
_FULL_STOP_RE = re.compile(r"[。．]\s*")
_PUNCT_TABLE = str.maketrans(UNICODE_PUNCT)

# WMT16 Romanian normalisation + diacritics removal (applied by HF for ``ro``).
_ROMANIAN_TABLE = str.maketrans(
    {
        "\u015e": "S", "\u015f": "s", "\u0162": "T", "\u0163": "t",
        "\u0218": "S", "\u0219": "s", "\u021a": "T", "\u021b": "t",
        "\u0102": "A", "\u0103": "a", "\u00c2": "A", "\u00e2": "a",
        "\u00ce": "I", "\u00ee": "i",
    }
)  # fmt: skip


def replace_unicode_punct(text: str) -> str:
    """Map CJK / full-width punctuation and digits to ASCII (table-driven)."""
    if "。" in text or "．" in text:
        text = _FULL_STOP_RE.sub(". ", text)
    return text.translate(_PUNCT_TABLE)


def remove_non_printing_char(text: str) -> str:
    """Drop every character whose unicode category starts with ``C``."""
    if text.isprintable():  # fast path: isprintable() is False for every C* (and non-space Z*) char
        return text
    return "".join(c for c in text if not unicodedata.category(c).startswith("C"))


def lowercase_and_remove_accent(tokens: list[str]) -> list[str]:
    """Lowercase, NFD-decompose and drop combining marks (``Mn``), token by token.

    Works on the space-joined tokens and splits on ``" "`` again, exactly like the original
    script, so the number of tokens is kept (a token made only of accents becomes ``""``).
    """
    text = unicodedata.normalize("NFD", " ".join(tokens).lower())
    return "".join(c for c in text if unicodedata.category(c) != "Mn").lower().split(" ")


class Normalizer:
    """Normalize and Moses-tokenize lines of one language: ``Normalizer("fr")(line) -> str``.

    The sacremoses objects are built once per instance (they are costly to create).
    """

    def __init__(self, lang: str, lowercase_and_remove_accent: bool = False) -> None:
        if not re.fullmatch(r"[a-z]{2,3}", lang):
            raise XLMError(f"language code {lang!r} is not a 2- or 3-letter lowercase ISO code")
        self.segmented = lang in SEGMENTED_LANGS
        if self.segmented:
            segmenter(lang)  # load it now: a missing package is reported before any work starts
        self.lang = lang
        self.lowercase_and_remove_accent = lowercase_and_remove_accent
        self._moses = MosesTokenizer(lang=lang)
        # MosesPunctNormalizer(lang).normalize() runs ``re.sub(pattern_string, ...)`` for each
        # of its ~45 rules; the same rules compiled once give the same text, a little faster.
        self._punct_rules = [(re.compile(p), r) for p, r in MosesPunctNormalizer(lang=lang).substitutions]

    def punct_normalize(self, text: str) -> str:
        """Exactly ``sacremoses.MosesPunctNormalizer(lang).normalize(text)``."""
        for pattern, repl in self._punct_rules:
            text = pattern.sub(repl, text)
        return text.strip()

    def clean(self, line: str) -> str:
        """Steps 1-3 (and the Romanian clean-up): the text before word tokenization."""
        text = replace_unicode_punct(line)
        text = self.punct_normalize(text)
        text = remove_non_printing_char(text)
        if self.lang == "ro":
            text = text.translate(_ROMANIAN_TABLE)
        return text

    def tokens(self, line: str) -> list[str]:
        """The word tokens of ``line`` (empty tokens removed)."""
        text = self.clean(line)
        words = segment(text, self.lang) if self.segmented else self._moses.tokenize(text, escape=False)
        if self.lowercase_and_remove_accent:
            words = lowercase_and_remove_accent(words)
        return [w for w in words if w]

    def __call__(self, line: str) -> str:
        return " ".join(self.tokens(line))


@functools.lru_cache(maxsize=64)
def cached_normalizer(lang: str, lowercase_and_remove_accent: bool = False) -> Normalizer:
    """One shared :class:`Normalizer` per (language, setting) and process (used by workers)."""
    return Normalizer(lang, lowercase_and_remove_accent)


def normalize_lines(lines: Iterable[str], lang: str, lowercase_and_remove_accent: bool = False) -> Iterator[str]:
    """Normalize a stream of lines lazily (one line out per line in; newlines are stripped)."""
    normalizer = cached_normalizer(lang, lowercase_and_remove_accent)
    for line in lines:
        yield normalizer(line.rstrip("\n"))


def normalize_raw_lines(
    lang: str,
    lowercase_and_remove_accent: bool,
    raw_lines: Sequence[bytes],
    source: str,
    line_numbers: Sequence[int],
    errors: str = "strict",
    keep_raw: bool = False,
) -> list[str]:
    """Decode (UTF-8) and normalize raw lines; a worker task of ``xlm prepare``. With
    ``keep_raw`` the lines are only decoded (SentencePiece and WordPiece normalize inside).

    Invalid UTF-8 raises :class:`~xlm.errors.DataError` naming ``source`` and the line's
    number (from ``line_numbers``), unless ``errors="replace"``.
    """
    normalizer = _keep if keep_raw else cached_normalizer(lang, lowercase_and_remove_accent)
    out: list[str] = []
    for raw, n in zip(raw_lines, line_numbers):
        try:
            text = raw.rstrip(b"\n").decode("utf-8", errors=errors)
        except UnicodeDecodeError as e:
            raise DataError(
                f"{source}:{n}: invalid UTF-8 ({e.reason} at byte {e.start} of the line); "
                "re-encode the file as UTF-8 (invalid input is an error by default)"
            ) from None
        out.append(normalizer(text))
    return out


def _keep(text: str) -> str:
    return text
