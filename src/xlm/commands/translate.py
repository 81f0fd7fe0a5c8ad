"""``xlm translate CHECKPOINT --src en --tgt fr [--beam N] < input.txt > output.txt``: raw text
in (one sentence per line), normalized and BPE-encoded with the checkpoint's vocabulary,
translated in batches, and written back as detokenized text, one line per input line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xlm.commands.options import (
    add_checkpoint_argument,
    add_device_option,
    add_max_tokens_option,
    add_precision_option,
    add_threads_option,
    count,
    finite,
    non_negative,
    non_negative_int,
    progress_enabled,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("translate", help="translate text with a model trained by `xlm train-mt`")
    add_checkpoint_argument(p, "a translation checkpoint (e.g. runs/mt/best)")
    p.add_argument("--src", required=True, help="source language code")
    p.add_argument("--tgt", required=True, help="target language code")
    # decoding defaults to the setting recorded with the checkpoint (its training-time evaluation's)
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
    p.add_argument(
        "--tokenized", action="store_true", help="print Moses-tokenized output (BPE undone, no detokenization)"
    )
    p.add_argument("--input", type=Path, help="read this file instead of standard input")
    p.add_argument("--output", type=Path, help="write this file instead of standard output")
    add_device_option(p)
    add_threads_option(p)
    add_precision_option(p)
    p.set_defaults(func=run)


def warn_untrained_direction(src: str, tgt: str, trained: list[tuple[str, str]]) -> None:
    """A warning on stderr when ``src -> tgt`` is not a direction the model was trained on."""
    if (src, tgt) in trained:
        return
    known = ", ".join(f"{a}->{b}" for a, b in trained) or "none recorded"
    why = "source and target are the same language" if src == tgt else "the model never trained this direction"
    print(
        f"xlm translate: warning: {src}->{tgt}: {why} (trained: {known}); the output is likely not a translation",
        file=sys.stderr,
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from xlm.model.generation import DecodeConfig, translate_text
    from xlm.model.precision import inference_autocast
    from xlm.model.seq2seq import load_translator, trained_directions
    from xlm.text.lines import read_lines
    from xlm.training.distributed import pick_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    tr = load_translator(args.checkpoint, device)
    for lang in (args.src, args.tgt):  # an unknown language fails before reading the input
        tr.info.lang_id(lang)
    warn_untrained_direction(args.src, args.tgt, trained_directions(tr.info))
    if args.input is not None:
        with open(args.input, "rb") as f:
            lines = read_lines(f, str(args.input))
    else:
        lines = read_lines(sys.stdin.buffer)
    decode = DecodeConfig.from_json(tr.info.extra.get("decode")).override(
        beam_size=args.beam, length_penalty=args.length_penalty, early_stopping=args.early_stopping,
        max_len_a=args.max_len_a, max_len_b=args.max_len_b,
    )  # fmt: skip
    with inference_autocast(device, args.precision):
        out, n_long = translate_text(tr, lines, args.src, args.tgt, decode, device, args.max_tokens, args.tokenized,
                                    progress=progress_enabled())  # fmt: skip
    if n_long:
        limit = tr.model.encoder.cfg.max_positions - 2
        print(f"xlm translate: {n_long} line(s) longer than the model's {limit} positions: their first {limit} tokens "
              "were translated", file=sys.stderr)  # fmt: skip
    text = "".join(o + "\n" for o in out)
    if args.output is not None:
        from xlm.reports import write_atomic

        write_atomic(args.output, text)
    else:
        sys.stdout.write(text)
    return 0
