"""``xlm classify FINETUNED --lang fr [--probs] < texts``: the predicted label of each input
line, one output line per input line. A line with a tab is a pair (premise<TAB>hypothesis).
With ``--probs`` every label's probability follows, as ``label:probability``. With
``--translate-test MT_CHECKPOINT`` the lines are first translated into the classifier's
fine-tuning language by that translation model (the paper's translate-test)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xlm.commands.options import add_compute_options, int_at_least
from xlm.text.lines import line_batches

BATCH_LINES = 512


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", help="classify text from stdin with a fine-tuned model")
    p.add_argument("model", type=Path, help="a fine-tuned model (or its run folder: best/ is used)")
    p.add_argument("--lang", required=True, help="language of the input")
    p.add_argument("--probs", action="store_true", help="also print every label's probability")
    p.add_argument("--pretokenized", action="store_true", help="input is already normalized and BPE-split")
    p.add_argument(
        "--max-len", type=int_at_least(2), default=256, help="tokens per example (longer texts are truncated)"
    )
    p.add_argument(
        "--translate-test", metavar="MT_CHECKPOINT",
        help="translate the input into the classifier's fine-tuning language with this `xlm train-mt` checkpoint "
        "first, and classify the translation",
    )  # fmt: skip
    add_compute_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xlm.data.classification import build_row
    from xlm.devices import resolve_device
    from xlm.model.classifier import load_classifier, text_encoder
    from xlm.model.precision import inference_autocast

    clf = load_classifier(args.model, resolve_device(args.device))
    translate = None
    if args.translate_test:
        translate, lang = _translator(args, clf)
    else:
        lang = args.lang
    clf.info.lang_id(lang)
    encode = text_encoder(clf.pretrained.directory, lang, clf.info.lowercase_and_remove_accent, args.pretokenized)
    max_len = min(args.max_len, clf.info.config.max_positions)
    if clf.info.extra.get("classifier", {}).get("center") and lang not in clf.language_means:
        print(f"note: no stored {lang} mean in {args.model}: inputs are centered on their own mean "
              f"(batches of up to {BATCH_LINES} lines; reliable only for many lines)", file=sys.stderr)  # fmt: skip
    out = sys.stdout
    for batch in line_batches(sys.stdin.buffer, BATCH_LINES):
        parts = [line.split("\t", 1) for line in batch]
        if translate is not None:
            parts = translate(parts)
        ids_a = encode([p[0] for p in parts])
        ids_b = iter(encode([p[1] for p in parts if len(p) == 2]))
        specials = clf.pretrained.vocab.specials
        rows = [build_row(a, next(ids_b) if len(p) == 2 else None, max_len, specials) for p, a in zip(parts, ids_a)]
        with inference_autocast(clf.device, args.precision):
            probs_rows = clf.predict_probs(rows, lang)
        for probs in probs_rows:
            label = clf.labels[int(probs.argmax())]
            if args.probs:
                label += "\t" + " ".join(f"{name}:{p:.4f}" for name, p in zip(clf.labels, probs))
            out.write(label + "\n")
        out.flush()
    return 0


def _translator(args: argparse.Namespace, clf: Any) -> tuple[Callable[[list[list[str]]], list[list[str]]], str]:
    """``--translate-test``: a function translating each part of the input lines from
    ``--lang`` into the classifier's fine-tuning language (returned with it)."""
    from xlm.errors import XLMError
    from xlm.model.classifier import translate_test_target
    from xlm.model.generation import DecodeConfig, translate_text
    from xlm.model.seq2seq import load_translator

    if args.pretokenized:
        raise XLMError("--translate-test reads raw text: it does not go with --pretokenized")
    target = translate_test_target(clf)
    tr = load_translator(args.translate_test, clf.device)
    decode = DecodeConfig.from_json(tr.info.extra.get("decode"))

    def translate(parts: list[list[str]]) -> list[list[str]]:
        flat = [text for p in parts for text in p]
        out, _ = translate_text(tr, flat, args.lang, target, decode, clf.device)
        it = iter(out)
        return [[next(it) for _ in p] for p in parts]

    return translate, target
