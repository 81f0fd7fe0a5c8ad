"""``xlm train-mt --config FILE [key=value ...] [--resume]``: supervised and unsupervised
machine translation from a pretrained XLM (steps ``mt``, ``ae``, ``bt``), in one process or
under ``torchrun`` (``torchrun --nproc_per_node K -m xlm train-mt ...``)."""

from __future__ import annotations

import argparse

from xlm.commands.training import add_training_command, run_training_command


def register(sub: argparse._SubParsersAction) -> None:
    add_training_command(
        sub, "train-mt", "train a translation model (supervised MT, auto-encoding, back-translation)",
        "TOML config (see configs/mt_*.toml)", run,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from xlm.tasks.translation import MTConfig, run_mt_training

    return run_training_command(args, MTConfig, run_mt_training)
