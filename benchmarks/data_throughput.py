"""Throughput of the data pipeline on the shipped corpus.

Measures, on the first ``--lines`` lines of each ``train.{lang}.gz``:

* normalization (Moses, pure Python) in one process and in the ``--workers`` pool of ``xlm prepare``;
* learning the shared BPE (``tokenizers``) and, for reference, ``subword-nmt`` learning the
  same number of merges on the same normalized sample;
* BPE encoding: ours (Rust, batch) against ``subword-nmt``'s ``apply_bpe`` (Python) on the
  same normalized text with the same number of merges, interleaved ``--repeat`` times
  (the machine's speed drifts; the best run of each is reported);
* normalize + BPE together (:class:`xlm.text.bpe.TextEncoder`);
* binarization (encode + write ``.bin`` / ``.idx.npy``).

    python benchmarks/data_throughput.py --corpus data/corpus --lines 4000

MB are megabytes (10^6 bytes) of UTF-8 input text of each step.
"""

from __future__ import annotations

import argparse
import gzip
import io
import itertools
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from xlm.data.binarize import binarize
from xlm.data.prepare import PrepareOptions, RawFile, normalize_files
from xlm.text.bpe import BPETokenizer, TextEncoder, learn_bpe
from xlm.text.normalize import Normalizer

LANGS = ("en", "fr", "de", "es", "ru", "hi")


def head(path: Path, n: int) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8", newline="\n") as f:
        return [line.rstrip("\n") for line in itertools.islice(f, n)]


def mb(lines: list[str]) -> float:
    return sum(len(x.encode("utf-8")) + 1 for x in lines) / 1e6


def best_of(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


Row = tuple[str, str, float, float]  # step, input, seconds, MB/s


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    ap.add_argument("--langs", default=",".join(LANGS))
    ap.add_argument("--lines", type=int, default=4000, help="lines per language")
    ap.add_argument("--vocab-size", type=int, default=16000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    langs = args.langs.split(",")
    raw = {lang: head(args.corpus / f"train.{lang}.gz", args.lines) for lang in langs}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp_str:
        tmp = Path(tmp_str)
        norm = normalize_steps(raw, tmp, args.workers, rows)
        tok_files = {}
        for lang, lines in norm.items():
            tok_files[lang] = tmp / f"{lang}.tok"
            tok_files[lang].write_text("".join(x + "\n" for x in lines), encoding="utf-8")
        all_norm = [x for v in norm.values() for x in v]
        codes = bpe_learn_steps(tok_files, all_norm, tmp, args.vocab_size, rows)
        speed_up = bpe_encode_steps(all_norm, tmp, codes, args.repeat, rows)
        pipeline_steps(raw, tok_files, tmp, mb(all_norm), rows)

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"sample: {args.lines} lines x {len(langs)} languages ({', '.join(langs)}), {len(all_norm)} sentences")
    print(f"{'step':<48}{'input':>16}{'seconds':>10}{'MB/s':>10}")
    for step, inp, secs, rate in rows:
        print(f"{step:<48}{inp:>16}{secs:>10.2f}{rate:>10.2f}")
    print(f"BPE encode speed-up over subword-nmt: {speed_up:.1f}x (best of {args.repeat}, interleaved)")


def normalize_steps(raw: dict[str, list[str]], tmp: Path, workers: int, rows: list[Row]) -> dict[str, list[str]]:
    """Normalization in one process and in the prepare pool (including worker start-up): the
    normalized lines per language."""
    raw_mb = sum(mb(v) for v in raw.values())
    t0 = time.perf_counter()
    norm = {lang: [Normalizer(lang)(x) for x in lines] for lang, lines in raw.items()}
    t = time.perf_counter() - t0
    rows.append(("normalize (1 process)", f"{raw_mb:.2f} MB raw", t, raw_mb / t))
    for lang, lines in raw.items():
        with gzip.open(tmp / f"train.{lang}.gz", "wt", encoding="utf-8") as f:
            f.writelines(x + "\n" for x in lines)
    files = [RawFile(tmp / f"train.{lang}.gz", "train", lang) for lang in raw]
    t0 = time.perf_counter()
    normalize_files(files, tmp / "pool", PrepareOptions(workers=workers))
    t = time.perf_counter() - t0
    rows.append((f"normalize ({workers} workers)", f"{raw_mb:.2f} MB raw", t, raw_mb / t))
    return norm


def bpe_learn_steps(
    tok_files: dict[str, Path], all_norm: list[str], tmp: Path, vocab_size: int, rows: list[Row]
) -> str:
    """BPE learning, ours (into ``tmp/vocab``) and subword-nmt's, on the same sample with the
    same number of merges: subword-nmt's codes."""
    from subword_nmt.learn_bpe import learn_bpe as subword_learn

    norm_mb = mb(all_norm)
    t0 = time.perf_counter()
    report = learn_bpe({k: [v] for k, v in tok_files.items()}, tmp / "vocab", vocab_size, alpha=0.5)
    t_ours = time.perf_counter() - t0
    rows.append((f"BPE learn, tokenizers ({report.n_merges} merges)", f"{norm_mb:.2f} MB", t_ours, norm_mb / t_ours))
    codes = io.StringIO()
    t0 = time.perf_counter()
    with open(tmp / "all.tok", "w", encoding="utf-8") as f:
        f.writelines(x + "\n" for x in all_norm)
    with open(tmp / "all.tok", encoding="utf-8") as f:
        subword_learn(f, codes, report.n_merges, min_frequency=2)
    t_snmt = time.perf_counter() - t0
    rows.append((f"BPE learn, subword-nmt ({report.n_merges} merges)", f"{norm_mb:.2f} MB", t_snmt, norm_mb / t_snmt))
    return codes.getvalue()


def bpe_encode_steps(all_norm: list[str], tmp: Path, codes_text: str, repeat: int, rows: list[Row]) -> float:
    """BPE encoding, ours against subword-nmt's apply_bpe, interleaved ``repeat`` times (the
    machine's speed drifts): the speed-up of the best runs."""
    from subword_nmt.apply_bpe import BPE as SubwordBPE

    norm_mb = mb(all_norm)

    def ours() -> object:  # a fresh tokenizer: both sides start with an empty word cache
        return BPETokenizer.from_dir(tmp / "vocab").encode_batch(all_norm)

    def theirs() -> object:
        snmt = SubwordBPE(io.StringIO(codes_text))
        return [snmt.process_line(x) for x in all_norm]

    t_o, t_s = [], []
    for _ in range(repeat):
        t_o.append(best_of(ours, 1))
        t_s.append(best_of(theirs, 1))
    t_o_best, t_s_best = min(t_o), min(t_s)
    rows.append(("BPE encode, ours (tokenizers, batch)", f"{norm_mb:.2f} MB", t_o_best, norm_mb / t_o_best))
    rows.append(("BPE encode, subword-nmt apply_bpe", f"{norm_mb:.2f} MB", t_s_best, norm_mb / t_s_best))
    return t_s_best / t_o_best


def pipeline_steps(
    raw: dict[str, list[str]], tok_files: dict[str, Path], tmp: Path, norm_mb: float, rows: list[Row]
) -> None:
    """Normalize + BPE together (raw text in), and binarization of the normalized text."""
    raw_mb = sum(mb(v) for v in raw.values())
    bpe = BPETokenizer.from_dir(tmp / "vocab")
    t0 = time.perf_counter()
    for lang, lines in raw.items():
        TextEncoder(tmp / "vocab", lang, tokenizer=bpe).encode_batch(lines)
    t = time.perf_counter() - t0
    rows.append(("normalize + BPE (TextEncoder, 1 process)", f"{raw_mb:.2f} MB raw", t, raw_mb / t))
    t0 = time.perf_counter()
    for lang, path in tok_files.items():
        binarize(path, tmp / "bin" / f"train.{lang}", bpe, lang)
    t = time.perf_counter() - t0
    rows.append(("binarize (BPE + write)", f"{norm_mb:.2f} MB", t, norm_mb / t))


if __name__ == "__main__":
    main()
