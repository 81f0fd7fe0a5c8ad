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


def run(*argv: str) -> None:
    print("$ xlm " + " ".join(argv), flush=True)
    if xlm(list(argv)) != 0:
        sys.exit(f"demo: `xlm {' '.join(argv)}` failed")


def prepare_data() -> Path:
    """Normalize the corpus, learn the shared BPE, binarize: `xlm prepare`."""
    languages = sorted({f.lang for f in discover(CORPUS)})
    settings = PrepareOptions(vocab_size=VOCAB_SIZE).settings(languages)
    if same_settings(DATA, settings):
        print(f"{DATA.relative_to(ROOT)} is up to date (delete it to prepare again)")
        print(language_table(json.loads((DATA / "prepare.json").read_text(encoding="utf-8"))))
    else:
        run("prepare", str(CORPUS.relative_to(ROOT)), str(DATA.relative_to(ROOT)), "--vocab-size", str(VOCAB_SIZE))
    return DATA


def main() -> None:
    os.chdir(ROOT)  # paths below are printed relative to the repository
    if not CORPUS.is_dir():
        sys.exit(f"demo: the shipped corpus {CORPUS} is missing (python scripts/build_corpus.py builds it)")
    prepare_data()


if __name__ == "__main__":
    main()
