"""Beam search ranks finished hypotheses by ``sum log p / length ** length_penalty`` (length:
the words and the final ``</s>``). Checked against every hypothesis of a tiny decoder whose
next-token probabilities are a fixed table, with a beam wide enough to search exhaustively."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from xlm.model.generation import beam_search
from xlm.text.vocab import EOS_INDEX

V = 16
WORDS = (14, 15)  # the decoder's only words; every other token has probability 0
MAX_LEN = 5  # outputs </s> w1 .. wk </s> with k <= MAX_LEN - 2
BEAM = 2 ** (MAX_LEN - 2)  # every running prefix fits in the beam: the search is exhaustive


def next_logprobs(words: tuple[int, ...], seed: int) -> dict[int, float]:
    """A fixed distribution over </s> and the two words after ``words``."""
    p = np.random.default_rng([seed, len(words), *words]).dirichlet([1.0, 1.0, 1.0])
    return dict(zip((EOS_INDEX, *WORDS), np.log(p).tolist()))


class TableDecoder:
    """Stands in for an EncoderDecoder: its decoder returns, at the last position of each
    prefix, the table's log-probabilities (``predict`` is the identity)."""

    def __init__(self, seed: int):
        self.seed = seed
        self.decoder = self

    def encode(self, src, lengths, langs):
        return torch.zeros(src.shape[0], src.shape[1], 4)

    def __call__(self, inputs, **_):
        out = torch.full((inputs.shape[0], inputs.shape[1], V), -float("inf"))
        for r, row in enumerate(inputs.tolist()):
            for token, logp in next_logprobs(tuple(row[1:]), self.seed).items():
                out[r, -1, token] = logp
        return out

    def predict(self, h):
        return h


def every_hypothesis(seed: int) -> dict[tuple[int, ...], float]:
    """Each output's words -> its log-probability (the last one ends with </s>)."""
    out = {}
    for k in range(MAX_LEN - 1):
        for words in itertools.product(WORDS, repeat=k):
            steps = [next_logprobs(words[:i], seed)[words[i]] for i in range(k)]
            out[words] = sum(steps) + next_logprobs(words, seed)[EOS_INDEX]
    return out


def best_by_formula(hyps: dict[tuple[int, ...], float], length_penalty: float) -> tuple[int, ...]:
    return max(hyps, key=lambda w: hyps[w] / (len(w) + 1) ** length_penalty)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_best_hypothesis_is_the_one_with_the_best_length_normalised_score(seed):
    model = TableDecoder(seed)
    hyps = every_hypothesis(seed)
    assert len(hyps) == 2 ** (MAX_LEN - 1) - 1
    src, src_len = torch.tensor([[EOS_INDEX, 20, EOS_INDEX]]), torch.tensor([3])
    winners = set()
    for lp in (0.0, 0.5, 1.0, 2.0, 4.0):
        tokens, lengths = beam_search(
            model, src, src_len, 0, 1, MAX_LEN, BEAM, lp, early_stopping=False, use_cache=False
        )
        got = tuple(tokens[0, 1 : int(lengths[0]) - 1].tolist())
        assert got == best_by_formula(hyps, lp), f"length_penalty={lp}"
        winners.add(got)
    assert len(winners) > 1  # the penalty really changed the choice for this table


def test_length_penalty_zero_is_the_most_likely_output_and_a_large_one_prefers_length():
    seed = 0
    hyps = every_hypothesis(seed)
    model = TableDecoder(seed)
    src, src_len = torch.tensor([[EOS_INDEX, 20, EOS_INDEX]]), torch.tensor([3])
    tokens, lengths = beam_search(model, src, src_len, 0, 1, MAX_LEN, BEAM, 0.0, use_cache=False)
    assert tuple(tokens[0, 1 : int(lengths[0]) - 1].tolist()) == max(hyps, key=hyps.get)
    tokens, lengths = beam_search(model, src, src_len, 0, 1, MAX_LEN, BEAM, 8.0, use_cache=False)
    assert int(lengths[0]) == MAX_LEN  # log p / length^8: the longest outputs score best
