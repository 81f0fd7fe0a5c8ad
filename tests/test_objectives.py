import math

import numpy as np
import pytest
import torch

from xlm.data.batching import concat_pair, language_probabilities, token_budget_batches
from xlm.model.transformer import length_mask
from xlm.objectives.language_modeling import clm_targets
from xlm.objectives.masking import MaskingConfig, frequency_weights, mask_tokens
from xlm.text.vocab import EOS_INDEX, MASK_INDEX, N_SPECIAL, PAD_INDEX, UNK_INDEX

V = 1000


def test_mlm_masking_statistics():
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(N_SPECIAL, V, (64, 256))
    lengths = torch.randint(100, 257, (64,))
    pad = ~length_mask(lengths, 256)
    tokens[pad] = PAD_INDEX
    cfg = MaskingConfig(vocab_size=V)
    inputs, chosen, targets = mask_tokens(tokens, ~pad, cfg, gen)
    real = int((~pad).sum()) - 64  # position 0 is never chosen
    assert chosen.sum().item() == math.ceil(0.15 * real)
    assert not chosen[pad].any() and not chosen[:, 0].any()
    assert torch.equal(targets, tokens[chosen])
    new = inputs[chosen]
    masked = (new == MASK_INDEX).float().mean().item()
    kept = (new == targets).float().mean().item()
    randomised = ((new != MASK_INDEX) & (new != targets)).float().mean().item()
    assert abs(masked - 0.8) < 0.01 and abs(kept - 0.1) < 0.01 and abs(randomised - 0.1) < 0.01
    assert (new[(new != MASK_INDEX)] >= N_SPECIAL).all()  # random tokens are never special
    assert torch.equal(inputs[~chosen], tokens[~chosen])


def test_masking_is_deterministic_with_a_seeded_generator():
    tokens = torch.randint(N_SPECIAL, V, (4, 50))
    ok = torch.ones_like(tokens, dtype=torch.bool)
    a = mask_tokens(tokens, ok, MaskingConfig(vocab_size=V), torch.Generator().manual_seed(3))
    b = mask_tokens(tokens, ok, MaskingConfig(vocab_size=V), torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_frequency_aware_masking_prefers_rare_tokens():
    gen = torch.Generator().manual_seed(0)
    counts = torch.ones(V, dtype=torch.long)
    counts[100] = 10_000  # a very frequent token
    tokens = torch.where(torch.rand(32, 128, generator=gen) < 0.5, 100, 200)
    ok = torch.ones_like(tokens, dtype=torch.bool)
    _, chosen, targets = mask_tokens(tokens, ok, MaskingConfig(vocab_size=V), gen, frequency_weights(counts, 0.5))
    assert chosen.sum().item() == math.ceil(0.15 * (ok.sum().item() - 32))
    assert (targets == 200).float().mean() > 0.9


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_separators_are_never_masked_nor_counted_in_streams_and_tlm_pairs(alpha):
    """One rule in both modes (uniform and frequency-aware): exactly ceil(15 %) of the real
    words are predicted; </s> separators, <unk> and padding are never chosen nor counted."""
    gen = torch.Generator().manual_seed(1)
    weights = frequency_weights(torch.randint(1, 1000, (V,), generator=gen), alpha) if alpha else None
    cfg = MaskingConfig(vocab_size=V)
    stream = torch.randint(N_SPECIAL, V, (8, 64), generator=gen)
    stream[:, ::7] = EOS_INDEX  # sentence boundaries inside the stream
    stream[:, 5] = UNK_INDEX
    rng = np.random.default_rng(0)
    rows = [np.concatenate(([EOS_INDEX], rng.integers(N_SPECIAL, V, n), [EOS_INDEX])) for n in (3, 9, 1, 20)]
    pair = concat_pair(rows, rows[::-1], 0, 1)  # [</s> src </s>][</s> tgt </s>], padded
    cases = [
        (stream, torch.ones_like(stream, dtype=torch.bool)),
        (pair.tokens, length_mask(pair.lengths, pair.tokens.shape[1])),
    ]
    for tokens, ok in cases:
        for _ in range(20):
            inputs, chosen, targets = mask_tokens(tokens, ok, cfg, gen, weights)
            words = ok & (tokens >= N_SPECIAL)
            words[:, 0] = False
            assert chosen.sum().item() == math.ceil(0.15 * words.sum().item())
            assert not chosen[~words].any() and (targets >= N_SPECIAL).all()
            assert torch.equal(inputs[~words], tokens[~words])  # separators and padding untouched


def test_tlm_positions_restart_and_languages_per_side():
    src = [np.array([1, 20, 21, 1]), np.array([1, 30, 1])]
    tgt = [np.array([1, 40, 41, 42, 1]), np.array([1, 50, 51, 1])]
    b = concat_pair(src, tgt, src_lang=0, tgt_lang=1)
    assert b.tokens[0].tolist() == [1, 20, 21, 1, 1, 40, 41, 42, 1]
    assert b.positions[0].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4]
    assert b.langs[0].tolist() == [0] * 4 + [1] * 5
    assert b.tokens[1, :7].tolist() == [1, 30, 1, 1, 50, 51, 1]
    assert b.positions[1, :7].tolist() == [0, 1, 2, 0, 1, 2, 3]
    assert b.lengths.tolist() == [9, 7] and b.tokens[1, 7:].tolist() == [PAD_INDEX] * 2


def test_clm_targets_are_next_tokens_within_length():
    from xlm.data.batching import Batch

    tokens = torch.tensor([[1, 5, 6, 7, 1], [1, 8, 9, 2, 2]])
    b = Batch(tokens, torch.tensor([5, 3]), torch.zeros_like(tokens))
    pred, targets = clm_targets(b)
    assert pred.tolist() == [[True] * 4 + [False], [True, True, False, False, False]]
    assert targets.tolist() == [5, 6, 7, 1, 8, 9]


def test_language_sampling_alpha():
    q = language_probabilities([900, 100], alpha=0.7)
    p = np.array([0.9, 0.1]) ** 0.7
    assert np.allclose(q, p / p.sum())
    assert np.allclose(language_probabilities([900, 100], 0.0), [0.5, 0.5])
    assert np.allclose(language_probabilities([900, 100], 1.0), [0.9, 0.1])


def test_token_budget_batches_respect_budget():
    lengths = np.array([5, 9, 3, 12, 7, 7, 30])
    order = np.argsort(lengths, kind="stable")
    batches = token_budget_batches(lengths, order, max_tokens=24)
    assert sorted(np.concatenate(batches).tolist()) == list(range(7))
    for b in batches:
        assert len(b) == 1 or len(b) * lengths[b].max() <= 24
