"""Shared fixtures: a tiny synthetic prepared corpus in the binarized format, small enough
that models train on it in seconds, and the helpers that build runs on it.

Tests take these as fixtures, never by importing this module: a helper is a fixture that
returns a function (a factory) where a test needs to call it with its own arguments."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from xlm.cli import main
from xlm.config import load_config
from xlm.data.dataset import FORMAT_NAME, FORMAT_VERSION, PREPARE_FILE, token_dtype
from xlm.tasks.pretraining import PretrainConfig, run_training
from xlm.text.vocab import EOS_INDEX, MERGES_FILE, SPECIAL_TOKENS, VOCAB_FILE, vocab_hash

LANGS = ("en", "fr")
N_WORDS = 40  # words per language


@pytest.fixture(scope="session")
def write_binarized():
    """Factory: ``write_binarized(prefix, sentences, lang, vocab_hash, vocab_size)`` writes one
    split of one language (``prefix.bin``, ``prefix.idx.npy``, ``prefix.json``)."""

    def write(prefix: Path, sentences: list[list[int]], lang: str, vhash: str, vocab_size: int) -> None:
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

    return write


@pytest.fixture(scope="session")
def make_tiny_prepared(write_binarized):
    """Factory: ``make_tiny_prepared(root, n_train=300, n_valid=40, seed=0)`` writes a tiny
    prepared corpus: two synthetic languages whose word i translates to word i ('en' words
    e0..e39, 'fr' words f0..f39), sentences following a simple bigram rule so that LMs can
    learn them."""

    def make(root: Path, n_train: int = 300, n_valid: int = 40, seed: int = 0) -> Path:
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
                write_binarized(root / f"{split}.{lang}", ids, lang, vhash, len(tokens))
                write_binarized(root / f"{split}.en-fr.{lang}", ids, lang, vhash, len(tokens))
        (root / PREPARE_FILE).write_text(json.dumps({"languages": list(LANGS), "lowercase_and_remove_accent": False}))
        return root

    return make


@pytest.fixture(scope="session")
def with_bpe_merges():
    """Factory: ``with_bpe_merges(src, dst)``: a copy of a tiny corpus whose vocabulary also
    holds the BPE pieces and merges that spell its words ('e12' = e + 1 + 2</w>), so that raw
    text can be encoded."""

    def copy(src: Path, dst: Path) -> Path:
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

    return copy


@pytest.fixture(scope="session")
def tiny_data(make_tiny_prepared, tmp_path_factory) -> Path:
    return make_tiny_prepared(tmp_path_factory.mktemp("tiny") / "data")


def _tiny_model_and_run(out: Path, steps: int) -> list[str]:
    """The overrides every tiny training run shares: a 2-layer 32-dim model, ``steps`` steps
    into ``out``, a checkpoint every 3 steps, no evaluation, quiet."""
    return [
        "model.emb_dim=32",
        "model.n_layers=2",
        "model.n_heads=2",
        "model.max_positions=64",
        f"train.max_steps={steps}",
        f'train.out_dir="{out}"',
        "train.eval_every=0",
        "train.save_every=3",
        "train.log_every=1",
        "train.progress=false",
        "train.eval_at_start=false",
    ]


@pytest.fixture(scope="session")
def tiny_config_overrides():
    """Factory: ``tiny_config_overrides(data, out, steps=6)``, the key=value overrides of a
    tiny MLM + TLM pretraining run."""

    def overrides(data: Path, out: Path, steps: int = 6) -> list[str]:
        return [
            f'data.path="{data}"',
            "data.bptt=32",
            "data.batch_size=4",
            "data.tlm_max_tokens=256",
            "data.max_len=30",
            'objectives.mlm=["en","fr","en-fr"]',
            *_tiny_model_and_run(out, steps),
            "eval.max_rows=4",
            "eval.max_pairs=16",
            "optim.warmup_steps=2",
            "optim.lr=0.001",
        ]

    return overrides


@pytest.fixture(scope="session")
def pretrain_config(tiny_config_overrides):
    """Factory: ``pretrain_config(data, out, steps, *extra)``, the PretrainConfig of a tiny run
    with ``extra`` overrides."""

    def config(data: Path, out: Path, steps: int, *extra: str) -> PretrainConfig:
        return load_config(PretrainConfig, None, [*tiny_config_overrides(data, out, steps), *extra])

    return config


@pytest.fixture(scope="session")
def mt_overrides():
    """Factory: ``mt_overrides(data, out, extra=(), steps=6)``, the key=value overrides of a
    tiny translation run (``extra`` last: it overrides the others)."""

    def overrides(data: Path, out: Path, extra=(), steps: int = 6) -> list[str]:
        return [
            f'data.path="{data}"',
            "data.max_tokens=300",
            "data.max_len=30",
            *_tiny_model_and_run(out, steps),
            'eval.splits=["valid"]',
            "eval.max_sentences=8",
            "optim.warmup_steps=2",
            "optim.lr=0.001",
            *extra,
        ]

    return overrides


@pytest.fixture(scope="session")
def train_losses():
    """Factory: ``train_losses(run)``, step -> logged training losses, from a run's metrics.jsonl."""

    def losses(run: Path) -> dict[int, dict[str, float]]:
        out = {}
        for line in (run / "metrics.jsonl").read_text().splitlines():
            rec = json.loads(line)
            if rec["type"] == "train":
                out[rec["step"]] = {k: v for k, v in rec.items() if k.startswith("loss/")}
        return out

    return losses


@dataclass(frozen=True)
class ResumedRuns:
    """The same run trained in one go (``straight``) and in two halves with a resume between
    (``split``), with each run's logged training losses (step -> losses)."""

    straight: Path
    split: Path
    straight_losses: dict[int, dict[str, float]]
    split_losses: dict[int, dict[str, float]]

    def same_tensors(self, name: str) -> bool:
        """Whether the safetensors file ``name`` (relative to the run folders) holds the same
        names and values in both runs."""
        a, b = load_file(str(self.straight / name)), load_file(str(self.split / name))
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def straight_and_resumed(tmp_path, train_losses):
    """Factory: ``straight_and_resumed(config, steps, train=run_training)`` trains
    ``train(config(out, steps))`` in one go and as ``steps // 2`` steps then a resume to
    ``steps``, in ``tmp_path/straight`` and ``tmp_path/split``: a :class:`ResumedRuns`."""

    def both(config: Callable[[Path, int], object], steps: int, train: Callable = run_training) -> ResumedRuns:
        straight, split = tmp_path / "straight", tmp_path / "split"
        train(config(straight, steps))
        train(config(split, steps // 2))
        train(config(split, steps), resume="latest")
        return ResumedRuns(straight, split, train_losses(straight), train_losses(split))

    return both


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


@dataclass(frozen=True)
class MemorisedPairs:
    """Four English-French pairs of raw text that a tiny translation model learns by heart:
    ``train`` prepares them and trains on them, ``translate`` runs ``xlm translate`` on the
    first and third English sentences around an empty line, ``expected`` is its output."""

    mt_overrides: Callable[..., list[str]]
    en: tuple[str, ...] = (
        "The cat sat on the mat.",
        "Mr. Smith's dog barked!",
        "It rains in London, doesn't it?",
        "A small test.",
    )
    fr: tuple[str, ...] = (
        "Le chat est sur le tapis.",
        "Le chien de M. Smith aboie !",
        "Il pleut à Londres, n'est-ce pas ?",
        "Un petit test.",
    )

    @property
    def expected(self) -> list[str]:
        return [self.fr[0], "", self.fr[2], ""]

    def write_raw(self, raw: Path) -> Path:
        """A raw corpus: the pairs 20 times in train, once in valid and test, as monolingual and parallel files."""
        raw.mkdir()
        for split in ("train", "valid", "test"):
            for lang, lines in (("en", self.en), ("fr", self.fr)):
                (raw / f"{split}.{lang}").write_text("\n".join(lines * (20 if split == "train" else 1)) + "\n")
                (raw / f"{split}.en-fr.{lang}").write_text("\n".join(lines) + "\n")
        return raw

    def train(self, tmp: Path, *prepare_options: str) -> Path:
        """Raw text -> ``xlm prepare`` (with ``prepare_options``) -> ``xlm train-mt`` (80 steps): the run folder."""
        data, run = tmp / "data", tmp / "run"
        assert main(["prepare", str(self.write_raw(tmp / "raw")), str(data), "--workers", "1", *prepare_options]) == 0
        extra = ['objectives.mt=["en-fr"]', "model.dropout=0.0", "optim.lr=0.003", "optim.warmup_steps=10"]
        assert main(["train-mt", *self.mt_overrides(data, run, [*extra, "train.save_every=0"], steps=80)]) == 0
        return run

    def translate(self, checkpoint: Path, tmp: Path, *options: str) -> Path:
        """``xlm translate --beam 2`` from English to French: the output file."""
        source, output = tmp / "in.en", tmp / "out.fr"
        source.write_text("\n".join([self.en[0], "", self.en[2]]) + "\n")
        args = ["--src", "en", "--tgt", "fr", "--input", str(source), "--output", str(output), "--beam", "2"]
        assert main(["translate", str(checkpoint), *args, *options]) == 0
        return output


@pytest.fixture(scope="session")
def memorised_pairs(mt_overrides) -> MemorisedPairs:
    return MemorisedPairs(mt_overrides)


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
