"""Small utilities: logging, keyed hashing, deterministic sampling, atomic reproducible writes."""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

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


def sample_keep_order(items: list, k: int, hasher: Hasher, tag: str, key: Callable[[object], str] = str) -> list:
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


def file_stats(path: Path) -> dict:
    raw = gzip.open(path).read().decode("utf-8") if path.suffix == ".gz" else path.read_text(encoding="utf-8")
    lines = raw.splitlines()
    return {
        "lines": len(lines),
        "words": sum(len(ln.split()) for ln in lines),
        "chars": len(raw),
        "bytes_on_disk": path.stat().st_size,
    }
