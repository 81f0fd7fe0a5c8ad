"""What PretrainTask promises about its batches: a TLM pair reaches the model as
``[</s> src </s>][</s> tgt </s>]`` with positions restarting on the target side and each side's
language id, and the language of a batch is drawn with q_i ∝ p_i^α (``data.lang_alpha``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from xlm.config import load_config
from xlm.data.dataset import PreparedData
from xlm.objectives import language_modeling
from xlm.tasks.pretraining import PretrainConfig, PretrainTask
from xlm.text.vocab import EOS_INDEX, MERGES_FILE, VOCAB_FILE, Vocabulary, vocab_hash


def task(data: Path, out: Path, overrides, *extra: str) -> PretrainTask:
    return PretrainTask(load_config(PretrainConfig, None, [*overrides(data, out), *extra]), seed=0)


def test_a_tlm_pair_reaches_the_embeddings_with_restarting_positions_and_per_side_languages(
    tiny_data, tiny_config_overrides, tiny_corpus, tmp_path, monkeypatch
):
    t = task(tiny_data, tmp_path / "run", tiny_config_overrides, 'objectives.mlm=["en-fr"]')
    unmasked = []  # the batch as built, before MLM corruption
    real_masking = language_modeling.apply_masking
    monkeypatch.setattr(language_modeling, "apply_masking", lambda b, *a: unmasked.append(b) or real_masking(b, *a))
    seen: dict[str, torch.Tensor] = {}  # what the model's embedding tables are indexed with
    for name in ("embeddings", "position_embeddings", "lang_embeddings"):
        module = getattr(t.model, name)
        module.register_forward_pre_hook(lambda _m, args, name=name: seen.__setitem__(name, args[0].clone()))

    out = t.train_batch(0)

    assert out.name == "tlm/en-fr" and len(unmasked) == 1
    batch = unmasked[0]
    en, fr = t.lang2id["en"], t.lang2id["fr"]
    assert seen["position_embeddings"].shape == seen["lang_embeddings"].shape == batch.tokens.shape
    n_words = tiny_corpus.n_words
    for r, length in enumerate(batch.lengths.tolist()):
        langs = seen["lang_embeddings"][r, :length].tolist()
        k = langs.count(en)  # tokens of the source side
        assert langs == [en] * k + [fr] * (length - k)
        assert seen["position_embeddings"][r, :length].tolist() == list(range(k)) + list(range(length - k))
        row = batch.tokens[r, :length].tolist()
        src, tgt = row[:k], row[k:]
        assert src[0] == src[-1] == tgt[0] == tgt[-1] == EOS_INDEX
        words = [tiny_corpus.word_id("en", w) for w in range(n_words)]
        assert all(w in words for w in src[1:-1])
        assert tgt[1:-1] == [w + n_words for w in src[1:-1]]  # the tiny corpus: en word i <-> fr word i
    # the model sees the corrupted tokens: masking reaches both sides of the pairs
    changed = seen["embeddings"] != batch.tokens
    side_is_fr = seen["lang_embeddings"] == fr
    assert changed[side_is_fr].any() and changed[~side_is_fr].any()


@pytest.fixture(scope="module")
def uneven_data(make_tiny_prepared, write_binarized, tiny_corpus, tmp_path_factory) -> Path:
    """The tiny corpus with a fifth as much French training text as English."""
    root = make_tiny_prepared(tmp_path_factory.mktemp("uneven") / "data")
    vocab = Vocabulary.from_dir(root)
    rng = np.random.default_rng(5)
    first, n_words = tiny_corpus.word_id("fr", 0), tiny_corpus.n_words
    sentences = [[first + int(w) for w in rng.integers(n_words, size=int(rng.integers(4, 12)))] for _ in range(60)]
    write_binarized(root / "train.fr", sentences, "fr", vocab_hash(root / VOCAB_FILE, root / MERGES_FILE), len(vocab))
    return root


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_the_language_of_a_batch_is_drawn_with_q_proportional_to_p_to_the_alpha(
    uneven_data, tiny_config_overrides, tmp_path, alpha
):
    t = task(
        uneven_data, tmp_path / "run", tiny_config_overrides, 'objectives.mlm=["en","fr"]', f"data.lang_alpha={alpha}"
    )
    prepared = PreparedData.open(uneven_data)
    p = np.array([prepared.mono("train", lang).n_tokens for lang in ("en", "fr")], dtype=np.float64)
    p /= p.sum()
    assert 0.8 < p[0] < 0.9  # uneven enough that alpha matters
    q = p**alpha / (p**alpha).sum()
    assert [s.name for s in t.objectives["mlm"].sources] == ["en", "fr"]
    assert t.probs["mlm"] == pytest.approx(q)

    t.objectives["mlm"].loss = lambda model, source, device: (torch.zeros(()), 1)  # the draw only, no model
    n = 4000
    names = [t.train_batch(i).name for i in range(n)]
    frequencies = [names.count("mlm/en") / n, names.count("mlm/fr") / n]
    assert frequencies == pytest.approx(q, abs=0.025)  # 3 standard deviations of a frequency over 4000 draws
