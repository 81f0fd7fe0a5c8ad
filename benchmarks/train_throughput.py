"""Training and inference throughput of our XLM against Hugging Face ``transformers``'
``XLMWithLMHeadModel`` with the same sizes and the same weights, measured interleaved
(A B A B ...) in one process so that the machine's drift hits both alike.

For each shape it reports median tokens/s of ours and HF, the ratio, model FLOPs per
token, achieved GFLOP/s and its fraction of a matmul calibration timed between the steps,
and peak memory (peak RSS of a child process that builds one implementation and runs
the same steps).

    python benchmarks/train_throughput.py                      # demo + paper-shaped
    python benchmarks/train_throughput.py --shapes tiny --repeats 3   # seconds (used by a test)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from xlm.interop.huggingface import export_state_dict
from xlm.model.transformer import ModelConfig, TransformerModel
from xlm.objectives.masking import MaskingConfig, mask_tokens
from xlm.training.optim import OptimConfig, build_optimizer


@dataclass(frozen=True)
class Shape:
    name: str
    emb_dim: int
    n_layers: int
    n_heads: int
    vocab: int
    batch: int
    seq: int
    n_langs: int = 6


SHAPES = {
    "tiny": Shape("tiny", 64, 2, 2, 2000, 4, 32),
    # the demo config (configs/demo.toml) at the reference batch of 16 x 128 tokens
    "demo": Shape("demo", 256, 4, 4, 16000, 16, 128),
    # the paper's 1024-dim / 8-head model with 2 of its 12 layers and rows of 64 tokens instead
    # of 256 (the paper's batches are 64 x 256 per GPU; 32 x 64 keeps a step near 2k tokens)
    "paper": Shape("paper", 1024, 2, 8, 16000, 32, 64),
}


# train: MLM streams (full rows); tlm: MLM on padded rows of varied length (as TLM pairs);
# infer: encoding full rows without gradient; infer-pad: encoding padded rows of varied length
MODES = ("train", "tlm", "infer", "infer-pad")
PADDED = ("tlm", "infer-pad")


def model_flops_per_token(s: Shape, predicted_fraction: float, training: bool) -> float:
    """Useful FLOPs per input token: linear layers (12 d^2 per layer), attention scores and
    values (2 * 2 * T * d per layer), the output layer at the predicted positions.
    Training counts forward + backward (x3)."""
    d, L, T = s.emb_dim, s.n_layers, s.seq
    fwd = 2 * 12 * d * d * L + 4 * T * d * L + 2 * d * s.vocab * predicted_fraction
    return fwd * (3 if training else 1)


def matmul_calibration(n: int = 1024, reps: int = 5, dtype: torch.dtype = torch.float32) -> tuple[Callable, float]:
    """A ``(2n x n) @ (n x n)`` matmul repeated ``reps`` times, as a step to time alongside the
    models (so that it sees the same machine state), and the FLOPs of one call."""
    a, b = torch.randn(2 * n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)

    def run(_batch) -> None:
        for _ in range(reps):
            a @ b

    return run, 2.0 * 2 * n * n * n * reps


def build_ours(s: Shape, dropout: float) -> TransformerModel:
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=s.vocab, n_langs=s.n_langs, emb_dim=s.emb_dim, n_layers=s.n_layers, n_heads=s.n_heads,
        dropout=dropout, attention_dropout=0.0, max_positions=512,
    )
    return TransformerModel(cfg)


def build_hf(s: Shape, dropout: float):
    from transformers import XLMConfig, XLMWithLMHeadModel

    hf_cfg = XLMConfig(
        vocab_size=s.vocab, emb_dim=s.emb_dim, n_layers=s.n_layers, n_heads=s.n_heads, dropout=dropout,
        attention_dropout=0.0, max_position_embeddings=512, n_langs=s.n_langs, use_lang_emb=True,
        gelu_activation=True, layer_norm_eps=1e-12, pad_index=2, eos_index=1, bos_index=0, unk_index=3, mask_index=5,
    )
    return XLMWithLMHeadModel(hf_cfg)


def build_pair(s: Shape, dropout: float):
    """Our model and HF's with the same sizes and the same weights."""
    ours, hf = build_ours(s, dropout), build_hf(s, dropout)
    missing, unexpected = hf.load_state_dict(export_state_dict(ours.state_dict()), strict=False)
    assert not unexpected and all("pred_layer.proj.weight" in k or "position_ids" in k for k in missing), (missing, unexpected)
    hf.tie_weights()
    return ours, hf


def make_batches(s: Shape, n: int, padded: bool):
    g = torch.Generator().manual_seed(1)
    mcfg = MaskingConfig(vocab_size=s.vocab)
    out = []
    for _ in range(n):
        tokens = torch.randint(14, s.vocab, (s.batch, s.seq), generator=g)
        if padded:  # TLM-like: rows of varied length, padded at the end
            lengths = torch.randint(s.seq // 2, s.seq + 1, (s.batch,), generator=g)
            lengths[0] = s.seq
        else:
            lengths = torch.full((s.batch,), s.seq)
        real = torch.arange(s.seq)[None, :] < lengths[:, None]
        tokens[~real] = 2
        langs = torch.randint(0, s.n_langs, (s.batch, 1), generator=g).expand(-1, s.seq).contiguous()
        inputs, chosen, targets = mask_tokens(tokens, real, mcfg, g)
        labels = torch.full_like(tokens, -100)
        labels[chosen] = targets
        out.append(dict(tokens=inputs, lengths=lengths, langs=langs, chosen=chosen, targets=targets, labels=labels))
    return out


def step_ours(model, opt):
    def run(b):
        logits = model(b["tokens"], b["lengths"], b["langs"], predict=b["chosen"])
        loss = F.cross_entropy(logits, b["targets"])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return run


def step_hf(model, opt):
    def run(b):
        out = model(input_ids=b["tokens"], langs=b["langs"], lengths=b["lengths"], labels=b["labels"])
        out[0].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return run


def infer_ours(model):
    @torch.no_grad()
    def run(b):
        model(b["tokens"], b["lengths"], b["langs"])

    return run


def infer_hf(model):
    @torch.no_grad()
    def run(b):
        model.transformer(input_ids=b["tokens"], langs=b["langs"], lengths=b["lengths"])

    return run


def with_precision(fn: Callable, precision: str) -> Callable:
    """``fn`` under bf16 autocast (both implementations alike), or unchanged for fp32."""
    if precision == "fp32":
        return fn

    def run(b):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fn(b)

    return run


def interleaved(fns: dict[str, Callable], batches: list, repeats: int, warmup: int = 2) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            b = batches[i % len(batches)]
            t = time.perf_counter()
            fn(b)
            if i >= warmup:
                times[name].append(time.perf_counter() - t)
    return times


def optimizer_for(impl: str, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Ours: the optimizer `xlm pretrain` builds (fused AdamW). HF: AdamW with the multi-tensor
    (foreach) kernel, faster on CPU than torch's default single-tensor loop."""
    if impl == "ours":
        return build_optimizer([model], OptimConfig(lr=1e-4))
    return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, foreach=True)


def _peak_rss_child(shape: Shape, impl: str, mode: str, q) -> None:
    model = build_ours(shape, 0.1) if impl == "ours" else build_hf(shape, 0.1)
    batches = make_batches(shape, 2, padded=mode in PADDED)
    if mode.startswith("infer"):
        model.eval()
        fn = infer_ours(model) if impl == "ours" else infer_hf(model)
    else:
        opt = optimizer_for(impl, model)
        fn = step_ours(model, opt) if impl == "ours" else step_hf(model, opt)
    for b in batches:
        fn(b)
    q.put(peak_rss_mb())


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss it restarts at exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory_mb(shape: Shape, impl: str, mode: str) -> float:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_peak_rss_child, args=(shape, impl, mode, q))
    p.start()
    p.join()
    return float(q.get()) if not q.empty() else float("nan")


def bench_shape(shape: Shape, repeats: int, memory: bool, precision: str = "fp32", modes=MODES) -> list[dict]:
    rows = []
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    calib, calib_flops = matmul_calibration(min(1024, 4 * shape.emb_dim), dtype=dtype)
    for mode in modes:
        ours, hf = build_pair(shape, 0.1)
        batches = make_batches(shape, 4, padded=mode in PADDED)
        if mode.startswith("infer"):
            ours.eval(), hf.eval()
            fns = {"ours": infer_ours(ours), "hf": infer_hf(hf)}
        else:
            fns = {"ours": step_ours(ours, optimizer_for("ours", ours)), "hf": step_hf(hf, optimizer_for("hf", hf))}
        fns = {k: with_precision(fn, precision) for k, fn in fns.items()}
        fns["matmul"] = calib  # timed between the steps: the same machine state as the models
        times = interleaved(fns, batches, repeats)
        n_tok = sum(int(b["lengths"].sum()) for b in batches) / len(batches)
        cal = calib_flops / statistics.median(times["matmul"]) / 1e9
        training = not mode.startswith("infer")
        flops = model_flops_per_token(shape, 0.15 if training else 0.0, training)
        row = {"shape": shape.name, "mode": mode, "precision": precision, "matmul_gflops": cal}
        for impl in ("ours", "hf"):
            tps = n_tok / statistics.median(times[impl])
            row[f"{impl}_tok_s"] = tps
            row[f"{impl}_gflops"] = tps * flops / 1e9
            row[f"{impl}_frac_peak"] = tps * flops / 1e9 / cal
            if memory and precision == "fp32":
                row[f"{impl}_peak_mb"] = peak_memory_mb(shape, impl, mode)
        row["ratio"] = row["ours_tok_s"] / row["hf_tok_s"]
        row["flops_per_token"] = flops
        rows.append(row)
    return rows


def plot_rows(rows: list[dict], path: str) -> None:
    """Horizontal bars of the ratio ours / HF per shape and mode, one panel per precision,
    each bar labelled with both implementations' tokens/s."""
    from xlm.reports import pyplot, save_figure

    plt = pyplot()
    precisions = list(dict.fromkeys(r.get("precision", "fp32") for r in rows))
    n = max(sum(r.get("precision", "fp32") == p for r in rows) for p in precisions)
    fig, axes = plt.subplots(1, len(precisions), figsize=(6.5 * len(precisions), 0.45 * n + 1.6), squeeze=False)
    for ax, prec in zip(axes[0], precisions):
        sel = [r for r in rows if r.get("precision", "fp32") == prec][::-1]
        y = list(range(len(sel)))
        ratios = [r["ratio"] for r in sel]
        ax.barh(y, ratios, color=["tab:blue" if x >= 1 else "tab:red" for x in ratios])
        ax.axvline(1.0, color="gray", lw=1)
        ax.set_yticks(y, [f"{r['shape']} {r['mode']}" for r in sel], fontsize=8)
        for yi, r in zip(y, sel):
            ax.text(r["ratio"] + 0.03, yi, f"{r['ratio']:.2f}x  ({r['ours_tok_s']:,.0f} vs {r['hf_tok_s']:,.0f} tok/s)",
                    va="center", fontsize=7)  # fmt: skip
        ax.set_xlim(0, max(ratios) * 1.9)
        ax.set_xlabel("ours / HF tokens per second", fontsize=8)
        ax.set_title(prec, fontsize=10)
    fig.suptitle("XLM: ours vs transformers (same weights, interleaved steps, 2-core CPU)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="demo,paper", help=f"comma-separated, of {sorted(SHAPES)}")
    ap.add_argument("--repeats", type=int, default=10, help="timed steps per implementation (medians reported)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--precision", default="fp32", help="fp32, bf16 (CPU autocast, both implementations), or fp32,bf16")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {MODES}")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    ap.add_argument("--json", help="write the rows as JSON")
    ap.add_argument("--plot", help="write a PNG bar chart of ours vs HF")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in args.shapes.split(","):
        s = SHAPES[name]
        print(f"# {name}: {asdict(s)}; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
        for r in (r for p in args.precision.split(",") for r in bench_shape(s, args.repeats, not args.no_memory, p, args.modes.split(","))):
            rows.append(r)
            mem = f"  mem ours/hf {r.get('ours_peak_mb', float('nan')):.0f}/{r.get('hf_peak_mb', float('nan')):.0f} MB" if "ours_peak_mb" in r else ""
            print(
                f"{r['shape']:6s} {r['mode']:9s} {r['precision']}  ours {r['ours_tok_s']:9,.0f} tok/s  hf {r['hf_tok_s']:9,.0f} tok/s  "
                f"ratio {r['ratio']:.2f}x  ours {r['ours_gflops']:.1f} GFLOP/s = {100 * r['ours_frac_peak']:.0f}% of "
                f"matmul {r['matmul_gflops']:.0f}  (hf {100 * r['hf_frac_peak']:.0f}%){mem}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    if args.plot:
        plot_rows(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
