"""``xlm evaluate words CHECKPOINT --dict en-fr=FILE.tsv [--similarity FILE]``: word
translation from the embedding table (P@1/5/10, nearest neighbour and CSLS), the mean
cosine / L2 between dictionary pairs, and cross-lingual word similarity correlations."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xlm.commands.options import (
    add_checkpoint_argument,
    add_compute_options,
    add_data_option,
    add_json_option,
    add_plot_option,
    add_repeatable_option,
    add_split_option,
    autocast,
    count,
    load_model,
    long_input_progress,
    open_prepared,
)
from xlm.errors import XLMError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("words", help="word translation and word similarity from the embedding table")
    add_checkpoint_argument(p)
    add_repeatable_option(
        p, "--dict", "SRC-TGT=FILE",
        "bilingual dictionary (MUSE format: source<TAB>target or 'source target'), repeatable",
    )  # fmt: skip
    add_repeatable_option(
        p, "--target-vocab", "[LANG=]FILE", "candidate words, one a line (for every target language, or LANG's)"
    )
    add_data_option(
        p, "an `xlm prepare` directory: its --split's most frequent words are the candidates", aliases=("--vocab-data",)
    )
    add_split_option(p, "train", "split of --data whose word counts rank the candidates", aliases=("--vocab-split",))
    add_repeatable_option(
        p, "--corpus-text", "LANG=FILE", "raw text of LANG whose most frequent words are the candidates"
    )
    p.add_argument("--max-vocab", type=count, default=20000, help="frequent words kept per language")
    p.add_argument("--csls-k", type=count, default=10, help="neighbours in the CSLS hubness correction")
    p.add_argument(
        "--vectors",
        choices=("table", "encoder"),
        default=None,
        help="word vectors: the embedding table (mean of a word's BPE rows) or the word encoded "
        "alone as a sentence, pooled as the checkpoint's sentence vectors (default: the measured best, "
        "see docs/results.md)",
    )
    p.add_argument(
        "--center",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="subtract each language's mean word vector (default on)",
    )
    add_repeatable_option(
        p, "--similarity", "[SRC-TGT=]FILE", "word<TAB>word<TAB>score; without SRC-TGT the pair of the single --dict"
    )
    add_json_option(p)
    add_plot_option(p, "write a PNG bar chart of P@k per language pair")
    add_compute_options(p)
    p.set_defaults(func=run)


def _split_lang(spec: str, option: str) -> tuple[str | None, str]:
    head, sep, tail = spec.partition("=")
    if sep and head and "/" not in head and "." not in head:
        return head, tail
    if option == "--corpus-text":
        raise XLMError(f"{option} {spec!r}: expected LANG=FILE")
    return None, spec


Pair = tuple[str, str, str]  # source language, target language, file
P_AT_K = ("p@1", "p@5", "p@10", "csls/p@1", "csls/p@5", "csls/p@10")


def _similarity_sets(specs: list[str], dicts: list[Pair]) -> list[Pair]:
    """``--similarity [SRC-TGT=]FILE`` specs; without SRC-TGT, the pair of the single ``--dict``."""
    from xlm.evaluation.retrieval import parse_pair_spec

    sims = []
    for spec in specs:
        pair, path = _split_lang(spec, "--similarity")
        if pair is None:
            if len(dicts) != 1:
                raise XLMError(
                    f"--similarity {spec!r}: name the pair (SRC-TGT=FILE) unless exactly one --dict is given"
                )
            sims.append((dicts[0][0], dicts[0][1], path))
        else:
            a, b, _ = parse_pair_spec(f"{pair}=x")
            sims.append((a, b, path))
    return sims


def _listed_words(specs: list[str]) -> dict[str | None, list[str]]:
    """``--target-vocab [LANG=]FILE`` word lists by language (None: for every target language)."""
    from xlm.evaluation.word_translation import read_word_list

    listed: dict[str | None, list[str]] = {}
    for spec in specs:
        lang, path = _split_lang(spec, "--target-vocab")
        listed.setdefault(lang, []).extend(read_word_list(path))
    return listed


def _frequent_words_source(
    args: argparse.Namespace, pretrained: Any, texts: dict[str | None, str]
) -> Callable[[str], list[str]]:
    """A language's most frequent words (cached): from ``--data``'s ``--split`` when it has the
    language, else from its ``--corpus-text``, else none."""
    from xlm.evaluation.word_translation import frequent_words, frequent_words_in_text

    lower = pretrained.info.lowercase_and_remove_accent
    prepared = open_prepared(args, pretrained.vocab) if args.data else None
    cache: dict[str, list[str]] = {}

    def frequent(lang: str) -> list[str]:
        if lang not in cache:
            words: list[str] = []
            if prepared is not None and prepared.has_mono(args.split, lang):
                data = prepared.mono(args.split, lang)
                words = frequent_words(data, pretrained.vocab.id_to_token, args.max_vocab)
            elif lang in texts:
                words = frequent_words_in_text(texts[lang], lang, args.max_vocab, lower)
            cache[lang] = words
        return cache[lang]

    return frequent


def _print_tables(metrics: dict[str, float], dicts: list[Pair], sims: list[Pair]) -> None:
    from xlm.reports import format_table

    if dicts:
        headers = ["pair", "queries", "vocab", "P@1", "P@5", "P@10", "CSLS P@1", "CSLS P@5", "CSLS P@10", "cos", "L2"]
        rows = []
        for a, b, _ in dicts:
            n = f"{a}-{b}"
            rows.append([n, int(metrics[f"{n}/n_queries"]), int(metrics[f"{n}/target_vocab"])]
                        + [metrics[f"{n}/{m}"] for m in P_AT_K]
                        + [metrics[f"{n}/cosine"], metrics[f"{n}/l2"]])  # fmt: skip
        print(format_table(headers, rows, floatfmt="{:.3f}"))
    if sims:
        rows = [[f"{a}-{b}", int(metrics[f"{a}-{b}/sim/n"]), metrics[f"{a}-{b}/sim/pearson"],
                 metrics[f"{a}-{b}/sim/spearman"]] for a, b, _ in sims]  # fmt: skip
        print(format_table(["similarity", "pairs", "Pearson", "Spearman"], rows, floatfmt="{:.3f}"))


def _plot(metrics: dict[str, float], dicts: list[Pair], sims: list[Pair], path: Path) -> None:
    from xlm.evaluation.charts import bar_chart

    groups = {f"{a}-{b}": {m: metrics[f"{a}-{b}/{m}"] for m in P_AT_K} for a, b, _ in dicts}
    groups.update({f"{a}-{b} sim": {"spearman": metrics[f"{a}-{b}/sim/spearman"]} for a, b, _ in sims})
    bar_chart(groups, path, "precision / correlation", "word translation (embedding table)")


def run(args: argparse.Namespace) -> int:
    from xlm.evaluation.retrieval import parse_pair_spec
    from xlm.evaluation.word_translation import (
        DEFAULT_WORD_VECTORS,
        WordEvalInputs,
        evaluate_dictionary,
        evaluate_similarity,
        read_dictionary,
        read_similarity,
    )
    from xlm.reports import write_json

    if not args.dict and not args.similarity:
        raise XLMError("give at least one --dict SRC-TGT=FILE or --similarity FILE")
    dicts = [parse_pair_spec(s) for s in args.dict]
    sims = _similarity_sets(args.similarity, dicts)
    listed = _listed_words(args.target_vocab)
    texts = dict(_split_lang(s, "--corpus-text") for s in args.corpus_text)
    pretrained = load_model(args.checkpoint, args.device)
    frequent = _frequent_words_source(args, pretrained, texts)
    metrics: dict[str, float] = {}
    vectors, progress = args.vectors or DEFAULT_WORD_VECTORS, long_input_progress()
    with autocast(pretrained.model, args.precision):
        for a, b, path in dicts:
            pretrained.info.lang_id(a), pretrained.info.lang_id(b)
            inputs = WordEvalInputs(
                a, b, read_dictionary(path),
                target_frequent=frequent(b), source_frequent=frequent(a),
                target_listed=listed.get(b, []) + listed.get(None, []), source_listed=listed.get(a, []),
            )  # fmt: skip
            metrics.update(evaluate_dictionary(pretrained, inputs, k=args.csls_k, vectors=vectors, center=args.center,
                                               progress=progress))  # fmt: skip
        for a, b, path in sims:
            metrics.update(evaluate_similarity(pretrained, a, b, read_similarity(path)))
    _print_tables(metrics, dicts, sims)
    if args.json:
        write_json(args.json, metrics)
    if args.plot:
        _plot(metrics, dicts, sims, args.plot)
    return 0
