"""``xlm evaluate words CHECKPOINT --dict en-fr=FILE.tsv [--similarity FILE]``: word
translation from the embedding table (P@1/5/10, nearest neighbour and CSLS), the mean
cosine / L2 between dictionary pairs, and cross-lingual word similarity correlations."""

from __future__ import annotations

import argparse
from pathlib import Path

from xlm.commands.options import add_device_option, count
from xlm.errors import XLMError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("words", help="word translation and word similarity from the embedding table")
    p.add_argument("checkpoint", type=Path, help="checkpoint directory (from xlm pretrain or xlm import)")
    p.add_argument(
        "--dict",
        action="append",
        default=[],
        metavar="SRC-TGT=FILE",
        help="bilingual dictionary (MUSE format: source<TAB>target or 'source target'), repeatable",
    )
    p.add_argument(
        "--target-vocab",
        action="append",
        default=[],
        metavar="[LANG=]FILE",
        help="candidate words, one a line (for every target language, or LANG's)",
    )
    p.add_argument(
        "--vocab-data",
        type=Path,
        help="an `xlm prepare` directory: its --vocab-split's most frequent words are the candidates",
    )
    p.add_argument("--vocab-split", default="train", help="split of --vocab-data whose word counts rank the candidates")
    p.add_argument(
        "--corpus-text",
        action="append",
        default=[],
        metavar="LANG=FILE",
        help="raw text of LANG whose most frequent words are the candidates",
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
    p.add_argument(
        "--similarity",
        action="append",
        default=[],
        metavar="[SRC-TGT=]FILE",
        help="word<TAB>word<TAB>score; without SRC-TGT the pair of the single --dict",
    )
    p.add_argument("--json", type=Path, help="write the metrics as one JSON object")
    p.add_argument("--plot", type=Path, help="write a PNG bar chart of P@k per language pair")
    add_device_option(p)
    p.set_defaults(func=run)  # fmt: skip


def _split_lang(spec: str, option: str) -> tuple[str | None, str]:
    head, sep, tail = spec.partition("=")
    if sep and head and "/" not in head and "." not in head:
        return head, tail
    if option == "--corpus-text":
        raise XLMError(f"{option} {spec!r}: expected LANG=FILE")
    return None, spec


def run(args: argparse.Namespace) -> int:
    from xlm.commands.embed import load_model
    from xlm.data.dataset import PreparedData
    from xlm.evaluation.charts import bar_chart
    from xlm.evaluation.retrieval import parse_pair_spec
    from xlm.evaluation.word_translation import (
        DEFAULT_WORD_VECTORS,
        WordEvalInputs,
        evaluate_dictionary,
        evaluate_similarity,
        frequent_words,
        frequent_words_in_text,
        read_dictionary,
        read_similarity,
        read_word_list,
    )
    from xlm.reports import format_table, write_json

    if not args.dict and not args.similarity:
        raise XLMError("give at least one --dict SRC-TGT=FILE or --similarity FILE")
    dicts = [parse_pair_spec(s) for s in args.dict]
    sims = []
    for spec in args.similarity:
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
    listed: dict[str | None, list[str]] = {}
    for spec in args.target_vocab:
        lang, path = _split_lang(spec, "--target-vocab")
        listed.setdefault(lang, []).extend(read_word_list(path))
    texts = dict(_split_lang(s, "--corpus-text") for s in args.corpus_text)
    pretrained = load_model(args.checkpoint, args.device)
    lower = pretrained.info.lowercase_and_remove_accent
    prepared = PreparedData.open(args.vocab_data) if args.vocab_data else None
    if prepared is not None:
        prepared.check_vocabulary(pretrained.vocab, args.checkpoint)
    cache: dict[str, list[str]] = {}

    def frequent(lang: str) -> list[str]:
        if lang not in cache:
            words: list[str] = []
            if prepared is not None and prepared.has_mono(args.vocab_split, lang):
                data = prepared.mono(args.vocab_split, lang)
                words = frequent_words(data, pretrained.vocab.id_to_token, args.max_vocab)
            elif lang in texts:
                words = frequent_words_in_text(texts[lang], lang, args.max_vocab, lower)
            cache[lang] = words
        return cache[lang]

    metrics: dict[str, float] = {}
    for a, b, path in dicts:
        pretrained.info.lang_id(a), pretrained.info.lang_id(b)
        inputs = WordEvalInputs(
            a, b, read_dictionary(path),
            target_frequent=frequent(b), source_frequent=frequent(a),
            target_listed=listed.get(b, []) + listed.get(None, []), source_listed=listed.get(a, []),
        )  # fmt: skip
        metrics.update(
            evaluate_dictionary(
                pretrained, inputs, k=args.csls_k, vectors=args.vectors or DEFAULT_WORD_VECTORS, center=args.center
            )
        )
    for a, b, path in sims:
        metrics.update(evaluate_similarity(pretrained, a, b, read_similarity(path)))
    if dicts:
        headers = ["pair", "queries", "vocab", "P@1", "P@5", "P@10", "CSLS P@1", "CSLS P@5", "CSLS P@10", "cos", "L2"]
        rows = []
        for a, b, _ in dicts:
            n = f"{a}-{b}"
            rows.append([n, int(metrics[f"{n}/n_queries"]), int(metrics[f"{n}/target_vocab"])]
                        + [metrics[f"{n}/{m}"] for m in ("p@1", "p@5", "p@10", "csls/p@1", "csls/p@5", "csls/p@10")]
                        + [metrics[f"{n}/cosine"], metrics[f"{n}/l2"]])  # fmt: skip
        print(format_table(headers, rows, floatfmt="{:.3f}"))
    if sims:
        rows = [[f"{a}-{b}", int(metrics[f"{a}-{b}/sim/n"]), metrics[f"{a}-{b}/sim/pearson"],
                 metrics[f"{a}-{b}/sim/spearman"]] for a, b, _ in sims]  # fmt: skip
        print(format_table(["similarity", "pairs", "Pearson", "Spearman"], rows, floatfmt="{:.3f}"))
    if args.json:
        write_json(args.json, metrics)
    if args.plot:
        groups = {f"{a}-{b}": {m: metrics[f"{a}-{b}/{m}"] for m in ("p@1", "p@5", "p@10", "csls/p@1", "csls/p@5", "csls/p@10")}
                  for a, b, _ in dicts}  # fmt: skip
        groups.update({f"{a}-{b} sim": {"spearman": metrics[f"{a}-{b}/sim/spearman"]} for a, b, _ in sims})
        bar_chart(groups, args.plot, "precision / correlation", "word translation (embedding table)")
    return 0
