"""Device strings checked and resolved in one place: ``auto``, ``cpu``, ``cuda``, ``cuda:N``
and ``mps``. A typo is refused naming the allowed values; a device this machine (or this
torch build) does not have is refused with the reason and what to use instead."""

from __future__ import annotations

import re
from typing import Annotated

import torch
from pydantic import AfterValidator

from xlm.errors import XLMError

DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")


class DeviceError(XLMError):
    """A device string that is not valid, or names a device this machine does not have."""


def check_device_name(name: str) -> str:
    """``name`` when it is a device string (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``)."""
    if not isinstance(name, str) or not _DEVICE.fullmatch(name):
        raise DeviceError(f"unknown device {name!r}: use {DEVICE_NAMES}")
    return name


def _device_field(name: str) -> str:
    try:
        return check_device_name(name)
    except DeviceError as e:
        raise ValueError(str(e)) from None


DeviceName = Annotated[str, AfterValidator(_device_field)]
"""A config field holding a device string (checked when the config is read)."""


def _cuda_missing_reason() -> str:
    if not torch.backends.cuda.is_built():
        return "this torch build has no CUDA support"
    return "no GPU is visible to this torch build (driver, CUDA_VISIBLE_DEVICES)"


def _mps_missing_reason() -> str:
    if not torch.backends.mps.is_built():
        return "this torch build has no MPS support"
    return "MPS is not available on this machine (Apple silicon and macOS 12.3 or later needed)"


def _cpu_hint(option: str) -> str:
    return f"{option}cpu" if option.endswith("=") else f"{option} cpu"


def resolve_device(name: str, local_rank: int = 0, option: str = "--device") -> torch.device:
    """The ``torch.device`` for ``name``; ``auto`` is CUDA when there is a GPU, else the CPU.
    ``cuda`` without an index is the process's ``local_rank`` GPU (one per torchrun process).
    ``option`` names where the string came from (``--device``, ``train.device=``), for the message."""
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(f"no MPS device: {_mps_missing_reason()} (use {_cpu_hint(option)})")
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise DeviceError(f"no CUDA device: {_cuda_missing_reason()} (use {_cpu_hint(option)})")
    index = int(name.split(":")[1]) if ":" in name else local_rank
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"no CUDA device {index}: this machine has {count} (cuda:0 to cuda:{count - 1})")
    return torch.device("cuda", index)
