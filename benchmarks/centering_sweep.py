"""Cross-lingual retrieval P@1 of a checkpoint's sentence vectors for every pooling (first,
mean) x layer (0 = embeddings .. L, and all of them averaged) x centering:

* ``stored``: minus the language means stored in the checkpoint by ``xlm center`` (when it
  has none, means computed here on ``--means-split`` of ``--prepared``, not stored);
* ``set``:    minus the mean of the evaluated set itself (per language and pair);
* ``none``:   raw vectors.

P@1 is cosine nearest neighbour, averaged over both directions, per language pair of the
prepared ``--split`` parallel data and as the mean over pairs. Each sentence set is embedded
once, with all layers and both poolings.

    python benchmarks/centering_sweep.py runs/base/best --prepared runs/demo/data --split test --max-sentences 500
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from xlm.commands.evaluate_retrieval import _prepared_pairs
from xlm.data.dataset import PreparedData
from xlm.evaluation.centering import compute_from_prepared, mean_for, stored_means
from xlm.evaluation.embeddings import POOLINGS, EmbedOptions, SentenceEncoder
from xlm.evaluation.retrieval import retrieval_metrics
from xlm.model.pretrained import load_pretrained
from xlm.reports import format_table, write_json
from xlm.training.distributed import pick_device

CENTERINGS = ("stored", "set", "none")


def layer_configs(n_layers: int) -> list[tuple[str, list[int]]]:
    return [(str(i), [i]) for i in range(n_layers + 1)] + [(f"0-{n_layers}", list(range(n_layers + 1)))]


def sweep(pretrained, prepared: PreparedData, split: str, max_sentences: int, means, max_tokens: int = 8000):
    """Records ``{pooling, layers, centering, pairs: {a-b: P@1}, mean}``."""
    pairs = _prepared_pairs(prepared.directory, split, set(pretrained.info.lang2id), set())
    if not pairs:
        raise SystemExit(f"{prepared.directory}: no {split} parallel split in the model's languages")
    n_layers = len(pretrained.model.layers)
    options = EmbedOptions(max_tokens=max_tokens, center=False)
    # (pair, side) -> {pooling: (N, L+1, D)}: every set embedded once
    vectors: dict[tuple[str, str], tuple[str, dict[str, np.ndarray]]] = {}
    for a, b in pairs:
        data = prepared.para(split, a, b)
        n = len(data) if max_sentences <= 0 else min(max_sentences, len(data))
        for side, lang, mono in (("src", a, data.src), ("tgt", b, data.tgt)):
            sents = mono.sentences(np.arange(n))
            vectors[(f"{a}-{b}", side)] = (lang, SentenceEncoder(pretrained, lang, options).pooled_layers(sents))
    records = []
    for pooling in POOLINGS:
        for name, layers in layer_configs(n_layers):
            for centering in CENTERINGS:
                per_pair = {}
                for a, b in pairs:
                    pair = f"{a}-{b}"
                    sides = []
                    for side in ("src", "tgt"):
                        lang, pooled = vectors[(pair, side)]
                        v = pooled[pooling][:, layers].mean(1)
                        if centering == "stored":
                            v = v - mean_for(means, lang, pooling, layers)
                        elif centering == "set":
                            v = v - v.mean(0, dtype=np.float64).astype(np.float32)
                        sides.append(v)
                    m = retrieval_metrics(sides[0], sides[1], a, b, margin=False)
                    per_pair[pair] = (m[f"{a}-{b}/p@1"] + m[f"{b}-{a}/p@1"]) / 2
                records.append(
                    {
                        "pooling": pooling,
                        "layers": name,
                        "centering": centering,
                        "pairs": per_pair,
                        "mean": float(np.mean(list(per_pair.values()))),
                    }
                )
    return [f"{a}-{b}" for a, b in pairs], records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--prepared", type=Path, required=True, help="an `xlm prepare` directory")
    ap.add_argument("--split", default="test", help="parallel split to retrieve on (default test)")
    ap.add_argument("--max-sentences", type=int, default=500, help="first N pairs of each language pair (0: all)")
    ap.add_argument("--means-split", default="train", help="without stored means: split to compute them on")
    ap.add_argument(
        "--means-max-sentences", type=int, default=5000, help="without stored means: sentences per language"
    )
    ap.add_argument("--max-tokens", type=int, default=8000, help="padded tokens per batch")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--json", type=Path, help="write the records as JSON")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    pretrained = load_pretrained(args.checkpoint, pick_device(args.device))
    prepared = PreparedData.open(args.prepared)
    prepared.check_vocabulary(pretrained.vocab, args.checkpoint)
    means = stored_means(pretrained)
    if means is not None:
        source = f"stored in {args.checkpoint} ({means.split} split of {means.source}, {means.counts})"
    else:
        means = compute_from_prepared(pretrained, args.prepared, args.means_split, args.means_max_sentences)
        source = f"computed here on {args.means_split} of {args.prepared} ({means.counts}; not stored)"
    pairs, records = sweep(pretrained, prepared, args.split, args.max_sentences, means, args.max_tokens)
    print(f"# {args.checkpoint}: retrieval P@1 (cosine, mean of both directions) on {args.split} of {args.prepared}")
    print(f"# 'stored' means: {source}; {time.perf_counter() - t0:.0f} s")
    headers = ["pooling", "layers", "centering", *pairs, "mean"]
    rows = [[r["pooling"], r["layers"], r["centering"], *(r["pairs"][p] for p in pairs), r["mean"]] for r in records]
    print(format_table(headers, rows, floatfmt="{:.3f}"))
    print()
    print("# mean over pairs")
    summary: dict[tuple[str, str], dict[str, float]] = {}
    for r in records:
        summary.setdefault((r["pooling"], r["layers"]), {})[r["centering"]] = r["mean"]
    rows = [[p, lay, *(v[c] for c in CENTERINGS)] for (p, lay), v in summary.items()]
    print(format_table(["pooling", "layers", *CENTERINGS], rows, floatfmt="{:.3f}"))
    best = max(records, key=lambda r: r["mean"])
    print(
        f"# best: pooling {best['pooling']}, layers {best['layers']}, centering {best['centering']}: {best['mean']:.3f}"
    )
    if args.json:
        write_json(
            args.json, {"checkpoint": str(args.checkpoint), "split": args.split, "means": source, "records": records}
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
