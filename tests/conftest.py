"""Shared fixtures: a tiny synthetic prepared corpus in the binarized format, small enough
that models train on it in seconds, and the helpers that build runs on it.

Tests take these as fixtures (listed at the end of this file), never by importing this
module. The plain functions are the fixtures' implementation; they keep their names so that
a test file written before the fixtures existed (``from conftest import ...``) still runs."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from xlm.data.dataset import FORMAT_NAME, FORMAT_VERSION, PREPARE_FILE, token_dtype
from xlm.text.vocab import EOS_INDEX, MERGES_FILE, SPECIAL_TOKENS, VOCAB_FILE, vocab_hash

LANGS = ("en", "fr")
N_WORDS = 40  # words per language


def _write_binarized(prefix: Path, sentences: list[list[int]], lang: str, vhash: str, vocab_size: int) -> None:
    dtype = token_dtype(vocab_size)
    stream = [EOS_INDEX]
    bounds = []
    for s in sentences:
        bounds.append((len(stream), len(stream) + len(s)))
        stream.extend(s)
        stream.append(EOS_INDEX)
    np.asarray(stream, dtype=dtype).tofile(f"{prefix}.bin")
    np.save(f"{prefix}.idx.npy", np.asarray(bounds, dtype=np.int64).reshape(-1, 2))
    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "vocab_hash": vhash,
        "lang": lang,
        "dtype": dtype.name,
        "n_sentences": len(sentences),
        "n_tokens": sum(len(s) for s in sentences),
        "n_unk": 0,
    }
    Path(f"{prefix}.json").write_text(json.dumps(meta))


def make_tiny_prepared(root: Path, n_train: int = 300, n_valid: int = 40, seed: int = 0) -> Path:
    """Two synthetic languages whose word i translates to word i: 'en' words e0..e39,
    'fr' words f0..f39. Sentences follow a simple bigram rule so that LMs can learn them."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    tokens = list(SPECIAL_TOKENS)
    for lang in LANGS:
        tokens += [f"{lang[0]}{i}</w>" for i in range(N_WORDS)]
    (root / VOCAB_FILE).write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (root / MERGES_FILE).write_text("")
    vhash = vocab_hash(root / VOCAB_FILE, root / MERGES_FILE)
    base = {lang: len(SPECIAL_TOKENS) + k * N_WORDS for k, lang in enumerate(LANGS)}

    def sentence() -> list[int]:
        n = int(rng.integers(4, 12))
        w = [int(rng.integers(N_WORDS))]
        for _ in range(n - 1):
            w.append((w[-1] * 7 + 3) % N_WORDS if rng.random() < 0.8 else int(rng.integers(N_WORDS)))
        return w

    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_valid)):
        words = [sentence() for _ in range(n)]
        for lang in LANGS:
            ids = [[base[lang] + w for w in s] for s in words]
            _write_binarized(root / f"{split}.{lang}", ids, lang, vhash, len(tokens))
            _write_binarized(root / f"{split}.en-fr.{lang}", ids, lang, vhash, len(tokens))
    (root / PREPARE_FILE).write_text(json.dumps({"languages": list(LANGS), "lowercase_and_remove_accent": False}))
    return root


def with_bpe_merges(src: Path, dst: Path) -> Path:
    """A copy of the tiny corpus whose vocabulary also holds the BPE pieces and merges that
    spell its words ('e12' = e + 1 + 2</w>), so that raw text can be encoded."""
    shutil.copytree(src, dst)
    vocab = json.loads((dst / VOCAB_FILE).read_text())
    pieces = ["e", "f"] + [str(d) for d in range(10)] + [f"{d}</w>" for d in range(10)]
    pieces += [f"{n}</w>" for n in range(10, N_WORDS)]
    for p in pieces:
        vocab.setdefault(p, len(vocab))
    merges = [f"{n // 10} {n % 10}</w>" for n in range(10, N_WORDS)]
    merges += [f"{c} {n}</w>" for c in "ef" for n in range(N_WORDS)]
    (dst / VOCAB_FILE).write_text(json.dumps(vocab))
    (dst / MERGES_FILE).write_text("\n".join(merges) + "\n")
    new_hash = vocab_hash(dst / VOCAB_FILE, dst / MERGES_FILE)
    for meta_path in dst.glob("*.json"):
        meta = json.loads(meta_path.read_text())
        if "vocab_hash" in meta:
            meta["vocab_hash"] = new_hash
            meta_path.write_text(json.dumps(meta))
    return dst


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return make_tiny_prepared(tmp_path_factory.mktemp("tiny") / "data")


def tiny_config_overrides(data: Path, out: Path, steps: int = 6) -> list[str]:
    return [
        f'data.path="{data}"',
        "data.bptt=32",
        "data.batch_size=4",
        "data.tlm_max_tokens=256",
        "data.max_len=30",
        "model.emb_dim=32",
        "model.n_layers=2",
        "model.n_heads=2",
        "model.max_positions=64",
        'objectives.mlm=["en","fr","en-fr"]',
        f"train.max_steps={steps}",
        f'train.out_dir="{out}"',
        "train.eval_every=0",
        "train.save_every=3",
        "train.log_every=1",
        "train.progress=false",
        "train.eval_at_start=false",
        "eval.max_rows=4",
        "eval.max_pairs=16",
        "optim.warmup_steps=2",
        "optim.lr=0.001",
    ]


def train_losses(run: Path) -> dict[int, dict[str, float]]:
    """Step -> logged training losses, from a run's metrics.jsonl."""
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["type"] == "train":
            out[rec["step"]] = {k: v for k, v in rec.items() if k.startswith("loss/")}
    return out


# ----------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class TinyCorpus:
    """What ``make_tiny_prepared`` writes: languages, words per language, and the token id of
    word ``w`` of a language (``en`` words follow the special tokens, then ``fr`` words)."""

    langs: tuple[str, ...] = LANGS
    n_words: int = N_WORDS

    def word_id(self, lang: str, w: int) -> int:
        return len(SPECIAL_TOKENS) + self.langs.index(lang) * self.n_words + w


@pytest.fixture(scope="session")
def tiny_corpus() -> TinyCorpus:
    return TinyCorpus()


@pytest.fixture(scope="session", name="make_tiny_prepared")
def _make_tiny_prepared_fixture():
    """Factory: ``make_tiny_prepared(root, n_train=300, n_valid=40, seed=0)`` writes a tiny corpus."""
    return make_tiny_prepared


@pytest.fixture(scope="session", name="with_bpe_merges")
def _with_bpe_merges_fixture():
    """Factory: ``with_bpe_merges(src, dst)`` copies a tiny corpus with BPE merges that spell its words."""
    return with_bpe_merges


@pytest.fixture(scope="session")
def write_binarized():
    """Factory: ``write_binarized(prefix, sentences, lang, vocab_hash, vocab_size)`` writes one split."""
    return _write_binarized


@pytest.fixture(scope="session", name="tiny_config_overrides")
def _tiny_config_overrides_fixture():
    """Factory: ``tiny_config_overrides(data, out, steps=6)``, the key=value overrides of a tiny run."""
    return tiny_config_overrides


@pytest.fixture(scope="session", name="train_losses")
def _train_losses_fixture():
    """Factory: ``train_losses(run)``, step -> logged training losses of a run."""
    return train_losses


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module's tests: tiny models run fastest on one thread (and far
    faster on a busy shared CPU). Use as ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def restore_threads() -> Iterator[None]:
    """Puts torch's thread count back after a test (``train.threads=1`` sets the global count)."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
