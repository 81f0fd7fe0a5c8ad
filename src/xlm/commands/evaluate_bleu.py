"""``xlm evaluate bleu``: BLEU of a translation model on a parallel split of a prepared
directory, or of a hypothesis file against a reference file.

    xlm evaluate bleu runs/mt/best --data runs/demo/data --split test [--beam 4] [--json out.json]
    xlm evaluate bleu --hyp output.fr --ref reference.fr [--tokenize none | multi-bleu]

With a checkpoint, per direction: ``bleu`` is detokenized sacreBLEU against the raw
references (kept by ``xlm prepare`` in ``DATA/raw/``, or ``--ref FILE`` for one direction),
``bleu_norm`` the same against references rebuilt from the normalized data (not comparable
with published figures), ``bleu_tok`` tokenized BLEU by ``multi-bleu.perl``'s rules (what the
XLM paper reported). Decoding and directions are those recorded with the checkpoint (the
training-time evaluation's), so the figures equal the training log's; options override them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from xlm.commands.options import (
    add_data_option,
    add_device_option,
    add_directions_option,
    add_json_option,
    add_max_tokens_option,
    add_precision_option,
    add_split_option,
    add_threads_option,
    count,
    finite,
    non_negative,
    non_negative_int,
    progress_enabled,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bleu", help="BLEU of a translation checkpoint on a prepared split, or of --hyp against --ref")
    p.add_argument("checkpoint", type=Path, nargs="?", help="a checkpoint written by `xlm train-mt`")
    add_data_option(p, "prepared directory (`xlm prepare`) holding the parallel split")
    add_split_option(p, "test", "parallel split of --data")
    add_directions_option(p, "comma-separated, e.g. en-fr,fr-en (default: those recorded with the checkpoint)")
    p.add_argument("--beam", type=count, help="beam size (default: the checkpoint's evaluation setting)")
    p.add_argument(
        "--length-penalty", type=finite, help="beam scores are log p / length**this (default: the checkpoint's)"
    )
    p.add_argument(
        "--early-stopping", action="store_true", default=None, help="stop a sentence at BEAM finished hypotheses"
    )
    p.add_argument(
        "--max-len-a",
        type=non_negative,
        help="outputs are at most A * source length + B tokens (default: the checkpoint's)",
    )
    p.add_argument("--max-len-b", type=non_negative_int, help="see --max-len-a")
    p.add_argument("--max-sentences", type=non_negative_int, default=0, help="per direction; 0: all")
    add_max_tokens_option(p, 4000, "source tokens per batch")
    p.add_argument("--hyp", type=Path, help="hypothesis file (one sentence per line)")
    p.add_argument(
        "--ref", type=Path,
        help="reference file aligned with --hyp; with a checkpoint, the raw references of its one direction",
    )  # fmt: skip
    p.add_argument(
        "--tokenize", default="13a",
        help="for --hyp/--ref: a sacreBLEU tokenization (13a; none) or multi-bleu (multi-bleu.perl's rules, tokenized text)",
    )  # fmt: skip
    p.add_argument("--lowercase", action="store_true", help="case-insensitive BLEU (--hyp/--ref)")
    p.add_argument("--name", default="hyp", help="label of --hyp/--ref in the table and JSON keys")
    p.add_argument("--save-hypotheses", type=Path, help="folder for the translations ({split}.{src}-{tgt}.txt)")
    add_json_option(p, "also write the figures as one JSON object")
    add_device_option(p)
    add_threads_option(p)
    add_precision_option(p)
    p.set_defaults(func=run)


def _files(args: argparse.Namespace) -> tuple[dict[str, float], list[list[object]], list[str]]:
    from xlm.evaluation.bleu import bleu_files

    r = bleu_files(args.hyp, args.ref, args.tokenize, args.lowercase)
    metrics = {f"{args.name}/bleu": r.score, f"{args.name}/bp": r.brevity_penalty}
    row = [args.name, r.sys_len, r.score, *r.precisions, r.brevity_penalty]
    headers = ["pair", "hyp tokens", "BLEU", "p1", "p2", "p3", "p4", "BP"]
    print(r.signature)
    return metrics, [row], headers


def _directions(args: argparse.Namespace, extra: dict[str, Any]) -> list[tuple[str, str]]:
    """``--directions``, else the directions recorded with the checkpoint; each of the form en-fr."""
    from xlm.errors import XLMError
    from xlm.tasks.translation import checkpoint_directions

    if args.directions:
        directions = [tuple(d.split("-")) for d in args.directions.split(",")]
    else:
        directions = checkpoint_directions(extra)
    if args.ref is not None and len(directions) != 1:
        raise XLMError(
            f"--ref is the raw reference of one direction, but there are {len(directions)}: give --directions"
        )
    for d in directions:
        if len(d) != 2:
            raise XLMError(f"direction {'-'.join(d)!r} is not of the form en-fr")
    return directions  # type: ignore[return-value]


def _checkpoint(args: argparse.Namespace) -> tuple[dict[str, float], list[list[object]], list[str]]:
    import torch

    from xlm.data.dataset import PreparedData
    from xlm.errors import XLMError
    from xlm.evaluation.bleu import raw_reference_path, translate_and_score
    from xlm.fileio import status
    from xlm.model.generation import DecodeConfig
    from xlm.model.precision import inference_autocast
    from xlm.model.seq2seq import load_translator
    from xlm.reports import write_atomic
    from xlm.text.tokenizer import load_tokenizer
    from xlm.training.distributed import pick_device

    if args.data is None:
        raise XLMError("give --data PREPARED_DIR with the checkpoint (or --hyp and --ref to score files)")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    tr = load_translator(args.checkpoint, device)
    prepared = PreparedData.open(args.data)
    prepared.check_vocabulary(tr.vocab, args.checkpoint)
    directions = _directions(args, tr.info.extra)
    decode = DecodeConfig.from_json(tr.info.extra.get("decode")).override(
        beam_size=args.beam, length_penalty=args.length_penalty, early_stopping=args.early_stopping,
        max_len_a=args.max_len_a, max_len_b=args.max_len_b,
    )  # fmt: skip
    status("decoding: " + ", ".join(f"{k}={v}" for k, v in decode.to_json().items()))
    tokenizer = load_tokenizer(args.checkpoint)
    metrics: dict[str, float] = {}
    rows = []
    for a, b in directions:
        if not prepared.has_para(args.split, a, b):
            raise XLMError(f"{args.data}: no parallel {args.split} split for {a}-{b}")
        refs = args.ref if args.ref is not None else raw_reference_path(args.data, args.split, a, b)
        with inference_autocast(device, args.precision):
            out = translate_and_score(
                tr.model, prepared.para(args.split, a, b), tr.info.lang_id(a), tr.info.lang_id(b), b, tokenizer,
                decode, device, args.max_sentences, args.max_tokens, refs,
                progress=f"translate {a}-{b}" if progress_enabled() else None,
            )  # fmt: skip
        if out.n_long:
            status(out.long_note(f"{a}-{b}"))
        scores = out.scores()
        for key, value in scores.items():
            metrics[f"{a}-{b}/{key}"] = value
        rows.append(
            [f"{a}-{b}", len(out.hyp), scores.get("bleu", "-"), scores["bleu_norm"], scores["bleu_tok"], out.n_long]
        )
        if args.save_hypotheses:
            write_atomic(args.save_hypotheses / f"{args.split}.{a}-{b}.txt", "".join(h + "\n" for h in out.hyp))
    if any(r[2] == "-" for r in rows):
        status(f"no raw references for some directions in {args.data / 'raw'} (prepared before xlm kept them; "
              "give --ref): BLEU (raw refs) is '-'")  # fmt: skip
    headers = [
        "direction",
        "sentences",
        "BLEU (raw refs)",
        "BLEU (normalized refs)",
        "BLEU (tok, multi-bleu)",
        "too long",
    ]
    return metrics, rows, headers


def run(args: argparse.Namespace) -> int:
    from xlm.errors import XLMError
    from xlm.reports import format_table, write_json

    if args.hyp is not None or (args.ref is not None and args.checkpoint is None):
        if args.hyp is None or args.ref is None:
            raise XLMError("--hyp and --ref go together")
        metrics, rows, headers = _files(args)
    elif args.checkpoint is not None:
        metrics, rows, headers = _checkpoint(args)
    else:
        raise XLMError("give a translation CHECKPOINT with --data, or --hyp FILE --ref FILE")
    print(format_table(headers, rows))
    if args.json:
        write_json(args.json, metrics)
        print(f"wrote {args.json}")
    return 0
