"""Cross-lingual contrast (XLCo, InfoXLM: Chi et al. 2021): the sentence vector of a
sentence should be closer to that of its translation than to those of the other sentences
of the batch.

A batch of ``B`` translation pairs ``(x_i, y_i)`` is encoded in one forward pass (each side
with its own language id), pooled into vectors (``first``: the state of the leading ``</s>``,
InfoXLM's [CLS]; ``mean``: the mean over real tokens) at one layer, L2-normalized, and
scored with the symmetric InfoNCE loss

    L = ( CE(sim(x, y) / τ, diag) + CE(sim(y, x) / τ, diag) ) / 2

where the negatives of ``x_i`` are the other ``y_j`` of the batch. Under ``torchrun`` the
negatives come from every process: the vectors are all-gathered, and the gradient of the
gathered copies flows back to the process that computed them, so ``W`` processes of ``B``
pairs give the loss and gradient of one process with ``W x B`` pairs.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from xlm.config import ConfigError
from xlm.data.batching import PairBatcher, pad_rows, sentence_rows
from xlm.model.transformer import length_mask
from xlm.objectives.registry import Objective, Source, register, split_pair

Pooling = Literal["first", "mean"]
POOLINGS: tuple[str, ...] = ("first", "mean")


def pool_states(states: Tensor, lengths: Tensor, pooling: str) -> Tensor:
    """``(B, T, D)`` states -> ``(B, D)``: the first token's state, or the mean over real tokens."""
    if pooling == "first":
        return states[:, 0]
    if pooling == "mean":
        mask = length_mask(lengths, states.shape[1]).to(states.dtype)[:, :, None]
        return (states * mask).sum(1) / lengths[:, None].to(states.dtype)
    raise ValueError(f"pooling {pooling!r} is not one of {POOLINGS}")


class _GatherWithGrad(torch.autograd.Function):
    """All-gather ``(n_r, D)`` rows of every rank (``n_r`` may differ) into ``(sum n_r, D)``;
    the backward pass sums each gathered row's gradient over ranks and returns the local part."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        world, rank = dist.get_world_size(), dist.get_rank()
        n = torch.tensor([x.shape[0]], device=x.device)
        sizes = [torch.zeros_like(n) for _ in range(world)]
        dist.all_gather(sizes, n)
        counts = [int(s) for s in sizes]
        longest = max(counts)
        padded = x.new_zeros((longest, *x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
        ctx.start, ctx.n = sum(counts[:rank]), x.shape[0]
        return torch.cat([p[:c] for p, c in zip(parts, counts)])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.start : ctx.start + ctx.n]


def gather_rows(x: Tensor) -> tuple[Tensor, int]:
    """``(all ranks' rows, offset of this rank's rows)``; ``(x, 0)`` in a single process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    gathered = _GatherWithGrad.apply(x)
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    return gathered, sum(int(s) for s in sizes[: dist.get_rank()])


def info_nce(queries: Tensor, keys: Tensor, offset: int, temperature: float) -> Tensor:
    """Mean cross-entropy of finding ``keys[offset + i]`` for ``queries[i]`` among all ``keys``
    (rows L2-normalized; similarities divided by ``temperature``)."""
    logits = queries.float() @ keys.float().T / temperature
    labels = torch.arange(queries.shape[0], device=queries.device) + offset
    return F.cross_entropy(logits, labels)


def contrastive_loss(x: Tensor, y: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE of paired vectors ``x[i] <-> y[i]`` with in-batch (and, under
    torchrun, all-rank) negatives. ``x`` and ``y`` are ``(B, D)``, not yet normalized."""
    x, y = F.normalize(x.float(), dim=-1), F.normalize(y.float(), dim=-1)
    x_all, offset = gather_rows(x)
    y_all, _ = gather_rows(y)
    return (info_nce(x, y_all, offset, temperature) + info_nce(y, x_all, offset, temperature)) / 2


def encode_pairs(
    model: nn.Module, src_rows: list[np.ndarray], tgt_rows: list[np.ndarray], langs: tuple[int, int], layer: int, pooling: str,
    device: torch.device,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Both sides of ``B`` pairs in one forward pass -> pooled ``(B, D)`` vectors of each side."""
    tokens, lengths = pad_rows(src_rows + tgt_rows)
    side = torch.tensor([langs[0]] * len(src_rows) + [langs[1]] * len(tgt_rows), dtype=torch.long)
    tokens, lengths, side = tokens.to(device), lengths.to(device), side.to(device)
    states = model(tokens, lengths, side, layer=layer)
    vec = pool_states(states, lengths, pooling)
    return vec[: len(src_rows)], vec[len(src_rows) :]


def touch_all(model: nn.Module) -> Tensor:
    """A zero that depends on every trainable weight: added to a loss that leaves some weights
    unused (layers above the pooled one, the LM output bias), it gives them a zero gradient,
    which DistributedDataParallel requires of every step."""
    return (
        sum(
            (p.reshape(-1)[:1].sum() for p in model.parameters() if p.requires_grad),
            torch.zeros(()),
        )
        * 0.0
    )


@register
class XLCoObjective(Objective):
    """XLCo on the pairs listed under ``xlco``: ``xlco_batch_size`` pairs a batch (sorted by
    length within windows, as TLM batches), vectors pooled at ``xlco_layer`` by
    ``xlco_pooling``, temperature ``xlco_temperature``."""

    name = "xlco"
    turn = 40

    @classmethod
    def entries(cls, settings: Any) -> list[str]:
        return list(getattr(settings, "xlco", []))

    def build_source(self, entry: str, index: int) -> Source:
        ctx = self.ctx
        a, b = split_pair(entry)
        if not ctx.prepared.has_para("train", a, b):
            raise ConfigError(
                f"objectives.xlco: {entry!r} has no parallel training data in {ctx.prepared.directory} "
                f"(train.{a}-{b}.{a} / train.{a}-{b}.{b})"
            )
        data = ctx.prepared.para("train", a, b)
        rows = ctx.settings.xlco_batch_size
        budget = rows * (2 * ctx.data.max_len + 4)  # never binding: batches are cut by rows
        sampler = PairBatcher(data, budget, ctx.data.max_len, ctx.seed + 15485863 * (index + 1), ctx.rank, ctx.world,
                              max_rows=rows)  # fmt: skip
        return Source(
            entry,
            data.src.n_tokens + data.tgt.n_tokens,
            sampler,
            (ctx.lang2id[a], ctx.lang2id[b]),
        )

    def loss(self, model: nn.Module, source: Source, device: torch.device) -> tuple[Tensor, int]:
        s = self.ctx.settings
        sampler = source.sampler
        ids = sampler.next_ids()
        m = self.ctx.data.max_len
        src_rows, tgt_rows = (
            sentence_rows(sampler.data.src, ids, m),
            sentence_rows(sampler.data.tgt, ids, m),
        )
        x, y = encode_pairs(
            model,
            src_rows,
            tgt_rows,
            source.langs,
            s.xlco_layer,
            s.xlco_pooling,
            device,
        )
        loss = contrastive_loss(x, y, s.xlco_temperature) + touch_all(model).to(device)
        return loss, sum(len(r) for r in src_rows + tgt_rows)


@torch.no_grad()
def pair_retrieval_accuracy(
    model: nn.Module, src_rows: list[np.ndarray], tgt_rows: list[np.ndarray], langs: tuple[int, int], layer: int,
    pooling: str, device: torch.device, batch: int = 64,
) -> float:  # fmt: skip
    """P@1 of finding each sentence's translation among all ``len(src_rows)`` candidates by
    cosine, both directions averaged (a quick validation figure for XLCo)."""
    xs, ys = [], []
    for i in range(0, len(src_rows), batch):
        x, y = encode_pairs(
            model,
            src_rows[i : i + batch],
            tgt_rows[i : i + batch],
            langs,
            layer,
            pooling,
            device,
        )
        xs.append(F.normalize(x.float(), dim=-1))
        ys.append(F.normalize(y.float(), dim=-1))
    x, y = torch.cat(xs), torch.cat(ys)
    sim = x @ y.T
    gold = torch.arange(len(x), device=sim.device)
    return float(((sim.argmax(1) == gold).float().mean() + (sim.argmax(0) == gold).float().mean()) / 2)
