"""PairBatcher and the keyed permutations behind the samplers: coverage, sharding, budget,
padding, determinism, exact resume, and memory that does not grow with the corpus."""

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from xlm.data.batching import KeyedPermutation, PairBatcher, StreamSampler, dropped_report, pair_lengths
from xlm.data.dataset import MonolingualData, ParallelData
from xlm.errors import DataError

MAX_TOKENS, MAX_LEN = 1024, 100


def fake_side(lengths: np.ndarray) -> MonolingualData:
    """A binarized file held in memory: only ``bounds`` matters for batching."""
    starts = 1 + np.concatenate(([0], np.cumsum(lengths[:-1] + 1)))
    bounds = np.stack([starts, starts + lengths], axis=1).astype(np.int64)
    tokens = np.zeros(int(bounds[-1, 1]) + 1, dtype=np.uint16)
    return MonolingualData(Path("fake"), tokens, bounds, {"lang": "xx", "n_tokens": int(lengths.sum())})


def fake_pairs(n: int, seed: int = 0, longest: int = MAX_LEN) -> ParallelData:
    """``n`` pairs of up to ``longest`` words a side (above MAX_LEN: some are dropped)."""
    rng = np.random.default_rng(seed)
    src = rng.integers(1, longest - 4, size=n)
    tgt = np.clip(src + rng.integers(-5, 6, size=n), 1, longest)
    return ParallelData(fake_side(src), fake_side(tgt))


def epochs(b: PairBatcher, n: int = 1) -> list[list[np.ndarray]]:
    """The batches of the first ``n`` epochs of a fresh batcher, epoch by epoch."""
    out: list[list[np.ndarray]] = [[]]
    while True:
        ids = b.next_ids()
        if b.epoch == len(out):
            if len(out) == n:
                return out
            out.append([])
        out[b.epoch].append(ids)


def epoch_batches(b: PairBatcher) -> list[np.ndarray]:
    return epochs(b)[0]


@pytest.mark.parametrize("n", [1, 2, 5, 4096, 4097, 10_007])
def test_keyed_permutation_is_a_bijection(n):
    p = KeyedPermutation(n, np.random.default_rng(n))
    image = p(np.arange(n))
    assert image.dtype == np.int64 and np.array_equal(np.sort(image), np.arange(n))
    if n > 100:  # not the identity nor a shift: looks shuffled
        assert abs(np.corrcoef(np.arange(n), image)[0, 1]) < 0.1
    assert np.array_equal(p(np.arange(n)[::-1]), image[::-1])  # pointwise: any subset, any order


def test_every_pair_of_a_rank_once_per_epoch_ranks_disjoint_and_covering():
    data, world = fake_pairs(10_007), 3
    seen = []
    for rank in range(world):
        b = PairBatcher(data, MAX_TOKENS, MAX_LEN, seed=5, rank=rank, world=world, group=512)
        for epoch, batches in enumerate(epochs(b, 2)):
            ids = np.concatenate(batches)
            assert len(ids) == len(np.unique(ids)) == len(range(rank, len(data), world)), f"epoch {epoch}"
            assert (ids % world == rank).all()
        seen.append(ids)
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(len(data)))


def test_token_budget_respected_and_padding_small():
    data = fake_pairs(20_000, seed=1)
    b = PairBatcher(data, MAX_TOKENS, MAX_LEN, seed=0)
    padded = real = 0
    for ids in epoch_batches(b):
        lengths = pair_lengths(data, ids, MAX_LEN)
        assert lengths.max() * len(ids) <= MAX_TOKENS or len(ids) == 1
        padded += int(lengths.max()) * len(ids)
        real += int(lengths.sum())
    assert 1 - real / padded < 0.03, f"padding waste {1 - real / padded:.3f}"


def test_max_rows_and_over_long_pairs():
    data = fake_pairs(3000, seed=2)
    b = PairBatcher(data, 10**6, MAX_LEN, seed=0, max_rows=7)
    assert max(len(ids) for ids in epoch_batches(b)) == 7
    b = PairBatcher(data, 50, MAX_LEN, seed=0)  # budget below most pairs: one pair per batch, none lost
    batches = epoch_batches(b)
    assert sum(len(ids) for ids in batches) == len(data) and all(
        len(ids) == 1 or pair_lengths(data, ids, MAX_LEN).max() * len(ids) <= 50 for ids in batches
    )


def test_deterministic_and_epochs_differ():
    data = fake_pairs(5000, seed=3)
    a, b = (PairBatcher(data, MAX_TOKENS, MAX_LEN, seed=9, group=1024) for _ in range(2))
    first, second = ([ids.tolist() for ids in e] for e in epochs(a, 2))
    assert first == [ids.tolist() for ids in epoch_batches(b)]
    assert first != second and sorted(sum(first, [])) == sorted(sum(second, []))
    assert first[0] != [ids.tolist() for ids in epoch_batches(PairBatcher(data, MAX_TOKENS, MAX_LEN, seed=10))][0]


def test_batch_order_is_shuffled_within_windows():
    data = fake_pairs(4096, seed=4)
    longest = [
        int(pair_lengths(data, ids, MAX_LEN).max()) for ids in epoch_batches(PairBatcher(data, MAX_TOKENS, MAX_LEN))
    ]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)


@pytest.mark.parametrize("skip", [0, 1, 17, 40, 190])  # from the start, mid-window, across the epoch end (193 batches)
def test_exact_resume(skip):
    data = fake_pairs(3000, seed=5)

    def make():
        return PairBatcher(data, MAX_TOKENS, MAX_LEN, seed=1, rank=1, world=2, group=256)

    ref = make()
    expected = [ref.next_ids().tolist() for _ in range(skip + 60)]
    run = make()
    for _ in range(skip):
        run.next_ids()
    state = json.loads(json.dumps(run.state_dict()))  # survives a JSON round trip
    assert set(state) == {"epoch", "window", "pos"}
    resumed = make()
    resumed.load_state_dict(state)
    assert [resumed.next_ids().tolist() for _ in range(60)] == expected[skip:]
    assert ref.epoch >= 1 or skip < 190  # the longest case does cross an epoch boundary


def test_memory_does_not_grow_with_the_number_of_pairs():
    def peak(n: int) -> int:
        data = fake_pairs(n, seed=7)
        tracemalloc.start()
        b = PairBatcher(data, MAX_TOKENS, MAX_LEN, seed=0)
        for _ in range(300):
            b.next_ids()
        result = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return result

    small, big = peak(20_000), peak(400_000)
    assert big < small * 1.2 + 100_000, (small, big)


def test_stream_sampler_visits_every_chunk_once_and_resumes():
    tokens = np.arange(1 + 128 * 50 + 7, dtype=np.int32)
    data = MonolingualData(Path("fake"), tokens, np.array([[1, len(tokens) - 1]]), {"lang": "xx"})
    s = StreamSampler(data, 0, bptt=16, batch_size=7, seed=3)
    starts = [int(row[0]) for _ in range(s.n_chunks // 7) for row in s.next_batch().tokens]
    assert len(set(starts)) == len(starts) == 399 and all(x % 16 == 0 and x < 400 * 16 for x in starts)
    state = s.state_dict()
    later = [s.next_batch().tokens for _ in range(5)]  # crosses into the next epoch
    assert s.epoch == 1
    s2 = StreamSampler(data, 0, bptt=16, batch_size=7, seed=3)
    s2.load_state_dict(state)
    assert all((a == s2.next_batch().tokens).all() for a in later)


def test_over_long_pairs_are_dropped_not_cut_counted_and_an_all_long_rank_is_an_error():
    data = fake_pairs(5000, longest=130)
    src, tgt = data.src.lengths, data.tgt.lengths
    keep = np.flatnonzero((src <= MAX_LEN) & (tgt <= MAX_LEN))
    assert 0 < len(keep) < len(data)
    assert data.count_longer(MAX_LEN) == data.count_longer(MAX_LEN, chunk=7) == len(data) - len(keep)
    for rank in range(2):  # every epoch serves exactly the rank's kept pairs, each once
        for batches in epochs(PairBatcher(data, MAX_TOKENS, MAX_LEN, seed=3, rank=rank, world=2, group=256), 2):
            assert np.array_equal(np.sort(np.concatenate(batches)), keep[keep % 2 == rank])
    assert dropped_report("en-fr", data, MAX_LEN) == (
        f"en-fr: {len(data) - len(keep):,} of 5,000 training pairs longer than {MAX_LEN} tokens dropped"
    )
    with pytest.raises(DataError, match="max_len=0"):
        PairBatcher(data, MAX_TOKENS, 0).next_ids()  # every pair has a word
