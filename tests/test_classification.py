"""Cross-lingual classification: format readers, the head on the first position, labels
stored with the model, and a tiny end-to-end fine-tune on the tiny_data checkpoint."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from xlm.cli import main
from xlm.config import load_config
from xlm.data.classification import build_row, encode_set, pretokenized_encoder, read_examples
from xlm.errors import DataError
from xlm.model.pretrained import load_pretrained
from xlm.tasks.classification import ClassifierHead, ClassifyConfig, classify_logits, load_classifier, make_batch
from xlm.tasks.pretraining import PretrainConfig
from xlm.text.vocab import EOS_INDEX
from xlm.training.runner import run_training

ROOT = Path(__file__).resolve().parents[1]

# train.threads=1 (fast on a busy machine) sets torch's global thread count: restore it
pytestmark = pytest.mark.usefixtures("restore_threads")


def write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- readers


def test_tsv_single_pair_and_gzip(tmp_path):
    single = read_examples(write(tmp_path / "a.tsv.gz", "calc\tA cell.\n\nwriter\tA page.\n"), "en")
    assert [(e.label, e.text, e.text_b, e.line) for e in single.examples] == [
        ("calc", "A cell.", None, 1),
        ("writer", "A page.", None, 3),
    ]
    pair = read_examples(write(tmp_path / "p.tsv", "entailment\tA man sleeps.\tSomeone sleeps.\n"), "fr")
    assert pair.examples[0].text_b == "Someone sleeps." and pair.lang == "fr"


def test_tsv_malformed_line_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.tsv", "calc\tone\nwriter\ttwo\ndraw three\n")
    with pytest.raises(DataError, match=r"bad\.tsv:3: expected 2 tab-separated columns"):
        read_examples(path, "en")
    with pytest.raises(DataError, match=r"empty\.tsv:1: empty text"):
        read_examples(write(tmp_path / "empty.tsv", "calc\t \n"), "en")


def test_xnli_header_selects_language(tmp_path):
    header = "language\tgold_label\tsentence1_binary_parse\tsentence1\tsentence2\tpairID\n"
    rows = [
        "en\tneutral\t( x )\tA dog runs.\tA dog plays.\t1",
        "fr\tentailment\t( x )\tUn chien court.\tUn chien bouge.\t1",
        "fr\tcontradiction\t( x )\tIl pleut.\tIl fait sec.\t2",
    ]
    path = write(tmp_path / "xnli.test.tsv", header + "\n".join(rows) + "\n")
    fr = read_examples(path, "fr", "xnli")
    assert [(e.label, e.text, e.text_b, e.line) for e in fr.examples] == [
        ("entailment", "Un chien court.", "Un chien bouge.", 3),
        ("contradiction", "Il pleut.", "Il fait sec.", 4),
    ]
    with pytest.raises(DataError, match=r"no rows of language 'de'.*\['en', 'fr'\]"):
        read_examples(path, "de", "xnli")
    with pytest.raises(DataError, match=r"x2\.tsv:1: header lacks column\(s\) \['language'\]"):
        read_examples(write(tmp_path / "x2.tsv", "gold_label\tsentence1\tsentence2\n"), "en", "xnli")
    with pytest.raises(DataError, match=r"x3\.tsv:2: expected 6 tab-separated columns"):
        read_examples(write(tmp_path / "x3.tsv", header + "en\tneutral\tA\tB\n"), "en", "xnli")


def test_mnli_jsonl_skips_and_counts_dash_labels(tmp_path):
    lines = [
        {"gold_label": "neutral", "sentence1": "A b.", "sentence2": "C d.", "genre": "fiction"},
        {"gold_label": "-", "sentence1": "E f.", "sentence2": "G h."},
        {"gold_label": "entailment", "sentence1": "I j.", "sentence2": "K l."},
    ]
    path = write(tmp_path / "mnli.jsonl", "".join(json.dumps(x) + "\n" for x in lines))
    data = read_examples(path, "en", "mnli-jsonl")
    assert [e.label for e in data.examples] == ["neutral", "entailment"] and data.skipped == 1
    assert data.examples[1].line == 3
    with pytest.raises(DataError, match=r"bad\.jsonl:2: not valid JSON"):
        read_examples(write(tmp_path / "bad.jsonl", json.dumps(lines[0]) + "\n{oops\n"), "en", "mnli-jsonl")
    with pytest.raises(DataError, match=r"miss\.jsonl:1: missing string field\(s\) \['sentence2'\]"):
        read_examples(
            write(tmp_path / "miss.jsonl", '{"gold_label": "neutral", "sentence1": "x"}\n'), "en", "mnli-jsonl"
        )


def test_mnli_tsv(tmp_path):
    text = "gold_label\tsentence1\tsentence2\tgenre\nneutral\tA.\tB.\tx\n-\tC.\tD.\tx\n"
    data = read_examples(write(tmp_path / "mnli.txt", text), "en", "mnli-tsv")
    assert len(data) == 1 and data.skipped == 1 and data.examples[0].text_b == "B."


def test_pair_layout_and_truncation():
    assert build_row([7, 8], [9], 16).tolist() == [EOS_INDEX, 7, 8, EOS_INDEX, 9, EOS_INDEX]
    row = build_row(list(range(20, 40)), [5, 6], 10)
    assert len(row) == 10 and row.tolist()[-4:] == [EOS_INDEX, 5, 6, EOS_INDEX]
    assert build_row(list(range(20, 40)), None, 6).tolist() == [EOS_INDEX, 20, 21, 22, 23, EOS_INDEX]


def test_raw_text_is_normalized_and_bpe_encoded_with_the_model_vocabulary(tmp_path):
    from xlm.tasks.classification import text_encoder
    from xlm.text.bpe import learn_bpe
    from xlm.text.vocab import UNK_INDEX

    corpus = write(tmp_path / "en.txt", "the cell is red .\nthe page is blue .\n" * 20)
    learn_bpe({"en": [corpus]}, tmp_path / "vocab", vocab_size=60)
    encode = text_encoder(tmp_path / "vocab", "en", False, pretokenized=False)
    ids = encode(["The cell is blue."])[0]  # Moses splits the final full stop
    assert ids and UNK_INDEX not in ids[1:]
    assert encode(["The cell is blue."]) == text_encoder(tmp_path / "vocab", "en", False, False)(["The cell is blue ."])


# --------------------------------------------------------------------------- model


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_data, tiny_config_overrides, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cls_pretrain") / "run"
    run_training(
        load_config(PretrainConfig, None, tiny_config_overrides(tiny_data, out, steps=6) + ["train.threads=1"])
    )
    return out / "final"


def test_head_reads_first_position_and_sees_the_rest_only_through_attention(tiny_checkpoint):
    torch.manual_seed(0)
    model = load_pretrained(tiny_checkpoint).model.eval()
    head = ClassifierHead(model.cfg.emb_dim, 3, dropout=0.5).eval()
    hidden = torch.randn(2, 5, model.cfg.emb_dim)
    changed = hidden.clone()
    changed[:, 1:] = torch.randn(2, 4, model.cfg.emb_dim)
    assert torch.equal(head(hidden), head(changed))
    assert torch.allclose(head(hidden), head.proj(hidden[:, 0]))

    a = make_batch([np.array([1, 20, 21, 22, 1])], [0], [0])
    b = make_batch([np.array([1, 30, 31, 32, 1])], [0], [0])
    with torch.no_grad():
        assert not torch.allclose(classify_logits(model, head, a), classify_logits(model, head, b))
        for layer in model.layers:  # without attention, position 0 cannot see other tokens
            layer.attn.out.weight.zero_()
            layer.attn.out.bias.zero_()
        assert torch.allclose(classify_logits(model, head, a), classify_logits(model, head, b))


def test_unknown_test_label_is_an_error_with_file_and_line(tmp_path, tiny_checkpoint):
    vocab = load_pretrained(tiny_checkpoint).vocab
    data = read_examples(write(tmp_path / "test.fr.tsv", "a\tf1</w>\nzzz\tf2</w>\n"), "fr")
    with pytest.raises(DataError, match=r"test\.fr\.tsv:2: label 'zzz' was not seen in the training data"):
        encode_set(data, pretokenized_encoder(vocab), {"a": 0, "b": 1}, 1, 32)


# --------------------------------------------------------------------------- end to end


def toy_set(path: Path, prefix: str, n: int, seed: int) -> Path:
    """Separable toy data in the tiny vocabulary: words 0-19 -> 'low', 20-39 -> 'high'."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n):
        high = bool(rng.random() < 0.5)
        words = rng.integers(20, 40, size=rng.integers(3, 7)) if high else rng.integers(0, 20, size=rng.integers(3, 7))
        lines.append(("high" if high else "low") + "\t" + " ".join(f"{prefix}{w}</w>" for w in words))
    return write(path, "\n".join(lines) + "\n")


def test_finetune_end_to_end(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    train = toy_set(tmp_path / "train.en.tsv", "e", 240, 1)
    valid = toy_set(tmp_path / "valid.en.tsv", "e", 40, 2)
    test_en = toy_set(tmp_path / "test.en.tsv", "e", 60, 3)
    test_fr = toy_set(tmp_path / "test.fr.tsv", "f", 60, 3)
    out = tmp_path / "cls"
    code = main(
        [
            "finetune", "classify", str(tiny_checkpoint),
            "--train", f"en={train}", "--valid", f"en={valid}",
            "--test", f"en={test_en}", "--test", f"fr={test_fr}",
            "--pretokenized", "--epochs", "3", "--out", str(out),
            "--json", str(tmp_path / "acc.json"), "--plot", str(tmp_path / "acc.png"),
            "optim.lr=0.001", "finetune.head_lr=0.003", "optim.warmup_steps=5", "optim.schedule=constant",
            "data.max_tokens=64", "data.max_len=32", "train.progress=false", "train.threads=1",
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "zero-shot" in printed and "average" in printed
    acc = json.loads((tmp_path / "acc.json").read_text())
    assert set(acc) == {"en", "fr", "average"}
    assert acc["en"] > 75.0, acc  # chance is ~50%
    assert (tmp_path / "acc.png").stat().st_size > 0

    # the best epoch is a self-contained, loadable model with its labels
    best = out / "best"
    assert json.loads((best / "labels.json").read_text()) == {"labels": ["high", "low"]}
    assert {"model.safetensors", "head.safetensors", "model.json", "vocab.json", "merges.txt"} <= {
        p.name for p in best.iterdir()
    }
    clf = load_classifier(out)  # the run folder resolves to best/
    assert clf.labels == ["high", "low"] and clf.pretrained.info.extra["classifier"]["train_languages"] == ["en"]
    load_pretrained(best)  # the encoder alone is an ordinary pretrained checkpoint

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"e30</w> e31</w> e35</w>\ne1</w> e2</w>\n")))
    assert main(["classify", str(out), "--lang", "en", "--pretokenized", "--probs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("high\thigh:") and lines[1].startswith("low\t")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"e30</w> e31</w> e35</w>\ne1</w> e2</w>\n")))
    assert main(["classify", str(out), "--lang", "en", "--pretokenized", "--precision", "bf16"]) == 0
    assert capsys.readouterr().out.splitlines() == ["high", "low"]

    # baseline from random initialisation, and the error for a language the model lacks
    code = main(
        ["finetune", "classify", str(tiny_checkpoint), "--train", f"en={train}", "--test", f"fr={test_fr}",
         "--pretokenized", "--random-init", "--out", str(tmp_path / "rand"), "train.max_steps=2",
         "data.max_tokens=256", "data.max_len=32", "train.progress=false", "train.threads=1"]
    )  # fmt: skip
    assert code == 0 and json.loads((tmp_path / "rand" / "results.json").read_text())["accuracy"]["fr"] >= 0
    assert main(["finetune", "classify", str(tiny_checkpoint), "--train", f"xx={train}", "--pretokenized"]) == 1
    assert "'xx' is not one of the model's languages" in capsys.readouterr().err


def test_shipped_config_is_valid():
    cfg = load_config(ClassifyConfig, ROOT / "configs" / "classify_libreoffice.toml")
    assert cfg.data.train and "fr" in cfg.data.test and cfg.train.stopping_metric == "valid/acc"


def test_encoder_and_head_learning_rates():
    from xlm.training.optim import OptimConfig, build_optimizer, set_lr

    encoder, head = torch.nn.Linear(4, 4), ClassifierHead(4, 2)
    plain = build_optimizer([encoder, head], OptimConfig())
    assert len(plain.param_groups) == 2 and all("lr_scale" not in g for g in plain.param_groups)
    opt = build_optimizer([encoder, head], OptimConfig(), lr_scale={1: 10.0})
    set_lr(opt, 1e-4)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert lr_of[id(encoder.weight)] == pytest.approx(1e-4) and lr_of[id(encoder.bias)] == pytest.approx(1e-4)
    assert lr_of[id(head.proj.weight)] == pytest.approx(1e-3) and lr_of[id(head.proj.bias)] == pytest.approx(1e-3)


def test_fine_tuning_defaults_scale_with_the_model_and_the_data():
    from xlm.tasks.classification import AUTO_LR_MAX, PAPER_LR, auto_epochs, auto_learning_rate

    assert auto_learning_rate(1024) == pytest.approx(PAPER_LR)  # the paper's XNLI setting for its model
    assert auto_learning_rate(512) > auto_learning_rate(1024)  # smaller models take larger steps
    assert auto_learning_rate(256) <= AUTO_LR_MAX and auto_learning_rate(64) == AUTO_LR_MAX
    assert auto_epochs(15, 600) == 40  # 1,000 examples in 15 batches: many passes
    assert auto_epochs(1000, 600) == 2  # a large training set: two passes, as the paper


def _finetune_argv(tmp_path, checkpoint, *extra):
    train = toy_set(tmp_path / "train.en.tsv", "e", 120, 1)
    test_fr = toy_set(tmp_path / "test.fr.tsv", "f", 30, 3)
    return [
        "finetune", "classify", str(checkpoint), "--train", f"en={train}", "--test", f"fr={test_fr}",
        "--pretokenized", "data.max_tokens=128", "data.max_len=32", "train.progress=false", "train.threads=1",
        *extra,
    ]  # fmt: skip


def test_auto_settings_are_printed(tmp_path, tiny_checkpoint, capsys):
    assert main(_finetune_argv(tmp_path, tiny_checkpoint, "--out", str(tmp_path / "a"), "train.max_steps=2")) == 0
    out = capsys.readouterr().err  # status lines go to stderr
    assert "fine-tuning: encoder lr 0.001 (auto: 32-dim model); head lr 0.001 (auto);" in out
    assert "epochs (auto: at least 600 updates)" in out


def test_frozen_parts_do_not_move_and_centering_and_xlco_run(tmp_path, tiny_checkpoint, tiny_data):
    from safetensors.torch import load_file

    out = tmp_path / "frozen"
    argv = _finetune_argv(
        tmp_path, tiny_checkpoint, "--out", str(out), "train.max_steps=4", "finetune.freeze_embeddings=true",
        "finetune.freeze_layers=1", "finetune.center=true", 'finetune.pooling="mean"',
        'finetune.xlco_pairs=["en-fr"]', f'finetune.xlco_data="{tiny_data}"', "finetune.xlco_batch_size=4",
    )  # fmt: skip
    assert main(argv) == 0
    before = load_file(str(tiny_checkpoint / "model.safetensors"))
    after = load_file(str(out / "final" / "model.safetensors"))
    for name in (
        "embeddings.weight",
        "position_embeddings.weight",
        "lang_embeddings.weight",
        "layers.0.ffn.lin1.weight",
    ):
        assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["layers.1.ffn.lin1.weight"], after["layers.1.ffn.lin1.weight"])
    losses = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("loss/cls+xlco" in r for r in losses)
    clf = load_classifier(out / "final")
    assert clf.info.extra["classifier"]["center"] is True and clf.head.pooling == "mean"


def test_xlco_during_fine_tuning_bad_input(tmp_path, tiny_checkpoint, tiny_data, capsys):
    argv = _finetune_argv(tmp_path, tiny_checkpoint, "--out", str(tmp_path / "b"), 'finetune.xlco_pairs=["en-fr"]')
    assert main(argv) == 1 and "finetune.xlco_data: give the `xlm prepare` directory" in capsys.readouterr().err
    argv = _finetune_argv(tmp_path, tiny_checkpoint, "--out", str(tmp_path / "c"), 'finetune.xlco_pairs=["en"]')
    assert main(argv) == 1 and "'en' is not a pair of languages" in capsys.readouterr().err


def test_centered_classifier_stores_language_means_for_classify(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    """`xlm classify` subtracts the mean stored at the end of fine-tuning, so one line is
    classified as it would be among many (not centered on itself)."""
    out = tmp_path / "m"
    assert main(_finetune_argv(tmp_path, tiny_checkpoint, "--out", str(out), "train.max_steps=3")) == 0
    clf = load_classifier(out)
    assert set(clf.language_means) == {"fr"} and clf.language_means["fr"].shape == (32,)
    verify = __import__("xlm.training.checkpoint", fromlist=["verify_checkpoint"]).verify_checkpoint
    verify(out / "final")  # the means are listed in the manifest
    rows = [np.array([EOS_INDEX, 14 + 40 + w, EOS_INDEX]) for w in (1, 2, 3)]
    alone = np.stack([clf.predict_probs([r], "fr")[0] for r in rows])
    together = clf.predict_probs(rows, "fr")
    np.testing.assert_allclose(alone, together, atol=1e-5)
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"e1</w> e2</w>\n")))
    assert main(["classify", str(out), "--lang", "en", "--pretokenized"]) == 0
    assert "no stored en mean" in capsys.readouterr().err
