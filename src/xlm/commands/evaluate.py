"""``xlm evaluate TASK ...``: each evaluation lives in its own module
``xlm.commands.evaluate_<task>`` exposing ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib

# evaluation modules under xlm.commands, named evaluate_<task>
EVALUATIONS: list[str] = ["ppl", "retrieval", "words", "bleu"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a checkpoint (perplexity, retrieval, word translation, BLEU, ...)")
    tasks = p.add_subparsers(dest="evaluation", metavar="TASK")
    for name in EVALUATIONS:
        importlib.import_module(f"xlm.commands.evaluate_{name}").register(tasks)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
