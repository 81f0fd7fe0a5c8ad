"""How fast the batch pipeline (language sampling, stream / pair batching, MLM masking,
collation) produces training batches, and whether the loader's memory stays flat when the
corpus grows 10x.

    python benchmarks/batch_pipeline.py --data runs/demo/data        # after `xlm prepare`

Prints tokens/s produced for MLM (streams) and TLM (pairs) batches of the demo config, and
the peak resident memory of a child process that opens the data and draws batches, for the
prepared corpus and for a copy whose every binarized file is tiled 10 times. Also printed:
the peak of the loader's own Python/numpy allocations (tracemalloc, from opening the data
on), and the resident memory at the end split into private memory (Python, torch, the model,
the loader's arrays) and mapped file pages (pages of the memory-mapped corpus and libraries
that were read: page cache, dropped under memory pressure, at most the corpus size; these
grow with the number of distinct pages that random reads touch, not with loader state).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from xlm.config import load_config
from xlm.tasks.pretraining import PretrainConfig, PretrainTask

ROOT = Path(__file__).resolve().parents[1]


def make_task(data: Path) -> PretrainTask:
    cfg = load_config(PretrainConfig, ROOT / "configs" / "demo.toml", [f'data.path="{data}"'])
    return PretrainTask(cfg, seed=0)


def produce(task: PretrainTask, kind: str, n: int) -> tuple[float, int]:
    """Draw ``n`` batches of one objective as the trainer does (without the model)."""
    from xlm.data.batching import PairBatcher
    from xlm.objectives.language_modeling import apply_masking, pair_batch

    group = task.groups[kind]
    tokens = 0
    t = time.perf_counter()
    for _ in range(n):
        source = group[int(task.choice_rng.choice(len(group), p=task.probs[kind]))]
        if isinstance(source.sampler, PairBatcher):
            batch = pair_batch(task.objectives[kind].ctx, source, source.sampler.next_ids())
        else:
            batch = source.sampler.next_batch()
        batch = apply_masking(batch, task.masking, task.mask_gen)
        tokens += batch.n_tokens
    return time.perf_counter() - t, tokens


def tile_corpus(src: Path, dst: Path, times: int) -> None:
    """A prepared directory whose binarized files hold the corpus ``times`` times over."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name.endswith(".bin"):
            prefix = f.name[: -len(".bin")]
            meta = json.loads((src / f"{prefix}.json").read_text())
            tokens = np.fromfile(f, dtype=meta["dtype"])
            bounds = np.load(src / f"{prefix}.idx.npy")
            body = tokens[1:]  # the stream without its leading </s>
            with open(dst / f.name, "wb") as out:
                tokens[:1].tofile(out)
                for _ in range(times):
                    body.tofile(out)
            tiled = np.concatenate([bounds + k * len(body) for k in range(times)])
            np.save(dst / f"{prefix}.idx.npy", tiled)
            meta.update(n_sentences=len(tiled), n_tokens=meta["n_tokens"] * times)
            (dst / f"{prefix}.json").write_text(json.dumps(meta))
        elif f.is_file() and not f.name.endswith(".idx.npy") and not (src / f"{f.name[:-5]}.bin").exists():
            shutil.copy(f, dst / f.name)  # vocabulary, prepare.json


def _memory_mb() -> dict[str, float]:
    """Peak resident memory, private (anonymous) and mapped-file resident memory, in MB."""
    keys = {"VmHWM:": "peak", "RssAnon:": "private", "RssFile:": "file"}
    with open("/proc/self/status") as f:
        return {keys[p[0]]: int(p[1]) / 1024 for p in map(str.split, f) if p and p[0] in keys}


def _peak_child(data: str, n: int, q) -> None:
    import tracemalloc

    tracemalloc.start()
    task = make_task(Path(data))
    for kind in task.kinds:
        produce(task, kind, n)
    q.put({**_memory_mb(), "traced": tracemalloc.get_traced_memory()[1] / 2**20})


def peak_memory_mb(data: Path, n: int) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_peak_child, args=(str(data), n, q))
    p.start()
    result = q.get()
    p.join()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "runs" / "demo" / "data")
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--tile", type=int, default=10, help="corpus growth factor for the memory check (0: skip)")
    args = ap.parse_args(argv)
    task = make_task(args.data)
    print(f"data {args.data}; objectives {task.kinds}")
    for kind in task.kinds:
        produce(task, kind, 5)  # warm the page cache
        seconds, tokens = produce(task, kind, args.batches)
        print(
            f"{kind}: {args.batches} batches, {tokens:,} tokens in {seconds:.2f} s = {tokens / seconds:,.0f} tokens/s"
        )
    if args.tile:
        with tempfile.TemporaryDirectory() as tmp:
            tiled = Path(tmp) / "tiled"
            tile_corpus(args.data, tiled, args.tile)
            size = sum(p.stat().st_size for p in args.data.glob("*.bin"))
            small, big = peak_memory_mb(args.data, args.batches), peak_memory_mb(tiled, args.batches)
            print(
                f"peak RSS drawing {args.batches} batches per objective: corpus x1 ({size / 1e6:.0f} MB of tokens) "
                f"{small['peak']:.0f} MB; corpus x{args.tile} {big['peak']:.0f} MB"
            )
            for name, m in (("x1", small), (f"x{args.tile}", big)):
                print(
                    f"  corpus {name}: peak Python/numpy allocations {m['traced']:.1f} MB; at the end "
                    f"private {m['private']:.0f} MB, mapped corpus/library pages {m['file']:.0f} MB"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
