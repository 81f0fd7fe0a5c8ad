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
from typing import TYPE_CHECKING

from xlm.commands.decoding import add_decoding_options, load_for_decoding, warn_untrained_direction
from xlm.commands.options import (
    add_compute_options,
    add_data_option,
    add_directions_option,
    add_json_option,
    add_split_option,
    non_negative_int,
    open_prepared,
    progress_enabled,
)

if TYPE_CHECKING:
    import torch

    from xlm.data.dataset import PreparedData
    from xlm.evaluation.bleu import Translations
    from xlm.model.generation import DecodeConfig
    from xlm.model.pretrained import ModelInfo
    from xlm.model.seq2seq import Translator
    from xlm.text.tokenizer import Tokenizer


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bleu", help="BLEU of a translation checkpoint on a prepared split, or of --hyp against --ref")
    p.add_argument("checkpoint", type=Path, nargs="?", help="a checkpoint written by `xlm train-mt`")
    add_data_option(p, "prepared directory (`xlm prepare`) holding the parallel split")
    add_split_option(p, "test", "parallel split of --data")
    add_directions_option(p, "comma-separated, e.g. en-fr,fr-en (default: those recorded with the checkpoint)")
    p.add_argument("--max-sentences", type=non_negative_int, default=0, help="per direction; 0: all")
    add_decoding_options(p)
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
    add_compute_options(p, threads=True)
    p.set_defaults(func=run)


def _files(args: argparse.Namespace) -> tuple[dict[str, float], list[list[object]], list[str]]:
    from xlm.evaluation.bleu import bleu_files

    r = bleu_files(args.hyp, args.ref, args.tokenize, args.lowercase)
    metrics = {f"{args.name}/bleu": r.score, f"{args.name}/bp": r.brevity_penalty}
    row = [args.name, r.sys_len, r.score, *r.precisions, r.brevity_penalty]
    headers = ["pair", "hyp tokens", "BLEU", "p1", "p2", "p3", "p4", "BP"]
    print(r.signature)
    return metrics, [row], headers


def _directions(args: argparse.Namespace, info: ModelInfo) -> list[tuple[str, str]]:
    """``--directions`` (with a warning for each the model was not trained on), else the
    directions recorded with the checkpoint; each of the form en-fr."""
    from xlm.errors import XLMError
    from xlm.model.seq2seq import evaluation_directions, trained_directions

    if args.directions:
        directions = [tuple(d.split("-")) for d in args.directions.split(",")]
    else:
        directions = evaluation_directions(info)
    if args.ref is not None and len(directions) != 1:
        raise XLMError(
            f"--ref is the raw reference of one direction, but there are {len(directions)}: give --directions"
        )
    for d in directions:
        if len(d) != 2:
            raise XLMError(f"direction {'-'.join(d)!r} is not of the form en-fr")
    if args.directions:
        for a, b in directions:
            warn_untrained_direction("evaluate bleu", a, b, trained_directions(info))
    return directions


TABLE_HEADERS = ["direction", "sentences", "BLEU (raw refs)", "BLEU (normalized refs)", "BLEU (tok, multi-bleu)",
                 "too long"]  # fmt: skip


def _checkpoint(args: argparse.Namespace) -> tuple[dict[str, float], list[list[object]], list[str]]:
    from xlm.errors import XLMError
    from xlm.fileio import status
    from xlm.text.tokenizer import load_tokenizer

    if args.data is None:
        raise XLMError("give --data PREPARED_DIR with the checkpoint (or --hyp and --ref to score files)")
    tr, device, decode = load_for_decoding(args)
    prepared = open_prepared(args, tr.vocab)
    directions = _directions(args, tr.info)
    status("decoding: " + ", ".join(f"{k}={v}" for k, v in decode.to_json().items()))
    tokenizer = load_tokenizer(args.checkpoint)
    metrics: dict[str, float] = {}
    rows = []
    for a, b in directions:
        if not prepared.has_para(args.split, a, b):
            raise XLMError(f"{args.data}: no parallel {args.split} split for {a}-{b}")
        out = _translate_and_score(args, tr, prepared, a, b, tokenizer, decode, device)
        scores = out.scores()
        for key, value in scores.items():
            metrics[f"{a}-{b}/{key}"] = value
        rows.append(
            [f"{a}-{b}", len(out.hyp), scores.get("bleu", "-"), scores["bleu_norm"], scores["bleu_tok"], out.n_long]
        )
    if any(r[2] == "-" for r in rows):
        status(f"no raw references for some directions in {args.data / 'raw'} (prepared before xlm kept them; "
              "give --ref): BLEU (raw refs) is '-'")  # fmt: skip
    return metrics, rows, TABLE_HEADERS


def _translate_and_score(
    args: argparse.Namespace, tr: Translator, prepared: PreparedData, a: str, b: str, tokenizer: Tokenizer,
    decode: DecodeConfig, device: torch.device,
) -> Translations:  # fmt: skip
    """Translate ``--split`` from ``a`` to ``b`` (saving the hypotheses when asked) and score it."""
    from xlm.evaluation.bleu import raw_reference_path, translate_and_score
    from xlm.fileio import status
    from xlm.model.precision import inference_autocast
    from xlm.reports import write_atomic

    refs = args.ref if args.ref is not None else raw_reference_path(args.data, args.split, a, b)
    with inference_autocast(device, args.precision):
        out = translate_and_score(
            tr.model, prepared.para(args.split, a, b), tr.info.lang_id(a), tr.info.lang_id(b), b, tokenizer,
            decode, device, args.max_sentences, args.max_tokens, refs,
            progress=f"translate {a}-{b}" if progress_enabled() else None,
        )  # fmt: skip
    if out.n_long:
        status(out.long_note(f"{a}-{b}"))
    if args.save_hypotheses:
        write_atomic(args.save_hypotheses / f"{args.split}.{a}-{b}.txt", "".join(h + "\n" for h in out.hyp))
    return out


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
