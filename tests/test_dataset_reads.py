"""MonolingualData's positional reads: equal to memory-mapped slices, a truncated file is an
error naming it, and no file descriptor outlives close() or the object."""

from __future__ import annotations

import gc
import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest

from xlm.data.batching import pair_lengths, sentence_rows
from xlm.data.dataset import MonolingualData, ParallelData, PreparedData
from xlm.errors import DataError

PREFIXES = ["train.en", "train.en-fr.fr"]


def _maps(prefix: Path, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    return np.memmap(f"{prefix}.bin", dtype=dtype, mode="r"), np.load(f"{prefix}.idx.npy", mmap_mode="r")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")


@pytest.mark.parametrize("name", PREFIXES)
def test_preads_equal_memmap_slices(tiny_data: Path, name: str) -> None:
    data = MonolingualData.open(tiny_data / name)
    tokens, bounds = _maps(tiny_data / name, data.tokens.dtype)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(data), size=500)
    for i in ids[:100]:
        s = data.sentence(int(i))
        assert s.dtype == tokens.dtype and np.array_equal(s, tokens[bounds[i, 0] : bounds[i, 1]])
    assert np.array_equal(data.sentence(-1), tokens[bounds[-1, 0] : bounds[-1, 1]])
    for start in rng.integers(0, len(tokens), size=50):
        assert np.array_equal(data.stream(int(start), 37), tokens[start : start + 37])  # short at the end too
    for n, cut in ((len(ids), None), (len(ids), 3), (5, 0)):  # dense and sparse ids (gap heuristic)
        for want, got in zip(ids[:n], data.sentences(ids[:n], cut)):
            assert got.dtype == tokens.dtype and np.array_equal(got, tokens[bounds[want, 0] : bounds[want, 1]][:cut])
    assert np.array_equal(data.rows(ids), bounds[ids])
    assert np.array_equal(data.rows(ids[:3]), bounds[ids[:3]])  # sparse: one read per id
    assert np.array_equal(data.rows(np.sort(ids)), bounds[np.sort(ids)])
    assert np.array_equal(data.rows(np.arange(len(data))), bounds)  # dense: a few long reads
    assert data.rows([]).shape == (0, 2)
    assert np.array_equal(data.row_lengths(ids), bounds[ids, 1] - bounds[ids, 0])
    assert np.array_equal(data.lengths, bounds[:, 1] - bounds[:, 0])
    assert np.array_equal(data.tokens, tokens) and np.array_equal(data.bounds, bounds)
    assert len(data) == len(bounds) and data.stream_length == len(tokens)
    with pytest.raises(IndexError):
        data.rows([len(data)])
    data.close()


@pytest.mark.parametrize("gap", [0, 3, 1000])
def test_rows_any_run_length(tiny_data: Path, gap: int) -> None:
    data = MonolingualData.open(tiny_data / "train.en")
    data.ROW_GAP = gap
    bounds = np.load(tiny_data / "train.en.idx.npy")
    ids = np.random.default_rng(gap).integers(0, len(data), size=300)
    assert np.array_equal(data.rows(ids), bounds[ids])


def test_batching_call_sites_match_in_memory_copy(tiny_data: Path) -> None:
    """pair_lengths / sentence_rows give the same on a file-backed pair as on in-memory arrays."""
    prepared = PreparedData.open(tiny_data)
    para = prepared.para("train", "en", "fr")

    def in_memory(d: MonolingualData) -> MonolingualData:
        return MonolingualData(d.prefix, np.array(d.tokens), np.array(d.bounds), d.meta)

    copy = ParallelData(in_memory(para.src), in_memory(para.tgt))
    ids = np.random.default_rng(1).integers(0, len(para), size=64)
    assert np.array_equal(pair_lengths(para, ids, 7), pair_lengths(copy, ids, 7))
    for a, b in zip(sentence_rows(para.tgt, ids, 5), sentence_rows(copy.tgt, ids, 5)):
        assert a.dtype == np.int64 and np.array_equal(a, b)
    para.close()


def test_concurrent_reads(tiny_data: Path) -> None:
    data = MonolingualData.open(tiny_data / "train.en")
    expected = [np.array(data.sentence(i)) for i in range(len(data))]
    data.close()  # the threads race to reopen
    errors: list[int] = []

    def work() -> None:
        for i in range(len(data)):
            if not np.array_equal(data.sentence(i), expected[i]):
                errors.append(i)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_truncated_file_is_an_error_naming_it(tiny_data: Path, tmp_path: Path) -> None:
    for f in tiny_data.glob("train.en.*"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    data = MonolingualData.open(tmp_path / "train.en")
    last = len(data) - 1
    data.sentence(last)  # opens the files
    bin_path = tmp_path / "train.en.bin"
    os.truncate(bin_path, bin_path.stat().st_size // 2)
    with pytest.raises(DataError, match="train.en.bin.*truncated"):
        data.sentence(last)
    with pytest.raises(DataError, match="train.en.bin.*truncated"):
        data.stream(data.stream_length - 10, 10)
    with pytest.raises(DataError, match="train.en.bin.*truncated"):
        data.sentences([0, last])
    idx_path = tmp_path / "train.en.idx.npy"
    os.truncate(idx_path, idx_path.stat().st_size - 8)
    with pytest.raises(DataError, match="train.en.idx.npy.*truncated"):
        data.rows([0, last])
    with pytest.raises(DataError, match="train.en.idx.npy.*truncated"):
        data.lengths
    data.close()


def test_removed_file_is_an_error_naming_it(tiny_data: Path, tmp_path: Path) -> None:
    for f in tiny_data.glob("train.en.*"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    data = MonolingualData.open(tmp_path / "train.en")
    (tmp_path / "train.en.bin").unlink()  # before the lazy open
    with pytest.raises(DataError, match="train.en.bin"):
        data.sentence(0)


@needs_proc
def test_no_descriptor_leak(tiny_data: Path) -> None:
    gc.collect()
    before = _open_fds()
    data = MonolingualData.open(tiny_data / "train.en")
    assert _open_fds() == before  # opened on first read only
    data.sentence(0), data.rows([1, 2])
    assert _open_fds() == before + 2
    data.close()
    assert _open_fds() == before
    data.close()  # twice is harmless
    assert data.sentence(0).size > 0  # reopens
    assert _open_fds() == before + 2
    del data
    gc.collect()
    assert _open_fds() == before  # the finalizer closed them

    with ParallelData.open(tiny_data / "train.en-fr.en", tiny_data / "train.en-fr.fr") as para:
        pair_lengths(para, np.arange(10), 50)
        assert para.src.tokens.size > 0  # a whole-file map holds a descriptor too, dropped by close()
    gc.collect()
    assert _open_fds() == before

    for _ in range(50):  # opened and dropped without close(): nothing accumulates
        MonolingualData.open(tiny_data / "train.en").sentence(0)
    gc.collect()
    assert _open_fds() == before


def test_pickled_copy_reopens(tiny_data: Path) -> None:
    data = MonolingualData.open(tiny_data / "train.en")
    first = np.array(data.sentence(3))
    _ = data.tokens  # a map is not pickled with the object
    copy = pickle.loads(pickle.dumps(data))
    assert copy._tokens is None
    data.close()
    assert np.array_equal(copy.sentence(3), first) and np.array_equal(copy.rows([3]), data.rows([3]))
    copy.close()
    data.close()
