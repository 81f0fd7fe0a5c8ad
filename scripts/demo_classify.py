"""The demo's classification step: a ~2-minute fine-tune of the demo model on the shipped
LibreOffice help data (English only), then the zero-shot transfer table over six languages.

``scripts/demo.py`` calls :func:`classification_step`; on its own::

    python scripts/demo_classify.py runs/demo/best
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "classify_libreoffice.toml"


def classification_step(checkpoint: Path, out_dir: Path | None = None, minutes: float = 2.5) -> dict[str, float]:
    """Fine-tune ``checkpoint`` on data/classify (English), print accuracy per language;
    returns ``{language: accuracy %, ..., "average": ...}``."""
    from xlm.commands.finetune import plot_accuracy, result_table
    from xlm.config import load_config
    from xlm.reports import write_json
    from xlm.tasks.classification import ClassifyConfig, run_finetune

    out = out_dir or Path(checkpoint).parent / "classify"
    overrides = [
        f"checkpoint={_toml_str(checkpoint)}",
        f"train.out_dir={_toml_str(out)}",
        f"train.max_minutes={minutes}",
        "train.progress=false",
    ]
    cfg = load_config(ClassifyConfig, CONFIG, overrides)
    data = cfg.model_dump()["data"]
    for split in ("train", "valid", "test"):  # the config's paths are relative to the project
        data[split] = {lang: str(ROOT / p) for lang, p in data[split].items()}
    cfg = cfg.model_copy(update={"data": type(cfg.data).model_validate(data)})
    print(f"\n== cross-lingual classification: fine-tune on English for ~{minutes:g} min, test on 6 languages ==")
    if (out / "accuracy.json").is_file():  # done by an earlier demo: fine-tuning never replaces a run
        print(f"{out} holds a finished fine-tuning run (delete it to fine-tune again)")
        return json.loads((out / "accuracy.json").read_text(encoding="utf-8"))
    result = run_finetune(cfg, resume="latest" if out.exists() else None)  # an interrupted one continues
    print(result_table(result.accuracy, result.examples, sorted(cfg.data.train)))
    write_json(out / "accuracy.json", result.accuracy)
    print(f"plot: {plot_accuracy(result.accuracy, out / 'accuracy.png', 'zero-shot transfer from English')}")
    return result.accuracy


def _toml_str(path: Path) -> str:
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/demo_classify.py CHECKPOINT")
    classification_step(Path(sys.argv[1]))
