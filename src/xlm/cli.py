"""The ``xlm`` command line. Each sub-command lives in its own module under ``xlm.commands``
and exposes ``register(subparsers)``; this file only lists them."""

from __future__ import annotations

import argparse
import importlib
import sys

from xlm import __version__
from xlm.errors import XLMError

# Module names under xlm.commands, each with a ``register(subparsers)`` function.
COMMANDS: list[str] = [
    "prepare",
    "encode",
    "pretrain",
    "plot",
    "evaluate",
    "embed",
    "center",
    "finetune",
    "classify",
    "train_mt",
    "translate",
    "export",
    "import_model",
    "bench",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xlm", description="Cross-lingual language model pretraining and its uses.")
    parser.add_argument("--version", action="version", version=f"xlm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"xlm.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (XLMError, FileNotFoundError) as e:
        print(f"xlm {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
