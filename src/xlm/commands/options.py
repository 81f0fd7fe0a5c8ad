"""Option types and options shared by several commands. A value out of range is refused when
the arguments are parsed, by argparse, naming the option, the value and the allowed range."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from xlm.devices import DEVICE_NAMES, DeviceError, check_device_name


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer ``>= low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low} (got {value})")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def float_at_least(low: float | None) -> Callable[[str], float]:
    """An argparse type: a finite number, ``>= low`` unless ``low`` is None."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number (got {text})")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be a number >= {low:g} (got {text})")
        return value

    parse.__name__ = "number" if low is None else f"number >= {low:g}"
    return parse


count = int_at_least(1)  # sizes, batch budgets, beams: at least 1
non_negative_int = int_at_least(0)  # where 0 means "all", "off" or "automatic"
non_negative = float_at_least(0.0)
finite = float_at_least(None)


def device_name(text: str) -> str:
    """An argparse type: a device string (whether the machine has it is checked when used)."""
    try:
        return check_device_name(text)
    except DeviceError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def device_override(overrides: list[str], device: str | None) -> list[str]:
    """``overrides`` with a training command's ``--device`` appended as ``train.device``."""
    return [*overrides, f'train.device="{device}"'] if device else overrides


def add_device_option(p: argparse.ArgumentParser, training: bool = False) -> None:
    """``--device``, with the same values and default (``auto``: a GPU when there is one) everywhere.
    A training command's ``--device`` (``training``) sets ``train.device``, whose default is ``auto``."""
    if training:
        p.add_argument("--device", type=device_name, default=None,
                       help=f"{DEVICE_NAMES}: sets train.device (default: the config's, else auto)")  # fmt: skip
    else:
        p.add_argument("--device", type=device_name, default="auto", help=f"{DEVICE_NAMES} (default auto: a GPU when there is one)")
