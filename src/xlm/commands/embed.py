"""``xlm embed CHECKPOINT --lang fr < sentences.txt > vectors.npy``: one sentence per input
line -> a float32 ``.npy`` array ``(N, D)`` (row i embeds line i; no pickle).

The text is normalized and BPE-encoded as ``xlm prepare`` does, with the checkpoint's
vocabulary. ``--output FILE`` writes the file atomically; without it the array goes to
standard output in one write.

Centering (default on, ``--no-center`` for the raw vectors): the language mean stored in
the checkpoint by ``xlm center`` is subtracted; without one, the mean of the input's
sentences (from 2 on). A one-line note on standard error says which.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xlm.commands.options import add_embedding_options, embed_options, load_model
from xlm.errors import DataError
from xlm.text.lines import read_lines


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="sentence embeddings of text lines (stdin) as a .npy array")
    p.add_argument("checkpoint", type=Path, help="a checkpoint directory (e.g. runs/demo/best)")
    p.add_argument("--lang", required=True, help="language of the input sentences")
    p.add_argument("--input", type=Path, help="text file, one sentence a line (default: standard input)")
    p.add_argument("--output", type=Path, help=".npy file written atomically (default: standard output)")
    add_embedding_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xlm.evaluation.embeddings import SentenceEncoder, npy_bytes, save_npy

    options = embed_options(args)
    if args.output is None and sys.stdout.isatty():
        raise DataError("refusing to write binary .npy data to a terminal: redirect the output or use --output")
    pretrained = load_model(args.checkpoint, args.device)
    encoder = SentenceEncoder(pretrained, args.lang, options)
    if args.input is not None:
        if not args.input.is_file():
            raise DataError(f"{args.input}: input file not found")
        with open(args.input, "rb") as f:
            lines = read_lines(f, str(args.input))
    else:
        lines = read_lines(sys.stdin.buffer)
    vectors = encoder.center_set(encoder.encode_text(lines))
    print(encoder.centering_note(len(lines)), file=sys.stderr)
    if args.output is not None:
        save_npy(args.output, vectors)
        print(f"{args.output}: {vectors.shape[0]} x {vectors.shape[1]} float32", file=sys.stderr)
    else:
        sys.stdout.buffer.write(npy_bytes(vectors))
        sys.stdout.buffer.flush()
    return 0
