"""The command line as a whole: --version, and --help that documents every option."""

from __future__ import annotations

import argparse
from importlib.metadata import version

import pytest

from xlm.cli import build_parser, main, subparsers


def all_parsers(parser: argparse.ArgumentParser, path: str = "xlm") -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(path, parser)]
    for child in subparsers(parser):
        out += all_parsers(child, child.prog)
    return out


def test_version_comes_from_package_metadata(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"xlm {version('xlm')}"


def test_every_option_of_every_command_has_help():
    parsers = all_parsers(build_parser())
    assert len(parsers) > 15  # every command and sub-command was reached
    missing = [
        f"{path} {a.option_strings or a.dest}"
        for path, p in parsers
        for a in p._actions
        if not isinstance(a, argparse._SubParsersAction) and not a.help
    ]
    assert missing == []


def test_help_shows_defaults_once(capsys):
    with pytest.raises(SystemExit):
        main(["translate", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # undo line wrapping
    assert "source tokens per batch (default: 4000)" in text
    # decoding defaults to the setting recorded with the checkpoint: named once, no "(default: None)"
    assert "outputs are at most A * source length + B tokens (default: the checkpoint's)" in text
    assert "beam size (1: greedy; default: the checkpoint's evaluation setting)" in text
    assert "(default: None)" not in text
    # no default shown for options without one, nor twice where the help already names it
    assert "read this file instead of standard input (default" not in text
    assert "(default: 0)" not in text  # --threads: "(0: torch's default)"
