"""Readers of sentence- and pair-classification data (plain or ``.gz``), and their encoding
into model inputs.

Formats (``--format``):

* ``tsv``         ``label<TAB>text`` or ``label<TAB>premise<TAB>hypothesis``; the first line
                  fixes the number of columns, blank lines are skipped;
* ``xnli``        the official XNLI 1.0 dev/test TSV: a header naming ``language``,
                  ``gold_label``, ``sentence1`` and ``sentence2``; rows of every language, the
                  ones of the requested language are kept;
* ``mnli-jsonl``  MultiNLI's ``.jsonl``: one JSON object per line with ``gold_label``,
                  ``sentence1``, ``sentence2``; examples labelled ``-`` (no consensus) are
                  skipped and counted;
* ``mnli-tsv``    MultiNLI's ``.txt`` / GLUE's ``.tsv``: a header naming ``gold_label``,
                  ``sentence1``, ``sentence2``; ``-`` labels skipped and counted.

A pair is fed to the model as ``</s> a </s> b </s>`` with the language id of the example,
a single text as ``</s> a </s>``. Every malformed line raises :class:`DataError` naming the
file and line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from xlm.errors import DataError
from xlm.text.lines import numbered_lines
from xlm.text.vocab import XLM_SPECIALS, Specials, Vocabulary

Format = Literal["tsv", "xnli", "mnli-jsonl", "mnli-tsv"]
FORMATS: tuple[str, ...] = ("tsv", "xnli", "mnli-jsonl", "mnli-tsv")
NO_LABEL = "-"  # MultiNLI / XNLI: annotators did not agree


@dataclass(frozen=True)
class Example:
    label: str
    text: str
    text_b: str | None
    source: str  # file the example was read from
    line: int  # 1-based line number in that file

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


@dataclass
class ExampleSet:
    """Examples of one language read from one file."""

    lang: str
    path: str
    examples: list[Example]
    skipped: int = 0  # examples without a gold label ('-')

    def __len__(self) -> int:
        return len(self.examples)


def _check(value: str, what: str, path: str | Path, n: int) -> str:
    value = value.strip()
    if not value:
        raise DataError(f"{path}:{n}: empty {what}")
    return value


def read_tsv(path: str | Path, lang: str) -> ExampleSet:
    """``label<TAB>text`` or ``label<TAB>premise<TAB>hypothesis`` (one kind per file)."""
    examples: list[Example] = []
    n_cols = 0
    for n, line in numbered_lines(path):
        if not line.strip():
            continue
        cols = line.split("\t")
        if not n_cols:
            if len(cols) not in (2, 3):
                raise DataError(
                    f"{path}:{n}: expected 'label<TAB>text' or 'label<TAB>premise<TAB>hypothesis', "
                    f"got {len(cols)} column(s)"
                )
            n_cols = len(cols)
        elif len(cols) != n_cols:
            raise DataError(f"{path}:{n}: expected {n_cols} tab-separated columns like the first line, got {len(cols)}")
        label = _check(cols[0], "label", path, n)
        text = _check(cols[1], "text", path, n)
        text_b = _check(cols[2], "hypothesis", path, n) if n_cols == 3 else None
        examples.append(Example(label, text, text_b, str(path), n))
    return ExampleSet(lang, str(path), examples)


def _header_index(header: list[str], wanted: Sequence[str], path: str | Path) -> dict[str, int]:
    index = {name: i for i, name in enumerate(header)}
    missing = [w for w in wanted if w not in index]
    if missing:
        raise DataError(f"{path}:1: header lacks column(s) {missing} (found {header})")
    return {w: index[w] for w in wanted}


def read_header_tsv(path: str | Path, lang: str, language_column: bool) -> ExampleSet:
    """XNLI (``language_column=True``: keep the rows of ``lang``) or MultiNLI TSV files."""
    wanted = ["gold_label", "sentence1", "sentence2"] + (["language"] if language_column else [])
    examples: list[Example] = []
    skipped = 0
    cols: dict[str, int] = {}
    width = 0
    seen_langs: set[str] = set()
    for n, line in numbered_lines(path):
        row = line.split("\t")
        if n == 1:
            cols = _header_index([c.strip() for c in row], wanted, path)
            width = len(row)
            continue
        if not line.strip():
            continue
        if len(row) != width:
            raise DataError(f"{path}:{n}: expected {width} tab-separated columns like the header, got {len(row)}")
        if language_column:
            row_lang = row[cols["language"]].strip()
            seen_langs.add(row_lang)
            if row_lang != lang:
                continue
        label = _check(row[cols["gold_label"]], "gold_label", path, n)
        if label == NO_LABEL:
            skipped += 1
            continue
        a = _check(row[cols["sentence1"]], "sentence1", path, n)
        b = _check(row[cols["sentence2"]], "sentence2", path, n)
        examples.append(Example(label, a, b, str(path), n))
    if not width:
        raise DataError(f"{path}: empty file (expected a header line)")
    if language_column and not examples and not skipped:
        raise DataError(f"{path}: no rows of language {lang!r} (languages in the file: {sorted(seen_langs)})")
    return ExampleSet(lang, str(path), examples, skipped)


def read_mnli_jsonl(path: str | Path, lang: str) -> ExampleSet:
    examples: list[Example] = []
    skipped = 0
    for n, line in numbered_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not valid JSON: {e.msg}") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{n}: expected a JSON object")
        missing = [k for k in ("gold_label", "sentence1", "sentence2") if not isinstance(obj.get(k), str)]
        if missing:
            raise DataError(f"{path}:{n}: missing string field(s) {missing}")
        label = _check(obj["gold_label"], "gold_label", path, n)
        if label == NO_LABEL:
            skipped += 1
            continue
        a = _check(obj["sentence1"], "sentence1", path, n)
        b = _check(obj["sentence2"], "sentence2", path, n)
        examples.append(Example(label, a, b, str(path), n))
    return ExampleSet(lang, str(path), examples, skipped)


def read_examples(path: str | Path, lang: str, fmt: str = "tsv") -> ExampleSet:
    """Read the examples of language ``lang`` from ``path`` in format ``fmt``."""
    if fmt == "tsv":
        return read_tsv(path, lang)
    if fmt == "xnli":
        return read_header_tsv(path, lang, language_column=True)
    if fmt == "mnli-tsv":
        return read_header_tsv(path, lang, language_column=False)
    if fmt == "mnli-jsonl":
        return read_mnli_jsonl(path, lang)
    raise DataError(f"unknown classification data format {fmt!r} (choose from {', '.join(FORMATS)})")


def label_mapping(sets: Sequence[ExampleSet]) -> list[str]:
    """The labels of the training data, sorted (their index is the class id)."""
    labels = sorted({e.label for s in sets for e in s.examples})
    if len(labels) < 2:
        where = ", ".join(s.path for s in sets)
        raise DataError(f"{where}: training data needs at least two distinct labels, found {labels}")
    return labels


# --------------------------------------------------------------------------- encoding


def pretokenized_encoder(vocab: Vocabulary) -> Callable[[list[str]], list[list[int]]]:
    """Text that is already normalized and BPE-split (``xlm encode`` output): tokens are
    looked up in the vocabulary, unknown ones become ``<unk>``."""

    def encode(lines: list[str]) -> list[list[int]]:
        return [[vocab[t] for t in line.split()] for line in lines]

    return encode


def build_row(a: list[int], b: list[int] | None, max_len: int, specials: Specials = XLM_SPECIALS) -> np.ndarray:
    """``</s> a </s>`` or ``</s> a </s> b </s>`` within ``max_len`` tokens (the longer side
    is truncated first). With another vocabulary: ``start a end (end) b end``, the pair
    framing of its model (``<s> a </s></s> b </s>`` for SentencePiece as XLM-R,
    ``[CLS] a [SEP] b [SEP]`` for WordPiece as BERT)."""
    start, end = specials.start, specials.end
    if b is None:
        a = a[: max(1, max_len - 2)]
        return np.asarray([start, *a, end], dtype=np.int64)
    middle = [end, end] if specials.kind == "sentencepiece" else [end]
    budget = max(2, max_len - 2 - len(middle))
    la, lb = len(a), len(b)
    while la + lb > budget:
        if la >= lb:
            la -= 1
        else:
            lb -= 1
    return np.asarray([start, *a[:la], *middle, *b[:lb], end], dtype=np.int64)


@dataclass
class EncodedSet:
    """One language's examples as token rows, class ids and a language id."""

    lang: str
    path: str
    rows: list[np.ndarray]
    labels: np.ndarray  # (N,) int64 class ids
    lang_id: int
    skipped: int = 0
    lengths: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.lengths = np.asarray([len(r) for r in self.rows], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)


def encode_set(
    data: ExampleSet,
    encode: Callable[[list[str]], list[list[int]]],
    label2id: dict[str, int],
    lang_id: int,
    max_len: int,
    specials: Specials = XLM_SPECIALS,
) -> EncodedSet:
    """Encode texts with ``encode`` (lines -> id lists); a label outside ``label2id`` (the
    training labels) is a DataError naming the file and line."""
    for e in data.examples:
        if e.label not in label2id:
            raise DataError(
                f"{e.where}: label {e.label!r} was not seen in the training data (labels: {sorted(label2id)})"
            )
    ids_a = encode([e.text for e in data.examples])
    pairs = [e for e in data.examples if e.text_b is not None]
    ids_b = iter(encode([e.text_b for e in pairs if e.text_b is not None]))
    rows = [
        build_row(a, next(ids_b) if e.text_b is not None else None, max_len, specials)
        for e, a in zip(data.examples, ids_a)
    ]
    labels = np.asarray([label2id[e.label] for e in data.examples], dtype=np.int64)
    return EncodedSet(data.lang, data.path, rows, labels, lang_id, data.skipped)
