"""XLCo with in-batch negatives against XLCo with InfoXLM's momentum encoder and queue
(``objectives.xlco_queue``): XLCo only, the same data, model, starting weights and seed, each
trained for the same CPU time, the two interleaved in chunks of steps (A B A B ...) so that
machine drift affects both alike. Prints the validation P@1 (``valid/xlco/p@1``: a sentence's
translation among ``eval.max_pairs`` candidates) each has reached after every CPU-minute.

    python benchmarks/xlco_negatives.py runs/demo/data --init runs/base/final \\
        --minutes 20 --queue 4096 --batch 64 --threads 2 --json runs/xlco_negatives.json

    # a smoke run (seconds): tiny budget, evaluation every 4 CPU-seconds
    python benchmarks/xlco_negatives.py DATA --minutes 0.2 --eval-every 4 --chunk 2 --batch 8 --threads 1 \\
        --queue 32 data.max_len=30 data.bptt=32 model.emb_dim=32 model.n_layers=2 model.n_heads=2 \\
        model.max_positions=64 eval.max_pairs=40

CPU time is the process's (``time.process_time``: every thread's), counted only while a
variant trains (not while it is evaluated). With ``--init`` the model is the checkpoint's
(its vocabulary and languages must be DATA's; ``model.*`` overrides are ignored) and the
momentum encoder starts as its copy; without, the model is built from the ``model.*``
overrides (random weights, the same for both). Any ``key=value`` after the options
overrides the pretraining config (``objectives.xlco_layers=[...]``, ``optim.lr=...``, ...); pairs
default to every pair of DATA with train and valid data. Each variant draws its dropout masks
from its own random stream, so the chunk size does not change what it computes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class Variant:
    name: str
    task: object
    optimizer: torch.optim.Optimizer
    rng: torch.Tensor
    steps: int = 0
    cpu_s: float = 0.0
    next_eval: float = 0.0
    curve: list[tuple[float, int, float]] = field(default_factory=list)  # (CPU seconds, steps, P@1)


def find_pairs(data: Path) -> list[str]:
    pairs = []
    for p in sorted(data.glob("train.*-*.*.json")):
        pair, lang = p.name.split(".")[1:3]
        if lang == pair.split("-")[0] and (data / f"valid.{pair}.{lang}.json").is_file():
            pairs.append(pair)
    return pairs


def build(name: str, overrides: list[str], init: str | None, seed: int) -> Variant:
    from xlm.config import load_config
    from xlm.model.pretrained import load_pretrained
    from xlm.tasks.pretraining import PretrainConfig, PretrainTask
    from xlm.training.optim import build_optimizer

    cfg = load_config(PretrainConfig, None, overrides)
    pretrained = None
    if init:
        pretrained = load_pretrained(init)
        cfg.model = pretrained.info.config
    torch.manual_seed(seed)
    task = PretrainTask(cfg, seed)
    if pretrained is not None:
        if pretrained.info.lang2id != task.lang2id or pretrained.info.config.vocab_size != task.model_cfg.vocab_size:
            raise SystemExit(f"{init}: its languages/vocabulary do not match {cfg.data.path}")
        task.model.load_state_dict(pretrained.model.state_dict())
    xlco = task.objectives["xlco"]
    if xlco.momentum is not None:
        xlco.momentum.copy_from(task.model)  # the momentum encoder starts from the starting weights
    task.model.train()
    return Variant(
        name, task, build_optimizer([task.model], cfg.optim), torch.Generator().manual_seed(seed).get_state()
    )


def train_chunk(v: Variant, n: int) -> None:
    from xlm.training.optim import learning_rate, set_lr

    task = v.task
    opt_cfg = task.cfg.optim
    params = [p for p in task.model.parameters() if p.requires_grad]
    torch.set_rng_state(v.rng)  # this variant's own dropout stream
    t0 = time.process_time()
    for _ in range(n):
        set_lr(v.optimizer, learning_rate(v.steps, opt_cfg))
        out = task.train_batch(v.steps)
        (out.loss * out.weight).backward()
        if opt_cfg.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, opt_cfg.clip_norm)
        v.optimizer.step()
        v.optimizer.zero_grad(set_to_none=True)
        v.steps += 1
    v.cpu_s += time.process_time() - t0
    v.rng = torch.get_rng_state()


def evaluate(v: Variant) -> float:
    from xlm.tasks.pretraining import evaluate_xlco

    task = v.task
    task.model.eval()
    p1 = evaluate_xlco(task.model, task.prepared, task.lang2id, task.cfg, task.device)["valid/xlco/p@1"]
    task.model.train()
    v.curve.append((v.cpu_s, v.steps, p1))
    print(f"{v.name:9s} {v.cpu_s / 60:6.2f} CPU-min {v.steps:6d} steps  valid/xlco/p@1 {p1:.4f}", flush=True)
    return p1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="a prepared data directory (xlm prepare)")
    ap.add_argument("overrides", nargs="*", help="key=value settings of the pretraining config")
    ap.add_argument("--init", help="a pretrained checkpoint directory (best/ or final/) to start from")
    ap.add_argument("--pairs", help="comma-separated pairs (default: every pair with train and valid data)")
    ap.add_argument("--minutes", type=float, default=10.0, help="CPU-minutes of training per variant")
    ap.add_argument("--eval-every", type=float, default=60.0, help="CPU-seconds between evaluations")
    ap.add_argument("--chunk", type=int, default=10, help="steps of one variant before the other's turn")
    ap.add_argument("--batch", type=int, default=64, help="pairs per batch (objectives.xlco_batch_size)")
    ap.add_argument("--queue", type=int, default=4096, help="queued keys per side of the queue variant")
    ap.add_argument("--momentum", type=float, default=0.999)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write both curves here")
    return ap.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = args.pairs.split(",") if args.pairs else find_pairs(Path(args.data))
    if not pairs:
        print(f"{args.data}: no pair with train and valid data", file=sys.stderr)
        return 1
    base = [f'data.path="{args.data}"', "objectives.mlm=[]", "objectives.clm=[]",
            f"objectives.xlco={json.dumps(pairs)}", f"objectives.xlco_batch_size={args.batch}",
            f"objectives.xlco_momentum={args.momentum}", "optim.warmup_steps=50", "optim.schedule=\"constant\"",
            *args.overrides]  # fmt: skip
    variants = [
        build("in-batch", [*base, "objectives.xlco_queue=0"], args.init, args.seed),
        build(f"queue{args.queue}", [*base, f"objectives.xlco_queue={args.queue}"], args.init, args.seed),
    ]
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads; pairs {','.join(pairs)}; batch {args.batch}; "
        f"momentum {args.momentum}; {args.minutes} CPU-min each; init {args.init or 'random'}"
    )
    train_interleaved(variants, 60.0 * args.minutes, args.chunk, args.eval_every)
    print_summary(variants, args.minutes)
    if args.json:
        Path(args.json).write_text(json.dumps({v.name: v.curve for v in variants}, indent=1))
    return 0


def train_interleaved(variants: list[Variant], budget: float, chunk: int, eval_every: float) -> None:
    """Each variant trains ``chunk`` steps in turn until it has used ``budget`` CPU-seconds,
    evaluated at the start, every ``eval_every`` CPU-seconds and at the end."""
    for v in variants:
        evaluate(v)
        v.next_eval = eval_every
    while any(v.cpu_s < budget for v in variants):
        for v in variants:
            if v.cpu_s >= budget:
                continue
            train_chunk(v, chunk)
            if v.cpu_s >= v.next_eval or v.cpu_s >= budget:
                evaluate(v)
                while v.next_eval <= v.cpu_s:
                    v.next_eval += eval_every


def print_summary(variants: list[Variant], minutes: float) -> None:
    """P@1 at each CPU-minute, and each variant's final figure and gain per CPU-minute."""
    print("\n# valid/xlco/p@1 reached at each CPU-minute (the first evaluation at or after it, within a chunk)")
    marks = list(range(1, int(minutes) + 1)) or [minutes]
    print("CPU-min  " + "  ".join(f"{v.name:>12s}" for v in variants))
    for m in marks:
        row = []
        for v in variants:
            done = [p for s, _, p in v.curve if s >= 60.0 * m]
            row.append(f"{done[0]:12.4f}" if done else f"{'-':>12s}")
        print(f"{m:7.2f}  " + "  ".join(row))
    for v in variants:
        p0, (s1, n1, p1) = v.curve[0][2], v.curve[-1]
        per_min = (p1 - p0) / max(s1 / 60.0, 1e-9)
        print(f"{v.name:9s} final p@1 {p1:.4f} after {s1 / 60:.2f} CPU-min, {n1} steps "
              f"({1000 * s1 / max(n1, 1):.0f} CPU-ms/step): {per_min:+.4f} p@1 per CPU-minute")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
