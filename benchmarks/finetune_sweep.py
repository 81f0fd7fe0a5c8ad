"""Fine-tuning settings compared on the shipped classification data: English accuracy,
zero-shot accuracy (mean over the other test languages), their ratio, and the
largest-class rate, for each setting given as ``NAME:key=value,key=value``::

    python benchmarks/finetune_sweep.py runs/demo/best \\
        "paper:optim.lr=2.5e-5,finetune.epochs=2" "auto:" "center:finetune.center=true" \\
        --train-examples 1000 --json runs/finetune_sweep.json

Every setting starts from the same checkpoint and seed; the data are data/classify (train and
valid in English, test in six languages). Settings not given keep the defaults of
``xlm finetune classify``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "classify"


def largest_class_rate(path: Path) -> float:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        labels = [line.split("\t", 1)[0] for line in f if line.strip()]
    return 100.0 * Counter(labels).most_common(1)[0][1] / len(labels)


def run_setting(checkpoint: str, overrides: list[str], train_examples: int, seed: int, out: Path) -> dict:
    from xlm.config import load_config
    from xlm.tasks.classification import ClassifyConfig, run_finetune

    langs = sorted(p.name.split(".")[1] for p in DATA.glob("test.*.tsv.gz"))
    base = [
        f'checkpoint="{checkpoint}"',
        f'data.train={{en="{DATA / "train.en.tsv.gz"}"}}',
        f'data.valid={{en="{DATA / "valid.en.tsv.gz"}"}}',
        "data.test={" + ",".join(f'{lang}="{DATA / f"test.{lang}.tsv.gz"}"' for lang in langs) + "}",
        f"data.max_train_examples={train_examples}",
        f'train.out_dir="{out}"',
        "train.progress=false",
        f"train.seed={seed}",
    ]
    cfg = load_config(ClassifyConfig, None, base + overrides)
    result = run_finetune(cfg, log=lambda *a: None)
    acc = result.accuracy
    zero = [v for k, v in acc.items() if k not in ("en", "average")]
    return {"en": acc["en"], "zero_shot": sum(zero) / len(zero), "per_language": acc}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("settings", nargs="+", help="NAME:key=value,key=value (empty after ':' = the defaults)")
    p.add_argument("--train-examples", type=int, default=1000)
    p.add_argument("--seeds", default="0", help="comma-separated seeds; figures are their mean")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    majority = largest_class_rate(DATA / "test.en.tsv.gz")
    results = {}
    print(
        f"{'setting':<24} {'en %':>6} {'zero-shot %':>11} {'ratio':>6}   (largest class {majority:.1f} %)", flush=True
    )
    for spec in args.settings:
        name, _, rest = spec.partition(":")
        overrides = [o for o in re.split(r",(?=[A-Za-z_][\w.]*=)", rest) if o]  # commas inside values stay
        runs = []
        for seed in seeds:
            with tempfile.TemporaryDirectory() as tmp:
                runs.append(run_setting(args.checkpoint, overrides, args.train_examples, seed, Path(tmp) / "run"))
        en = sum(r["en"] for r in runs) / len(runs)
        zero = sum(r["zero_shot"] for r in runs) / len(runs)
        results[name] = {"overrides": overrides, "en": en, "zero_shot": zero, "runs": runs}
        print(f"{name:<24} {en:6.1f} {zero:11.1f} {zero / max(en, 1e-9):6.2f}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"checkpoint": args.checkpoint, "largest_class": majority, "results": results}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
