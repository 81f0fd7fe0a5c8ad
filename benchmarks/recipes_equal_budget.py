"""The XLM, XLM-R and mBERT recipes pretrained here at an equal budget on the shipped corpus,
then compared zero-shot:

* ``xlm``: configs/demo.toml with MLM + TLM (no XLCo), BPE vocabulary (α = 0.5);
* ``xlmr``: configs/xlmr_demo.toml (MLM only, RoBERTa's network, SentencePiece, α = 0.3);
* ``mbert``: configs/mbert_demo.toml (MLM only, BERT's network, WordPiece, α = 0.5).

Same sizes (256-dim, 4 layers), batch (16 x 128), optimizer, vocabulary size and number of
steps (``--steps``, each run also stopped after ``--minutes``); then sentence retrieval P@1 on
500 test pairs per language pair (mean pooling, centered, both directions) and classification
fine-tuned on 1,000 English examples of data/classify, zero-shot in fr/de/es/ru/hi::

    python benchmarks/recipes_equal_budget.py --steps 400 --minutes 5 --out runs/recipes

Results (one row per recipe) go to standard output and ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from equal_budget import LANGS, PAIRS, ROOT, XLM, run  # benchmarks/ is the script's folder: on sys.path

RECIPES = {  # config, tokenizer, objectives
    "xlm": ("configs/demo.toml", "bpe", [f"objectives.mlm={json.dumps(LANGS + PAIRS)}", "objectives.xlco=[]"]),
    "xlmr": ("configs/xlmr_demo.toml", "sentencepiece", []),
    "mbert": ("configs/mbert_demo.toml", "wordpiece", []),
}


def job(recipe: str, args: argparse.Namespace) -> dict:
    config, tokenizer, objectives = RECIPES[recipe]
    out = args.out / recipe
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    data, run_dir = out / "data", out / "run"
    if not (data / "prepare.json").is_file():
        run([*XLM, "prepare", "data/corpus", str(data), "--tokenizer", tokenizer, "--vocab-size", str(args.vocab_size),
             "--workers", "1"], log)  # fmt: skip
    if not (run_dir / "final" / "manifest.json").is_file():
        run([*XLM, "pretrain", "--config", config, f'data.path="{data}"', f'train.out_dir="{run_dir}"',
             f"train.max_steps={args.steps}", f"train.max_minutes={args.minutes}", "train.threads=1",
             "train.progress=false", "train.eval_every=0", "train.seed=0", *objectives], log)  # fmt: skip
    ckpt = run_dir / "final"
    if not (out / "retrieval.json").is_file():
        run([*XLM, "evaluate", "retrieval", str(ckpt), "--data", str(data), "--split", "test",
             "--max-sentences", "500", "--no-margin", "--device", "cpu", "--json", str(out / "retrieval.json")], log)  # fmt: skip
    if not (out / "classify.json").is_file():
        tests = [a for lang in LANGS for a in ("--test", f"{lang}=data/classify/test.{lang}.tsv.gz")]
        run([*XLM, "finetune", "classify", str(ckpt), "--train", "en=data/classify/train.en.tsv.gz",
             "--valid", "en=data/classify/valid.en.tsv.gz", *tests, "--out", str(out / "classify"),
             "--json", str(out / "classify.json"), "data.max_train_examples=1000", "train.threads=1",
             "train.progress=false", "train.seed=0", f"train.max_minutes={args.finetune_minutes}"], log)  # fmt: skip
    return summarize(recipe, out)


def summarize(recipe: str, out: Path) -> dict:
    retrieval = json.loads((out / "retrieval.json").read_text())
    acc = json.loads((out / "classify.json").read_text())
    steps = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    p1 = [v for k, v in retrieval.items() if k.endswith("/p@1") and "margin" not in k]
    zero = [acc[x] for x in LANGS[1:]]
    return {
        "recipe": recipe,
        "steps": max((r.get("step", 0) for r in steps), default=0),
        "retrieval_p@1": sum(p1) / len(p1),
        "classify_en": acc["en"],
        "classify_zero_shot": sum(zero) / len(zero),
        **{f"classify_{x}": acc[x] for x in LANGS[1:]},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=400, help="pretraining steps per recipe")
    p.add_argument("--minutes", type=float, default=5.0, help="and at most this long (one thread)")
    p.add_argument("--finetune-minutes", type=float, default=3.0)
    p.add_argument("--vocab-size", type=int, default=16000)
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--jobs", type=int, default=3)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "recipes")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    recipes = args.recipes.split(",")
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda r: job(r, args), recipes))
    keys = ["steps", "retrieval_p@1", "classify_en", "classify_zero_shot"]
    print(f"{'recipe':<8}" + "".join(f"{k:>20}" for k in keys))
    for r in rows:
        print(f"{r['recipe']:<8}" + "".join(f"{r[k]:>20.3f}" if k != "steps" else f"{r[k]:>20d}" for k in keys))
    (args.out / "results.json").write_text(
        json.dumps({"steps": args.steps, "minutes": args.minutes, "runs": rows}, indent=1)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
