"""The pretraining objectives, one class each, registered by name.

An objective owns its data sources (one per language or pair it is given), draws a batch of
one of them and returns its loss; :class:`xlm.tasks.pretraining.PretrainTask` alternates the
registered objectives step by step and picks each batch's source with q_i ∝ p_i^α. Adding an
objective is one module with a class decorated by :func:`register` and its entries in
``[objectives]`` of the config::

    @register
    class MyObjective(Objective):
        name = "mine"

        @classmethod
        def entries(cls, cfg):            # which languages / pairs of the config it trains
            return cfg.mine

        def build_source(self, entry, index): ...   # a Source with its sampler
        def loss(self, model, source, device): ...  # (loss, tokens in the batch[, tokens predicted])

The order of registration is the order in which objectives take turns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from xlm.data.dataset import PreparedData
from xlm.objectives.masking import MaskingConfig


@dataclass
class DataShape:
    """What the samplers need from ``[data]``."""

    bptt: int
    batch_size: int
    tlm_max_tokens: int
    max_len: int


@dataclass
class ObjectiveContext:
    """What every objective of one pretraining run shares."""

    prepared: PreparedData
    lang2id: dict[str, int]
    data: DataShape
    settings: Any  # the run's ObjectivesConfig (each objective reads its own fields)
    masking: MaskingConfig
    mask_gen: torch.Generator  # MLM and TLM draw their masks from one generator
    freq_weights: Tensor | None
    seed: int
    rank: int = 0
    world: int = 1
    model: nn.Module | None = None  # the trained model (e.g. for XLCo's momentum copy of it)


@dataclass
class Source:
    """One language or pair of one objective, with its sampler."""

    name: str  # "en" or "en-fr"
    size: int  # tokens, for q_i ∝ p_i^α
    sampler: Any  # has state_dict() / load_state_dict()
    langs: tuple[int, ...]


def split_pair(entry: str) -> tuple[str, str]:
    a, b = entry.split("-")
    return a, b


def pair_source(ctx: ObjectiveContext, entry: str, max_tokens: int, seed: int, max_rows: int = 0) -> Source:
    """The train pairs of ``entry`` ("en-fr") with a :class:`PairBatcher` of this rank."""
    from xlm.data.batching import PairBatcher

    a, b = split_pair(entry)
    data = ctx.prepared.para("train", a, b)
    sampler = PairBatcher(data, max_tokens, ctx.data.max_len, seed, ctx.rank, ctx.world, max_rows=max_rows)
    return Source(entry, data.src.n_tokens + data.tgt.n_tokens, sampler, (ctx.lang2id[a], ctx.lang2id[b]))


class ObjectiveLoss(NamedTuple):
    """What :meth:`Objective.loss` returns (a plain ``(loss, n_tokens)`` pair is accepted too)."""

    loss: Tensor  # the mean over the predicted tokens
    n_tokens: int  # tokens in the batch
    n_pred: int = 0  # tokens predicted: weights the batches accumulated into one update (0: equal weights)


class Objective:
    """Base class: ``entries`` picks this objective's languages/pairs from the config,
    ``build_source`` makes the sampler of one, ``loss`` trains on one batch."""

    name: ClassVar[str] = ""
    turn: ClassVar[int] = 100  # objectives take turns in increasing order of this number

    def __init__(self, ctx: ObjectiveContext, entries: list[str]):
        self.ctx = ctx
        self.sources = [self.build_source(e, i) for i, e in enumerate(entries)]

    @classmethod
    def entries(cls, settings: Any) -> list[str]:
        raise NotImplementedError

    @classmethod
    def weight(cls, settings: Any) -> float:
        return float(getattr(settings, f"{cls.name}_weight", 1.0))

    @classmethod
    def turns(cls, settings: Any) -> int:
        """Turns in each round of the objectives (``{name}_turns`` of the config, default 1)."""
        return int(getattr(settings, f"{cls.name}_turns", 1))

    def build_source(self, entry: str, index: int) -> Source:
        raise NotImplementedError

    def loss(self, model: nn.Module, source: Source, device: torch.device) -> tuple[Tensor, int] | ObjectiveLoss:
        """The loss of the next batch of ``source``, the number of tokens it holds and
        (optionally, see :class:`ObjectiveLoss`) the number of tokens it predicts."""
        raise NotImplementedError

    def modules(self) -> dict[str, nn.Module]:
        """Extra modules whose weights are saved with training checkpoints (none by default)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state besides the samplers (which the task saves)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


REGISTRY: dict[str, type[Objective]] = {}


def register(cls: type[Objective]) -> type[Objective]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    REGISTRY.pop(name, None)


def registered() -> dict[str, type[Objective]]:
    """Every objective in the order they take turns (by ``turn``, then registration)."""
    _load_builtin()
    ranked = sorted(REGISTRY.values(), key=lambda c: c.turn)  # stable: ties keep registration order
    return {c.name: c for c in ranked}


def _load_builtin() -> None:
    # importing the modules registers their objectives
    import xlm.objectives.contrastive
    import xlm.objectives.language_modeling  # noqa: F401
