"""Word segmentation of zh/ja/th and the XNLI-15 scripts end to end (``xlm prepare``/``encode``).

The sentences are real interface strings from the shipped ``data/xnli15/`` catalogs.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
from pathlib import Path

import pytest
from sacremoses import MosesDetokenizer

from xlm.cli import main
from xlm.data.dataset import PREPARE_FILE, PreparedData
from xlm.errors import XLMError
from xlm.text import segment as seg
from xlm.text.bpe import TextEncoder, detokenize
from xlm.text.normalize import Normalizer

pytest.importorskip("jieba")
pytest.importorskip("fugashi")
pytest.importorskip("pythainlp")

XNLI15 = Path(__file__).resolve().parents[1] / "data" / "xnli15"

# one real sentence per script, with its English source
SENTENCES = {
    "zh": ("You may want to free some space on the disc and retry", "您也许需要在光盘中腾一些空间然后重试"),
    "ja": ("You do not have the required permission to write at this location", "この場所に書き込むために必要な権限がありません"),
    "th": ("If you choose to create a new empty project, all changes will be lost.",
           "ถ้าคุณเลือกสร้างโครงการว่างอันใหม่ การเปลี่ยนแปลงที่ผ่านมาจะถูกละทิ้ง"),
    "ar": ("Whether to hide completed tasks in the tasks view.", "لإخفاء المهام المنجزة في مشهد المهام."),
    "el": ("Could not open the link.", "Δεν ήταν δυνατό το άνοιγμα του συνδέσμου."),
    "bg": ("That mask already exists.", "Тази маска вече съществува."),
    "vi": ("Could not get schema information for LDAP server.", "Không thể lấy thông tin giản đồ cho máy chủ LDAP."),
}  # fmt: skip


def test_segmenters_split_real_sentences_into_words() -> None:
    zh = seg.segment("您也许需要在光盘中腾一些空间然后重试", "zh")
    assert "".join(zh) == "您也许需要在光盘中腾一些空间然后重试"
    assert {"也许", "需要", "空间", "然后", "重试"} <= set(zh)
    ja = seg.segment("この場所に書き込むために必要な権限がありません", "ja")
    assert "".join(ja) == "この場所に書き込むために必要な権限がありません"
    assert {"場所", "必要", "権限"} <= set(ja) and ja[:3] == ["この", "場所", "に"]
    th = seg.segment("ถ้าคุณเลือกสร้างโครงการว่างอันใหม่ การเปลี่ยนแปลงที่ผ่านมาจะถูกละทิ้ง", "th")
    assert th[:5] == ["ถ้า", "คุณ", "เลือก", "สร้าง", "โครงการ"]
    assert "".join(th) == "ถ้าคุณเลือกสร้างโครงการว่างอันใหม่การเปลี่ยนแปลงที่ผ่านมาจะถูกละทิ้ง"  # no space token
    assert all(w and not w.isspace() and " " not in w for w in zh + ja + th)


def test_normalizer_segments_cjk_thai_and_moses_tokenizes_the_rest() -> None:
    # CJK punctuation is mapped to ASCII first, then the segmenter cuts the words
    assert Normalizer("zh")("打开文件，然后重试。").split()[-1] == "."
    assert "," in Normalizer("zh")("打开文件，然后重试。").split()
    assert Normalizer("ja")("この場所に書き込むために必要な権限がありません").startswith("この 場所 に 書き込む")
    assert Normalizer("ar")("لإخفاء المهام المنجزة في مشهد المهام.") == "لإخفاء المهام المنجزة في مشهد المهام ."
    assert Normalizer("bg")("Тази маска вече съществува.") == "Тази маска вече съществува ."
    el = "Δεν ήταν δυνατό το άνοιγμα του συνδέσμου."
    assert Normalizer("el", True)(el) == "δεν ηταν δυνατο το ανοιγμα του συνδεσμου ."
    assert Normalizer("vi")("Không thể chạy trình Bug buddy.") == "Không thể chạy trình Bug buddy ."
    assert Normalizer("vi", True)("Không thể chạy trình Bug buddy.") == "khong the chay trinh bug buddy ."
    # accent removal as the original: Japanese voiced marks and Thai vowel/tone marks (Mn) go too
    assert Normalizer("ja", True)("必要ですが") == "必要 てす か"


def test_thai_detokenization_joins_thai_words() -> None:
    text = "ถ้าคุณเลือกสร้างโครงการ DVD ใหม่"
    tokens = Normalizer("th")(text)
    assert tokens.split()[:3] == ["ถ้า", "คุณ", "เลือก"]
    assert detokenize(tokens, MosesDetokenizer(lang="th")) == text
    assert seg.join_thai(["ไฟล์", "abc", "ใหม่"]) == "ไฟล์ abc ใหม่"


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    seg.segmenter.cache_clear()
    monkeypatch.setitem(sys.modules, "jieba", None)  # makes `import jieba` fail
    monkeypatch.setitem(sys.modules, "fugashi", None)
    try:
        with pytest.raises(XLMError, match=r"'jieba' is not installed: pip install 'xlm\[segment\]'"):
            Normalizer("zh")
        with pytest.raises(XLMError, match=r"'fugashi' is not installed: pip install 'xlm\[segment\]'"):
            Normalizer("ja")
        Normalizer("th")  # its package is still there
        Normalizer("en")  # and nothing else needs one
    finally:
        seg.segmenter.cache_clear()
    assert seg.segmenter_versions(["en", "th"]) == {"th": seg.segmenter_versions(["th"])["th"]}


def test_cli_prepare_without_the_extra_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "train.zh").write_text("您也许需要在光盘中腾一些空间然后重试\n", encoding="utf-8")
    seg.segmenter.cache_clear()
    monkeypatch.setitem(sys.modules, "jieba", None)
    try:
        assert main(["prepare", str(raw), str(tmp_path / "out"), "--vocab-size", "50", "--workers", "1"]) == 1
    finally:
        seg.segmenter.cache_clear()
    err = [x for x in capsys.readouterr().err.splitlines() if "error" in x or "Traceback" in x]
    assert len(err) == 1 and err[0].endswith("is not installed: pip install 'xlm[segment]'")


def _write_gz(path: Path, lines: list[str]) -> None:
    path.write_bytes(gzip.compress("".join(x + "\n" for x in lines).encode("utf-8")))


@pytest.mark.slow  # two normalization processes load the segmenters
def test_prepare_multi_script_corpus(tmp_path: Path, capsys) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for lang, (en, xx) in SENTENCES.items():
        _write_gz(raw / f"train.{lang}.gz", [xx] * 20)
        _write_gz(raw / f"train.en-{lang}.en.gz", [en] * 3)
        _write_gz(raw / f"train.en-{lang}.{lang}.gz", [xx] * 3)
    _write_gz(raw / "train.en.gz", [en for en, _ in SENTENCES.values()] * 5)
    out = tmp_path / "out"
    # two spawned workers: the segmenters load (and segment the same) in the worker processes
    assert main(["prepare", str(raw), str(out), "--vocab-size", "400", "--workers", "2"]) == 0
    capsys.readouterr()
    info = json.loads((out / PREPARE_FILE).read_text(encoding="utf-8"))
    assert set(info["segmenters"]) == {"ja", "th", "zh"} and "jieba" in info["segmenters"]["zh"]
    data = PreparedData.open(out)
    assert data.languages == sorted([*SENTENCES, "en"])
    for lang, (_, xx) in SENTENCES.items():
        enc = TextEncoder(out, lang)
        ids = data.mono("train", lang).sentence(0).tolist()
        assert ids == enc.encode(xx) and 3 not in ids  # <unk> = 3: every script is in the vocabulary
        # the BPE tokens rebuild the segmented words, and decoding gives the sentence back
        assert "".join(enc.bpe.tokens(enc.normalize(xx))).replace("</w>", " ").split() == enc.normalize(xx).split()
        # (Thai loses the space between its two phrases: segmentation does not keep it)
        assert enc.decode(ids) == (xx.replace(" ", "") if lang == "th" else xx)
    assert TextEncoder(out, "zh").normalize(SENTENCES["zh"][1]).split()[:3] == ["您", "也许", "需要"]

    # `xlm encode` segments the same way as prepare
    monkeypatch_stdin = io.TextIOWrapper(io.BytesIO((SENTENCES["th"][1] + "\n").encode()), encoding="utf-8")
    old, sys.stdin = sys.stdin, monkeypatch_stdin
    try:
        assert main(["encode", "--vocab", str(out), "--lang", "th", "--ids"]) == 0
    finally:
        sys.stdin = old
    assert list(map(int, capsys.readouterr().out.split())) == data.mono("train", "th").sentence(0).tolist()


@pytest.mark.skipif(not XNLI15.is_dir(), reason="data/xnli15 not built")
def test_shipped_xnli15_files_are_parallel_and_in_their_script() -> None:
    langs = ("ar", "bg", "el", "ja", "th", "tr", "vi", "zh")
    for lang in langs:
        for split in ("train", "valid", "test"):
            with gzip.open(XNLI15 / f"{split}.en-{lang}.en.gz", "rt", encoding="utf-8") as f:
                en = f.read().splitlines()
            with gzip.open(XNLI15 / f"{split}.en-{lang}.{lang}.gz", "rt", encoding="utf-8") as f:
                xx = f.read().splitlines()
            assert len(en) == len(xx) > 0 and all(en) and all(xx)
        with gzip.open(XNLI15 / f"train.{lang}.gz", "rt", encoding="utf-8") as f:
            assert len(f.read().splitlines()) > 0
