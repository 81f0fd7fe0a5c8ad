"""BLEU equals sacreBLEU's own command-line figure, detokenized and tokenized."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xlm.cli import main
from xlm.errors import DataError
from xlm.evaluation.bleu import bleu_files, corpus_bleu

HYP = """The cat sat on the mat.
There is a house in New Orleans, they call the Rising Sun.
Machine translation is hard , isn't it?
L'hôtel est fermé le dimanche.
"""
REF = """The cat is sitting on the mat.
There is a house in New Orleans they call the Rising Sun.
Machine translation is difficult, isn't it?
L'hôtel est fermé le dimanche et le lundi.
"""


def sacrebleu_cli(ref: Path, hyp: Path, *options: str) -> float:
    exe = shutil.which("sacrebleu", path=str(Path(sys.executable).parent)) or shutil.which("sacrebleu")
    assert exe, "the sacrebleu command is installed with the sacrebleu package"
    out = subprocess.run(
        [exe, str(ref), "-i", str(hyp), "-b", "-w", "6", *options], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip())


@pytest.fixture
def files(tmp_path):
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp.write_text(HYP, encoding="utf-8")
    ref.write_text(REF, encoding="utf-8")
    return hyp, ref


@pytest.mark.slow  # runs the sacrebleu command
@pytest.mark.parametrize(
    "tokenize,lowercase,options",
    [("13a", False, ()), ("none", False, ("-tok", "none")), ("13a", True, ("-lc",))],
)
def test_bleu_equals_sacrebleu_command_line(files, tokenize, lowercase, options):
    hyp, ref = files
    ours = bleu_files(hyp, ref, tokenize, lowercase)
    assert 0 < ours.score < 100
    assert ours.score == pytest.approx(sacrebleu_cli(ref, hyp, *options), abs=1e-5)


def test_detokenized_and_tokenized_bleu_differ_as_expected():
    hyp = ["Hello , world !"]
    ref = ["Hello, world!"]
    # sacreBLEU's 13a tokenizer splits the punctuation of the reference: a perfect match
    assert corpus_bleu(hyp, ref, "13a").score == pytest.approx(100.0)
    # on tokenized text nothing is split: "Hello," is not "Hello"
    assert corpus_bleu(hyp, ref, "none").score < 100.0
    assert corpus_bleu(["a b c d"], ["a b c d"], "none").score == pytest.approx(100.0)


@pytest.mark.slow  # runs the sacrebleu command
def test_cli_hyp_ref_json(files, tmp_path, capsys):
    hyp, ref = files
    out = tmp_path / "bleu.json"
    assert main(["evaluate", "bleu", "--hyp", str(hyp), "--ref", str(ref), "--name", "en-fr", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["en-fr/bleu"] == pytest.approx(sacrebleu_cli(ref, hyp), abs=1e-5)
    assert "BLEU" in capsys.readouterr().out


def test_misaligned_files_are_an_error(files, tmp_path, capsys):
    hyp, _ = files
    short = tmp_path / "short.txt"
    short.write_text("one line\n", encoding="utf-8")
    with pytest.raises(DataError, match="line by line"):
        bleu_files(hyp, short)
    assert main(["evaluate", "bleu", "--hyp", str(hyp), "--ref", str(short)]) == 1
    assert "must align line by line" in capsys.readouterr().err
    with pytest.raises(DataError, match="unknown BLEU tokenization"):
        corpus_bleu(["a"], ["a"], tokenize="moses")
