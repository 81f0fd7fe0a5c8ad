"""Samplers and batches: which language each step reads, streams of ``bptt`` tokens for
CLM/MLM, and parallel pairs batched by a token budget and grouped by length for TLM/MT.

Every sampler is deterministic given ``(seed, rank)`` and exposes ``state_dict()`` /
``load_state_dict()`` (plain JSON-able dicts), so a run resumes at exactly the batch it
would have read next. In a multi-process run each rank reads its own part of the same
memory-mapped files.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from xlm.data.dataset import MonolingualData, ParallelData
from xlm.errors import DataError
from xlm.text.vocab import EOS_INDEX, PAD_INDEX


@dataclass
class Batch:
    """A batch of token rows. ``langs`` is ``(B, T)``; ``positions`` is ``None`` for
    ``0..T-1``. MLM/TLM batches also carry ``pred_mask`` (B, T) and ``targets`` (N,)."""

    tokens: Tensor
    lengths: Tensor
    langs: Tensor
    positions: Tensor | None = None
    pred_mask: Tensor | None = None
    targets: Tensor | None = None

    def to(self, device: torch.device | str) -> "Batch":
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(*(move(getattr(self, f)) for f in ("tokens", "lengths", "langs", "positions", "pred_mask", "targets")))

    @property
    def n_tokens(self) -> int:
        return int(self.lengths.sum())

    def with_masking(self, pred_mask: Tensor, inputs: Tensor, targets: Tensor) -> "Batch":
        return replace(self, tokens=inputs, pred_mask=pred_mask, targets=targets)


def language_probabilities(sizes: list[int], alpha: float) -> np.ndarray:
    """q_i ∝ p_i^alpha with p_i = size_i / sum(sizes) (alpha=1: proportional, 0: uniform)."""
    p = np.asarray(sizes, dtype=np.float64)
    if (p <= 0).any():
        raise DataError("every language must have some data to be sampled")
    p = p / p.sum()
    q = p**alpha
    return q / q.sum()


def _rank_rng(seed: int, epoch: int, rank: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, rank])


class StreamSampler:
    """Rows of ``bptt`` consecutive tokens of the ``</s> s1 </s> s2 ...`` stream of one
    language. Rank ``r`` of ``W`` reads the r-th contiguous slice of the stream; each epoch
    visits every chunk of that slice once, in a shuffled order."""

    def __init__(
        self, data: MonolingualData, lang_id: int, bptt: int, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1
    ):
        self.data, self.lang_id, self.bptt, self.batch_size, self.seed, self.rank = data, lang_id, bptt, batch_size, seed, rank
        length = data.stream_length
        self.lo = length * rank // world
        hi = length * (rank + 1) // world
        self.n_chunks = (hi - self.lo) // bptt
        if self.n_chunks < 1:
            raise DataError(f"{data.prefix}: {hi - self.lo} tokens per process is less than one bptt={bptt} row")
        self.epoch, self.pos = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> np.ndarray:
        return _rank_rng(self.seed, self.epoch, self.rank).permutation(self.n_chunks)

    def _next_chunk(self) -> int:
        if self.pos >= self.n_chunks:
            self.epoch, self.pos = self.epoch + 1, 0
            self._order = self._permutation()
        c = int(self._order[self.pos])
        self.pos += 1
        return c

    def next_batch(self) -> Batch:
        rows = [self.data.stream(self.lo + self._next_chunk() * self.bptt, self.bptt) for _ in range(self.batch_size)]
        tokens = torch.from_numpy(np.stack(rows).astype(np.int64))
        bs = tokens.shape[0]
        return Batch(
            tokens=tokens,
            lengths=torch.full((bs,), self.bptt, dtype=torch.long),
            langs=torch.full_like(tokens, self.lang_id),
        )

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._order = self._permutation()


def token_budget_batches(lengths: np.ndarray, order: np.ndarray, max_tokens: int, max_rows: int = 0) -> list[np.ndarray]:
    """Cut ``order`` (sentence ids, already grouped by length) into batches whose padded size
    ``rows x longest`` stays within ``max_tokens`` (a single over-long row forms its own batch)."""
    batches: list[np.ndarray] = []
    start, longest = 0, 0
    for i, idx in enumerate(order):
        longest_if_added = max(longest, int(lengths[idx]))
        rows = i - start + 1
        if i > start and (longest_if_added * rows > max_tokens or (max_rows and rows > max_rows)):
            batches.append(order[start:i])
            start, longest_if_added = i, int(lengths[idx])
        longest = longest_if_added
    if start < len(order):
        batches.append(order[start:])
    return batches


def sentence_rows(data: MonolingualData, ids: np.ndarray, max_len: int) -> list[np.ndarray]:
    """``</s> w1 .. wn </s>`` for each sentence, words truncated to the first ``max_len``."""
    rows = []
    for i in ids:
        words = data.sentence(int(i))[:max_len]
        rows.append(np.concatenate(([EOS_INDEX], words, [EOS_INDEX])).astype(np.int64))
    return rows


def pad_rows(rows: list[np.ndarray], pad_index: int = PAD_INDEX) -> tuple[Tensor, Tensor]:
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    out = torch.full((len(rows), int(lengths.max())), pad_index, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.from_numpy(r)
    return out, lengths


def concat_pair(
    src_rows: list[np.ndarray], tgt_rows: list[np.ndarray], src_lang: int, tgt_lang: int
) -> Batch:
    """TLM input: ``[</s> src </s>][</s> tgt </s>]`` per row, positions restarting at 0 on the
    target side, each side with its own language id, padded at the end."""
    rows, langs, positions = [], [], []
    for s, t in zip(src_rows, tgt_rows):
        rows.append(np.concatenate((s, t)))
        langs.append(np.concatenate((np.full(len(s), src_lang), np.full(len(t), tgt_lang))))
        positions.append(np.concatenate((np.arange(len(s)), np.arange(len(t)))))
    tokens, lengths = pad_rows(rows)
    lang_t, _ = pad_rows([x.astype(np.int64) for x in langs], pad_index=src_lang)
    pos_t, _ = pad_rows([x.astype(np.int64) for x in positions], pad_index=0)
    return Batch(tokens=tokens, lengths=lengths, langs=lang_t, positions=pos_t)


class PairBatcher:
    """Batches of parallel pairs. Rank ``r`` of ``W`` owns pairs ``r, r+W, r+2W, ...``; each
    epoch shuffles them, sorts by length inside windows of ``group`` pairs (so batches waste
    little padding), cuts batches by ``max_tokens`` and shuffles the batch order."""

    def __init__(
        self,
        data: ParallelData,
        max_tokens: int,
        max_len: int,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        group: int = 4096,
        max_rows: int = 0,
    ):
        if len(data) <= rank:
            raise DataError(f"{data.src.prefix}: {len(data)} pairs cannot feed {world} processes")
        self.data, self.max_tokens, self.max_len, self.seed, self.rank = data, max_tokens, max_len, seed, rank
        self.group, self.max_rows = group, max_rows
        self.ids = np.arange(rank, len(data), world)
        src_len = np.minimum(data.src.lengths, max_len)
        tgt_len = np.minimum(data.tgt.lengths, max_len)
        self.pair_len = (src_len + tgt_len + 4).astype(np.int64)
        self.epoch, self.pos = 0, 0
        self._batches = self._make_batches()

    def _make_batches(self) -> list[np.ndarray]:
        rng = _rank_rng(self.seed, self.epoch, self.rank)
        order = rng.permutation(self.ids)
        grouped = []
        for w in range(0, len(order), self.group):
            window = order[w : w + self.group]
            grouped.append(window[np.argsort(self.pair_len[window], kind="stable")])
        batches = token_budget_batches(self.pair_len, np.concatenate(grouped), self.max_tokens, self.max_rows)
        return [batches[i] for i in rng.permutation(len(batches))]

    def next_ids(self) -> np.ndarray:
        if self.pos >= len(self._batches):
            self.epoch, self.pos = self.epoch + 1, 0
            self._batches = self._make_batches()
        ids = self._batches[self.pos]
        self.pos += 1
        return ids

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._batches = self._make_batches()


def iterate_sentences(data: MonolingualData, max_tokens: int, max_len: int, lang_id: int):
    """All sentences of ``data`` in order of length, padded batches within ``max_tokens``
    (for evaluation and embedding); yields ``(sentence_ids, Batch)``."""
    lengths = np.minimum(data.lengths, max_len) + 2
    order = np.argsort(lengths, kind="stable")
    for ids in token_budget_batches(lengths, order, max_tokens):
        tokens, lens = pad_rows(sentence_rows(data, ids, max_len))
        yield ids, Batch(tokens=tokens, lengths=lens, langs=torch.full_like(tokens, lang_id))
