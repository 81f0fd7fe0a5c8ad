"""Encoder–decoder for machine translation, both sides XLM Transformers.

The encoder is the pretrained model as it is; the decoder is the same network with causal
self-attention plus cross-attention to the encoder states (``TransformerModel(cfg,
is_decoder=True)``). Both can be initialised from an ``xlm pretrain`` checkpoint; the
cross-attention, absent from a language model, keeps its fresh initialisation and
:class:`LoadReport` says which tensors came from where. The output layer is tied to the
decoder's word embeddings (with its own bias); ``share_embeddings`` makes the encoder and the
decoder use one embedding matrix.

A translation checkpoint has the layout of every xlm checkpoint (``model.safetensors`` with
``encoder.*`` / ``decoder.*`` tensors, ``model.json`` with ``"architecture":
"encoder-decoder"``, the vocabulary); :func:`load_translator` reads it back.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from xlm.checkpoint_io import load_tensors
from xlm.errors import CheckpointError
from xlm.model.pretrained import ENCODER_DECODER, MODEL_JSON, WEIGHTS, ModelInfo, Pretrained, read_model_info
from xlm.model.transformer import ModelConfig, TransformerModel
from xlm.text.vocab import Vocabulary

_SHARED_KEY = "decoder.embeddings.weight"
_SOURCE_KEY = "encoder.embeddings.weight"


class EncoderDecoder(nn.Module):
    """``forward`` computes the decoder's logits at the ``predict`` positions (so that DDP sees
    every weight used in one call); :meth:`encode` and ``decoder`` serve generation."""

    def __init__(self, cfg: ModelConfig, decoder_layers: int = 0, share_embeddings: bool = False):
        super().__init__()
        self.encoder = TransformerModel(cfg)
        dec_cfg = cfg.model_copy(update={"n_layers": decoder_layers or cfg.n_layers})
        self.decoder = TransformerModel(dec_cfg, is_decoder=True)
        self.share_embeddings = share_embeddings
        if share_embeddings:
            self.decoder.embeddings = self.encoder.embeddings
            # one tensor, saved once (safetensors refuses shared storage): drop the decoder's
            # copy when saving and restore it from the encoder's when loading
            self.register_state_dict_post_hook(_drop_shared)
            self.register_load_state_dict_pre_hook(_restore_shared)
        # the encoder never predicts words: its output bias stays as loaded, out of the optimizer
        self.encoder.pred_bias.requires_grad_(False)

    @property
    def decoder_layers(self) -> int:
        return len(self.decoder.layers)

    def encode(self, tokens: Tensor, lengths: Tensor, langs: Tensor) -> Tensor:
        return self.encoder(tokens, lengths, langs)

    def forward(
        self,
        src: Tensor,
        src_lengths: Tensor,
        src_langs: Tensor,
        tgt: Tensor,
        tgt_lengths: Tensor,
        tgt_langs: Tensor,
        predict: Tensor | None = None,
    ) -> Tensor:
        """Decoder hidden states ``(B, T, D)``, or logits ``(N, V)`` at the ``predict`` mask."""
        memory = self.encoder(src, src_lengths, src_langs)
        return self.decoder(
            tgt, tgt_lengths, tgt_langs, causal=True, memory=memory, memory_lengths=src_lengths, predict=predict
        )

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _drop_shared(module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    state.pop(prefix + _SHARED_KEY, None)


def _restore_shared(module: nn.Module, state: dict[str, Any], prefix: str, *args: Any) -> None:
    if prefix + _SHARED_KEY not in state and prefix + _SOURCE_KEY in state:
        state[prefix + _SHARED_KEY] = state[prefix + _SOURCE_KEY]


# --------------------------------------------------------------------------- initialisation


@dataclass
class LoadReport:
    """Which tensors of each side were copied from the pretrained model, which kept their
    fresh initialisation, and which pretrained tensors found no place."""

    source: str
    loaded: dict[str, list[str]] = field(default_factory=dict)
    new: dict[str, list[str]] = field(default_factory=dict)
    unused: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"initialisation from {self.source}:"]
        for side in ("encoder", "decoder"):
            loaded, new, unused = self.loaded.get(side, []), self.new.get(side, []), self.unused.get(side, [])
            line = f"  {side}: {len(loaded)} tensors loaded, {len(new)} new"
            if new:
                line += " (freshly initialised: " + ", ".join(_compress(new)) + ")"
            if unused:
                line += f"; {len(unused)} pretrained tensors unused: " + ", ".join(_compress(unused))
            lines.append(line)
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "loaded": self.loaded, "new": self.new, "unused": self.unused}


def _module_of(name: str) -> str:
    """``layers.3.cross_attn.q.weight`` -> ``layers.*.cross_attn``; ``embeddings.weight`` -> ``embeddings``."""
    parts = name.split(".")
    return f"layers.*.{parts[2]}" if parts[0] == "layers" and len(parts) > 2 else parts[0]


def _compress(names: list[str]) -> list[str]:
    """Tensor names grouped by module across layers: ``layers.*.cross_attn (24 tensors)``."""
    counts = Counter(_module_of(n) for n in names)
    return [f"{k} ({c} tensor{'s' if c > 1 else ''})" for k, c in counts.items()]


def init_from_pretrained(
    model: EncoderDecoder, pretrained: Pretrained, encoder: bool = True, decoder: bool = True
) -> LoadReport:
    """Copy the pretrained language model into the encoder and/or the decoder: every tensor
    with the same name and shape; the decoder's cross-attention (and any extra layer) stays
    as initialised. A shape mismatch is an error (the model was built with other sizes)."""
    source = pretrained.model.state_dict()
    report = LoadReport(str(pretrained.directory))
    for side, module, enabled in (("encoder", model.encoder, encoder), ("decoder", model.decoder, decoder)):
        target = module.state_dict()
        loaded, new = [], []
        with torch.no_grad():
            for name, tensor in target.items():
                if enabled and name in source:
                    if source[name].shape != tensor.shape:
                        raise CheckpointError(
                            f"{pretrained.directory}: {name} has shape {tuple(source[name].shape)} in the pretrained "
                            f"model but {tuple(tensor.shape)} in the {side}"
                        )
                    tensor.copy_(source[name])
                    loaded.append(name)
                else:
                    new.append(name)
        report.loaded[side], report.new[side] = loaded, new
        report.unused[side] = [n for n in source if n not in target] if enabled else []
    return report


# --------------------------------------------------------------------------- checkpoints


def model_info(
    cfg: ModelConfig, lang2id: dict[str, int], lowercase: bool, model: EncoderDecoder, **extra: Any
) -> ModelInfo:
    """``model.json`` of a translation model: the encoder's sizes plus the decoder's."""
    return ModelInfo(
        cfg,
        lang2id,
        lowercase,
        {
            "architecture": ENCODER_DECODER,
            "decoder_layers": model.decoder_layers,
            "share_embeddings": model.share_embeddings,
            **extra,
        },
    )


@dataclass
class Translator:
    model: EncoderDecoder
    info: ModelInfo
    vocab: Vocabulary
    directory: Path


def load_translator(directory: str | Path, device: str | torch.device = "cpu") -> Translator:
    """Load a checkpoint written by ``xlm train-mt`` (checksums verified)."""
    d = Path(directory)
    info = read_model_info(d)
    if info.extra.get("architecture") != ENCODER_DECODER:
        raise CheckpointError(
            f"{d} is a language model, not a translation model: train one from it with `xlm train-mt` "
            "(init.pretrained = this checkpoint)"
        )
    model = EncoderDecoder(
        info.config, int(info.extra.get("decoder_layers", 0)), bool(info.extra.get("share_embeddings"))
    )
    try:
        model.load_state_dict(load_tensors(d / WEIGHTS))
    except RuntimeError as e:
        raise CheckpointError(f"{d / WEIGHTS}: weights do not match the model described in {MODEL_JSON}: {e}") from None
    vocab = Vocabulary.from_dir(d)
    if len(vocab) != info.config.vocab_size:
        raise CheckpointError(f"{d}: vocabulary has {len(vocab)} tokens but the model has {info.config.vocab_size}")
    model.to(device).eval()
    return Translator(model, info, vocab, d)


def objective_directions(mt: Sequence[str], bt: Sequence[str]) -> list[tuple[str, str]]:
    """The directions that translation objectives train, in order, once each: each supervised
    ``mt`` pair ``src-tgt`` and both hops of each back-translation ``a-b-a``."""
    out: list[tuple[str, str]] = []
    for e in mt:
        a, b = e.split("-")
        out.append((a, b))
    for e in bt:
        a, b, _ = e.split("-")
        out += [(a, b), (b, a)]
    return list(dict.fromkeys(out))


def trained_directions(info: ModelInfo) -> list[tuple[str, str]]:
    """The directions a translation checkpoint was trained to translate, as its ``model.json``
    records its objectives."""
    obj = info.extra.get("objectives", {})
    return objective_directions(obj.get("mt", []), obj.get("bt", []))


def evaluation_directions(info: ModelInfo) -> list[tuple[str, str]]:
    """The directions that training evaluated, as recorded with a translation checkpoint (each
    ``src-tgt``, checked by the caller); for older checkpoints, the trained ones."""
    if "eval_directions" in info.extra:
        return [tuple(d.split("-")) for d in info.extra["eval_directions"]]
    return trained_directions(info)
