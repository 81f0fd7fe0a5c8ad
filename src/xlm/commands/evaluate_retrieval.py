"""``xlm evaluate retrieval CHECKPOINT --pairs en-fr=FILE.tsv [...]`` or ``--data DIR --split
test [--directions en-fr,...]``: cross-lingual sentence retrieval P@1, both directions, cosine
and margin.

Vectors are centered per language (``--no-center``: raw): with the means stored in the
checkpoint by ``xlm center``, else with each evaluated set's own mean."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from xlm.commands.options import (
    add_checkpoint_argument,
    add_data_option,
    add_directions_option,
    add_embedding_options,
    add_json_option,
    add_plot_option,
    add_repeatable_option,
    add_split_option,
    embed_options,
    load_model,
    non_negative_int,
    open_prepared,
)
from xlm.errors import XLMError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("retrieval", help="cross-lingual sentence retrieval precision@1")
    add_checkpoint_argument(p)
    add_repeatable_option(p, "--pairs", "SRC-TGT=FILE", "TSV of translation pairs (source<TAB>target), repeatable")
    add_data_option(p, "use the binarized parallel splits of this `xlm prepare` directory", aliases=("--prepared",))
    add_split_option(p, "test")
    add_directions_option(p, "with --data: only these pairs, in this direction, e.g. en-fr,en-de", aliases=("--langs",))
    p.add_argument("--max-sentences", type=non_negative_int, default=0, help="first N pairs of each set (0: all)")
    p.add_argument(
        "--margin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also score with the ratio margin (k=4), default on",
    )
    add_json_option(p)
    add_plot_option(p, "write a PNG heat-map of P@1 over language pairs")
    add_embedding_options(p)
    p.set_defaults(func=run)  # fmt: skip


def _prepared_pairs(directory: Path, split: str, model_langs: set[str], only: set[str]) -> list[tuple[str, str]]:
    pattern = re.compile(rf"^{re.escape(split)}\.([a-z]{{2,3}})-([a-z]{{2,3}})\.\1\.json$")
    found = []
    for path in sorted(directory.glob(f"{split}.*-*.*.json")):
        m = pattern.match(path.name)
        if m and m.group(1) in model_langs and m.group(2) in model_langs:
            a, b = m.group(1), m.group(2)
            if f"{b}-{a}" in only:  # the order asked for: queries in b
                found.append((b, a))
            elif not only or f"{a}-{b}" in only:
                found.append((a, b))
    return found


def _centering_summary(kinds: set[str], checkpoint: Path) -> str:
    if kinds == {"off"}:
        return "off (--no-center)"
    if "stored" in kinds:
        return f"the language means stored in {checkpoint} (by `xlm center`)"
    return f"each evaluated set's own mean per language (no stored means in {checkpoint}; `xlm center` adds them)"


def run(args: argparse.Namespace) -> int:
    from xlm.evaluation.embeddings import SentenceEncoder
    from xlm.evaluation.retrieval import parse_pair_spec, plot_heatmap, read_pairs_tsv, retrieval_metrics
    from xlm.reports import format_table, write_json

    if not args.pairs and args.data is None:
        raise XLMError("give --pairs SRC-TGT=FILE.tsv (repeatable) or --data DIR")
    options = embed_options(args)
    specs = [parse_pair_spec(s) for s in args.pairs]  # validate before loading the model
    pretrained = load_model(args.checkpoint, args.device)
    limit = args.max_sentences if args.max_sentences > 0 else None
    metrics: dict[str, float] = {}
    order: list[tuple[str, str]] = []
    kinds: set[str] = set()

    def score(a: str, b: str, src_vecs, tgt_vecs) -> None:
        metrics.update(retrieval_metrics(src_vecs, tgt_vecs, a, b, margin=args.margin))
        order.append((a, b))

    def centered(enc: SentenceEncoder, vectors):
        """One evaluated set's vectors, centered as the options say (stored means, else the set's mean)."""
        kinds.add(enc.centering_kind(len(vectors)))
        return enc.center_set(vectors)

    for a, b, path in specs:
        src, tgt = read_pairs_tsv(path)
        src, tgt = src[:limit], tgt[:limit]
        enc_a, enc_b = SentenceEncoder(pretrained, a, options), SentenceEncoder(pretrained, b, options)
        score(a, b, centered(enc_a, enc_a.encode_text(src)), centered(enc_b, enc_b.encode_text(tgt)))
    if args.data is not None:
        prepared = open_prepared(args, pretrained.vocab)
        only = {s.strip() for s in args.directions.split(",") if s.strip()}
        pairs = _prepared_pairs(prepared.directory, args.split, set(pretrained.info.lang2id), only)
        if not pairs:
            raise XLMError(f"{args.data}: no {args.split} parallel split in the model's languages")
        for a, b in pairs:
            data = prepared.para(args.split, a, b)
            n = len(data) if limit is None else min(limit, len(data))
            enc_a, enc_b = SentenceEncoder(pretrained, a, options), SentenceEncoder(pretrained, b, options)
            vec_a = centered(enc_a, enc_a.encode_data(data.src, n))
            vec_b = centered(enc_b, enc_b.encode_data(data.tgt, n))
            score(a, b, vec_a, vec_b)
    headers = ["pair", "sentences", "P@1 ->", "P@1 <-"] + (["margin P@1 ->", "margin P@1 <-"] if args.margin else [])
    rows = []
    for a, b in order:
        f, r = f"{a}-{b}", f"{b}-{a}"
        row = [f, int(metrics[f"{f}/n"]), metrics[f"{f}/p@1"], metrics[f"{r}/p@1"]]
        if args.margin:
            row += [metrics[f"{f}/margin/p@1"], metrics[f"{r}/margin/p@1"]]
        rows.append(row)
    print(format_table(headers, rows, floatfmt="{:.3f}"))
    print(f"centering: {_centering_summary(kinds, args.checkpoint)}", file=sys.stderr)
    if args.json:
        write_json(args.json, metrics)
    if args.plot:
        plot_heatmap(metrics, args.plot, "p@1", "sentence retrieval P@1 (cosine)")
    return 0
