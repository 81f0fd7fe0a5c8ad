"""``xlm prepare RAW_DIR OUT_DIR --vocab-size N``: normalize a corpus, learn one shared
vocabulary over its languages (BPE, or ``--tokenizer sentencepiece|wordpiece``) and binarize
every split (see :mod:`xlm.data.prepare`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from xlm.commands.options import count, non_negative, non_negative_int
from xlm.fileio import status

# the options whose PrepareOptions field has the same name
SAME_NAMES = (
    "vocab_size", "langs", "bpe_sentences", "lowercase", "max_lines", "workers", "seed",
    "keep_tmp", "cache_mb", "tokenizer", "sp_model_type", "overwrite",
)  # fmt: skip


def _langs(text: str) -> list[str]:
    langs = [x.strip() for x in text.split(",") if x.strip()]
    if not langs:
        raise argparse.ArgumentTypeError("expected a comma-separated list such as en,fr,de")
    return langs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="normalize, learn a shared vocabulary (BPE, SentencePiece, WordPiece) and binarize a corpus",
        description="Files in RAW_DIR are named as in XLM: train.en[.gz], valid.fr[.gz], train.en-fr.en[.gz] ...",
    )
    p.add_argument("raw_dir", type=Path, help="directory of raw text files")
    p.add_argument("out_dir", type=Path, help="output directory (vocabulary, binarized splits, prepare.json)")
    p.add_argument("--vocab-size", type=count, help="size of the vocabulary to learn (special tokens included)")
    p.add_argument(
        "--tokenizer", choices=("bpe", "sentencepiece", "wordpiece"), default="bpe",
        help="kind of vocabulary: bpe (XLM: Moses-normalized text), sentencepiece (XLM-R: raw text), "
        "wordpiece (mBERT: BERT's normalizer); with --vocab the reused vocabulary's kind is taken",
    )  # fmt: skip
    p.add_argument(
        "--sp-model-type",
        choices=("unigram", "bpe"),
        default="unigram",
        help="model type of a sentencepiece vocabulary",
    )
    p.add_argument("--langs", type=_langs, help="comma-separated languages to keep (default: all found)")
    p.add_argument(
        "--alpha", type=non_negative, default=None,
        help="language sampling exponent for learning the vocabulary (q ∝ p^α); default 0.5 (XLM) for bpe and "
        "wordpiece, 0.3 (XLM-R) for sentencepiece",
    )  # fmt: skip
    p.add_argument("--bpe-sentences", type=count, default=1_000_000, help="sentences sampled to learn the BPE")
    p.add_argument("--lowercase", action="store_true", help="lowercase and remove accents (bpe, wordpiece)")
    p.add_argument("--max-lines", type=count, help="read at most N lines per file (quick runs)")
    p.add_argument("--vocab", type=Path, help="reuse the vocabulary in DIR instead of learning one")
    p.add_argument("--workers", type=count, default=2, help="normalization processes")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the BPE sentence sample")
    p.add_argument(
        "--invalid-utf8", choices=("error", "replace"), default="error",
        help="invalid UTF-8 input: stop with the file and line (default) or replace by U+FFFD",
    )  # fmt: skip
    p.add_argument(
        "--cache-mb", type=non_negative_int, default=128, help="memory for normalized lines seen before (0: off)"
    )
    p.add_argument(
        "--allow-lang", action="append", default=[], metavar="CODE",
        help="accept CODE as a language although it is not an ISO 639-1 code (repeatable)",
    )  # fmt: skip
    p.add_argument("--keep-tmp", action="store_true", help="keep the normalized text in OUT_DIR/tmp")
    p.add_argument(
        "--overwrite", action="store_true",
        help="replace OUT_DIR when it holds data prepared otherwise (without it, such a folder is refused)",
    )  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xlm.data.prepare import PrepareOptions, language_table, prepare

    opts = PrepareOptions(
        **{name: getattr(args, name) for name in SAME_NAMES},
        alpha=args.alpha if args.alpha is not None else (0.3 if args.tokenizer == "sentencepiece" else 0.5),
        vocab_dir=args.vocab,
        errors="strict" if args.invalid_utf8 == "error" else "replace",
        allow_langs=args.allow_lang,
    )
    result = prepare(args.raw_dir, args.out_dir, opts, log=status)
    info = result.info
    print(language_table(info))
    if result.up_to_date:
        print(f"vocabulary: {info['vocab_size']} tokens (hash {info['vocab_hash']}); nothing to do -> {args.out_dir}")
        return 0
    t = info["timings"]
    kind = info.get("vocab_kind", "bpe")
    what = f"{info['n_merges']} merges" if kind == "bpe" else kind
    print(
        f"vocabulary: {info['vocab_size']} tokens ({what}, hash {info['vocab_hash']}); "
        f"time: {t['total_s']:.1f}s (normalize {t['normalize_s']:.1f}s, {'BPE' if kind == 'bpe' else kind} {t['bpe_s']:.1f}s, "
        f"binarize {t['binarize_s']:.1f}s) -> {args.out_dir}"
    )
    return 0
