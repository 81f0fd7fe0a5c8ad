#!/usr/bin/env python3
"""Build the real multilingual corpus that ships with ``xlm`` (under ``data/``).

Every sentence comes from human-translated text carried by Debian packages.  The
script downloads the packages itself with ``apt-get download`` (no installation,
nothing outside the cache directory is touched), unpacks them with ``dpkg-deb -x``
and derives four data sets from them:

``corpus/``
    Monolingual and parallel text for en, fr, de, es, ru and hi in the file layout
    of the original XLM code: ``{train,valid,test}.{lang}.gz`` and
    ``{train,valid,test}.en-{xx}.{en,xx}.gz``.  Sources: the Debian
    Administrator's Handbook (``debian-handbook``, paragraphs aligned one-to-one
    per page), the LibreOffice help (``libreoffice-help-*``, paragraphs aligned by
    (file, id)) and gettext catalogs (``libreoffice-l10n-*`` and GNOME/desktop
    packages: English msgid -> translated msgstr).
``lowres/``
    Nepali language-modelling data (the paper's low-resource experiment) from
    gettext catalogs, with Hindi and English training text of 2-3x its size.
``classify/``
    LibreOffice help paragraphs labelled with the application they document
    (writer, calc, impress, draw, math, basic, base, chart), English train/valid
    and aligned test sets in all six corpus languages; split by help file.
``dicts/``
    Bilingual test dictionaries (MUSE format) from FreeDict, restricted to words
    that occur at least 5 times in the corpus training text.

Plus ``ATTRIBUTION.md`` (packages, versions, licences) and
``corpus/STATS.md`` / ``corpus/stats.json`` (line and word counts per file).

Text processing: HTML tags are stripped, entities decoded, whitespace collapsed,
keyboard mnemonics removed from interface strings; lines that are too short
(< 3 words, or < 10 characters / 2 words for Devanagari), too long (> 1000
characters), mostly markup/placeholders/code, in the wrong script, untranslated
(target == source, or the "translation" is a known English string or looks
English by function words) are dropped, as are short near-duplicate template
strings.  Pairs are deduplicated on the (en, xx) tuple, monolingual text on the
line.  Valid/test sets are drawn first (deterministically, from a keyed hash of
the English side so that the same English sentence is held out for every
language) and every train file is then filtered so that no held-out sentence of
any language, nor any classification valid/test paragraph, occurs in it.

Outputs are gzip files written with mtime=0 via a temporary name and an atomic
rename, so a rebuild from the same packages and seed is byte-identical.

Only the standard library is used.  Rebuild with::

    python scripts/build_corpus.py            # --cache /tmp/xlm-corpus-cache --out data
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import NamedTuple

from corpus.classify import build_classify
from corpus.collect import Collected, collect
from corpus.config import CORPUS_LANGS, PAIR_LANGS
from corpus.dicts import build_dicts, dicts_readme
from corpus.packages import Packages
from corpus.reports import attribution_md, stats_md
from corpus.split import draw_heldout
from corpus.text import Pair
from corpus.util import Hasher, file_stats, log, sample_keep_order, write_gz, write_text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--cache",
        type=Path,
        default=Path("/tmp/xlm-corpus-cache"),
        help="where .deb files are downloaded and unpacked (default: %(default)s)",
    )
    ap.add_argument("--out", type=Path, default=Path("data"), help="output directory (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=1234, help="seed of all random draws (default: %(default)s)")
    ap.add_argument("--offline", action="store_true", help="use only .deb files already in the cache")
    ap.add_argument(
        "--heldout", type=int, default=1000, help="valid and test size, pairs and lines (default: %(default)s)"
    )
    ap.add_argument("--mono-cap", type=int, default=40000, help="max monolingual train lines per language")
    ap.add_argument("--para-cap", type=int, default=20000, help="max parallel train pairs per language pair")
    ap.add_argument(
        "--lowres-ratio",
        type=float,
        default=2.5,
        help="hi/en lowres train size as a multiple of ne train characters (default: %(default)s)",
    )
    ap.add_argument("--cls-train", type=int, default=1500, help="max classification train examples per class")
    ap.add_argument("--cls-valid", type=int, default=150, help="max classification valid examples per class")
    ap.add_argument("--cls-test", type=int, default=150, help="max classification test examples per class")
    ap.add_argument("--dict-min-count", type=int, default=5, help="min corpus train frequency of dictionary words")
    ap.add_argument("--dict-max-words", type=int, default=1500, help="max source words per dictionary")
    return ap.parse_args(argv)


class Outputs:
    """Writes the build's files and remembers them (for the statistics and the stale-file sweep)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.written: list[Path] = []

    def gz(self, path: Path, lines: list[str]) -> None:
        write_gz(path, lines)
        self.written.append(path)

    def text(self, path: Path, text: str) -> None:
        write_text(path, text)
        self.written.append(path)


class HeldOut(NamedTuple):
    pairs: dict[str, dict[str, list[Pair]]]  # xx -> split -> pairs
    mono: dict[str, dict[str, list[str]]]  # lang -> split -> lines
    ne: dict[str, list[str]]  # split -> Nepali lines
    texts: set[str]  # every held-out text of any language: kept out of every train file


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    hasher = Hasher(args.seed)
    out = Outputs(args.out)
    pk = Packages(args.cache, args.offline)
    col = collect(pk)
    english = {t.casefold() for t, _ in col.mono["en"]}
    english |= {p.en.casefold() for ps in col.pairs.values() for p in ps}

    # classification first: its valid/test paragraphs are kept out of corpus train
    log("building the classification task")
    cls = build_classify(col.lohelp, english, hasher, args)
    write_classify(out, cls)
    log("drawing held-out sets")
    held = draw_all_heldout(col, cls["heldout"], hasher, args)
    log("writing the corpus")
    mono_train = write_corpus(out, col, held, hasher, args)
    log("writing the low-resource set")
    write_lowres(out, col, held, hasher, args)
    log("building dictionaries")
    dicts = build_dicts(pk, {lang: mono_train[lang] for lang in CORPUS_LANGS}, hasher, args)
    for xx, d in dicts.items():
        out.text(out.root / "dicts" / f"en-{xx}.txt", "".join(r + "\n" for r in d["rows"]))
    out.text(out.root / "dicts" / "README.md", dicts_readme(dicts, args))
    out.text(out.root / "ATTRIBUTION.md", attribution_md(pk, col.source_counts))
    write_stats(out, cls["summary"], pk, args.seed)
    remove_stale(out)
    return size_check(out.root)


def write_classify(out: Outputs, cls: dict) -> None:
    cdir = out.root / "classify"
    out.gz(cdir / "train.en.tsv.gz", [f"{lab}\t{t}" for lab, t in cls["train"]])
    out.gz(cdir / "valid.en.tsv.gz", [f"{lab}\t{t}" for lab, t in cls["valid"]])
    for lang in CORPUS_LANGS:
        out.gz(cdir / f"test.{lang}.tsv.gz", [f"{lab}\t{t}" for lab, t in cls["test"][lang]])


def draw_all_heldout(col: Collected, cls_heldout: set[str], hasher: Hasher, args) -> HeldOut:
    """Valid/test pairs per language, monolingual valid/test lines (English drawn from the
    English sides of the held-out pairs, xx their xx sides), Nepali valid/test lines."""
    held = draw_heldout(col.pairs, args.heldout, hasher, cls_heldout)
    mono: dict[str, dict[str, list[str]]] = {}
    for xx in PAIR_LANGS:
        mono[xx] = {s: [p.xx for p in held[xx][s]] for s in ("valid", "test")}
    mono["en"] = {}
    for s in ("valid", "test"):
        en_pool = sorted({p.en for xx in PAIR_LANGS for p in held[xx][s]})
        mono["en"][s] = sample_keep_order(
            sorted(en_pool, key=lambda e: hasher("mono-en", e)), args.heldout, hasher, f"mono-en-{s}"
        )
    ne_sorted = sorted(col.ne_lines, key=lambda t: (hasher("ne", t[0]), t[0]))
    ne = {
        "valid": [t for t, _ in ne_sorted[: args.heldout]],
        "test": [t for t, _ in ne_sorted[args.heldout : 2 * args.heldout]],
    }
    texts: set[str] = set(cls_heldout)
    for xx in PAIR_LANGS:
        for s in ("valid", "test"):
            for p in held[xx][s]:
                texts.add(p.en)
                texts.add(p.xx)
    for s in ("valid", "test"):
        texts.update(mono["en"][s])
        texts.update(ne[s])
    return HeldOut(held, mono, ne, texts)


def write_corpus(out: Outputs, col: Collected, held: HeldOut, hasher: Hasher, args) -> dict[str, list[str]]:
    """``corpus/``: parallel and monolingual train files (capped, held-out text removed) beside
    the held-out sets. Returns the monolingual train lines per language."""
    cdir = out.root / "corpus"
    for xx in PAIR_LANGS:
        pool = [p for p in col.pairs[xx] if p.en not in held.texts and p.xx not in held.texts]
        train = sample_keep_order(pool, args.para_cap, hasher, f"para-{xx}", key=lambda p: p.en + "\t" + p.xx)
        for s, ps in (("train", train), ("valid", held.pairs[xx]["valid"]), ("test", held.pairs[xx]["test"])):
            out.gz(cdir / f"{s}.en-{xx}.en.gz", [p.en for p in ps])
            out.gz(cdir / f"{s}.en-{xx}.{xx}.gz", [p.xx for p in ps])
    mono_train = {}
    for lang in CORPUS_LANGS:
        pool = [t for t, _ in col.mono[lang] if t not in held.texts]
        mono_train[lang] = sample_keep_order(pool, args.mono_cap, hasher, f"mono-{lang}")
        out.gz(cdir / f"train.{lang}.gz", mono_train[lang])
        out.gz(cdir / f"valid.{lang}.gz", held.mono[lang]["valid"])
        out.gz(cdir / f"test.{lang}.gz", held.mono[lang]["test"])
    return mono_train


def write_lowres(out: Outputs, col: Collected, held: HeldOut, hasher: Hasher, args) -> None:
    """``lowres/``: Nepali, with Hindi and English train text of ``--lowres-ratio`` times its characters."""
    ldir = out.root / "lowres"
    ne_train = [t for t, _ in col.ne_lines if t not in held.texts]
    ne_chars = sum(len(t) for t in ne_train)
    out.gz(ldir / "train.ne.gz", ne_train)
    out.gz(ldir / "valid.ne.gz", held.ne["valid"])
    out.gz(ldir / "test.ne.gz", held.ne["test"])
    for lang in ("hi", "en"):
        pool = [t for t, _ in col.mono[lang] if t not in held.texts]
        ranked = sorted(range(len(pool)), key=lambda i: (hasher(f"lowres-{lang}", pool[i]), i))
        keep, total = [], 0
        for i in ranked:
            if total >= args.lowres_ratio * ne_chars:
                break
            keep.append(i)
            total += len(pool[i])
        out.gz(ldir / f"train.{lang}.gz", [pool[i] for i in sorted(keep)])


def write_stats(out: Outputs, cls_summary: dict, pk: Packages, seed: int) -> None:
    """``corpus/stats.json`` and ``corpus/STATS.md``: counts of every file written so far."""
    stats = {p.relative_to(out.root).as_posix(): file_stats(p) for p in sorted(out.written)}
    stats_doc = {
        "seed": seed,
        "files": stats,
        "classify": cls_summary,
        "packages": {n: i["version"] for n, i in sorted(pk.info.items()) if i["used_for"]},
    }
    out.text(
        out.root / "corpus" / "stats.json", json.dumps(stats_doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    )
    out.text(out.root / "corpus" / "STATS.md", stats_md(stats, cls_summary))


def remove_stale(out: Outputs) -> None:
    """Remove the outputs of earlier builds that this one did not write."""
    keep = {p.resolve() for p in out.written}
    for sub in ("corpus", "lowres", "classify", "dicts"):
        for p in sorted((out.root / sub).glob("*")):
            if p.is_file() and p.resolve() not in keep and p.suffix in (".gz", ".txt", ".md", ".json", ".tmp"):
                log(f"  removing stale {p}")
                p.unlink()


def size_check(root: Path) -> int:
    """1 (and a warning) when the output is over its size budget: 25 MB in all, 4 MB a file."""
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    biggest = max((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    log(f"done: {total / 1e6:.2f} MB under {root}; largest file {biggest} ({biggest.stat().st_size / 1e6:.2f} MB)")
    if total > 25e6 or biggest.stat().st_size > 4e6:
        log("WARNING: size budget exceeded (25 MB total, 4 MB per file)")
        return 1
    return 0
