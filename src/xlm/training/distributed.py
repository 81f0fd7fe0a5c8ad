"""Multi-process training on PyTorch's own engine: ``torchrun`` sets the environment,
``torch.distributed`` (gloo on CPU, NCCL on GPU) and DistributedDataParallel do the rest."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from xlm.devices import resolve_device


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device: torch.device) -> DistEnv:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistEnv(rank, world, local)


def pick_device(name: str, local_rank: int = 0, option: str = "--device") -> torch.device:
    """The device for ``name`` (see :func:`xlm.devices.resolve_device`)."""
    return resolve_device(name, local_rank, option)


def wrap_ddp(module: nn.Module, env: DistEnv, device: torch.device) -> nn.Module:
    """``module`` in DistributedDataParallel under torchrun; as it is in one process, or when
    nothing of it is trained (e.g. XLCo's momentum encoder: DDP refuses such modules)."""
    if not env.enabled or not any(p.requires_grad for p in module.parameters()):
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """Every rank's ``obj`` (JSON-like state such as sampler positions), in rank order."""
    if not env.enabled:
        return [obj]
    out: list[Any] = [None] * env.world
    dist.all_gather_object(out, obj)
    return out


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def shutdown(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()
