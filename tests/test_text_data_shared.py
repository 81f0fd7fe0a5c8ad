"""The pieces the text and data layers share: one ``vocab.json`` writer for every kind of
vocabulary, one JSON reader with one-line errors, the atomic-file steps the binarizer uses,
and ``PrepareOptions`` as a typed, validated setting whose recorded settings did not change."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from xlm import fileio
from xlm.data.prepare import PrepareOptions
from xlm.errors import DataError
from xlm.text.bpe import write_vocabulary
from xlm.text.vocab import SPECIAL_TOKENS, VOCAB_FILE, Vocabulary, copy_vocabulary, vocabulary_files
from xlm.text.wordpiece import write_wordpiece


def test_vocab_json_keeps_id_order_and_unicode_as_it_was_written_before(tmp_path: Path) -> None:
    bpe = [*SPECIAL_TOKENS, "é</w>", "ж", "a</w>"]
    wordpiece = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "é", "##ж"]
    write_vocabulary(tmp_path / "bpe", bpe, [])
    write_wordpiece(tmp_path / "wp", wordpiece)
    for d, tokens in ((tmp_path / "bpe", bpe), (tmp_path / "wp", wordpiece)):
        text = (d / VOCAB_FILE).read_text(encoding="utf-8")
        assert text == json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False, indent=0) + "\n"
        assert Vocabulary.from_dir(d).id_to_token == tokens
    assert '"é</w>": 14' in (tmp_path / "bpe" / VOCAB_FILE).read_text(encoding="utf-8")


def test_a_vocabulary_is_copied_with_the_files_of_its_kind(tmp_path: Path) -> None:
    write_wordpiece(tmp_path / "wp", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"], {"lowercase": False})
    (tmp_path / "out").mkdir()
    copy_vocabulary(tmp_path / "wp", tmp_path / "out")
    names = vocabulary_files(tmp_path / "wp")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(names)
    assert all((tmp_path / "out" / n).read_bytes() == (tmp_path / "wp" / n).read_bytes() for n in names)


def test_reading_json_fails_with_one_line_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "meta.json"
    bad.write_bytes(b'{"a": \xff}')
    with pytest.raises(DataError) as err:
        fileio.read_json(bad, DataError, "unreadable metadata")
    assert str(err.value).startswith(f"{bad}: unreadable metadata: ") and "\n" not in str(err.value)
    bad.write_text('{"a": ', encoding="utf-8")
    with pytest.raises(DataError, match=r"meta\.json: unreadable: Expecting value"):
        fileio.read_json(bad, DataError)
    bad.write_text('{"a": [1, "é"]}', encoding="utf-8")
    assert fileio.read_json(bad, DataError) == {"a": [1, "é"]}


def test_json_in_insertion_order_with_unicode_as_it_is(tmp_path: Path) -> None:
    data = {"b": "é", "a": [1, 2.5]}
    path = fileio.write_json(tmp_path / "x.json", data, sort_keys=False, ensure_ascii=False)
    assert path.read_text(encoding="utf-8") == json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    assert fileio.json_text(data) == json.dumps(data, indent=2, sort_keys=True) + "\n"  # the default: unchanged


def test_a_temporary_sibling_moved_into_place(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "data.bin"
    tmp = fileio.temporary_sibling(target)
    assert tmp.parent == target.parent and tmp.name.startswith(".data.bin.") and tmp.is_file()
    tmp.write_bytes(b"new")
    fileio.move_into_place(tmp, target)
    assert target.read_bytes() == b"new" and not tmp.exists()
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    os.chmod(target, 0o640)
    tmp = fileio.temporary_sibling(target)
    fileio.move_into_place(tmp, target)
    assert target.read_bytes() == b"" and stat.S_IMODE(target.stat().st_mode) == 0o640  # keeps its permissions
    assert [p.name for p in target.parent.iterdir()] == ["data.bin"]


def test_prepare_options_are_validated_naming_the_field() -> None:
    for bad, field in (
        ({"workers": 0}, "workers"),
        ({"alpha": -0.1}, "alpha"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"tokenizer": "unigram"}, "tokenizer"),
        ({"sp_model_type": "char"}, "sp_model_type"),
        ({"errors": "ignore"}, "errors"),
        ({"vocab_sise": 10}, "vocab_sise"),
    ):
        with pytest.raises(ValueError, match=field):
            PrepareOptions(**bad)
    opts = PrepareOptions(vocab_size=100)
    with pytest.raises(ValueError, match="frozen"):
        opts.workers = 3  # type: ignore[misc]
    assert json.loads(opts.model_dump_json())["vocab_size"] == 100  # serialisable


def test_recorded_settings_are_those_of_folders_prepared_before() -> None:
    """``prepare.json`` compares these to decide that a folder is up to date: their keys, order
    and values must stay as they were."""
    bpe = PrepareOptions(vocab_size=2000, max_lines=2000, workers=1)
    assert json.dumps(bpe.settings(["en", "fr"])) == json.dumps(
        {
            "languages": ["en", "fr"], "vocab_size_requested": 2000, "vocab_source": None, "alpha": 0.5,
            "bpe_sentences": 1_000_000, "lowercase_and_remove_accent": False, "max_lines": 2000, "seed": 0,
        }
    )  # fmt: skip
    sp = PrepareOptions(vocab_dir="v", alpha=0.3, tokenizer="sentencepiece", sp_model_type="bpe")
    assert list(sp.settings(["en"]).items())[-4:] == [
        ("max_lines", None), ("seed", 0), ("tokenizer", "sentencepiece"), ("sp_model_type", "bpe"),
    ]  # fmt: skip
    assert sp.settings(["en"])["vocab_source"] == "v"
    assert PrepareOptions(tokenizer="wordpiece").settings([])["tokenizer"] == "wordpiece"
