"""What the training commands (``xlm pretrain``, ``xlm train-mt``) share: their options (``--config``,
``key=value`` overrides, ``--resume``, ``--device``) and their run path (the run's config, training
with status lines on standard error, the final metrics on standard output)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from xlm.commands.options import add_device_option, device_override, print_final_metrics
from xlm.config import Config, resume_and_overrides
from xlm.fileio import status_on_stderr

C = TypeVar("C", bound=Config)


def add_training_command(
    sub: argparse._SubParsersAction, name: str, help: str, config_help: str, run: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    """The parser of a training command ``name``, which ``run`` runs."""
    p = sub.add_parser(name, help=help)
    p.add_argument("--config", type=Path, help=config_help)
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.max_steps=100")
    p.add_argument(
        "--resume", nargs="?", const="latest", help="continue a run (its newest intact checkpoint, or a path)"
    )
    add_device_option(p, training=True)
    p.set_defaults(func=run)
    return p


def run_training_command(
    args: argparse.Namespace, config_class: type[C], train: Callable[[C, str | None], dict[str, float] | None]
) -> int:
    """Train as a training command's ``args`` say: a ``config_class`` from ``--config``, the
    overrides, ``--device`` and the resumed run's settings; ``train(cfg, resume)`` runs it."""
    from xlm.training.runner import load_run_config

    args.resume, args.overrides = resume_and_overrides(args.resume, args.overrides)
    cfg = load_run_config(config_class, args.config, device_override(args.overrides, args.device), args.resume)
    with status_on_stderr():  # standard output gets the metrics only
        metrics = train(cfg, args.resume)
    print_final_metrics(metrics)
    return 0
