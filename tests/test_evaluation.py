"""Evaluation metrics on hand-made inputs whose answer is known, and the embed / retrieval /
words / ppl commands on a checkpoint from a tiny in-test pretraining run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from xlm.cli import main
from xlm.config import load_config
from xlm.errors import DataError, XLMError
from xlm.evaluation.embeddings import EmbedOptions, SentenceEncoder, parse_layers, resolve_layers
from xlm.evaluation.retrieval import (
    cosine_matrix,
    margin_matrix,
    precision_at_k,
    read_pairs_tsv,
    retrieval_metrics,
)
from xlm.evaluation.word_translation import (
    csls_scores,
    frequent_words,
    pearson,
    rankdata,
    read_dictionary,
    spearman,
    translation_metrics,
)
from xlm.model.pretrained import load_pretrained
from xlm.tasks.pretraining import PretrainConfig, run_training

# ----------------------------------------------------------------------------- metrics


def _unit(rng: np.random.Generator, n: int, d: int = 16) -> np.ndarray:
    return rng.normal(size=(n, d)).astype(np.float32)


def test_identical_embeddings_give_p1_one():
    x = _unit(np.random.default_rng(0), 30)
    m = retrieval_metrics(x, x.copy(), "en", "fr")
    assert m["en-fr/p@1"] == m["fr-en/p@1"] == 1.0
    assert m["en-fr/margin/p@1"] == m["fr-en/margin/p@1"] == 1.0
    assert m["en-fr/n"] == 30


def test_shuffled_targets_give_share_of_fixed_points():
    rng = np.random.default_rng(1)
    x = _unit(rng, 40)
    perm = np.arange(40)
    perm[:10] = rng.permutation(10)  # only the first 10 may move
    fixed = float(np.mean(perm == np.arange(40)))
    m = retrieval_metrics(x, x[perm], "en", "fr", margin=False)
    assert m["en-fr/p@1"] == pytest.approx(fixed)
    assert m["fr-en/p@1"] == pytest.approx(fixed)
    assert "en-fr/margin/p@1" not in m


def test_margin_against_brute_force():
    rng = np.random.default_rng(2)
    x, y = _unit(rng, 7), _unit(rng, 9)
    sim = cosine_matrix(x, y)
    k = 4
    expected = np.zeros_like(sim)
    for i in range(7):
        for j in range(9):
            nn_x = sorted(sim[i], reverse=True)[:k]
            nn_y = sorted(sim[:, j], reverse=True)[:k]
            expected[i, j] = sim[i, j] / (sum(nn_x) / (2 * k) + sum(nn_y) / (2 * k))
    np.testing.assert_allclose(margin_matrix(sim, k), expected, rtol=1e-5)


def test_margin_penalises_a_hub():
    # candidate 3 is the cosine-nearest of queries 1, 2 and 3 (a hub); the margin, which
    # divides by each side's mean similarity to its k nearest, gives every query its own
    x = np.array([[-0.9, -0.3], [0.0, 0.9], [1.0, 1.9], [-0.8, 0.4]], dtype=np.float32)
    y = np.array([[-0.6, -0.6], [-0.3, -1.7], [-0.5, -0.7], [-0.4, 0.2]], dtype=np.float32)
    sim = cosine_matrix(x, y)
    assert sim.argmax(axis=1).tolist() == [0, 3, 3, 3]
    assert precision_at_k(sim) == 0.5
    assert precision_at_k(margin_matrix(sim, k=2)) == 1.0
    assert precision_at_k(margin_matrix(sim, k=2).T) == 1.0


def test_precision_at_k():
    scores = np.array([[0.9, 0.1, 0.5], [0.3, 0.2, 0.1], [0.0, 0.4, 0.6]])
    assert precision_at_k(scores) == pytest.approx(2 / 3)  # rows 0 and 2 are right; row 1 is second
    assert precision_at_k(scores, k=2) == pytest.approx(1.0)


def test_csls_against_brute_force():
    rng = np.random.default_rng(3)
    q, t, s = _unit(rng, 5), _unit(rng, 12), _unit(rng, 11)
    k = 3

    def cos(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    expected = np.zeros((5, 12))
    for i in range(5):
        r_t = np.mean(sorted((cos(q[i], t[j]) for j in range(12)), reverse=True)[:k])
        for j in range(12):
            r_s = np.mean(sorted((cos(t[j], s[m]) for m in range(11)), reverse=True)[:k])
            expected[i, j] = 2 * cos(q[i], t[j]) - r_t - r_s
    np.testing.assert_allclose(csls_scores(q, t, s, k), expected, rtol=1e-4, atol=1e-5)


def test_word_translation_with_a_shuffled_dictionary():
    rng = np.random.default_rng(4)
    emb = _unit(rng, 50, 32)
    right = [{i} for i in range(50)]
    m = translation_metrics(emb, emb, right, k=5)
    assert m["p@1"] == m["csls/p@1"] == m["p@10"] == 1.0
    perm = np.arange(50)
    perm[:20] = rng.permutation(20)
    shuffled = [{int(perm[i])} for i in range(50)]
    m = translation_metrics(emb, emb, shuffled, k=5)
    assert m["p@1"] == pytest.approx(np.mean(perm == np.arange(50)))
    # several correct targets: word i is right with i or its shuffled partner
    both = [{i, int(perm[i])} for i in range(50)]
    assert translation_metrics(emb, emb, both, k=5)["p@1"] == 1.0


def test_spearman_with_ties_matches_hand_computation():
    np.testing.assert_allclose(rankdata(np.array([3, 1, 2, 2, 1])), [5, 1.5, 3.5, 3.5, 1.5])
    # ranks x = [1, 2.5, 2.5, 4], y = [1, 3, 2, 4]: r = 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10)
    assert spearman(np.array([1, 2, 2, 3]), np.array([10, 30, 20, 40])) == pytest.approx(3 / np.sqrt(10))
    assert pearson(np.array([1.0, 2, 3]), np.array([2.0, 4, 6])) == pytest.approx(1.0)
    assert np.isnan(pearson(np.ones(3), np.arange(3.0)))


def test_readers_name_file_and_line(tmp_path):
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("a b\tc d\nno tab here\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"pairs\.tsv:2"):
        read_pairs_tsv(tsv)
    d = tmp_path / "en-fr.txt"
    d.write_text("cat chat\ncat matou\ndog\tchien\n", encoding="utf-8")
    assert read_dictionary(d) == [("cat", "chat"), ("cat", "matou"), ("dog", "chien")]
    d.write_text("cat chat\nonlyone\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"en-fr\.txt:2"):
        read_dictionary(d)


def test_layer_specs():
    assert parse_layers("-1") == (-1,)
    assert parse_layers("2-4") == (2, 3, 4)
    assert parse_layers("0,2") == (0, 2)
    assert resolve_layers((-1, 0), 4) == [0, 4]
    with pytest.raises(XLMError):
        resolve_layers((5,), 4)
    with pytest.raises(XLMError):
        parse_layers("x")


# ----------------------------------------------------------------------------- model


@pytest.fixture(scope="module")
def bpe_data(tiny_data, with_bpe_merges, tmp_path_factory) -> Path:
    return with_bpe_merges(tiny_data, tmp_path_factory.mktemp("evalbpe") / "data")


@pytest.fixture(scope="module")
def checkpoint(bpe_data, tmp_path_factory, tiny_config_overrides) -> Path:
    out = tmp_path_factory.mktemp("evalrun") / "run"
    run_training(load_config(PretrainConfig, None, tiny_config_overrides(bpe_data, out, steps=4)))
    return out / "final"


def test_embeddings_are_order_and_batch_independent(checkpoint):
    pre = load_pretrained(checkpoint)
    rng = np.random.default_rng(5)
    sents = [rng.integers(14, 54, size=int(n)) for n in rng.integers(1, 20, size=25)]
    for pooling in ("first", "mean"):
        batched = SentenceEncoder(pre, "en", EmbedOptions(pooling=pooling, layers=(-1,), max_tokens=40)).encode_ids(
            sents
        )
        alone = np.stack(
            [SentenceEncoder(pre, "en", EmbedOptions(pooling=pooling, layers=(-1,))).encode_ids([s])[0] for s in sents]
        )
        np.testing.assert_allclose(batched, alone, atol=1e-5)
    # mean pooling over the last layer, by hand
    s = sents[0]
    tokens = torch.tensor([[1, *s.tolist(), 1]])
    with torch.no_grad():
        h = pre.model(tokens, torch.tensor([tokens.shape[1]]), torch.full_like(tokens, pre.info.lang2id["en"]))
    got = SentenceEncoder(pre, "en", EmbedOptions(pooling="mean", layers=(-1,), center=False)).encode_ids([s])[0]
    np.testing.assert_allclose(got, h[0].mean(0).numpy(), atol=1e-5)
    # averaging layers: the mean of the single-layer vectors
    one = [SentenceEncoder(pre, "en", EmbedOptions(pooling="first", layers=(j,))).encode_ids(sents) for j in (0, 1, 2)]
    avg = SentenceEncoder(pre, "en", EmbedOptions(pooling="first", layers=(0, 1, 2))).encode_ids(sents)
    np.testing.assert_allclose(avg, np.mean(one, axis=0), atol=1e-5)
    assert not np.allclose(one[0], one[2])


def test_bf16_embeddings_stay_close_to_fp32_and_come_back_as_float32(checkpoint):
    pre = load_pretrained(checkpoint)
    rng = np.random.default_rng(6)
    sents = [rng.integers(14, 54, size=int(n)) for n in rng.integers(1, 20, size=12)]
    fp32 = SentenceEncoder(pre, "en", EmbedOptions(pooling="mean", layers=(-1,))).encode_ids(sents)
    bf16 = SentenceEncoder(pre, "en", EmbedOptions(pooling="mean", layers=(-1,), precision="bf16")).encode_ids(sents)
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, fp32)  # bf16 really ran
    cos = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert cos.min() > 0.99


def test_frequent_words_decode_binarized_data(bpe_data):
    from xlm.data.dataset import PreparedData

    prepared = PreparedData.open(bpe_data)
    words = frequent_words(prepared.mono("train", "fr"), prepared.vocab.id_to_token, 5)
    assert len(words) == 5 and all(w.startswith("f") and w[1:].isdigit() for w in words)


def _sentences(rng: np.random.Generator, n: int, n_words: int) -> list[list[int]]:
    return [rng.integers(0, n_words, size=int(rng.integers(3, 9))).tolist() for _ in range(n)]


@pytest.fixture(scope="module")
def fr_sentences(tiny_corpus) -> list[list[int]]:
    """24 random sentences of word numbers (the same for every test)."""
    return _sentences(np.random.default_rng(6), 24, tiny_corpus.n_words)


def test_cli_embed_gives_the_encoder_vectors_and_bf16_is_close(checkpoint, tmp_path, tiny_corpus, fr_sentences):
    sents = fr_sentences
    text = tmp_path / "fr.txt"
    text.write_text("".join(" ".join(f"f{w}" for w in s) + "\n" for s in sents), encoding="utf-8")
    embed = ["embed", str(checkpoint), "--lang", "fr", "--input", str(text), "--pooling", "mean", "--layers", "-1",
             "--no-center"]  # fmt: skip
    out = tmp_path / "vec.npy"
    assert main([*embed, "--output", str(out)]) == 0
    vecs = np.load(out, allow_pickle=False)
    assert vecs.shape == (24, 32) and vecs.dtype == np.float32
    pre = load_pretrained(checkpoint)
    direct = SentenceEncoder(pre, "fr", EmbedOptions(pooling="mean", layers=(-1,), center=False)).encode_ids(
        [[tiny_corpus.word_id("fr", w) for w in s] for s in sents]
    )
    np.testing.assert_allclose(vecs, direct, atol=1e-5)  # text -> normalize -> BPE -> the same ids
    out16 = tmp_path / "vec16.npy"
    assert main([*embed, "--output", str(out16), "--precision", "bf16"]) == 0
    vecs16 = np.load(out16, allow_pickle=False)
    assert vecs16.dtype == np.float32 and not np.array_equal(vecs16, vecs) and np.abs(vecs16 - vecs).max() < 0.1


def test_cli_evaluate_retrieval(checkpoint, bpe_data, tmp_path, capsys, fr_sentences):
    sents = fr_sentences
    tsv = tmp_path / "en-fr.tsv"
    tsv.write_text("".join(" ".join(f"e{w}" for w in s) + "\t" + " ".join(f"f{w}" for w in s) + "\n" for s in sents))
    js, png = tmp_path / "ret.json", tmp_path / "ret.png"
    argv = ["evaluate", "retrieval", str(checkpoint), "--pairs", f"en-fr={tsv}", "--prepared", str(bpe_data),
            "--split", "test", "--json", str(js), "--plot", str(png), "--layers", "1-2"]  # fmt: skip
    assert main(argv) == 0
    assert "margin P@1" in capsys.readouterr().out
    m = json.loads(js.read_text())
    for key in ("en-fr/p@1", "fr-en/p@1", "en-fr/margin/p@1", "fr-en/margin/p@1", "en-fr/n"):
        assert key in m
    assert all(0.0 <= m[k] <= 1.0 for k in m if "p@1" in k)
    assert png.stat().st_size > 1000

    bad = tmp_path / "bad.tsv"
    bad.write_text("e1\tf1\ne2 f2\n")
    assert main(["evaluate", "retrieval", str(checkpoint), "--pairs", f"en-fr={bad}"]) == 1
    assert "bad.tsv:2" in capsys.readouterr().err


def test_cli_evaluate_words(checkpoint, bpe_data, tmp_path, capsys, tiny_corpus):
    dic = tmp_path / "en-fr.dict"
    dic.write_text("".join(f"e{i} f{i}\n" for i in range(tiny_corpus.n_words)) + "e1\tf2\n")
    sim = tmp_path / "sim.tsv"
    sim.write_text("".join(f"e{i}\tf{j}\t{float(i == j) + 0.1 * i}\n" for i in range(6) for j in range(3)))
    js, png = tmp_path / "words.json", tmp_path / "words.png"
    argv = ["evaluate", "words", str(checkpoint), "--dict", f"en-fr={dic}", "--vocab-data", str(bpe_data),
            "--max-vocab", "30", "--similarity", str(sim), "--json", str(js), "--plot", str(png)]  # fmt: skip
    assert main(argv) == 0
    assert "CSLS P@1" in capsys.readouterr().out
    m = json.loads(js.read_text())
    for key in ("en-fr/p@1", "en-fr/p@5", "en-fr/p@10", "en-fr/csls/p@1", "en-fr/csls/p@10", "en-fr/cosine", "en-fr/l2",
                "en-fr/sim/pearson", "en-fr/sim/spearman"):  # fmt: skip
        assert key in m
    assert m["en-fr/n_queries"] == tiny_corpus.n_words and m["en-fr/target_vocab"] == tiny_corpus.n_words
    assert png.stat().st_size > 1000


def test_cli_evaluate_ppl(checkpoint, bpe_data, tmp_path):
    js, png = tmp_path / "ppl.json", tmp_path / "ppl.png"
    argv = ["evaluate", "ppl", str(checkpoint), "--data", str(bpe_data), "--split", "test", "--langs", "en,fr",
            "--objective", "both", "--bptt", "32", "--json", str(js), "--plot", str(png)]  # fmt: skip
    assert main(argv) == 0
    m = json.loads(js.read_text())
    assert set(m) == {f"{lang}/{k}/{x}" for lang in ("en", "fr") for k in ("mlm", "clm") for x in ("ppl", "acc")}
    assert all(1.0 < m[f"{lang}/{k}/ppl"] < 500 for lang in ("en", "fr") for k in ("mlm", "clm"))
    assert main(argv) == 0
    assert json.loads(js.read_text()) == m  # deterministic masking
    assert main([*argv, "--precision", "bf16"]) == 0
    m16 = json.loads(js.read_text())
    assert m16 != m and all(abs(m16[k] / m[k] - 1) < 0.1 for k in m if k.endswith("/ppl"))
    assert png.stat().st_size > 1000


def test_untrained_checkpoint_is_a_random_init(bpe_data, tmp_path, tiny_config_overrides):
    over = tiny_config_overrides(bpe_data, tmp_path / "rand", steps=0)
    run_training(load_config(PretrainConfig, None, [*over, "train.eval_at_start=false"]))
    pre = load_pretrained(tmp_path / "rand" / "final")
    w = pre.model.embeddings.weight.detach()
    assert float(w[20:].std()) == pytest.approx(32**-0.5, rel=0.2)
    assert float(pre.model.pred_bias.detach().abs().sum()) == 0.0  # never updated
