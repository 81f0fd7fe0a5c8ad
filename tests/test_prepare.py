"""``xlm prepare`` / ``xlm encode``: discovery, end-to-end runs, vocabulary reuse, bad inputs."""

from __future__ import annotations

import gzip
import io
import json
import os
import sys
from pathlib import Path

import pytest

from xlm.cli import main
from xlm.data.dataset import PREPARE_FILE, PreparedData
from xlm.data.prepare import LineCache, PrepareOptions, discover, language_table, prepare, same_settings
from xlm.errors import DataError
from xlm.text.bpe import BPETokenizer, TextEncoder

# the shipped corpus (XLM_TEST_CORPUS points elsewhere, e.g. at a fresh build)
CORPUS = Path(os.environ.get("XLM_TEST_CORPUS", Path(__file__).resolve().parents[1] / "data" / "corpus"))

EN = ["The cat sat on the mat.", "Mr. Smith's dog barked!", "It rains in London, doesn't it?", "A small test."]
FR = ["Le chat est sur le tapis.", "Le chien de M. Smith aboie !", "Il pleut à Paris, n'est-ce pas ?", "Un petit test."]
DE = ["Die Katze sitzt auf der Matte.", "Es regnet in Berlin.", "Ein kleiner Test.", "Über alles."]


def _write(path: Path, lines: list[str] | bytes) -> None:
    data = lines if isinstance(lines, bytes) else "".join(x + "\n" for x in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


@pytest.fixture()
def raw(tmp_path: Path) -> Path:
    d = tmp_path / "raw"
    d.mkdir()
    _write(d / "train.en.gz", EN * 50)
    _write(d / "train.fr.gz", FR * 20 + [""])
    _write(d / "train.de", DE * 5)
    _write(d / "valid.en", EN)
    _write(d / "test.fr.gz", FR)
    _write(d / "train.en-fr.en.gz", EN * 3)
    _write(d / "train.en-fr.fr.gz", FR * 2 + ["", *FR[1:]])
    _write(d / "valid.de-en.de", DE)  # spelled unsorted on purpose
    _write(d / "valid.de-en.en", EN)
    (d / "README").write_text("not a corpus file\n")
    return d


def test_discover(raw: Path) -> None:
    names = sorted(f.name for f in discover(raw))
    assert names == sorted(
        ["train.en", "train.fr", "train.de", "valid.en", "test.fr", "train.en-fr.en", "train.en-fr.fr",
         "valid.de-en.de", "valid.de-en.en"]
    )  # fmt: skip
    assert sorted(f.name for f in discover(raw, ["en", "fr"])) == sorted(
        ["train.en", "train.fr", "valid.en", "test.fr", "train.en-fr.en", "train.en-fr.fr"]
    )
    with pytest.raises(DataError, match="no files for language.*ru"):
        discover(raw, ["en", "ru"])


def test_discover_errors(tmp_path: Path) -> None:
    _write(tmp_path / "train.en", EN)
    _write(tmp_path / "train.en.gz", EN)
    with pytest.raises(DataError, match="same split"):
        discover(tmp_path)
    (tmp_path / "train.en.gz").unlink()
    _write(tmp_path / "train.en-fr.en", EN)
    with pytest.raises(DataError, match="only one side"):
        discover(tmp_path)
    with pytest.raises(DataError, match="not found"):
        discover(tmp_path / "nope")


@pytest.mark.slow  # two normalization processes
def test_cli_end_to_end(raw: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    rc = main(["prepare", str(raw), str(out), "--vocab-size", "300", "--workers", "2"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split() == ["lang", "files", "sentences", "tokens", "unk%", "skipped"]
    assert "vocabulary:" in printed

    info = json.loads((out / PREPARE_FILE).read_text())
    assert info["languages"] == ["de", "en", "fr"] and info["lowercase_and_remove_accent"] is False
    assert info["files"]["train.fr"]["n_skipped"] == 1 and info["files"]["train.fr"]["n_sentences"] == 80
    assert info["files"]["train.en-fr.en"]["n_skipped"] == 1 and info["files"]["train.en-fr.fr"]["n_skipped"] == 1
    assert not (out / "tmp").exists()

    data = PreparedData.open(out)
    assert data.languages == ["de", "en", "fr"] and data.vocab.hash == info["vocab_hash"]
    assert len(data.mono("train", "en")) == 200 and len(data.mono("test", "fr")) == 4
    para = data.para("train", "fr", "en")
    assert len(para) == 11
    enc = TextEncoder(out, "fr")
    assert para.src.sentence(1).tolist() == enc.encode(FR[1])
    assert enc.decode(para.src.sentence(1)) == FR[1]
    assert len(data.para("valid", "en", "de")) == 4  # stored as valid.de-en.*

    # same normalization as `xlm encode`
    sys_stdin = sys.stdin
    try:
        sys.stdin = io.TextIOWrapper(io.BytesIO((EN[1] + "\n" + EN[0] + "\n").encode()), encoding="utf-8")
        assert main(["encode", "--vocab", str(out), "--lang", "en", "--ids"]) == 0
    finally:
        sys.stdin = sys_stdin
    lines = capsys.readouterr().out.splitlines()
    assert [list(map(int, x.split())) for x in lines] == [data.mono("train", "en").sentence(i).tolist() for i in (1, 0)]


def test_encode_tokens_and_bad_input(raw: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "out"
    prepare(raw, out, PrepareOptions(vocab_size=300, workers=1, langs=["en", "fr"], lowercase=True), log=lambda m: None)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("L'école est là.\n\n".encode())))
    assert main(["encode", "--vocab", str(out), "--lang", "fr"]) == 0
    tokens = capsys.readouterr().out.split("\n")
    assert tokens[1] == "" and "".join(tokens[0].split()).replace("</w>", " ").split() == [
        "l'",
        "ecole",
        "est",
        "la",
        ".",
    ]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"ok\n\xff\n")))
    assert main(["encode", "--vocab", str(out), "--lang", "fr"]) == 1
    assert "<stdin>:2: invalid UTF-8" in capsys.readouterr().err


@pytest.mark.slow
def test_reuse_vocabulary(raw: Path, tmp_path: Path) -> None:
    first = prepare(raw, tmp_path / "a", PrepareOptions(vocab_size=200, workers=1), log=lambda m: None)
    second = prepare(raw, tmp_path / "b", PrepareOptions(vocab_dir=tmp_path / "a", workers=1), log=lambda m: None)
    assert second.info["vocab_hash"] == first.info["vocab_hash"]
    assert (tmp_path / "b" / "train.en.bin").read_bytes() == (tmp_path / "a" / "train.en.bin").read_bytes()
    with pytest.raises(DataError, match="lowercase_and_remove_accent=False"):
        prepare(raw, tmp_path / "c", PrepareOptions(vocab_dir=tmp_path / "a", lowercase=True), log=lambda m: None)
    with pytest.raises(DataError, match="--vocab-size"):
        prepare(raw, tmp_path / "d", PrepareOptions(), log=lambda m: None)


def test_line_cache_changes_nothing(raw: Path, tmp_path: Path) -> None:
    a = prepare(raw, tmp_path / "a", PrepareOptions(vocab_size=200, workers=1, chunk_lines=3), log=lambda m: None)
    b = prepare(raw, tmp_path / "b", PrepareOptions(vocab_size=200, workers=1, cache_mb=0), log=lambda m: None)
    assert a.info["vocab_hash"] == b.info["vocab_hash"]
    for name in a.info["files"]:
        for ext in (".bin", ".idx.npy", ".json"):  # .json records the raw file, not a temporary copy
            assert (tmp_path / "a" / f"{name}{ext}").read_bytes() == (tmp_path / "b" / f"{name}{ext}").read_bytes()


def test_line_cache_stays_within_budget() -> None:
    cache = LineCache(max_bytes=3 * (LineCache.ENTRY_OVERHEAD + 2))
    for i in range(10):
        cache.put("en", bytes([65 + i]), "x")
    assert cache.n_bytes <= cache.max_bytes
    assert cache.get("en", b"A") is None and cache.get("en", b"J") == "x" and cache.get("fr", b"J") is None
    assert cache.hits == 1


def test_max_lines_and_settings(raw: Path, tmp_path: Path) -> None:
    opts = PrepareOptions(vocab_size=200, workers=1, max_lines=10, langs=["en"])
    res = prepare(raw, tmp_path / "o", opts, log=lambda m: None)
    assert res.info["files"]["train.en"]["n_lines"] == 10
    assert same_settings(tmp_path / "o", opts.settings(["en"]))
    assert not same_settings(tmp_path / "o", {**opts.settings(["en"]), "max_lines": 11})
    _write(raw / "valid.en", EN[:2])  # the corpus changed: prepare again
    assert not same_settings(tmp_path / "o", opts.settings(["en"]))
    assert "en" in language_table(res.info)


def test_unaligned_parallel_fails_before_writing(raw: Path, tmp_path: Path) -> None:
    _write(raw / "train.en-fr.fr.gz", FR)
    out = tmp_path / "out"
    rc = main(["prepare", str(raw), str(out), "--vocab-size", "100"])
    assert rc == 1
    assert not out.exists()


@pytest.mark.slow  # two normalization processes
def test_invalid_utf8_reports_file_and_line(raw: Path, tmp_path: Path, capsys) -> None:
    _write(raw / "valid.en", b"fine\nstill fine\nbad \xc3\x28 byte\n")
    rc = main(["prepare", str(raw), str(tmp_path / "out"), "--vocab-size", "100", "--workers", "2"])
    assert rc == 1
    assert "valid.en:3: invalid UTF-8" in capsys.readouterr().err
    assert not (tmp_path / "out" / PREPARE_FILE).exists()
    assert not (tmp_path / "out" / "tmp").exists()  # the normalized text is removed on failure too


def test_rerun_needs_overwrite_and_a_failed_rerun_keeps_the_old_folder(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare(raw, out, PrepareOptions(vocab_size=200, workers=1, langs=["en", "fr"]), log=lambda m: None)
    assert (out / "train.fr.json").is_file()
    with pytest.raises(DataError, match=r"already holds prepared data made otherwise \(languages: \['en', 'fr'\] -> "):
        prepare(raw, out, PrepareOptions(vocab_size=200, workers=1, langs=["en"]), log=lambda m: None)
    assert (out / "train.fr.json").is_file()  # refused: nothing changed
    prepare(raw, out, PrepareOptions(vocab_size=200, workers=1, langs=["en"], overwrite=True), log=lambda m: None)
    assert not (out / "train.fr.json").exists()  # files of the previous run do not linger
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    _write(raw / "valid.en", b"\xff\n")
    with pytest.raises(DataError):
        prepare(raw, out, PrepareOptions(vocab_size=200, workers=1, langs=["en"], overwrite=True), log=lambda m: None)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # a failed re-run changes nothing
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # and leaves no temporary folder
    PreparedData.open(out)


@pytest.mark.slow
def test_shipped_corpus_subset(tmp_path: Path) -> None:
    if not (CORPUS / "train.en.gz").is_file():
        pytest.skip(f"shipped corpus not built yet ({CORPUS})")
    out = tmp_path / "out"
    res = prepare(CORPUS, out, PrepareOptions(vocab_size=1000, max_lines=25, workers=2), log=lambda m: None)
    langs = res.info["languages"]
    assert {"en", "fr", "de", "es", "ru", "hi"} <= set(langs)
    data = PreparedData.open(out)
    bpe = BPETokenizer.from_dir(out)
    for lang in ("en", "fr", "de", "es", "ru", "hi"):
        mono = data.mono("train", lang)
        assert 20 <= len(mono) <= 25
        assert bpe.decode(mono.sentence(0))
    assert res.info["files"]["train.en"]["n_unk"] / res.info["files"]["train.en"]["n_tokens"] < 0.03
