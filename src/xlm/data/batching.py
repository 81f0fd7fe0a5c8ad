"""Samplers and batches: which language each step reads, streams of ``bptt`` tokens for
CLM/MLM, and parallel pairs batched by a token budget and grouped by length for TLM/MT.

Every sampler is deterministic given ``(seed, rank)`` and exposes ``state_dict()`` /
``load_state_dict()`` (plain JSON-able dicts), so a run resumes at exactly the batch it
would have read next. In a multi-process run each rank reads its own part of the same
files (positional reads, see :class:`~xlm.data.dataset.MonolingualData`).

Samplers hold no per-sentence or per-chunk array: an epoch's order is a keyed pseudo-random
permutation evaluated on demand (:class:`KeyedPermutation`), and pairs are read and grouped
one window at a time, so the loader's memory does not grow with the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from xlm.data.dataset import MonolingualData, ParallelData
from xlm.errors import DataError
from xlm.text.vocab import PAD_INDEX


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

    def to(self, device: torch.device | str) -> Batch:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        tokens, lengths, langs = (t.to(device, non_blocking=True) for t in (self.tokens, self.lengths, self.langs))
        return Batch(tokens, lengths, langs, move(self.positions), move(self.pred_mask), move(self.targets))

    @property
    def n_tokens(self) -> int:
        return int(self.lengths.sum())

    def with_masking(self, pred_mask: Tensor, inputs: Tensor, targets: Tensor) -> Batch:
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


_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S27, _S30, _S31 = np.uint64(27), np.uint64(30), np.uint64(31)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on a ``uint64`` array (wrapping arithmetic)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


class KeyedPermutation:
    """A pseudo-random bijection of ``[0, n)`` chosen by ``rng``, evaluated pointwise in O(1)
    memory (no array of size ``n``): a 4-round balanced Feistel network on the smallest
    ``[0, 4^h) ⊇ [0, n)``, with cycle walking to stay inside ``[0, n)``. ``perm(i)`` for
    ``i = 0 .. n-1`` lists every element of ``[0, n)`` exactly once."""

    ROUNDS = 4

    def __init__(self, n: int, rng: np.random.Generator):
        if n < 1:
            raise ValueError("a permutation needs n >= 1")
        self.n = n
        bits = max(2, (n - 1).bit_length())
        self.half = np.uint64((bits + 1) // 2)
        self.mask = np.uint64((1 << int(self.half)) - 1)
        self.keys = [np.uint64(k) for k in rng.integers(0, 2**63, size=self.ROUNDS, dtype=np.uint64)]

    def _feistel(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> self.half, x & self.mask
        for k in self.keys:
            left, right = right, left ^ (_mix(right ^ k) & self.mask)
        return (left << self.half) | right

    def __call__(self, i: np.ndarray) -> np.ndarray:
        """Images of the indices ``i`` (each in ``[0, n)``), as ``int64``."""
        out = self._feistel(np.asarray(i, dtype=np.uint64).reshape(-1))
        n = np.uint64(self.n)
        outside = np.flatnonzero(out >= n)
        while len(outside):  # walk the cycle until back inside [0, n): still a bijection
            out[outside] = self._feistel(out[outside])
            outside = outside[out[outside] >= n]
        return out.astype(np.int64)


class StreamSampler:
    """Rows of ``bptt`` consecutive tokens of the ``</s> s1 </s> s2 ...`` stream of one
    language. Rank ``r`` of ``W`` reads the r-th contiguous slice of the stream; each epoch
    visits every chunk of that slice once, in an order given by a keyed permutation of the
    chunks (deterministic given ``(seed, epoch, rank)``, O(1) memory)."""

    BLOCK = 4096  # permuted chunk numbers computed at once (amortizes the per-call cost)

    def __init__(
        self,
        data: MonolingualData,
        lang_id: int,
        bptt: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ):
        self.data, self.lang_id, self.bptt, self.batch_size, self.seed, self.rank = (
            data,
            lang_id,
            bptt,
            batch_size,
            seed,
            rank,
        )
        length = data.stream_length
        self.lo = length * rank // world
        hi = length * (rank + 1) // world
        self.n_chunks = (hi - self.lo) // bptt
        if self.n_chunks < 1:
            raise DataError(f"{data.prefix}: {hi - self.lo} tokens per process is less than one bptt={bptt} row")
        self.epoch, self.pos = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> KeyedPermutation:
        self._block_start, self._block = -1, np.empty(0, dtype=np.int64)
        return KeyedPermutation(self.n_chunks, _rank_rng(self.seed, self.epoch, self.rank))

    def _next_chunks(self, count: int) -> list[int]:
        """The next ``count`` chunk numbers, moving to the next epoch when this one is done."""
        chunks = []
        for _ in range(count):
            if self.pos >= self.n_chunks:
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._permutation()
            start = self.pos - self.pos % self.BLOCK
            if start != self._block_start:
                self._block_start = start
                self._block = self._order(np.arange(start, min(start + self.BLOCK, self.n_chunks)))
            chunks.append(int(self._block[self.pos - start]))
            self.pos += 1
        return chunks

    def next_batch(self) -> Batch:
        rows = [self.data.stream(self.lo + c * self.bptt, self.bptt) for c in self._next_chunks(self.batch_size)]
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


def token_budget_batches(
    lengths: np.ndarray, order: np.ndarray, max_tokens: int, max_rows: int = 0
) -> list[np.ndarray]:
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
    """``</s> w1 .. wn </s>`` for each sentence, words truncated to the first ``max_len``
    (``start w1 .. wn end`` with the special ids the data was binarized with)."""
    rows = []
    start, end = data.specials.start, data.specials.end
    for words in data.sentences(ids, max_len):
        rows.append(np.concatenate(([start], words, [end])).astype(np.int64))
    return rows


def pad_rows(rows: list[np.ndarray], pad_index: int = PAD_INDEX) -> tuple[Tensor, Tensor]:
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    out = torch.full((len(rows), int(lengths.max())), pad_index, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.from_numpy(r)
    return out, lengths


def concat_pair(
    src_rows: list[np.ndarray], tgt_rows: list[np.ndarray], src_lang: int, tgt_lang: int, pad_index: int = PAD_INDEX
) -> Batch:
    """TLM input: ``[</s> src </s>][</s> tgt </s>]`` per row, positions restarting at 0 on the
    target side, each side with its own language id, padded at the end."""
    rows, langs, positions = [], [], []
    for s, t in zip(src_rows, tgt_rows):
        rows.append(np.concatenate((s, t)))
        langs.append(np.concatenate((np.full(len(s), src_lang), np.full(len(t), tgt_lang))))
        positions.append(np.concatenate((np.arange(len(s)), np.arange(len(t)))))
    tokens, lengths = pad_rows(rows, pad_index)
    lang_t, _ = pad_rows([x.astype(np.int64) for x in langs], pad_index=src_lang)
    pos_t, _ = pad_rows([x.astype(np.int64) for x in positions], pad_index=0)
    return Batch(tokens=tokens, lengths=lengths, langs=lang_t, positions=pos_t)


def pair_lengths(data: ParallelData, ids: np.ndarray, max_len: int) -> np.ndarray:
    """TLM row length ``[</s> src </s>][</s> tgt </s>]`` of pairs ``ids``, each side cut to
    ``max_len`` words; reads only those pairs' rows of the indexes."""
    return np.minimum(data.src.row_lengths(ids), max_len) + np.minimum(data.tgt.row_lengths(ids), max_len) + 4


def within_length(data: ParallelData, ids: np.ndarray, max_len: int) -> np.ndarray:
    """Which pairs ``ids`` have at most ``max_len`` words on both sides (boolean mask)."""
    return (data.src.row_lengths(ids) <= max_len) & (data.tgt.row_lengths(ids) <= max_len)


class PairBatcher:
    """Batches of parallel pairs, built one window at a time so that memory is O(``group``)
    whatever the number of pairs.

    Pairs with more than ``max_len`` words on either side are never served: as in the
    original XLM, an over-long training pair is dropped rather than cut (cutting each side on
    its own leaves two sentences that no longer translate each other). They are skipped window
    by window, so no per-pair array is kept (:meth:`ParallelData.count_longer` counts them).

    Guarantees: rank ``r`` of ``W`` owns pairs ``r, r+W, r+2W, ...`` (ranks are disjoint and
    cover every pair); each epoch visits every kept pair of the rank exactly once. An epoch lists
    the rank's pairs in a keyed pseudo-random order (:class:`KeyedPermutation`) and cuts that
    order into windows of ``group`` pairs; each window is sorted by length (little padding),
    cut into batches of at most ``max_tokens`` padded tokens (and ``max_rows`` rows; an
    over-long pair is a batch of its own), and its batches are served in shuffled order.
    Everything is deterministic given ``(seed, epoch, rank)``; the state ``{epoch, window,
    pos}`` resumes at exactly the next batch."""

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
        self.world, self.group, self.max_rows = world, group, max_rows
        self.n_pairs = len(range(rank, len(data), world))  # this rank's share
        self.n_windows = -(-self.n_pairs // group)
        self.epoch, self.window, self.pos = 0, 0, 0
        self._start_window()

    def _start_window(self, new_epoch: bool = True) -> None:
        if new_epoch:
            self._order = KeyedPermutation(self.n_pairs, _rank_rng(self.seed, self.epoch, self.rank))
        self._batches = self._window_batches()

    def _window_batches(self) -> list[np.ndarray]:
        """The batches (pair ids) of window ``self.window`` of epoch ``self.epoch``, in serving order."""
        start = self.window * self.group
        local = self._order(np.arange(start, min(start + self.group, self.n_pairs)))
        ids = self.rank + local * self.world
        ids = ids[within_length(self.data, ids, self.max_len)]
        lengths = pair_lengths(self.data, ids, self.max_len)
        order = np.argsort(lengths, kind="stable")  # ties keep the (random) permuted order
        batches = token_budget_batches(lengths, order, self.max_tokens, self.max_rows)
        shuffle = np.random.default_rng([self.seed, self.epoch, self.rank, self.window]).permutation(len(batches))
        return [ids[batches[i]] for i in shuffle]

    def next_ids(self) -> np.ndarray:
        """Pair ids of the next batch (moving to the next window / epoch when needed)."""
        empty = 0  # windows in a row without a kept pair
        while self.pos >= len(self._batches):
            empty += 1
            if empty > self.n_windows:
                raise DataError(
                    f"{self.data.src.prefix}: every pair of process {self.rank} has a side longer than "
                    f"max_len={self.max_len} words (over-long pairs are dropped): raise max_len"
                )
            self.window, self.pos = self.window + 1, 0
            new_epoch = self.window >= self.n_windows
            if new_epoch:
                self.epoch, self.window = self.epoch + 1, 0
            self._start_window(new_epoch)
        ids = self._batches[self.pos]
        self.pos += 1
        return ids

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "window": self.window, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.window, self.pos = int(state["epoch"]), int(state["window"]), int(state["pos"])
        self._start_window()


def dropped_report(name: str, data: ParallelData, max_len: int) -> str:
    """One start-up line: how many training pairs of ``data`` (named ``name``) :class:`PairBatcher`
    drops for having a side longer than ``max_len`` words. A monolingual file paired with
    itself (denoising, back-translation) is reported in sentences."""
    what = "sentences" if data.src is data.tgt else "pairs"
    return (
        f"{name}: {data.count_longer(max_len):,} of {len(data):,} training {what} longer than {max_len} tokens dropped"
    )
