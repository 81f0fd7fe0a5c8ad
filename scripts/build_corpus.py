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
import functools
import gzip
import hashlib
import html
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import NamedTuple

# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------

CORPUS_LANGS = ("en", "fr", "de", "es", "ru", "hi")
PAIR_LANGS = ("fr", "de", "es", "ru", "hi")
LOWRES_LANG = "ne"

HANDBOOK_PKG = "debian-handbook"
HANDBOOK_DIRS = {"en": "en-US", "fr": "fr-FR", "de": "de-DE", "es": "es-ES", "ru": "ru-RU"}

LOHELP_PKGS = {
    "en": "libreoffice-help-en-us",
    **{lang: f"libreoffice-help-{lang}" for lang in PAIR_LANGS},
}
LOHELP_DIRS = {"en": "en-US", **{lang: lang for lang in PAIR_LANGS}}

LO_L10N_PKGS = {lang: f"libreoffice-l10n-{lang}" for lang in PAIR_LANGS + (LOWRES_LANG,)}

# Packages whose gettext catalogs (usr/share/locale/XX/LC_MESSAGES/*.mo) are used for
# every language they cover.  Chosen because they carry sizeable Hindi and Nepali
# catalogs (Hindi is the scarcest corpus language) as well as the big European ones;
# country/city-name catalogs (iso-codes, libgweather) are left out because they are
# lists of names, not sentences.
GETTEXT_PKGS = (
    "inkscape",
    "evolution-common",
    "brasero-common",
    "gnote",
    "hexchat-common",
    "libgtksourceview-4-common",
    "network-manager-gnome",
    "gnome-settings-daemon-common",
    "gvfs-common",
    "gnome-software-common",
    "gnome-panel-data",
    "gnome-applets-data",
    "mutter-common",
    "gnome-calculator",
    "libgtk-3-common",
    "libgtk2.0-common",
    "libglib2.0-data",
    "gsettings-desktop-schemas",
    "libgdk-pixbuf2.0-common",
    "at-spi2-common",
    "gnome-control-center-data",
    "gnome-shell-common",
    "gnome-terminal-data",
    "gnome-disk-utility",
    "gnome-system-monitor",
    "nautilus-data",
    "gedit-common",
    "evince-common",
    "eog",
    "file-roller",
    "seahorse",
    "evolution-data-server-common",
    "rhythmbox-data",
    "totem-common",
    "cheese-common",
    "pidgin-data",
    "gimp-data",
    "gnumeric-common",
    "aisleriot",
    "synaptic",
    "dpkg",
    "apt",
    "libapt-pkg6.0",
    "login",
)

DICT_PKGS = {
    "fr": "dict-freedict-eng-fra",
    "de": "dict-freedict-eng-deu",
    "es": "dict-freedict-eng-spa",
    "ru": "dict-freedict-eng-rus",
    "hi": "dict-freedict-eng-hin",
}

LO_APPS = {
    "swriter": "writer",
    "scalc": "calc",
    "simpress": "impress",
    "sdraw": "draw",
    "smath": "math",
    "sbasic": "basic",
    "sdatabase": "base",
    "schart": "chart",
}

MAX_CHARS = 1000
SHORT_TEMPLATE_WORDS = 8  # pairs/lines up to this many words are deduplicated by template


# --------------------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Hasher:
    """Keyed, order-independent pseudo-random numbers: the seed makes draws reproducible."""

    def __init__(self, seed: int) -> None:
        self.key = str(seed).encode()

    def __call__(self, *parts: str) -> int:
        h = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8, key=self.key)
        return int.from_bytes(h.digest(), "big")


def sample_keep_order(items: list, k: int, hasher: Hasher, tag: str,
                      key: Callable[[object], str] = str) -> list:
    """Deterministic random subset of ``k`` items, returned in their original order."""
    if len(items) <= k:
        return list(items)
    ranked = sorted(range(len(items)), key=lambda i: (hasher(tag, key(items[i])), i))
    keep = sorted(ranked[:k])
    return [items[i] for i in keep]


def write_gz(path: Path, lines: Iterable[str]) -> None:
    """Write UTF-8 lines gzip-compressed with mtime=0 (reproducible), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------
# Debian packages
# --------------------------------------------------------------------------------------


def _version_cmp(a: str, b: str) -> int:
    if a == b:
        return 0
    r = subprocess.run(["dpkg", "--compare-versions", a, "lt", b])
    return -1 if r.returncode == 0 else 1


class Packages:
    """Download (``apt-get download``) and unpack (``dpkg-deb -x``) packages into a cache."""

    def __init__(self, cache: Path, offline: bool) -> None:
        self.debs = cache / "debs"
        self.root = cache / "root"
        self.debs.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        self.offline = offline
        self.updated = False
        self.info: dict[str, dict] = {}

    def _download(self, name: str) -> bool:
        cmd = ["apt-get", "download", name]
        r = subprocess.run(cmd, cwd=self.debs, capture_output=True, text=True)
        if r.returncode != 0 and not self.updated:
            log(f"  apt-get download {name} failed; running apt-get update once")
            subprocess.run(["apt-get", "update"], capture_output=True, text=True)
            self.updated = True
            r = subprocess.run(cmd, cwd=self.debs, capture_output=True, text=True)
        if r.returncode != 0:
            log(f"  could not download {name}: {r.stderr.strip().splitlines()[-1:]}")
        return r.returncode == 0

    def get(self, name: str, required: bool = True) -> Path | None:
        if name in self.info:
            return self.info[name]["root"]
        debs = sorted(self.debs.glob(f"{name}_*.deb"))
        if not debs and not self.offline:
            log(f"  downloading {name}")
            self._download(name)
            debs = sorted(self.debs.glob(f"{name}_*.deb"))
        if not debs:
            if required:
                raise SystemExit(f"package {name} is not available (see SOURCES / apt-get)")
            log(f"  WARNING: package {name} unavailable, skipped")
            return None
        versions = {}
        for deb in debs:
            out = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True,
                                 text=True, check=True)
            versions[deb] = out.stdout.strip()
        deb = max(debs, key=functools.cmp_to_key(lambda a, b: _version_cmp(versions[a], versions[b])))
        dest = self.root / name
        marker = dest / f".extracted-{deb.name}"
        if not marker.exists():
            if dest.exists():
                shutil.rmtree(dest)
            dest.mkdir(parents=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
            marker.touch()
        self.info[name] = {"version": versions[deb], "deb": deb.name, "root": dest, "used_for": set()}
        return dest

    def note(self, name: str, what: str) -> None:
        if name in self.info:
            self.info[name]["used_for"].add(what)


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
    "en": set(["the", "and", "of", "to", "is", "are", "with", "this", "that", "you", "your", "which", "from", "will", "be", "by", "can", "for", "it", "not", "was", "were", "has", "have", "when", "there", "their", "these", "those", "into"]),
    "fr": set(["le", "la", "les", "des", "du", "et", "est", "une", "pour", "dans", "sur", "que", "qui", "vous", "avec", "aux", "pas", "par", "ce", "cette", "sont", "ou", "être", "votre", "vos", "peut"]),
    "de": set(["der", "die", "das", "und", "ist", "mit", "für", "von", "den", "dem", "ein", "eine", "zu", "nicht", "auf", "wird", "werden", "des", "im", "auch", "oder", "kann", "sich", "wenn", "sie"]),
    "es": set(["el", "la", "los", "las", "del", "y", "es", "una", "para", "con", "que", "por", "se", "su", "al", "lo", "como", "esta", "este", "pueden", "puede", "sus"]),
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


# --------------------------------------------------------------------------------------
# Readers: HTML blocks, gettext catalogs, dictd dictionaries
# --------------------------------------------------------------------------------------

VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
             "source", "track", "wbr", "param"}
BLOCK_TAGS = {"p", "div", "li", "td", "th", "tr", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6",
              "table", "ul", "ol", "dl"}
SKIP_TAGS = {"script", "style", "pre", "noscript"}


class BlockCollector(HTMLParser):
    """Collect the text of 'target' elements chosen by ``is_target(tag, attrs, stack)``.

    Nested targets get their own text (it is not added to the enclosing target); the
    content of script/style/pre elements and of hidden non-default variants is ignored.
    """

    def __init__(self, is_target: Callable[[str, dict, list], object]) -> None:
        super().__init__(convert_charrefs=True)
        self.is_target = is_target
        self.stack: list[tuple[str, int | None, bool, dict]] = []
        self.items: list[list] = []  # [key, chunks]
        self.open: list[int] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs_list: list) -> None:
        if tag in VOID_TAGS:
            if self.open:
                self.items[self.open[-1]][1].append(" ")
            return
        attrs = {k: (v or "") for k, v in attrs_list}
        key = self.is_target(tag, attrs, self.stack)
        idx = None
        if key is not None:
            idx = len(self.items)
            self.items.append([key, []])
            self.open.append(idx)
        elif self.open and tag in BLOCK_TAGS:
            self.items[self.open[-1]][1].append(" ")
        # LibreOffice help: platform variants (Command/Ctrl) are hidden spans; keep only
        # the default one
        skip = tag in SKIP_TAGS or ("hidden" in attrs and not attrs.get("id", "").startswith("default"))
        self.skip += skip
        self.stack.append((tag, idx, skip, attrs))

    def handle_startendtag(self, tag: str, attrs_list: list) -> None:
        if tag not in VOID_TAGS:
            return  # e.g. <a id="x"/>: empty element
        self.handle_starttag(tag, attrs_list)

    def handle_endtag(self, tag: str) -> None:
        if not any(t[0] == tag for t in self.stack):
            return
        while self.stack:
            t, idx, skip, _ = self.stack.pop()
            self.skip -= skip
            if idx is not None:
                self.open.remove(idx)
            if t == tag:
                break
        if self.open and tag in BLOCK_TAGS:
            self.items[self.open[-1]][1].append(" ")

    def handle_data(self, data: str) -> None:
        if self.open and not self.skip:
            self.items[self.open[-1]][1].append(data)

    def blocks(self) -> list[tuple[object, str]]:
        return [(key, clean_text("".join(chunks))) for key, chunks in self.items]


def parse_blocks(path: Path, is_target) -> list[tuple[object, str]]:
    parser = BlockCollector(is_target)
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    parser.close()
    return parser.blocks()


def _handbook_target(tag: str, attrs: dict, stack: list):
    return "para" if tag == "div" and "para" in attrs.get("class", "").split() else None


LOHELP_ID_RE = re.compile(r"^(?:par|hd)_")


def _lohelp_target(tag: str, attrs: dict, stack: list):
    if tag not in ("p", "h1", "h2", "h3", "h4", "h5", "h6"):
        return None
    ident = attrs.get("id", "")
    if not LOHELP_ID_RE.match(ident) or "code" in attrs.get("class", ""):
        return None
    # paragraphs embedded from another help page belong to that page
    if any("embedded" in a.get("class", "").split() for _, _, _, a in stack):
        return None
    return ident


def handbook_pages(root: Path, lang: str) -> dict[str, list[str]]:
    base = root / "usr/share/doc/debian-handbook/html" / HANDBOOK_DIRS[lang]
    return {p.name: [t for _, t in parse_blocks(p, _handbook_target)]
            for p in sorted(base.glob("*.html"))}


def lohelp_paragraphs(root: Path, lang: str) -> dict[tuple[str, str], str]:
    """(file relative to text/, id) -> paragraph text, first occurrence, document order."""
    base = root / "usr/share/libreoffice/help" / LOHELP_DIRS[lang] / "text"
    out: dict[tuple[str, str], str] = {}
    for p in sorted(base.rglob("*.html")):
        rel = p.relative_to(base).as_posix()
        for ident, text in parse_blocks(p, _lohelp_target):
            if text and (rel, ident) not in out:
                out[(rel, ident)] = text
    return out


def read_mo(path: Path) -> Iterator[tuple[str, str]]:
    """Yield (msgid, msgstr) from a GNU .mo file (context and plural forms dropped)."""
    data = path.read_bytes()
    if len(data) < 20:
        return
    magic = struct.unpack("<I", data[:4])[0]
    if magic == 0x950412DE:
        end = "<"
    elif magic == 0xDE120495:
        end = ">"
    else:
        log(f"  not a .mo file: {path}")
        return
    _, n, orig_off, trans_off = struct.unpack(end + "4I", data[4:20])
    for i in range(n):
        ln1, o1 = struct.unpack(end + "2I", data[orig_off + 8 * i: orig_off + 8 * i + 8])
        ln2, o2 = struct.unpack(end + "2I", data[trans_off + 8 * i: trans_off + 8 * i + 8])
        msgid = data[o1:o1 + ln1].decode("utf-8", "replace")
        msgstr = data[o2:o2 + ln2].decode("utf-8", "replace")
        if not msgid or not msgstr:
            continue
        msgid = msgid.split("\x04", 1)[-1].split("\x00", 1)[0]
        msgstr = msgstr.split("\x00", 1)[0]
        if msgid and msgstr:
            yield msgid, msgstr


def catalogs(root: Path, lang: str) -> list[Path]:
    return sorted(p for p in root.rglob("*.mo")
                  if p.parent.name == "LC_MESSAGES" and p.parent.parent.name == lang)


def read_dictd(root: Path) -> Iterator[tuple[str, list[str]]]:
    """Yield (headword, [translations]) from a FreeDict dictd dictionary."""
    b64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}

    def num(s: str) -> int:
        v = 0
        for c in s:
            v = v * 64 + b64[c]
        return v

    index = next((root / "usr/share/dictd").glob("*.index"))
    body = gzip.open(next((root / "usr/share/dictd").glob("*.dict.dz"))).read()
    for line in index.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith("00database"):
            continue
        entry = body[num(parts[1]): num(parts[1]) + num(parts[2])].decode("utf-8", "replace")
        lines = entry.split("\n")
        targets = []
        for tl in lines[1:]:
            if not tl.strip() or tl[:1].isspace() or tl.startswith(('"', "see:", "Note:")):
                continue
            tl = re.sub(r"^\d+\.\s*", "", tl)
            tl = re.sub(r"<[^>]*>|\[[^\]]*\]|\([^)]*\)|\{[^}]*\}", " ", tl)
            targets.extend(t.strip() for t in re.split(r"[,;]", tl) if t.strip())
        yield parts[0], targets


# --------------------------------------------------------------------------------------
# Collection
# --------------------------------------------------------------------------------------


class Collected(NamedTuple):
    pairs: dict[str, list[Pair]]           # xx -> deduplicated pairs
    mono: dict[str, list[str]]             # lang -> candidate monolingual lines (ordered, dedup)
    lohelp: dict[str, dict]                # lang -> {(file, id): text}
    ne_lines: list[tuple[str, str]]        # (ne line, source)
    source_counts: dict[str, Counter]      # lang -> Counter(source tag) of kept pairs/lines


def collect(pk: Packages) -> Collected:
    raw: dict[str, list[Pair]] = {xx: [] for xx in PAIR_LANGS}
    english_raw: list[str] = []   # English texts seen anywhere (for untranslated detection)
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


# --------------------------------------------------------------------------------------
# Classification task (LibreOffice help, labelled by application)
# --------------------------------------------------------------------------------------


def build_classify(lohelp: dict[str, dict], english: set[str], hasher: Hasher, args) -> dict:
    en = lohelp["en"]
    files_of_text: dict[str, set[str]] = defaultdict(set)
    for (f, _), t in en.items():
        files_of_text[t].add(f)

    by_class_file: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for (f, ident), t in en.items():
        label = LO_APPS.get(f.split("/", 1)[0])
        if label is None or len(files_of_text[t]) > 1:
            continue  # shared/other folders; boilerplate repeated on several pages
        t = clean_text(t)
        if not text_ok(t, "en", min_words=4):
            continue
        by_class_file[label][f].append(((f, ident), t))

    def translated(key, lang) -> str | None:
        x = lohelp[lang].get(key)
        if x is None:
            return None
        x = clean_text(x)
        if lang == "en":
            return x
        if not text_ok(x, lang, min_words=2) or x.casefold() in english or looks_english(x, lang):
            return None
        if x.casefold() == clean_text(en[key]).casefold():
            return None
        return x

    out = {"train": [], "valid": [], "test": {lang: [] for lang in CORPUS_LANGS}}
    heldout_texts: set[str] = set()
    summary = {}
    for label in sorted(by_class_file):
        # Test pages are drawn at random among the pages that have paragraphs translated
        # into all languages (so the six test sets overlap as much as possible), up to a
        # quarter of the class; valid and train pages follow in random order.  Whole
        # pages go to one split.
        full = {f: sum(all(translated(key, lang) is not None for lang in PAIR_LANGS)
                       for key, _ in by_class_file[label][f]) for f in by_class_file[label]}
        files = sorted(by_class_file[label], key=lambda f: (hasher("cls-file", f), f))
        total = sum(len(by_class_file[label][f]) for f in files)
        test_goal = min(2 * args.cls_test, total // 4)
        valid_goal = min(args.cls_valid, total // 10)
        test_files, valid_files, train_files = [], [], []
        nt = nfull = 0
        for f in files:
            if nfull >= args.cls_test or nt >= total // 4:
                break
            if full[f] == 0:
                continue
            test_files.append(f)
            nt += len(by_class_file[label][f])
            nfull += full[f]
        for f in files:
            if nt >= test_goal:
                break
            if f in test_files:
                continue
            test_files.append(f)
            nt += len(by_class_file[label][f])
        nv = 0
        for f in files:
            if f in test_files:
                continue
            if nv < valid_goal:
                valid_files.append(f)
                nv += len(by_class_file[label][f])
            else:
                train_files.append(f)

        def items(fs):
            return [it for f in sorted(fs) for it in by_class_file[label][f]]

        train = sample_keep_order(items(train_files), args.cls_train, hasher, "cls-train", key=lambda it: it[1])
        valid = sample_keep_order(items(valid_files), args.cls_valid, hasher, "cls-valid", key=lambda it: it[1])
        # test: prefer paragraphs translated in many languages, so that the language
        # versions of the test set overlap as much as possible
        cands = items(test_files)
        cover = {key: sum(translated(key, lang) is not None for lang in PAIR_LANGS) for key, _ in cands}
        ranked = sorted(cands, key=lambda it: (-cover[it[0]], hasher("cls-test", it[1])))
        test = sorted(ranked[:args.cls_test])
        # rows are shuffled (deterministically) at the end; test rows are ordered by a hash
        # of their (file, id), so the language versions list paragraphs in the same order
        out["train"] += [(hasher("cls-order", t), label, t) for _, t in train]
        out["valid"] += [(hasher("cls-order", t), label, t) for _, t in valid]
        heldout_texts.update(t for _, t in valid)
        n_test = {}
        for lang in CORPUS_LANGS:
            rows = [(hasher("cls-order", *key), label, x) for key, _ in test
                    if (x := translated(key, lang)) is not None]
            out["test"][lang] += rows
            heldout_texts.update(x for _, _, x in rows)
            n_test[lang] = len(rows)
        summary[label] = {"files": {"train": len(train_files), "valid": len(valid_files), "test": len(test_files)},
                          "train": len(train), "valid": len(valid), "test": n_test}
        log(f"  classify {label}: {summary[label]}")
    out["train"] = [(label, t) for _, label, t in sorted(out["train"])]
    out["valid"] = [(label, t) for _, label, t in sorted(out["valid"])]
    out["test"] = {lang: [(label, t) for _, label, t in sorted(rows)] for lang, rows in out["test"].items()}
    out["heldout"] = heldout_texts
    out["summary"] = summary
    return out


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


# --------------------------------------------------------------------------------------
# Attribution
# --------------------------------------------------------------------------------------


def _licence_phrases(text: str) -> list[str]:
    """Short names (GPL-2+, LGPL-2.1+, ...) for GNU licence phrases in free-form text."""
    names = set()
    text = WS_RE.sub(" ", text)
    for m in re.finditer(r"under the terms of (?:the )?GNU (Lesser |Library )?General Public License", text):
        tail = re.split(r"\.\s", text[m.end(): m.end() + 300], maxsplit=1)[0]
        v = re.search(r"version (\d+(?:\.\d+)?)", tail)
        name = ("LGPL" if m.group(1) else "GPL") + (f"-{v.group(1)}" if v else "")
        if v and re.search(r"(any )?later version", tail):
            name += "+"
        names.add(name)
    return sorted(names)


# copyright files that are not machine-readable and defeat the simple heuristics below
LICENCE_OVERRIDES = {
    "evince-common": "GPL-2+ (per-file table in the copyright file; its po/*.po files are "
                     "GPLv2-or-later, po/br.po GPLv2)",
}


def po_licences(text: str) -> list[str]:
    """Licences of DEP-5 stanzas that cover translation files (po/*.po)."""
    out = set()
    for stanza in re.split(r"\n\s*\n", text):
        files = re.search(r"^Files:((?:.*)(?:\n[ \t]+.*)*)", stanza, flags=re.MULTILINE)
        lic = re.search(r"^License:[ \t]*(\S.*)$", stanza, flags=re.MULTILINE)
        if files and lic and re.search(r"(^|\s)po/(\*|[\w@.-]+\.po)", files.group(1)):
            out.add(lic.group(1).strip())
    return sorted(out)


def copyright_summary(root: Path, name: str, hint: str = "") -> tuple[str, list[str], list[str]]:
    """(main licence, all licence names, copyright lines of the main 'Files:' stanza).

    The main stanza is ``Files: *`` or, if given, the stanza whose Files field mentions
    ``hint`` (FreeDict packages have one stanza per dictionary).
    """
    path = root / "usr/share/doc" / name / "copyright"
    if not path.exists():
        cands = sorted((root / "usr/share/doc").glob("*/copyright"))
        if not cands:
            return "unknown", [], []
        path = cands[0]
    text = path.read_text(encoding="utf-8", errors="replace")
    names = sorted({m.strip() for m in re.findall(r"^License:[ \t]*(\S.*)$", text, flags=re.MULTILINE)})
    main, holders = "", []
    for stanza in re.split(r"\n\s*\n", text):
        files = re.search(r"^Files:\s*(.*)$", stanza, flags=re.MULTILINE)
        if not files:
            continue
        if not (files.group(1).strip() == "*" or (hint and hint in files.group(1))):
            continue
        m = re.search(r"^License:[ \t]*(\S.*)$", stanza, flags=re.MULTILINE)
        main = m.group(1).strip() if m else ""
        m = re.search(r"^Copyright:(.*(?:\n[ \t]+.*)*)", stanza, flags=re.MULTILINE)
        if m:
            holders = [h.strip() for h in m.group(1).splitlines() if h.strip()]
        if main and (not hint or hint in files.group(1)):
            break
    if not main:
        phrases = _licence_phrases(text)
        main = (" and ".join(phrases) if phrases else
                " / ".join(names) if names else "see the package's copyright file")
        names = sorted(set(names) | set(phrases))
    if not holders:
        holders = [ln.strip() for ln in text.splitlines() if re.match(r"\s*Copyright\s*(\(C\)|©)?\s*\d", ln)]
    main = LICENCE_OVERRIDES.get(name, main)
    po = po_licences(text)
    if po:
        main += f"; translations (po/): {' / '.join(po)}"
    return main, names, holders


def attribution_md(pk: Packages, counts: dict[str, Counter]) -> str:
    lines = [
        "# Attribution of the shipped data",
        "",
        "Everything under `data/` was derived by `scripts/build_corpus.py` from the Debian",
        "(bookworm) binary packages listed below; no text was written or translated by the",
        "xlm authors.  The derived files are redistributed under the licences of their",
        "sources (each package's `/usr/share/doc/PACKAGE/copyright` has the full terms;",
        "the main licence and copyright holders are quoted here).",
        "",
        "## What was done to the text",
        "",
        "- HTML (Handbook, LibreOffice help): paragraph-level blocks (`<div class=\"para\">`;",
        "  `<p>`/`<h*>` with `par_`/`hd_` ids) were extracted, tags removed, entities decoded,",
        "  whitespace collapsed.  Handbook paragraphs are aligned by position within a page,",
        "  LibreOffice help paragraphs by (file, id).",
        "- gettext catalogs (`.mo`): English msgid paired with its msgstr (contexts and",
        "  plural forms dropped); markup and keyboard mnemonics (`_`, `~`, `(_X)`) removed;",
        "  `%PRODUCTNAME` replaced by `LibreOffice`.",
        "- Lines were dropped when too short, longer than 1000 characters, mostly markup,",
        "  placeholders or code, in the wrong script, untranslated, or short near-duplicate",
        "  templates; text was deduplicated and split into train/valid/test, then",
        "  subsampled to keep the shipped data small.",
        "- Dictionaries: FreeDict headwords and translations, lower-cased, single words only,",
        "  kept only where both words occur at least 5 times in the corpus training text.",
        "",
        "The shipped files mix text from several of the sources below; each part remains",
        "under the licence of its source (no further restriction is added).  The Handbook is",
        "used under its GPL-2+ / CC-BY-SA-3.0 terms, LibreOffice text under MPL-2.0, the",
        "gettext catalogs under their packages' (mostly GPL/LGPL) licences.",
        "",
        "## Packages",
        "",
        "| package | version | used for | main licence | copyright (Files: *) |",
        "|---|---|---|---|---|",
    ]
    details = []
    for name in sorted(pk.info):
        info = pk.info[name]
        if not info["used_for"]:
            continue
        hint = name.replace("dict-freedict-", "") if name.startswith("dict-freedict-") else ""
        main, names, holders = copyright_summary(info["root"], name, hint)
        used = ", ".join(sorted(info["used_for"]))
        holder = "; ".join(holders[:3]) + (" …" if len(holders) > 3 else "")
        lines.append(f"| `{name}` | {info['version']} | {used} | {main} | {holder} |")
        if len(names) > 1:
            details.append(f"- `{name}`: licences named in its copyright file: {', '.join(names)}")
    lines += ["", "## Other licences named in the copyright files", "",
              "Packages list per-file licences for parts not used here as well (code, images);",
              "for completeness:", ""] + details
    cols = [xx for xx in PAIR_LANGS] + [f"mono:{lang}" for lang in CORPUS_LANGS + (LOWRES_LANG,)]
    tags = sorted({t for key in cols for t in counts.get(key, {})},
                  key=lambda t: (t.startswith("gettext:"), t))
    lines += ["", "## Contribution of each source",
              "",
              "Kept pairs (en-xx) and monolingual lines per source, after filtering and",
              "deduplication, before the held-out split and the size caps.",
              "",
              "| source | " + " | ".join(f"en-{c}" if ":" not in c else c.split(":")[1] + " (mono)" for c in cols) + " |",
              "|---|" + "---:|" * len(cols)]
    for t in tags:
        lines.append(f"| {t} | " + " | ".join(str(counts.get(c, {}).get(t, 0)) for c in cols) + " |")
    lines += [
        "",
        "Sources: Debian Administrator's Handbook by Raphaël Hertzog and Roland Mas and its",
        "translators (https://debian-handbook.info, GPL-2+ or CC-BY-SA-3.0); LibreOffice help",
        "and user interface translations by The Document Foundation and the LibreOffice",
        "community (MPL-2.0); GNOME, GTK, GLib, GIMP, Gnumeric, Pidgin, dpkg, APT and other",
        "projects' translation teams (GPL/LGPL as listed); FreeDict (https://freedict.org).",
        "",
        "## `data/xnli15/`",
        "",
        "The XNLI-15 additions (zh, ja, th, ar, el, bg, tr, vi) are built by",
        "`scripts/build_xnli15.py` from the gettext catalogs of the desktop packages listed",
        "above except Inkscape and GIMP (42 packages): the same packages, licences and",
        "copyright holders.  Package versions and per-package counts: `data/xnli15/README.md`.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def file_stats(path: Path) -> dict:
    raw = gzip.open(path).read().decode("utf-8") if path.suffix == ".gz" else path.read_text(encoding="utf-8")
    lines = raw.splitlines()
    return {"lines": len(lines), "words": sum(len(ln.split()) for ln in lines),
            "chars": len(raw), "bytes_on_disk": path.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/xlm-corpus-cache"),
                    help="where .deb files are downloaded and unpacked (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=Path("data"), help="output directory (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=1234, help="seed of all random draws (default: %(default)s)")
    ap.add_argument("--offline", action="store_true", help="use only .deb files already in the cache")
    ap.add_argument("--heldout", type=int, default=1000, help="valid and test size, pairs and lines (default: %(default)s)")
    ap.add_argument("--mono-cap", type=int, default=40000, help="max monolingual train lines per language")
    ap.add_argument("--para-cap", type=int, default=20000, help="max parallel train pairs per language pair")
    ap.add_argument("--lowres-ratio", type=float, default=2.5,
                    help="hi/en lowres train size as a multiple of ne train characters (default: %(default)s)")
    ap.add_argument("--cls-train", type=int, default=1500, help="max classification train examples per class")
    ap.add_argument("--cls-valid", type=int, default=150, help="max classification valid examples per class")
    ap.add_argument("--cls-test", type=int, default=150, help="max classification test examples per class")
    ap.add_argument("--dict-min-count", type=int, default=5, help="min corpus train frequency of dictionary words")
    ap.add_argument("--dict-max-words", type=int, default=1500, help="max source words per dictionary")
    args = ap.parse_args(argv)

    hasher = Hasher(args.seed)
    out = args.out
    pk = Packages(args.cache, args.offline)
    col = collect(pk)
    english = {t.casefold() for t, _ in col.mono["en"]}
    english |= {p.en.casefold() for ps in col.pairs.values() for p in ps}

    written: list[Path] = []

    def emit(path: Path, lines: list[str]) -> None:
        write_gz(path, lines)
        written.append(path)

    # --- classification first: its valid/test paragraphs are kept out of corpus train
    log("building the classification task")
    cls = build_classify(col.lohelp, english, hasher, args)
    cdir = out / "classify"
    emit(cdir / "train.en.tsv.gz", [f"{lab}\t{t}" for lab, t in cls["train"]])
    emit(cdir / "valid.en.tsv.gz", [f"{lab}\t{t}" for lab, t in cls["valid"]])
    for lang in CORPUS_LANGS:
        emit(cdir / f"test.{lang}.tsv.gz", [f"{lab}\t{t}" for lab, t in cls["test"][lang]])

    # --- held-out sets
    log("drawing held-out sets")
    held = draw_heldout(col.pairs, args.heldout, hasher, cls["heldout"])
    mono_held: dict[str, dict[str, list[str]]] = {}
    for xx in PAIR_LANGS:
        mono_held[xx] = {s: [p.xx for p in held[xx][s]] for s in ("valid", "test")}
    mono_held["en"] = {}
    for s in ("valid", "test"):
        en_pool = sorted({p.en for xx in PAIR_LANGS for p in held[xx][s]})
        mono_held["en"][s] = sample_keep_order(sorted(en_pool, key=lambda e: hasher("mono-en", e)),
                                               args.heldout, hasher, f"mono-en-{s}")
    ne_sorted = sorted(col.ne_lines, key=lambda t: (hasher("ne", t[0]), t[0]))
    ne_held = {"valid": [t for t, _ in ne_sorted[:args.heldout]],
               "test": [t for t, _ in ne_sorted[args.heldout:2 * args.heldout]]}

    H: set[str] = set(cls["heldout"])
    for xx in PAIR_LANGS:
        for s in ("valid", "test"):
            for p in held[xx][s]:
                H.add(p.en)
                H.add(p.xx)
    for s in ("valid", "test"):
        H.update(mono_held["en"][s])
        H.update(ne_held[s])

    # --- corpus
    log("writing the corpus")
    cdir = out / "corpus"
    para_train = {}
    for xx in PAIR_LANGS:
        pool = [p for p in col.pairs[xx] if p.en not in H and p.xx not in H]
        para_train[xx] = sample_keep_order(pool, args.para_cap, hasher, f"para-{xx}", key=lambda p: p.en + "\t" + p.xx)
        for s, ps in (("train", para_train[xx]), ("valid", held[xx]["valid"]), ("test", held[xx]["test"])):
            emit(cdir / f"{s}.en-{xx}.en.gz", [p.en for p in ps])
            emit(cdir / f"{s}.en-{xx}.{xx}.gz", [p.xx for p in ps])
    mono_train = {}
    for lang in CORPUS_LANGS:
        pool = [t for t, _ in col.mono[lang] if t not in H]
        mono_train[lang] = sample_keep_order(pool, args.mono_cap, hasher, f"mono-{lang}")
        emit(cdir / f"train.{lang}.gz", mono_train[lang])
        emit(cdir / f"valid.{lang}.gz", mono_held[lang]["valid"])
        emit(cdir / f"test.{lang}.gz", mono_held[lang]["test"])

    # --- low-resource set
    log("writing the low-resource set")
    ldir = out / "lowres"
    ne_train = [t for t, _ in col.ne_lines if t not in H]
    ne_chars = sum(len(t) for t in ne_train)
    emit(ldir / "train.ne.gz", ne_train)
    emit(ldir / "valid.ne.gz", ne_held["valid"])
    emit(ldir / "test.ne.gz", ne_held["test"])
    for lang in ("hi", "en"):
        pool = [t for t, _ in col.mono[lang] if t not in H]
        ranked = sorted(range(len(pool)), key=lambda i: (hasher(f"lowres-{lang}", pool[i]), i))
        keep, total = [], 0
        for i in ranked:
            if total >= args.lowres_ratio * ne_chars:
                break
            keep.append(i)
            total += len(pool[i])
        emit(ldir / f"train.{lang}.gz", [pool[i] for i in sorted(keep)])

    # --- dictionaries
    log("building dictionaries")
    ddir = out / "dicts"
    dicts = build_dicts(pk, {lang: mono_train[lang] for lang in CORPUS_LANGS}, hasher, args)
    for xx, d in dicts.items():
        path = ddir / f"en-{xx}.txt"
        write_text(path, "".join(r + "\n" for r in d["rows"]))
        written.append(path)
    readme = dicts_readme(dicts, args)
    write_text(ddir / "README.md", readme)
    written.append(ddir / "README.md")

    # --- attribution and statistics
    write_text(out / "ATTRIBUTION.md", attribution_md(pk, col.source_counts))
    written.append(out / "ATTRIBUTION.md")
    stats = {p.relative_to(out).as_posix(): file_stats(p) for p in sorted(written)}
    stats_doc = {"seed": args.seed, "files": stats,
                 "classify": cls["summary"],
                 "packages": {n: i["version"] for n, i in sorted(pk.info.items()) if i["used_for"]}}
    write_text(out / "corpus" / "stats.json", json.dumps(stats_doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    write_text(out / "corpus" / "STATS.md", stats_md(stats, cls["summary"]))
    written += [out / "corpus" / "stats.json", out / "corpus" / "STATS.md"]

    # remove stale outputs of earlier runs
    keep = {p.resolve() for p in written}
    for sub in ("corpus", "lowres", "classify", "dicts"):
        for p in sorted((out / sub).glob("*")):
            if p.is_file() and p.resolve() not in keep and p.suffix in (".gz", ".txt", ".md", ".json", ".tmp"):
                log(f"  removing stale {p}")
                p.unlink()

    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    biggest = max((p for p in out.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    log(f"done: {total / 1e6:.2f} MB under {out}; largest file {biggest} ({biggest.stat().st_size / 1e6:.2f} MB)")
    if total > 25e6 or biggest.stat().st_size > 4e6:
        log("WARNING: size budget exceeded (25 MB total, 4 MB per file)")
        return 1
    return 0


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


def stats_md(stats: dict, cls_summary: dict) -> str:
    lines = ["# Statistics of the shipped data", "",
             "Generated by `scripts/build_corpus.py`; words = whitespace-separated tokens,",
             "bytes = compressed size on disk.", ""]
    groups = defaultdict(list)
    for name, s in stats.items():
        groups[name.split("/")[0] if "/" in name else "top level"].append((name, s))
    for g in sorted(groups):
        lines += [f"## {g}", "", "| file | lines | words | characters | bytes on disk |", "|---|---:|---:|---:|---:|"]
        for name, s in groups[g]:
            lines.append(f"| `{name}` | {s['lines']} | {s['words']} | {s['chars']} | {s['bytes_on_disk']} |")
        lines.append("")
    lines += ["## classify: examples per class", "", "| class | train | valid | " +
              " | ".join(f"test.{lg}" for lg in CORPUS_LANGS) + " |",
              "|---|---:|---:|" + "---:|" * len(CORPUS_LANGS)]
    for label, s in cls_summary.items():
        lines.append(f"| {label} | {s['train']} | {s['valid']} | " +
                     " | ".join(str(s['test'][lg]) for lg in CORPUS_LANGS) + " |")
    total = sum(s["bytes_on_disk"] for s in stats.values())
    lines += ["", f"Total size of the files listed: {total} bytes.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
