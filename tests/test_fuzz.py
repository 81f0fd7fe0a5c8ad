"""Bad input, fuzzed: normalization, BPE and binarization fed random Unicode — control
characters, combining marks, right-to-left text, emoji, invalid UTF-8 (lone surrogates),
long lines, empty files, Windows line endings, byte-order marks — never crash, never lose
or add a line (lines in = sentences written + lines skipped), keep parallel files aligned,
and decode(encode(x)) gives back the normalized x when its characters are in the vocabulary.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from xlm.data.batching import token_budget_batches
from xlm.data.binarize import binarize, binarize_parallel
from xlm.data.dataset import MonolingualData
from xlm.errors import DataError
from xlm.text.bpe import BPETokenizer, learn_bpe
from xlm.text.normalize import Normalizer
from xlm.text.vocab import END_OF_WORD, UNK_INDEX

FUZZ = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

# Letters and marks of many scripts (Latin with accents, Greek, Cyrillic, Hebrew and Arabic
# (right-to-left), Devanagari, CJK, emoji with a skin-tone modifier and a ZWJ sequence part),
# digits and ASCII punctuation: the alphabet the test vocabulary is learned on.
ALPHABET = list(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    "àéèêëîïôöûüçñßÉÀ" "αβγδεζ" "жзийклЖЗ" "שלוםאב" "مرحباك" "नमस्ते" "中文字日本"
    "😀🎉👍🏽" ".,!?;:'\"()-/%&@#*+=<>[]{}_"
)  # fmt: skip
COMBINING = ["\u0301", "\u0308", "\u0327", "\u064e"]  # acute, diaeresis, cedilla, Arabic fatha
HOSTILE = [
    "\x00", "\x07", "\x1b", "\x7f", "\x85", "\t", "\r", "\x0b", "\x0c",  # controls (no \n: it ends a line)
    "\u200b", "\u200d", "\u200e", "\u200f", "\u202e", "\u2066", "\ufeff",  # zero-width, bidi, BOM
    "\u2028", "\u2029", "\u3000", "\u00a0", "\ue000", "\U000e0001", "\ufffd", "\U0010ffff",  # separators, private, tags
    "，", "。", "“", "”", "…", "％", "１",  # punctuation that normalization rewrites
]  # fmt: skip

unicode_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(ALPHABET + [" ", " ", " "]),
        st.sampled_from(COMBINING + HOSTILE),
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"),  # anything else
    ),
    max_size=60,
)
INVALID_UTF8 = [b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xff", b"\xc3", b"\xe2\x82", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf"]


@st.composite
def raw_line(draw) -> bytes:
    """One line of a text file (without its \\n): valid UTF-8, sometimes with invalid bytes
    spliced in, sometimes with a Windows \\r\\n ending."""
    data = draw(unicode_text).encode("utf-8")
    if draw(st.integers(0, 9)) == 0:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from(INVALID_UTF8)) + data[at:]
    if draw(st.booleans()):
        data += b"\r"
    return data


@st.composite
def raw_file(draw, lines=None) -> tuple[list[bytes], bytes]:
    """(lines, file content): maybe empty, maybe a BOM, maybe no newline after the last line."""
    lines = draw(st.lists(raw_line(), max_size=12)) if lines is None else lines
    content = b"".join(line + b"\n" for line in lines)
    if lines and draw(st.booleans()) and lines[-1]:
        content = content[:-1]  # the last line without its newline
    if draw(st.booleans()):
        content = "\ufeff".encode("utf-8") + content
        lines = ["\ufeff".encode("utf-8") + lines[0], *lines[1:]] if lines else ["\ufeff".encode("utf-8")]
    return lines, content


@pytest.fixture(scope="module")
def normalizer() -> Normalizer:
    return Normalizer("en")


@pytest.fixture(scope="module")
def bpe(tmp_path_factory, normalizer) -> BPETokenizer:
    """A BPE that knows every character of ALPHABET both inside and at the end of a word."""
    d = tmp_path_factory.mktemp("fuzz_bpe")
    lines = [" ".join(ALPHABET), " ".join(c + "a" for c in ALPHABET), "the cat sat on the mat"]
    text = "".join(normalizer(x) + "\n" for x in lines * 5)
    (d / "text.en").write_text(text, encoding="utf-8")
    learn_bpe({"en": [d / "text.en"]}, d / "vocab", 14 + 2 * len(ALPHABET) + 40)
    return BPETokenizer.from_dir(d / "vocab")


@pytest.fixture(scope="module")
def known_chars(bpe) -> set[str]:
    """Characters that encode without <unk> wherever they sit in a word."""
    tokens = set(bpe.vocab.token_to_id)
    return {t for t in tokens if len(t) == 1 and t + END_OF_WORD in tokens}


def _decode_lines(lines: list[bytes]) -> list[str]:
    return [line.decode("utf-8", errors="replace") for line in lines]


# ----------------------------------------------------------------------------- normalization


@FUZZ
@given(text=unicode_text)
def test_normalization_never_crashes_and_yields_one_clean_line(normalizer, text):
    out = normalizer(text)
    assert isinstance(out, str)
    assert "\n" not in out and "\r" not in out  # one line in, one line out
    assert out == out.strip() and "  " not in out  # tokens joined by single spaces
    assert not any(unicodedata.category(c).startswith("C") for c in out)  # no control/format/surrogate chars
    assert normalizer(text + "\r") == out  # Windows line endings make no difference


def test_very_long_line_is_normalized_and_encoded(normalizer, bpe):
    line = " ".join(["a", "ba", "c1", "שלום", "😀", "l'été", "x,y"] * 3000)  # ~60k characters, one line
    out = normalizer(line)
    ids = bpe.encode(out)
    assert len(out.split()) >= 21000 and len(ids) >= len(out.split())


# ----------------------------------------------------------------------------- BPE


@FUZZ
@given(words=st.lists(st.text(alphabet=st.sampled_from(ALPHABET + COMBINING), min_size=1, max_size=8), max_size=12))
def test_bpe_decode_inverts_encode_on_known_characters(normalizer, bpe, known_chars, words):
    text = normalizer(" ".join(words))
    assume(set(text) - {" "} <= known_chars)
    ids = bpe.encode(text)
    assert UNK_INDEX not in ids
    assert bpe.decode(ids) == text
    assert bpe.encode_batch([text, text]) == [ids, ids]


@FUZZ
@given(text=unicode_text)
def test_bpe_encodes_anything_and_counts_words(normalizer, bpe, text):
    norm = normalizer(text)
    ids = bpe.encode(norm)
    assert all(0 <= i < len(bpe.vocab) for i in ids)
    assert bool(ids) == bool(norm)  # a non-empty line never becomes an empty sentence
    assert len(ids) >= len(norm.split())  # every word gives at least one piece (maybe <unk>)


# ----------------------------------------------------------------------------- binarization


def _expected(bpe, normalize, text_lines: list[str]) -> tuple[list[list[int]], int]:
    normalized = [normalize(x) for x in text_lines]
    kept = [x for x in normalized if x.strip()]
    return [bpe.encode(x) for x in kept], len(text_lines) - len(kept)


def _sentences(prefix: Path, bpe) -> list[list[int]]:
    data = MonolingualData.open(prefix, bpe.vocab.hash)
    return [data.sentence(i).tolist() for i in range(len(data))]


def _first_invalid(lines: list[bytes]) -> int | None:
    for n, line in enumerate(lines, 1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return n
    return None


@FUZZ
@given(f=raw_file(), chunk=st.integers(1, 5), normalize_it=st.booleans())
def test_binarize_keeps_every_line_accounted_for(tmp_path_factory, normalizer, bpe, f, chunk, normalize_it):
    lines, content = f
    d = tmp_path_factory.mktemp("bin")
    src = d / "raw.en"
    src.write_bytes(content)
    normalize = normalizer if normalize_it else (lambda s: s)
    bad = _first_invalid(lines)
    if bad is not None:  # strict (the default): a clear error naming file and line, nothing written
        with pytest.raises(DataError, match=f"{src}:{bad}: invalid UTF-8"):
            binarize(src, d / "strict", bpe, "en", normalize=normalize if normalize_it else None, chunk_lines=chunk)
        assert not list(d.glob("strict*")) and not list(d.glob(".strict*"))
    stats = binarize(
        src, d / "out", bpe, "en", normalize=normalize if normalize_it else None, errors="replace", chunk_lines=chunk
    )
    want, skipped = _expected(bpe, normalize, _decode_lines(lines))
    assert stats.n_lines == len(lines)
    assert (stats.n_sentences, stats.n_skipped) == (len(want), skipped)
    assert stats.n_sentences + stats.n_skipped == stats.n_lines  # no line lost or added
    meta = json.loads((d / "out.json").read_text(encoding="utf-8"))
    assert meta["n_lines"] == meta["n_sentences"] + meta["n_skipped"] == len(lines)
    assert _sentences(d / "out", bpe) == want
    assert meta["n_tokens"] == sum(len(s) for s in want)


@FUZZ
@given(
    pairs=st.lists(st.tuples(raw_line(), raw_line()), max_size=10),
    chunk=st.integers(1, 4),
)
def test_binarize_parallel_keeps_alignment(tmp_path_factory, normalizer, bpe, pairs, chunk):
    d = tmp_path_factory.mktemp("par")
    # \r inside a line is data, not a line break: only \n ends a line
    src_lines, tgt_lines = [p[0] for p in pairs], [p[1] for p in pairs]
    (d / "raw.en").write_bytes(b"".join(x + b"\r\n" for x in src_lines))
    (d / "raw.fr").write_bytes(b"".join(x + b"\n" for x in tgt_lines))
    src_stats, tgt_stats = binarize_parallel(
        d / "raw.en", d / "raw.fr", d / "t.en-fr.en", d / "t.en-fr.fr", bpe, "en", "fr",
        normalize_src=normalizer, normalize_tgt=normalizer, errors="replace", chunk_lines=chunk,
    )  # fmt: skip
    src_norm = [normalizer(x) for x in _decode_lines(src_lines)]
    tgt_norm = [normalizer(x) for x in _decode_lines(tgt_lines)]
    kept = [(a, b) for a, b in zip(src_norm, tgt_norm) if a.strip() and b.strip()]
    for stats in (src_stats, tgt_stats):
        assert stats.n_lines == len(pairs) == stats.n_sentences + stats.n_skipped
        assert stats.n_sentences == len(kept)
    assert _sentences(d / "t.en-fr.en", bpe) == [bpe.encode(a) for a, _ in kept]
    assert _sentences(d / "t.en-fr.fr", bpe) == [bpe.encode(b) for _, b in kept]


def test_parallel_files_with_different_line_counts_are_refused(tmp_path, bpe):
    (tmp_path / "a").write_bytes(b"one\r\ntwo\r\n")
    (tmp_path / "b").write_bytes(b"one\rtwo\n")  # a lone \r is not a line break: 1 line
    with pytest.raises(DataError, match="not aligned"):
        binarize_parallel(tmp_path / "a", tmp_path / "b", tmp_path / "x.en", tmp_path / "x.fr", bpe, "en", "fr")
    assert not list(tmp_path.glob("x.*"))


@pytest.mark.parametrize("content", [b"", b"\n", b"\xef\xbb\xbf", b"\r\n\r\n", b"\xef\xbb\xbf\n \n\t\n"])
def test_files_without_any_sentence(tmp_path, normalizer, bpe, content):
    src = tmp_path / "raw.en"
    src.write_bytes(content)
    stats = binarize(src, tmp_path / "out", bpe, "en", normalize=normalizer)
    assert stats.n_sentences == 0 and stats.n_skipped == stats.n_lines == content.count(b"\n") + (
        bool(content) and not content.endswith(b"\n")
    )


# ----------------------------------------------------------------------------- batching


@FUZZ
@given(
    lengths=st.lists(st.integers(1, 600), min_size=1, max_size=80),
    max_tokens=st.integers(1, 2000),
    max_rows=st.integers(0, 8),
    seed=st.integers(0, 2**16),
)
def test_token_budget_batches_split_never_drop(lengths, max_tokens, max_rows, seed):
    lengths = np.asarray(lengths)
    order = np.random.default_rng(seed).permutation(len(lengths))
    batches = token_budget_batches(lengths, order, max_tokens, max_rows)
    assert np.array_equal(np.concatenate(batches), order)  # every sentence once, in order
    for b in batches:
        if len(b) > 1:  # only a single over-long sentence may exceed the budget, alone
            assert len(b) * lengths[b].max() <= max_tokens
            assert not max_rows or len(b) <= max_rows
