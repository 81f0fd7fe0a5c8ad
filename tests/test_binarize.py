"""Binarization: round trip through the readers, counts, bad inputs, and crash safety."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest

from xlm.data import binarize as binarize_mod
from xlm.data.binarize import binarize, binarize_parallel, count_lines, iter_lines
from xlm.data.dataset import MonolingualData, ParallelData
from xlm.errors import DataError
from xlm.text.bpe import BPETokenizer, learn_bpe, write_vocabulary
from xlm.text.vocab import EOS_INDEX, SPECIAL_TOKENS, UNK_INDEX

WORDS = ["the", "cat", "sat", "on", "a", "mat", "le", "chat", "est", "sur", "tapis"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> BPETokenizer:
    """A small BPE that holds every word of WORDS whole (and their letters)."""
    d = tmp_path_factory.mktemp("vocab")
    (d / "text.txt").write_text(" ".join(WORDS) + "\n" + " ".join("".join(WORDS)) + "\n")
    learn_bpe({"en": [d / "text.txt"]}, d, 200)
    tok = BPETokenizer.from_dir(d)
    assert all(tok.tokens(w) == [f"{w}</w>"] for w in WORDS)
    return tok


def _write(path: Path, lines: list[str] | bytes) -> Path:
    data = lines if isinstance(lines, bytes) else "".join(x + "\n" for x in lines).encode("utf-8")
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip_through_reader(tmp_path: Path, tokenizer: BPETokenizer, suffix: str) -> None:
    lines = ["the cat sat on the mat", "le chat est sur le tapis", "", "   ", "the tac", "a"]
    src = _write(tmp_path / f"train.en{suffix}", lines)
    stats = binarize(src, tmp_path / "out" / "train.en", tokenizer, "en", chunk_lines=2)
    assert (stats.n_lines, stats.n_sentences, stats.n_skipped) == (6, 4, 2)
    assert stats.n_unk == 0 and stats.n_tokens == 6 + 6 + 1 + len(tokenizer.encode("tac")) + 1

    data = MonolingualData.open(tmp_path / "out" / "train.en", tokenizer.vocab.hash)
    assert len(data) == 4 and data.lang == "en" and data.tokens.dtype == np.uint16
    kept = [x for x in lines if x.strip()]
    assert [tokenizer.decode(data.sentence(i)) for i in range(4)] == kept
    # the stream is </s> s1 </s> s2 </s> ... and the bounds point inside it
    assert data.stream_length == stats.n_tokens + 5
    assert data.tokens[0] == EOS_INDEX and data.tokens[-1] == EOS_INDEX
    for start, end in data.bounds:
        assert data.tokens[start - 1] == EOS_INDEX and data.tokens[end] == EOS_INDEX
    meta = json.loads((tmp_path / "out" / "train.en.json").read_text())
    assert meta["n_skipped"] == 2 and meta["n_lines"] == 6 and meta["vocab_hash"] == tokenizer.vocab.hash
    assert not [p for p in (tmp_path / "out").iterdir() if "tmp" in p.name]


def test_chunk_size_does_not_change_output(tmp_path: Path, tokenizer: BPETokenizer) -> None:
    src = _write(tmp_path / "t.txt", [" ".join(WORDS[i % 11 : i % 11 + 3]) for i in range(50)])
    binarize(src, tmp_path / "a", tokenizer, "en", chunk_lines=7)
    binarize(src, tmp_path / "b", tokenizer, "en", chunk_lines=1000)
    for ext in (".bin", ".idx.npy"):
        assert Path(f"{tmp_path}/a{ext}").read_bytes() == Path(f"{tmp_path}/b{ext}").read_bytes()


def test_unknown_tokens_counted(tmp_path: Path, tokenizer: BPETokenizer) -> None:
    src = _write(tmp_path / "t.txt", ["the ж cat", "жж the", "the cat"])
    stats = binarize(src, tmp_path / "o", tokenizer, "en")
    assert stats.n_unk == 3
    assert stats.unk_words.most_common() == [("ж", 1), ("жж", 1)]
    assert json.loads(Path(f"{tmp_path}/o.json").read_text())["n_unk"] == 3


def test_normalize_hook(tmp_path: Path, tokenizer: BPETokenizer) -> None:
    src = _write(tmp_path / "t.txt", ["THE CAT", "x"])
    stats = binarize(src, tmp_path / "o", tokenizer, "en", normalize=lambda s: s.lower() if s != "x" else "")
    assert (stats.n_sentences, stats.n_skipped, stats.n_tokens) == (1, 1, 2)


def test_int32_for_large_vocabulary(tmp_path: Path) -> None:
    chars = [chr(0x20000 + i) for i in range(70_000)]  # one-character words need no merges
    write_vocabulary(tmp_path / "v", SPECIAL_TOKENS + [f"{c}</w>" for c in chars], [])
    tok = BPETokenizer.from_dir(tmp_path / "v")
    src = _write(tmp_path / "t.txt", [f"{chars[-1]} {chars[0]}", chars[5]])
    binarize(src, tmp_path / "o", tok, "en")
    data = MonolingualData.open(tmp_path / "o")
    assert data.tokens.dtype == np.int32
    assert data.sentence(0).tolist() == [70_013, 14]


def test_empty_file(tmp_path: Path, tokenizer: BPETokenizer) -> None:
    src = _write(tmp_path / "t.txt", b"")
    stats = binarize(src, tmp_path / "o", tokenizer, "en")
    assert stats.n_sentences == 0
    data = MonolingualData.open(tmp_path / "o")
    assert len(data) == 0 and data.stream_length == 1


def test_count_lines_matches_iteration(tmp_path: Path) -> None:
    for content in (b"", b"a", b"a\n", b"a\nb", b"a\n\nb\n", b"a\rb\n"):
        p = tmp_path / "f.txt"
        p.write_bytes(content)
        assert count_lines(p) == len(list(iter_lines(p))), content


def test_invalid_utf8_names_file_and_line(tmp_path: Path, tokenizer: BPETokenizer) -> None:
    src = _write(tmp_path / "bad.en.gz", b"the cat\nsat\non \xff\xfe mat\n")
    with pytest.raises(DataError, match=r"bad\.en\.gz:3: invalid UTF-8"):
        binarize(src, tmp_path / "o", tokenizer, "en", chunk_lines=1)
    assert list(tmp_path.iterdir()) == [src]  # nothing left behind
    stats = binarize(src, tmp_path / "o", tokenizer, "en", errors="replace")
    assert stats.n_sentences == 3 and stats.n_unk == 2


def test_corrupt_gzip(tmp_path: Path, tokenizer: BPETokenizer) -> None:
    src = tmp_path / "t.gz"
    src.write_bytes(gzip.compress(b"the cat\n" * 100)[:-12])
    with pytest.raises(DataError, match="corrupt or truncated"):
        binarize(src, tmp_path / "o", tokenizer, "en")
    assert list(tmp_path.iterdir()) == [src]


def test_missing_file(tmp_path: Path, tokenizer: BPETokenizer) -> None:
    with pytest.raises(DataError, match="not found"):
        binarize(tmp_path / "nope.txt", tmp_path / "o", tokenizer, "en")


def test_parallel_round_trip_skips_pairs(tmp_path: Path, tokenizer: BPETokenizer) -> None:
    en = _write(tmp_path / "train.en-fr.en", ["the cat", "", "on a mat", "the mat"])
    fr = _write(tmp_path / "train.en-fr.fr.gz", ["le chat", "le tapis", "sur le tapis", "  "])
    out = tmp_path / "out"
    s_en, s_fr = binarize_parallel(en, fr, out / "train.en-fr.en", out / "train.en-fr.fr", tokenizer, "en", "fr")
    assert (s_en.n_sentences, s_en.n_skipped, s_fr.n_sentences, s_fr.n_skipped) == (2, 2, 2, 2)
    data = ParallelData.open(out / "train.en-fr.en", out / "train.en-fr.fr", tokenizer.vocab.hash)
    assert len(data) == 2
    assert tokenizer.decode(data.src.sentence(1)) == "on a mat"
    assert tokenizer.decode(data.tgt.sentence(1)) == "sur le tapis"


def test_parallel_line_count_mismatch_writes_nothing(tmp_path: Path, tokenizer: BPETokenizer) -> None:
    en = _write(tmp_path / "a.en", ["the cat", "the mat", "a"])
    fr = _write(tmp_path / "a.fr", ["le chat", "le tapis"])
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"a\.en has 3 lines but .*a\.fr has 2"):
        binarize_parallel(en, fr, out / "x.en", out / "x.fr", tokenizer, "en", "fr")
    assert not out.exists() or not list(out.iterdir())


def test_vocab_hash_mismatch_is_a_clear_error(tmp_path: Path, tokenizer: BPETokenizer) -> None:
    binarize(_write(tmp_path / "t.txt", ["the cat"]), tmp_path / "o", tokenizer, "en")
    with pytest.raises(DataError, match="binarized with vocabulary .* re-run `xlm prepare`"):
        MonolingualData.open(tmp_path / "o", vocab_hash="0123456789abcdef")


def test_interrupted_write_leaves_nothing_readable(tmp_path: Path, tokenizer: BPETokenizer, monkeypatch) -> None:
    src = _write(tmp_path / "t.txt", ["the cat"] * 50)
    calls = {"n": 0}
    real_add = binarize_mod._Writer.add

    def failing_add(self, sentences):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of a file
        real_add(self, sentences)

    monkeypatch.setattr(binarize_mod._Writer, "add", failing_add)
    with pytest.raises(KeyboardInterrupt):
        binarize(src, tmp_path / "o", tokenizer, "en", chunk_lines=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]
    with pytest.raises(DataError, match="not found"):
        MonolingualData.open(tmp_path / "o")


def test_interrupted_publish_never_pairs_old_metadata_with_new_data(
    tmp_path: Path, tokenizer: BPETokenizer, monkeypatch
) -> None:
    binarize(_write(tmp_path / "old.txt", ["the cat"] * 5), tmp_path / "o", tokenizer, "en")
    MonolingualData.open(tmp_path / "o")  # a complete older output
    real_replace = os.replace

    def failing_replace(a, b):
        if str(b).endswith(".idx.npy"):
            raise OSError("disk full")
        real_replace(a, b)

    monkeypatch.setattr(os, "replace", failing_replace)  # as xlm.fileio.move_into_place calls it
    with pytest.raises(OSError, match="disk full"):
        binarize(_write(tmp_path / "new.txt", ["a mat"] * 9), tmp_path / "o", tokenizer, "en")
    with pytest.raises(DataError):  # new .bin, old .idx.npy: must not be accepted
        MonolingualData.open(tmp_path / "o")
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name]


def test_unk_words_ranked(tmp_path: Path, tokenizer: BPETokenizer) -> None:
    src = _write(tmp_path / "t.txt", ["ж the ж", "ж", "йй"])
    stats = binarize(src, tmp_path / "o", tokenizer, "en")
    assert stats.unk_words.most_common(1) == [("ж", 3)]  # every occurrence counts
    assert stats.n_unk == 5
    assert UNK_INDEX in MonolingualData.open(tmp_path / "o").sentence(2).tolist()
