"""The ``xlm`` command line. Each sub-command lives in its own module under ``xlm.commands``
and exposes ``register(subparsers)``; this file only lists them."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from xlm import __version__
from xlm.errors import Interrupted, XLMError
from xlm.fileio import check_output_paths, is_stdout, status_on_stderr

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

# Options that name what a command writes, checked before it starts work (xlm.fileio).
OUTPUT_FILES = ("json", "plot", "output")
OUTPUT_FOLDERS = ("out", "out_dir", "save_hypotheses")


class _ShowDefaults(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help when it has a default worth showing (not
    None, False, "" or [], and not already named in the help text), whatever formatter its
    parser uses."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        if not text or text == argparse.SUPPRESS or "default" in text.lower():
            return text
        if action.default is None or action.default is False or action.default in ("", [], argparse.SUPPRESS):
            return text
        if not action.option_strings and action.nargs not in ("?", "*"):
            return text  # a required positional
        return f"{text} (default: %(default)s)"


def subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of ``parser``'s sub-commands (one entry per sub-command, aliases left out)."""
    out: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            out += [p for p in dict.fromkeys(action.choices.values())]
    return out


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` and every sub-command's parser print option defaults in ``--help``."""
    base = parser.formatter_class  # typed as any callable that returns a formatter; here always a class
    if isinstance(base, type) and not issubclass(base, _ShowDefaults):
        shown: type[argparse.HelpFormatter] = type(f"ShowDefaults{base.__name__}", (_ShowDefaults, base), {})
        parser.formatter_class = shown
    for child in subparsers(parser):
        _show_defaults(child)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xlm", description="Cross-lingual language model pretraining and its uses.")
    parser.add_argument("--version", action="version", version=f"xlm {__version__}", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"xlm.commands.{name}").register(sub)
    _show_defaults(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    previous = _stop_on_sigterm()
    try:
        files = [getattr(args, k, None) for k in OUTPUT_FILES]
        check_output_paths(files, [getattr(args, k, None) for k in OUTPUT_FOLDERS])
        if any(f is not None and is_stdout(f) for f in files):  # results to stdout: tables and status to stderr
            with status_on_stderr():
                return int(args.func(args) or 0)
        return int(args.func(args) or 0)
    except KeyboardInterrupt as e:  # Ctrl-C, or a training run stopped by a signal after saving
        signum = int(getattr(e, "signum", signal.SIGINT))
        reason = getattr(e, "message", "") or "stopped by Ctrl-C"
        print(f"xlm {args.command}: interrupted: {reason}", file=sys.stderr)
        return 128 + signum
    except (XLMError, OSError) as e:
        print(f"xlm {args.command}: error: {e}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum, f"received signal {signum}")


def _stop_on_sigterm() -> Callable[[int, FrameType | None], Any] | int | None:
    """SIGTERM stops a command like Ctrl-C (cleanup runs, one line, exit 143); training loops
    catch it themselves to save first. Returns the previous handler (None off the main thread)."""
    try:
        return signal.signal(signal.SIGTERM, _raise_interrupted)
    except ValueError:  # not the main thread
        return None


if __name__ == "__main__":
    sys.exit(main())
