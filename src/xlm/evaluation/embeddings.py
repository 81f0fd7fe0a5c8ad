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
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from xlm.data.batching import pad_rows, token_budget_batches
from xlm.data.dataset import MonolingualData
from xlm.errors import XLMError
from xlm.model.pretrained import Pretrained
from xlm.model.precision import Precision, inference_autocast
from xlm.model.transformer import TransformerModel, length_mask
from xlm.reports import write_atomic
from xlm.text.vocab import EOS_INDEX

Pooling = Literal["first", "mean"]
POOLINGS: tuple[str, ...] = ("first", "mean")
PROGRESS_MIN_SENTENCES = 2_000  # show a progress bar from this many sentences on


@dataclass(frozen=True)
class EmbedOptions:
    pooling: Pooling = "first"
    layers: tuple[int, ...] = (-1,)
    max_tokens: int = 8_000  # padded tokens per batch
    max_len: int = 0  # words kept per sentence; 0: as many as the model's positions allow
    progress: bool | None = None  # None: a bar only for long inputs
    precision: Precision = "fp32"  # "bf16": autocast matmuls to bfloat16 (GPUs; CPUs with AMX)


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
def layer_states(model: TransformerModel, tokens: Tensor, lengths: Tensor, langs: Tensor, layers: Sequence[int]) -> list[Tensor]:
    """Hidden states ``(B, T, D)`` of the requested layers (0 = embedding output)."""
    return model.hidden_states(tokens, lengths, langs, layers=resolve_layers(layers, len(model.layers)))


def pool(states: Tensor, lengths: Tensor, pooling: Pooling) -> Tensor:
    if pooling == "first":
        return states[:, 0]
    if pooling == "mean":
        mask = length_mask(lengths, states.shape[1]).to(states.dtype)[:, :, None]
        return (states * mask).sum(1) / lengths[:, None].to(states.dtype)
    raise XLMError(f"pooling {pooling!r} is not one of {POOLINGS}")


class SentenceEncoder:
    """Embeds sentences of one language with a pretrained model: ids or raw text in,
    ``(N, D)`` float32 vectors out (input order)."""

    def __init__(self, pretrained: Pretrained, lang: str, options: EmbedOptions = EmbedOptions()):
        if options.pooling not in POOLINGS:
            raise XLMError(f"pooling {options.pooling!r} is not one of {POOLINGS}")
        self.pretrained = pretrained
        self.model = pretrained.model
        self.lang = lang
        self.lang_id = pretrained.info.lang_id(lang)
        self.options = options
        resolve_layers(options.layers, len(self.model.layers))  # fail early on a bad layer
        limit = self.model.cfg.max_positions - 2
        self.max_len = min(options.max_len, limit) if options.max_len > 0 else limit
        self._text_encoder = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _rows(self, sentences: Sequence[Sequence[int] | np.ndarray]) -> list[np.ndarray]:
        return [
            np.concatenate(([EOS_INDEX], np.asarray(s, dtype=np.int64)[: self.max_len], [EOS_INDEX])).astype(np.int64)
            for s in sentences
        ]

    @torch.no_grad()
    def encode_ids(self, sentences: Sequence[Sequence[int] | np.ndarray]) -> np.ndarray:
        """Word ids of each sentence (without delimiters) -> vectors."""
        dim = self.model.cfg.emb_dim
        out = np.zeros((len(sentences), dim), dtype=np.float32)
        if not sentences:
            return out
        rows = self._rows(sentences)
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        order = np.argsort(lengths, kind="stable")
        batches = token_budget_batches(lengths, order, max(self.options.max_tokens, int(lengths.max())))
        show = self.options.progress if self.options.progress is not None else len(rows) >= PROGRESS_MIN_SENTENCES
        was_training = self.model.training
        self.model.eval()
        try:
            bar = tqdm(total=len(rows), disable=not show, unit="sent", desc=f"embed {self.lang}")
            with bar, inference_autocast(self.device, self.options.precision):
                for ids in batches:
                    tokens, lens = pad_rows([rows[i] for i in ids])
                    tokens, lens = tokens.to(self.device), lens.to(self.device)
                    langs = torch.full_like(tokens, self.lang_id)
                    states = layer_states(self.model, tokens, lens, langs, self.options.layers)
                    vec = torch.stack([pool(s, lens, self.options.pooling) for s in states]).mean(0)
                    out[ids] = vec.float().cpu().numpy()
                    bar.update(len(ids))
        finally:
            self.model.train(was_training)
        return out

    def encode_data(self, data: MonolingualData, limit: int = 0) -> np.ndarray:
        """The sentences of a binarized file (the first ``limit`` when > 0)."""
        n = len(data) if limit <= 0 else min(limit, len(data))
        return self.encode_ids([data.sentence(i) for i in range(n)])

    def text_encoder(self):
        """Normalization + BPE with the checkpoint's vocabulary and lowercasing setting."""
        if self._text_encoder is None:
            from xlm.text.bpe import TextEncoder

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
