"""One tokenizer interface over the three kinds of vocabulary (see :mod:`xlm.text.vocab`):
:class:`~xlm.text.bpe.BPETokenizer` (XLM: Moses-normalized text, BPE),
:class:`~xlm.text.sentencepiece.SentencePieceTokenizer` (XLM-R: raw text) and
:class:`~xlm.text.wordpiece.WordPieceTokenizer` (mBERT: raw text, BERT's normalizer).

:class:`TextEncoder` is raw text of one language -> ids and back, whatever the kind: for BPE
it first applies XLM's normalization (:mod:`xlm.text.normalize`) and Moses-detokenizes the
decoded text; the other kinds normalize inside their tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

from sacremoses import MosesDetokenizer

from xlm.text.bpe import BPETokenizer, detokenize, vocab_settings
from xlm.text.normalize import Normalizer
from xlm.text.sentencepiece import SentencePieceTokenizer
from xlm.text.vocab import Vocabulary, read_vocab_info
from xlm.text.wordpiece import WordPieceTokenizer


class Tokenizer(Protocol):
    """What binarization, encoding and decoding use of a vocabulary's tokenizer."""

    vocab: Vocabulary
    n_merges: int

    def __len__(self) -> int: ...

    def encode(self, line: str) -> list[int]: ...

    def encode_batch(self, lines: Sequence[str]) -> list[list[int]]: ...

    def tokens(self, line: str) -> list[str]: ...

    def unknown_words(self, line: str) -> list[str]: ...

    def decode(self, ids: Iterable[int]) -> str: ...


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """The tokenizer of the vocabulary in ``directory`` (its kind from ``vocab_info.json``)."""
    kind, _ = read_vocab_info(directory)
    if kind == "sentencepiece":
        return SentencePieceTokenizer.from_dir(directory)
    if kind == "wordpiece":
        return WordPieceTokenizer.from_dir(directory)
    return BPETokenizer.from_dir(directory)


def vocab_kind(directory: str | Path) -> str:
    return read_vocab_info(directory)[0]


class TextEncoder:
    """Raw text of one language -> ids, in one call: normalize + tokenize. And back (:meth:`decode`).

    ``lowercase_and_remove_accent=None`` takes the setting the vocabulary was learned with
    (from ``prepare.json`` / ``bpe.json`` in ``vocab_dir``), or ``False`` if none is recorded;
    it applies to BPE only (WordPiece records its own, SentencePiece has none).
    """

    def __init__(
        self,
        vocab_dir: str | Path,
        lang: str,
        lowercase_and_remove_accent: bool | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        if lowercase_and_remove_accent is None:
            lowercase_and_remove_accent = bool(vocab_settings(vocab_dir).get("lowercase_and_remove_accent", False))
        self.lang = lang
        self.lowercase_and_remove_accent = lowercase_and_remove_accent
        self.bpe: Tokenizer = tokenizer if tokenizer is not None else load_tokenizer(vocab_dir)
        self.tokenizer = self.bpe
        self.kind = self.bpe.vocab.kind
        self.normalizer: Callable[[str], str] = _identity
        self._detok: MosesDetokenizer | None = None
        if self.kind == "bpe":
            self.normalizer = Normalizer(lang, lowercase_and_remove_accent)
            self._detok = MosesDetokenizer(lang=lang)

    @property
    def vocab(self) -> Vocabulary:
        return self.bpe.vocab

    def normalize(self, line: str) -> str:
        return self.normalizer(line)

    def encode(self, line: str) -> list[int]:
        return self.bpe.encode(self.normalizer(line))

    def encode_batch(self, lines: Iterable[str]) -> list[list[int]]:
        return self.bpe.encode_batch([self.normalizer(line) for line in lines])

    def tokens(self, line: str) -> list[str]:
        return self.bpe.tokens(self.normalizer(line))

    def decode(self, ids: Iterable[int]) -> str:
        """Readable text (e.g. MT output): BPE decode + Moses detokenization, or the kind's decoder."""
        text = self.bpe.decode(ids)
        return detokenize(text, self._detok) if self._detok is not None else text


def _identity(text: str) -> str:
    return text


def encode_text(
    lines: Iterable[str], lang: str, vocab_dir: str | Path, lowercase_and_remove_accent: bool | None = None
) -> list[list[int]]:
    """Convenience: raw lines of ``lang`` -> lists of ids with the vocabulary in ``vocab_dir``."""
    return TextEncoder(vocab_dir, lang, lowercase_and_remove_accent).encode_batch(lines)
