"""The demo behind `make demo`: every step on the shipped corpus, each skipped when its
output already exists with the same settings. Steps are appended as capabilities land."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from xlm.cli import main as xlm
from xlm.data.prepare import PrepareOptions, discover, language_table, same_settings

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "data" / "corpus"
RUN = ROOT / "runs" / "demo"
DATA = RUN / "data"
VOCAB_SIZE = 16000


def rel(path: Path) -> str:
    """``path`` as the demo prints it: relative to the repository."""
    return str(path.relative_to(ROOT))


def run(*argv: str) -> None:
    print("$ xlm " + " ".join(argv), flush=True)
    if xlm(list(argv)) != 0:
        sys.exit(f"demo: `xlm {' '.join(argv)}` failed")


def prepare_data() -> Path:
    """Normalize the corpus, learn the shared BPE, binarize: `xlm prepare`."""
    languages = sorted({f.lang for f in discover(CORPUS)})
    settings = PrepareOptions(vocab_size=VOCAB_SIZE).settings(languages)
    if same_settings(DATA, settings):
        print(f"{rel(DATA)} is up to date (delete it to prepare again)")
        print(language_table(json.loads((DATA / "prepare.json").read_text(encoding="utf-8"))))
    else:
        # the demo owns its data folder: replace one prepared otherwise
        run("prepare", rel(CORPUS), rel(DATA), "--vocab-size", str(VOCAB_SIZE), "--overwrite")
    return DATA


CONFIG = ROOT / "configs" / "demo.toml"
DICTS = ROOT / "data" / "dicts"


def pretrain() -> Path:
    """MLM+TLM pretraining with configs/demo.toml (~9 minutes on a 2-core CPU). An interrupted
    demo continues from its last checkpoint; a finished one is not trained again."""
    final = RUN / "final"
    if (final / "manifest.json").is_file():
        print(f"{rel(final)} exists: pretraining already done (delete {rel(RUN)} to redo it)")
    else:
        run("pretrain", "--config", rel(CONFIG), "--resume")
    return RUN / "best" if (RUN / "best" / "manifest.json").is_file() else final


def perplexity_table() -> None:
    """Valid perplexity per language (MLM) and pair (TLM) at the first and the last evaluation."""
    from xlm.reports import format_table, read_metrics

    evals = [r for r in read_metrics(RUN) if r.get("type") == "eval"]
    first, last = evals[0], evals[-1]
    rows = []
    for key in sorted(k for k in last if k.startswith("valid/") and k.endswith("/ppl") and k.count("/") == 3):
        _, kind, lang, _ = key.split("/")
        rows.append(
            [
                f"{kind.upper()} {lang}",
                first.get(key, float("nan")),
                last[key],
                last.get(key[:-3] + "acc", float("nan")) * 100,
            ]
        )
    print(f"\n== valid perplexity: step {first['step']} -> step {last['step']} ==")
    print(format_table(["objective / language", "ppl start", "ppl end", "acc end %"], rows))


def evaluate(checkpoint: Path) -> None:
    """Cross-lingual retrieval on the held-out test pairs, word translation from the embedding table."""
    print("\n== cross-lingual sentence retrieval (test split, 500 pairs per language pair) ==")
    run("evaluate", "retrieval", rel(checkpoint), "--data", rel(DATA), "--split", "test", "--max-sentences", "500",
        "--json", rel(RUN / "retrieval.json"), "--plot", rel(RUN / "plots" / "retrieval.png"))  # fmt: skip
    dicts = sorted(DICTS.glob("en-*.txt"))
    if dicts:
        print("\n== word translation (words encoded alone, centered per language) ==")
        args = [a for d in dicts for a in ("--dict", f"{d.stem}={rel(d)}")]
        run("evaluate", "words", rel(checkpoint), *args, "--data", rel(DATA), "--json", rel(RUN / "words.json"))


def transfer_summary(accuracy: dict[str, float]) -> None:
    """One table: what was learned in one language and works in another."""
    from xlm.reports import format_table

    retrieval = json.loads((RUN / "retrieval.json").read_text(encoding="utf-8"))
    words_file = RUN / "words.json"
    words = json.loads(words_file.read_text(encoding="utf-8")) if words_file.is_file() else {}
    langs = sorted(k for k in accuracy if k not in ("en", "average"))

    def both(a: str, b: str) -> float:
        fwd, bwd = retrieval.get(f"{a}-{b}/p@1"), retrieval.get(f"{b}-{a}/p@1")
        return (fwd + bwd) / 2 if fwd is not None and bwd is not None else float("nan")

    rows = [
        ["retrieval P@1 (500 test pairs, both directions)", *[both("en", x) for x in langs]],
        ["word translation CSLS P@1 (data/dicts)", *[words.get(f"en-{x}/csls/p@1", float("nan")) for x in langs]],
        ["zero-shot classification / English accuracy", *[accuracy[x] / accuracy["en"] for x in langs]],
    ]
    print(f"\n== transfer summary: en -> {', '.join(langs)} ==")
    print(format_table(["", *[f"en-{x}" for x in langs]], rows, floatfmt="{:.2f}"))
    zero = sum(accuracy[x] for x in langs) / len(langs)
    majority = largest_class_rate(ROOT / "data" / "classify" / "test.en.tsv.gz")
    print(
        f"classification: English {accuracy['en']:.1f} %, zero-shot average {zero:.1f} % "
        f"({zero / accuracy['en']:.0%} of English); always answering the largest class: {majority:.1f} %"
    )


def largest_class_rate(path: Path) -> float:
    import gzip
    from collections import Counter

    with gzip.open(path, "rt", encoding="utf-8") as f:
        labels = [line.split("\t", 1)[0] for line in f if line.strip()]
    return 100.0 * Counter(labels).most_common(1)[0][1] / len(labels)


def main() -> None:
    os.chdir(ROOT)  # paths below are printed relative to the repository
    if not CORPUS.is_dir():
        sys.exit(f"demo: the shipped corpus {CORPUS} is missing (python scripts/build_corpus.py builds it)")
    prepare_data()
    checkpoint = pretrain()
    perplexity_table()
    run("plot", rel(RUN))
    evaluate(checkpoint)
    from demo_classify import classification_step

    accuracy = classification_step(checkpoint)
    transfer_summary(accuracy)
    print(f"\ndemo done: model in {rel(checkpoint)}, curves and charts in {rel(RUN / 'plots')}")


if __name__ == "__main__":
    main()
