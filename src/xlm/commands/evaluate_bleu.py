"""``xlm evaluate bleu``: BLEU of a translation model on a parallel split of a prepared
directory, or of a hypothesis file against a reference file.

    xlm evaluate bleu runs/mt/best --data runs/demo/data --split test [--beam 4] [--json out.json]
    xlm evaluate bleu --hyp output.fr --ref reference.fr [--tokenize none]

Detokenized sacreBLEU (13a) is the default figure; ``bleu_tok`` is BLEU on Moses-tokenized
text (``tokenize="none"``), the kind the XLM paper reported with ``multi-bleu.perl``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from xlm.commands.options import add_device_option, count, finite, non_negative_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bleu", help="BLEU of a translation checkpoint on a prepared split, or of --hyp against --ref")
    p.add_argument("checkpoint", type=Path, nargs="?", help="a checkpoint written by `xlm train-mt`")
    p.add_argument("--data", type=Path, help="prepared directory (`xlm prepare`) holding the parallel split")
    p.add_argument("--split", default="test", help="parallel split of --data")
    p.add_argument("--directions", default="", help="comma-separated, e.g. en-fr,fr-en (default: those the model was trained on)")
    p.add_argument("--beam", type=count, default=1, help="beam size (1: greedy)")
    p.add_argument("--length-penalty", type=finite, default=1.0, help="beam scores are log p / length**this")
    p.add_argument("--early-stopping", action="store_true", help="stop a sentence once BEAM hypotheses are finished")
    p.add_argument("--max-sentences", type=non_negative_int, default=0, help="per direction; 0: all")
    p.add_argument("--max-tokens", type=count, default=4000, help="source tokens per batch")
    p.add_argument("--hyp", type=Path, help="hypothesis file (one sentence per line)")
    p.add_argument("--ref", type=Path, help="reference file aligned with --hyp")
    p.add_argument("--tokenize", default="13a", help="sacreBLEU tokenization for --hyp/--ref (13a; none = tokenized BLEU)")
    p.add_argument("--lowercase", action="store_true", help="case-insensitive BLEU (--hyp/--ref)")
    p.add_argument("--name", default="hyp", help="label of --hyp/--ref in the table and JSON keys")
    p.add_argument("--save-hypotheses", type=Path, help="folder for the translations ({split}.{src}-{tgt}.txt)")
    p.add_argument("--json", type=Path, help="also write the figures as one JSON object")
    add_device_option(p)
    p.add_argument("--threads", type=non_negative_int, default=0, help="torch threads (0: torch's default)")
    p.set_defaults(func=run)


def _files(args: argparse.Namespace) -> tuple[dict[str, float], list[list[object]], list[str]]:
    from xlm.evaluation.bleu import bleu_files

    r = bleu_files(args.hyp, args.ref, args.tokenize, args.lowercase)
    metrics = {f"{args.name}/bleu": r.score, f"{args.name}/bp": r.brevity_penalty}
    row = [args.name, r.sys_len, r.score, *r.precisions, r.brevity_penalty]
    headers = ["pair", "hyp tokens", "BLEU", "p1", "p2", "p3", "p4", "BP"]
    print(r.signature)
    return metrics, [row], headers


def _checkpoint(args: argparse.Namespace) -> tuple[dict[str, float], list[list[object]], list[str]]:
    import torch

    from xlm.data.dataset import PreparedData
    from xlm.errors import XLMError
    from xlm.evaluation.bleu import translate_and_score
    from xlm.model.generation import DecodeConfig
    from xlm.model.seq2seq import load_translator
    from xlm.reports import write_atomic
    from xlm.text.bpe import BPETokenizer
    from xlm.training.distributed import pick_device

    if args.data is None:
        raise XLMError("give --data PREPARED_DIR with the checkpoint (or --hyp and --ref to score files)")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    tr = load_translator(args.checkpoint, device)
    prepared = PreparedData.open(args.data)
    if prepared.vocab.hash != tr.vocab.hash:
        raise XLMError(f"{args.data} was prepared with another vocabulary than {args.checkpoint}'s")
    if args.directions:
        directions = [tuple(d.split("-")) for d in args.directions.split(",")]
    else:
        obj = tr.info.extra.get("objectives", {})
        directions = [tuple(e.split("-")) for e in obj.get("mt", [])]
        for e in obj.get("bt", []):
            a, b, _ = e.split("-")
            directions += [(a, b), (b, a)]
        directions = list(dict.fromkeys(directions))
    decode = DecodeConfig(args.beam, args.length_penalty, args.early_stopping)
    tokenizer = BPETokenizer.from_dir(args.checkpoint)
    metrics: dict[str, float] = {}
    rows = []
    for d in directions:
        if len(d) != 2:
            raise XLMError(f"direction {'-'.join(d)!r} is not of the form en-fr")
        a, b = d
        if not prepared.has_para(args.split, a, b):
            raise XLMError(f"{args.data}: no parallel {args.split} split for {a}-{b}")
        data = prepared.para(args.split, a, b)
        out = translate_and_score(
            tr.model, data, tr.info.lang_id(a), tr.info.lang_id(b), b, tokenizer, decode, device,
            args.max_sentences, tr.info.config.max_positions - 2, args.max_tokens,
        )
        scores = out.scores()
        metrics[f"{a}-{b}/bleu"] = scores["bleu"]
        metrics[f"{a}-{b}/bleu_tok"] = scores["bleu_tok"]
        rows.append([f"{a}-{b}", len(out.hyp), scores["bleu"], scores["bleu_tok"]])
        if args.save_hypotheses:
            write_atomic(args.save_hypotheses / f"{args.split}.{a}-{b}.txt", "".join(h + "\n" for h in out.hyp))
    return metrics, rows, ["direction", "sentences", "BLEU (detok)", "BLEU (tok)"]


def run(args: argparse.Namespace) -> int:
    from xlm.errors import XLMError
    from xlm.reports import format_table, write_json

    if args.hyp is not None or args.ref is not None:
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
