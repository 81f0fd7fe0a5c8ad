"""Held-out sets: the same English sentences held out for every language."""

from __future__ import annotations

from corpus.config import PAIR_LANGS
from corpus.text import Pair
from corpus.util import Hasher

# --------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------


def draw_heldout(pairs: dict[str, list[Pair]], n: int, hasher: Hasher, exclude: set[str]):
    """Valid/test pairs per language, keyed on a hash of the English side.

    Each English sentence is assigned to 'valid' or 'test' once (by the hash), and
    each language takes its lowest-hash pairs, so the same English sentences tend to
    be held out for all languages and no English sentence is valid in one language
    and test in another.
    """
    held = {}
    for xx in PAIR_LANGS:
        cands = sorted(pairs[xx], key=lambda p: (hasher("heldout", p.en), p.xx))
        buckets: dict[str, list[Pair]] = {"valid": [], "test": []}
        used_en = {"valid": set(), "test": set()}
        used_xx: set[str] = set()
        for p in cands:
            split = "valid" if hasher("split", p.en) % 2 == 0 else "test"
            if len(buckets[split]) >= n:
                if all(len(b) >= n for b in buckets.values()):
                    break
                continue
            if p.en in used_en[split] or p.xx in used_xx or p.en in exclude or p.xx in exclude:
                continue
            buckets[split].append(p)
            used_en[split].add(p.en)
            used_xx.add(p.xx)
        held[xx] = buckets
    return held
