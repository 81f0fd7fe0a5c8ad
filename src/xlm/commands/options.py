"""The options shared by several commands, one name and one meaning each (``--data`` is a
prepared directory, ``--langs`` languages, ``--directions`` ordered pairs, ...), and their types.
A value out of range is refused when the arguments are parsed, by argparse, naming the option,
the value and the allowed range."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xlm.devices import DEVICE_NAMES, DeviceError, check_device_name

if TYPE_CHECKING:
    from torch import nn

    from xlm.data.dataset import PreparedData
    from xlm.model.precision import Precision
    from xlm.text.vocab import Vocabulary


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
        p.add_argument(
            "--device", type=device_name, default="auto", help=f"{DEVICE_NAMES} (default auto: a GPU when there is one)"
        )


# --- The shared vocabulary: one name per concept in every command. Old spellings stay as hidden
# aliases for one release (not shown in --help; giving both is refused).


def add_option(
    p: argparse.ArgumentParser, name: str, *, aliases: tuple[str, ...] = (), required: bool = False, **kwargs: Any
) -> argparse.Action:
    """``name`` with ``kwargs`` (as ``add_argument``), and each of ``aliases`` as a hidden spelling
    of it (same destination; not shown in ``--help``; giving two spellings is an error)."""
    if not aliases:
        return p.add_argument(name, required=required, **kwargs)
    group = p.add_mutually_exclusive_group(required=required)
    action = group.add_argument(name, **kwargs)
    hidden = {k: v for k, v in kwargs.items() if k in ("type", "default", "action", "choices", "metavar")}
    for alias in aliases:
        group.add_argument(alias, dest=action.dest, help=argparse.SUPPRESS, **hidden)
    return action


def add_repeatable_option(p: argparse.ArgumentParser, name: str, metavar: str, help: str) -> None:
    """``name VALUE``, which may be given several times: the list of the values (none by default)."""
    p.add_argument(name, action="append", default=[], metavar=metavar, help=help)


def add_checkpoint_argument(
    p: argparse.ArgumentParser, help: str = "checkpoint directory (from xlm pretrain or xlm import)"
) -> None:
    p.add_argument("checkpoint", type=Path, help=help)


def add_data_option(
    p: argparse.ArgumentParser,
    help: str = "an `xlm prepare` directory (same vocabulary as the model)",
    *,
    required: bool = False,
    aliases: tuple[str, ...] = (),
) -> None:
    """``--data DIR``: the prepared-data directory (``xlm prepare``'s output)."""
    add_option(p, "--data", aliases=aliases, required=required, type=Path, metavar="DIR", help=help)


def add_split_option(
    p: argparse.ArgumentParser, default: str, help: str = "split of --data", aliases: tuple[str, ...] = ()
) -> None:
    add_option(p, "--split", aliases=aliases, default=default, help=help)


def add_langs_option(p: argparse.ArgumentParser, help: str) -> None:
    """``--langs en,fr``: languages (pairs and directions are ``--directions``)."""
    p.add_argument("--langs", default="", help=help)


def add_directions_option(p: argparse.ArgumentParser, help: str, aliases: tuple[str, ...] = ()) -> None:
    """``--directions en-fr,fr-en``: ordered language pairs."""
    add_option(p, "--directions", aliases=aliases, default="", help=help)


def add_precision_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: bfloat16 matmuls, several times faster on GPUs and AMX CPUs")  # fmt: skip


def add_compute_options(p: argparse.ArgumentParser, threads: bool = False) -> None:
    """Where and how a command's model runs: ``--device``, ``--threads`` (with ``threads``), ``--precision``."""
    add_device_option(p)
    if threads:
        add_threads_option(p)
    add_precision_option(p)


def add_max_tokens_option(p: argparse.ArgumentParser, default: int, help: str = "padded tokens per batch") -> None:
    p.add_argument("--max-tokens", type=count, default=default, help=help)


def add_threads_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=non_negative_int, default=0, help="torch threads (0: torch's default)")


def add_json_option(p: argparse.ArgumentParser, help: str = "write the metrics as one JSON object") -> None:
    p.add_argument("--json", type=Path, help=help)


def add_plot_option(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--plot", type=Path, help=help)


def add_embedding_options(p: argparse.ArgumentParser) -> None:
    """Options shared by the commands that embed sentences."""
    p.add_argument(
        "--pooling",
        choices=("first", "mean"),
        default=None,
        help="first token's state or mean over the real tokens (default: what the checkpoint "
        "recommends, the XLCo setting it was trained with, else mean)",
    )
    p.add_argument(
        "--layers",
        default=None,
        help="layers to pool and average: 0 = embeddings, -1 = last, e.g. '2,3,4' or '2-4' "
        "(default: what the checkpoint recommends, else 0)",
    )
    p.add_argument(
        "--center",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="subtract the language's mean vector: the one stored by `xlm center`, else the mean "
        "of the sentences embedded (default on; --no-center: raw vectors)",
    )
    add_max_tokens_option(p, 8000)
    add_compute_options(p)


def embed_options(args: argparse.Namespace) -> Any:
    """The ``EmbedOptions`` of ``add_embedding_options``' arguments; progress bars (for long
    inputs) only when standard error is a terminal."""
    from xlm.evaluation.embeddings import EmbedOptions, parse_layers

    return EmbedOptions(
        pooling=args.pooling,
        layers=parse_layers(args.layers) if args.layers is not None else None,
        max_tokens=args.max_tokens,
        progress=long_input_progress(),
        precision=args.precision,
        center=getattr(args, "center", True),
    )


def load_model(checkpoint: Path, device: str) -> Any:
    """The pretrained model in ``checkpoint`` on the device named by ``--device``."""
    from xlm.model.pretrained import load_pretrained
    from xlm.training.distributed import pick_device

    return load_pretrained(checkpoint, pick_device(device))


def open_prepared(args: argparse.Namespace, vocab: Vocabulary) -> PreparedData:
    """The prepared directory ``--data``, refused when it was prepared with another vocabulary
    than ``vocab``, the checkpoint's."""
    from xlm.data.dataset import PreparedData

    prepared = PreparedData.open(args.data)
    prepared.check_vocabulary(vocab, args.checkpoint)
    return prepared


def autocast(model: nn.Module, precision: Precision) -> AbstractContextManager:
    """A context in which ``model``'s forward runs at ``--precision`` on the model's device."""
    from xlm.model.precision import inference_autocast

    return inference_autocast(next(model.parameters()).device, precision)


def progress_enabled() -> bool:
    """Progress bars go to standard error, and only when it is a terminal."""
    return sys.stderr.isatty()


def long_input_progress() -> bool | None:
    """The ``progress`` of sentence embedding: None (a bar for long inputs) on a terminal, else False."""
    return None if progress_enabled() else False


def print_final_metrics(metrics: dict[str, float] | None) -> None:
    """A training command's final metrics as JSON on standard output, by rank 0 only (the
    other processes of a ``torchrun`` job print nothing)."""
    from xlm.fileio import write_json

    if metrics and int(os.environ.get("RANK", "0")) == 0:
        write_json("-", {k: round(v, 4) for k, v in sorted(metrics.items())}, indent=1)
