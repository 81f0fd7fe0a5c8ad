"""``xlm import hf DIR OUT``, ``xlm import original CHECKPOINT.pth --vocab V --codes C OUT`` and
``xlm import fairseq DIR OUT``: models from Hugging Face transformers (XLM, XLM-R, BERT), from
the original XLM code, or from fairseq's XLM-R release, as checkpoints of ours."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple


class _Source(NamedTuple):
    """One source format of ``xlm import``: its input argument, and the texts of its ``--help``."""

    argument: str
    argument_help: str
    help: str
    description: str


SOURCES = {
    "hf": _Source(
        "directory", "Hugging Face model directory",
        "a local Hugging Face XLM, XLM-R or BERT directory (config.json, weights, tokenizer files)",
        "Convert a local directory written by transformers' save_pretrained: model_type 'xlm' "
        "(XLMWithLMHeadModel; vocab.json + merges.txt), 'xlm-roberta' (XLMRobertaForMaskedLM / XLMRobertaModel; "
        "sentencepiece.bpe.model) or 'bert' (BertForMaskedLM / BertModel; vocab.txt).",
    ),
    "original": _Source(
        "checkpoint", "original checkpoint (.pth)",
        "a checkpoint of the original XLM code (.pth) with its fastBPE vocabulary and codes",
        "Convert an original XLM checkpoint. It is read without running code from the file "
        "(torch.load weights_only=True); a file that needs more is refused unless --trust-pickle.",
    ),
    "fairseq": _Source(
        "directory", "directory with model.pt, dict.txt and sentencepiece.bpe.model",
        "fairseq's XLM-R release: a directory with model.pt, dict.txt and sentencepiece.bpe.model",
        "Convert an XLM-R model in fairseq's layout. model.pt is read without running code from the "
        "file (tensors, containers and the argparse.Namespace of its options only); a file that needs more is "
        "refused unless --trust-pickle.",
    ),
}  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="make a checkpoint of ours from a Hugging Face or original XLM model")
    kinds = p.add_subparsers(dest="source", metavar="SOURCE")
    hf = _source_parser(kinds, "hf", run_hf)
    hf.add_argument("--langs", help="comma-separated languages in id order, when the directory does not name them")
    original = _source_parser(kinds, "original", run_original)
    _add_original_options(original)
    fairseq = _source_parser(kinds, "fairseq", run_fairseq)
    for parser, pickled in ((hf, "pytorch_model.bin files"), (original, "files"), (fairseq, "files")):
        _add_output_options(parser, pickled)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _source_parser(
    kinds: argparse._SubParsersAction, name: str, run: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    """The parser of ``xlm import NAME`` (see ``SOURCES``), which ``run`` runs: its input, then OUT."""
    source = SOURCES[name]
    p = kinds.add_parser(name, help=source.help, description=source.description)
    p.add_argument(source.argument, type=Path, help=source.argument_help)
    p.add_argument("out", type=Path, help="checkpoint directory to create")
    p.set_defaults(func=run)
    return p


def _add_original_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vocab", type=Path, required=True, help="fastBPE vocabulary ('token count' lines)")
    p.add_argument("--codes", type=Path, required=True, help="fastBPE codes ('a b count' lines)")
    p.add_argument(
        "--lowercase-and-remove-accent",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="whether the model's text was lowercased and stripped of accents (true for the 15-language "
        "and pair models; use --no-lowercase-and-remove-accent for the 17- and 100-language models)",
    )
    p.add_argument(
        "--encoder-only",
        action="store_true",
        help="of a translation checkpoint (encoder + decoder), import only the encoder, as a language model",
    )


def _add_output_options(p: argparse.ArgumentParser, pickled: str) -> None:
    """``--trust-pickle`` (for ``pickled``) and ``--overwrite``, last in every source's options."""
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help=f"allow {pickled} that need arbitrary unpickling (runs code from the file)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists and is not empty")


def _describe(cfg, lang2id: dict[str, int], lower: bool) -> str:
    langs = ",".join(sorted(lang2id, key=lang2id.__getitem__)) or "any"
    return (
        f"arch={cfg.arch} emb_dim={cfg.emb_dim} n_layers={cfg.n_layers} n_heads={cfg.n_heads} vocab={cfg.vocab_size} "
        f"langs={langs} lang_emb={'yes' if cfg.use_lang_emb and cfg.n_langs > 1 else 'no'} "
        f"lowercase_and_remove_accent={lower}"
    )


def _print_report(source: Path, report: Any, lower: bool, parts: str = "") -> int:
    """An import's notes, then one line: what was imported (``parts``: of it), where, and the model."""
    for note in report.notes:
        print(f"note: {note}")
    print(f"imported {source}{parts} -> {report.directory} ({_describe(report.config, report.lang2id, lower)})")
    return 0


def run_hf(args: argparse.Namespace) -> int:
    from xlm.interop.huggingface import import_hf

    langs = [s.strip() for s in args.langs.split(",") if s.strip()] if args.langs else None
    report = import_hf(args.directory, args.out, langs=langs, overwrite=args.overwrite, trust_pickle=args.trust_pickle)
    return _print_report(args.directory, report, report.lowercase_and_remove_accent)


def run_original(args: argparse.Namespace) -> int:
    from xlm.interop.original import import_original

    report = import_original(
        args.checkpoint,
        args.vocab,
        args.codes,
        args.out,
        lowercase_and_remove_accent=args.lowercase_and_remove_accent,
        trust_pickle=args.trust_pickle,
        overwrite=args.overwrite,
        encoder_only=args.encoder_only,
    )
    return _print_report(args.checkpoint, report, args.lowercase_and_remove_accent, f" [{', '.join(report.parts)}]")


def run_fairseq(args: argparse.Namespace) -> int:
    from xlm.interop.fairseq import import_fairseq

    report = import_fairseq(args.directory, args.out, trust_pickle=args.trust_pickle, overwrite=args.overwrite)
    return _print_report(args.directory, report, False)
