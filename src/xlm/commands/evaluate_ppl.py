"""``xlm evaluate ppl CHECKPOINT --data PREPARED_DIR --split test [--langs ne,hi]
[--objective mlm|clm|both]``: perplexity per language (deterministic MLM masking)."""

from __future__ import annotations

import argparse
from pathlib import Path

from xlm.commands.embed import add_precision_option
from xlm.commands.options import add_device_option, int_at_least, non_negative_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ppl", help="MLM / CLM perplexity per language on a binarized split")
    p.add_argument("checkpoint", type=Path, help="checkpoint directory (from xlm pretrain or xlm import)")
    p.add_argument("--data", type=Path, required=True, help="an `xlm prepare` directory (same vocabulary as the model)")
    p.add_argument("--split", default="test", help="binarized split of --data")
    p.add_argument("--langs", default="", help="comma-separated languages (default: every model language with the split)")
    p.add_argument("--objective", choices=("mlm", "clm", "both"), default="both", help="which perplexity to measure")
    p.add_argument("--bptt", type=int_at_least(2), default=256, help="tokens per evaluated row (capped at the model's positions)")
    p.add_argument("--max-rows", type=non_negative_int, default=0, help="rows per language (0: the whole split)")
    p.add_argument("--seed", type=non_negative_int, default=1234, help="masking seed (MLM)")
    p.add_argument("--json", type=Path, help="write the metrics as one JSON object")
    p.add_argument("--plot", type=Path, help="write a PNG bar chart of perplexity per language")
    add_device_option(p)
    add_precision_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xlm.commands.embed import load_model
    from xlm.data.dataset import PreparedData
    from xlm.evaluation.charts import bar_chart
    from xlm.evaluation.perplexity import evaluate_perplexity
    from xlm.model.precision import inference_autocast
    from xlm.reports import format_table, write_json

    prepared = PreparedData.open(args.data)
    pretrained = load_model(args.checkpoint, args.device)
    langs = [s.strip() for s in args.langs.split(",") if s.strip()]
    with inference_autocast(next(pretrained.model.parameters()).device, args.precision):
        metrics = evaluate_perplexity(
            pretrained, prepared, args.split, langs, args.objective, args.bptt, args.max_rows, args.seed
        )
    kinds = ("mlm", "clm") if args.objective == "both" else (args.objective,)
    langs = sorted({k.split("/")[0] for k in metrics})
    headers = ["lang"] + [f"{k.upper()} {m}" for k in kinds for m in ("ppl", "acc")]
    rows = [[lang] + [metrics.get(f"{lang}/{k}/{m}", float("nan")) for k in kinds for m in ("ppl", "acc")] for lang in langs]
    print(format_table(headers, rows))
    if args.json:
        write_json(args.json, metrics)
    if args.plot:
        groups = {lang: {k.upper(): metrics[f"{lang}/{k}/ppl"] for k in kinds if f"{lang}/{k}/ppl" in metrics} for lang in langs}
        bar_chart(groups, args.plot, "perplexity", f"perplexity ({args.split})", log=True)
    return 0
