"""``xlm center CHECKPOINT --data DIR [--split train] [--max-sentences 5000]``: compute
each language's mean sentence vector (every layer, both poolings) on monolingual text and
store it in the checkpoint as ``centering.safetensors`` (listed in its manifest). From then
on ``xlm embed``, ``xlm evaluate retrieval`` and the Python API subtract it (language-
centered embeddings, Libovický et al. 2020)."""

from __future__ import annotations

import argparse

from xlm.commands.options import (
    add_checkpoint_argument,
    add_compute_options,
    add_data_option,
    add_max_tokens_option,
    add_split_option,
    load_model,
    non_negative_int,
    progress_enabled,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("center", help="store per-language mean sentence vectors in a checkpoint (centered embeddings)")
    add_checkpoint_argument(p)
    add_data_option(p, required=True, aliases=("--prepared",))
    add_split_option(p, "train", "monolingual split of --data to average")
    p.add_argument(
        "--max-sentences", type=non_negative_int, default=5000,
        help="evenly spaced sentences per language (0: all)",
    )  # fmt: skip
    add_max_tokens_option(p, 8000)
    add_compute_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xlm.evaluation.centering import compute_from_prepared, store_means
    from xlm.fileio import check_output_folder
    from xlm.reports import format_table

    check_output_folder(args.checkpoint.parent, "folder of the checkpoint")  # it is replaced with the means added
    pretrained = load_model(args.checkpoint, args.device)
    means = compute_from_prepared(
        pretrained, args.data, args.split, args.max_sentences,
        max_tokens=args.max_tokens, precision=args.precision, progress=progress_enabled(),
    )  # fmt: skip
    path = store_means(args.checkpoint, means)
    rows = [[lang, means.counts[lang]] for lang in pretrained.info.lang2id]
    print(format_table(["language", f"{args.split} sentences"], rows))
    print(f"{path}: means of layers 0-{means.n_layers} x pooling first/mean, dim {means.dim}, from {args.data}")
    return 0
