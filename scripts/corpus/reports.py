"""ATTRIBUTION.md (packages, versions, licences) and STATS.md."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

from corpus.config import CORPUS_LANGS, LOWRES_LANG, PAIR_LANGS
from corpus.packages import Packages
from corpus.text import WS_RE

# --------------------------------------------------------------------------------------
# Attribution
# --------------------------------------------------------------------------------------


def _licence_phrases(text: str) -> list[str]:
    """Short names (GPL-2+, LGPL-2.1+, ...) for GNU licence phrases in free-form text."""
    names = set()
    text = WS_RE.sub(" ", text)
    for m in re.finditer(r"under the terms of (?:the )?GNU (Lesser |Library )?General Public License", text):
        tail = re.split(r"\.\s", text[m.end() : m.end() + 300], maxsplit=1)[0]
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
        main = " and ".join(phrases) if phrases else " / ".join(names) if names else "see the package's copyright file"
        names = sorted(set(names) | set(phrases))
    if not holders:
        holders = [ln.strip() for ln in text.splitlines() if re.match(r"\s*Copyright\s*(\(C\)|©)?\s*\d", ln)]
    main = LICENCE_OVERRIDES.get(name, main)
    po = po_licences(text)
    if po:
        main += f"; translations (po/): {' / '.join(po)}"
    return main, names, holders


ATTRIBUTION_HEAD = [
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
    '- HTML (Handbook, LibreOffice help): paragraph-level blocks (`<div class="para">`;',
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

ATTRIBUTION_TAIL = [
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


def attribution_md(pk: Packages, counts: dict[str, Counter]) -> str:
    """ATTRIBUTION.md: what was done to the text, one row a used package (version, use,
    licence, copyright holders), the kept pairs and lines per source."""
    rows, details = package_rows(pk)
    lines = ATTRIBUTION_HEAD + rows
    lines += [
        "",
        "## Other licences named in the copyright files",
        "",
        "Packages list per-file licences for parts not used here as well (code, images);",
        "for completeness:",
        "",
    ] + details
    return "\n".join(lines + source_table(counts) + ATTRIBUTION_TAIL)


def package_rows(pk: Packages) -> tuple[list[str], list[str]]:
    """One table row a package that was used, and a line for each whose copyright file names
    several licences."""
    rows, details = [], []
    for name in sorted(pk.info):
        info = pk.info[name]
        if not info["used_for"]:
            continue
        hint = name.replace("dict-freedict-", "") if name.startswith("dict-freedict-") else ""
        main, names, holders = copyright_summary(info["root"], name, hint)
        used = ", ".join(sorted(info["used_for"]))
        holder = "; ".join(holders[:3]) + (" …" if len(holders) > 3 else "")
        rows.append(f"| `{name}` | {info['version']} | {used} | {main} | {holder} |")
        if len(names) > 1:
            details.append(f"- `{name}`: licences named in its copyright file: {', '.join(names)}")
    return rows, details


def source_table(counts: dict[str, Counter]) -> list[str]:
    """Kept pairs and monolingual lines per source and language."""
    cols = [xx for xx in PAIR_LANGS] + [f"mono:{lang}" for lang in CORPUS_LANGS + (LOWRES_LANG,)]
    tags = sorted({t for key in cols for t in counts.get(key, {})}, key=lambda t: (t.startswith("gettext:"), t))
    lines = [
        "",
        "## Contribution of each source",
        "",
        "Kept pairs (en-xx) and monolingual lines per source, after filtering and",
        "deduplication, before the held-out split and the size caps.",
        "",
        "| source | " + " | ".join(f"en-{c}" if ":" not in c else c.split(":")[1] + " (mono)" for c in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for t in tags:
        lines.append(f"| {t} | " + " | ".join(str(counts.get(c, {}).get(t, 0)) for c in cols) + " |")
    return lines


def stats_md(stats: dict, cls_summary: dict) -> str:
    lines = [
        "# Statistics of the shipped data",
        "",
        "Generated by `scripts/build_corpus.py`; words = whitespace-separated tokens,",
        "bytes = compressed size on disk.",
        "",
    ]
    groups = defaultdict(list)
    for name, s in stats.items():
        groups[name.split("/")[0] if "/" in name else "top level"].append((name, s))
    for g in sorted(groups):
        lines += [f"## {g}", "", "| file | lines | words | characters | bytes on disk |", "|---|---:|---:|---:|---:|"]
        for name, s in groups[g]:
            lines.append(f"| `{name}` | {s['lines']} | {s['words']} | {s['chars']} | {s['bytes_on_disk']} |")
        lines.append("")
    lines += [
        "## classify: examples per class",
        "",
        "| class | train | valid | " + " | ".join(f"test.{lg}" for lg in CORPUS_LANGS) + " |",
        "|---|---:|---:|" + "---:|" * len(CORPUS_LANGS),
    ]
    for label, s in cls_summary.items():
        lines.append(
            f"| {label} | {s['train']} | {s['valid']} | " + " | ".join(str(s["test"][lg]) for lg in CORPUS_LANGS) + " |"
        )
    total = sum(s["bytes_on_disk"] for s in stats.values())
    lines += ["", f"Total size of the files listed: {total} bytes.", ""]
    return "\n".join(lines)
