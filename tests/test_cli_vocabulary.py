"""One CLI vocabulary: each concept has one option name in every command (``--data`` a prepared
directory, ``--langs`` languages, ``--directions`` ordered pairs); the old spellings still work
as hidden aliases for one release; shared options come from ``xlm.commands.options``."""

from __future__ import annotations

import argparse
import importlib.util
import json

import pytest

from xlm.cli import build_parser, subparsers
from xlm.commands.options import print_final_metrics

# (new spelling, old spelling) of the same command line
RENAMED = [
    (["evaluate", "retrieval", "ck", "--data", "d", "--directions", "en-fr"],
     ["evaluate", "retrieval", "ck", "--prepared", "d", "--langs", "en-fr"]),
    (["evaluate", "words", "ck", "--dict", "en-fr=x", "--data", "d", "--split", "valid"],
     ["evaluate", "words", "ck", "--dict", "en-fr=x", "--vocab-data", "d", "--vocab-split", "valid"]),
    (["center", "ck", "--data", "d"], ["center", "ck", "--prepared", "d"]),
    (["encode", "--data", "d", "--lang", "en"], ["encode", "--vocab", "d", "--lang", "en"]),
]  # fmt: skip
OLD = {"--prepared", "--vocab-data", "--vocab-split"}


def _parse(argv: list[str]) -> dict[str, object]:
    args = vars(build_parser().parse_args(argv))
    args.pop("func")
    return args


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) of every leaf command."""
    children = subparsers(parser)
    if not children:
        yield path, parser
    for child in children:
        yield from _commands(child, (*path, child.prog.split()[-1]))


@pytest.mark.parametrize("new,old", RENAMED, ids=[" ".join(n[:2]) for n, _ in RENAMED])
def test_old_spellings_parse_as_the_new_ones(new: list[str], old: list[str]) -> None:
    assert _parse(old) == _parse(new)


@pytest.mark.parametrize("new,old", RENAMED, ids=[" ".join(n[:2]) for n, _ in RENAMED])
def test_old_spellings_are_hidden_and_exclusive(new: list[str], old: list[str], capsys) -> None:
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args([*new[: new.index(next(a for a in new if a.startswith("--")))], "--help"])
    shown = capsys.readouterr().out
    renamed = [a for a in old if a.startswith("--") and a not in new]
    assert renamed and not any(a in shown.split() for a in renamed)
    with pytest.raises(SystemExit) as e:  # both spellings at once: refused by argparse
        parser.parse_args([*new, renamed[0], "x"])
    assert e.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_required_data_is_named_by_its_new_spelling(capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["center", "ck"])
    err = capsys.readouterr().err
    assert "--data" in err and "--prepared" not in err


def test_one_meaning_per_option_in_every_command() -> None:
    """``--data`` is always a directory (Path, shown as DIR); ``--langs`` never means pairs; the
    old spellings appear in no command's help; a model-running command has --precision."""
    seen_data = 0
    for path, parser in _commands(build_parser()):
        options = {s: a for a in parser._actions for s in a.option_strings}
        shown = {s for a in parser._actions if a.help != argparse.SUPPRESS for s in a.option_strings}
        assert not (OLD & shown), path
        if "--data" in options:
            seen_data += 1
            assert options["--data"].metavar == "DIR", path
        if "--langs" in shown:
            assert "pair" not in (options["--langs"].help or ""), path
        if path[0] in ("evaluate", "embed", "center", "translate", "classify"):
            assert "--precision" in options, path
    assert seen_data >= 6  # evaluate ppl/bleu/retrieval/words, center, encode


def test_training_commands_take_device() -> None:
    for argv in (["pretrain", "--device", "cpu"], ["train-mt", "--device", "cpu"]):
        assert build_parser().parse_args(argv).device == "cpu"


def test_final_metrics_printed_by_rank_zero_only(monkeypatch, capsys) -> None:
    monkeypatch.setenv("RANK", "1")
    print_final_metrics({"valid/mlm/ppl": 12.345678})
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("RANK", "0")
    print_final_metrics({"valid/mlm/ppl": 12.345678})
    assert json.loads(capsys.readouterr().out) == {"valid/mlm/ppl": 12.3457}


def test_tensorboard_asked_for_and_missing_is_one_note(tiny_data, tiny_config_overrides, tmp_path, capsys) -> None:
    from xlm.cli import main

    out = tmp_path / "run"
    argv = ["pretrain", *tiny_config_overrides(tiny_data, out, steps=1), "train.tensorboard=true", "--device", "cpu"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    if importlib.util.find_spec("tensorboard") is None:
        notes = [line for line in err.splitlines() if "not installed" in line]
        assert len(notes) == 1 and "xlm[tensorboard]" in notes[0]
    else:
        assert (out / "tensorboard").is_dir()


def test_translation_progress_bar_goes_to_stderr_and_changes_nothing(capsys) -> None:
    import numpy as np
    import torch

    from xlm.model.generation import DecodeConfig, translate_rows
    from xlm.model.seq2seq import EncoderDecoder
    from xlm.model.transformer import ModelConfig

    torch.manual_seed(0)
    model = EncoderDecoder(ModelConfig(vocab_size=40, n_langs=2, emb_dim=16, n_layers=1, n_heads=2)).eval()
    rng = np.random.default_rng(0)
    rows = [np.asarray([1, *rng.integers(5, 40, size=int(n)), 1]) for n in rng.integers(2, 9, size=12)]
    cfg = DecodeConfig(beam_size=2, max_len_a=0, max_len_b=4)
    quiet = translate_rows(model, rows, 0, 1, cfg, "cpu", max_tokens=40)
    assert capsys.readouterr().err == ""
    shown = translate_rows(model, rows, 0, 1, cfg, "cpu", max_tokens=40, progress="translate en-fr")
    err = capsys.readouterr()
    assert shown == quiet and err.out == ""
    assert "translate en-fr" in err.err and "/12" in err.err
