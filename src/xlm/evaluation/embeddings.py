"""Sentence embeddings from a pretrained encoder.

A sentence is fed as ``</s> w1 .. wn </s>`` with its language id, and the hidden states of
one or several layers are pooled into one vector:

* ``pooling="first"``: the state of the first token (the ``</s>`` that XLM's classifiers use);
* ``pooling="mean"``:  the mean over the real tokens (padding excluded).

``layers`` picks which states are pooled: ``0`` is the embedding layer's output, ``1..L``
the Transformer blocks, negative numbers count from the end (``-1``, the default, is the
last block). With several layers the pooled vectors are averaged.

Sentences are batched by length (sorted, cut by a token budget so little padding is
computed) and returned in the input order, as a ``float32`` array ``(N, D)``.

Centering (``center=True``, the default; see ``xlm.evaluation.centering``): when the
checkpoint holds ``centering.safetensors`` (written by ``xlm center``), the stored mean
vector of the sentence's language, for the same pooling and layers, is subtracted, which
removes most of the language-specific component of the vectors. Without stored means,
commands that embed a whole set subtract that set's own mean (:meth:`SentenceEncoder.center_set`).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from xlm.config import Settings
from xlm.data.batching import pad_rows, token_budget_batches
from xlm.data.dataset import MonolingualData
from xlm.errors import XLMError
from xlm.model.precision import Precision, inference_autocast
from xlm.model.pretrained import Pretrained
from xlm.model.transformer import TransformerModel, pool_states
from xlm.reports import write_atomic

if TYPE_CHECKING:
    from xlm.text.tokenizer import TextEncoder

Pooling = Literal["first", "mean"]
POOLINGS: tuple[str, ...] = ("first", "mean")
PROGRESS_MIN_SENTENCES = 2_000  # show a progress bar from this many sentences on


# Without a recommendation in the checkpoint: mean pooling of the embedding layer's output,
# the best setting of the sweep in docs/results.md ("Sentence embeddings: pooling, layer,
# centering") for models trained without XLCo.
DEFAULT_POOLING: Pooling = "mean"
DEFAULT_LAYERS: tuple[int, ...] = (0,)


class EmbedOptions(Settings):
    """How sentence vectors are made."""

    pooling: Pooling | None = None  # None: the checkpoint's recommendation (see default_embedding)
    layers: tuple[int, ...] | None = None
    max_tokens: int = 8_000  # padded tokens per batch
    max_len: int = 0  # words kept per sentence; 0: as many as the model's positions allow
    progress: bool | None = None  # None: a bar only for long inputs
    precision: Precision = "fp32"  # "bf16": autocast matmuls to bfloat16 (GPUs; CPUs with AMX)
    center: bool = True  # subtract the language's stored mean (when the checkpoint has one)


def parse_layers(text: str) -> tuple[int, ...]:
    """``"-1"``, ``"4"``, ``"2,3,4"`` or a range ``"2-4"`` -> layer indices."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part and not part.startswith("-"):
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise XLMError(f"layers {text!r}: expected comma-separated integers or a range like 2-4") from None
    if not out:
        raise XLMError("layers: at least one layer is needed")
    return tuple(out)


def default_embedding(info: Any) -> tuple[Pooling, tuple[int, ...]]:
    """Pooling and layers a checkpoint recommends for sentence vectors: those XLCo trained
    (``sentence_embedding`` in model.json), else DEFAULT_POOLING / DEFAULT_LAYERS."""
    rec = info.extra.get("sentence_embedding") if info is not None else None
    if isinstance(rec, dict) and rec.get("pooling") in POOLINGS and rec.get("layers"):
        return rec["pooling"], tuple(int(x) for x in rec["layers"])
    return DEFAULT_POOLING, DEFAULT_LAYERS


def resolve_options(options: EmbedOptions, info: Any) -> EmbedOptions:
    """``options`` with an unset pooling or layers taken from the checkpoint's recommendation."""
    if options.pooling is not None and options.layers is not None:
        return options
    pooling, layers = default_embedding(info)
    return options.model_copy(update={"pooling": options.pooling or pooling, "layers": options.layers or layers})


def resolve_layers(layers: Sequence[int], n_layers: int) -> list[int]:
    """Indices in ``0..n_layers`` (0 = embeddings); negatives count from the end."""
    resolved = []
    for i in layers:
        j = i + n_layers + 1 if i < 0 else i
        if not 0 <= j <= n_layers:
            raise XLMError(f"layer {i} does not exist: the model has layers 0 (embeddings) .. {n_layers}")
        resolved.append(j)
    return sorted(set(resolved))


@torch.no_grad()
def layer_states(
    model: TransformerModel, tokens: Tensor, lengths: Tensor, langs: Tensor, layers: Sequence[int]
) -> list[Tensor]:
    """Hidden states ``(B, T, D)`` of the requested layers (0 = embedding output)."""
    return model.hidden_states(tokens, lengths, langs, layers=resolve_layers(layers, len(model.layers)))


def pool(states: Tensor, lengths: Tensor, pooling: str) -> Tensor:
    if pooling not in POOLINGS:
        raise XLMError(f"pooling {pooling!r} is not one of {POOLINGS}")
    return pool_states(states, lengths, pooling)


class SentenceEncoder:
    """Embeds sentences of one language with a pretrained model: ids or raw text in,
    ``(N, D)`` float32 vectors out (input order), centered with the checkpoint's stored
    language mean when it has one and ``options.center`` is on."""

    def __init__(self, pretrained: Pretrained, lang: str, options: EmbedOptions = EmbedOptions()):
        options = resolve_options(options, pretrained.info)
        if options.pooling is None or options.pooling not in POOLINGS:
            raise XLMError(f"pooling {options.pooling!r} is not one of {POOLINGS}")
        assert options.layers is not None  # resolve_options sets both
        self.pooling: Pooling = options.pooling
        self.pretrained = pretrained
        self.model = pretrained.model
        self.lang = lang
        self.lang_id = pretrained.info.lang_id(lang)
        self.options = options
        self.n_layers = len(self.model.layers)
        self.layers = tuple(resolve_layers(options.layers, self.n_layers))  # fails early on a bad layer
        limit = self.model.cfg.max_positions - 2
        self.max_len = min(options.max_len, limit) if options.max_len > 0 else limit
        self._text_encoder: TextEncoder | None = None
        self.stored_mean: np.ndarray | None = None  # (D,) subtracted from every vector
        self.means = None  # the checkpoint's LanguageMeans, when centering with them
        if options.center:
            from xlm.evaluation.centering import mean_for, stored_means

            self.means = stored_means(pretrained)
            if self.means is not None:
                self.stored_mean = mean_for(self.means, lang, self.pooling, self.layers)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _rows(self, sentences: Sequence[Sequence[int] | np.ndarray]) -> list[np.ndarray]:
        sp = self.pretrained.vocab.specials  # XLM: </s> w .. </s>
        return [
            np.concatenate(([sp.start], np.asarray(s, dtype=np.int64)[: self.max_len], [sp.end])).astype(np.int64)
            for s in sentences
        ]

    def iter_pooled(
        self,
        sentences: Sequence[Sequence[int] | np.ndarray],
        layers: Sequence[int] | None = None,
        poolings: Sequence[str] | None = None,
    ) -> Iterator[tuple[np.ndarray, dict[str, Tensor]]]:
        """The one batching loop: yields ``(ids, {pooling: (B, len(layers), D) float32})`` per
        batch, ``ids`` the positions of the batch's sentences in ``sentences``; ``layers``
        (default ``options.layers``) are resolved, sorted and deduplicated, ``poolings``
        default to ``(options.pooling,)``. The vectors are raw: never centered."""
        layers = resolve_layers(self.layers if layers is None else layers, self.n_layers)
        poolings = tuple(poolings or (self.pooling,))
        for p in poolings:
            if p not in POOLINGS:
                raise XLMError(f"pooling {p!r} is not one of {POOLINGS}")
        if not sentences:
            return
        rows = self._rows(sentences)
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        order = np.argsort(lengths, kind="stable")
        batches = token_budget_batches(lengths, order, max(self.options.max_tokens, int(lengths.max())))
        show = self.options.progress if self.options.progress is not None else len(rows) >= PROGRESS_MIN_SENTENCES
        was_training = self.model.training
        self.model.eval()
        try:
            with tqdm(total=len(rows), disable=not show, unit="sent", desc=f"embed {self.lang}") as bar:
                for ids in batches:
                    tokens, lens = pad_rows([rows[i] for i in ids], self.pretrained.vocab.specials.pad)
                    tokens, lens = tokens.to(self.device), lens.to(self.device)
                    langs = torch.full_like(tokens, self.lang_id)
                    # autocast only around the model: the caller's code between batches runs outside it
                    with torch.no_grad(), inference_autocast(self.device, self.options.precision):
                        states = self.model.hidden_states(tokens, lens, langs, layers=layers)
                        pooled = {p: torch.stack([pool(s, lens, p) for s in states], 1).float() for p in poolings}
                    yield np.asarray(ids), pooled
                    bar.update(len(ids))
        finally:
            self.model.train(was_training)

    def pooled_layers(
        self,
        sentences: Sequence[Sequence[int] | np.ndarray],
        layers: Sequence[int] | None = None,
        poolings: Sequence[str] = POOLINGS,
    ) -> dict[str, np.ndarray]:
        """Raw (uncentered) vectors of several layers and poolings from one pass over the
        sentences: ``{pooling: (N, len(layers), D) float32}``, layers resolved and sorted
        (default: all, ``0 .. n_layers``)."""
        layers = resolve_layers(range(self.n_layers + 1) if layers is None else layers, self.n_layers)
        dim = self.model.cfg.emb_dim
        out = {p: np.zeros((len(sentences), len(layers), dim), dtype=np.float32) for p in poolings}
        for ids, pooled in self.iter_pooled(sentences, layers, poolings):
            for p, vec in pooled.items():
                out[p][ids] = vec.cpu().numpy()
        return out

    def encode_ids(self, sentences: Sequence[Sequence[int] | np.ndarray]) -> np.ndarray:
        """Word ids of each sentence (without delimiters) -> vectors (centered with the
        stored language mean when there is one)."""
        out = np.zeros((len(sentences), self.model.cfg.emb_dim), dtype=np.float32)
        for ids, pooled in self.iter_pooled(sentences, self.layers, (self.pooling,)):
            out[ids] = pooled[self.pooling].mean(1).cpu().numpy()
        if self.stored_mean is not None:
            out -= self.stored_mean
        return out

    def center_set(self, vectors: np.ndarray) -> np.ndarray:
        """``vectors`` of a whole set of sentences of this language, as returned by the
        ``encode_*`` methods: when centering is on but there was no stored mean to subtract,
        subtract the set's own mean (from 2 sentences on); otherwise ``vectors`` unchanged."""
        if self.options.center and self.stored_mean is None and len(vectors) >= 2:
            return (vectors - vectors.mean(0, dtype=np.float64)).astype(np.float32)
        return vectors

    def centering_kind(self, n: int) -> str:
        """How :meth:`center_set` centers a set of ``n`` vectors: ``"stored"`` (the checkpoint's
        language mean), ``"set"`` (the set's own mean), ``"off"`` or ``"none"`` (one sentence)."""
        if not self.options.center:
            return "off"
        if self.stored_mean is not None:
            return "stored"
        return "set" if n >= 2 else "none"

    def centering_note(self, n: int) -> str:
        """One line saying how :meth:`center_set` centers a set of ``n`` vectors."""
        kind = self.centering_kind(n)
        if kind == "off":
            return "centering: off (--no-center)"
        if kind == "stored":
            assert self.means is not None
            count = self.means.counts.get(self.lang, 0)
            split = f" {self.means.split}" if self.means.split else ""
            return (
                f"centering: subtracted the stored {self.lang} mean of {count}{split} sentences "
                f"({self.pretrained.directory / 'centering.safetensors'})"
            )
        if kind == "set":
            return (
                f"centering: subtracted the mean of these {n} sentences "
                f"(no stored means in {self.pretrained.directory}; `xlm center` adds them)"
            )
        return f"centering: none (a single sentence and no stored means in {self.pretrained.directory})"

    def encode_data(self, data: MonolingualData, limit: int = 0) -> np.ndarray:
        """The sentences of a binarized file (the first ``limit`` when > 0)."""
        n = len(data) if limit <= 0 else min(limit, len(data))
        return self.encode_ids([data.sentence(i) for i in range(n)])

    def text_encoder(self) -> TextEncoder:
        """Normalization + BPE with the checkpoint's vocabulary and lowercasing setting."""
        if self._text_encoder is None:
            from xlm.text.tokenizer import TextEncoder

            self._text_encoder = TextEncoder(
                self.pretrained.directory, self.lang, self.pretrained.info.lowercase_and_remove_accent
            )
        return self._text_encoder

    def encode_text(self, lines: Sequence[str]) -> np.ndarray:
        """Raw sentences (one per item) -> vectors."""
        return self.encode_ids(self.text_encoder().encode_batch(list(lines)))


def embed_sentences(
    pretrained: Pretrained, lang: str, lines: Sequence[str], options: EmbedOptions = EmbedOptions()
) -> np.ndarray:
    """Convenience: raw sentences of ``lang`` -> ``(N, D)`` float32 vectors."""
    return SentenceEncoder(pretrained, lang, options).encode_text(lines)


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def save_npy(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as .npy (no pickle) atomically: a reader never sees half a file."""
    return write_atomic(path, npy_bytes(array))
