"""Language-centered sentence embeddings (Libovický et al., 2020, "On the Language
Neutrality of Pre-trained Multilingual Representations").

The sentence vectors of a multilingual encoder carry a language-specific component: most
of it is a per-language offset, which subtracting each language's mean sentence vector
removes, leaving vectors that are far more language-neutral (better cross-lingual
retrieval). The means are estimated once per checkpoint on monolingual text, for every
layer ``0 .. n_layers`` (0 = embedding output) and both poolings, and stored in the
checkpoint as ``centering.safetensors``::

    mean.{pooling}.{lang}   float32 (n_layers + 1, emb_dim), one per pooling and language
    metadata                format, version, split, source, dim, n_layers, languages,
                            poolings, counts (sentences per language), as JSON strings

The file is listed in the checkpoint's manifest like every other file (``store_means``
adds it atomically). ``SentenceEncoder`` subtracts the stored mean of the sentence's
language when the file is there; when several layers are averaged, the mean subtracted is
the average of their means.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from xlm.checkpoint_io import MANIFEST, add_file_to_checkpoint, read_json
from xlm.errors import CheckpointError, XLMError
from xlm.evaluation.embeddings import POOLINGS, EmbedOptions, SentenceEncoder, resolve_layers
from xlm.model.precision import Precision
from xlm.model.pretrained import MODEL_JSON, ModelInfo, Pretrained, load_pretrained

CENTERING_FILE = "centering.safetensors"
FORMAT_NAME = "xlm-centering"
FORMAT_VERSION = 1


@dataclass
class LanguageMeans:
    """Mean pooled sentence vector of each language, for every layer and both poolings."""

    means: dict[tuple[str, str], torch.Tensor]  # (pooling, lang) -> (n_layers + 1, dim) float32
    counts: dict[str, int]  # sentences averaged per language
    split: str = ""  # split of the data the means were computed on
    source: str = ""  # where that data came from (e.g. the prepared directory)
    dim: int = 0
    n_layers: int = 0

    @property
    def languages(self) -> list[str]:
        return sorted(self.counts)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            f"mean.{p}.{lang}": t.detach().to("cpu", torch.float32).contiguous() for (p, lang), t in self.means.items()
        }

    def metadata(self) -> dict[str, str]:
        return {
            "format": FORMAT_NAME,
            "version": str(FORMAT_VERSION),
            "split": self.split,
            "source": self.source,
            "dim": str(self.dim),
            "n_layers": str(self.n_layers),
            "languages": json.dumps(self.languages),
            "poolings": json.dumps(list(POOLINGS)),
            "counts": json.dumps(self.counts, sort_keys=True),
        }

    def to_bytes(self) -> bytes:
        """The safetensors file, byte-identical for identical means (its header sorted)."""
        return _sorted_header(save_safetensors(self.tensors(), metadata=self.metadata()))


def _sorted_header(data: bytes) -> bytes:
    """safetensors writes its metadata in hash order: rewrite the JSON header with sorted keys
    (padded with spaces to a multiple of 8 bytes, as safetensors does)."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.dumps(json.loads(data[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode("utf-8")
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data[8 + n :]


# ----------------------------------------------------------------------------- computing


def evenly_spaced(n: int, k: int) -> np.ndarray:
    """``min(k, n)`` distinct indices spread evenly over ``0 .. n-1`` (``k <= 0``: all)."""
    k = n if k <= 0 else min(k, n)
    return (np.arange(k, dtype=np.int64) * n) // max(k, 1)


def compute_language_means(
    pretrained: Pretrained,
    sentences_by_lang: Mapping[str, Sequence[np.ndarray | Sequence[int]]],
    *,
    split: str = "",
    source: str = "",
    max_tokens: int = 8_000,
    precision: Precision = "fp32",
    progress: bool | None = None,
) -> LanguageMeans:
    """Embed the sentences (word ids, no delimiters) of each of the model's languages once,
    with all layers and both poolings, and average them. Every language of the model needs
    at least one sentence."""
    model_langs = list(pretrained.info.lang2id)
    unknown = sorted(set(sentences_by_lang) - set(model_langs))
    if unknown:
        raise XLMError(f"languages {unknown} are not among the model's languages {sorted(model_langs)}")
    missing = sorted(lang for lang in model_langs if not len(sentences_by_lang.get(lang, ())))
    if missing:
        raise XLMError(f"no sentences for the model's language(s) {missing}: every language needs a mean")
    n_layers = len(pretrained.model.layers)
    dim = pretrained.model.cfg.emb_dim
    options = EmbedOptions(max_tokens=max_tokens, progress=progress, precision=precision, center=False)
    layers = list(range(n_layers + 1))
    means: dict[tuple[str, str], torch.Tensor] = {}
    counts: dict[str, int] = {}
    for lang in model_langs:
        sentences = sentences_by_lang[lang]
        encoder = SentenceEncoder(pretrained, lang, options)
        sums = {p: torch.zeros(n_layers + 1, dim, dtype=torch.float64) for p in POOLINGS}
        for _, pooled in encoder.iter_pooled(sentences, layers, POOLINGS):
            for p, vec in pooled.items():
                sums[p] += vec.sum(0).double().cpu()
        for p in POOLINGS:
            means[(p, lang)] = (sums[p] / len(sentences)).float()
        counts[lang] = len(sentences)
    return LanguageMeans(means, counts, split, source, dim, n_layers)


def read_sentences(prepared_dir: str | Path, pretrained: Pretrained, split: str = "train", max_sentences: int = 5_000):
    """``{lang: [word ids]}``: up to ``max_sentences`` evenly spaced sentences (deterministic;
    0: all) of each model language's monolingual ``split`` of an ``xlm prepare`` directory."""
    from xlm.data.dataset import PreparedData

    if max_sentences < 0:
        raise XLMError("max_sentences must be 0 (all) or positive")
    prepared = PreparedData.open(prepared_dir)
    prepared.check_vocabulary(pretrained.vocab, pretrained.directory)
    langs = list(pretrained.info.lang2id)
    missing = [lang for lang in langs if not prepared.has_mono(split, lang)]
    if missing:
        raise XLMError(
            f"{prepared_dir}: no {split} monolingual data for the model's language(s) {missing} "
            f"(expected files {split}.LANG.bin/.idx.npy/.json)"
        )
    out = {}
    for lang in langs:
        with prepared.mono(split, lang) as data:
            ids = evenly_spaced(len(data), max_sentences)
            out[lang] = [np.asarray(s, dtype=np.int64) for s in data.sentences(ids)] if len(ids) else []
    return out


def compute_from_prepared(
    pretrained: Pretrained,
    prepared_dir: str | Path,
    split: str = "train",
    max_sentences: int = 5_000,
    *,
    max_tokens: int = 8_000,
    precision: Precision = "fp32",
    progress: bool | None = None,
) -> LanguageMeans:
    """Language means from the monolingual ``split`` of an ``xlm prepare`` directory: up to
    ``max_sentences`` evenly spaced sentences per language (0: all)."""
    sentences = read_sentences(prepared_dir, pretrained, split, max_sentences)
    return compute_language_means(
        pretrained, sentences, split=split, source=str(prepared_dir), max_tokens=max_tokens,
        precision=precision, progress=progress,
    )  # fmt: skip


# ----------------------------------------------------------------------------- files


def _header_metadata(data: bytes, path: Path) -> dict[str, str]:
    try:
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
        meta = header.get("__metadata__") or {}
    except (struct.error, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        raise CheckpointError(f"{path}: not a safetensors file ({e})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: malformed safetensors metadata")
    return meta


def _json_meta(meta: dict[str, str], key: str, path: Path) -> Any:
    try:
        return json.loads(meta[key])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: metadata {key!r} is missing or not JSON") from None


def means_from_bytes(data: bytes, path: str | Path = CENTERING_FILE) -> LanguageMeans:
    """Parse a ``centering.safetensors`` file (no check against a model)."""
    path = Path(path)
    meta = _header_metadata(data, path)
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: not a centering file (format {meta.get('format')!r})")
    try:
        version, dim, n_layers = int(meta.get("version", "0")), int(meta["dim"]), int(meta["n_layers"])
    except (KeyError, ValueError):
        raise CheckpointError(f"{path}: metadata 'version', 'dim' or 'n_layers' missing or not an integer") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: centering format version {version} is newer than this xlm ({FORMAT_VERSION})")
    langs = _json_meta(meta, "languages", path)
    counts = _json_meta(meta, "counts", path)
    try:
        tensors = load_safetensors(data)
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a damaged file
        raise CheckpointError(f"{path}: cannot read tensors: {e}") from None
    means: dict[tuple[str, str], torch.Tensor] = {}
    for p in POOLINGS:
        for lang in langs:
            name = f"mean.{p}.{lang}"
            if name not in tensors:
                raise CheckpointError(f"{path}: tensor {name!r} is missing")
            means[(p, lang)] = tensors[name].float()
    counts = {str(k): int(v) for k, v in counts.items()}
    return LanguageMeans(means, counts, meta.get("split", ""), meta.get("source", ""), dim, n_layers)


def check_means(means: LanguageMeans, info: ModelInfo, path: str | Path) -> None:
    """One-line ``CheckpointError`` naming ``path`` unless ``means`` fit the model: the same
    languages, ``emb_dim`` and ``n_layers``, and finite ``(n_layers + 1, emb_dim)`` tensors."""
    model_langs, langs = sorted(info.lang2id), sorted({lang for _, lang in means.means} | set(means.counts))
    if langs != model_langs:
        raise CheckpointError(f"{path}: language means are for {langs} but the model's languages are {model_langs}")
    dim, n_layers = info.config.emb_dim, info.config.n_layers
    if means.dim != dim:
        raise CheckpointError(f"{path}: language means have dimension {means.dim} but the model's emb_dim is {dim}")
    if means.n_layers != n_layers:
        raise CheckpointError(f"{path}: language means are for {means.n_layers} layers but the model has {n_layers}")
    for (p, lang), t in sorted(means.means.items()):
        if tuple(t.shape) != (n_layers + 1, dim):
            raise CheckpointError(
                f"{path}: mean.{p}.{lang} has shape {tuple(t.shape)}, expected {(n_layers + 1, dim)} "
                f"(embeddings + {n_layers} layers, emb_dim {dim})"
            )
        if not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{path}: mean.{p}.{lang} holds non-finite values")
    for p in POOLINGS:
        for lang in model_langs:
            if (p, lang) not in means.means:
                raise CheckpointError(f"{path}: no {p}-pooling mean for {lang}")


def load_means(path: str | Path, info: ModelInfo | None = None) -> LanguageMeans:
    """Read a centering file, checked against the model ``info`` when given."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    means = means_from_bytes(data, path)
    if info is not None:
        check_means(means, info, path)
    return means


def _verified_bytes(path: Path) -> bytes:
    """The file's bytes, which must match the checkpoint manifest's entry for it."""
    manifest = read_json(path.parent / MANIFEST)
    entry = manifest.get("files", {}).get(path.name) if isinstance(manifest, dict) else None
    if entry is None:
        raise CheckpointError(
            f"{path}: not listed in {path.parent / MANIFEST} (write it with `xlm center`, or delete it)"
        )
    data = path.read_bytes()
    if len(data) != entry.get("bytes") or hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        raise CheckpointError(f"{path}: checksum mismatch (the file was altered or corrupted)")
    return data


def stored_means(pretrained: Pretrained) -> LanguageMeans | None:
    """The checkpoint's stored language means (``None`` without a centering file), read,
    verified against the manifest and checked against the model once; re-read only when
    the file changes."""
    path = Path(pretrained.directory) / CENTERING_FILE
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    hit = pretrained.cache.get("centering")
    if hit is not None and hit[0] == key:
        return hit[1]
    means = means_from_bytes(_verified_bytes(path), path)
    check_means(means, pretrained.info, path)
    pretrained.cache["centering"] = (key, means)
    return means


def store_means(checkpoint_dir: str | Path, means: LanguageMeans) -> Path:
    """Write ``means`` as ``centering.safetensors`` into an existing checkpoint and list it in
    the manifest, atomically (the checkpoint is verified first; on failure it is unchanged)."""
    d = Path(checkpoint_dir)
    path = d / CENTERING_FILE
    info = ModelInfo.from_json(read_json(d / MODEL_JSON))
    check_means(means, info, path)
    return add_file_to_checkpoint(d, CENTERING_FILE, means.to_bytes())


def mean_for(means: LanguageMeans, lang: str, pooling: str, layers: Sequence[int]) -> np.ndarray:
    """The ``(D,)`` float32 vector to subtract from ``lang``'s vectors pooled with ``pooling``
    over ``layers`` (negative numbers count from the end): the average of the layers' means."""
    if (pooling, lang) not in means.means:
        raise XLMError(f"no stored {pooling}-pooling mean for language {lang!r} (have {means.languages})")
    idx = resolve_layers(layers, means.n_layers)
    return means.means[(pooling, lang)][idx].double().mean(0).float().numpy()


def center_checkpoint(
    checkpoint_dir: str | Path,
    prepared_dir: str | Path,
    split: str = "train",
    max_sentences: int = 5_000,
    device: str | torch.device = "cpu",
    progress: bool | None = False,
) -> Path:
    """Compute the language means of a checkpoint on the monolingual ``split`` of an ``xlm
    prepare`` directory and store them in it; returns the written file."""
    from xlm.training.distributed import pick_device

    dev = pick_device(device) if isinstance(device, str) else device
    pretrained = load_pretrained(checkpoint_dir, dev)
    means = compute_from_prepared(pretrained, prepared_dir, split, max_sentences, progress=progress)
    return store_means(checkpoint_dir, means)
