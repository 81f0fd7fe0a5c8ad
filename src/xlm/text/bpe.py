"""One shared BPE vocabulary for all languages, learned with the ``tokenizers`` library and
stored in the ``</w>`` end-of-word form that Hugging Face's ``XLMTokenizer`` reads:

* ``vocab.json``  token -> id, the 14 XLM special tokens at ids 0..13, then the rest;
* ``merges.txt``  one ``a b`` merge per line in rank order, no header, trailing newline;
* ``bpe.json``    how it was learned (languages, sample sizes, lowercasing) — ignored by HF.

Input text is already Moses-tokenized (see :mod:`xlm.text.normalize`), so words are split
on whitespace only. A character never seen while learning becomes ``<unk>``.

Learning samples sentences of language ``i`` with probability ``q_i ∝ p_i^α`` where
``p_i`` is the share of sentences of language ``i`` (``α < 1`` up-samples the
low-resource languages), as in the XLM paper.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sacremoses import MosesDetokenizer
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from xlm.errors import DataError
from xlm.fileio import read_json, write_atomic, write_json
from xlm.text.segment import join_thai
from xlm.text.vocab import (
    END_OF_WORD,
    MERGES_FILE,
    N_SPECIAL,
    SPECIAL_TOKENS,
    UNK_INDEX,
    UNK_WORD,
    Vocabulary,
    write_vocab_json,
)

BPE_INFO_FILE = "bpe.json"
PREPARE_INFO_FILE = "prepare.json"  # written by `xlm prepare` next to the vocabulary


# --------------------------------------------------------------------------- sampling


def sampling_probs(counts: Mapping[str, int], alpha: float) -> dict[str, float]:
    """``q_i = p_i^α / Σ_j p_j^α`` with ``p_i = n_i / Σ_j n_j`` (languages with no data get 0)."""
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    total = sum(counts.values())
    if total <= 0:
        raise DataError("no sentences to sample from")
    weights = {k: (n / total) ** alpha if n > 0 else 0.0 for k, n in counts.items()}
    z = sum(weights.values())
    return {k: w / z for k, w in weights.items()}


def sample_sizes(counts: Mapping[str, int], alpha: float, total: int) -> dict[str, int]:
    """Split ``total`` sentences over languages in proportion to ``q_i`` (largest remainders)."""
    probs = sampling_probs(counts, alpha)
    exact = {k: p * total for k, p in probs.items()}
    sizes = {k: int(v) for k, v in exact.items()}
    by_remainder = sorted(exact, key=lambda k: (exact[k] - sizes[k], k), reverse=True)
    for k in by_remainder[: total - sum(sizes.values())]:
        sizes[k] += 1
    return sizes


def sample_line_counts(n_lines: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """How many times each of ``n_lines`` lines is taken to draw ``k`` of them: every line
    ``k // n_lines`` times, plus a uniform subset (without replacement) for the remainder."""
    if n_lines <= 0:
        return np.zeros(0, dtype=np.int64)
    reps = np.full(n_lines, k // n_lines, dtype=np.int64)
    extra = rng.choice(n_lines, size=k % n_lines, replace=False)
    reps[extra] += 1
    return reps


def iter_sampled(lines: Iterable[str], reps: np.ndarray) -> Iterator[str]:
    """Yield line ``i`` of ``lines`` ``reps[i]`` times (streaming)."""
    for line, r in zip(lines, reps):
        for _ in range(int(r)):
            yield line


def _count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        for _ in f:
            n += 1
    return n


def _iter_files(paths: Sequence[Path]) -> Iterator[str]:
    for p in paths:
        with open(p, encoding="utf-8", newline="\n") as f:
            for line in f:
                yield line.rstrip("\n")


# --------------------------------------------------------------------------- learning

# Rust's char::is_whitespace (Unicode White_Space), which the WhitespaceSplit pre-tokenizer uses.
_RUST_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_WORD_FINAL_RE = re.compile(f"([^{_RUST_WHITESPACE}])(?=[{_RUST_WHITESPACE}]|$)")


@dataclass(frozen=True)
class AlphaSample:
    """The sentences a vocabulary is learned on: ``min(max_sentences, total lines)`` of them,
    split over languages by :func:`sample_sizes` (q_i ∝ p_i^α; a language smaller than its
    share is repeated). Calling it yields the same sentences, in the same order, every time."""

    paths: dict[str, list[Path]]
    counts: dict[str, int]
    sizes: dict[str, int]
    total: int
    seed: int

    @classmethod
    def of(cls, sources: Mapping[str, Sequence[Path]], alpha: float, max_sentences: int, seed: int) -> AlphaSample:
        paths = {lang: [Path(p) for p in ps] for lang, ps in sources.items()}
        counts = {lang: sum(_count_lines(p) for p in ps) for lang, ps in paths.items()}
        total = min(max_sentences, sum(counts.values()))
        return cls(paths, counts, sample_sizes(counts, alpha, total), total, seed)

    def __call__(self) -> Iterator[str]:
        rng = np.random.default_rng(self.seed)
        for lang in sorted(self.paths):
            reps = sample_line_counts(self.counts[lang], self.sizes[lang], rng)
            yield from iter_sampled(_iter_files(self.paths[lang]), reps)


def word_final_chars(lines: Iterable[str]) -> list[str]:
    """The characters that end a word somewhere in ``lines``, sorted."""
    found: set[str] = set()
    for line in lines:
        found.update(_WORD_FINAL_RE.findall(line))
    return sorted(found)


@dataclass
class LearnReport:
    vocab_size: int
    n_merges: int
    line_counts: dict[str, int]
    sample_sizes: dict[str, int]
    seconds: float


def learn_bpe(
    sources: Mapping[str, Sequence[Path]],
    out_dir: str | Path,
    vocab_size: int,
    alpha: float = 0.5,
    max_sentences: int = 1_000_000,
    seed: int = 0,
    lowercase_and_remove_accent: bool | None = None,
    min_frequency: int = 0,
) -> LearnReport:
    """Learn a shared BPE over already-normalized text files (``{lang: [files]}``) and write
    ``vocab.json``, ``merges.txt`` and ``bpe.json`` to ``out_dir``.

    The sample has ``min(max_sentences, total lines)`` sentences split over languages by
    :func:`sample_sizes`; a language smaller than its share is repeated (up-sampled).
    ``vocab_size`` counts everything, special tokens and single characters included.
    """
    if vocab_size <= N_SPECIAL:
        raise DataError(f"vocab_size must exceed the {N_SPECIAL} special tokens, got {vocab_size}")
    t0 = time.perf_counter()
    sample = AlphaSample.of(sources, alpha, max_sentences, seed)
    counts, sizes, total = sample.counts, sample.sizes, sample.total

    tokens, merges = _train_bpe(sample, total, vocab_size, min_frequency)
    info = {
        "vocab_size": len(tokens),
        "n_merges": len(merges),
        "alpha": alpha,
        "max_sentences": max_sentences,
        "seed": seed,
        "line_counts": counts,
        "sample_sizes": sizes,
        "lowercase_and_remove_accent": lowercase_and_remove_accent,
    }
    write_vocabulary(out_dir, tokens, merges, info)
    return LearnReport(len(tokens), len(merges), counts, sizes, time.perf_counter() - t0)


def _train_bpe(
    sample: Callable[[], Iterator[str]], total: int, vocab_size: int, min_frequency: int
) -> tuple[list[str], list[tuple[str, str]]]:
    """The tokens (special tokens first, then in the trainer's id order) and merges of a BPE
    learned by the ``tokenizers`` trainer on the ``total`` sentences ``sample()`` yields."""
    # The trainer gives the word-final symbols ("e</w>") ids in the iteration order of a Rust
    # HashMap, which changes from run to run, and it breaks ties between equally frequent
    # pairs by id: the merges would differ between two runs on the same text. Declaring
    # those symbols up front, sorted, fixes their ids and makes learning reproducible.
    end_symbols = [c + END_OF_WORD for c in word_final_chars(sample())]
    tokenizer = Tokenizer(models.BPE(unk_token=UNK_WORD, end_of_word_suffix=END_OF_WORD))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS) + end_symbols,
        end_of_word_suffix=END_OF_WORD,
        show_progress=False,
    )
    tokenizer.train_from_iterator(sample(), trainer, length=total)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [_merge_pair(m) for m in model["merges"]]
    learned = sorted((i, t) for t, i in model["vocab"].items() if t not in SPECIAL_TOKENS)
    return list(SPECIAL_TOKENS) + [t for _, t in learned], merges


def _merge_pair(merge: str | list[str]) -> tuple[str, str]:
    """One merge of the ``tokenizers`` model's JSON: ``"a b"`` (older versions) or ``["a", "b"]``."""
    a, b = merge.split(" ") if isinstance(merge, str) else merge
    return a, b


def write_vocabulary(
    out_dir: str | Path, tokens: Sequence[str], merges: Sequence[tuple[str, str]], info: dict[str, Any] | None = None
) -> None:
    """Write ``vocab.json`` (ids in the order of ``tokens``) and ``merges.txt`` (HF's XLM form)."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    if list(tokens[:N_SPECIAL]) != SPECIAL_TOKENS:
        raise DataError("the vocabulary must start with the XLM special tokens")
    if len(set(tokens)) != len(tokens):
        raise DataError("duplicate tokens in the vocabulary")
    write_merges(d, merges)
    write_vocab_json(d, tokens)
    if info is not None:
        write_json(d / BPE_INFO_FILE, info, sort_keys=False, ensure_ascii=False)


def write_merges(directory: str | Path, merges: Sequence[tuple[str, str]]) -> None:
    """``merges.txt``: one ``a b`` line per merge, in rank order (the one merges writer)."""
    for a, b in merges:
        if not a or not b or any(c.isspace() for c in a + b):
            raise DataError(f"invalid merge {a!r} {b!r}")
    write_atomic(Path(directory) / MERGES_FILE, "".join(f"{a} {b}\n" for a, b in merges))


def read_merges(path: Path) -> list[tuple[str, str]]:
    """Read ``merges.txt`` as HF's ``XLMTokenizer`` does (a ``#version`` header is tolerated)."""
    if not path.is_file():
        raise DataError(f"{path}: merges file not found")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if lines and lines[-1] == "":
        lines = lines[:-1]
    merges: list[tuple[str, str]] = []
    for n, line in enumerate(lines, 1):
        if n == 1 and line.startswith("#version"):
            continue
        parts = line.split()
        if len(parts) < 2:
            raise DataError(f"{path}:{n}: expected a merge 'a b', got {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


# --------------------------------------------------------------------------- encoding


class BPETokenizer:
    """Apply a learned BPE to normalized (Moses-tokenized) text; fast batch encoding in Rust."""

    def __init__(self, vocab: Vocabulary, merges: Sequence[tuple[str, str]], directory: Path | None = None) -> None:
        self.vocab = vocab
        self.directory = directory
        self.n_merges = len(merges)
        # Released vocabularies may hold merges whose pieces or result are not in the vocabulary
        # (HF's XLMTokenizer applies them and maps the result to <unk>). The `tokenizers` library
        # refuses such merges, so those strings get ids past the vocabulary, mapped to <unk> below.
        table = dict(vocab.token_to_id)
        for a, b in merges:
            for piece in (a, b, a + b):
                if piece not in table:
                    table[piece] = len(table)
        self.n_extra = len(table) - len(vocab)
        try:
            model = models.BPE(
                vocab=table,
                merges=list(merges),
                unk_token=UNK_WORD,
                end_of_word_suffix=END_OF_WORD,
            )
        except Exception as e:  # tokenizers raises a plain Exception for a merge outside the vocabulary
            where = f"{directory}: " if directory else ""
            raise DataError(f"{where}merges do not match the vocabulary: {e}") from None
        self._tok = Tokenizer(model)
        self._tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()

    @classmethod
    def from_dir(cls, directory: str | Path) -> BPETokenizer:
        d = Path(directory)
        vocab = Vocabulary.from_dir(d)
        return cls(vocab, read_merges(d / MERGES_FILE), d)

    def __len__(self) -> int:
        return len(self.vocab)

    def _known(self, ids: list[int]) -> list[int]:
        if not self.n_extra:
            return ids
        n = len(self.vocab)
        return [i if i < n else UNK_INDEX for i in ids]

    def encode(self, line: str) -> list[int]:
        return self._known(self._tok.encode(line, add_special_tokens=False).ids)

    def encode_batch(self, lines: Sequence[str]) -> list[list[int]]:
        """Encode many lines at once (parallel in Rust)."""
        encode = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)  # _fast: tokenizers >= 0.20
        return [self._known(e.ids) for e in encode(list(lines), add_special_tokens=False)]

    def tokens(self, line: str) -> list[str]:
        return [self.vocab.token(i) for i in self.encode(line)]

    def unknown_words(self, line: str) -> list[str]:
        """The whitespace-separated words of ``line`` that contain at least one ``<unk>``."""
        enc = self._tok.encode(line, add_special_tokens=False)
        spans: dict[int, tuple[int, int]] = {}  # word -> character span, from the pieces' offsets
        bad: set[int] = set()
        for i, w, (start, end) in zip(enc.ids, enc.word_ids, enc.offsets):
            if w is None:
                continue
            s0, e0 = spans.get(w, (start, end))
            spans[w] = (min(s0, start), max(e0, end))
            if i == UNK_INDEX or i >= len(self.vocab):
                bad.add(w)
        return [line[spans[w][0] : spans[w][1]] for w in sorted(bad)]

    def decode(self, ids: Iterable[int]) -> str:
        """Join the pieces, ``</w>`` -> space (as HF does); special tokens are dropped, except
        ``<unk>`` which stays visible in place of the unknown character."""
        pieces = [self.vocab.token(int(i)) for i in ids if int(i) >= N_SPECIAL or int(i) == UNK_INDEX]
        return "".join(pieces).replace(END_OF_WORD, " ").strip()


def vocab_settings(directory: str | Path) -> dict[str, Any]:
    """Settings recorded next to a vocabulary (``prepare.json`` wins over ``bpe.json``)."""
    d = Path(directory)
    for name in (PREPARE_INFO_FILE, BPE_INFO_FILE, "sentencepiece.json", "wordpiece.json"):
        p = d / name
        if p.is_file():
            info = read_json(p, DataError)
            if isinstance(info, dict) and info.get("lowercase_and_remove_accent") is not None:
                return info
    return {}


def detokenize(text: str, detokenizer: MosesDetokenizer) -> str:
    """Undo Moses tokenization (or Thai word segmentation) of a space-separated token string;
    Moses joins Chinese and Japanese words itself."""
    if detokenizer.lang == "th":
        return join_thai(text.split())
    return detokenizer.detokenize(text.split())


def __getattr__(name: str) -> Any:  # TextEncoder and encode_text now serve every kind: xlm.text.tokenizer
    if name in ("TextEncoder", "encode_text"):
        from xlm.text import tokenizer

        return getattr(tokenizer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
