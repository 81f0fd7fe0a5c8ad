"""Word segmentation of the languages written without spaces between words: zh, ja, th.

The original XLM pre-processing (``tools/tokenize.sh``) runs, for these three languages,
a word segmenter where the other languages get the Moses tokenizer: the Stanford
segmenter for Chinese, KyTea for Japanese and PyThaiNLP for Thai. Here each is a
maintained package from the Python package index, behind the optional extra
``segment`` (``pip install 'xlm[segment]'``):

* **zh**: jieba (dictionary + HMM for unknown words). The Stanford segmenter is a Java
  program with CRF models trained on the Penn Chinese Treebank; jieba is the segmenter
  Hugging Face's ``XLMTokenizer`` uses for ``zh``. Word boundaries differ in places
  (jieba tends to keep longer dictionary words, e.g. ``北京大学``).
* **ja**: MeCab (through ``fugashi``) with the UniDic-lite dictionary. The ``kytea``
  binding installs, but KyTea's model file is distributed only from its author's web
  site, not by any package index, so it cannot be a declared dependency. MeCab/UniDic
  cuts finer than KyTea in places (it splits inflections: ``開け ませ ん``).
* **th**: PyThaiNLP's ``word_tokenize`` with its default dictionary engine ``newmm``,
  as the original does.

A segmenter returns the words of one line; whitespace is never part of a word.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from types import ModuleType

from xlm.errors import XLMError

EXTRA = "segment"
# language -> (segmenter, the packages it needs: import name -> distribution name)
SEGMENTERS: dict[str, tuple[str, dict[str, str]]] = {
    "zh": ("jieba", {"jieba": "jieba"}),
    "ja": ("MeCab (fugashi + UniDic-lite)", {"fugashi": "fugashi", "unidic_lite": "unidic-lite"}),
    "th": ("PyThaiNLP newmm", {"pythainlp": "pythainlp"}),
}
SEGMENTED_LANGS = frozenset(SEGMENTERS)

Segmenter = Callable[[str], list[str]]


def _require(lang: str, module: str) -> ModuleType:
    """Import ``module`` or fail with one line naming the extra to install."""
    name, packages = SEGMENTERS[lang]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise XLMError(
            f"language {lang!r} is word-segmented with {name}, but the package {packages[module.split('.')[0]]!r} "
            f"is not installed: pip install 'xlm[{EXTRA}]'"
        ) from None


def _jieba() -> Segmenter:
    jieba = _require("zh", "jieba")
    jieba.setLogLevel(logging.WARNING)  # it logs the loading of its dictionary otherwise
    tokenizer = jieba.Tokenizer()
    return lambda text: tokenizer.lcut(text)


def _mecab() -> Segmenter:
    fugashi = _require("ja", "fugashi")
    unidic_lite = _require("ja", "unidic_lite")
    # the dictionary named explicitly, so that another installed UniDic cannot change the output
    tagger = fugashi.Tagger(f'-d "{unidic_lite.DICDIR}"')
    return lambda text: [word.surface for word in tagger(text)]


def _thai() -> Segmenter:
    tokenize = _require("th", "pythainlp.tokenize")
    return lambda text: tokenize.word_tokenize(text, engine="newmm", keep_whitespace=False)


_BUILDERS: dict[str, Callable[[], Segmenter]] = {"zh": _jieba, "ja": _mecab, "th": _thai}


@functools.cache
def segmenter(lang: str) -> Segmenter:
    """The word segmenter of ``lang`` (one per process), or an :class:`XLMError` naming the
    extra to install when its package is missing."""
    if lang not in _BUILDERS:
        raise XLMError(f"language {lang!r} has no word segmenter (only {', '.join(sorted(_BUILDERS))})")
    return _BUILDERS[lang]()


def segment(text: str, lang: str) -> list[str]:
    """The words of ``text`` in ``lang`` (zh, ja or th); no empty or whitespace tokens."""
    return [part for word in segmenter(lang)(text) for part in word.split()]


def segmenter_versions(langs: list[str]) -> dict[str, str]:
    """``lang -> "segmenter (package version, ...)"`` for the segmented ones among ``langs``."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for lang in langs:
        if lang in SEGMENTERS:
            name, packages = SEGMENTERS[lang]
            found = []
            for dist in packages.values():
                try:
                    found.append(f"{dist} {version(dist)}")
                except PackageNotFoundError:
                    found.append(f"{dist} missing")
            out[lang] = f"{name} ({', '.join(found)})"
    return out


def _is_thai(ch: str) -> bool:
    return "\u0e00" <= ch <= "\u0e7f"


def join_thai(words: list[str]) -> str:
    """Undo Thai segmentation: no space between two Thai words, one space elsewhere (Thai
    writes spaces only between phrases, which the segmenter does not keep)."""
    out = ""
    for word in words:
        if out and not (_is_thai(out[-1]) and _is_thai(word[0])):
            out += " "
        out += word
    return out
