"""Optimizer and learning-rate schedule (a pure function of the step)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from xlm.config import Config, Count, NonNegative, NonNegativeInt, Positive, Rate


class OptimConfig(Config):
    lr: Positive = 1e-4
    beta1: Rate = 0.9
    beta2: Rate = 0.98
    eps: Positive = 1e-8
    weight_decay: NonNegative = 0.01  # decoupled (AdamW); never on embeddings, LayerNorm or biases
    schedule: Literal["inverse_sqrt", "constant", "linear"] = "inverse_sqrt"
    warmup_steps: NonNegativeInt = 4000
    min_lr: NonNegative = 0.0  # warm-up starts here and decay never goes below it (the original: 1e-7)
    clip_norm: NonNegative = 5.0  # 0 disables clipping
    accumulate: Count = 1  # batches per optimizer update


def learning_rate(step: int, cfg: OptimConfig, max_steps: int = 0) -> float:
    """LR used for update number ``step`` (0-based): linear warm-up, then 1/sqrt decay
    (``inverse_sqrt``), flat (``constant``) or linear decay to ``min_lr`` (``linear``)."""
    s = step + 1
    warm = max(1, cfg.warmup_steps)
    if s < warm:
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * s / warm
    if cfg.schedule == "inverse_sqrt":
        return max(cfg.min_lr, cfg.lr * math.sqrt(warm / s))
    if cfg.schedule == "linear" and max_steps > warm:
        frac = min(1.0, (s - warm) / (max_steps - warm))
        return cfg.lr + (cfg.min_lr - cfg.lr) * frac
    return cfg.lr


def no_decay_parameters(modules: list[nn.Module]) -> set[int]:
    """Ids of the parameters kept out of weight decay, as is customary for Transformers:
    embeddings (word, position, language; the output layer tied to the word embeddings too),
    LayerNorm weights and every bias or other vector."""
    out: set[int] = set()
    for m in modules:
        for sub in m.modules():
            if isinstance(sub, (nn.Embedding, nn.LayerNorm)):
                out.update(id(p) for p in sub.parameters(recurse=False))
        out.update(id(p) for p in m.parameters() if p.ndim < 2)
    return out


def build_optimizer(
    modules: list[nn.Module], cfg: OptimConfig, lr_scale: dict[int, float] | None = None
) -> torch.optim.AdamW:
    """Adam with decoupled weight decay (``weight_decay``; 0 is plain Adam, as the original
    XLM's ``adam_inverse_sqrt``), never applied to :func:`no_decay_parameters`. ``lr_scale``
    maps the index of a module in ``modules`` to a factor of the learning rate for its
    parameters (e.g. a fine-tuning head faster than the encoder); :func:`set_lr` applies it at
    every step."""
    scales = lr_scale or {}
    exempt = no_decay_parameters(modules)
    groups: list[dict] = []
    seen: set[int] = set()
    # modules sharing a scale share parameter groups; without lr_scale: two groups, as always
    for scale in sorted({scales.get(i, 1.0) for i in range(len(modules))}, reverse=True):
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for i, m in enumerate(modules):
            if scales.get(i, 1.0) != scale:
                continue
            for p in m.parameters():
                if not p.requires_grad or id(p) in seen:
                    continue
                seen.add(id(p))
                (no_decay if id(p) in exempt else decay).append(p)
        extra = {"lr_scale": scale} if lr_scale is not None else {}
        groups += [
            {"params": decay, "weight_decay": cfg.weight_decay, **extra},
            {"params": no_decay, "weight_decay": 0.0, **extra},
        ]
    # the fused kernel (CPU and CUDA) is several times faster than the multi-tensor one on CPU
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for g in groups for p in g["params"])
    return torch.optim.AdamW(
        groups,
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        fused=fused or None,
        foreach=None if fused else True,
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
