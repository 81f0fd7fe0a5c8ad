"""Translate-test (the paper's other XNLI setting): test sets translated into the
fine-tuning language by one of our translation checkpoints, then classified."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from xlm.cli import main
from xlm.config import load_config
from xlm.data.classification import read_examples
from xlm.model.classifier import load_classifier
from xlm.tasks.classification import classifier_accuracy, translate_test
from xlm.tasks.pretraining import run_training
from xlm.tasks.translation import MTConfig, run_mt_training

pytestmark = pytest.mark.usefixtures("restore_threads")


def raw_set(path: Path, prefix: str, n: int, seed: int, pairs: bool = False) -> Path:
    """Raw-text toy examples: words 0-19 -> 'low', 20-39 -> 'high' (e.g. 'e23 e31 e20')."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n):
        high = bool(rng.random() < 0.5)
        lo, hi = (20, 40) if high else (0, 20)
        text = " ".join(f"{prefix}{w}" for w in rng.integers(lo, hi, size=rng.integers(3, 7)))
        second = "\t" + " ".join(f"{prefix}{w}" for w in rng.integers(lo, hi, size=3)) if pairs else ""
        lines.append(f"{'high' if high else 'low'}\t{text}{second}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def models(tiny_data, tmp_path_factory, with_bpe_merges, pretrain_config):
    """A pretrained en/fr model whose vocabulary encodes raw text, an English classifier
    fine-tuned from it, and a (barely trained) fr->en translation model from it."""
    root = tmp_path_factory.mktemp("translate_test")
    data = with_bpe_merges(tiny_data, root / "data")
    run_training(pretrain_config(data, root / "pre", 4, "train.threads=1"))
    pretrained = root / "pre" / "final"
    mt = [
        f'data.path="{data}"', "data.max_tokens=300", "data.max_len=30", 'objectives.mt=["fr-en"]',
        f'init.pretrained="{pretrained}"', "train.max_steps=2", f'train.out_dir="{root / "mt"}"', "train.eval_every=0",
        "train.save_every=0", "train.progress=false", "train.eval_at_start=false", "train.threads=1",
        'eval.splits=["valid"]', "eval.max_sentences=2", "optim.warmup_steps=1",
    ]  # fmt: skip
    run_mt_training(load_config(MTConfig, None, mt))
    files = {
        "train": raw_set(root / "train.en.tsv", "e", 120, 1),
        "en": raw_set(root / "test.en.tsv", "e", 30, 3),
        "fr": raw_set(root / "test.fr.tsv", "f", 30, 4),
        "fr_en_words": raw_set(root / "test.fr_as_en.tsv", "e", 30, 5),  # 'French' that is English already
        "pairs": raw_set(root / "test.pairs.tsv", "f", 10, 6, pairs=True),
    }
    return {"pretrained": pretrained, "mt": root / "mt" / "final", "root": root, **files}


def finetune_argv(m, out: Path, *extra: str) -> list[str]:
    return [
        "finetune", "classify", str(m["pretrained"]), "--train", f"en={m['train']}",
        "--test", f"en={m['en']}", "--test", f"fr={m['fr']}", "--out", str(out),
        "data.max_tokens=128", "data.max_len=32", "train.progress=false", "train.threads=1", "train.max_steps=20",
        *extra,
    ]  # fmt: skip


def test_finetune_reports_translate_test_beside_zero_shot(models, tmp_path, capsys):
    out = tmp_path / "cls"
    assert main([*finetune_argv(models, out), "--translate-test", str(models["mt"])]) == 0
    printed = capsys.readouterr().out
    assert "translate-test" in printed and "zero-shot %" in printed
    results = json.loads((out / "results.json").read_text())
    tt = results["translate_test"]
    assert tt["mt_checkpoint"] == str(models["mt"]) and set(tt["accuracy"]) == {"fr", "average"}
    assert 0 <= tt["accuracy"]["fr"] <= 100 and set(results["accuracy"]) == {"en", "fr", "average"}


def test_translate_test_classifies_the_translations_as_the_fine_tuning_language(models, tmp_path, monkeypatch):
    out = tmp_path / "cls"
    assert main(finetune_argv(models, out)) == 0
    clf = load_classifier(out)
    calls = []

    def identity(tr, lines, src, tgt, *args, **kwargs):
        calls.append((src, tgt, list(lines)))
        return list(lines), 0

    monkeypatch.setattr("xlm.model.generation.translate_text", identity)
    # an identity "translation" of a set whose words are English: the accuracy of the English classifier on it
    tt = translate_test(out, models["mt"], {"en": str(models["en"]), "fr": str(models["fr_en_words"])})
    assert set(tt) == {"fr", "average"} and [c[:2] for c in calls] == [("fr", "en")]
    assert tt["fr"] == classifier_accuracy(clf, read_examples(models["fr_en_words"], "en"))
    # pairs: both sides are translated, and each goes back to its place
    calls.clear()
    translate_test(out, models["mt"], {"fr": str(models["pairs"])})
    pairs = read_examples(models["pairs"], "fr").examples
    assert calls[0][2] == [e.text for e in pairs] + [e.text_b for e in pairs]


def test_classify_command_translates_first(models, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cls"
    assert main(finetune_argv(models, out)) == 0
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"f30 f31 f35\nf1 f2\tf3 f4\n")))
    capsys.readouterr()
    assert main(["classify", str(out), "--lang", "fr", "--translate-test", str(models["mt"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and set(lines) <= {"high", "low"}
    assert main(["classify", str(out), "--lang", "fr", "--translate-test", str(models["mt"]), "--pretokenized"]) == 1
    assert "does not go with --pretokenized" in capsys.readouterr().err
