"""``xlm translate CHECKPOINT --src en --tgt fr [--beam N] < input.txt > output.txt``: raw text
in (one sentence per line), normalized and BPE-encoded with the checkpoint's vocabulary,
translated in batches, and written back as detokenized text, one line per input line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xlm.commands.decoding import add_decoding_options, load_for_decoding, warn_untrained_direction
from xlm.commands.options import add_checkpoint_argument, add_compute_options, progress_enabled


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("translate", help="translate text with a model trained by `xlm train-mt`")
    add_checkpoint_argument(p, "a translation checkpoint (e.g. runs/mt/best)")
    p.add_argument("--src", required=True, help="source language code")
    p.add_argument("--tgt", required=True, help="target language code")
    add_decoding_options(p)
    p.add_argument(
        "--tokenized", action="store_true", help="print Moses-tokenized output (BPE undone, no detokenization)"
    )
    p.add_argument("--input", type=Path, help="read this file instead of standard input")
    p.add_argument("--output", type=Path, help="write this file instead of standard output")
    add_compute_options(p, threads=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xlm.model.generation import translate_text
    from xlm.model.precision import inference_autocast
    from xlm.model.seq2seq import trained_directions
    from xlm.text.lines import read_lines

    tr, device, decode = load_for_decoding(args)
    for lang in (args.src, args.tgt):  # an unknown language fails before reading the input
        tr.info.lang_id(lang)
    warn_untrained_direction("translate", args.src, args.tgt, trained_directions(tr.info))
    if args.input is not None:
        with open(args.input, "rb") as f:
            lines = read_lines(f, str(args.input))
    else:
        lines = read_lines(sys.stdin.buffer)
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
