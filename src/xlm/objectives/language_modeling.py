"""Language-modelling objectives as small functions of (model, batch):

* CLM: next-token prediction over a stream (causal attention);
* MLM: predict the masked positions of a stream (output layer only at those positions);
* TLM: MLM on a concatenated parallel pair (the batch carries positions and language ids).

Each returns the mean cross-entropy and counts for logging. The classes at the end register
them with :mod:`xlm.objectives.registry` for pretraining.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xlm.data.batching import (
    Batch,
    StreamSampler,
    concat_pair,
    sentence_rows,
)
from xlm.model.transformer import length_mask
from xlm.objectives.masking import MaskingConfig, mask_tokens
from xlm.objectives.registry import (
    Objective,
    ObjectiveContext,
    ObjectiveLoss,
    Source,
    pair_source,
    register,
)


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


def apply_masking(
    batch: Batch,
    cfg: MaskingConfig,
    gen: torch.Generator,
    weights: Tensor | None = None,
) -> Batch:
    """MLM/TLM corruption of a (CPU) batch: padding is never chosen."""
    predictable = length_mask(batch.lengths, batch.tokens.shape[1])
    inputs, chosen, targets = mask_tokens(batch.tokens, predictable, cfg, gen, weights)
    return batch.with_masking(chosen, inputs, targets)


def mlm_loss(model: nn.Module, batch: Batch) -> LossOutput:
    """Masked LM (and TLM, whose batch carries positions and per-side language ids)."""
    assert batch.pred_mask is not None and batch.targets is not None, "apply_masking first"
    logits = model(
        batch.tokens,
        batch.lengths,
        batch.langs,
        batch.positions,
        predict=batch.pred_mask,
    )
    return _cross_entropy(logits, batch.targets)


def clm_targets(batch: Batch) -> tuple[Tensor, Tensor]:
    """Positions that predict a next token (all real tokens but the last of each row)."""
    bs, slen = batch.tokens.shape
    pred = length_mask(batch.lengths - 1, slen)
    targets = batch.tokens[:, 1:][pred[:, :-1]]
    return pred, targets


def clm_loss(model: nn.Module, batch: Batch) -> LossOutput:
    pred, targets = clm_targets(batch)
    logits = model(
        batch.tokens,
        batch.lengths,
        batch.langs,
        batch.positions,
        causal=True,
        predict=pred,
    )
    return _cross_entropy(logits, targets)


# --------------------------------------------------------------------------- registered objectives


class _StreamObjective(Objective):
    """MLM or CLM over streams of ``bptt`` tokens of one language."""

    def build_source(self, entry: str, index: int) -> Source:
        ctx, d = self.ctx, self.ctx.data
        data = ctx.prepared.mono("train", entry)
        lang = ctx.lang2id[entry]
        sampler = StreamSampler(
            data,
            lang,
            d.bptt,
            d.batch_size,
            ctx.seed + 7919 * (index + 1),
            ctx.rank,
            ctx.world,
        )
        return Source(entry, data.n_tokens, sampler, (lang,))


def masked_lm_step(ctx: ObjectiveContext, model: nn.Module, batch: Batch, device: torch.device) -> ObjectiveLoss:
    """MLM on a CPU batch of streams (MLM) or of concatenated pairs (TLM), masked as the
    context says."""
    batch = apply_masking(batch, ctx.masking, ctx.mask_gen, ctx.freq_weights)
    out = mlm_loss(model, batch.to(device))
    return ObjectiveLoss(out.loss, batch.n_tokens, out.n_pred)


@register
class MLMObjective(_StreamObjective):
    """Masked LM on the monolingual streams of the languages listed under ``mlm``."""

    name = "mlm"
    turn = 10

    @classmethod
    def entries(cls, settings: Any) -> list[str]:
        return [e for e in settings.mlm if "-" not in e]

    def loss(self, model: nn.Module, source: Source, device: torch.device) -> ObjectiveLoss:
        return masked_lm_step(self.ctx, model, source.sampler.next_batch(), device)


def pair_batch(ctx: ObjectiveContext, source: Source, ids: np.ndarray) -> Batch:
    """``[</s> src </s>][</s> tgt </s>]`` rows of the pairs ``ids`` of ``source``."""
    data = source.sampler.data
    a, b = source.langs
    m = ctx.data.max_len
    return concat_pair(sentence_rows(data.src, ids, m), sentence_rows(data.tgt, ids, m), a, b, data.src.specials.pad)


@register
class TLMObjective(Objective):
    """Translation LM: MLM on concatenated parallel pairs (the pairs listed under ``mlm``)."""

    name = "tlm"
    turn = 20

    @classmethod
    def entries(cls, settings: Any) -> list[str]:
        return [e for e in settings.mlm if "-" in e]

    def build_source(self, entry: str, index: int) -> Source:
        return pair_source(self.ctx, entry, self.ctx.data.tlm_max_tokens, self.ctx.seed + 104729 * (index + 1))

    def loss(self, model: nn.Module, source: Source, device: torch.device) -> ObjectiveLoss:
        return masked_lm_step(self.ctx, model, pair_batch(self.ctx, source, source.sampler.next_ids()), device)


@register
class CLMObjective(_StreamObjective):
    """Causal LM on the streams of the languages listed under ``clm``."""

    name = "clm"
    turn = 30

    @classmethod
    def entries(cls, settings: Any) -> list[str]:
        return list(settings.clm)

    def loss(self, model: nn.Module, source: Source, device: torch.device) -> ObjectiveLoss:
        batch = source.sampler.next_batch()
        out = clm_loss(model, batch.to(device))
        return ObjectiveLoss(out.loss, batch.n_tokens, out.n_pred)
