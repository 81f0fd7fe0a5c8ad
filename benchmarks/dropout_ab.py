"""Our CPU dropout (``xlm.model.transformer.dropout``: masks from 64-bit draws, four elements
per draw) against ``torch.nn.functional.dropout`` inside our training step: the same model,
optimizer and batches, only the dropout function swapped, steps interleaved (A B A B ...).

    python benchmarks/dropout_ab.py                          # demo train, tlm; paper train (~2 min)
    python benchmarks/dropout_ab.py --cases tiny:train --steps 2   # seconds (used by a test)
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
import torch.nn.functional as F

from xlm.benchmarking import throughput as tp
from xlm.model import transformer


def ab(shape: tp.Shape, mode: str, steps: int) -> tuple[float, float]:
    """Median tokens/s of a training step with torch's dropout and with ours."""
    ours = transformer.dropout
    model = tp.build_ours(shape)
    step = tp.runner("ours", model, mode)
    batches = tp.make_batches(shape, 4, mode in tp.PADDED, torch.device("cpu"))

    def with_dropout(fn):
        def run(b):
            transformer.dropout = fn
            step(b)

        return run

    variants = {"torch": with_dropout(lambda x, p, training: F.dropout(x, p, training)), "ours": with_dropout(ours)}
    try:
        times = tp.interleaved(variants, batches, steps, torch.device("cpu"), warmup=4)
    finally:
        transformer.dropout = ours
    n_tok = sum(int(b["lengths"].sum()) for b in batches) / len(batches)
    return n_tok / statistics.median(times["torch"]), n_tok / statistics.median(times["ours"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="demo:train,demo:tlm,paper:train", help="shape:mode, comma-separated")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    args = ap.parse_args(argv)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads")
    for case in args.cases.split(","):
        name, mode = case.split(":")
        base, new = ab(tp.SHAPES[name], mode, args.steps)
        print(
            f"{name:6s} {mode:6s} F.dropout {base:9,.0f} tok/s  ours {new:9,.0f} tok/s  ours/F.dropout {new / base:.3f}x",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
