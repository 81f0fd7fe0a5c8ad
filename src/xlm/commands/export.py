"""``xlm export CHECKPOINT --to hf DIR``: a checkpoint of ours as a Hugging Face model:
``XLMWithLMHeadModel`` + ``XLMTokenizer`` (arch xlm), ``XLMRobertaForMaskedLM`` +
``XLMRobertaTokenizer`` (xlmr) or ``BertForMaskedLM`` + ``BertTokenizer`` (bert)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a checkpoint in another format (Hugging Face transformers)",
        description="Write CHECKPOINT as a directory that transformers loads with from_pretrained: "
        "XLMWithLMHeadModel + XLMTokenizer for an XLM model (sentences fed as '</s> w1 ... wn </s>'), "
        "XLMRobertaForMaskedLM + XLMRobertaTokenizer for arch xlmr, BertForMaskedLM + BertTokenizer for arch bert "
        "(see the README.md written there).",
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint directory (from xlm pretrain or xlm import)")
    p.add_argument("--to", choices=["hf"], required=True, help="target format: hf = Hugging Face transformers")
    p.add_argument("out", type=Path, help="directory to create")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists and is not empty")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xlm.interop.huggingface import export_hf

    report = export_hf(args.checkpoint, args.out, overwrite=args.overwrite)
    print(
        f"exported {args.checkpoint} ({report.n_parameters:,} parameters) to {report.directory}: {', '.join(report.files)}"
    )
    return 0
