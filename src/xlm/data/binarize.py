"""Text file (plain or ``.gz``) -> the binarized format read by :mod:`xlm.data.dataset`.

Streaming with bounded memory: lines are encoded chunk by chunk and the token ids and
sentence bounds are appended to temporary files in the destination directory; at the end
the bounds are copied into the ``.idx.npy`` through a memory map.

Crash safety: all outputs are first written to temporary siblings (``.P.bin.….tmp``, see
:func:`xlm.fileio.temporary_sibling`) and moved into place only when everything succeeded;
on failure they are removed. The metadata file ``P.json`` is written last and the readers
require it, so it is the commit marker: an interrupted run never leaves a ``P.json`` next to
partial data (an older ``P.json`` is deleted before the new data is moved in).

Input policy:

* lines are split on ``\\n`` only and must be valid UTF-8; invalid bytes raise a
  :class:`~xlm.errors.DataError` naming the file and line (``errors="strict"``, the
  default). ``errors="replace"`` substitutes U+FFFD instead, for corpora known to be dirty;
* empty lines (nothing but whitespace) are skipped and counted in ``n_skipped``;
* parallel files must have the same number of lines, checked before anything is written;
  a pair where either side is empty is skipped on both sides.
"""

from __future__ import annotations

import gzip
import io
import itertools
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from xlm.data.dataset import FORMAT_NAME, FORMAT_VERSION, token_dtype
from xlm.errors import DataError
from xlm.fileio import json_text, move_into_place, temporary_sibling
from xlm.text.tokenizer import Tokenizer

Errors = Literal["strict", "replace"]
DEFAULT_CHUNK_LINES = 10_000
TOP_UNK_WORDS = 20


# --------------------------------------------------------------------------- reading text


def open_binary(path: str | Path) -> io.BufferedIOBase:
    """Open a plain or gzip-compressed (``.gz``) file for binary reading."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    return gzip.open(p, "rb") if p.suffix == ".gz" else open(p, "rb")


_GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)


def iter_lines(path: str | Path, errors: Errors = "strict", max_lines: int | None = None) -> Iterator[str]:
    """The lines of a text file, decoded as UTF-8 and without their ``\\n``, streaming."""
    p = Path(path)
    try:
        with open_binary(p) as f:
            for n, raw in enumerate(f, 1):
                if max_lines is not None and n > max_lines:
                    return
                try:
                    yield raw.rstrip(b"\n").decode("utf-8", errors=errors)
                except UnicodeDecodeError as e:
                    raise DataError(
                        f"{p}:{n}: invalid UTF-8 ({e.reason} at byte {e.start} of the line); "
                        "re-encode the file as UTF-8 (invalid input is an error by default)"
                    ) from None
    except _GZIP_ERRORS as e:
        raise DataError(f"{p}: corrupt or truncated compressed file: {e}") from None


def count_lines(path: str | Path) -> int:
    """Number of lines as :func:`iter_lines` sees them (a last line without ``\\n`` counts)."""
    p = Path(path)
    n, last = 0, b"\n"
    try:
        with open_binary(p) as f:
            while block := f.read(1 << 20):
                n += block.count(b"\n")
                last = block[-1:]
    except _GZIP_ERRORS as e:
        raise DataError(f"{p}: corrupt or truncated compressed file: {e}") from None
    return n + (last != b"\n")


# --------------------------------------------------------------------------- statistics


@dataclass
class BinarizeStats:
    """What one binarized file holds; also the ``P.json`` metadata besides the format fields."""

    source: str
    lang: str
    n_lines: int = 0
    n_sentences: int = 0
    n_tokens: int = 0
    n_unk: int = 0
    n_skipped: int = 0
    unk_words: Counter[str] = field(default_factory=Counter)

    @property
    def unk_rate(self) -> float:
        return self.n_unk / self.n_tokens if self.n_tokens else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "lang": self.lang,
            "n_lines": self.n_lines,
            "n_sentences": self.n_sentences,
            "n_tokens": self.n_tokens,
            "n_unk": self.n_unk,
            "n_skipped": self.n_skipped,
            "unk_words": self.unk_words.most_common(TOP_UNK_WORDS),
        }


# --------------------------------------------------------------------------- writing


class _Writer:
    """Appends sentences to temporary files next to ``prefix``; :func:`_publish` moves them in place."""

    def __init__(self, prefix: Path, dtype: np.dtype, end_index: int) -> None:
        self.prefix = prefix
        self.dtype = dtype
        bin_path, idx_path, json_path = self.final_paths()
        self.tmp_bin, self.tmp_idx, self.tmp_json = (temporary_sibling(p) for p in (bin_path, idx_path, json_path))
        self.tmp_bounds = temporary_sibling(Path(f"{prefix}.bounds"))  # scratch: removed by finish()
        self.n_sentences = 0
        self.end = end_index  # the separator: XLM's </s>, or the vocabulary's end token
        self.pos = 1  # the stream starts with </s>
        self._bin = open(self.tmp_bin, "wb")
        self._bounds = open(self.tmp_bounds, "wb")
        np.array([end_index], dtype=dtype.newbyteorder("<")).tofile(self._bin)

    def add(self, sentences: Sequence[Sequence[int]]) -> None:
        if not sentences:
            return
        lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
        flat: list[int] = []
        for s in sentences:
            flat.extend(s)
            flat.append(self.end)
        np.asarray(flat, dtype=self.dtype.newbyteorder("<")).tofile(self._bin)
        ends = self.pos + np.cumsum(lengths + 1) - 1  # index of each closing </s>
        starts = ends - lengths
        np.stack([starts, ends], axis=1).astype("<i8").tofile(self._bounds)
        self.pos = int(ends[-1]) + 1
        self.n_sentences += len(sentences)

    def finish(self, meta: dict[str, Any]) -> None:
        """Close the temporary files and build the index and metadata (still under temp names)."""
        self._bin.close()
        self._bounds.close()
        n = self.n_sentences
        out = np.lib.format.open_memmap(self.tmp_idx, mode="w+", dtype=np.int64, shape=(n, 2))
        if n:
            src = np.memmap(self.tmp_bounds, dtype="<i8", mode="r", shape=(n, 2))
            step = 1 << 20
            for i in range(0, n, step):
                out[i : i + step] = src[i : i + step]
            del src
        out.flush()
        del out
        self.tmp_bounds.unlink()
        text = json_text(meta, name=str(self.final_paths()[2]), sort_keys=False, ensure_ascii=False)
        self.tmp_json.write_text(text, encoding="utf-8")

    def final_paths(self) -> tuple[Path, Path, Path]:
        p = self.prefix
        return Path(f"{p}.bin"), Path(f"{p}.idx.npy"), Path(f"{p}.json")

    def abort(self) -> None:
        for f in (self._bin, self._bounds):
            f.close()
        for p in (self.tmp_bin, self.tmp_bounds, self.tmp_idx, self.tmp_json):
            p.unlink(missing_ok=True)


def _publish(writers: Sequence[_Writer]) -> None:
    """Move finished outputs in place; every ``P.json`` goes last (the commit markers)."""
    for w in writers:
        w.final_paths()[2].unlink(missing_ok=True)
    for w in writers:
        bin_path, idx_path, _ = w.final_paths()
        move_into_place(w.tmp_bin, bin_path)
        move_into_place(w.tmp_idx, idx_path)
    for w in writers:
        move_into_place(w.tmp_json, w.final_paths()[2])


def _meta(stats: BinarizeStats, tokenizer: Tokenizer, dtype: np.dtype, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "vocab_hash": tokenizer.vocab.hash,
        "vocab_size": len(tokenizer.vocab),
        "vocab_kind": tokenizer.vocab.kind,
        "specials": tokenizer.vocab.specials.to_json(),
        "dtype": dtype.name,
        **stats.to_json(),
        **extra,
    }


def _chunks(it: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for x in it:
        chunk.append(x)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _record(stats: BinarizeStats, tokenizer: Tokenizer, line: str, ids: list[int]) -> None:
    stats.n_sentences += 1
    stats.n_tokens += len(ids)
    n_unk = ids.count(tokenizer.vocab.specials.unk)
    if n_unk:
        stats.n_unk += n_unk
        stats.unk_words.update(tokenizer.unknown_words(line))


Normalize = Callable[[str], str]


def binarize(
    text_path: str | Path,
    prefix: str | Path,
    tokenizer: Tokenizer,
    lang: str,
    normalize: Normalize | None = None,
    errors: Errors = "strict",
    chunk_lines: int = DEFAULT_CHUNK_LINES,
    source: str | None = None,
) -> BinarizeStats:
    """Binarize one text file to ``prefix.{bin,idx.npy,json}``.

    The text is expected already normalized (Moses-tokenized) unless ``normalize`` is given.
    ``source`` is the file recorded as the origin (default: ``text_path``).
    """
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(len(tokenizer.vocab))
    stats = BinarizeStats(source or str(text_path), lang)
    writer = _Writer(prefix, dtype, tokenizer.vocab.specials.end)
    try:
        for chunk in _chunks(iter_lines(text_path, errors), chunk_lines):
            stats.n_lines += len(chunk)
            if normalize is not None:
                chunk = [normalize(line) for line in chunk]
            kept = [line for line in chunk if line.strip()]
            stats.n_skipped += len(chunk) - len(kept)
            encoded = tokenizer.encode_batch(kept)
            for line, ids in zip(kept, encoded):
                _record(stats, tokenizer, line, ids)
            writer.add(encoded)
        writer.finish(_meta(stats, tokenizer, dtype, {}))
        _publish([writer])
    except BaseException:
        writer.abort()
        raise
    return stats


def _lockstep(a: Iterator[str], b: Iterator[str], path_a: str | Path, path_b: str | Path) -> Iterator[tuple[str, str]]:
    for x, y in itertools.zip_longest(a, b):
        if x is None or y is None:  # only if a file changed after its lines were counted
            raise DataError(f"{path_a} and {path_b} stopped being aligned while reading")
        yield x, y


def binarize_parallel(
    src_path: str | Path,
    tgt_path: str | Path,
    src_prefix: str | Path,
    tgt_prefix: str | Path,
    tokenizer: Tokenizer,
    src_lang: str,
    tgt_lang: str,
    normalize_src: Normalize | None = None,
    normalize_tgt: Normalize | None = None,
    errors: Errors = "strict",
    chunk_lines: int = DEFAULT_CHUNK_LINES,
    sources: tuple[str, str] | None = None,
) -> tuple[BinarizeStats, BinarizeStats]:
    """Binarize two aligned files in lockstep; a pair with an empty side is dropped from both.
    ``sources`` are the files recorded as the origins (default: the two paths)."""
    n_src, n_tgt = count_lines(src_path), count_lines(tgt_path)
    if n_src != n_tgt:
        raise DataError(f"parallel files are not aligned: {src_path} has {n_src} lines but {tgt_path} has {n_tgt}")
    src_prefix, tgt_prefix = Path(src_prefix), Path(tgt_prefix)
    for p in (src_prefix, tgt_prefix):
        p.parent.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(len(tokenizer.vocab))
    src_source, tgt_source = sources or (str(src_path), str(tgt_path))
    stats = (BinarizeStats(src_source, src_lang), BinarizeStats(tgt_source, tgt_lang))
    end = tokenizer.vocab.specials.end
    writers = [_Writer(src_prefix, dtype, end)]
    try:
        writers.append(_Writer(tgt_prefix, dtype, end))
        pairs = _lockstep(iter_lines(src_path, errors), iter_lines(tgt_path, errors), src_path, tgt_path)
        for chunk in _chunks(pairs, chunk_lines):
            for s in stats:
                s.n_lines += len(chunk)
            if normalize_src is not None or normalize_tgt is not None:
                chunk = [
                    (normalize_src(a) if normalize_src else a, normalize_tgt(b) if normalize_tgt else b)
                    for a, b in chunk
                ]
            kept = [(a, b) for a, b in chunk if a.strip() and b.strip()]
            for s in stats:
                s.n_skipped += len(chunk) - len(kept)
            for side, (s, w) in enumerate(zip(stats, writers)):
                lines = [pair[side] for pair in kept]
                encoded = tokenizer.encode_batch(lines)
                for line, ids in zip(lines, encoded):
                    _record(s, tokenizer, line, ids)
                w.add(encoded)
        pair = f"{src_lang}-{tgt_lang}"
        for s, w in zip(stats, writers):
            w.finish(_meta(s, tokenizer, dtype, {"pair": pair}))
        _publish(writers)
    except BaseException:
        for w in writers:
            w.abort()
        raise
    return stats
