"""Pretraining recipes compared at an equal CPU budget, several seeds each: random
initialisation, MLM, MLM + TLM, MLM + TLM + XLCo (configs/demo.toml with its objectives
changed), each pretrained for the same number of minutes, then measured with the commands'
defaults on the project's test data:

* sentence retrieval P@1 on 500 test pairs per language pair (both directions, averaged);
* word translation CSLS P@1 (data/dicts, en-fr/de/es);
* classification fine-tuned on 1,000 English examples of data/classify, accuracy in English
  and zero-shot in fr/de/es/ru/hi.

::

    python benchmarks/equal_budget.py --data runs/demo/data --minutes 4 --seeds 0,1,2 \\
        --jobs 2 --out runs/equal_budget

Jobs run ``--jobs`` at a time with one thread each (same conditions for every recipe). The
table (mean ± standard deviation over seeds) goes to standard output and ``OUT/results.json``;
``OUT/curves.png`` plots validation quality against training minutes for the XLCo recipe.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
XLM = [sys.executable, "-m", "xlm"]
LANGS = ["en", "fr", "de", "es", "ru", "hi"]
PAIRS = [f"en-{x}" for x in LANGS[1:]]
RECIPES = {
    "random": [],
    "mlm": [f"objectives.mlm={json.dumps(LANGS)}", "objectives.xlco=[]"],
    "mlm_tlm": [f"objectives.mlm={json.dumps(LANGS + PAIRS)}", "objectives.xlco=[]"],
    "mlm_tlm_xlco": [f"objectives.mlm={json.dumps(LANGS + PAIRS)}", f"objectives.xlco={json.dumps(PAIRS)}"],
}


def run(argv: list[str], log: Path) -> None:
    with open(log, "a", encoding="utf-8") as f:
        f.write("$ " + " ".join(argv) + "\n")
        f.flush()
        code = subprocess.call(argv, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if code != 0:
        raise RuntimeError(f"{' '.join(argv)} failed (see {log})")


def job(recipe: str, seed: int, args: argparse.Namespace) -> dict:
    out = args.out / f"{recipe}-{seed}"
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    run_dir = out / "run"
    if not (run_dir / "final" / "manifest.json").is_file():
        shutil.rmtree(run_dir, ignore_errors=True)  # an interrupted run starts again
        budget = ["train.max_steps=0"] if recipe == "random" else [f"train.max_minutes={args.minutes}"]
        run([*XLM, "pretrain", "--config", "configs/demo.toml", f'data.path="{args.data}"', f'train.out_dir="{run_dir}"',
             f"train.seed={seed}", "train.threads=1", "train.progress=false", *RECIPES[recipe], *budget], log)  # fmt: skip
    ckpt = run_dir / "final"
    if (out / "classify.json").is_file():  # measured by an earlier invocation
        return summarize(recipe, seed, out)
    run([*XLM, "evaluate", "retrieval", str(ckpt), "--data", str(args.data), "--split", "test",
         "--max-sentences", "500", "--no-margin", "--device", "cpu", "--json", str(out / "retrieval.json")], log)  # fmt: skip
    dicts = [a for p in ("en-fr", "en-de", "en-es") for a in ("--dict", f"{p}=data/dicts/{p}.txt")]
    run([*XLM, "evaluate", "words", str(ckpt), *dicts, "--data", str(args.data), "--max-vocab", "10000",
         "--json", str(out / "words.json")], log)  # fmt: skip
    tests = [a for lang in LANGS for a in ("--test", f"{lang}=data/classify/test.{lang}.tsv.gz")]
    cls = out / "classify"
    run([*XLM, "finetune", "classify", str(ckpt), "--train", "en=data/classify/train.en.tsv.gz",
         "--valid", "en=data/classify/valid.en.tsv.gz", *tests, "--out", str(cls), "--json", str(out / "classify.json"),
         "data.max_train_examples=1000", "train.threads=1", "train.progress=false", f"train.seed={seed}",
         *args.finetune], log)  # fmt: skip
    return summarize(recipe, seed, out)


def summarize(recipe: str, seed: int, out: Path) -> dict:
    retrieval = json.loads((out / "retrieval.json").read_text())
    words = json.loads((out / "words.json").read_text())
    acc = json.loads((out / "classify.json").read_text())
    p1 = [v for k, v in retrieval.items() if k.endswith("/p@1") and "margin" not in k]
    zero = [acc[x] for x in LANGS[1:]]
    return {
        "recipe": recipe,
        "seed": seed,
        "retrieval_p@1": sum(p1) / len(p1),
        "words_csls_p@1": sum(words[f"{p}/csls/p@1"] for p in ("en-fr", "en-de", "en-es")) / 3,
        "classify_en": acc["en"],
        "classify_zero_shot": sum(zero) / len(zero),
        "ratio": sum(zero) / len(zero) / acc["en"],
    }


def curves(out: Path, recipe: str, seeds: list[int]) -> Path | None:
    from xlm.reports import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    drawn = False
    for seed in seeds:
        metrics = out / f"{recipe}-{seed}" / "run" / "metrics.jsonl"
        if not metrics.is_file():
            continue
        evals = [r for r in map(json.loads, metrics.read_text().splitlines()) if r.get("type") == "eval"]
        t = [r.get("train_minutes", 0.0) for r in evals]
        axes[0].plot(t, [r.get("valid/xlco/p@1") for r in evals], marker="o", label=f"seed {seed}")
        axes[1].plot(t, [r.get("valid/mlm/ppl") for r in evals], marker="o", label=f"seed {seed}")
        drawn = True
    if not drawn:
        return None
    axes[0].set_ylabel("valid XLCo P@1 (128 pairs)")
    axes[1].set_ylabel("valid MLM perplexity")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("training minutes (one thread)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{recipe}: quality against CPU time", fontsize=10)
    path = save_figure(fig, out / "curves.png")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT / "runs" / "demo" / "data")
    p.add_argument("--minutes", type=float, default=4.0, help="pretraining budget per run (one thread)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "equal_budget")
    p.add_argument("--finetune", nargs="*", default=[], help="extra key=value settings of the fine-tuning")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    recipes = args.recipes.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda rs: job(rs[0], rs[1], args), [(r, s) for s in seeds for r in recipes]))
    keys = ["retrieval_p@1", "words_csls_p@1", "classify_en", "classify_zero_shot", "ratio"]
    summary = {}
    print(f"{args.minutes:g} min of pretraining per run, seeds {seeds}")
    print(f"{'recipe':<14}" + "".join(f"{k:>22}" for k in keys))
    for r in recipes:
        vals = {k: [x[k] for x in rows if x["recipe"] == r] for k in keys}
        summary[r] = {
            k: {"mean": statistics.mean(v), "sd": statistics.stdev(v) if len(v) > 1 else 0.0} for k, v in vals.items()
        }
        print(f"{r:<14}" + "".join(f"{summary[r][k]['mean']:>14.3f} ± {summary[r][k]['sd']:<5.3f}" for k in keys))
    (args.out / "results.json").write_text(
        json.dumps({"minutes": args.minutes, "runs": rows, "summary": summary}, indent=1)
    )
    plot = curves(args.out, "mlm_tlm_xlco", seeds)
    if plot:
        print(f"plot: {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
