"""BLEU with sacreBLEU, two ways:

* **detokenized** (the default, ``tokenize="13a"``): the hypothesis and the reference are
  plain text and sacreBLEU tokenizes both itself — the comparable, shareable figure;
* **tokenized** (``tokenize="none"``): both are already Moses-tokenized and sacreBLEU only
  splits on spaces. This is what the XLM paper reported (Moses' ``multi-bleu.perl`` on
  tokenized text); figures of the two kinds are not comparable with each other.

:func:`translate_and_score` translates a binarized parallel split with a model and scores
it both ways (the hypothesis and reference texts come from the same BPE vocabulary).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sacrebleu.metrics import BLEU
from sacremoses import MosesDetokenizer

from xlm.data.batching import sentence_rows
from xlm.data.dataset import ParallelData
from xlm.errors import DataError
from xlm.model.generation import DecodeConfig, translate_rows
from xlm.model.seq2seq import EncoderDecoder
from xlm.text.bpe import BPETokenizer, detokenize
from xlm.text.lines import read_file_lines

DETOKENIZED = "13a"
TOKENIZED = "none"


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
    return BleuResult(float(s.score), precisions, float(s.bp), int(s.sys_len), int(s.ref_len), str(metric.get_signature()))


def bleu_files(hyp: str | Path, ref: str | Path, tokenize: str = DETOKENIZED, lowercase: bool = False) -> BleuResult:
    """BLEU of a hypothesis file against a reference file (one sentence per line)."""
    hyps, refs = read_file_lines(hyp), read_file_lines(ref)
    for path, lines in ((hyp, hyps), (ref, refs)):
        if not any(line.strip() for line in lines):
            raise DataError(f"{path}: {'empty file' if not lines else 'only empty lines'}: nothing to score")
    if len(hyps) != len(refs):
        raise DataError(f"{hyp} has {len(hyps)} lines but {ref} has {len(refs)}: they must align line by line")
    return corpus_bleu(hyps, refs, tokenize, lowercase)


@dataclass
class Translations:
    """Hypotheses and references of one direction, tokenized (BPE undone) and detokenized."""

    hyp_tok: list[str]
    ref_tok: list[str]
    hyp: list[str]
    ref: list[str]

    def scores(self) -> dict[str, float]:
        return {
            "bleu": corpus_bleu(self.hyp, self.ref, DETOKENIZED).score,
            "bleu_tok": corpus_bleu(self.hyp_tok, self.ref_tok, TOKENIZED).score,
        }


def translate_and_score(
    model: EncoderDecoder,
    data: ParallelData,
    src_lang_id: int,
    tgt_lang_id: int,
    tgt_lang: str,
    tokenizer: BPETokenizer,
    decode: DecodeConfig,
    device: torch.device | str,
    max_sentences: int = 0,
    max_len: int = 254,
    max_tokens: int = 4000,
) -> Translations:
    """Translate the first ``max_sentences`` (0: all) source sentences of ``data`` and pair the
    outputs with the references, as text."""
    n = len(data) if max_sentences <= 0 else min(len(data), max_sentences)
    ids = np.arange(n)
    words = translate_rows(model, sentence_rows(data.src, ids, max_len), src_lang_id, tgt_lang_id, decode, device, max_tokens)
    hyp_tok = [tokenizer.decode(w) for w in words]
    ref_tok = [tokenizer.decode(data.tgt.sentence(int(i)).tolist()) for i in ids]
    detok = MosesDetokenizer(lang=tgt_lang)
    return Translations(
        hyp_tok, ref_tok, [detokenize(h, detok) for h in hyp_tok], [detokenize(r, detok) for r in ref_tok]
    )
