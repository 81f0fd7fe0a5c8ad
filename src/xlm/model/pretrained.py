"""A pretrained model as other commands use it: the network, its languages and its vocabulary,
saved in / loaded from a checkpoint directory (see ``xlm.checkpoint_io``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from xlm.checkpoint_io import load_tensors, read_json, state_dict_for_saving, verify_checkpoint
from xlm.errors import CheckpointError
from xlm.fileio import write_json
from xlm.model.transformer import ModelConfig, TransformerModel
from xlm.text.vocab import VOCAB_FILE, Vocabulary, copy_vocabulary

MODEL_JSON = "model.json"
ENCODER_DECODER = "encoder-decoder"  # model.json "architecture" of a translation model
WEIGHTS = "model.safetensors"
ANY_LANGUAGE = "any_language"  # model.json: an imported model whose languages are not listed


@dataclass
class ModelInfo:
    """Everything besides the weights that is needed to use a model."""

    config: ModelConfig
    lang2id: dict[str, int]
    lowercase_and_remove_accent: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.config.model_dump(),
            "lang2id": self.lang2id,
            "lowercase_and_remove_accent": self.lowercase_and_remove_accent,
            **self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelInfo:
        data = dict(data)
        cfg = ModelConfig.model_validate(data.pop("model"))
        lang2id = {str(k): int(v) for k, v in data.pop("lang2id").items()}
        lower = bool(data.pop("lowercase_and_remove_accent", False))
        return cls(cfg, lang2id, lower, data)

    def lang_id(self, lang: str) -> int:
        """The id of ``lang``. A model imported without a language list and without language
        embeddings (XLM-R, BERT: ``"any_language"`` in model.json) takes text of any language:
        a new one gets the next id (the network does not see it)."""
        if self.extra.get(ANY_LANGUAGE) and not (self.config.use_lang_emb and self.config.n_langs > 1):
            return self.lang2id.setdefault(lang, len(self.lang2id))
        if lang not in self.lang2id:
            raise CheckpointError(f"language {lang!r} is not one of the model's languages {sorted(self.lang2id)}")
        return self.lang2id[lang]


def write_model_files(directory: Path, model: torch.nn.Module, info: ModelInfo, vocab_dir: Path) -> None:
    """Write weights, model.json and the vocabulary (``vocab.json`` and the files of its kind)
    into ``directory`` (no manifest)."""
    save_file(state_dict_for_saving(model), str(directory / WEIGHTS))
    write_json(directory / MODEL_JSON, info.to_json())
    copy_vocabulary(vocab_dir, directory)


@dataclass
class Pretrained:
    model: TransformerModel
    info: ModelInfo
    vocab: Vocabulary
    directory: Path
    # things read from the checkpoint on first use (e.g. the centering means), by name
    cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)


def read_model_info(directory: Path) -> ModelInfo:
    """Verify a checkpoint's checksums and read its ``model.json``."""
    verify_checkpoint(directory)
    return ModelInfo.from_json(read_json(directory / MODEL_JSON))


def load_pretrained(directory: str | Path, device: str | torch.device = "cpu") -> Pretrained:
    """Load a checkpoint written by ``xlm pretrain`` (or ``xlm import``), checksums verified."""
    d = Path(directory)
    info = read_model_info(d)
    if info.extra.get("architecture") == ENCODER_DECODER:
        raise CheckpointError(f"{d} is a translation model (encoder-decoder): use it with `xlm translate`")
    vocab = Vocabulary.from_dir(d)
    state = load_tensors(d / WEIGHTS)
    emb = state.get("embeddings.weight")
    rows = int(emb.shape[0]) if emb is not None else info.config.vocab_size
    if len(vocab) != rows or len(vocab) != info.config.vocab_size:
        raise CheckpointError(
            f"{d / VOCAB_FILE}: {len(vocab)} tokens but the model's embeddings have {rows} rows "
            f"(vocab_size={info.config.vocab_size} in {MODEL_JSON})"
        )
    model = TransformerModel(info.config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{d / WEIGHTS}: weights do not match the model (missing {missing}, unexpected {unexpected})"
        )
    model.to(device).eval()
    return Pretrained(model, info, vocab, d)
