"""Masked-LM corruption as pure tensor operations (BERT / XLM style).

Each token is chosen for prediction with probability ``word_pred`` (0.15), never at padding
or at the first position of a row (the leading ``</s>``). Of the chosen tokens, 80% become
the mask token, 10% a random non-special token and 10% stay as they are. Optionally the
choice is frequency-aware: positions are drawn with weights ∝ count(token)^-α, the same
expected number of predictions per batch. Everything is driven by an explicit
``torch.Generator`` so that evaluation masking is deterministic and training resumes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from xlm.text.vocab import MASK_INDEX, N_SPECIAL, Vocabulary


@dataclass(frozen=True)
class MaskingConfig:
    word_pred: float = 0.15
    mask_prob: float = 0.8
    random_prob: float = 0.1
    keep_prob: float = 0.1
    mask_index: int = MASK_INDEX
    vocab_size: int = 0
    n_special: int = N_SPECIAL  # random replacements are drawn from ids [n_special, word_end)
    word_end: int = 0  # 0: vocab_size (XLM's layout; XLM-R's <mask> is the last id)

    @classmethod
    def for_vocab(cls, vocab: Vocabulary, word_pred: float, mask_prob: float, random_prob: float, keep_prob: float) -> MaskingConfig:
        """The vocabulary's mask id and ordinary-token range (XLM's: 5, [14, V))."""
        return cls(
            word_pred, mask_prob, random_prob, keep_prob, vocab.specials.mask, len(vocab), vocab.words_start, vocab.words_end
        )

    def __post_init__(self) -> None:
        if abs(self.mask_prob + self.random_prob + self.keep_prob - 1.0) > 1e-6:
            raise ValueError("mask/random/keep probabilities must sum to 1")
        if not 0.0 < self.word_pred < 1.0:
            raise ValueError("word_pred must be in (0, 1)")


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
    """Boolean ``(B, T)`` mask of the positions to predict (at least one per batch)."""
    predictable = predictable.clone()
    predictable[:, 0] = False
    if weights is None:
        rand = torch.rand(tokens.shape, generator=gen, device=tokens.device)
        chosen = (rand < cfg.word_pred) & predictable
    else:
        n_avail = int(predictable.sum())
        n_pred = max(1, round(n_avail * cfg.word_pred))
        w = weights.to(tokens.device)[tokens] * predictable
        flat = w.flatten()
        chosen = torch.zeros_like(flat, dtype=torch.bool)
        if n_avail:
            idx = torch.multinomial(flat, min(n_pred, n_avail), replacement=False, generator=gen)
            chosen[idx] = True
        chosen = chosen.view(tokens.shape)
    if not bool(chosen.any()) and bool(predictable.any()):
        # tiny batches: predict one position rather than none
        first = predictable.flatten().nonzero()[0]
        chosen.view(-1)[first] = True
    return chosen


def corrupt(tokens: Tensor, chosen: Tensor, cfg: MaskingConfig, gen: torch.Generator) -> Tensor:
    """Inputs where chosen tokens are replaced 80/10/10 by mask / random / themselves."""
    n = int(chosen.sum())
    targets = tokens[chosen]
    action = torch.rand(n, generator=gen, device=tokens.device)
    random_tokens = torch.randint(cfg.n_special, cfg.word_end or cfg.vocab_size, (n,), generator=gen, device=tokens.device)
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
