"""Training and inference throughput of our XLM against Hugging Face ``transformers``'
``XLMWithLMHeadModel`` with the same sizes and the same weights, measured interleaved
(A B A B ...) in one process so that the machine's drift hits both alike. With
``Shape.arch`` ``xlmr`` / ``bert``, our XLM-R / BERT networks against ``XLMRobertaForMaskedLM``
/ ``BertForMaskedLM`` the same way (no language embeddings; ``attention_mask`` given to theirs).

For each shape and mode it reports median tokens/s of ours and HF, the ratio, model FLOPs per
token, achieved GFLOP/s and its fraction of a matmul calibration timed between the steps
(on a GPU, that fraction is a model-FLOPs utilisation against the measured peak), and peak
memory (of a child process that builds one implementation and runs the same steps: peak RSS
on CPU, peak allocated GPU memory on CUDA).

Modes: ``train`` (an MLM training step on full stream rows: forward, backward, optimizer),
``tlm`` (the same on padded rows of varied length, as TLM pairs), ``infer`` (encoding full
rows, no gradient) and ``infer-pad`` (encoding padded rows of varied length).
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from xlm.errors import XLMError
from xlm.interop.huggingface import export_state_dict
from xlm.model.transformer import ModelConfig, TransformerModel
from xlm.objectives.masking import MaskingConfig, mask_tokens
from xlm.training.optim import OptimConfig, build_optimizer


@dataclass(frozen=True)
class Shape:
    """Sizes of the model and of a batch (``batch`` rows of ``seq`` tokens)."""

    name: str
    emb_dim: int
    n_layers: int
    n_heads: int
    vocab: int
    batch: int
    seq: int
    n_langs: int = 6
    dropout: float = 0.1
    attention_dropout: float = 0.0
    max_positions: int = 512
    sinusoidal_embeddings: bool = False
    use_lang_emb: bool = True
    arch: str = "xlm"

    def pad(self) -> int:
        """The padding id of the arch's usual vocabulary (XLM 2, XLM-R 1, BERT 0)."""
        return PAD_IDS[self.arch]


PAD_IDS = {"xlm": 2, "xlmr": 1, "bert": 0}
ARCHS = tuple(PAD_IDS)
HF_CLASSES = {"xlm": "XLMWithLMHeadModel", "xlmr": "XLMRobertaForMaskedLM", "bert": "BertForMaskedLM"}


def for_arch(s: Shape, arch: str) -> Shape:
    """``s`` with the network ``arch`` (XLM-R and BERT have no language embeddings)."""
    if arch not in ARCHS:
        raise XLMError(f"arch {arch!r} is not one of {ARCHS}")
    if arch == "xlm":
        return replace(s, arch=arch)
    return replace(s, arch=arch, use_lang_emb=False, sinusoidal_embeddings=False)


SHAPES = {
    "tiny": Shape("tiny", 64, 2, 2, 2000, 4, 32),
    # the demo config (configs/demo.toml) at the reference batch of 16 x 128 tokens
    "demo": Shape("demo", 256, 4, 4, 16000, 16, 128),
    # the paper's 1024-dim / 8-head model with 2 of its 12 layers and rows of 64 tokens instead
    # of 256 (the paper's batches are 64 x 256 per GPU; 32 x 64 keeps a step near 2k tokens)
    "paper": Shape("paper", 1024, 2, 8, 16000, 32, 64),
}

MODES = ("train", "tlm", "infer", "infer-pad")
PADDED = ("tlm", "infer-pad")
PRECISIONS = ("fp32", "bf16", "tf32")  # tf32: fp32 with TensorFloat-32 matmuls (CUDA only)


def shape_from_config(path: Path, overrides: list[str], default_vocab: int = 16000) -> Shape:
    """The shape a pretraining config trains at: its model sizes and ``data.batch_size`` rows
    of ``data.bptt`` tokens. The vocabulary and languages come from ``data.path`` when it has
    been prepared, else ``default_vocab`` and the languages the objectives name."""
    from xlm.config import ConfigError, load_config
    from xlm.data.dataset import PreparedData
    from xlm.tasks.pretraining import PretrainConfig

    cfg = load_config(PretrainConfig, path, overrides)
    m = cfg.model
    if m.arch == "xlm" and m.ffn_size() != 4 * m.emb_dim:
        raise ConfigError(
            f"{path}: model.ffn_dim={m.ffn_dim}: transformers' XLM always uses 4 x emb_dim = {4 * m.emb_dim}"
        )
    if cfg.data.bptt > m.max_positions:
        raise ConfigError(f"{path}: data.bptt={cfg.data.bptt} exceeds model.max_positions={m.max_positions}")
    langs = {p for e in cfg.objectives.mlm + cfg.objectives.clm for p in e.split("-")}
    vocab, n_langs = default_vocab, len(langs)
    if Path(cfg.data.path).is_dir():
        try:
            prepared = PreparedData.open(cfg.data.path)
            vocab, n_langs = len(prepared.vocab), len(prepared.languages or langs)
        except (XLMError, FileNotFoundError):
            pass  # not prepared (yet): the default vocabulary size
    return Shape(
        Path(path).stem, m.emb_dim, m.n_layers, m.n_heads, vocab, cfg.data.batch_size, cfg.data.bptt,
        n_langs=max(1, n_langs), dropout=m.dropout, attention_dropout=m.attention_dropout,
        max_positions=m.max_positions, sinusoidal_embeddings=m.sinusoidal_embeddings, use_lang_emb=m.use_lang_emb,
        arch=m.arch,
    )  # fmt: skip


def model_flops_per_token(s: Shape, predicted_fraction: float, training: bool) -> float:
    """Useful FLOPs per input token: linear layers (12 d^2 per layer), attention scores and
    values (2 * 2 * T * d per layer), the output layer (and XLM-R's / BERT's head transform) at
    the predicted positions.
    Training counts forward + backward (x3)."""
    d, L, T = s.emb_dim, s.n_layers, s.seq
    head = 2 * d * d if s.arch != "xlm" else 0  # XLM-R's / BERT's LM head transform
    fwd = 2 * 12 * d * d * L + 4 * T * d * L + (2 * d * s.vocab + head) * predicted_fraction
    return fwd * (3 if training else 1)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_calibration(n: int, dtype: torch.dtype, device: torch.device, reps: int = 5) -> tuple[Callable, float]:
    """A ``(2n x n) @ (n x n)`` matmul repeated ``reps`` times, as a step to time alongside the
    models (so that it sees the same machine state), and the FLOPs of one call."""
    a = torch.randn(2 * n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)

    def run(_batch) -> None:
        for _ in range(reps):
            a @ b

    return run, 2.0 * 2 * n * n * n * reps


def build_ours(s: Shape) -> TransformerModel:
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=s.vocab, n_langs=s.n_langs, emb_dim=s.emb_dim, n_layers=s.n_layers, n_heads=s.n_heads,
        dropout=s.dropout, attention_dropout=s.attention_dropout, max_positions=s.max_positions,
        sinusoidal_embeddings=s.sinusoidal_embeddings, use_lang_emb=s.use_lang_emb, arch=s.arch, pad_index=s.pad(),
    )  # fmt: skip
    return TransformerModel(cfg)


def build_hf(s: Shape):
    try:
        import transformers
    except ImportError as e:
        raise XLMError(
            f"the benchmark compares against transformers' {HF_CLASSES[s.arch]}: pip install 'xlm[hf]'"
        ) from e
    if s.arch != "xlm":
        from xlm.interop.encoders import FORMATS, hf_config

        ours = build_ours(s).cfg
        config = hf_config(FORMATS[s.arch], ours, {"start": 0, "end": 2})
        config.pop("model_type"), config.pop("architectures")
        cls = transformers.XLMRobertaConfig if s.arch == "xlmr" else transformers.BertConfig
        return getattr(transformers, HF_CLASSES[s.arch])(cls(**config))
    XLMConfig, XLMWithLMHeadModel = transformers.XLMConfig, transformers.XLMWithLMHeadModel
    # transformers 5 declares the special ids as pad_token_id etc. and takes the XLM names through its
    # attribute_map; 4.x declares the XLM names (there the ignore is unused)
    hf_cfg = XLMConfig(  # type: ignore[call-arg, unused-ignore]
        vocab_size=s.vocab, emb_dim=s.emb_dim, n_layers=s.n_layers, n_heads=s.n_heads, dropout=s.dropout,
        attention_dropout=s.attention_dropout, max_position_embeddings=s.max_positions, n_langs=s.n_langs,
        use_lang_emb=s.use_lang_emb, sinusoidal_embeddings=s.sinusoidal_embeddings, gelu_activation=True,
        layer_norm_eps=1e-12, pad_index=2, eos_index=1, bos_index=0, unk_index=3, mask_index=5,
    )  # fmt: skip
    return XLMWithLMHeadModel(hf_cfg)


def build_pair(s: Shape):
    """Our model and HF's with the same sizes and the same weights."""
    ours, hf = build_ours(s), build_hf(s)
    if s.arch != "xlm":
        from xlm.interop.encoders import FORMATS
        from xlm.interop.layout import to_encoder_layout

        names = FORMATS[s.arch].names
        missing, unexpected = hf.load_state_dict(to_encoder_layout(ours.state_dict(), names), strict=False)
        if unexpected or set(missing) - set(names.tied):
            raise XLMError(
                f"weights do not carry over to transformers' {HF_CLASSES[s.arch]}: missing {missing}, unexpected {unexpected}"
            )
        hf.tie_weights()
        return ours, hf
    missing, unexpected = hf.load_state_dict(export_state_dict(ours.state_dict()), strict=False)
    if unexpected or not all(
        "pred_layer.proj.weight" in k or "position_ids" in k or "position_embeddings" in k for k in missing
    ):
        raise XLMError(f"weights do not carry over to transformers' XLM: missing {missing}, unexpected {unexpected}")
    hf.tie_weights()
    return ours, hf


def make_batches(s: Shape, n: int, padded: bool, device: torch.device) -> list[dict[str, torch.Tensor]]:
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
        tokens[~real] = s.pad()
        langs = torch.randint(0, s.n_langs, (s.batch, 1), generator=g).expand(-1, s.seq).contiguous()
        inputs, chosen, targets = mask_tokens(tokens, real, mcfg, g)
        labels = torch.full_like(tokens, -100)
        labels[chosen] = targets
        b = dict(
            tokens=inputs, lengths=lengths, langs=langs, chosen=chosen, targets=targets, labels=labels, mask=real.long()
        )
        out.append({k: v.to(device) for k, v in b.items()})
    return out


def step_ours(model, opt):
    def run(b):
        logits = model(b["tokens"], b["lengths"], b["langs"], predict=b["chosen"])
        loss = F.cross_entropy(logits, b["targets"])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return run


def hf_inputs(model, b) -> dict[str, torch.Tensor]:
    """What a ``transformers`` user passes: XLM takes ``langs`` and ``lengths``, XLM-R and BERT
    the tokenizer's ``attention_mask``."""
    if model.config.model_type == "xlm":
        return dict(input_ids=b["tokens"], langs=b["langs"], lengths=b["lengths"])
    return dict(input_ids=b["tokens"], attention_mask=b["mask"])


def step_hf(model, opt):
    def run(b):
        out = model(**hf_inputs(model, b), labels=b["labels"])
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
        model.base_model(**hf_inputs(model, b))

    return run


def optimizer_for(impl: str, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Ours: the optimizer `xlm pretrain` builds (fused AdamW). HF: AdamW with the multi-tensor
    (foreach) kernel, faster than torch's default single-tensor loop."""
    if impl == "ours":
        return build_optimizer([model], OptimConfig(lr=1e-4))
    return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, foreach=True)


def runner(impl: str, model, mode: str) -> Callable:
    """One timed unit of ``mode`` for ``impl`` ("ours" or "hf") on a built model."""
    if mode.startswith("infer"):
        model.eval()
        return infer_ours(model) if impl == "ours" else infer_hf(model)
    opt = optimizer_for(impl, model)
    return step_ours(model, opt) if impl == "ours" else step_hf(model, opt)


def with_precision(fn: Callable, precision: str, device: torch.device) -> Callable:
    """``fn`` under bf16 autocast (both implementations alike), or unchanged for fp32/tf32."""
    if precision != "bf16":
        return fn

    def run(b):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            fn(b)

    return run


def interleaved(
    fns: dict[str, Callable], batches: list, repeats: int, device: torch.device, warmup: int = 2
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            b = batches[i % len(batches)]
            synchronize(device)
            t = time.perf_counter()
            fn(b)
            synchronize(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t)
    return times


def set_tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def _peak_memory_child(shape: Shape, impl: str, mode: str, device: str, precision: str, q) -> None:
    dev = torch.device(device)
    set_tf32(precision == "tf32")
    model = (build_ours(shape) if impl == "ours" else build_hf(shape)).to(dev)
    fn = with_precision(runner(impl, model, mode), precision, dev)
    for b in make_batches(shape, 2, padded=mode in PADDED, device=dev):
        fn(b)
    synchronize(dev)
    q.put(torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else peak_rss_mb())


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss it restarts at exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory_mb(shape: Shape, impl: str, mode: str, device: torch.device, precision: str) -> float:
    """Peak memory of ``impl`` running ``mode``, in a fresh process of its own."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_peak_memory_child, args=(shape, impl, mode, str(device), precision, q))
    p.start()
    p.join()
    return float(q.get()) if not q.empty() else float("nan")


def bench_shape(
    shape: Shape,
    repeats: int,
    memory: bool = True,
    precision: str = "fp32",
    modes: tuple[str, ...] | list[str] = MODES,
    device: torch.device = torch.device("cpu"),
) -> list[dict[str, Any]]:
    """One row per mode: both implementations timed interleaved with the calibration matmul."""
    if precision not in PRECISIONS:
        raise XLMError(f"precision {precision!r} is not one of {PRECISIONS}")
    if precision == "tf32" and device.type != "cuda":
        raise XLMError("tf32 is a CUDA matmul mode; on CPU use fp32 or bf16")
    for mode in modes:
        if mode not in MODES:
            raise XLMError(f"mode {mode!r} is not one of {MODES}")
    set_tf32(precision == "tf32")
    rows = []
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    n = 4096 if device.type == "cuda" else min(1024, 4 * shape.emb_dim)  # big enough to reach the device's peak
    calib, calib_flops = matmul_calibration(n, dtype, device)
    try:
        for mode in modes:
            ours, hf = build_pair(shape)
            ours, hf = ours.to(device), hf.to(device)
            batches = make_batches(shape, 4, padded=mode in PADDED, device=device)
            fns = {
                impl: with_precision(runner(impl, m, mode), precision, device)
                for impl, m in (("ours", ours), ("hf", hf))
            }
            fns["matmul"] = calib  # timed between the steps: the same machine state as the models
            times = interleaved(fns, batches, repeats, device)
            n_tok = sum(int(b["lengths"].sum()) for b in batches) / len(batches)
            cal = calib_flops / statistics.median(times["matmul"]) / 1e9
            training = not mode.startswith("infer")
            flops = model_flops_per_token(shape, 0.15 if training else 0.0, training)
            row: dict[str, Any] = {"shape": shape.name, "arch": shape.arch, "mode": mode, "precision": precision,
                                   "device": device.type, "matmul_gflops": cal}  # fmt: skip
            for impl in ("ours", "hf"):
                tps = n_tok / statistics.median(times[impl])
                row[f"{impl}_tok_s"] = tps
                row[f"{impl}_gflops"] = tps * flops / 1e9
                row[f"{impl}_frac_peak"] = tps * flops / 1e9 / cal
            del ours, hf, fns
            if memory:
                for impl in ("ours", "hf"):
                    row[f"{impl}_peak_mb"] = peak_memory_mb(shape, impl, mode, device, precision)
            row["ratio"] = row["ours_tok_s"] / row["hf_tok_s"]
            row["flops_per_token"] = flops
            rows.append(row)
    finally:
        set_tf32(False)
    return rows


def format_row(r: dict[str, Any]) -> str:
    mem = f"  mem ours/hf {r['ours_peak_mb']:.0f}/{r['hf_peak_mb']:.0f} MB" if "ours_peak_mb" in r else ""
    return (
        f"{r['shape']:6s} {r.get('arch', 'xlm'):4s} {r['mode']:9s} {r['precision']}  ours {r['ours_tok_s']:9,.0f} tok/s  hf {r['hf_tok_s']:9,.0f} tok/s  "
        f"ratio {r['ratio']:.2f}x  ours {r['ours_gflops']:.1f} GFLOP/s = {100 * r['ours_frac_peak']:.0f}% of "
        f"matmul {r['matmul_gflops']:.0f}  (hf {100 * r['hf_frac_peak']:.0f}%){mem}"
    )


def plot_rows(rows: list[dict[str, Any]], path: str | Path, title: str = "2-core CPU") -> None:
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
        ax.set_yticks(y, [f"{r['shape']} {r.get('arch', 'xlm')} {r['mode']}" for r in sel], fontsize=8)
        for yi, r in zip(y, sel):
            ax.text(r["ratio"] + 0.03, yi, f"{r['ratio']:.2f}x  ({r['ours_tok_s']:,.0f} vs {r['hf_tok_s']:,.0f} tok/s)",
                    va="center", fontsize=7)  # fmt: skip
        ax.set_xlim(0, max(ratios) * 1.9)
        ax.set_xlabel("ours / HF tokens per second", fontsize=8)
        ax.set_title(prec, fontsize=10)
    fig.suptitle(f"ours vs transformers (same weights, interleaved steps, {title})", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def describe(s: Shape) -> str:
    return (f"{s.name} ({s.arch} vs {HF_CLASSES[s.arch]}): {s.emb_dim} dim, {s.n_layers} layers, {s.n_heads} heads, {s.vocab:,} vocabulary, "
            f"{s.n_langs} languages, batches of {s.batch} x {s.seq} tokens, dropout {s.dropout}, "
            f"attention dropout {s.attention_dropout}")  # fmt: skip


__all__ = [
    "ARCHS",
    "MODES",
    "SHAPES",
    "Shape",
    "for_arch",
    "bench_shape",
    "describe",
    "format_row",
    "plot_rows",
    "shape_from_config",
]
