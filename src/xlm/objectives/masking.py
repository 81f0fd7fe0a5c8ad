"""Masked-LM corruption as pure tensor operations (BERT / XLM style).

The tokens that may be predicted are the real words of a batch: never padding, never a
special token (the ``</s>`` separators of a stream or of a TLM pair, ``<unk>``, ...) and
never the first position of a row. Exactly ``ceil(word_pred * n)`` of those ``n`` words are
chosen (the original XLM's rounding), uniformly at random or, when frequency-aware, with
weights ∝ count(token)^-α (``sample_alpha``; the paper's choice is α = 0.5). Of the chosen
tokens, 80% become the mask token, 10% a random non-special token and 10% stay as they are.
Everything is driven by an explicit ``torch.Generator`` so that evaluation masking is
deterministic and training resumes exactly.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, model_validator
from torch import Tensor

from xlm.config import Settings
from xlm.text.vocab import MASK_INDEX, N_SPECIAL, Vocabulary


class MaskingConfig(Settings):
    word_pred: float = Field(0.15, gt=0.0, lt=1.0)
    mask_prob: float = Field(0.8, ge=0.0, le=1.0)
    random_prob: float = Field(0.1, ge=0.0, le=1.0)
    keep_prob: float = Field(0.1, ge=0.0, le=1.0)
    mask_index: int = MASK_INDEX
    vocab_size: int = 0
    n_special: int = N_SPECIAL  # random replacements are drawn from ids [n_special, word_end)
    word_end: int = 0  # 0: vocab_size (XLM's layout; XLM-R's <mask> is the last id)

    @classmethod
    def for_vocab(
        cls, vocab: Vocabulary, word_pred: float, mask_prob: float, random_prob: float, keep_prob: float
    ) -> MaskingConfig:
        """The vocabulary's mask id and ordinary-token range (XLM's: 5, [14, V))."""
        return cls(
            word_pred=word_pred, mask_prob=mask_prob, random_prob=random_prob, keep_prob=keep_prob,
            mask_index=vocab.specials.mask, vocab_size=len(vocab), n_special=vocab.words_start, word_end=vocab.words_end,
        )  # fmt: skip

    @model_validator(mode="after")
    def _sum_to_one(self) -> MaskingConfig:
        if abs(self.mask_prob + self.random_prob + self.keep_prob - 1.0) > 1e-6:
            raise ValueError("mask_prob + random_prob + keep_prob must sum to 1")
        return self


def frequency_weights(counts: Tensor, alpha: float, words: tuple[int, int] | None = None) -> Tensor:
    """Per-token sampling weights ∝ count^-alpha (tokens never seen get the largest weight);
    0 outside the ordinary ids ``words = [start, end)`` (XLM's: ``[14, V)``)."""
    start, end = words if words is not None else (N_SPECIAL, len(counts))
    w = counts.clamp(min=1).double().pow(-alpha)
    w[:start] = 0.0
    w[end:] = 0.0
    return w.float()


def choose_positions(
    tokens: Tensor, predictable: Tensor, cfg: MaskingConfig, gen: torch.Generator, weights: Tensor | None = None
) -> Tensor:
    """Boolean ``(B, T)`` mask of the positions to predict: ``ceil(word_pred * n)`` of the
    ``n`` predictable real words (``predictable`` minus special tokens and position 0), drawn
    without replacement, uniformly or with ``weights[token]``; none when ``n`` is 0."""
    real = predictable & (tokens >= cfg.n_special)
    if cfg.word_end:  # a vocabulary with special ids at its end too (XLM-R's <mask>)
        real &= tokens < cfg.word_end
    real[:, 0] = False
    w = real.flatten().float()
    if weights is not None:
        w = w * weights.to(tokens.device)[tokens].flatten()
    n_avail = int((w > 0).sum())
    chosen = torch.zeros(w.shape, dtype=torch.bool, device=tokens.device)
    if n_avail:
        n_pred = min(n_avail, math.ceil(cfg.word_pred * int(real.sum())))
        chosen[torch.multinomial(w, n_pred, replacement=False, generator=gen)] = True
    return chosen.view(tokens.shape)


def corrupt(tokens: Tensor, chosen: Tensor, cfg: MaskingConfig, gen: torch.Generator) -> Tensor:
    """Inputs where chosen tokens are replaced 80/10/10 by mask / random / themselves."""
    n = int(chosen.sum())
    targets = tokens[chosen]
    action = torch.rand(n, generator=gen, device=tokens.device)
    random_tokens = torch.randint(
        cfg.n_special, cfg.word_end or cfg.vocab_size, (n,), generator=gen, device=tokens.device
    )
    replaced = torch.where(
        action < cfg.mask_prob,
        torch.full_like(targets, cfg.mask_index),
        torch.where(action < cfg.mask_prob + cfg.random_prob, random_tokens, targets),
    )
    inputs = tokens.clone()
    inputs[chosen] = replaced
    return inputs


def mask_tokens(
    tokens: Tensor, predictable: Tensor, cfg: MaskingConfig, gen: torch.Generator, weights: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns ``(inputs, chosen, targets)``: corrupted tokens, the (B, T) mask of predicted
    positions, and the original ids at those positions (in row-major order)."""
    chosen = choose_positions(tokens, predictable, cfg, gen, weights)
    return corrupt(tokens, chosen, cfg, gen), chosen, tokens[chosen]
