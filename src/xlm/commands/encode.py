"""``xlm encode --data DIR --lang en [--ids]``: raw text lines on stdin -> BPE tokens (or ids)
on stdout, one line out per line in, normalized exactly as ``xlm prepare`` does."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xlm.commands.options import add_data_option
from xlm.text.lines import line_batches

BATCH_LINES = 1_000


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", help="normalize + tokenize text from stdin (BPE, SentencePiece or WordPiece)")
    add_data_option(p, "an `xlm prepare` directory or a checkpoint: its vocabulary (vocab.json and the files of its kind)",
                    required=True, aliases=("--vocab",))  # fmt: skip
    p.add_argument("--lang", required=True, help="language of the input (Moses rules)")
    p.add_argument("--ids", action="store_true", help="print token ids instead of BPE tokens")
    p.add_argument(
        "--lowercase", action=argparse.BooleanOptionalAction, default=None,
        help="lowercase and remove accents (default: as the vocabulary was prepared)",
    )  # fmt: skip
    p.set_defaults(func=run)


def warn_unknown_language(lang: str, languages: list[str] | None, vocab: Path) -> None:
    """A warning on stderr when ``lang`` is no ISO 639-1 code or not one the vocabulary was prepared for."""
    from xlm.text.languages import is_language_code

    if not is_language_code(lang):
        print(f"xlm encode: warning: {lang!r} is not an ISO 639-1 language code: text is normalized with "
              "the default (English) Moses rules", file=sys.stderr)  # fmt: skip
    if languages and lang not in languages:
        print(f"xlm encode: warning: {vocab} was prepared for {', '.join(languages)}, not {lang!r}: "
              "its sub-words may fit this text badly", file=sys.stderr)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from xlm.text.bpe import vocab_settings
    from xlm.text.tokenizer import TextEncoder

    encoder = TextEncoder(args.data, args.lang, args.lowercase)
    warn_unknown_language(args.lang, vocab_settings(args.data).get("languages"), args.data)
    out = sys.stdout
    for batch in line_batches(sys.stdin.buffer, BATCH_LINES):
        normalized = [encoder.normalize(line) for line in batch]
        for ids in encoder.bpe.encode_batch(normalized):
            if args.ids:
                out.write(" ".join(map(str, ids)) + "\n")
            else:
                out.write(" ".join(encoder.vocab.token(i) for i in ids) + "\n")
        out.flush()
    return 0
