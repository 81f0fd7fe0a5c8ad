"""``xlm pretrain --config FILE [key=value ...] [--resume]``: CLM / MLM / TLM pretraining,
in one process or under ``torchrun`` (``torchrun --nproc_per_node K -m xlm pretrain ...``)."""

from __future__ import annotations

import argparse

from xlm.commands.training import add_training_command, run_training_command


def register(sub: argparse._SubParsersAction) -> None:
    add_training_command(
        sub, "pretrain", "pretrain a cross-lingual language model (CLM/MLM/TLM)", "TOML config (see configs/)", run
    )


def run(args: argparse.Namespace) -> int:
    from xlm.tasks.pretraining import PretrainConfig, run_training

    return run_training_command(args, PretrainConfig, run_training)
