"""``xlm plot RUN_DIR``: training-loss and perplexity curves of a run as PNG."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="draw a run's loss and perplexity curves to PNG")
    p.add_argument("run_dir", type=Path, help="run folder of `xlm pretrain` (holds metrics.jsonl)")
    p.add_argument("--out", type=Path, help="output folder (default RUN_DIR/plots)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xlm.fileio import check_output_folder
    from xlm.reports import plot_training

    check_output_folder(args.out or args.run_dir / "plots")
    for path in plot_training(args.run_dir, args.out):
        print(path)
    return 0
