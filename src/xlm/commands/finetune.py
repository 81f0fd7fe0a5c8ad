"""``xlm finetune classify CHECKPOINT --train en=FILE --valid en=FILE --test fr=FILE ... --out DIR``:
fine-tune a pretrained model for classification on some languages, test on all of them.

The same settings can come from a TOML file (``--config configs/classify_libreoffice.toml``)
and ``key=value`` overrides (``train.max_minutes=3``); options given on the command line
win over both. Prints the accuracy per test language and their average.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from xlm.commands.options import add_device_option, add_repeatable_option, non_negative_int
from xlm.config import ConfigError, load_config, read_config_data, resume_and_overrides, validate_config
from xlm.data.classification import FORMATS

_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


class _IntermixedParser(argparse.ArgumentParser):
    """Positionals (CHECKPOINT, key=value) may come before, between and after options."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inside:  # parse_known_intermixed_args calls back here
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune a pretrained model on a downstream task")
    tasks = p.add_subparsers(dest="task", metavar="TASK", parser_class=_IntermixedParser)
    c = tasks.add_parser(
        "classify",
        help="sentence / sentence-pair classification with zero-shot cross-lingual transfer",
        description="Fine-tune on the --train languages, evaluate on every --test language.",
    )
    c.add_argument(
        "args", nargs="*", metavar="CHECKPOINT | key=value", help="pretrained model directory; config overrides"
    )
    c.add_argument("--config", type=Path, help="TOML config (see configs/classify_libreoffice.toml)")
    add_repeatable_option(c, "--train", "LANG=FILE", "training file (repeat: translate-train)")
    add_repeatable_option(c, "--valid", "LANG=FILE", "validation file (best epoch)")
    add_repeatable_option(c, "--test", "LANG=FILE", "test file (repeat per language)")
    c.add_argument("--format", choices=FORMATS, help="format of every file (default tsv)")
    c.add_argument("--train-format", choices=FORMATS, help="format of the training files (e.g. mnli-jsonl)")
    c.add_argument("--eval-format", choices=FORMATS, help="format of the valid/test files (e.g. xnli)")
    c.add_argument("--pretokenized", action="store_true", default=None, help="text is already normalized and BPE-split")
    c.add_argument(
        "--random-init", action="store_true", default=None, help="baseline: the same architecture, fresh weights"
    )
    c.add_argument("--epochs", type=non_negative_int, help="passes over the training data")
    c.add_argument("--out", help="run folder: checkpoints, best/ (the best epoch), final/")
    c.add_argument("--json", help="write {language: accuracy, ..., 'average': ...} (accuracy in %%)")
    c.add_argument("--plot", help="write a PNG bar chart of the accuracies")
    c.add_argument("--resume", nargs="?", const="latest", help="continue an interrupted fine-tuning run")
    add_device_option(c, training=True)
    c.add_argument(
        "--translate-test", metavar="MT_CHECKPOINT",
        help="also translate each other test language into the training language with this `xlm train-mt` "
        "checkpoint and classify the translations (the paper's translate-test)",
    )  # fmt: skip
    c.set_defaults(func=run_classify)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _lang_files(items: list[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        lang, sep, path = item.partition("=")
        if not sep or not lang or not path:
            raise ConfigError(f"{option} {item!r}: expected LANG=FILE, e.g. {option} en=data/train.en.tsv")
        if lang in out:
            raise ConfigError(f"{option}: language {lang!r} given twice")
        out[lang] = path
    return out


def build_config(args: argparse.Namespace) -> Any:
    """TOML file < key=value overrides < command-line options; with ``--resume``, all of them on
    top of the run's saved ``config.toml``."""
    from xlm.tasks.classification import ClassifyConfig
    from xlm.training.runner import resume_config

    args.resume, args.args = resume_and_overrides(args.resume, args.args)
    overrides = [a for a in args.args if _OVERRIDE.match(a)]
    positional = [a for a in args.args if not _OVERRIDE.match(a)]
    if len(positional) > 1:
        raise ConfigError(f"expected one CHECKPOINT, got {positional}")
    data = read_config_data(args.config, overrides)
    load_config(ClassifyConfig, args.config, overrides)  # errors name the TOML file or the override

    def put(section: str, key: str, value: Any) -> None:
        node = data.setdefault(section, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{section}: expected a section of settings, got {node!r}")
        node[key] = value

    if positional:
        data["checkpoint"] = positional[0]
    for split in ("train", "valid", "test"):
        files = getattr(args, split)
        if files:
            put("data", split, _lang_files(files, f"--{split}"))
    for option in ("format", "train_format", "eval_format"):
        if getattr(args, option):
            put("data", option, getattr(args, option))
    if args.pretokenized:
        put("data", "pretokenized", True)
    if args.random_init:
        put("finetune", "random_init", True)
    if args.epochs is not None:
        put("finetune", "epochs", args.epochs)
    if args.device:
        put("train", "device", args.device)
    if args.out:
        put("train", "out_dir", args.out)
    if args.json:
        put("output", "json_file", args.json)
    if args.plot:
        put("output", "plot_file", args.plot)
    if args.resume is not None:
        return resume_config(ClassifyConfig, data, "command line")
    return validate_config(ClassifyConfig, data, "command line")


def plot_accuracy(accuracy: dict[str, float], path: str | Path, title: str) -> Path:
    from xlm.reports import pyplot, save_figure

    plt = pyplot()
    langs = [k for k in accuracy if k != "average"]
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(langs), 3.5))
    bars = ax.bar(langs, [accuracy[k] for k in langs], color="#4C72B0")
    ax.bar_label(bars, fmt="%.1f", fontsize=8)
    if "average" in accuracy:
        ax.axhline(accuracy["average"], color="#C44E52", ls="--", lw=1, label=f"average {accuracy['average']:.1f}")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def result_table(accuracy: dict[str, float], examples: dict[str, int], train_langs: list[str]) -> str:
    from xlm.reports import format_table

    rows: list[list[Any]] = []
    for lang, n in examples.items():
        setting = "fine-tuned" if lang in train_langs else "zero-shot"
        rows.append([lang, setting, accuracy[lang], n])
    rows.append(["average", "", accuracy["average"], sum(examples.values())])
    return format_table(["language", "transfer", "accuracy %", "examples"], rows)


def _translate_test(mt_checkpoint: str, cfg: Any, result: Any, human: Any) -> dict[str, Any]:
    """Translate-test accuracy per language, printed beside zero-shot."""
    from xlm.reports import format_table
    from xlm.tasks.classification import translate_test

    data = cfg.data
    tt = translate_test(
        result.model_dir, mt_checkpoint, data.test, data.format_of("test"), cfg.train.device, data.max_len
    )
    rows = [[lang, result.accuracy[lang], tt[lang]] for lang in tt if lang != "average"]
    zero_shot = [result.accuracy[r[0]] for r in rows]
    if rows:
        rows.append(["average", sum(zero_shot) / len(zero_shot), tt["average"]])
    print(f"translate-test with {mt_checkpoint}:", file=human)
    print(format_table(["language", "zero-shot %", "translate-test %"], rows), file=human)
    return {"mt_checkpoint": mt_checkpoint, "accuracy": tt}


def run_classify(args: argparse.Namespace) -> int:
    from xlm.fileio import is_stdout, status_on_stderr, write_json
    from xlm.tasks.classification import run_finetune

    cfg = build_config(args)
    with status_on_stderr():  # status lines; standard output is for results
        result = run_finetune(cfg, resume=args.resume)
    if not result.is_main:  # another process of a torchrun job: rank 0 reports
        return 0
    # the table goes to standard output, unless the JSON does (a TOML file can name it)
    human = sys.stderr if is_stdout(cfg.output.json_file) or is_stdout(cfg.output.plot_file) else sys.stdout
    if not result.accuracy:
        print(f"fine-tuned model: {result.model_dir} (no test files given)", file=human)
        return 0
    table = result_table(result.accuracy, result.examples, sorted(cfg.data.train))
    print(table, file=human)
    print(f"fine-tuned model: {result.model_dir}", file=human)
    out = Path(cfg.train.out_dir)
    results = {"accuracy": result.accuracy, "examples": result.examples, "labels": result.labels}
    if args.translate_test:
        results["translate_test"] = _translate_test(args.translate_test, cfg, result, human)
    write_json(out / "results.json", results)
    if cfg.output.json_file:
        write_json(cfg.output.json_file, result.accuracy)
    if cfg.output.plot_file:
        init = "random init" if cfg.finetune.random_init else Path(cfg.checkpoint).as_posix()
        title = f"{init}, fine-tuned on {'+'.join(sorted(cfg.data.train))}"
        print(f"plot: {plot_accuracy(result.accuracy, cfg.output.plot_file, title)}", file=human)
    return 0
