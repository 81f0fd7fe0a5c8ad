"""``xlm translate CHECKPOINT --src en --tgt fr [--beam N] < input.txt > output.txt``: raw text
in (one sentence per line), normalized and BPE-encoded with the checkpoint's vocabulary,
translated in batches, and written back as detokenized text, one line per input line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xlm.commands.embed import add_precision_option
from xlm.commands.options import add_device_option, count, finite, non_negative, non_negative_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("translate", help="translate text with a model trained by `xlm train-mt`")
    p.add_argument("checkpoint", type=Path, help="a translation checkpoint (e.g. runs/mt/best)")
    p.add_argument("--src", required=True, help="source language code")
    p.add_argument("--tgt", required=True, help="target language code")
    p.add_argument("--beam", type=count, default=1, help="beam size (1: greedy)")
    p.add_argument("--length-penalty", type=finite, default=1.0, help="beam scores are log p / length**this")
    p.add_argument("--early-stopping", action="store_true", help="stop a sentence once BEAM hypotheses are finished")
    p.add_argument("--max-len-a", type=non_negative, default=1.5, help="outputs are at most A * source length + B tokens")
    p.add_argument("--max-len-b", type=non_negative_int, default=10, help="see --max-len-a")
    p.add_argument("--max-tokens", type=count, default=4000, help="source tokens per batch")
    p.add_argument("--tokenized", action="store_true", help="print Moses-tokenized output (BPE undone, no detokenization)")
    p.add_argument("--input", type=Path, help="read this file instead of standard input")
    p.add_argument("--output", type=Path, help="write this file instead of standard output")
    add_device_option(p)
    p.add_argument("--threads", type=non_negative_int, default=0, help="torch threads (0: torch's default)")
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
    import numpy as np
    import torch

    from xlm.model.generation import DecodeConfig, translate_rows
    from xlm.model.precision import inference_autocast
    from xlm.model.seq2seq import load_translator, trained_directions
    from xlm.text.bpe import BPETokenizer, TextEncoder
    from xlm.text.lines import read_lines
    from xlm.text.vocab import EOS_INDEX
    from xlm.training.distributed import pick_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    tr = load_translator(args.checkpoint, device)
    src_id, tgt_id = tr.info.lang_id(args.src), tr.info.lang_id(args.tgt)
    warn_untrained_direction(args.src, args.tgt, trained_directions(tr.info))
    lower = tr.info.lowercase_and_remove_accent
    bpe = BPETokenizer.from_dir(args.checkpoint)
    src_enc = TextEncoder(args.checkpoint, args.src, lower, bpe)
    tgt_enc = TextEncoder(args.checkpoint, args.tgt, lower, bpe)
    if args.input is not None:
        with open(args.input, "rb") as f:
            lines = read_lines(f, str(args.input))
    else:
        lines = read_lines(sys.stdin.buffer)
    limit = tr.model.encoder.cfg.max_positions - 2
    ids = src_enc.encode_batch(lines)
    n_cut = sum(len(x) > limit for x in ids)
    if n_cut:
        print(f"xlm translate: {n_cut} line(s) longer than {limit} tokens were truncated", file=sys.stderr)
    todo = [i for i, x in enumerate(ids) if x]  # an empty line stays empty
    rows = [np.asarray([EOS_INDEX, *ids[i][:limit], EOS_INDEX], dtype=np.int64) for i in todo]
    decode = DecodeConfig(args.beam, args.length_penalty, args.early_stopping, args.max_len_a, args.max_len_b)
    with inference_autocast(device, args.precision):
        words = translate_rows(tr.model, rows, src_id, tgt_id, decode, device, args.max_tokens)
    out = [""] * len(lines)
    for i, w in zip(todo, words):
        out[i] = tgt_enc.bpe.decode(w) if args.tokenized else tgt_enc.decode(w)
    text = "".join(o + "\n" for o in out)
    if args.output is not None:
        from xlm.reports import write_atomic

        write_atomic(args.output, text)
    else:
        sys.stdout.write(text)
    return 0
