"""Bad input over every command, as a table: each case is the command line, the input it is
given, the one-line message (a fragment of it) and the exit code expected, and no file that
existed before the command may change (hashed before and after)."""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from xlm.cli import build_parser, main, subparsers
from xlm.config import load_config
from xlm.tasks.pretraining import PretrainConfig, run_training
from xlm.tasks.translation import MTConfig, run_mt_training

TINY_MODEL = ["model.emb_dim=32", "model.n_layers=1", "model.n_heads=2", "model.max_positions=64"]
QUIET = ["train.progress=false", "train.eval_at_start=false", "train.eval_every=0", "train.log_every=1"]


def pretrain_overrides(data: Path, out: Path, steps: int = 2) -> list[str]:
    return [
        f'data.path="{data}"', "data.bptt=32", "data.batch_size=4", "data.max_len=30", "data.tlm_max_tokens=256",
        *TINY_MODEL, *QUIET, 'objectives.mlm=["en","fr"]', f"train.max_steps={steps}", f'train.out_dir="{out}"',
        "train.save_every=0", "eval.max_rows=2", "optim.warmup_steps=1", "train.threads=1",
    ]  # fmt: skip


def mt_overrides(data: Path, out: Path, steps: int = 2) -> list[str]:
    return [
        f'data.path="{data}"', "data.max_tokens=300", "data.max_len=30", *TINY_MODEL, *QUIET,
        'objectives.mt=["en-fr"]', f"train.max_steps={steps}", f'train.out_dir="{out}"', "train.save_every=0",
        'eval.splits=["valid"]', "eval.max_sentences=4", "optim.warmup_steps=1", "train.threads=1",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def world(tiny_data: Path, make_tiny_prepared, one_thread, tmp_path_factory) -> dict[str, Path]:
    """A prepared corpus, a pretrained and a translation checkpoint, and a folder of bad files."""
    root = tmp_path_factory.mktemp("bad_input")
    run_training(load_config(PretrainConfig, None, pretrain_overrides(tiny_data, root / "lm")))
    run_mt_training(load_config(MTConfig, None, mt_overrides(tiny_data, root / "mt")))
    files = root / "files"
    files.mkdir()
    (files / "empty.txt").write_bytes(b"")
    (files / "one.txt").write_text("the cat sat\n")
    (files / "two.txt").write_text("the cat sat\non the mat\n")
    (files / "empty.pth").write_bytes(b"")
    (files / "text.pth").write_text("this is not a checkpoint\n")
    (files / "random.pth").write_bytes(bytes((i * 151 + 7) % 256 for i in range(4096)))
    (files / "vocab.txt").write_text("the 10\ncat 5\n")
    (files / "codes.txt").write_text("t h 3\n")
    lines = [b"a\te1</w> e2</w>\n", b"b\tf1</w>\n", b"a\te3</w>\n", b"b\tf\xff2</w>\n", b"a\te4</w>\n"]
    (files / "bad_utf8.tsv").write_bytes(b"".join(lines))
    make_tiny_prepared(root / "empty_valid", n_train=100, n_valid=0)
    raw = root / "raw"
    raw.mkdir()
    for name in ("train.en", "train.zz", "train.english", "notes.txt"):
        (raw / name).write_text("the cat sat\non the mat\n")
    return {"data": tiny_data, "lm": root / "lm" / "final", "mt": root / "mt" / "final", "files": files,
            "raw": raw, "tmp": root / "out", "empty_valid": root / "empty_valid"}  # fmt: skip


@dataclass
class Case:
    id: str
    argv: list[str]  # {data}, {lm}, {mt}, {files}, {raw}, {tmp} are filled in
    expect: str  # a fragment of the one line printed on stderr (placeholders as in argv)
    code: int = 1  # exit status: 1 for errors, 2 for arguments argparse refuses, 0 for warnings
    stdin: bytes = b""


CASES = [
    # --- xlm prepare
    Case("prepare-non-iso-code", ["prepare", "{raw}", "{tmp}/prep", "--vocab-size", "50"],
         "'zz' is not an ISO 639-1 language code"),
    Case("prepare-negative-alpha", ["prepare", "{raw}", "{tmp}/prep", "--vocab-size", "50", "--alpha", "-1"],
         "argument --alpha: must be a number >= 0 (got -1)", 2),
    Case("prepare-zero-workers", ["prepare", "{raw}", "{tmp}/prep", "--vocab-size", "50", "--workers", "0"],
         "argument --workers: must be an integer >= 1 (got 0)", 2),
    Case("prepare-missing-dir", ["prepare", "{tmp}/nope", "{tmp}/prep", "--vocab-size", "50"],
         "corpus directory not found"),
    # --- xlm encode
    Case("encode-unknown-lang", ["encode", "--vocab", "{data}", "--lang", "zz"],
         "warning: 'zz' is not an ISO 639-1 language code", 0, b"e1 e2\n"),
    Case("encode-bad-utf8", ["encode", "--vocab", "{data}", "--lang", "en"],
         "<stdin>:3: invalid UTF-8", 1, b"e1\ne2\ne\xff3\n"),
    # --- xlm pretrain: configuration values out of range, devices, an empty split
    Case("pretrain-dropout", ["pretrain", 'data.path="{data}"', "model.dropout=1.5"],
         "model.dropout: must be within [0, 1) (got 1.5)"),
    Case("pretrain-heads", ["pretrain", 'data.path="{data}"', "model.emb_dim=30"],
         "emb_dim=30 must be divisible by n_heads=4"),
    Case("pretrain-negative-dim", ["pretrain", 'data.path="{data}"', "model.emb_dim=-8"],
         "model.emb_dim: must be within [1, inf) (got -8)"),
    Case("pretrain-lr", ["pretrain", 'data.path="{data}"', "optim.lr=-1"], "optim.lr: must be within (0, inf) (got -1)"),
    Case("pretrain-nan", ["pretrain", 'data.path="{data}"', "optim.lr=nan"], "optim.lr: must be within (0, inf)"),
    Case("pretrain-device-typo", ["pretrain", 'data.path="{data}"', 'train.device="cdua"'],
         "unknown device 'cdua': use auto, cpu, cuda, cuda:N or mps"),
    Case("pretrain-empty-valid", ["pretrain", *pretrain_overrides(Path("{empty_valid}"), Path("{tmp}/pre"))],
         "the valid split of en has no sentences"),
    Case("pretrain-device-option", ["pretrain", 'data.path="{data}"', "--device", "cdua"],
         "argument --device: unknown device 'cdua'", 2),
    # --- xlm train-mt
    Case("train-mt-beam", ["train-mt", 'data.path="{data}"', 'objectives.mt=["en-fr"]', "eval.beam_size=0"],
         "eval.beam_size: must be within [1, inf) (got 0)"),
    Case("train-mt-weight", ["train-mt", 'data.path="{data}"', 'objectives.mt=["en-fr"]', "objectives.mt_weight=-1"],
         "objectives.mt_weight: must be a weight within [0, inf)"),
    Case("train-mt-empty-valid", ["train-mt", *mt_overrides(Path("{empty_valid}"), Path("{tmp}/mtev"))],
         "valid.en-fr.en: the valid split of en-fr has no sentences"),
    # --- xlm translate
    Case("translate-beam", ["translate", "{mt}", "--src", "en", "--tgt", "fr", "--beam", "0"],
         "argument --beam: must be an integer >= 1 (got 0)", 2),
    Case("translate-max-len", ["translate", "{mt}", "--src", "en", "--tgt", "fr", "--max-len-b", "-1"],
         "argument --max-len-b: must be an integer >= 0 (got -1)", 2),
    Case("translate-device-typo", ["translate", "{mt}", "--src", "en", "--tgt", "fr", "--device", "gpu"],
         "argument --device: unknown device 'gpu'", 2),
    Case("translate-untrained", ["translate", "{mt}", "--src", "fr", "--tgt", "en", "--device", "cpu"],
         "warning: fr->en: the model never trained this direction (trained: en->fr)", 0, b"f1 f2\n"),
    Case("translate-same-lang", ["translate", "{mt}", "--src", "en", "--tgt", "en", "--device", "cpu"],
         "warning: en->en: source and target are the same language", 0, b"e1 e2\n"),
    # --- xlm evaluate
    Case("bleu-empty-hyp", ["evaluate", "bleu", "--hyp", "{files}/empty.txt", "--ref", "{files}/one.txt"],
         "empty.txt: empty file: nothing to score"),
    Case("bleu-empty-ref", ["evaluate", "bleu", "--hyp", "{files}/one.txt", "--ref", "{files}/empty.txt"],
         "empty.txt: empty file: nothing to score"),
    Case("bleu-line-count", ["evaluate", "bleu", "--hyp", "{files}/two.txt", "--ref", "{files}/one.txt"],
         "two.txt has 2 lines but"),
    Case("bleu-beam", ["evaluate", "bleu", "{mt}", "--data", "{data}", "--beam", "0"], "argument --beam", 2),
    Case("bleu-untrained", ["evaluate", "bleu", "{mt}", "--data", "{data}", "--split", "valid", "--directions", "fr-en",
                            "--max-sentences", "2", "--device", "cpu"],
         "xlm evaluate bleu: warning: fr->en: the model never trained this direction (trained: en->fr)", 0),
    Case("ppl-bptt", ["evaluate", "ppl", "{lm}", "--data", "{data}", "--bptt", "0"],
         "argument --bptt: must be an integer >= 2 (got 0)", 2),
    Case("retrieval-max", ["evaluate", "retrieval", "{lm}", "--max-sentences", "-1"], "argument --max-sentences", 2),
    Case("words-k", ["evaluate", "words", "{lm}", "--csls-k", "0"], "argument --csls-k: must be an integer >= 1", 2),
    # --- xlm embed / center / classify / finetune
    Case("embed-max-tokens", ["embed", "{lm}", "--lang", "en", "--max-tokens", "0"], "argument --max-tokens", 2),
    Case("center-device", ["center", "{lm}", "--prepared", "{data}", "--device", "cuda:x"],
         "unknown device 'cuda:x'", 2),
    Case("classify-max-len", ["classify", "{lm}", "--lang", "en", "--max-len", "1"],
         "argument --max-len: must be an integer >= 2 (got 1)", 2),
    Case("finetune-epochs", ["finetune", "classify", "{lm}", "--epochs", "-1"], "argument --epochs", 2),
    Case("finetune-dropout", ["finetune", "classify", "{lm}", "--train", "en={files}/bad_utf8.tsv", "finetune.dropout=1"],
         "finetune.dropout: must be within [0, 1) (got 1)"),
    Case("finetune-bad-utf8", ["finetune", "classify", "{lm}", "--train", "en={files}/bad_utf8.tsv", "--pretokenized",
                               "--out", "{tmp}/ft"], "bad_utf8.tsv:4: invalid UTF-8"),
    # --- xlm import original
    Case("import-empty-pth", ["import", "original", "{files}/empty.pth", "--vocab", "{files}/vocab.txt",
                              "--codes", "{files}/codes.txt", "{tmp}/imp"], "the file is empty (0 bytes)"),
    Case("import-text-pth", ["import", "original", "{files}/text.pth", "--vocab", "{files}/vocab.txt",
                             "--codes", "{files}/codes.txt", "{tmp}/imp"], "a text file, not a PyTorch checkpoint"),
    Case("import-random-pth", ["import", "original", "{files}/random.pth", "--vocab", "{files}/vocab.txt",
                               "--codes", "{files}/codes.txt", "{tmp}/imp"], "neither a zip archive nor a pickle"),
    # --- xlm bench / export / plot
    Case("bench-repeats", ["bench", "--repeats", "0"], "argument --repeats: must be an integer >= 1 (got 0)", 2),
    Case("export-missing", ["export", "{tmp}/nope", "--to", "hf", "{tmp}/hf"], "nope: not a checkpoint"),
    Case("plot-missing", ["plot", "{tmp}/nope"], "is {tmp}/nope a training run folder?"),
]  # fmt: skip

if not torch.cuda.is_available():
    CASES += [
        Case("translate-no-cuda", ["translate", "{mt}", "--src", "en", "--tgt", "fr", "--device", "cuda"],
             "no CUDA device: this torch build has no CUDA support (use --device cpu)"
             if not torch.backends.cuda.is_built() else "no CUDA device: ", 1, b"e1\n"),
        Case("pretrain-no-cuda", ["pretrain", *pretrain_overrides(Path("{data}"), Path("{tmp}/cuda")),
                                  'train.device="cuda"'], "no CUDA device: "),
    ]  # fmt: skip
if not torch.backends.mps.is_available():
    CASES.append(
        Case("embed-no-mps", ["embed", "{lm}", "--lang", "en", "--device", "mps"], "no MPS device: ", 1, b"e1\n")
    )


def _hashes(roots: list[Path]) -> dict[str, str]:
    out = {}
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for name in names:
                p = Path(dirpath) / name
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, world: dict[str, Path], monkeypatch, capsys) -> None:
    names = {k: str(v) for k, v in world.items()}
    argv, expect = [a.format(**names) for a in case.argv], case.expect.format(**names)
    roots = [world["data"], world["lm"], world["mt"], world["files"], world["raw"]]
    before = _hashes(roots)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(case.stdin)))
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse refuses the arguments
        code = e.code
    err = capsys.readouterr().err
    assert code == case.code, err
    assert expect in err, err
    assert "Traceback" not in err
    message = [line for line in err.splitlines() if expect in line]
    assert len(message) == 1 and len(message[0]) < 400, err
    assert _hashes(roots) == before, "a file that existed before the command changed"


def _device_options() -> list[tuple[str, object]]:
    """Every sub-command's ``--device`` option, as (command, argparse action)."""
    found = []

    def walk(parser: argparse.ArgumentParser) -> None:
        found.extend((parser.prog.removeprefix("xlm "), a) for a in parser._actions if "--device" in a.option_strings)
        for child in subparsers(parser):
            walk(child)

    walk(build_parser())
    return found


def test_every_device_option_defaults_to_and_accepts_auto() -> None:
    """Training commands' --device sets train.device, whose default is auto."""
    options = _device_options()
    names = {name for name, _ in options}
    assert {"translate", "classify", "embed", "center", "bench", "evaluate words", "evaluate bleu"} <= names
    assert {"pretrain", "train-mt", "finetune classify"} <= names
    assert PretrainConfig().train.device == MTConfig().train.device == "auto"
    for name, action in options:
        assert action.default == ("auto" if name not in ("pretrain", "train-mt", "finetune classify") else None), name
        assert action.type("auto") == "auto", name
        for good in ("cpu", "cuda", "cuda:1", "mps"):
            assert action.type(good) == good, name
