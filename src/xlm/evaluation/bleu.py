"""BLEU, three figures that mean different things:

* **BLEU vs raw references** (``bleu``): the detokenized output scored by sacreBLEU (13a)
  against the *raw* reference text, as published sacreBLEU figures are. ``xlm prepare``
  keeps the raw valid/test sides of every parallel corpus (``raw/`` in the prepared
  folder); ``xlm evaluate bleu --ref`` gives them for an older folder;
* **BLEU vs normalized references** (``bleu_norm``): the same output against references
  rebuilt from the binarized data (Moses punctuation normalization, lower-cased and
  accent-stripped if the vocabulary is, ``<unk>`` kept). It needs no raw text, but it is
  *not* comparable with published sacreBLEU;
* **tokenized BLEU** (``bleu_tok``): Moses-tokenized output against the tokenized
  references by the rules of Moses' ``multi-bleu.perl`` (:func:`multi_bleu`), what the
  XLM paper reported.

:func:`translate_and_score` translates a binarized parallel split and scores it all three
ways; :func:`corpus_bleu` / :func:`bleu_files` score text with sacreBLEU.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sacrebleu.metrics import BLEU
from sacremoses import MosesDetokenizer

from xlm.data.batching import sentence_rows
from xlm.data.dataset import ParallelData
from xlm.data.prepare import RAW_DIR
from xlm.errors import DataError
from xlm.model.generation import DecodeConfig, translate_rows
from xlm.model.seq2seq import EncoderDecoder
from xlm.text.bpe import detokenize
from xlm.text.lines import read_file_lines
from xlm.text.tokenizer import Tokenizer

DETOKENIZED = "13a"
TOKENIZED = "none"
MULTI_BLEU = "multi-bleu"  # for bleu_files: multi-bleu.perl's rules instead of sacreBLEU
MULTI_BLEU_SIGNATURE = "multi-bleu.perl rules: whitespace tokens, corpus-level, no smoothing"


@dataclass
class BleuResult:
    score: float
    precisions: list[float]
    brevity_penalty: float
    sys_len: int
    ref_len: int
    signature: str

    def to_json(self) -> dict[str, Any]:
        return {
            "bleu": self.score,
            "precisions": self.precisions,
            "brevity_penalty": self.brevity_penalty,
            "sys_len": self.sys_len,
            "ref_len": self.ref_len,
            "signature": self.signature,
        }


def corpus_bleu(hyps: list[str], refs: list[str], tokenize: str = DETOKENIZED, lowercase: bool = False) -> BleuResult:
    """Corpus BLEU of ``hyps`` against one reference each (sacreBLEU's defaults otherwise)."""
    if len(hyps) != len(refs):
        raise DataError(f"{len(hyps)} hypotheses but {len(refs)} references: the files must align line by line")
    if tokenize not in BLEU.TOKENIZERS:
        raise DataError(f"unknown BLEU tokenization {tokenize!r}; choose one of {sorted(BLEU.TOKENIZERS)}")
    # on tokenized text (tokenize="none") sacreBLEU would warn that the text looks tokenized: it is meant to
    metric = BLEU(tokenize=tokenize, lowercase=lowercase, force=tokenize == TOKENIZED)
    s = metric.corpus_score(hyps, [refs])
    precisions = [float(p) for p in s.precisions]
    return BleuResult(
        float(s.score), precisions, float(s.bp), int(s.sys_len), int(s.ref_len), str(metric.get_signature())
    )


def bleu_files(hyp: str | Path, ref: str | Path, tokenize: str = DETOKENIZED, lowercase: bool = False) -> BleuResult:
    """BLEU of a hypothesis file against a reference file (one sentence per line)."""
    hyps, refs = read_file_lines(hyp), read_file_lines(ref)
    for path, lines in ((hyp, hyps), (ref, refs)):
        if not any(line.strip() for line in lines):
            raise DataError(f"{path}: {'empty file' if not lines else 'only empty lines'}: nothing to score")
    if len(hyps) != len(refs):
        raise DataError(f"{hyp} has {len(hyps)} lines but {ref} has {len(refs)}: they must align line by line")
    if tokenize == MULTI_BLEU:
        if lowercase:
            raise DataError("--lowercase is not available with multi-bleu (the perl script lower-cases ASCII only)")
        return multi_bleu(hyps, refs)
    return corpus_bleu(hyps, refs, tokenize, lowercase)


_PERL_SPACE = re.compile(r"[ \t\n\r\f\v]+")


def _perl_words(line: str) -> list[str]:
    """Perl's ``split`` on a byte string: runs of ASCII whitespace separate, leading ones ignored."""
    return [w for w in _PERL_SPACE.split(line) if w]


def _ngrams(words: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def multi_bleu(hyps: Sequence[str], *ref_streams: Sequence[str]) -> BleuResult:
    """Corpus BLEU by the rules of Moses' ``scripts/generic/multi-bleu.perl``.

    Tokens are whitespace-separated; each n-gram count (n = 1..4) is clipped by its highest
    count in any one reference; the reference length of a sentence is the closest one to the
    hypothesis length (the shorter on a tie). There is no smoothing: an order with no
    matching n-gram makes BLEU 0 (sacreBLEU's default exponential smoothing gives more than
    0 there). The brevity penalty is ``exp(1 - r / c)`` when the output is shorter, ``c`` and
    ``r`` summed over the corpus. An empty output (``c = 0``), where the script divides by
    zero, scores 0."""
    if not ref_streams:
        raise DataError("multi_bleu needs at least one reference stream")
    for stream in ref_streams:
        if len(stream) != len(hyps):
            raise DataError(f"{len(hyps)} hypotheses but {len(stream)} references: the files must align line by line")
    correct, total = [0] * 4, [0] * 4
    hyp_len = ref_len = 0
    for i, hyp in enumerate(hyps):
        words = _perl_words(hyp)
        refs = [_perl_words(r[i]) for r in ref_streams]
        hyp_len += len(words)
        ref_len += min((abs(len(words) - len(r)), len(r)) for r in refs)[1]
        for n in range(1, 5):
            max_ref: Counter[tuple[str, ...]] = Counter()
            for r in refs:
                max_ref |= _ngrams(r, n)  # the union of counters keeps each n-gram's maximum
            counts = _ngrams(words, n)
            total[n - 1] += sum(counts.values())
            correct[n - 1] += sum(min(c, max_ref[g]) for g, c in counts.items())
    precisions = [c / t if t else 0.0 for c, t in zip(correct, total)]
    if hyp_len == 0 or ref_len == 0:  # the script stops (no reference) or divides by zero (no output)
        return BleuResult(0.0, [100 * p for p in precisions], 0.0, hyp_len, ref_len, MULTI_BLEU_SIGNATURE)
    bp = math.exp(1 - ref_len / hyp_len) if hyp_len < ref_len else 1.0
    score = bp * math.exp(sum(math.log(p) for p in precisions) / 4) if all(precisions) else 0.0
    return BleuResult(100 * score, [100 * p for p in precisions], bp, hyp_len, ref_len, MULTI_BLEU_SIGNATURE)


def raw_reference_path(directory: str | Path, split: str, src: str, tgt: str) -> Path:
    """Where ``xlm prepare`` keeps the raw ``tgt`` side of a valid/test pair (aligned with
    the binarized sentences: pairs dropped there are dropped here too)."""
    a, b = sorted((src, tgt))
    return Path(directory) / RAW_DIR / f"{split}.{a}-{b}.{tgt}"


def raw_references(path: Path | None, n_data: int, n: int) -> list[str] | None:
    """The first ``n`` lines of a raw reference file aligned with ``n_data`` binarized
    sentences; None when there is no file."""
    if path is None or not path.is_file():
        return None
    lines = read_file_lines(path)
    if len(lines) != n_data:
        raise DataError(
            f"{path}: {len(lines)} reference lines for {n_data} binarized sentences: not aligned (pairs with an "
            "empty side are dropped by `xlm prepare`; its raw/ folder keeps the aligned references)"
        )
    return lines[:n]


@dataclass
class Translations:
    """The outputs of one direction and their references: tokenized (BPE undone),
    detokenized, and the raw reference text when it is known."""

    hyp_tok: list[str]
    ref_tok: list[str]
    hyp: list[str]
    ref_norm: list[str]
    ref_raw: list[str] | None = None
    n_long: int = 0  # sources longer than the model's positions (their first tokens were translated)
    limit: int = 0  # the source tokens a model can read

    def scores(self) -> dict[str, float]:
        """``bleu`` (vs raw references, when known), ``bleu_norm`` and ``bleu_tok``."""
        out = {}
        if self.ref_raw is not None:
            out["bleu"] = corpus_bleu(self.hyp, self.ref_raw, DETOKENIZED).score
        out["bleu_norm"] = corpus_bleu(self.hyp, self.ref_norm, DETOKENIZED).score
        out["bleu_tok"] = multi_bleu(self.hyp_tok, self.ref_tok).score
        return out

    def long_note(self, name: str) -> str:
        """One line on the sources the model could not read whole ('' when none)."""
        if not self.n_long:
            return ""
        return (
            f"{name}: {self.n_long} of {len(self.hyp)} source sentences are longer than the model's {self.limit} "
            f"positions: their first {self.limit} tokens were translated"
        )


def source_limit(model: EncoderDecoder) -> int:
    """Source words a model reads: its positions less the two ``</s>`` delimiters."""
    return int(model.encoder.cfg.max_positions) - 2


def translate_and_score(
    model: EncoderDecoder,
    data: ParallelData,
    src_lang_id: int,
    tgt_lang_id: int,
    tgt_lang: str,
    tokenizer: Tokenizer,
    decode: DecodeConfig,
    device: torch.device | str,
    max_sentences: int = 0,
    max_tokens: int = 4000,
    raw_refs: Path | None = None,
    progress: str | None = None,
) -> Translations:
    """Translate the first ``max_sentences`` (0: all) source sentences of ``data`` whole (up
    to the model's positions) and pair the outputs with the references, as text; the raw
    references come from the file ``raw_refs`` when it exists. ``progress``: the label of a
    progress bar on standard error (None: no bar)."""
    n = len(data) if max_sentences <= 0 else min(len(data), max_sentences)
    ids = np.arange(n)
    limit = source_limit(model)
    n_long = int((data.src.lengths[:n] > limit).sum())
    rows = sentence_rows(data.src, ids, limit)
    specials = tokenizer.vocab.specials
    words = translate_rows(
        model, rows, src_lang_id, tgt_lang_id, decode, device, max_tokens, specials, progress=progress
    )
    hyp_tok = [tokenizer.decode(w) for w in words]
    ref_tok = [tokenizer.decode(data.tgt.sentence(int(i)).tolist()) for i in ids]
    if tokenizer.vocab.kind == "bpe":
        detok = MosesDetokenizer(lang=tgt_lang)
        hyp = [detokenize(h, detok) for h in hyp_tok]
        ref_norm = [detokenize(r, detok) for r in ref_tok]
    else:  # SentencePiece / WordPiece decode to text: no Moses tokenization to undo
        hyp, ref_norm = hyp_tok, ref_tok
    return Translations(hyp_tok, ref_tok, hyp, ref_norm, raw_references(raw_refs, len(data), n), n_long, limit)
