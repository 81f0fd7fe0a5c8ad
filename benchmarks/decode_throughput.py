"""Decoding speed with and without the key/value cache: greedy and beam search, output
lengths 32 / 64 / 128, a demo-size encoder-decoder (256 dim, 4 + 4 layers, 16k vocabulary).

    python benchmarks/decode_throughput.py            # ~3 minutes
    python benchmarks/decode_throughput.py --tiny     # seconds (used by a test)
    python benchmarks/decode_throughput.py --beams 4 --cross-reorder   # A/B: re-indexing the
        # cross-attention cache after each beam step (as before) against leaving it alone

The end-of-sentence logit is pushed down so that every hypothesis runs to the length limit:
the figures are output tokens per second at exactly that length. With the cache each step
feeds one position per hypothesis; without it the whole prefix is run again (O(T^2)).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from xlm.model import transformer
from xlm.model.generation import beam_search, greedy_decode
from xlm.model.seq2seq import EncoderDecoder
from xlm.model.transformer import ModelConfig
from xlm.text.vocab import EOS_INDEX


def build(tiny: bool) -> EncoderDecoder:
    torch.manual_seed(0)
    if tiny:
        cfg = ModelConfig(vocab_size=300, n_langs=2, emb_dim=32, n_layers=1, n_heads=2, max_positions=256)
    else:
        cfg = ModelConfig(vocab_size=16000, n_langs=2, emb_dim=256, n_layers=4, n_heads=4, max_positions=256)
    model = EncoderDecoder(cfg).eval()
    with torch.no_grad():
        model.decoder.pred_bias[EOS_INDEX] = -1e4  # never stop early: time a fixed output length
    return model


def time_decode(
    model: EncoderDecoder, src: torch.Tensor, lengths: torch.Tensor, out_len: int, beam: int, cache: bool
) -> float:
    t = time.perf_counter()
    with torch.no_grad():
        if beam == 1:
            greedy_decode(model, src, lengths, 0, 1, out_len, use_cache=cache)
        else:
            beam_search(model, src, lengths, 0, 1, out_len, beam, use_cache=cache)
    return time.perf_counter() - t


def cross_reorder_ab(model: EncoderDecoder, src: torch.Tensor, lengths: torch.Tensor, args: argparse.Namespace) -> int:
    """Cached beam search as it is (the cross-attention keys/values are not re-indexed) against
    the same with every cached tensor re-indexed after each step, interleaved."""
    reorder = transformer.KVCache.reorder

    def reindex_all(self, index, cross=True):
        reorder(self, index, True)

    print(f"{'decoding':10s} {'length':>6s} {'all re-indexed':>15s} {'self only':>10s} {'speed-up':>9s}")
    try:
        for beam in (int(b) for b in args.beams.split(",") if int(b) > 1):
            for out_len in (int(n) for n in args.lengths.split(",")):
                times: dict[str, list[float]] = {"all": [], "self": []}
                for _ in range(args.repeats):
                    for name, fn in (("all", reindex_all), ("self", reorder)):
                        transformer.KVCache.reorder = fn
                        times[name].append(time_decode(model, src, lengths, out_len, beam, True))
                n_out = args.batch * (out_len - 1)
                old, new = n_out / statistics.median(times["all"]), n_out / statistics.median(times["self"])
                print(f"{'beam ' + str(beam):10s} {out_len:6d} {old:15,.0f} {new:10,.0f} {new / old:8.2f}x", flush=True)
    finally:
        transformer.KVCache.reorder = reorder
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--lengths", default="32,64,128")
    ap.add_argument("--beams", default="1,4")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--cross-reorder", action="store_true", help="A/B of beam search with the cross-attention cache re-indexed"
    )
    args = ap.parse_args(argv)
    model = build(args.tiny)
    vocab = model.encoder.cfg.vocab_size
    g = torch.Generator().manual_seed(1)
    src = torch.randint(14, vocab, (args.batch, 20), generator=g)
    src[:, 0] = src[:, -1] = EOS_INDEX
    lengths = torch.full((args.batch,), 20)
    if args.cross_reorder:
        return cross_reorder_ab(model, src, lengths, args)
    print(f"{'decoding':10s} {'length':>6s} {'cache tok/s':>12s} {'no cache tok/s':>15s} {'speed-up':>9s}")
    for beam in (int(b) for b in args.beams.split(",")):
        for out_len in (int(n) for n in args.lengths.split(",")):
            times: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(args.repeats):  # interleaved
                for cache in (True, False):
                    times[cache].append(time_decode(model, src, lengths, out_len, beam, cache))
            n_out = args.batch * (out_len - 1)
            with_c, without = n_out / statistics.median(times[True]), n_out / statistics.median(times[False])
            name = "greedy" if beam == 1 else f"beam {beam}"
            print(f"{name:10s} {out_len:6d} {with_c:12,.0f} {without:15,.0f} {with_c / without:8.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
