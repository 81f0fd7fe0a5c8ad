"""Reading text lines from a binary stream (stdin or a file) with strict UTF-8: a bad line
is a DataError naming the source and the line number."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from xlm.errors import DataError


def line_batches(stream: BinaryIO, size: int, source: str = "<stdin>") -> Iterator[list[str]]:
    """Lines (without their line ending) in batches of ``size``. Lines read before an invalid
    one are yielded first, so that a streaming command writes them before stopping."""
    batch: list[str] = []
    for n, raw in enumerate(stream, 1):
        try:
            batch.append(raw.rstrip(b"\n").rstrip(b"\r").decode("utf-8"))
        except UnicodeDecodeError as e:
            if batch:
                yield batch
            raise DataError(f"{source}:{n}: invalid UTF-8 ({e.reason} at byte {e.start} of the line)") from None
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def read_lines(stream: BinaryIO, source: str = "<stdin>") -> list[str]:
    return [line for batch in line_batches(stream, 10_000, source) for line in batch]
