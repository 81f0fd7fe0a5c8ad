"""Machine translation: auto-encoder noise, weight schedules, initialisation from a
pretrained model, a tiny model that learns a handful of pairs, and exact resume."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from xlm.checkpoint_io import save_checkpoint
from xlm.cli import main
from xlm.config import ConfigError, load_config
from xlm.model.pretrained import ModelInfo, write_model_files
from xlm.model.seq2seq import load_translator
from xlm.model.transformer import ModelConfig, TransformerModel
from xlm.objectives.translation import NoiseConfig, add_noise, blank_words, drop_words, shuffle_words
from xlm.tasks.translation import MTConfig, MTTask, parse_schedule, run_mt_training, schedule_value
from xlm.text.vocab import EOS_INDEX, MASK_INDEX

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- noise


def test_shuffle_never_moves_a_word_k_positions_or_more():
    rng = np.random.default_rng(0)
    moved = 0
    for k in (1, 2, 3, 5):
        for n in range(1, 30):
            words = np.arange(100, 100 + n)
            out = shuffle_words(words, k, rng)
            assert sorted(out.tolist()) == words.tolist()  # a permutation
            displacement = np.abs(np.argsort(out) - np.arange(n))
            assert displacement.max() < k
            moved += int((displacement > 0).sum())
    assert moved > 0
    assert shuffle_words(np.arange(5), 0, rng).tolist() == list(range(5))


def test_drop_and_blank_rates():
    rng = np.random.default_rng(1)
    words = np.arange(14, 214)
    n, dropped, blanked = 0, 0, 0
    for _ in range(100):
        kept = drop_words(words, 0.1, rng)
        dropped += len(words) - len(kept)
        blanked += int((blank_words(words, 0.1, MASK_INDEX, rng) == MASK_INDEX).sum())
        n += len(words)
    assert dropped / n == pytest.approx(0.1, abs=0.01)  # 20,000 words: sd of the rate ~0.002
    assert blanked / n == pytest.approx(0.1, abs=0.01)
    # a sentence never loses all its words
    for _ in range(50):
        assert len(drop_words(np.array([20, 21]), 0.95, rng)) >= 1


def test_noise_keeps_sentence_boundaries():
    rng = np.random.default_rng(2)
    cfg = NoiseConfig()
    for n in range(1, 25):
        row = np.concatenate(([EOS_INDEX], np.arange(20, 20 + n), [EOS_INDEX]))
        out = add_noise(row, cfg, rng)
        assert out[0] == EOS_INDEX and out[-1] == EOS_INDEX
        assert EOS_INDEX not in out[1:-1].tolist()
        assert 1 <= len(out) - 2 <= n
        assert set(out[1:-1].tolist()) <= set(row[1:-1].tolist()) | {MASK_INDEX}
    plain = NoiseConfig(word_shuffle=0, word_dropout=0, word_blank=0)
    row = np.array([EOS_INDEX, 20, 21, 22, EOS_INDEX])
    assert add_noise(row, plain, rng).tolist() == row.tolist()


# --------------------------------------------------------------------------- config


def test_weight_schedules():
    points = parse_schedule("0:1,100:0.1,300:0")
    assert schedule_value(points, 0) == 1.0
    assert schedule_value(points, 50) == pytest.approx(0.55)
    assert schedule_value(points, 100) == pytest.approx(0.1)
    assert schedule_value(points, 200) == pytest.approx(0.05)
    assert schedule_value(points, 10_000) == 0.0
    assert parse_schedule(0.5) == [(0, 0.5)] and parse_schedule("2") == [(0, 2.0)]
    for bad in ("0:1,0:2", "a:b", "0:1;5:2", "0:-1"):
        with pytest.raises(ValueError):
            parse_schedule(bad)


def test_config_errors_name_the_field(tiny_data, tmp_path, mt_config):
    with pytest.raises(ConfigError, match=r"objectives\.bt.*a-b-a"):
        load_config(MTConfig, None, ['objectives.bt=["en-fr-de"]'])
    with pytest.raises(ConfigError, match=r"objectives\.mt.*must differ"):
        load_config(MTConfig, None, ['objectives.mt=["en-en"]'])
    with pytest.raises(ConfigError, match=r"objectives\.ae_weight"):
        load_config(MTConfig, None, ['objectives.ae=["en"]', 'objectives.ae_weight="0:1,10"'])
    cfg = mt_config(tiny_data, tmp_path, ['objectives.mt=["en-de"]'])
    with pytest.raises(ConfigError, match="'de' is not one of"):
        MTTask(cfg, 0)


# --------------------------------------------------------------------------- pretrained initialisation


@pytest.fixture
def mt_config(mt_overrides):
    """Factory: ``mt_config(data, out, extra=(), steps=6)``, the MTConfig of a tiny translation run."""
    return lambda data, out, extra=(), steps=6: load_config(MTConfig, None, mt_overrides(data, out, extra, steps))


def fake_pretrained(data: Path, out: Path) -> Path:
    """A pretraining checkpoint (random weights) over the tiny corpus' vocabulary."""
    torch.manual_seed(0)
    vocab_size = len(json.loads((data / "vocab.json").read_text()))
    cfg = ModelConfig(vocab_size=vocab_size, n_langs=2, emb_dim=32, n_layers=2, n_heads=2, max_positions=64)
    model = TransformerModel(cfg)
    info = ModelInfo(cfg, {"en": 0, "fr": 1})
    return save_checkpoint(out, lambda tmp: write_model_files(tmp, model, info, data))


@pytest.mark.parametrize("share", [False, True])
def test_init_from_pretrained_reports_loaded_and_new_weights(tiny_data, tmp_path, capsys, share, mt_config):
    pre = fake_pretrained(tiny_data, tmp_path / "pretrained")
    extra = ['objectives.mt=["en-fr"]', f'init.pretrained="{pre}"', f"model.share_embeddings={str(share).lower()}"]
    task = MTTask(mt_config(tiny_data, tmp_path / "run", extra), 0)
    report = task.report
    assert report is not None
    printed = capsys.readouterr().out
    assert "encoder: 30 tensors loaded, 0 new" in printed
    new = "freshly initialised: layers.*.cross_attn (12 tensors), layers.*.norm_cross (4 tensors)"
    assert f"decoder: 30 tensors loaded, 16 new ({new})" in printed
    parts = ("cross_attn.q", "cross_attn.kv", "cross_attn.out", "norm_cross")
    assert set(report.new["decoder"]) == {
        f"layers.{i}.{m}.{p}" for i in range(2) for m in parts for p in ("weight", "bias")
    }
    assert report.new["encoder"] == [] and report.unused == {"encoder": [], "decoder": []}
    from safetensors.torch import load_file

    source = load_file(str(pre / "model.safetensors"))
    for side in (task.model.encoder, task.model.decoder):
        state = side.state_dict()
        assert all(torch.equal(state[k], source[k]) for k in source)
    assert (task.model.encoder.embeddings.weight is task.model.decoder.embeddings.weight) == share


def test_shared_embeddings_survive_a_checkpoint(tiny_data, tmp_path, mt_config):
    extra = ['objectives.mt=["en-fr"]', "model.share_embeddings=true"]
    cfg = mt_config(tiny_data, tmp_path / "run", extra)
    task = MTTask(cfg, 0)
    folder = save_checkpoint(tmp_path / "ckpt", task.write_model_files)
    loaded = load_translator(folder)
    assert loaded.model.decoder.embeddings.weight is loaded.model.encoder.embeddings.weight
    ref, got = task.model.state_dict(), loaded.model.state_dict()
    assert "decoder.embeddings.weight" not in got and set(ref) == set(got)
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_a_language_model_is_not_a_translator(tiny_data, tmp_path):
    pre = fake_pretrained(tiny_data, tmp_path / "pretrained")
    with pytest.raises(Exception, match="not a translation model"):
        load_translator(pre)


# --------------------------------------------------------------------------- training


@pytest.fixture
def handful_of_pairs(make_tiny_prepared, tmp_path) -> Path:
    """Eight en-fr pairs, used for training and as the valid and test sets."""
    data = make_tiny_prepared(tmp_path / "data", n_train=8, n_valid=8, seed=3)
    for split in ("valid", "test"):
        for path in data.glob("train.*"):
            shutil.copyfile(path, data / path.name.replace("train.", f"{split}.", 1))
    return data


def test_tiny_model_learns_a_handful_of_pairs(handful_of_pairs, tmp_path, capsys, mt_config):
    data = handful_of_pairs
    run = tmp_path / "run"
    extra = [
        'objectives.mt=["en-fr"]',
        "model.dropout=0.0",
        "model.attention_dropout=0.0",
        "optim.lr=0.003",
        "optim.warmup_steps=10",
        'optim.schedule="constant"',
        "train.save_every=0",
        "train.eval_every=50",
        'train.stopping_metric="valid/bleu_norm/en-fr"',  # binarized test data: no raw references
        'train.stopping_mode="max"',
    ]
    metrics = run_mt_training(mt_config(data, run, extra, steps=100))
    assert metrics["valid/bleu_norm/en-fr"] > 90 and metrics["valid/bleu_tok/en-fr"] > 90
    assert "valid/bleu/en-fr" not in metrics  # BLEU against raw references needs the raw text
    assert metrics["valid/ppl/en-fr"] < 1.5
    assert (run / "best" / "model.safetensors").is_file() and (run / "hypotheses" / "valid.en-fr.txt").is_file()
    # the same figure from the command line, with beam search, on the test split
    out = tmp_path / "bleu.json"
    capsys.readouterr()
    assert main(["evaluate", "bleu", str(run / "final"), "--data", str(data), "--beam", "3", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert set(figures) == {"en-fr/bleu_norm", "en-fr/bleu_tok"} and figures["en-fr/bleu_norm"] > 90
    assert "en-fr" in capsys.readouterr().out


def test_resume_reproduces_the_same_losses(tiny_data, mt_config, straight_and_resumed):
    extra = [
        'objectives.mt=["en-fr"]',
        'objectives.ae=["en","fr"]',
        'objectives.bt=["en-fr-en"]',
        'objectives.ae_weight="0:1,4:0.5"',
        "eval.max_sentences=4",
    ]
    runs = straight_and_resumed(lambda out, steps: mt_config(tiny_data, out, extra, steps=steps), 8, run_mt_training)
    a, b = runs.straight_losses, runs.split_losses
    assert sorted(a) == list(range(1, 9)) and a == b
    assert {k for v in a.values() for k in v} == {"loss/mt/en-fr", "loss/ae/en", "loss/ae/fr", "loss/bt/en-fr-en"}
    wa = load_translator(runs.straight / "final").model.state_dict()
    wb = load_translator(runs.split / "final").model.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_raw_text_end_to_end_prepare_train_translate(tmp_path, capsys, memorised_pairs):
    """Raw text -> `xlm prepare` -> `xlm train-mt` -> `xlm translate` (normalize + BPE in,
    detokenized text out) and `xlm evaluate bleu --hyp --ref`, on four memorised pairs."""
    run = memorised_pairs.train(tmp_path, "--vocab-size", "200")
    capsys.readouterr()
    output = memorised_pairs.translate(run / "final", tmp_path)
    assert output.read_text().split("\n") == memorised_pairs.expected
    memorised_pairs.translate(run / "final", tmp_path, "--precision", "bf16")  # memorised: same words in bf16
    assert output.read_text().split("\n") == memorised_pairs.expected
    fr = memorised_pairs.fr
    ref = tmp_path / "ref.fr"
    ref.write_text("\n".join([fr[0], "", fr[2]]) + "\n")
    assert main(["evaluate", "bleu", "--hyp", str(output), "--ref", str(ref), "--json", str(tmp_path / "b.json")]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["hyp/bleu"] == pytest.approx(100.0)


def test_load_pretrained_refuses_a_translation_checkpoint_clearly(tiny_data, tmp_path, mt_config):
    from xlm.errors import CheckpointError
    from xlm.model.pretrained import load_pretrained

    run = tmp_path / "mt"
    run_mt_training(mt_config(tiny_data, run, ['objectives.mt=["en-fr"]'], steps=2))
    with pytest.raises(CheckpointError, match="is a translation model"):
        load_pretrained(run / "final")
