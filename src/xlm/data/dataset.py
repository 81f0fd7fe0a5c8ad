"""Readers for binarized data: random access to sentences and contiguous token streams,
memory-mapped so that a corpus larger than RAM costs no more memory than a small one.

On-disk layout of one binarized file with prefix ``P`` (e.g. ``train.en`` or ``train.en-fr.fr``):

* ``P.bin``     raw little-endian token ids (``uint16`` when the vocabulary fits, else ``int32``),
                laid out as the stream ``</s> s1 </s> s2 </s> ... sN </s>``;
* ``P.idx.npy`` ``int64`` array of shape ``(N, 2)``: ``[start, end)`` of the words of sentence i
                in ``P.bin``, so ``tokens[start - 1] == tokens[end] == </s>``;
* ``P.json``    metadata: format version, vocabulary hash, language, dtype and counts.

A parallel corpus is two such files (``train.en-fr.en`` and ``train.en-fr.fr``) with the
same number of sentences, line ``i`` of one the translation of line ``i`` of the other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xlm.errors import DataError
from xlm.text.vocab import Vocabulary

FORMAT_NAME = "xlm-binarized"
FORMAT_VERSION = 1


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


@dataclass
class MonolingualData:
    """One binarized file: ``tokens`` (memmap) and ``bounds`` (N x 2 [start, end) of sentence words)."""

    prefix: Path
    tokens: np.ndarray
    bounds: np.ndarray
    meta: dict[str, Any]

    @classmethod
    def open(cls, prefix: str | Path, vocab_hash: str | None = None) -> "MonolingualData":
        prefix = Path(prefix)
        meta_path = Path(f"{prefix}.json")
        bin_path, idx_path = Path(f"{prefix}.bin"), Path(f"{prefix}.idx.npy")
        for p in (meta_path, bin_path, idx_path):
            if not p.is_file():
                raise DataError(f"{p}: binarized file not found (run `xlm prepare` first)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{meta_path}: unreadable metadata: {e}") from None
        if meta.get("format") != FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
            raise DataError(f"{meta_path}: not an {FORMAT_NAME} v{FORMAT_VERSION} file")
        if vocab_hash is not None and meta.get("vocab_hash") != vocab_hash:
            raise DataError(
                f"{prefix}: binarized with vocabulary {meta.get('vocab_hash')}, "
                f"but the vocabulary in use is {vocab_hash}; re-run `xlm prepare` with this vocabulary"
            )
        dtype = np.dtype(meta["dtype"])
        n_items = bin_path.stat().st_size // dtype.itemsize
        if n_items * dtype.itemsize != bin_path.stat().st_size or n_items == 0:
            raise DataError(f"{bin_path}: size is not a whole number of {dtype} tokens")
        tokens = np.memmap(bin_path, dtype=dtype, mode="r", shape=(n_items,))
        try:  # allow_pickle=False: an index holding Python objects (code when unpickled) is refused
            bounds = np.load(idx_path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"{idx_path}: not a plain int64 .npy index ({e})") from None
        if bounds.ndim != 2 or bounds.shape[1] != 2 or bounds.shape[0] != meta["n_sentences"]:
            raise DataError(f"{idx_path}: index shape {bounds.shape} does not match {meta['n_sentences']} sentences")
        if len(bounds) and (bounds[-1, 1] >= n_items or bounds[0, 0] < 1):
            raise DataError(f"{idx_path}: index points outside {bin_path} (truncated file?)")
        return cls(prefix, tokens, bounds, meta)

    def __len__(self) -> int:
        return int(self.bounds.shape[0])

    @property
    def lang(self) -> str:
        return str(self.meta["lang"])

    @property
    def n_tokens(self) -> int:
        """Number of word tokens (without sentence delimiters)."""
        return int(self.meta["n_tokens"])

    @property
    def lengths(self) -> np.ndarray:
        return self.bounds[:, 1] - self.bounds[:, 0]

    def sentence(self, i: int) -> np.ndarray:
        """Word ids of sentence ``i`` (a view, no delimiters)."""
        start, end = self.bounds[i]
        return self.tokens[start:end]

    def stream(self, start: int, length: int) -> np.ndarray:
        """``length`` consecutive items of the ``</s> s1 </s> s2 ...`` stream from ``start`` (a view)."""
        return self.tokens[start : start + length]

    @property
    def stream_length(self) -> int:
        return int(self.tokens.shape[0])


@dataclass
class ParallelData:
    """Two aligned binarized files: sentence i of ``src`` translates sentence i of ``tgt``."""

    src: MonolingualData
    tgt: MonolingualData

    @classmethod
    def open(cls, src_prefix: str | Path, tgt_prefix: str | Path, vocab_hash: str | None = None) -> "ParallelData":
        src = MonolingualData.open(src_prefix, vocab_hash)
        tgt = MonolingualData.open(tgt_prefix, vocab_hash)
        if len(src) != len(tgt):
            raise DataError(f"{src.prefix} has {len(src)} sentences but {tgt.prefix} has {len(tgt)}: not aligned")
        return cls(src, tgt)

    def __len__(self) -> int:
        return len(self.src)



PREPARE_FILE = "prepare.json"


@dataclass
class PreparedData:
    """A directory written by ``xlm prepare``: the shared vocabulary and binarized splits
    named as in the original XLM (``train.en``, ``valid.fr``, ``test.en-fr.en`` ...)."""

    directory: Path
    vocab: Vocabulary
    info: dict[str, Any]

    @classmethod
    def open(cls, directory: str | Path) -> "PreparedData":
        d = Path(directory)
        if not d.is_dir():
            raise DataError(f"{d}: prepared data directory not found (run `xlm prepare` first)")
        info_path = d / PREPARE_FILE
        if not info_path.is_file():  # written last by `xlm prepare`: the directory's commit marker
            raise DataError(f"{info_path} not found: {d} is not a finished `xlm prepare` output (run it again)")
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{info_path}: unreadable: {e}") from None
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

    def mono(self, split: str, lang: str) -> MonolingualData:
        return MonolingualData.open(self.mono_prefix(split, lang), self.vocab.hash)

    def para(self, split: str, src: str, tgt: str) -> ParallelData:
        """Parallel data with ``src`` as the source side (pairs are stored once, sorted by name)."""
        return ParallelData.open(
            self.para_prefix(split, src, tgt, src), self.para_prefix(split, src, tgt, tgt), self.vocab.hash
        )
