"""Translation objectives as small functions of (model, batch):

* MT: supervised translation of a parallel batch (teacher forcing);
* AE: denoising auto-encoding — the source is a corrupted copy of the target sentence
  (local shuffle, word drop, word blank, as in Lample et al. 2018 and the XLM code);
* BT: online back-translation — the source is the model's own translation of the target
  sentence (built by the task with :mod:`xlm.model.generation`), then it is an MT batch.

Sentences are ``</s> w1 .. wn </s>`` rows. The decoder reads the target without its last
token and predicts it shifted by one: ``</s> w1 .. wn`` -> ``w1 .. wn </s>``. Noise never
touches the two ``</s>`` delimiters, and all randomness comes from an explicit
``numpy.random.Generator`` (so that training resumes exactly).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xlm.config import NonNegative, Rate, Settings
from xlm.data.batching import pad_rows
from xlm.model.transformer import length_mask
from xlm.objectives.language_modeling import LossOutput
from xlm.text.vocab import EOS_INDEX, MASK_INDEX, N_SPECIAL, PAD_INDEX, Vocabulary

# --------------------------------------------------------------------------- noise


class NoiseConfig(Settings):
    """Denoising auto-encoder corruption (the XLM defaults: k=3, p_drop=0.1, p_blank=0.1)."""

    word_shuffle: NonNegative = 3.0  # k: a word moves at most k-1 positions; 0 disables
    word_dropout: Rate = 0.1
    word_blank: Rate = 0.1
    blank_index: int = MASK_INDEX


def shuffle_words(words: np.ndarray, k: float, rng: np.random.Generator) -> np.ndarray:
    """Local shuffle: sort positions ``i + u_i`` with ``u_i ~ U[0, k)``, so that no word ends
    up ``k`` or more positions away from where it was."""
    if k <= 0 or len(words) < 2:
        return words
    scores = np.arange(len(words)) + rng.uniform(0.0, k, size=len(words))
    return words[np.argsort(scores, kind="stable")]


def drop_words(words: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Drop each word with probability ``p``; at least one word is always kept."""
    if p <= 0 or len(words) == 0:
        return words
    keep = rng.random(len(words)) >= p
    if not keep.any():
        keep[rng.integers(len(words))] = True
    return words[keep]


def blank_words(words: np.ndarray, p: float, blank_index: int, rng: np.random.Generator) -> np.ndarray:
    """Replace each word by ``blank_index`` with probability ``p``."""
    if p <= 0 or len(words) == 0:
        return words
    return np.where(rng.random(len(words)) < p, blank_index, words).astype(words.dtype)


def add_noise(row: np.ndarray, cfg: NoiseConfig, rng: np.random.Generator) -> np.ndarray:
    """Corrupt the words of one ``</s> w1 .. wn </s>`` row: shuffle, then drop, then blank
    (the order of the original code). The delimiters stay in place."""
    words = shuffle_words(row[1:-1], cfg.word_shuffle, rng)
    words = drop_words(words, cfg.word_dropout, rng)
    words = blank_words(words, cfg.word_blank, cfg.blank_index, rng)
    return np.concatenate((row[:1], words, row[-1:])).astype(row.dtype)


def add_noise_rows(rows: list[np.ndarray], cfg: NoiseConfig, rng: np.random.Generator) -> list[np.ndarray]:
    return [add_noise(r, cfg, rng) for r in rows]


# --------------------------------------------------------------------------- batches


@dataclass
class PairBatch:
    """Source and target rows (each ``</s> .. </s>``, padded at the end) and one language
    id per side (a batch is always one direction)."""

    src: Tensor
    src_lengths: Tensor
    src_lang: int
    tgt: Tensor
    tgt_lengths: Tensor
    tgt_lang: int

    def to(self, device: torch.device | str) -> PairBatch:
        return PairBatch(
            self.src.to(device),
            self.src_lengths.to(device),
            self.src_lang,
            self.tgt.to(device),
            self.tgt_lengths.to(device),
            self.tgt_lang,
        )

    @property
    def n_tokens(self) -> int:
        return int(self.src_lengths.sum()) + int(self.tgt_lengths.sum())

    @property
    def src_langs(self) -> Tensor:
        return torch.full_like(self.src_lengths, self.src_lang)

    @property
    def tgt_langs(self) -> Tensor:
        return torch.full_like(self.tgt_lengths, self.tgt_lang)


def make_pair_batch(
    src_rows: list[np.ndarray], tgt_rows: list[np.ndarray], src_lang: int, tgt_lang: int, pad_index: int = PAD_INDEX
) -> PairBatch:
    src, src_len = pad_rows(src_rows, pad_index)
    tgt, tgt_len = pad_rows(tgt_rows, pad_index)
    return PairBatch(src, src_len, src_lang, tgt, tgt_len, tgt_lang)


# --------------------------------------------------------------------------- loss


def smoothed_cross_entropy(
    logits: Tensor, targets: Tensor, eps: float, n_special: int = N_SPECIAL, excluded: Sequence[int] | None = None
) -> Tensor:
    """Mean cross-entropy against ``(1 - eps)`` on the target plus ``eps`` spread evenly over
    the tokens a translation can contain: ``</s>`` and the ordinary vocabulary. No probability
    goes to ``<s>``, ``<pad>``, ``<unk>`` or ``<special*>`` (PyTorch's ``label_smoothing``
    spreads it over every class). ``excluded``: those ids for another vocabulary (see
    :func:`smoothing_excluded`); default XLM's, ids ``0..n_special-1`` but ``</s>``."""
    if eps == 0:
        return F.cross_entropy(logits, targets)
    logp = F.log_softmax(logits, dim=-1)
    nll = -logp.gather(-1, targets[:, None]).squeeze(-1)
    if excluded is None:
        excluded = [i for i in range(n_special) if i != EOS_INDEX]
    excluded = list(excluded)
    support = logits.shape[-1] - len(excluded)
    smooth = -(logp.sum(-1) - logp[:, excluded].sum(-1)) / support
    return ((1.0 - eps) * nll + eps * smooth).mean()


def smoothing_excluded(vocab: Vocabulary) -> list[int]:
    """The ids label smoothing gives nothing: every special or reserved id but the end token."""
    n = len(vocab)
    return [i for i in (*range(vocab.words_start), *range(vocab.words_end, n)) if i != vocab.specials.end]


def translation_loss(
    model: nn.Module, batch: PairBatch, label_smoothing: float = 0.0, excluded: Sequence[int] | None = None
) -> LossOutput:
    """Cross-entropy of the target given the source (teacher forcing; optionally label-smoothed
    over real tokens only, see :func:`smoothed_cross_entropy`). ``model`` is an
    :class:`~xlm.model.seq2seq.EncoderDecoder` (possibly wrapped by DDP); the output layer
    is computed only at the predicted (non-padding) positions."""
    width = batch.tgt.shape[1] - 1
    inputs, in_lengths = batch.tgt[:, :-1], batch.tgt_lengths - 1
    pred = length_mask(in_lengths, width)
    targets = batch.tgt[:, 1:][pred]
    logits = model(batch.src, batch.src_lengths, batch.src_langs, inputs, in_lengths, batch.tgt_langs, predict=pred)
    loss = smoothed_cross_entropy(logits.float(), targets, label_smoothing, excluded=excluded)
    with torch.no_grad():
        correct = int((logits.argmax(-1) == targets).sum())
    return LossOutput(loss, int(targets.numel()), correct)
