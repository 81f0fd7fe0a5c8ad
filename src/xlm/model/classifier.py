"""A fine-tuned classifier as a model: the pretrained encoder, a head (dropout and a linear
layer on a pooled hidden state: the first, the ``</s>`` that starts every input, as XLM; or
their mean) and its labels, with what reads and writes it.

A fine-tuned directory holds the encoder (``model.safetensors``, ``model.json``, vocabulary:
loadable by ``load_pretrained``), the head (``head.safetensors``), ``labels.json`` and, when
stored, each language's mean pooled vector (``language_means.json``); :func:`load_classifier`
reads it all. Fine-tuning is ``xlm.tasks.classification``'s; ``xlm classify`` needs only this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from xlm.checkpoint_io import load_tensors, read_json, state_dict_for_saving, verify_checkpoint
from xlm.config import ConfigError
from xlm.data.batching import pad_rows, token_budget_batches
from xlm.data.classification import pretokenized_encoder
from xlm.errors import CheckpointError
from xlm.fileio import write_json
from xlm.model.pretrained import ModelInfo, Pretrained, load_pretrained
from xlm.model.transformer import model_config, pool_states
from xlm.text.vocab import PAD_INDEX

HEAD_WEIGHTS = "head.safetensors"
LABELS_JSON = "labels.json"
LANGUAGE_MEANS = "language_means.json"


class ClassifierHead(nn.Module):
    """Dropout and a linear layer on the pooled hidden states (the first one, the ``</s>``
    that starts every input, as XLM; or their mean): ``(B, T, D) -> (B, C)``."""

    def __init__(self, dim: int, n_labels: int, dropout: float = 0.1, pooling: str = "first", layer: int = -1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(dim, n_labels)
        self.pooling = pooling
        self.layer = layer  # the encoder layer whose states the head reads (-1: the last)

    def features(self, hidden: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``(B, T, D)`` -> pooled ``(B, D)``."""
        if self.pooling == "first" or lengths is None:
            return hidden[:, 0]
        return pool_states(hidden, lengths, self.pooling)

    def classify(self, features: Tensor) -> Tensor:
        return self.proj(self.dropout(features))

    def forward(self, hidden: Tensor, lengths: Tensor | None = None, center_langs: Tensor | None = None) -> Tensor:
        """Logits ``(B, C)``; with ``center_langs`` ``(B,)`` each row's pooled vector is centered
        on the mean of the batch's rows of its language."""
        features = self.features(hidden, lengths)
        if center_langs is not None:
            features = center_by_language(features, center_langs)
        return self.classify(features)


def center_by_language(features: Tensor, langs: Tensor) -> Tensor:
    """Subtract from each row the mean of the rows of its language (``langs`` ``(B,)``)."""
    out = features.clone()
    for lang in langs.unique():
        rows = langs == lang
        out[rows] = features[rows] - features[rows].mean(0, keepdim=True)
    return out


@dataclass
class ClassifyBatch:
    tokens: Tensor  # (B, T)
    lengths: Tensor  # (B,)
    langs: Tensor  # (B,)
    labels: Tensor  # (B,)

    def to(self, device: torch.device) -> ClassifyBatch:
        return ClassifyBatch(*(t.to(device) for t in (self.tokens, self.lengths, self.langs, self.labels)))


def make_batch(
    rows: list[np.ndarray], lang_ids: list[int], labels: list[int], pad_index: int = PAD_INDEX
) -> ClassifyBatch:
    tokens, lengths = pad_rows(rows, pad_index)
    return ClassifyBatch(
        tokens, lengths, torch.tensor(lang_ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long)
    )


def encode_for_head(encoder: nn.Module, head: nn.Module, tokens: Tensor, lengths: Tensor, langs: Tensor) -> Tensor:
    """The states of the layer the head reads."""
    layer = _head(head).layer
    return encoder(tokens, lengths=lengths, langs=langs, layer=None if layer == -1 else layer)


def classify_features(encoder: nn.Module, head: nn.Module, batch: ClassifyBatch) -> Tensor:
    hidden = encode_for_head(encoder, head, batch.tokens, batch.lengths, batch.langs)
    return _head(head).features(hidden, batch.lengths)


def _head(head: nn.Module) -> ClassifierHead:
    inner = getattr(head, "module", head)  # DDP wraps it
    assert isinstance(inner, ClassifierHead)
    return inner


def classify_logits(encoder: nn.Module, head: nn.Module, batch: ClassifyBatch, center: bool = False) -> Tensor:
    """Logits ``(B, C)``; ``center`` subtracts each language's mean pooled vector over the batch."""
    hidden = encode_for_head(encoder, head, batch.tokens, batch.lengths, batch.langs)
    return head(hidden, batch.lengths, batch.langs if center else None)


@torch.no_grad()
def set_features(
    encoder: nn.Module, head: nn.Module, rows: list[np.ndarray], lang_id: int, device: torch.device, max_tokens: int
) -> Tensor:
    """Pooled vectors ``(N, D)`` the head reads, of one language's encoded rows (eval mode)."""
    head, pad = _head(head), model_config(encoder).pad_index
    lengths = np.asarray([len(r) for r in rows], dtype=np.int64)
    features = torch.zeros(len(rows), head.proj.in_features, device=device)
    for ids in token_budget_batches(lengths, np.argsort(lengths, kind="stable"), max_tokens):
        batch = make_batch([rows[i] for i in ids], [lang_id] * len(ids), [0] * len(ids), pad).to(device)
        features[torch.as_tensor(ids, device=device)] = classify_features(encoder, head, batch).float()
    return features


def set_logits(
    encoder: nn.Module, head: nn.Module, rows: list[np.ndarray], lang_id: int, device: torch.device, max_tokens: int,
    center: bool = False, mean: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """Logits ``(N, C)`` of one language's encoded rows (modules in eval mode); ``center``
    subtracts ``mean`` (the language's stored mean pooled vector), else the mean of the set."""
    features = set_features(encoder, head, rows, lang_id, device, max_tokens)
    if center and len(rows):
        ref = mean.to(features.device) if mean is not None else features.mean(0)
        features = features - ref[None, :]
    return _head(head).classify(features).float()


def text_encoder(directory: Path, lang: str, lowercase_and_remove_accent: bool, pretokenized: bool):
    """``lines -> id lists`` for ``lang`` with the vocabulary in ``directory``: Moses
    normalization + BPE (as ``xlm prepare``), or a plain token lookup for pre-tokenized text."""
    from xlm.text.tokenizer import TextEncoder, load_tokenizer

    tokenizer = load_tokenizer(directory)
    if pretokenized:
        return pretokenized_encoder(tokenizer.vocab)
    return TextEncoder(directory, lang, lowercase_and_remove_accent, tokenizer=tokenizer).encode_batch


def write_classifier_files(directory: Path, head: nn.Module, labels: list[str]) -> None:
    from safetensors.torch import save_file

    save_file(state_dict_for_saving(head), str(directory / HEAD_WEIGHTS))
    write_json(directory / LABELS_JSON, {"labels": labels})


@dataclass
class Classifier:
    """A fine-tuned classifier: encoder, head, labels, languages and vocabulary."""

    pretrained: Pretrained
    head: ClassifierHead
    labels: list[str]
    # each language's mean pooled vector over the sets evaluated at the end of fine-tuning
    # (centered classifiers subtract it; a language without one is centered on its input)
    language_means: dict[str, Tensor] = field(default_factory=dict)

    @property
    def info(self) -> ModelInfo:
        return self.pretrained.info

    @property
    def device(self) -> torch.device:
        return next(self.head.parameters()).device

    @torch.no_grad()
    def predict_probs(self, rows: list[np.ndarray], lang: str, max_tokens: int = 4096) -> np.ndarray:
        """Class probabilities ``(N, C)`` of encoded rows (see ``build_row``) of language ``lang``."""
        lang_id = self.info.lang_id(lang)
        if not rows:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        self.pretrained.model.eval()
        self.head.eval()
        center = bool(self.info.extra.get("classifier", {}).get("center", False))
        mean = self.language_means.get(lang)
        logits = set_logits(self.pretrained.model, self.head, rows, lang_id, self.device, max_tokens, center, mean)
        return logits.softmax(-1).cpu().numpy()


def resolve_classifier_dir(directory: str | Path) -> Path:
    """A fine-tuned checkpoint, or a fine-tuning run folder (its ``best/``, else ``final/``)."""
    d = Path(directory)
    if (d / LABELS_JSON).is_file():
        return d
    for sub in ("best", "final"):
        if (d / sub / LABELS_JSON).is_file():
            return d / sub
    if not d.exists():
        raise CheckpointError(f"{d}: no such fine-tuned model")
    raise CheckpointError(f"{d}: not a fine-tuned classifier (no {LABELS_JSON} in it, nor in best/ or final/)")


def load_classifier(directory: str | Path, device: str | torch.device = "cpu") -> Classifier:
    """Load a directory written by ``xlm finetune classify`` (checksums verified)."""
    d = resolve_classifier_dir(directory)
    verify_checkpoint(d)
    pretrained = load_pretrained(d, device)
    data = read_json(d / LABELS_JSON)
    labels = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
        raise CheckpointError(f'{d / LABELS_JSON}: expected {{"labels": [at least two strings]}}')
    meta = pretrained.info.extra.get("classifier", {})
    head = ClassifierHead(
        pretrained.info.config.emb_dim,
        len(labels),
        float(meta.get("dropout", 0.1)),
        meta.get("pooling", "first"),
        int(meta.get("layer", -1)),
    )
    state = load_tensors(d / HEAD_WEIGHTS)
    try:
        head.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{d / HEAD_WEIGHTS}: does not match {len(labels)} labels: {e}") from None
    head.to(device).eval()
    means: dict[str, Tensor] = {}
    if (d / LANGUAGE_MEANS).is_file():
        stored = read_json(d / LANGUAGE_MEANS).get("means", {})
        for lang, vec in stored.items():
            if len(vec) != head.proj.in_features:
                raise CheckpointError(
                    f"{d / LANGUAGE_MEANS}: the {lang!r} mean has {len(vec)} values, the model {head.proj.in_features}"
                )
            means[lang] = torch.tensor(vec, dtype=torch.float32)
    return Classifier(pretrained, head, labels, means)


def translate_test_target(clf: Classifier) -> str:
    """The language test sets are translated into: the one the classifier was fine-tuned on."""
    langs = clf.info.extra.get("classifier", {}).get("train_languages") or ["en"]
    if len(langs) != 1:
        raise ConfigError(f"translate-test needs a classifier fine-tuned on one language, this one was on {langs}")
    return str(langs[0])
