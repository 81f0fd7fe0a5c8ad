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

With ``xlco_queue = K > 0`` the negatives also come from a queue, as in InfoXLM (which
follows MoCo, He et al. 2020): the keys are the vectors of a *momentum encoder*
(:class:`MomentumEncoder`), a copy of the model whose weights follow the trained ones by
exponential moving average and are never trained; the queries ``x_i`` (trained model) are
scored against the keys ``y'_j`` of the batch (all ranks) and the last ``K`` keys of earlier
batches, and the other way round (``y_i`` against ``x'_j`` and the queue of source-side keys).
Keys carry no gradient, so ``K`` can be far larger than a batch.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from xlm.config import ConfigError
from xlm.data.batching import pad_rows, sentence_rows
from xlm.model.transformer import model_config, pool_states
from xlm.objectives.registry import Objective, ObjectiveContext, Source, pair_source, register, split_pair

Pooling = Literal["first", "mean"]


class _GatherWithGrad(torch.autograd.Function):
    """All-gather ``(n_r, D)`` rows of every rank (``n_r`` may differ) into ``(sum n_r, D)``;
    the backward pass sums each gathered row's gradient over ranks and returns the local part."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
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
    def backward(ctx: Any, grad: Tensor) -> Tensor:
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


def gather_keys(keys: Tensor) -> tuple[Tensor, int]:
    """Every rank's key rows (no gradient) and this rank's offset among them."""
    with torch.no_grad():
        return gather_rows(keys.detach())


def queue_contrastive_loss(
    x: Tensor, y: Tensor, x_keys: Tensor, y_keys: Tensor, offset: int, queue: Tensor, temperature: float
) -> Tensor:
    """Symmetric InfoNCE of queries against momentum keys: ``x[i]`` (``(B, D)``, trained side
    a) must find ``y_keys[offset + i]`` among all of ``y_keys`` (the batch's keys of every rank,
    normalized) and ``queue[1]`` (earlier target-side keys); ``y[i]`` likewise among ``x_keys``
    and ``queue[0]``. ``queue`` is ``(2, n, D)`` (only its filled slots)."""
    x, y = F.normalize(x.float(), dim=-1), F.normalize(y.float(), dim=-1)
    to_y = info_nce(x, torch.cat([y_keys.float(), queue[1].float()]), offset, temperature)
    to_x = info_nce(y, torch.cat([x_keys.float(), queue[0].float()]), offset, temperature)
    return (to_y + to_x) / 2


class MomentumEncoder(nn.Module):
    """The key encoder of XLCo with a queue (InfoXLM / MoCo), with everything an exact resume
    needs as its state: the copied model (``encoder.*``), the queue and its pointer (buffers),
    so that the trainer saves it next to the model (``xlco_momentum.safetensors``).

    * ``update(online)``: ``m = momentum * m + (1 - momentum) * online`` for every weight
      (weights the online model does not train, such as sinusoidal positions, are copied).
      Nothing here is trained: no parameter requires a gradient.
    * Dropout is **off** in the momentum encoder (it stays in eval mode whatever
      the ``train``/``eval`` mode the trainer sets): keys are a deterministic function of the
      momentum weights, and computing them draws no random numbers.
    * The queue holds the L2-normalized keys of the last ``size`` pairs, one ring buffer per
      side: ``queue[0]`` source-side keys (negatives of the target-side queries), ``queue[1]``
      target-side keys (negatives of the source-side queries). Both sides get the same number
      of keys each step, so they share ``ptr`` (the next slot to write, i.e. the oldest) and
      ``filled``. Keeping the sides apart keeps the negatives of a query in the language(s) of
      its positive, as with in-batch negatives (a query never has to reject keys of its own
      language, which would reward language-specific vectors). A language listed on both
      sides of different pairs (``en-fr`` and ``fr-de``) lands in both queues.
    """

    queue: Tensor  # buffers, registered in __init__
    ptr: Tensor
    filled: Tensor

    def __init__(self, model: nn.Module, size: int, dim: int, momentum: float):
        super().__init__()
        if size < 1:
            raise ValueError(f"queue size {size} must be positive")
        self.momentum = float(momentum)
        self.encoder = copy.deepcopy(getattr(model, "module", model))
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.encoder.eval()
        self.register_buffer("queue", torch.zeros(2, size, dim))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.queue.shape[1]

    def train(self, mode: bool = True) -> MomentumEncoder:
        super().train(mode)
        self.encoder.eval()  # dropout stays off
        return self

    @torch.no_grad()
    def copy_from(self, online: nn.Module) -> None:
        """Momentum weights := the online weights (e.g. after loading pretrained weights)."""
        self.encoder.load_state_dict(getattr(online, "module", online).state_dict())

    @torch.no_grad()
    def update(self, online: nn.Module) -> None:
        online = getattr(online, "module", online)
        mine, theirs = list(self.encoder.parameters()), list(online.parameters())
        if len(mine) != len(theirs):
            raise ValueError("the momentum encoder does not have the online model's weights")
        for m, o in zip(mine, theirs):
            if o.requires_grad:
                m.mul_(self.momentum).add_(o.detach(), alpha=1.0 - self.momentum)
            else:
                m.copy_(o)
        for m, o in zip(self.encoder.buffers(), online.buffers()):
            m.copy_(o)

    def negatives(self) -> Tensor:
        """``(2, filled, D)``: the queued keys of both sides (slot order)."""
        return self.queue[:, : int(self.filled)]

    @torch.no_grad()
    def enqueue(self, x_keys: Tensor, y_keys: Tensor) -> None:
        """Write ``n`` pairs of keys over the oldest slots (the last ``size`` if ``n`` is larger)."""
        keys = torch.stack([x_keys, y_keys])[:, -self.size :].to(self.queue.dtype)
        n = keys.shape[1]
        slots = (int(self.ptr) + torch.arange(n, device=self.queue.device)) % self.size
        self.queue[:, slots] = keys
        self.ptr.fill_((int(self.ptr) + n) % self.size)
        self.filled.fill_(min(self.size, int(self.filled) + n))


def encode_pairs(
    model: nn.Module, src_rows: list[np.ndarray], tgt_rows: list[np.ndarray], langs: tuple[int, int],
    layer: int | Sequence[int], pooling: str, device: torch.device,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Both sides of ``B`` pairs in one forward pass -> pooled ``(B, D)`` vectors of each side
    (with several layers: ``(L, B, D)``, one per layer, in the order given)."""
    tokens, lengths = pad_rows(src_rows + tgt_rows, model_config(model).pad_index)
    side = torch.tensor([langs[0]] * len(src_rows) + [langs[1]] * len(tgt_rows), dtype=torch.long)
    tokens, lengths, side = tokens.to(device), lengths.to(device), side.to(device)
    states = model(tokens, lengths, side, layer=layer if isinstance(layer, int) else list(layer))
    if isinstance(layer, int):
        vec = pool_states(states, lengths, pooling)
    else:
        vec = torch.stack([pool_states(s, lengths, pooling) for s in states])
    n = len(src_rows)
    return vec[..., :n, :], vec[..., n:, :]


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
    length within windows, as TLM batches), vectors pooled at each of ``xlco_layers`` by
    ``xlco_pooling`` (one loss per layer, averaged), temperature ``xlco_temperature``; it
    takes ``xlco_turns`` turns in each round of the objectives. With ``xlco_queue > 0``: keys from a
    :class:`MomentumEncoder` (``xlco_momentum``) and a queue of that many earlier keys per
    side, saved in checkpoints as the module ``xlco_momentum``."""

    name = "xlco"
    turn = 40

    def __init__(self, ctx: ObjectiveContext, entries: list[str]):
        super().__init__(ctx, entries)
        s = ctx.settings
        self.momentum: MomentumEncoder | None = None
        if getattr(s, "xlco_queue", 0) > 0:
            if ctx.model is None:
                raise ValueError("xlco_queue needs the model in the objective context (ObjectiveContext.model)")
            dim = int(model_config(ctx.model).emb_dim)
            self.momentum = MomentumEncoder(ctx.model, s.xlco_queue, dim, s.xlco_momentum)

    def modules(self) -> dict[str, nn.Module]:
        return {"xlco_momentum": self.momentum} if self.momentum is not None else {}

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
        rows = ctx.settings.xlco_batch_size
        budget = rows * (2 * ctx.data.max_len + 4)  # never binding: batches are cut by rows
        return pair_source(ctx, entry, budget, ctx.seed + 15485863 * (index + 1), max_rows=rows)

    def loss(self, model: nn.Module, source: Source, device: torch.device) -> tuple[Tensor, int]:
        s = self.ctx.settings
        sampler = source.sampler
        ids = sampler.next_ids()
        m = self.ctx.data.max_len
        src_rows, tgt_rows = (
            sentence_rows(sampler.data.src, ids, m),
            sentence_rows(sampler.data.tgt, ids, m),
        )
        layers = list(s.xlco_layers)
        src_lang, tgt_lang = source.langs  # a pair's source
        langs = (src_lang, tgt_lang)
        x, y = encode_pairs(model, src_rows, tgt_rows, langs, layers, s.xlco_pooling, device)
        n_tokens = sum(len(r) for r in src_rows + tgt_rows)
        if self.momentum is None:  # one loss per layer, averaged
            loss = torch.stack([contrastive_loss(x[i], y[i], s.xlco_temperature) for i in range(len(layers))]).mean()
            return loss + touch_all(model).to(device), n_tokens
        x, y = x[0], y[0]  # the queue holds keys of one layer (checked by the config)
        mom = self.momentum
        mom.update(model)  # as MoCo: update the key encoder, then encode the keys
        with torch.no_grad():
            xk, yk = encode_pairs(mom.encoder, src_rows, tgt_rows, langs, layers[0], s.xlco_pooling, device)
        x_keys, offset = gather_keys(F.normalize(xk.float(), dim=-1))
        y_keys, _ = gather_keys(F.normalize(yk.float(), dim=-1))
        loss = queue_contrastive_loss(x, y, x_keys, y_keys, offset, mom.negatives(), s.xlco_temperature)
        mom.enqueue(x_keys, y_keys)  # every rank enqueues every rank's keys: the queues stay equal
        return loss + touch_all(model).to(device), n_tokens


@torch.no_grad()
def pair_retrieval_accuracy(
    model: nn.Module, src_rows: list[np.ndarray], tgt_rows: list[np.ndarray], langs: tuple[int, int],
    layer: int | Sequence[int],
    pooling: str, device: torch.device, batch: int = 64,
) -> float:  # fmt: skip
    """P@1 of finding each sentence's translation among all ``len(src_rows)`` candidates by
    cosine, both directions averaged (a quick validation figure for XLCo); with several
    layers the pooled vectors of the layers are averaged."""
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
        if x.dim() == 3:  # several layers
            x, y = x.mean(0), y.mean(0)
        xs.append(F.normalize(x.float(), dim=-1))
        ys.append(F.normalize(y.float(), dim=-1))
    x, y = torch.cat(xs), torch.cat(ys)
    sim = x @ y.T
    gold = torch.arange(len(x), device=sim.device)
    return float(((sim.argmax(1) == gold).float().mean() + (sim.argmax(0) == gold).float().mean()) / 2)
