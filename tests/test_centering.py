"""Language-centered sentence embeddings: means computed, stored in a checkpoint (manifest
still verifies), loaded, checked against the model and subtracted; centering on the
evaluated set when nothing is stored; ``xlm center`` and the sweep script end to end."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from xlm import checkpoint_io as ckpt_mod
from xlm.checkpoint_io import (
    MANIFEST,
    add_file_to_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from xlm.cli import main
from xlm.errors import CheckpointError, XLMError
from xlm.evaluation.centering import (
    CENTERING_FILE,
    LanguageMeans,
    center_checkpoint,
    compute_from_prepared,
    compute_language_means,
    evenly_spaced,
    load_means,
    mean_for,
    read_sentences,
    store_means,
    stored_means,
)
from xlm.evaluation.embeddings import EmbedOptions, SentenceEncoder
from xlm.model.pretrained import ModelInfo, load_pretrained, write_model_files
from xlm.model.transformer import ModelConfig, TransformerModel
from xlm.text.vocab import Vocabulary

ROOT = Path(__file__).parent.parent
DIM, N_LAYERS = 32, 2


@pytest.fixture(scope="module")
def bpe_data(tiny_data, with_bpe_merges, tmp_path_factory) -> Path:
    return with_bpe_merges(tiny_data, tmp_path_factory.mktemp("centerbpe") / "data")


@pytest.fixture(scope="module")
def base_checkpoint(bpe_data, tiny_corpus, tmp_path_factory) -> Path:
    """A randomly initialised en/fr model saved as `xlm pretrain` saves one."""
    torch.manual_seed(0)
    vocab = Vocabulary.from_dir(bpe_data)
    cfg = ModelConfig(
        vocab_size=len(vocab), n_langs=2, emb_dim=DIM, n_layers=N_LAYERS, n_heads=2,
        max_positions=64, dropout=0.0, attention_dropout=0.0,
    )  # fmt: skip
    model = TransformerModel(cfg)
    info = ModelInfo(cfg, {lang: i for i, lang in enumerate(tiny_corpus.langs)})
    out = tmp_path_factory.mktemp("centerckpt") / "best"
    save_checkpoint(out, lambda tmp: write_model_files(tmp, model, info, bpe_data))
    return out


@pytest.fixture
def checkpoint(base_checkpoint, tmp_path) -> Path:
    """A private copy (tests add files to it)."""
    return Path(shutil.copytree(base_checkpoint, tmp_path / "ckpt"))


def _sentences(corpus, n: int, seed: int = 0) -> list[list[int]]:
    """``n`` random sentences of the tiny corpus's word numbers."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, corpus.n_words, size=int(rng.integers(3, 9))).tolist() for _ in range(n)]


def _fr_ids(corpus, sents: list[list[int]]) -> list[list[int]]:
    return [[corpus.word_id("fr", w) for w in s] for s in sents]


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_evenly_spaced():
    assert evenly_spaced(10, 5).tolist() == [0, 2, 4, 6, 8]
    assert evenly_spaced(3, 5).tolist() == [0, 1, 2]
    assert evenly_spaced(7, 0).tolist() == list(range(7))
    ids = evenly_spaced(1000, 333)
    assert len(set(ids.tolist())) == 333 and ids.max() < 1000


def test_means_are_computed_stored_loaded_and_subtracted(checkpoint, bpe_data, tiny_corpus):
    pre = load_pretrained(checkpoint)
    means = compute_from_prepared(pre, bpe_data, "train", max_sentences=50)
    assert means.languages == ["en", "fr"] and means.counts == {"en": 50, "fr": 50}
    assert (means.dim, means.n_layers, means.split) == (DIM, N_LAYERS, "train")
    # the means are the averages of the pooled vectors of the selected sentences, every layer
    sents = read_sentences(bpe_data, pre, "train", 50)
    raw = SentenceEncoder(pre, "fr", EmbedOptions(center=False)).pooled_layers(sents["fr"])
    for pooling in ("first", "mean"):
        assert raw[pooling].shape == (50, N_LAYERS + 1, DIM)
        got = means.means[(pooling, "fr")].numpy()
        np.testing.assert_allclose(got, raw[pooling].mean(0), atol=1e-5)
    assert not np.allclose(means.means[("first", "en")], means.means[("first", "fr")])  # language offsets

    path = store_means(checkpoint, means)
    assert path == checkpoint / CENTERING_FILE
    manifest = verify_checkpoint(checkpoint)  # still verifies, and lists the new file
    assert CENTERING_FILE in manifest["files"] and "model.safetensors" in manifest["files"]
    assert not [p for p in checkpoint.parent.iterdir() if p.name.startswith(".")]  # no temporaries left
    back = load_means(path, pre.info)
    for key, t in means.means.items():
        assert torch.equal(back.means[key], t)
    assert back.counts == means.counts and back.source == str(bpe_data)

    pre = load_pretrained(checkpoint)  # the checksums, the new file's included, verify
    ids = _fr_ids(tiny_corpus, _sentences(tiny_corpus, 12))
    for pooling, layers in (("first", (-1,)), ("mean", (1, 2)), ("mean", (0,))):
        raw = SentenceEncoder(pre, "fr", EmbedOptions(pooling=pooling, layers=layers, center=False)).encode_ids(ids)
        centered = SentenceEncoder(pre, "fr", EmbedOptions(pooling=pooling, layers=layers)).encode_ids(ids)
        mean = mean_for(back, "fr", pooling, layers)
        resolved = [N_LAYERS] if layers == (-1,) else list(layers)
        np.testing.assert_allclose(mean, back.means[(pooling, "fr")][resolved].mean(0).numpy(), atol=1e-6)
        np.testing.assert_allclose(raw - centered, np.broadcast_to(mean, raw.shape), atol=1e-5)
    enc = SentenceEncoder(pre, "fr", EmbedOptions(pooling="mean"))
    assert enc.centering_kind(12) == "stored"
    centered = enc.encode_ids(ids)
    np.testing.assert_array_equal(enc.center_set(centered), centered)  # stored means: no second centering


def test_stored_means_are_read_once_and_reread_when_replaced(checkpoint, bpe_data):
    pre = load_pretrained(checkpoint)
    assert stored_means(pre) is None
    sents = read_sentences(bpe_data, pre, "train", 20)
    first = compute_language_means(pre, sents, split="train")
    store_means(checkpoint, first)
    a = stored_means(pre)
    assert a is stored_means(pre)  # cached
    second = compute_language_means(pre, {k: v[:5] for k, v in sents.items()}, split="valid")
    store_means(checkpoint, second)
    b = stored_means(pre)
    assert b is not a and b.split == "valid" and b.counts == {"en": 5, "fr": 5}
    verify_checkpoint(checkpoint)


def _bad_means(langs: tuple[str, ...], dim: int = DIM, n_layers: int = N_LAYERS) -> LanguageMeans:
    means = {(p, lang): torch.zeros(n_layers + 1, dim) for p in ("first", "mean") for lang in langs}
    return LanguageMeans(means, {lang: 3 for lang in langs}, "train", "x", dim, n_layers)


@pytest.mark.parametrize(
    ("means", "message"),
    [
        (_bad_means(("en", "de")), r"for \['de', 'en'\] but the model's languages are \['en', 'fr'\]"),
        (_bad_means(("en", "fr"), dim=16), "dimension 16 but the model's emb_dim is 32"),
        (_bad_means(("en", "fr"), n_layers=4), "for 4 layers but the model has 2"),
    ],
)
def test_mismatched_stored_means_are_a_checkpoint_error_naming_the_file(
    checkpoint, means, message, tmp_path, capsys, tiny_corpus
):
    with pytest.raises(CheckpointError, match=message):
        store_means(checkpoint, means)  # refused before writing anything
    assert not (checkpoint / CENTERING_FILE).exists()
    add_file_to_checkpoint(checkpoint, CENTERING_FILE, means.to_bytes())  # as if written by another model
    pre = load_pretrained(checkpoint)
    with pytest.raises(CheckpointError, match=message) as err:
        SentenceEncoder(pre, "fr", EmbedOptions())
    assert str(err.value).startswith(f"{checkpoint / CENTERING_FILE}: ") and "\n" not in str(err.value)
    raw = SentenceEncoder(pre, "fr", EmbedOptions(center=False)).encode_ids(
        _fr_ids(tiny_corpus, _sentences(tiny_corpus, 3))
    )  # not read
    assert raw.shape == (3, DIM)
    text = tmp_path / "fr.txt"
    text.write_text("f1 f2 f3\nf4 f5\n")
    assert (
        main(["embed", str(checkpoint), "--lang", "fr", "--input", str(text), "--output", str(tmp_path / "v.npy")]) == 1
    )
    assert CENTERING_FILE in capsys.readouterr().err


def test_a_centering_file_outside_the_manifest_or_altered_is_refused(checkpoint, bpe_data):
    pre = load_pretrained(checkpoint)
    means = compute_language_means(pre, read_sentences(bpe_data, pre, "train", 5))
    (checkpoint / CENTERING_FILE).write_bytes(means.to_bytes())  # not through store_means
    with pytest.raises(CheckpointError, match="not listed in"):
        stored_means(pre)
    (checkpoint / CENTERING_FILE).unlink()
    store_means(checkpoint, means)
    data = bytearray((checkpoint / CENTERING_FILE).read_bytes())
    data[-1] ^= 1
    (checkpoint / CENTERING_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        stored_means(pre)


def test_a_failed_store_leaves_the_checkpoint_unchanged(checkpoint, bpe_data, monkeypatch):
    pre = load_pretrained(checkpoint)
    means = compute_language_means(pre, read_sentences(bpe_data, pre, "train", 5))
    before = _snapshot(checkpoint)

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt_mod, "_link_or_copy", fail)
    with pytest.raises(CheckpointError, match="could not add centering.safetensors"):
        store_means(checkpoint, means)
    assert _snapshot(checkpoint) == before
    assert [p.name for p in checkpoint.parent.iterdir()] == [checkpoint.name]  # no temporaries left
    with pytest.raises(ValueError):
        add_file_to_checkpoint(checkpoint, MANIFEST, b"{}")


def test_without_stored_means_sets_are_centered_on_themselves(checkpoint, tmp_path, capsys, tiny_corpus):
    sents = _sentences(tiny_corpus, 10, seed=3)
    text = tmp_path / "fr.txt"
    text.write_text("".join(" ".join(f"f{w}" for w in s) + "\n" for s in sents), encoding="utf-8")
    pre = load_pretrained(checkpoint)
    raw = SentenceEncoder(pre, "fr", EmbedOptions(pooling="mean", center=False)).encode_ids(_fr_ids(tiny_corpus, sents))
    enc = SentenceEncoder(pre, "fr", EmbedOptions(pooling="mean"))
    np.testing.assert_array_equal(
        enc.encode_ids(_fr_ids(tiny_corpus, sents)), raw
    )  # nothing stored: the API gives raw vectors
    np.testing.assert_allclose(enc.center_set(raw), raw - raw.mean(0), atol=1e-6)

    def embed(*extra: str, src: Path = text) -> np.ndarray:
        out = tmp_path / "v.npy"
        argv = [
            "embed",
            str(checkpoint),
            "--lang",
            "fr",
            "--input",
            str(src),
            "--output",
            str(out),
            "--pooling",
            "mean",
        ]
        assert main([*argv, *extra]) == 0
        return np.load(out)

    np.testing.assert_allclose(embed(), raw - raw.mean(0), atol=1e-5)
    assert "centering: subtracted the mean of these 10 sentences" in capsys.readouterr().err
    np.testing.assert_allclose(embed("--no-center"), raw, atol=1e-5)
    assert "centering: off" in capsys.readouterr().err
    one = tmp_path / "one.txt"
    one.write_text(text.read_text().splitlines()[0] + "\n")
    np.testing.assert_allclose(embed(src=one)[0], raw[0], atol=1e-5)  # one sentence: nothing to center on
    assert "centering: none" in capsys.readouterr().err

    # retrieval: each evaluated set minus its own mean
    tsv = tmp_path / "en-fr.tsv"
    tsv.write_text("".join(" ".join(f"e{w}" for w in s) + "\t" + " ".join(f"f{w}" for w in s) + "\n" for s in sents))
    raw_en = SentenceEncoder(pre, "en", EmbedOptions(pooling="mean", center=False)).encode_text(
        [line.split("\t")[0] for line in tsv.read_text().splitlines()]
    )
    from xlm.evaluation.retrieval import retrieval_metrics

    for extra, (x, y) in (([], (raw_en - raw_en.mean(0), raw - raw.mean(0))), (["--no-center"], (raw_en, raw))):
        js = tmp_path / "ret.json"
        argv = ["evaluate", "retrieval", str(checkpoint), "--pairs", f"en-fr={tsv}", "--pooling", "mean",
                "--json", str(js), *extra]  # fmt: skip
        assert main(argv) == 0
        got = json.loads(js.read_text())
        want = retrieval_metrics(x, y, "en", "fr")
        assert got == pytest.approx(want)
    err = capsys.readouterr().err
    assert "each evaluated set's own mean" in err and "centering: off" in err


def test_xlm_center_end_to_end(checkpoint, bpe_data, tiny_data, tmp_path, capsys, tiny_corpus):
    argv = ["center", str(checkpoint), "--prepared", str(bpe_data), "--max-sentences", "30", "--device", "cpu"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert str(checkpoint / CENTERING_FILE) in out and "en" in out and "fr" in out and "30" in out
    verify_checkpoint(checkpoint)
    pre = load_pretrained(checkpoint)
    means = stored_means(pre)
    assert means is not None and means.counts == {"en": 30, "fr": 30} and means.split == "train"

    sents = _sentences(tiny_corpus, 6, seed=4)
    text = tmp_path / "fr.txt"
    text.write_text("".join(" ".join(f"f{w}" for w in s) + "\n" for s in sents), encoding="utf-8")
    out_npy = tmp_path / "v.npy"
    assert main(["embed", str(checkpoint), "--lang", "fr", "--input", str(text), "--output", str(out_npy)]) == 0
    assert "subtracted the stored fr mean of 30 train sentences" in capsys.readouterr().err
    raw = SentenceEncoder(pre, "fr", EmbedOptions(center=False)).encode_ids(_fr_ids(tiny_corpus, sents))
    np.testing.assert_allclose(np.load(out_npy), raw - mean_for(means, "fr", "mean", (0,)), atol=1e-5)  # the defaults

    # the same function the pretraining runner calls; the result is deterministic
    before = (checkpoint / CENTERING_FILE).read_bytes()
    assert center_checkpoint(checkpoint, bpe_data, max_sentences=30) == checkpoint / CENTERING_FILE
    assert (checkpoint / CENTERING_FILE).read_bytes() == before

    # another vocabulary, a missing language, a bad option: one-line errors, checkpoint unchanged
    assert main(["center", str(checkpoint), "--prepared", str(tiny_data)]) == 1
    err = capsys.readouterr().err  # the one vocabulary check of every command: both hashes, the fix
    assert f"{tiny_data} was prepared with another vocabulary" in err and f"--vocab {checkpoint}`" in err
    assert main([*argv[:4], "--split", "nosuch"]) == 1
    assert "no nosuch monolingual data" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # argparse: out of range
        main([*argv, "--max-sentences", "-1"])
    assert refused.value.code == 2 and "--max-sentences: must be an integer >= 0" in capsys.readouterr().err
    assert (checkpoint / CENTERING_FILE).read_bytes() == before
    with pytest.raises(XLMError, match="no sentences"):
        compute_language_means(pre, {"en": [[20, 21]]})


def test_centering_sweep_runs_tiny(checkpoint, bpe_data, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("centering_sweep", ROOT / "benchmarks" / "centering_sweep.py")
    sweep = importlib.util.module_from_spec(spec)
    sys.modules["centering_sweep"] = sweep
    spec.loader.exec_module(sweep)
    js = tmp_path / "sweep.json"
    argv = [str(checkpoint), "--prepared", str(bpe_data), "--max-sentences", "20", "--means-max-sentences", "20"]
    assert sweep.main([*argv, "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "computed here" in out and "best:" in out
    records = json.loads(js.read_text())["records"]
    assert len(records) == 2 * (N_LAYERS + 2) * 3
    assert {r["layers"] for r in records} == {"0", "1", "2", "0-2"}
    assert all(0.0 <= r["mean"] <= 1.0 and set(r["pairs"]) == {"en-fr"} for r in records)
    # the sweep's numbers are those of the retrieval command with the same settings
    rec = next(r for r in records if (r["pooling"], r["layers"], r["centering"]) == ("mean", "1", "set"))
    ret = tmp_path / "ret.json"
    argv = ["evaluate", "retrieval", str(checkpoint), "--prepared", str(bpe_data), "--split", "test",
            "--max-sentences", "20", "--pooling", "mean", "--layers", "1", "--no-margin", "--json", str(ret)]  # fmt: skip
    assert main(argv) == 0
    m = json.loads(ret.read_text())
    assert rec["mean"] == pytest.approx((m["en-fr/p@1"] + m["fr-en/p@1"]) / 2)
