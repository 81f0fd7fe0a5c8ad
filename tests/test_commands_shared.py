"""What commands share: the two training commands' options, the import sources' options, the
directions of a translation checkpoint, the warning about untrained directions, and the progress
bars of `xlm evaluate ppl` / `words` (on standard error, the figures unchanged)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from xlm.cli import build_parser, main, subparsers
from xlm.commands.decoding import warn_untrained_direction
from xlm.config import load_config
from xlm.evaluation.word_translation import WordEmbedder, WordEvalInputs, evaluate_dictionary
from xlm.model.pretrained import ModelInfo, load_pretrained
from xlm.model.seq2seq import evaluation_directions, objective_directions, trained_directions
from xlm.model.transformer import ModelConfig
from xlm.tasks.pretraining import PretrainConfig, run_training
from xlm.tasks.translation import MTConfig, MTEvalConfig, MTObjectivesConfig, eval_directions

pytestmark = pytest.mark.usefixtures("one_thread")


def _parser(*names: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in names:
        parser = next(p for p in subparsers(parser) if p.prog.split()[-1] == name)
    return parser


def _options(parser: argparse.ArgumentParser) -> dict[str, tuple[object, ...]]:
    return {a.dest: (tuple(a.option_strings), a.default, a.nargs, a.const) for a in parser._actions}


def test_training_commands_take_the_same_options() -> None:
    pretrain, train_mt = _parser("pretrain"), _parser("train-mt")
    assert _options(pretrain) == _options(train_mt)
    assert set(_options(pretrain)) == {"help", "config", "overrides", "resume", "device"}
    args = pretrain.parse_args(["--config", "c.toml", "a=1", "--resume", "--device", "cpu"])
    assert (args.config, args.overrides, args.resume, args.device) == (Path("c.toml"), ["a=1"], "latest", "cpu")


def test_every_import_source_takes_its_input_then_out_and_the_output_options() -> None:
    for source, first in (("hf", "directory"), ("original", "checkpoint"), ("fairseq", "directory")):
        actions = _parser("import", source)._actions
        positionals = [a.dest for a in actions if not a.option_strings]
        assert positionals == [first, "out"], source
        assert [a.dest for a in actions][-2:] == ["trust_pickle", "overwrite"], source
    args = _parser("import", "original").parse_args(["m.pth", "--vocab", "v", "--codes", "c", "out"])
    assert (args.checkpoint, args.out, args.lowercase_and_remove_accent) == (Path("m.pth"), Path("out"), True)


def _info(**extra: object) -> ModelInfo:
    return ModelInfo(ModelConfig(), {"en": 0, "fr": 1, "de": 2}, extra=dict(extra))


def test_directions_of_a_translation_checkpoint() -> None:
    assert objective_directions(["en-fr", "fr-en"], ["en-de-en", "fr-en-fr"]) == [
        ("en", "fr"), ("fr", "en"), ("en", "de"), ("de", "en"),
    ]  # fmt: skip
    info = _info(objectives={"mt": ["en-fr"], "bt": ["en-de-en"]})
    assert trained_directions(info) == [("en", "fr"), ("en", "de"), ("de", "en")]
    assert evaluation_directions(info) == trained_directions(info)  # an older checkpoint: the trained ones
    recorded = _info(objectives={"mt": ["en-fr"]}, eval_directions=["fr-en", "de-en"])
    assert evaluation_directions(recorded) == [("fr", "en"), ("de", "en")]
    # training evaluates what the checkpoint then records
    cfg = MTConfig(objectives=MTObjectivesConfig(mt=["en-fr"], bt=["en-de-en"]))
    assert eval_directions(cfg) == trained_directions(info)
    cfg = cfg.model_copy(update={"eval": MTEvalConfig(directions=["de-fr"])})
    assert eval_directions(cfg) == [("de", "fr")]


def test_untrained_direction_warning_names_the_command(capsys) -> None:
    warn_untrained_direction("evaluate bleu", "en", "fr", [("en", "fr")])
    assert capsys.readouterr().err == ""
    warn_untrained_direction("evaluate bleu", "fr", "en", [("en", "fr")])
    assert capsys.readouterr().err == (
        "xlm evaluate bleu: warning: fr->en: the model never trained this direction (trained: en->fr); "
        "the output is likely not a translation\n"
    )
    warn_untrained_direction("translate", "en", "en", [])
    assert "xlm translate: warning: en->en: source and target are the same language (trained: none recorded)" in (
        capsys.readouterr().err
    )


@pytest.fixture(scope="module")
def bpe_data(tiny_data: Path, with_bpe_merges, tmp_path_factory) -> Path:
    return with_bpe_merges(tiny_data, tmp_path_factory.mktemp("shared_bpe") / "data")


@pytest.fixture(scope="module")
def checkpoint(bpe_data: Path, tiny_config_overrides, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shared") / "run"
    run_training(load_config(PretrainConfig, None, tiny_config_overrides(bpe_data, out, steps=2)))
    return out / "final"


def test_evaluate_ppl_shows_a_progress_bar_on_a_terminal_only(checkpoint, bpe_data, tmp_path, monkeypatch, capsys):
    js = tmp_path / "ppl.json"
    argv = ["evaluate", "ppl", str(checkpoint), "--data", str(bpe_data), "--split", "valid", "--bptt", "16",
            "--json", str(js)]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 0
    quiet = json.loads(js.read_text())
    assert "mlm en" not in capsys.readouterr().err  # standard error is not a terminal here
    monkeypatch.setattr("xlm.commands.evaluate_ppl.progress_enabled", lambda: True)
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "mlm en" in err and "clm fr" in err
    assert json.loads(js.read_text()) == quiet


def test_word_vectors_progress_bar_leaves_the_figures(checkpoint, capsys):
    pre = load_pretrained(checkpoint)
    assert WordEmbedder(pre, "en", "encoder").sentences.options.progress is False
    inputs = WordEvalInputs("en", "fr", [(f"e{i}", f"f{i}") for i in range(10)])
    capsys.readouterr()
    quiet = evaluate_dictionary(pre, inputs, vectors="encoder")
    assert "embed en" not in capsys.readouterr().err
    shown = evaluate_dictionary(pre, inputs, vectors="encoder", progress=True)
    assert "embed en" in capsys.readouterr().err
    assert shown == quiet
