"""What the commands that translate with an ``xlm train-mt`` checkpoint (``xlm translate``,
``xlm evaluate bleu``) share: the decoding options, loading the model with the decoding setting
recorded with it (the training-time evaluation's) overridden by those options, and the warning
about a direction the model was not trained on."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from xlm.commands.options import add_max_tokens_option, count, finite, non_negative, non_negative_int

if TYPE_CHECKING:
    import torch

    from xlm.model.generation import DecodeConfig
    from xlm.model.seq2seq import Translator


def add_decoding_options(p: argparse.ArgumentParser) -> None:
    """Beam search and output length (each defaulting to the checkpoint's setting), and the batch size."""
    p.add_argument("--beam", type=count, help="beam size (1: greedy; default: the checkpoint's evaluation setting)")
    p.add_argument(
        "--length-penalty", type=finite, help="beam scores are log p / length**this (default: the checkpoint's)"
    )
    p.add_argument(
        "--early-stopping", action="store_true", default=None, help="stop a sentence once BEAM hypotheses are finished"
    )
    p.add_argument(
        "--max-len-a",
        type=non_negative,
        help="outputs are at most A * source length + B tokens (default: the checkpoint's)",
    )
    p.add_argument("--max-len-b", type=non_negative_int, help="see --max-len-a")
    add_max_tokens_option(p, 4000, "source tokens per batch")


def load_for_decoding(args: argparse.Namespace) -> tuple[Translator, torch.device, DecodeConfig]:
    """``(translator, device, decode)``: the translation model in ``args.checkpoint`` on
    ``--device`` (with ``--threads`` torch threads), and the decoding setting recorded with it,
    overridden by the options of :func:`add_decoding_options` that are given."""
    import torch

    from xlm.model.generation import DecodeConfig
    from xlm.model.seq2seq import load_translator
    from xlm.training.distributed import pick_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    tr = load_translator(args.checkpoint, device)
    decode = DecodeConfig.from_json(tr.info.extra.get("decode")).override(
        beam_size=args.beam, length_penalty=args.length_penalty, early_stopping=args.early_stopping,
        max_len_a=args.max_len_a, max_len_b=args.max_len_b,
    )  # fmt: skip
    return tr, device, decode


def warn_untrained_direction(command: str, src: str, tgt: str, trained: list[tuple[str, str]]) -> None:
    """A warning on stderr, from ``xlm COMMAND``, when ``src -> tgt`` is not a direction the model
    was trained on."""
    if (src, tgt) in trained:
        return
    known = ", ".join(f"{a}->{b}" for a, b in trained) or "none recorded"
    why = "source and target are the same language" if src == tgt else "the model never trained this direction"
    print(
        f"xlm {command}: warning: {src}->{tgt}: {why} (trained: {known}); the output is likely not a translation",
        file=sys.stderr,
    )
