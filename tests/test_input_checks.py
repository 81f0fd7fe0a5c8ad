"""Devices, physical line numbers, corpus file names and language codes, files that are not
checkpoints: each checked where the input enters, with a one-line reason."""

from __future__ import annotations

import gzip
import io

import pytest
import torch

from xlm.data.classification import read_examples
from xlm.data.prepare import PrepareOptions, prepare, skipped_files
from xlm.devices import DeviceError, check_device_name, resolve_device
from xlm.errors import CheckpointError, DataError
from xlm.evaluation.bleu import bleu_files
from xlm.evaluation.word_translation import read_dictionary
from xlm.interop.common import safe_torch_load
from xlm.text.languages import ISO_639_1, check_languages
from xlm.text.lines import line_batches, numbered_lines

# --------------------------------------------------------------------------- devices


def test_device_names():
    for ok in ("auto", "cpu", "cuda", "cuda:3", "mps"):
        assert check_device_name(ok) == ok
    with pytest.raises(DeviceError, match=r"unknown device 'cuda0': use auto, cpu, cuda, cuda:N or mps"):
        check_device_name("cuda0")


def test_resolve_device_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(
        DeviceError, match=r"^no CUDA device: this torch build has no CUDA support \(use --device cpu\)$"
    ):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match=r"\(use train\.device=cpu\)$"):
        resolve_device("cuda:1", option="train.device=")
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    with pytest.raises(DeviceError, match=r"no GPU is visible"):
        resolve_device("cuda")


def test_resolve_device_with_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda:0", local_rank=1) == torch.device("cuda", 0)
    with pytest.raises(DeviceError, match=r"no CUDA device 2: this machine has 2 \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")


def test_resolve_mps_when_missing(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(DeviceError, match=r"^no MPS device: .*\(use --device cpu\)$"):
        resolve_device("mps")


# --------------------------------------------------------------------------- physical line numbers


def _with_bad_byte(n_lines: int, bad: int, line: bytes) -> bytes:
    rows = [line] * n_lines
    rows[bad - 1] = line.replace(b"x", b"\xff", 1)
    return b"".join(rows)


@pytest.mark.parametrize("bad", [1, 4, 200, 5000])
def test_invalid_utf8_in_a_classification_tsv_is_reported_at_its_physical_line(tmp_path, bad):
    """A text-mode reader decodes chunks ahead and blamed line 1 for line 4, 147 for 200."""
    p = tmp_path / "train.tsv"
    p.write_bytes(_with_bad_byte(6000, bad, "pos\tsome text x é\n".encode()))
    with pytest.raises(DataError, match=rf"train\.tsv:{bad}: invalid UTF-8"):
        read_examples(p, "en")


def test_every_reader_reports_physical_lines(tmp_path):
    data = _with_bad_byte(300, 250, b"cat x\tchat\n")
    (tmp_path / "d.txt").write_bytes(data)
    (tmp_path / "d.txt.gz").write_bytes(gzip.compress(data))
    (tmp_path / "ok.txt").write_bytes(b"cat chat\n" * 300)
    for name in ("d.txt", "d.txt.gz"):
        with pytest.raises(DataError, match=rf"{name}:250: invalid UTF-8"):
            read_dictionary(tmp_path / name)
    with pytest.raises(DataError, match=r"d\.txt:250: invalid UTF-8"):
        bleu_files(tmp_path / "d.txt", tmp_path / "ok.txt")
    with pytest.raises(DataError, match=r"<stdin>:250: invalid UTF-8"):
        list(line_batches(io.BytesIO(data), 64))


def test_numbered_lines_strips_line_endings_and_counts_physical_lines(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"one\r\ntwo\n\nfour")
    assert list(numbered_lines(p)) == [(1, "one"), (2, "two"), (3, ""), (4, "four")]
    with pytest.raises(DataError, match=r"nope\.txt: file not found"):
        list(numbered_lines(tmp_path / "nope.txt"))
    (tmp_path / "bad.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match=r"bad\.gz: cannot read"):
        list(numbered_lines(tmp_path / "bad.gz"))


# --------------------------------------------------------------------------- corpus names, languages


def test_language_table_and_check():
    assert len(ISO_639_1) == 184 and {"en", "fr", "zh", "sw"} <= ISO_639_1
    check_languages(["en", "fr"])
    check_languages(["en", "xx"], allowed=["xx"])
    with pytest.raises(DataError, match=r"'eng', 'zz' are not ISO 639-1 .*--allow-lang eng --allow-lang zz"):
        check_languages(["en", "zz", "eng"])


def test_prepare_lists_skipped_files_and_refuses_unknown_codes(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("train.en", "train.fr", "train.english", "foo.en", "train.en.txt", "README"):
        (raw / name).write_text("the cat sat on the mat\na dog\n")
    (raw / ".hidden").write_text("x\n")
    assert skipped_files(raw) == ["README", "foo.en", "train.en.txt", "train.english"]
    logged: list[str] = []
    prepare(raw, tmp_path / "out", PrepareOptions(vocab_size=40, workers=1), log=logged.append)
    notes = [m for m in logged if m.startswith("skipped")]
    assert len(notes) == 1 and "skipped 4 file(s)" in notes[0] and "train.english" in notes[0]

    (raw / "train.zz").write_text("zz zz\n")
    with pytest.raises(DataError, match=r"'zz' is not an ISO 639-1 language code.*--allow-lang zz"):
        prepare(raw, tmp_path / "out2", PrepareOptions(vocab_size=40, workers=1), log=logged.append)
    assert not (tmp_path / "out2").exists()
    result = prepare(raw, tmp_path / "out3", PrepareOptions(vocab_size=40, workers=1, allow_langs=["zz"]), log=print)
    assert result.info["languages"] == ["en", "fr", "zz"]


# --------------------------------------------------------------------------- .pth files


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", r"the file is empty \(0 bytes\)"),
        (b"model weights, see README\n", r"a text file, not a PyTorch checkpoint \(it starts with 'model weights"),
        (bytes(range(7, 256)) * 8, r"not a PyTorch checkpoint: neither a zip archive nor a pickle"),
        (b"PK\x03\x04" + b"\x00" * 100, r"a zip archive that is truncated or corrupt"),
    ],
)
@pytest.mark.parametrize("trust", [False, True])
def test_a_pth_that_is_no_checkpoint_is_named_as_what_it_is(tmp_path, content, reason, trust):
    p = tmp_path / "model.pth"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"model\.pth: cannot read the checkpoint: {reason}") as e:
        safe_torch_load(p, trust_pickle=trust)
    assert "--trust-pickle" not in str(e.value)


def test_a_real_checkpoint_still_loads(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "m.pth")
    assert torch.equal(safe_torch_load(tmp_path / "m.pth")["w"], torch.ones(2))
