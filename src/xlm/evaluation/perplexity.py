"""Perplexity of a pretrained model per language on any binarized split, for masked
(MLM, TLM) and causal (CLM) language modelling; the training-time validation of pretraining
(``xlm.tasks.pretraining``) and ``xlm evaluate ppl`` both call :func:`lm_scores`.

A monolingual split is read as a stream ``</s> s1 </s> s2 ...`` cut into rows of ``bptt``
tokens; MLM masks 15% of the tokens (80/10/10) with a generator seeded per split, so the
figure is deterministic; CLM predicts every next token of a row; TLM masks the concatenated
pairs of a parallel split. Perplexity = exp(mean cross-entropy over the predicted tokens).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from xlm.data.batching import Batch, concat_pair, pad_rows, sentence_rows, within_length
from xlm.data.dataset import MonolingualData, PreparedData
from xlm.errors import XLMError
from xlm.model.pretrained import Pretrained
from xlm.objectives.language_modeling import LossOutput, apply_masking, clm_loss, mlm_loss
from xlm.objectives.masking import MaskingConfig

Objective = Literal["mlm", "clm", "both"]
ALL_ROWS = 10**9
MAX_LOG_PPL = 50.0  # perplexities are reported as exp(min(mean loss, 50)): finite, even for a diverged model


def perplexity(mean_loss: float) -> float:
    """exp of a mean cross-entropy, clamped to exp(50) (the one clamp of the project)."""
    return float(np.exp(min(mean_loss, MAX_LOG_PPL)))


@dataclass
class LMScore:
    """Sums over the predicted tokens of one language (or pair) and objective."""

    loss_sum: float = 0.0
    n_pred: int = 0
    n_correct: int = 0

    def add(self, out: LossOutput) -> None:
        self.loss_sum += float(out.loss) * out.n_pred
        self.n_pred += out.n_pred
        self.n_correct += out.n_correct

    @property
    def ppl(self) -> float:
        return perplexity(self.loss_sum / max(self.n_pred, 1))

    @property
    def acc(self) -> float:
        return self.n_correct / max(self.n_pred, 1)


def _add(scores: dict[tuple[str, str], LMScore], key: tuple[str, str], out: LossOutput) -> None:
    if out.n_pred == 0:  # nothing predicted (e.g. no position masked): its mean loss is NaN
        return
    scores.setdefault(key, LMScore()).add(out)


def _stream_rows(data: MonolingualData, bptt: int, max_rows: int) -> list[np.ndarray]:
    n = min(max_rows, (data.stream_length - 1) // bptt)
    if n == 0:  # a split shorter than one row: evaluate it as a single short row
        return [np.asarray(data.tokens, dtype=np.int64)]
    return [np.asarray(data.stream(i * bptt, bptt + 1), dtype=np.int64)[:bptt] for i in range(n)]


def _batch_starts(n: int, size: int, label: str, progress: bool) -> Iterator[int]:
    """The first row of each batch of ``size`` rows out of ``n``; with ``progress``, a bar
    labelled ``label`` on standard error counts the rows."""
    with tqdm(total=n, desc=label, unit="row", disable=not progress, leave=False) as bar:
        for i in range(0, n, size):
            yield i
            bar.update(min(size, n - i))


@torch.no_grad()
def lm_scores(
    model: nn.Module,
    prepared: PreparedData,
    lang2id: dict[str, int],
    split: str,
    masking: MaskingConfig,
    *,
    mlm: Sequence[str] = (),
    clm: Sequence[str] = (),
    tlm: Sequence[tuple[str, str]] = (),
    bptt: int,
    max_len: int,
    max_rows: int,
    max_pairs: int,
    seed: int,
    device: torch.device,
    batch_rows: int = 16,
    progress: bool = False,
) -> dict[tuple[str, str], LMScore]:
    """Scores keyed by (objective, language or ``src-tgt`` pair) for the MLM and CLM languages
    (``max_rows`` rows of ``bptt`` tokens each) and the TLM pairs (the first ``max_pairs``
    pairs with at most ``max_len`` words a side) that ``split`` has; the others are left out.
    One generator seeded with ``seed`` masks them all, in that order. ``progress``: a progress
    bar per language and objective on standard error."""
    gen = torch.Generator().manual_seed(seed)
    pad = prepared.vocab.specials.pad
    scores: dict[tuple[str, str], LMScore] = {}
    for kind, langs in (("mlm", mlm), ("clm", clm)):
        for lang in langs:
            if not prepared.has_mono(split, lang):
                continue
            rows = _stream_rows(prepared.mono(split, lang), bptt, max_rows)
            for i in _batch_starts(len(rows), batch_rows, f"{kind} {lang}", progress):
                tokens, lengths = pad_rows(rows[i : i + batch_rows], pad)
                batch = Batch(tokens, lengths, torch.full_like(tokens, lang2id[lang]))
                if kind == "mlm":
                    out = mlm_loss(model, apply_masking(batch, masking, gen).to(device))
                else:
                    out = clm_loss(model, batch.to(device))
                _add(scores, (kind, lang), out)
    for a, b in tlm:
        if not prepared.has_para(split, a, b):
            continue
        data = prepared.para(split, a, b)
        # whole pairs, as the original evaluates (only training drops over-long pairs); a pair
        # with a side longer than max_len (the model's positions) cannot be read and is skipped
        ids = np.arange(len(data))
        ids = ids[within_length(data, ids, max_len)][:max_pairs]
        for i in _batch_starts(len(ids), batch_rows, f"tlm {a}-{b}", progress):
            part = ids[i : i + batch_rows]
            batch = concat_pair(
                sentence_rows(data.src, part, max_len),
                sentence_rows(data.tgt, part, max_len),
                lang2id[a],
                lang2id[b],
                pad,
            )
            out = mlm_loss(model, apply_masking(batch, masking, gen).to(device))
            _add(scores, ("tlm", f"{a}-{b}"), out)
    return scores


def evaluate_perplexity(
    pretrained: Pretrained,
    prepared: PreparedData,
    split: str = "test",
    langs: Sequence[str] | None = None,
    objective: Objective = "both",
    bptt: int = 256,
    max_rows: int = 0,
    seed: int = 1234,
    word_pred: float = 0.15,
    progress: bool = False,
) -> dict[str, float]:
    """Keys ``LANG/mlm/ppl``, ``LANG/mlm/acc``, ``LANG/clm/ppl`` ... (``max_rows`` rows of
    ``bptt`` tokens per language; 0: the whole split). ``progress``: progress bars on standard
    error."""
    if objective not in ("mlm", "clm", "both"):
        raise XLMError(f"objective {objective!r} is not one of mlm, clm, both")
    prepared.check_vocabulary(pretrained.vocab, pretrained.directory)
    info = pretrained.info
    langs = list(langs) if langs else [lang for lang in info.lang2id if prepared.has_mono(split, lang)]
    for lang in langs:
        info.lang_id(lang)
        if not prepared.has_mono(split, lang):
            raise XLMError(f"{prepared.directory}: no {split} split for {lang!r}")
    if not langs:
        raise XLMError(f"{prepared.directory}: no {split} split in any of the model's languages {sorted(info.lang2id)}")
    bptt = min(bptt, pretrained.model.cfg.max_positions)
    kinds = ("mlm", "clm") if objective == "both" else (objective,)
    masking = MaskingConfig.for_vocab(pretrained.vocab, word_pred, mask_prob=0.8, random_prob=0.1, keep_prob=0.1)
    pretrained.model.eval()
    scores = lm_scores(
        pretrained.model, prepared, info.lang2id, split, masking,
        mlm=langs if "mlm" in kinds else [], clm=langs if "clm" in kinds else [],
        bptt=bptt, max_len=max(1, bptt - 2), max_rows=max_rows if max_rows > 0 else ALL_ROWS, max_pairs=0, seed=seed,
        device=next(pretrained.model.parameters()).device, progress=progress,
    )  # fmt: skip
    out: dict[str, float] = {}
    for (kind, lang), score in scores.items():
        out[f"{lang}/{kind}/ppl"] = score.ppl
        out[f"{lang}/{kind}/acc"] = score.acc
    return out
