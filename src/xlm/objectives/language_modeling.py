"""Language-modelling objectives as small functions of (model, batch):

* CLM: next-token prediction over a stream (causal attention);
* MLM: predict the masked positions of a stream (output layer only at those positions);
* TLM: MLM on a concatenated parallel pair (the batch carries positions and language ids).

Each returns the mean cross-entropy and counts for logging.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xlm.data.batching import Batch
from xlm.model.transformer import length_mask
from xlm.objectives.masking import MaskingConfig, mask_tokens


@dataclass
class LossOutput:
    loss: Tensor
    n_pred: int
    n_correct: int

    @property
    def accuracy(self) -> float:
        return self.n_correct / max(1, self.n_pred)


def _cross_entropy(logits: Tensor, targets: Tensor) -> LossOutput:
    loss = F.cross_entropy(logits.float(), targets)
    with torch.no_grad():
        correct = int((logits.argmax(-1) == targets).sum())
    return LossOutput(loss, int(targets.numel()), correct)


def apply_masking(batch: Batch, cfg: MaskingConfig, gen: torch.Generator, weights: Tensor | None = None) -> Batch:
    """MLM/TLM corruption of a (CPU) batch: padding is never chosen."""
    predictable = length_mask(batch.lengths, batch.tokens.shape[1])
    inputs, chosen, targets = mask_tokens(batch.tokens, predictable, cfg, gen, weights)
    return batch.with_masking(chosen, inputs, targets)


def mlm_loss(model: nn.Module, batch: Batch) -> LossOutput:
    """Masked LM (and TLM, whose batch carries positions and per-side language ids)."""
    assert batch.pred_mask is not None and batch.targets is not None, "apply_masking first"
    logits = model(batch.tokens, batch.lengths, batch.langs, batch.positions, predict=batch.pred_mask)
    return _cross_entropy(logits, batch.targets)


def clm_targets(batch: Batch) -> tuple[Tensor, Tensor]:
    """Positions that predict a next token (all real tokens but the last of each row)."""
    bs, slen = batch.tokens.shape
    pred = length_mask(batch.lengths - 1, slen)
    targets = batch.tokens[:, 1:][pred[:, :-1]]
    return pred, targets


def clm_loss(model: nn.Module, batch: Batch) -> LossOutput:
    pred, targets = clm_targets(batch)
    logits = model(batch.tokens, batch.lengths, batch.langs, batch.positions, causal=True, predict=pred)
    return _cross_entropy(logits, targets)
