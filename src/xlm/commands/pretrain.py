"""``xlm pretrain --config FILE [key=value ...] [--resume]``: CLM / MLM / TLM pretraining,
in one process or under ``torchrun`` (``torchrun --nproc_per_node K -m xlm pretrain ...``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from xlm.commands.options import add_device_option, device_override, print_final_metrics
from xlm.config import resume_and_overrides
from xlm.fileio import status_on_stderr


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="pretrain a cross-lingual language model (CLM/MLM/TLM)")
    p.add_argument("--config", type=Path, help="TOML config (see configs/)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.max_steps=100")
    p.add_argument(
        "--resume", nargs="?", const="latest", help="continue a run (its newest intact checkpoint, or a path)"
    )
    add_device_option(p, training=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xlm.tasks.pretraining import PretrainConfig, run_training
    from xlm.training.runner import load_run_config

    args.resume, args.overrides = resume_and_overrides(args.resume, args.overrides)
    cfg = load_run_config(PretrainConfig, args.config, device_override(args.overrides, args.device), args.resume)
    with status_on_stderr():  # standard output gets the metrics only
        metrics = run_training(cfg, resume=args.resume)
    print_final_metrics(metrics)
    return 0
