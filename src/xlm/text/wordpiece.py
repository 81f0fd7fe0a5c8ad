"""WordPiece vocabularies, mBERT's kind: learned with the ``tokenizers`` library with BERT's
normalizer (control characters removed, spaces around CJK characters, optionally lowercase +
accents stripped) and pre-tokenizer (whitespace and punctuation), ``##`` continuations.

Files: BERT's ``vocab.txt`` (one token a line, id = line number; ``BertTokenizer`` reads it
with equal ids), ``vocab.json`` (the same map), ``vocab_info.json`` and ``wordpiece.json``
(how it was learned; its ``lowercase_and_remove_accent`` is the ``do_lower_case`` to use).
Special tokens: ``[PAD]``=0, ``[UNK]``=1, ``[CLS]``=2, ``[SEP]``=3, ``[MASK]``=4.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from xlm.errors import DataError
from xlm.fileio import write_atomic, write_json
from xlm.text.bpe import (
    AlphaSample,
    LearnReport,
    vocab_settings,
)
from xlm.text.vocab import (
    VOCAB_FILE,
    VOCAB_INFO_FILE,
    WORDPIECE_FILE,
    WORDPIECE_SPECIAL_TOKENS,
    Vocabulary,
    write_vocab_info,
    write_vocab_json,
)

WP_INFO_FILE = "wordpiece.json"
PREFIX = "##"
SPECIAL_ORDER = ["pad", "unk", "start", "end", "mask"]  # [PAD] [UNK] [CLS] [SEP] [MASK] at 0..4
MAX_WORD_CHARS = 100  # BertTokenizer's max_input_chars_per_word: a longer word is [UNK]


def _pipeline(tok: Tokenizer, lowercase: bool) -> Tokenizer:
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tok


def learn_wordpiece(
    sources: Mapping[str, Sequence[Path]],
    out_dir: str | Path,
    vocab_size: int,
    alpha: float = 0.5,
    max_sentences: int = 1_000_000,
    seed: int = 0,
    lowercase: bool = False,
) -> LearnReport:
    """Learn a WordPiece vocabulary on raw text files (``{lang: [files]}``) sampled as
    :func:`xlm.text.bpe.learn_bpe` samples them; write the files of the module docstring."""
    specials = [WORDPIECE_SPECIAL_TOKENS[r] for r in SPECIAL_ORDER]
    if vocab_size <= len(specials):
        raise DataError(f"vocab_size must exceed the {len(specials)} special tokens, got {vocab_size}")
    t0 = time.perf_counter()
    sample = AlphaSample.of(sources, alpha, max_sentences, seed)
    counts, sizes, total = sample.counts, sample.sizes, sample.total

    tokens = _train_wordpiece(sample, total, vocab_size, specials, lowercase)
    info = {
        "kind": "wordpiece",
        "vocab_size": len(tokens),
        "vocab_size_requested": vocab_size,
        "alpha": alpha,
        "max_sentences": max_sentences,
        "seed": seed,
        "normalization": "BERT's (clean text, CJK characters split"
        + (", lowercase + accents stripped)" if lowercase else ")"),
        "lowercase_and_remove_accent": lowercase,
        "line_counts": counts,
        "sample_sizes": sizes,
    }
    write_wordpiece(out_dir, tokens, info)
    return LearnReport(len(tokens), 0, counts, sizes, time.perf_counter() - t0)


def _initial_alphabet(sample: Callable[[], Iterator[str]], lowercase: bool) -> list[str]:
    """Every character that starts a word of ``sample()`` (sorted), then every one that
    continues a word, as a ``##`` symbol (sorted); words longer than BERT's limit aside."""
    probe = _pipeline(Tokenizer(models.WordPiece(unk_token=WORDPIECE_SPECIAL_TOKENS["unk"])), lowercase)
    firsts: set[str] = set()
    rests: set[str] = set()
    for line in sample():
        for word, _ in probe.pre_tokenizer.pre_tokenize_str(probe.normalizer.normalize_str(line)):
            if len(word) <= MAX_WORD_CHARS:
                firsts.add(word[0])
                rests.update(word[1:])
    return sorted(firsts) + [PREFIX + c for c in sorted(rests)]


def _train_wordpiece(
    sample: Callable[[], Iterator[str]], total: int, vocab_size: int, specials: list[str], lowercase: bool
) -> list[str]:
    """The tokens (id order, ``specials`` first) of a WordPiece learned by the ``tokenizers``
    trainer on the ``total`` sentences ``sample()`` yields."""
    # As for BPE (see _train_bpe): the trainer numbers the symbols it meets in a Rust HashMap's
    # order and breaks ties between equally frequent pairs by id, so two runs would differ.
    # Declaring every initial and ``##`` continuation symbol up front, sorted, fixes the ids.
    tok = _pipeline(Tokenizer(models.WordPiece(unk_token=WORDPIECE_SPECIAL_TOKENS["unk"])), lowercase)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=0,
        special_tokens=specials + _initial_alphabet(sample, lowercase),
        continuing_subword_prefix=PREFIX,
        show_progress=False,
    )
    tok.train_from_iterator(sample(), trainer, length=total)
    learned = sorted((i, t) for t, i in tok.get_vocab(with_added_tokens=True).items())
    tokens = [t for _, t in learned]
    if tokens[: len(specials)] != specials or [i for i, _ in learned] != list(range(len(tokens))):
        raise DataError("the WordPiece trainer did not put the special tokens first")  # not expected
    return tokens


def write_wordpiece(out_dir: str | Path, tokens: Sequence[str], info: dict | None = None) -> None:
    """``vocab.txt`` + ``vocab.json`` (+ ``wordpiece.json``) + ``vocab_info.json`` for ``tokens`` (id order)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if len(set(tokens)) != len(tokens) or any(not t or any(c.isspace() for c in t) for t in tokens):
        raise DataError("WordPiece tokens must be unique, non-empty and without whitespace")
    write_atomic(out / WORDPIECE_FILE, "".join(f"{t}\n" for t in tokens))
    write_vocab_json(out, tokens)
    if info is not None:
        write_json(out / WP_INFO_FILE, info, sort_keys=False, ensure_ascii=False)
    write_vocab_info(out, "wordpiece", dict(WORDPIECE_SPECIAL_TOKENS))


def read_wordpiece_vocab(path: Path) -> list[str]:
    """BERT's ``vocab.txt`` as ``BertTokenizer`` reads it (one token a line, stripped of its newline)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return [line.rstrip("\n") for line in text.splitlines()]


class WordPieceTokenizer:
    """Raw text -> ids of a WordPiece vocabulary, as ``BertTokenizer`` (without ``[CLS]`` ...
    ``[SEP]``); and back."""

    def __init__(self, vocab: Vocabulary, lowercase: bool, directory: Path | None = None) -> None:
        self.vocab = vocab
        self.directory = directory
        self.lowercase = lowercase
        self.n_merges = 0
        model = models.WordPiece(
            vocab=dict(vocab.token_to_id),
            unk_token=vocab.token(vocab.specials.unk),
            continuing_subword_prefix=PREFIX,
            max_input_chars_per_word=MAX_WORD_CHARS,
        )
        self._tok = _pipeline(Tokenizer(model), lowercase)
        self._tok.decoder = decoders.WordPiece(prefix=PREFIX, cleanup=True)

    @classmethod
    def from_dir(cls, directory: str | Path) -> WordPieceTokenizer:
        d = Path(directory)
        vocab = Vocabulary.from_dir(d)
        lines = read_wordpiece_vocab(d / WORDPIECE_FILE)
        if lines != vocab.id_to_token:
            if len(lines) != len(vocab):
                raise DataError(
                    f"{d / VOCAB_INFO_FILE}: {VOCAB_FILE} has {len(vocab)} tokens but {WORDPIECE_FILE} has {len(lines)}"
                )
            k = next(i for i, (a, b) in enumerate(zip(lines, vocab.id_to_token)) if a != b)
            raise DataError(
                f"{d / WORDPIECE_FILE}:{k + 1}: {lines[k]!r}, but {VOCAB_FILE} has {vocab.token(k)!r} at id {k}"
            )
        lowercase = bool(vocab_settings(d).get("lowercase_and_remove_accent", False))
        return cls(vocab, lowercase, d)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, line: str) -> list[int]:
        return self._tok.encode(line, add_special_tokens=False).ids

    def encode_batch(self, lines: Sequence[str]) -> list[list[int]]:
        encode = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)
        return [e.ids for e in encode(list(lines), add_special_tokens=False)]

    def tokens(self, line: str) -> list[str]:
        return [self.vocab.token(i) for i in self.encode(line)]

    def unknown_words(self, line: str) -> list[str]:
        """The words (BERT's pre-tokenization) of ``line`` that became ``[UNK]``."""
        enc = self._tok.encode(line, add_special_tokens=False)
        unk = self.vocab.specials.unk
        return [line[a:b] for i, (a, b) in zip(enc.ids, enc.offsets) if i == unk]

    def decode(self, ids: Iterable[int]) -> str:
        """Text with ``##`` pieces joined; special tokens dropped, ``[UNK]`` kept."""
        unk = self.vocab.specials.unk
        kept = [int(i) for i in ids if self.vocab.is_word(int(i)) or int(i) == unk]
        return self._tok.decode(kept, skip_special_tokens=False)
