"""``xlm bench``: training and inference speed of our model against Hugging Face
``transformers``' XLM (or, with --arch, our XLM-R / BERT networks against
``XLMRobertaForMaskedLM`` / ``BertForMaskedLM``) with the same sizes and weights, timed
interleaved in one process.

    xlm bench                                   # the demo and paper-shaped sizes, fp32
    xlm bench --shapes demo --arch xlm,xlmr,bert   # the three networks at the demo's size
    xlm bench --config configs/xlmr_demo.toml   # the arch and sizes of a config
    xlm bench --config configs/demo.toml data.batch_size=32 --modes train,tlm
    xlm bench --shapes demo --precision fp32,bf16 --json rows.json --plot chart.png
    xlm bench --device cuda --precision tf32,bf16
"""

from __future__ import annotations

import argparse
from pathlib import Path

from xlm.commands.options import add_device_option, count, non_negative_int
from xlm.errors import XLMError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from xlm.benchmarking.throughput import MODES, SHAPES

    p.add_argument("--config", type=Path, help="a pretraining TOML config: bench its model at its batch shape")
    p.add_argument("overrides", nargs="*", help="key=value overrides of --config, e.g. data.batch_size=32")
    p.add_argument("--shapes", help=f"comma-separated, of {sorted(SHAPES)} (default demo,paper; ignored with --config)")
    p.add_argument("--arch", default="xlm", help="comma-separated networks of xlm, xlmr, bert (ignored with --config)")
    p.add_argument("--vocab", type=count, default=16000, help="vocabulary size when --config's data is not prepared")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {MODES}")
    p.add_argument(
        "--precision", default="fp32", help="comma-separated: fp32, bf16 (autocast, both alike), tf32 (CUDA)"
    )
    add_device_option(p)
    p.add_argument("--repeats", type=count, default=10, help="timed steps per implementation (medians reported)")
    p.add_argument("--threads", type=non_negative_int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    p.add_argument("--json", type=Path, help="write the rows as JSON")
    p.add_argument("--plot", type=Path, help="write a PNG chart of the ratios ours / HF")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="time our model against transformers' XLM / XLM-R / BERT (same weights, interleaved)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from xlm.benchmarking.throughput import (
        SHAPES,
        bench_shape,
        describe,
        for_arch,
        format_row,
        plot_rows,
        shape_from_config,
    )
    from xlm.reports import write_json
    from xlm.training.distributed import pick_device

    if args.repeats < 1:
        raise XLMError("--repeats must be at least 1")
    if args.overrides and not args.config:
        raise XLMError(f"overrides {args.overrides} need --config")
    if args.config:
        shapes = [shape_from_config(args.config, args.overrides, args.vocab)]
    else:
        names = (args.shapes or "demo,paper").split(",")
        unknown = [n for n in names if n not in SHAPES]
        if unknown:
            raise XLMError(f"--shapes: {', '.join(unknown)} not among {sorted(SHAPES)}")
        shapes = [for_arch(SHAPES[n], arch) for n in names for arch in args.arch.split(",")]
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    rows = []
    for shape in shapes:
        print(f"# {describe(shape)}; torch {torch.__version__}, {where}", flush=True)
        for precision in args.precision.split(","):
            for row in bench_shape(shape, args.repeats, not args.no_memory, precision, args.modes.split(","), device):
                rows.append(row)
                print(format_row(row), flush=True)
    if args.json:
        write_json(args.json, rows)
    if args.plot:
        plot_rows(rows, args.plot, where)
    return 0
