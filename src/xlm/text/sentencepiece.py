"""SentencePiece vocabularies, XLM-R's kind: learned with the ``sentencepiece`` library on
raw text (no Moses pre-tokenization) sampled per language with ``q_i ∝ p_i^α``.

Files (the ids are those ``transformers``' ``XLMRobertaTokenizer`` gives the same model):

* ``sentencepiece.bpe.model``  the SentencePiece model (the name XLM-R releases use), its
  piece 0 ``<unk>``, 1 ``<s>``, 2 ``</s>``;
* ``vocab.json``  ``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3, piece ``i >= 3`` at ``i + 1``
  (fairseq's offset), ``<mask>`` last;
* ``vocab_info.json``  the kind and the special tokens; ``sentencepiece.json`` how it was learned.

Normalization is SentencePiece's own ``nmt_nfkc`` rule (NFKC, control characters removed,
runs of whitespace collapsed), stored in the model and applied the same way when learning,
encoding, and by ``XLMRobertaTokenizer``; nothing else is done to the text.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal, get_args

from xlm.errors import DataError
from xlm.fileio import write_atomic, write_json
from xlm.text.bpe import (
    AlphaSample,
    LearnReport,
)
from xlm.text.vocab import (
    SENTENCEPIECE_FILE,
    SENTENCEPIECE_SPECIAL_TOKENS,
    VOCAB_FILE,
    VOCAB_INFO_FILE,
    Vocabulary,
    write_vocab_info,
    write_vocab_json,
)

SP_INFO_FILE = "sentencepiece.json"
SpModelType = Literal["unigram", "bpe"]
SP_MODEL_TYPES: tuple[str, ...] = get_args(SpModelType)
FAIRSEQ_HEAD = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3; SentencePiece's own 0..2 are <unk> <s> </s>
N_SP_CONTROL = 3  # SentencePiece pieces 0..2 (<unk>, <s>, </s>) are not copied: pieces i >= 3 go to i + 1


def _processor(data: bytes, source: Path):  # -> sentencepiece.SentencePieceProcessor
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    try:
        sp.LoadFromSerializedProto(data)
    except (RuntimeError, OSError, TypeError) as e:
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise DataError(f"{source}: not a SentencePiece model ({len(data)} bytes; {reason})") from None
    if sp.unk_id() != 0 or sp.bos_id() != 1 or sp.eos_id() != 2:
        raise DataError(
            f"{source}: SentencePiece model with <unk>={sp.unk_id()} <s>={sp.bos_id()} </s>={sp.eos_id()}; "
            "XLM-R's layout needs 0, 1, 2"
        )
    return sp


def vocab_tokens(sp) -> list[str]:
    """The complete token list (id order) of a SentencePiece model in XLM-R's layout."""
    n = sp.get_piece_size()
    return [*FAIRSEQ_HEAD, *(sp.id_to_piece(i) for i in range(N_SP_CONTROL, n)), SENTENCEPIECE_SPECIAL_TOKENS["mask"]]


def learn_sentencepiece(
    sources: Mapping[str, Sequence[Path]],
    out_dir: str | Path,
    vocab_size: int,
    alpha: float = 0.3,
    max_sentences: int = 1_000_000,
    seed: int = 0,
    model_type: str = "unigram",
    character_coverage: float = 0.9995,
) -> LearnReport:
    """Learn a SentencePiece model on raw text files (``{lang: [files]}``) sampled as
    :func:`xlm.text.bpe.learn_bpe` samples them, and write the files of the module docstring.
    ``vocab_size`` counts every id (``<pad>`` and ``<mask>`` included); a small corpus may
    give fewer (``hard_vocab_limit`` is off)."""
    if model_type not in SP_MODEL_TYPES:
        raise DataError(f"--sp-model-type must be one of {', '.join(SP_MODEL_TYPES)}, got {model_type!r}")
    if vocab_size <= len(FAIRSEQ_HEAD) + 2:
        raise DataError(f"vocab_size must exceed the {len(FAIRSEQ_HEAD) + 1} special tokens by more, got {vocab_size}")
    t0 = time.perf_counter()
    sample = AlphaSample.of(sources, alpha, max_sentences, seed)
    counts, sizes = sample.counts, sample.sizes
    model = _train_sentencepiece(sample, vocab_size, model_type, character_coverage)
    info = {
        "kind": "sentencepiece",
        "model_type": model_type,
        "vocab_size_requested": vocab_size,
        "alpha": alpha,
        "max_sentences": max_sentences,
        "seed": seed,
        "character_coverage": character_coverage,
        "normalization": "sentencepiece nmt_nfkc (no Moses pre-tokenization, no lowercasing)",
        "lowercase_and_remove_accent": False,
        "line_counts": counts,
        "sample_sizes": sizes,
    }
    n = write_sentencepiece_vocabulary(out_dir, model, info)
    return LearnReport(n, 0, counts, sizes, time.perf_counter() - t0)


def _train_sentencepiece(
    sample: Callable[[], Iterator[str]], vocab_size: int, model_type: str, character_coverage: float
) -> bytes:
    """The bytes of a SentencePiece model learned on the non-blank sentences ``sample()``
    yields, in XLM-R's layout (``<unk>`` ``<s>`` ``</s>`` at 0..2; ``<pad>`` and ``<mask>``
    are added by :func:`vocab_tokens`, hence ``vocab_size - 2`` pieces)."""
    import sentencepiece as spm

    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=(line for line in sample() if line.strip()),
            model_writer=model,
            vocab_size=vocab_size - 2,  # + <pad> and <mask>
            model_type=model_type,
            character_coverage=character_coverage,
            normalization_rule_name="nmt_nfkc",
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=-1,
            hard_vocab_limit=False,
            input_sentence_size=0,  # the sample is already drawn: take all of it
            shuffle_input_sentence=False,
            max_sentence_length=1 << 16,
            num_threads=1,  # the same model every run
            minloglevel=2,
        )
    except RuntimeError as e:
        raise DataError(f"SentencePiece could not learn a {model_type} vocabulary of {vocab_size}: {e}") from None
    return model.getvalue()


def write_sentencepiece_vocabulary(out_dir: str | Path, model: bytes, info: dict | None = None) -> int:
    """Write a SentencePiece model (its bytes, e.g. a released ``sentencepiece.bpe.model``) as
    a vocabulary directory: the model, ``vocab.json`` in XLM-R's layout, ``vocab_info.json``
    (+ ``sentencepiece.json`` from ``info``). Returns the vocabulary size (pieces + 2)."""
    out = Path(out_dir)
    sp = _processor(model, out / SENTENCEPIECE_FILE)
    tokens = vocab_tokens(sp)
    if len(set(tokens)) != len(tokens):
        raise DataError(f"{out / SENTENCEPIECE_FILE}: a piece collides with a special token (<pad> or <mask>)")
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / SENTENCEPIECE_FILE, model)
    write_vocab_json(out, tokens)
    if info is not None:
        write_json(out / SP_INFO_FILE, {**info, "vocab_size": len(tokens)}, sort_keys=False, ensure_ascii=False)
    write_vocab_info(out, "sentencepiece", dict(SENTENCEPIECE_SPECIAL_TOKENS))
    return len(tokens)


class SentencePieceTokenizer:
    """Raw text -> ids of a SentencePiece vocabulary, as ``XLMRobertaTokenizer`` (without
    the ``<s>`` ... ``</s>`` frame) ; and back."""

    def __init__(self, vocab: Vocabulary, processor, directory: Path | None = None) -> None:
        self.vocab = vocab
        self.directory = directory
        self.sp = processor
        self.n_merges = 0
        n = processor.get_piece_size()
        where = directory / VOCAB_INFO_FILE if directory else "vocabulary"
        if len(vocab) != n + 2:
            raise DataError(
                f"{where}: {VOCAB_FILE} has {len(vocab)} tokens but {SENTENCEPIECE_FILE} has {n} pieces "
                f"(XLM-R's layout needs {n + 2})"
            )
        for i in range(N_SP_CONTROL, n):
            if vocab.id_to_token[i + 1] != processor.id_to_piece(i):
                raise DataError(
                    f"{where}: {VOCAB_FILE} has {vocab.id_to_token[i + 1]!r} at id {i + 1} but {SENTENCEPIECE_FILE} "
                    f"has {processor.id_to_piece(i)!r} as piece {i} (expected at id {i + 1})"
                )
        self._unk = vocab.specials.unk

    @classmethod
    def from_dir(cls, directory: str | Path) -> SentencePieceTokenizer:
        d = Path(directory)
        vocab = Vocabulary.from_dir(d)
        path = d / SENTENCEPIECE_FILE
        return cls(vocab, _processor(path.read_bytes(), path), d)

    def __len__(self) -> int:
        return len(self.vocab)

    def _ids(self, pieces: list[int]) -> list[int]:
        unk = self._unk
        return [i + 1 if i else unk for i in pieces]

    def encode(self, line: str) -> list[int]:
        return self._ids(self.sp.encode(line))

    def encode_batch(self, lines: Sequence[str]) -> list[list[int]]:
        return [self._ids(p) for p in self.sp.encode(list(lines))]

    def tokens(self, line: str) -> list[str]:
        return [self.vocab.token(i) for i in self.encode(line)]

    def unknown_words(self, line: str) -> list[str]:
        """The whitespace-separated words of ``line`` that contain an unknown character."""
        return [w for w in line.split() if 0 in self.sp.encode(w)]

    def decode(self, ids: Iterable[int]) -> str:
        """Raw text; special tokens are dropped, ``<unk>`` shows as SentencePiece's `` ⁇ ``."""
        pieces = []
        for i in ids:
            i = int(i)
            if i == self._unk:
                pieces.append(0)
            elif self.vocab.is_word(i):
                pieces.append(i - 1)
        return self.sp.decode(pieces)
