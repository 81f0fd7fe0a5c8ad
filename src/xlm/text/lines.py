"""The one reader of UTF-8 text lines (stdin, a file, a gzipped file). Bytes are decoded line by
line, so an invalid byte is a DataError naming the source and its physical line number (a
text-mode file decodes whole chunks ahead and would blame a later or earlier line)."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from xlm.errors import DataError


def _decode(raw: bytes, source: str, n: int) -> str:
    try:
        return raw.rstrip(b"\n").rstrip(b"\r").decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{source}:{n}: invalid UTF-8 ({e.reason} at byte {e.start} of the line)") from None


def numbered_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """``(physical line number, line without its line ending)`` of a UTF-8 file, gunzipped when
    its name ends in ``.gz``. A missing, unreadable or corrupt file is a DataError."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    try:
        with gzip.open(p, "rb") if p.suffix == ".gz" else open(p, "rb") as f:
            for n, raw in enumerate(f, 1):
                yield n, _decode(raw, str(p), n)
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{p}: cannot read: {e}") from None


def read_file_lines(path: str | Path) -> list[str]:
    """Every line of a UTF-8 file (see :func:`numbered_lines`)."""
    return [line for _, line in numbered_lines(path)]


def line_batches(stream: BinaryIO, size: int, source: str = "<stdin>") -> Iterator[list[str]]:
    """Lines (without their line ending) in batches of ``size``. Lines read before an invalid
    one are yielded first, so that a streaming command writes them before stopping."""
    batch: list[str] = []
    for n, raw in enumerate(stream, 1):
        try:
            batch.append(_decode(raw, source, n))
        except DataError:
            if batch:
                yield batch
            raise
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def read_lines(stream: BinaryIO, source: str = "<stdin>") -> list[str]:
    return [line for batch in line_batches(stream, 10_000, source) for line in batch]
