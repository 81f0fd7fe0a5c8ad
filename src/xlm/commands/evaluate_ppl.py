"""``xlm evaluate ppl CHECKPOINT --data PREPARED_DIR --split test [--langs ne,hi]
[--objective mlm|clm|both]``: perplexity per language (deterministic MLM masking)."""

from __future__ import annotations

import argparse

from xlm.commands.options import (
    add_checkpoint_argument,
    add_compute_options,
    add_data_option,
    add_json_option,
    add_langs_option,
    add_plot_option,
    add_split_option,
    autocast,
    int_at_least,
    load_model,
    non_negative_int,
    progress_enabled,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ppl", help="MLM / CLM perplexity per language on a binarized split")
    add_checkpoint_argument(p)
    add_data_option(p, required=True)
    add_split_option(p, "test", "binarized split of --data")
    add_langs_option(p, "comma-separated languages (default: every model language with the split)")
    p.add_argument("--objective", choices=("mlm", "clm", "both"), default="both", help="which perplexity to measure")
    p.add_argument(
        "--bptt", type=int_at_least(2), default=256, help="tokens per evaluated row (capped at the model's positions)"
    )
    p.add_argument("--max-rows", type=non_negative_int, default=0, help="rows per language (0: the whole split)")
    p.add_argument("--seed", type=non_negative_int, default=1234, help="masking seed (MLM)")
    add_json_option(p)
    add_plot_option(p, "write a PNG bar chart of perplexity per language")
    add_compute_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xlm.data.dataset import PreparedData
    from xlm.evaluation.charts import bar_chart
    from xlm.evaluation.perplexity import evaluate_perplexity
    from xlm.reports import format_table, write_json

    prepared = PreparedData.open(args.data)
    pretrained = load_model(args.checkpoint, args.device)
    langs = [s.strip() for s in args.langs.split(",") if s.strip()]
    with autocast(pretrained.model, args.precision):
        metrics = evaluate_perplexity(
            pretrained, prepared, args.split, langs, args.objective, args.bptt, args.max_rows, args.seed,
            progress=progress_enabled(),
        )  # fmt: skip
    kinds = ("mlm", "clm") if args.objective == "both" else (args.objective,)
    langs = sorted({k.split("/")[0] for k in metrics})
    headers = ["lang"] + [f"{k.upper()} {m}" for k in kinds for m in ("ppl", "acc")]
    rows = [
        [lang] + [metrics.get(f"{lang}/{k}/{m}", float("nan")) for k in kinds for m in ("ppl", "acc")] for lang in langs
    ]
    print(format_table(headers, rows))
    if args.json:
        write_json(args.json, metrics)
    if args.plot:
        groups = {
            lang: {k.upper(): metrics[f"{lang}/{k}/ppl"] for k in kinds if f"{lang}/{k}/ppl" in metrics}
            for lang in langs
        }
        bar_chart(groups, args.plot, "perplexity", f"perplexity ({args.split})", log=True)
    return 0
