"""Bilingual test dictionaries (MUSE format) from FreeDict."""

from __future__ import annotations

import unicodedata
from collections import Counter, defaultdict

from corpus.config import DICT_PKGS
from corpus.packages import Packages
from corpus.readers import read_dictd
from corpus.text import words_of
from corpus.util import Hasher, log, sample_keep_order

# --------------------------------------------------------------------------------------
# Dictionaries
# --------------------------------------------------------------------------------------


def is_word(w: str) -> bool:
    """A single word of at least two letters (combining marks allowed), nothing else."""
    if len(w) < 2 or " " in w or "~" in w:
        return False
    return all(unicodedata.category(ch)[0] in "LM" for ch in w)


def build_dicts(pk: Packages, train_text: dict[str, list[str]], hasher: Hasher, args) -> dict:
    freq = {lang: Counter(w for line in lines for w in words_of(line)) for lang, lines in train_text.items()}
    result = {}
    for xx, name in DICT_PKGS.items():
        root = pk.get(name, required=False)
        if root is None:
            continue
        pk.note(name, f"dicts en-{xx}")
        entries: dict[str, set[str]] = defaultdict(set)
        for head, targets in read_dictd(root):
            src = head.strip().casefold()
            if not is_word(src) or freq["en"][src] < args.dict_min_count:
                continue
            for t in targets:
                t = unicodedata.normalize("NFC", t.strip()).casefold()
                if is_word(t) and t != src and freq[xx][t] >= args.dict_min_count:
                    entries[src].add(t)
        sources = sorted(entries)
        chosen = sorted(sample_keep_order(sources, args.dict_max_words, hasher, f"dict-{xx}"))
        rows = [f"{s}\t{t}" for s in chosen for t in sorted(entries[s])]
        result[xx] = {"rows": rows, "sources": len(chosen), "eligible_sources": len(sources)}
        log(f"  dict en-{xx}: {len(chosen)} source words ({len(sources)} eligible), {len(rows)} pairs")
    return result


def dicts_readme(dicts: dict, args) -> str:
    lines = [
        "# Bilingual test dictionaries",
        "",
        "Word-translation test dictionaries in the MUSE format: one `source<TAB>target` pair",
        "per line, UTF-8, lower-cased; a source word may appear on several lines with",
        "different targets.  They were extracted from the FreeDict English-X dictionaries",
        "(`dict-freedict-eng-*` Debian packages, GPL) by `scripts/build_corpus.py`:",
        "",
        "- only single-word entries (letters only, at least two) are kept, both sides lower-cased;",
        f"- both words must occur at least {args.dict_min_count} times in the corpus training text",
        "  of their language (`data/corpus/train.{lang}.gz`), so a model trained on the",
        "  shipped corpus has seen them;",
        f"- at most {args.dict_max_words} source words per pair, drawn at random with a fixed seed.",
        "",
        "Use them to evaluate cross-lingual word embeddings (precision@k of retrieving a",
        "correct target word for each source word).  FreeDict entries are of mixed quality",
        "(the en-de dictionary in particular is large and noisy, the en-ru one small).",
        "",
        "| file | source words | pairs |",
        "|---|---|---|",
    ]
    for xx, d in dicts.items():
        lines.append(f"| `en-{xx}.txt` | {d['sources']} | {len(d['rows'])} |")
    return "\n".join(lines) + "\n"
