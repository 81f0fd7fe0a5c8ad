"""Numeric precision of inference: fp32, or bfloat16 autocast (matrix multiplies in bf16,
reductions such as softmax and LayerNorm kept in fp32 by autocast).

bf16 pays where the hardware multiplies bf16 natively: CUDA GPUs from Ampere on, and CPUs
with AMX (Intel Sapphire Rapids and later), where a bf16 matmul runs several times faster
than fp32. On other CPUs bf16 is emulated and far *slower* than fp32, so it is never chosen
implicitly; asking for it there gives a warning.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Literal

import torch

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware (fast), not by emulation."""
    if device.type == "cuda":
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch < 2.4 has no emulation flag and answers for the hardware
            return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
        return bool(amx and amx())
    return False


def inference_autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    """A context in which the model's forward runs at ``precision`` on ``device``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    if not native_bf16(device):  # shown once per process (Python's default warning filter)
        warnings.warn(f"{device} has no native bf16 matrix multiply: bf16 will be slower than fp32", stacklevel=2)
    return torch.autocast(device.type, dtype=torch.bfloat16)
