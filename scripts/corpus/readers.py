"""Readers: HTML paragraph blocks (Handbook, LibreOffice help), gettext ``.mo``, dictd."""

from __future__ import annotations

import gzip
import re
import struct
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path

from corpus.config import HANDBOOK_DIRS, LOHELP_DIRS
from corpus.text import clean_text
from corpus.util import log

# --------------------------------------------------------------------------------------
# Readers: HTML blocks, gettext catalogs, dictd dictionaries
# --------------------------------------------------------------------------------------

VOID_TAGS = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "track",
    "wbr",
    "param",
}
BLOCK_TAGS = {
    "p",
    "div",
    "li",
    "td",
    "th",
    "tr",
    "dt",
    "dd",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "table",
    "ul",
    "ol",
    "dl",
}
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
    return {p.name: [t for _, t in parse_blocks(p, _handbook_target)] for p in sorted(base.glob("*.html"))}


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
        ln1, o1 = struct.unpack(end + "2I", data[orig_off + 8 * i : orig_off + 8 * i + 8])
        ln2, o2 = struct.unpack(end + "2I", data[trans_off + 8 * i : trans_off + 8 * i + 8])
        msgid = data[o1 : o1 + ln1].decode("utf-8", "replace")
        msgstr = data[o2 : o2 + ln2].decode("utf-8", "replace")
        if not msgid or not msgstr:
            continue
        msgid = msgid.split("\x04", 1)[-1].split("\x00", 1)[0]
        msgstr = msgstr.split("\x00", 1)[0]
        if msgid and msgstr:
            yield msgid, msgstr


def catalogs(root: Path, lang: str) -> list[Path]:
    return sorted(p for p in root.rglob("*.mo") if p.parent.name == "LC_MESSAGES" and p.parent.parent.name == lang)


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
        entry = body[num(parts[1]) : num(parts[1]) + num(parts[2])].decode("utf-8", "replace")
        lines = entry.split("\n")
        targets = []
        for tl in lines[1:]:
            if not tl.strip() or tl[:1].isspace() or tl.startswith(('"', "see:", "Note:")):
                continue
            tl = re.sub(r"^\d+\.\s*", "", tl)
            tl = re.sub(r"<[^>]*>|\[[^\]]*\]|\([^)]*\)|\{[^}]*\}", " ", tl)
            targets.extend(t.strip() for t in re.split(r"[,;]", tl) if t.strip())
        yield parts[0], targets
