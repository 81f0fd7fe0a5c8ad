"""Readers for binarized data: random access to sentences and contiguous token streams by
positional reads (``os.pread``), so that a corpus larger than RAM costs no more memory than a
small one (no mapped pages of the corpus stay resident after random reads).

On-disk layout of one binarized file with prefix ``P`` (e.g. ``train.en`` or ``train.en-fr.fr``):

* ``P.bin``     raw little-endian token ids (``uint16`` when the vocabulary fits, else ``int32``),
                laid out as the stream ``</s> s1 </s> s2 </s> ... sN </s>``;
* ``P.idx.npy`` ``int64`` array of shape ``(N, 2)``: ``[start, end)`` of the words of sentence i
                in ``P.bin``, so ``tokens[start - 1] == tokens[end] == </s>``;
* ``P.json``    metadata: format version, vocabulary hash, kind and special ids (``specials``;
                absent in files from before kinds: XLM's), language, dtype and counts.

For a vocabulary of another kind the stream's separator is that vocabulary's end token
(``</s>`` of SentencePiece, ``[SEP]`` of WordPiece).

A parallel corpus is two such files (``train.en-fr.en`` and ``train.en-fr.fr``) with the
same number of sentences, line ``i`` of one the translation of line ``i`` of the other.
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xlm.errors import DataError
from xlm.fileio import read_json
from xlm.text.vocab import Specials, Vocabulary

FORMAT_NAME = "xlm-binarized"
FORMAT_VERSION = 1


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


class _PositionalFile:
    """One file read with ``os.pread`` on a descriptor opened on first use: positional reads
    share no file offset, so threads may read concurrently. A forked child inherits a valid
    descriptor; a pickled copy carries only the path and reopens on first use. The descriptor
    is closed by :meth:`close`, or by a finalizer when the object is collected."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize | None = None

    def _open(self) -> int:
        with self._lock:
            if self._fd is None:
                try:
                    fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                except OSError as e:
                    raise DataError(f"{self.path}: cannot open: {e.strerror}") from None
                self._finalizer = weakref.finalize(self, os.close, fd)
                self._fd = fd
            return self._fd

    def read(self, offset: int, nbytes: int) -> bytes:
        """Exactly ``nbytes`` bytes from ``offset``; a short read (truncated file) is a DataError."""
        fd = self._fd if self._fd is not None else self._open()
        data = os.pread(fd, nbytes, offset)
        if len(data) != nbytes:
            raise DataError(f"{self.path}: read {len(data)} of {nbytes} bytes at offset {offset} (file truncated?)")
        return data

    def read_each(self, offsets: list[int], nbytes: list[int]) -> list[bytes]:
        """The ``nbytes[k]`` bytes at ``offsets[k]``, for every ``k`` (one ``pread`` each)."""
        fd = self._fd if self._fd is not None else self._open()
        pread = os.pread
        chunks = [pread(fd, n, o) for o, n in zip(offsets, nbytes)]
        got, want = sum(map(len, chunks)), sum(nbytes)
        if got != want:  # each read returns at most what was asked: one was short
            raise DataError(f"{self.path}: read {got} of {want} bytes (file truncated?)")
        return chunks

    def close(self) -> None:
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()  # closes the descriptor (once)
            self._fd, self._finalizer = None, None

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        _PositionalFile.__init__(self, state["path"])  # closed and unopened, like a new one


class MonolingualData:
    """One binarized file (see the module docstring).

    Random access (:meth:`sentence`, :meth:`stream`, :meth:`rows`, :meth:`row_lengths`) uses
    positional reads (``os.pread``) into small private buffers rather than memory-mapped
    slices, so that reading random sentences of a large corpus leaves no mapped pages in the
    resident memory of the process. Each returns a new read-only numpy array of the file's
    dtype. ``tokens`` and ``bounds`` are whole-file memory maps, created on first use, for
    consumers that scan a whole file. File descriptors are opened on first use and closed by
    :meth:`close` (or ``with``), or when the object is collected.

    ``MonolingualData(prefix, tokens, bounds, meta)`` wraps in-memory arrays (tests);
    :meth:`open` reads a binarized file."""

    ROW_GAP = 32  # rows(): sorted ids at most this many rows apart are read in one pread

    def __init__(self, prefix: str | Path, tokens: np.ndarray | None, bounds: np.ndarray | None, meta: dict[str, Any]):
        self.prefix, self.meta = Path(prefix), meta
        self._tokens, self._bounds = tokens, bounds
        self._bin: _PositionalFile | None = None
        self._idx: _PositionalFile | None = None
        if tokens is not None and bounds is not None:
            self._dtype, self._idx_dtype = np.dtype(tokens.dtype), np.dtype(bounds.dtype)
            self._n_items, self._n_sentences, self._idx_offset = int(tokens.shape[0]), int(bounds.shape[0]), 0

    @classmethod
    def _from_files(
        cls,
        prefix: Path,
        meta: dict[str, Any],
        dtype: np.dtype,
        n_items: int,
        idx_dtype: np.dtype,
        n_sentences: int,
        idx_offset: int,
    ) -> MonolingualData:
        self = cls(prefix, None, None, meta)
        self._dtype, self._idx_dtype = dtype, idx_dtype
        self._n_items, self._n_sentences, self._idx_offset = n_items, n_sentences, idx_offset
        self._bin, self._idx = _PositionalFile(Path(f"{prefix}.bin")), _PositionalFile(Path(f"{prefix}.idx.npy"))
        return self

    @classmethod
    def open(
        cls, prefix: str | Path, vocab_hash: str | None = None, specials: Specials | None = None
    ) -> MonolingualData:
        prefix = Path(prefix)
        meta_path = Path(f"{prefix}.json")
        bin_path, idx_path = Path(f"{prefix}.bin"), Path(f"{prefix}.idx.npy")
        for p in (meta_path, bin_path, idx_path):
            if not p.is_file():
                raise DataError(f"{p}: binarized file not found (run `xlm prepare` first)")
        meta = read_json(meta_path, DataError, "unreadable metadata")
        if meta.get("format") != FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
            raise DataError(f"{meta_path}: not an {FORMAT_NAME} v{FORMAT_VERSION} file")
        if vocab_hash is not None and meta.get("vocab_hash") != vocab_hash:
            raise DataError(
                f"{prefix}: binarized with vocabulary {meta.get('vocab_hash')}, "
                f"but the vocabulary in use is {vocab_hash}; re-run `xlm prepare` with this vocabulary"
            )
        if specials is not None and Specials.from_json(meta.get("specials")) != specials:
            raise DataError(
                f"{meta_path}: binarized with special ids {Specials.from_json(meta.get('specials')).to_json()}, "
                f"but the vocabulary in use has {specials.to_json()}; re-run `xlm prepare` with this vocabulary"
            )
        dtype = np.dtype(meta["dtype"])
        n_items = bin_path.stat().st_size // dtype.itemsize
        if n_items * dtype.itemsize != bin_path.stat().st_size or n_items == 0:
            raise DataError(f"{bin_path}: size is not a whole number of {dtype} tokens")
        try:  # allow_pickle=False: an index holding Python objects (code when unpickled) is refused
            bounds = np.load(idx_path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"{idx_path}: not a plain int64 .npy index ({e})") from None
        if bounds.ndim != 2 or bounds.shape[1] != 2 or bounds.shape[0] != meta["n_sentences"]:
            raise DataError(f"{idx_path}: index shape {bounds.shape} does not match {meta['n_sentences']} sentences")
        if bounds.dtype.kind not in "iu" or not bounds.flags.c_contiguous:  # rows are read at fixed offsets
            raise DataError(f"{idx_path}: not a C-ordered integer index ({bounds.dtype})")
        if len(bounds) and (bounds[-1, 1] >= n_items or bounds[0, 0] < 1):
            raise DataError(f"{idx_path}: index points outside {bin_path} (truncated file?)")
        idx_dtype, n_sentences, idx_offset = bounds.dtype, int(bounds.shape[0]), int(bounds.offset)
        del bounds  # the validation map is dropped: reads go through pread
        return cls._from_files(prefix, meta, dtype, n_items, idx_dtype, n_sentences, idx_offset)

    def close(self) -> None:
        """Close the file descriptors and drop the whole-file maps (reads reopen them)."""
        for f in (self._bin, self._idx):
            if f is not None:
                f.close()
        if self._bin is not None:  # file-backed: the maps are recreated on demand
            self._tokens = self._bounds = None

    def __enter__(self) -> MonolingualData:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self._bin is not None:  # no maps travel: the copy reopens its files on first use
            state["_tokens"] = state["_bounds"] = None
        return state

    def __repr__(self) -> str:
        return f"MonolingualData({str(self.prefix)!r}, {self._n_sentences} sentences, {self._n_items} stream items)"

    # -- whole-file views -------------------------------------------------------------------

    @property
    def tokens(self) -> np.ndarray:
        """The whole ``</s> s1 </s> ...`` stream (memory-mapped when read from a file)."""
        if self._tokens is None:
            assert self._bin is not None
            self._tokens = np.memmap(self._bin.path, dtype=self._dtype, mode="r", shape=(self._n_items,))
        return self._tokens

    @property
    def bounds(self) -> np.ndarray:
        """The whole ``(N, 2)`` index (memory-mapped when read from a file)."""
        if self._bounds is None:
            assert self._idx is not None
            self._bounds = np.load(self._idx.path, mmap_mode="r", allow_pickle=False)
        return self._bounds

    def __len__(self) -> int:
        return self._n_sentences

    @property
    def lang(self) -> str:
        return str(self.meta["lang"])

    @property
    def specials(self) -> Specials:
        """The special ids of the vocabulary the file was binarized with (XLM's if not recorded)."""
        return Specials.from_json(self.meta.get("specials"))

    @property
    def n_tokens(self) -> int:
        """Number of word tokens (without sentence delimiters)."""
        return int(self.meta["n_tokens"])

    @property
    def lengths(self) -> np.ndarray:
        """Number of words of every sentence (``int64``, read in one pass over the index)."""
        if self._idx is None:
            return np.asarray(self.bounds[:, 1] - self.bounds[:, 0], dtype=np.int64)
        rows = self._read_row_range(0, self._n_sentences)
        return (rows[:, 1] - rows[:, 0]).astype(np.int64)

    @property
    def stream_length(self) -> int:
        return self._n_items

    # -- random access ----------------------------------------------------------------------

    def _read_row_range(self, start: int, count: int) -> np.ndarray:
        assert self._idx is not None
        size = self._idx_dtype.itemsize * 2
        raw = self._idx.read(self._idx_offset + start * size, count * size)
        return np.frombuffer(raw, self._idx_dtype).reshape(count, 2)

    def _check_ids(self, ids: np.ndarray) -> None:
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= self._n_sentences):
            raise IndexError(f"{self.prefix}: sentence id out of range [0, {self._n_sentences})")

    def rows(self, ids: np.ndarray | list[int]) -> np.ndarray:
        """Index rows ``[start, end)`` of sentences ``ids``, shape ``(len(ids), 2)``, in the order of ``ids``.

        File-backed: ids sparse in the index (farther apart than :attr:`ROW_GAP` rows on average)
        are read with one ``pread`` each. Denser ids are sorted and those at most ``ROW_GAP`` rows
        apart read with one ``pread`` per run, so a dense set costs few reads, with never more
        than ``ROW_GAP`` unneeded rows read per needed row."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if self._idx is None:
            return np.asarray(self.bounds[ids])
        self._check_ids(ids)
        size = self._idx_dtype.itemsize * 2
        if len(ids) * self.ROW_GAP < self._n_sentences:
            raw = b"".join(self._idx.read_each((self._idx_offset + ids * size).tolist(), [size] * len(ids)))
            return np.frombuffer(raw, self._idx_dtype).reshape(-1, 2)
        order = np.argsort(ids, kind="stable")
        s = ids[order]
        cut = np.flatnonzero(np.diff(s) > self.ROW_GAP) + 1
        first, last = np.concatenate(([0], cut)), np.concatenate((cut, [len(s)]))
        lo, hi = s[first], s[last - 1] + 1  # runs of rows [lo, hi)
        raw = b"".join(self._idx.read_each((self._idx_offset + lo * size).tolist(), ((hi - lo) * size).tolist()))
        table = np.frombuffer(raw, self._idx_dtype).reshape(-1, 2)
        base = np.concatenate(([0], np.cumsum(hi - lo)[:-1]))  # where each run starts in table
        run = np.repeat(np.arange(len(lo)), last - first)
        out = np.empty((len(ids), 2), dtype=self._idx_dtype)
        out[order] = table[base[run] + s - lo[run]]
        return out

    def row_lengths(self, ids: np.ndarray | list[int]) -> np.ndarray:
        """Number of words of sentences ``ids`` (``int64``), in the order of ``ids``."""
        r = self.rows(ids)
        return (r[:, 1] - r[:, 0]).astype(np.int64)

    def sentences(self, ids: np.ndarray | list[int], max_len: int | None = None) -> list[np.ndarray]:
        """Word ids of sentences ``ids`` (no delimiters), each cut to its first ``max_len``
        words: one read of the index rows, then one ``pread`` per sentence of only the kept words."""
        rows = self.rows(ids)
        starts, lens = rows[:, 0], rows[:, 1] - rows[:, 0]
        if max_len is not None:
            lens = np.minimum(lens, max(0, max_len))
        if self._bin is None:
            return [self.tokens[s : s + n] for s, n in zip(starts.tolist(), lens.tolist())]
        size, dtype = self._dtype.itemsize, self._dtype
        chunks = self._bin.read_each((starts * size).tolist(), (lens * size).tolist())
        return [np.frombuffer(c, dtype) for c in chunks]

    def sentence(self, i: int) -> np.ndarray:
        """Word ids of sentence ``i`` (no delimiters)."""
        if self._idx is None:
            start, end = self.bounds[i]
            return self.tokens[start:end]
        i = int(i)
        if i < 0:
            i += self._n_sentences
        self._check_ids(np.array([i]))
        start, end = self._read_row_range(i, 1)[0]
        return self.stream(int(start), int(end - start))

    def stream(self, start: int, length: int) -> np.ndarray:
        """``length`` consecutive items of the ``</s> s1 </s> s2 ...`` stream from ``start``
        (fewer at the end of the stream, as a slice would give)."""
        if self._bin is None:
            return self.tokens[start : start + length]
        start = max(0, min(int(start), self._n_items))
        length = max(0, min(int(length), self._n_items - start))
        size = self._dtype.itemsize
        return np.frombuffer(self._bin.read(start * size, length * size), self._dtype)


@dataclass
class ParallelData:
    """Two aligned binarized files: sentence i of ``src`` translates sentence i of ``tgt``."""

    src: MonolingualData
    tgt: MonolingualData

    @classmethod
    def open(
        cls,
        src_prefix: str | Path,
        tgt_prefix: str | Path,
        vocab_hash: str | None = None,
        specials: Specials | None = None,
    ) -> ParallelData:
        src = MonolingualData.open(src_prefix, vocab_hash, specials)
        tgt = MonolingualData.open(tgt_prefix, vocab_hash, specials)
        if len(src) != len(tgt):
            raise DataError(f"{src.prefix} has {len(src)} sentences but {tgt.prefix} has {len(tgt)}: not aligned")
        return cls(src, tgt)

    def __len__(self) -> int:
        return len(self.src)

    def count_longer(self, max_len: int, chunk: int = 1 << 20) -> int:
        """Number of pairs with more than ``max_len`` words on either side (the pairs that
        training drops), reading the two indexes ``chunk`` rows at a time."""
        n = 0
        for start in range(0, len(self), chunk):
            ids = np.arange(start, min(start + chunk, len(self)))
            n += int(((self.src.row_lengths(ids) > max_len) | (self.tgt.row_lengths(ids) > max_len)).sum())
        return n

    def close(self) -> None:
        self.src.close()
        self.tgt.close()

    def __enter__(self) -> ParallelData:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


PREPARE_FILE = "prepare.json"


@dataclass
class PreparedData:
    """A directory written by ``xlm prepare``: the shared vocabulary and binarized splits
    named as in the original XLM (``train.en``, ``valid.fr``, ``test.en-fr.en`` ...)."""

    directory: Path
    vocab: Vocabulary
    info: dict[str, Any]

    @classmethod
    def open(cls, directory: str | Path) -> PreparedData:
        d = Path(directory)
        if not d.is_dir():
            raise DataError(f"{d}: prepared data directory not found (run `xlm prepare` first)")
        info_path = d / PREPARE_FILE
        if not info_path.is_file():  # written last by `xlm prepare`: the directory's commit marker
            raise DataError(f"{info_path} not found: {d} is not a finished `xlm prepare` output (run it again)")
        info = read_json(info_path, DataError)
        if not isinstance(info, dict):
            raise DataError(f"{info_path}: expected a JSON object")
        vocab = Vocabulary.from_dir(d)
        return cls(d, vocab, info)

    @property
    def languages(self) -> list[str]:
        return list(self.info.get("languages", []))

    def mono_prefix(self, split: str, lang: str) -> Path:
        return self.directory / f"{split}.{lang}"

    def para_prefix(self, split: str, src: str, tgt: str, lang: str) -> Path:
        a, b = sorted((src, tgt))
        return self.directory / f"{split}.{a}-{b}.{lang}"

    def has_mono(self, split: str, lang: str) -> bool:
        return Path(f"{self.mono_prefix(split, lang)}.json").is_file()

    def has_para(self, split: str, src: str, tgt: str) -> bool:
        return Path(f"{self.para_prefix(split, src, tgt, src)}.json").is_file()

    def check_vocabulary(self, vocab: Vocabulary, owner: str | Path, field: str = "") -> None:
        """Refuse data prepared with another vocabulary than ``owner``'s (a checkpoint, whose
        vocabulary is ``vocab``); ``field`` names the setting that gave this directory."""
        if self.vocab.hash != vocab.hash:
            where = f"{field}: " if field else ""
            raise DataError(
                f"{where}{self.directory} was prepared with another vocabulary ({self.vocab.hash}) than {owner} "
                f"({vocab.hash}); prepare it with that vocabulary: `xlm prepare ... --vocab {owner}`"
            )

    def mono(self, split: str, lang: str) -> MonolingualData:
        return MonolingualData.open(self.mono_prefix(split, lang), self.vocab.hash, self.vocab.specials)

    def para(self, split: str, src: str, tgt: str) -> ParallelData:
        """Parallel data with ``src`` as the source side (pairs are stored once, sorted by name)."""
        return ParallelData.open(
            self.para_prefix(split, src, tgt, src),
            self.para_prefix(split, src, tgt, tgt),
            self.vocab.hash,
            self.vocab.specials,
        )


def empty_split_error(prefix: Path, split: str, what: str) -> DataError:
    """The error for an evaluated split without sentences (refused at start-up: its scores
    would be NaN, and the best checkpoint would be chosen on NaN)."""
    return DataError(
        f"{prefix}: the {split} split of {what} has no sentences, so it cannot be evaluated: "
        f"give it sentences, or leave {split!r} out of eval.splits"
    )
