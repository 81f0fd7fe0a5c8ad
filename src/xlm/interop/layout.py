"""Parameter names of the networks we read and write, and exact conversions to ours.

XLM (the original code, and Hugging Face's ``XLMModel`` under the prefix ``transformer.``)
    One linear layer per projection: ``attentions.{i}.q_lin``, ``k_lin``, ``v_lin``,
    ``out_lin``, ``layer_norm1.{i}``, ``ffns.{i}.lin1/lin2``, ``layer_norm2.{i}``; decoders add
    ``encoder_attn.{i}.*`` and ``layer_norm15.{i}``; the output layer is ``pred_layer.proj``
    (weight tied to ``embeddings.weight``). Our model fuses q/k/v into ``attn.qkv`` (rows q,
    then k, then v) and cross-attention k/v into ``cross_attn.kv``.

BERT-family encoders (:data:`HF_ROBERTA`, :data:`HF_BERT`, :data:`FAIRSEQ_ROBERTA`)
    ``transformers``' ``XLMRobertaForMaskedLM`` (``roberta.*`` + ``lm_head.*``) and
    ``BertForMaskedLM`` (``bert.*`` + ``cls.predictions.*``), and fairseq's RoBERTa / XLM-R
    (``encoder.sentence_encoder.*`` + ``encoder.lm_head.*``; ``decoder.`` in older files).
    :func:`to_encoder_layout` and :func:`from_encoder_layout` convert with a table of names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from xlm.errors import CheckpointError
from xlm.interop.common import _layer_indices, count_layers

# --------------------------------------------------------------------------- XLM


def to_xlm_layout(state: Mapping[str, Tensor], include_tied: bool = False) -> dict[str, Tensor]:
    """Our state dict -> the original / Hugging Face names (without HF's ``transformer.``).

    ``include_tied`` also writes ``pred_layer.proj.weight`` (a copy of ``embeddings.weight``),
    which the original code stores and Hugging Face leaves out."""
    out: dict[str, Tensor] = {}
    simple = {
        "embeddings.weight": "embeddings.weight",
        "position_embeddings.weight": "position_embeddings.weight",
        "lang_embeddings.weight": "lang_embeddings.weight",
        "norm_emb.weight": "layer_norm_emb.weight",
        "norm_emb.bias": "layer_norm_emb.bias",
        "pred_bias": "pred_layer.proj.bias",
    }
    for ours, theirs in simple.items():
        if ours in state:
            out[theirs] = state[ours]
    if include_tied:
        out["pred_layer.proj.weight"] = state["embeddings.weight"]
    for i in range(count_layers(state, "layers")):
        p = f"layers.{i}"
        for kind in ("weight", "bias"):
            q, k, v = state[f"{p}.attn.qkv.{kind}"].chunk(3, dim=0)
            out[f"attentions.{i}.q_lin.{kind}"] = q
            out[f"attentions.{i}.k_lin.{kind}"] = k
            out[f"attentions.{i}.v_lin.{kind}"] = v
            out[f"attentions.{i}.out_lin.{kind}"] = state[f"{p}.attn.out.{kind}"]
            out[f"layer_norm1.{i}.{kind}"] = state[f"{p}.norm1.{kind}"]
            out[f"ffns.{i}.lin1.{kind}"] = state[f"{p}.ffn.lin1.{kind}"]
            out[f"ffns.{i}.lin2.{kind}"] = state[f"{p}.ffn.lin2.{kind}"]
            out[f"layer_norm2.{i}.{kind}"] = state[f"{p}.norm2.{kind}"]
            if f"{p}.cross_attn.q.{kind}" in state:
                ck, cv = state[f"{p}.cross_attn.kv.{kind}"].chunk(2, dim=0)
                out[f"encoder_attn.{i}.q_lin.{kind}"] = state[f"{p}.cross_attn.q.{kind}"]
                out[f"encoder_attn.{i}.k_lin.{kind}"] = ck
                out[f"encoder_attn.{i}.v_lin.{kind}"] = cv
                out[f"encoder_attn.{i}.out_lin.{kind}"] = state[f"{p}.cross_attn.out.{kind}"]
                out[f"layer_norm15.{i}.{kind}"] = state[f"{p}.norm_cross.{kind}"]
    return {k: v.contiguous() for k, v in out.items()}


class _Taken:
    """The tensors of a state dict, taken by name, so that a missing one and those left over
    can be named."""

    def __init__(self, state: Mapping[str, Tensor], source: str):
        self.src, self.source = dict(state), source
        self.used: set[str] = set()

    def __call__(self, name: str) -> Tensor:
        if name not in self.src:
            raise CheckpointError(f"{self.source}: weight {name!r} is missing")
        self.used.add(name)
        return self.src[name]

    def check_all_used(self) -> None:
        unused = sorted(set(self.src) - self.used)
        if unused:
            shown = ", ".join(unused[:8]) + (f", ... ({len(unused)} in all)" if len(unused) > 8 else "")
            raise CheckpointError(f"{self.source}: weights that our model has no place for: {shown}")


def from_xlm_layout(state: Mapping[str, Tensor], source: str) -> tuple[dict[str, Tensor], bool]:
    """Original / Hugging Face names -> our state dict; returns ``(state, is_decoder)``.

    Every tensor of ``state`` must be used: an unknown name is an error (it would be a
    feature our model lacks, e.g. product-key memory layers). ``pred_layer.proj.weight``
    must equal ``embeddings.weight`` (our output layer is tied); a missing output bias
    becomes zeros."""
    take = _Taken(state, source)
    out = _xlm_embeddings(take)
    n_layers = count_layers(take.src, "attentions")
    is_decoder = bool(_layer_indices(take.src, "encoder_attn"))
    for i in range(n_layers):
        out.update(_xlm_block(take, i, is_decoder))
    take.check_all_used()
    return {k: v.contiguous() for k, v in out.items()}, is_decoder


def _xlm_embeddings(take: _Taken) -> dict[str, Tensor]:
    """Our embeddings and output bias, from the original names; the output projection must be
    the embeddings (tied)."""
    out: dict[str, Tensor] = {
        "embeddings.weight": take("embeddings.weight"),
        "position_embeddings.weight": take("position_embeddings.weight"),
        "norm_emb.weight": take("layer_norm_emb.weight"),
        "norm_emb.bias": take("layer_norm_emb.bias"),
    }
    if "lang_embeddings.weight" in take.src:
        out["lang_embeddings.weight"] = take("lang_embeddings.weight")
    emb = out["embeddings.weight"]
    if "pred_layer.proj.weight" in take.src:
        proj = take("pred_layer.proj.weight")
        if proj.shape != emb.shape or not torch.equal(proj, emb):
            raise CheckpointError(
                f"{take.source}: the output projection pred_layer.proj.weight is not tied to embeddings.weight; "
                "this model (share_inout_emb=False) cannot be represented by ours, whose output layer is tied"
            )
    if "pred_layer.proj.bias" in take.src:
        out["pred_bias"] = take("pred_layer.proj.bias")
    else:
        out["pred_bias"] = torch.zeros(emb.shape[0], dtype=emb.dtype)
    return out


def _xlm_block(take: _Taken, i: int, is_decoder: bool) -> dict[str, Tensor]:
    """Our block ``i`` (q/k/v fused), from the original names (cross-attention for a decoder)."""
    out: dict[str, Tensor] = {}
    p = f"layers.{i}"
    for kind in ("weight", "bias"):
        a = f"attentions.{i}"
        out[f"{p}.attn.qkv.{kind}"] = torch.cat(
            [take(f"{a}.q_lin.{kind}"), take(f"{a}.k_lin.{kind}"), take(f"{a}.v_lin.{kind}")], dim=0
        )
        out[f"{p}.attn.out.{kind}"] = take(f"{a}.out_lin.{kind}")
        out[f"{p}.norm1.{kind}"] = take(f"layer_norm1.{i}.{kind}")
        out[f"{p}.ffn.lin1.{kind}"] = take(f"ffns.{i}.lin1.{kind}")
        out[f"{p}.ffn.lin2.{kind}"] = take(f"ffns.{i}.lin2.{kind}")
        out[f"{p}.norm2.{kind}"] = take(f"layer_norm2.{i}.{kind}")
        if is_decoder:
            e = f"encoder_attn.{i}"
            out[f"{p}.cross_attn.q.{kind}"] = take(f"{e}.q_lin.{kind}")
            out[f"{p}.cross_attn.kv.{kind}"] = torch.cat([take(f"{e}.k_lin.{kind}"), take(f"{e}.v_lin.{kind}")], dim=0)
            out[f"{p}.cross_attn.out.{kind}"] = take(f"{e}.out_lin.{kind}")
            out[f"{p}.norm_cross.{kind}"] = take(f"layer_norm15.{i}.{kind}")
    return out


# --------------------------------------------------------------------------- BERT-family encoders


@dataclass(frozen=True)
class EncoderNames:
    """Where a BERT-family format keeps each of our weights. ``body`` prefixes the embeddings
    and the blocks (``roberta.``, ``bert.``, ``encoder.sentence_encoder.``); ``names`` maps our
    top-level names to theirs under ``body`` (``^`` marks a name outside it, e.g. the LM head);
    ``layer`` maps our per-block names to theirs under ``{body}{blocks}.{i}.``; ``qkv`` are
    their separate query/key/value layers; ``tied`` names copies of the embeddings (the
    output projection) and of ``pred_bias`` that must equal them when present."""

    body: str
    blocks: str
    names: Mapping[str, str]
    layer: Mapping[str, str]
    qkv: tuple[str, str, str]
    tied: Mapping[str, str]  # their name -> our name it must equal

    def full(self, theirs: str) -> str:
        return theirs[1:] if theirs.startswith("^") else self.body + theirs


_HF_LAYER = {
    "attn.out": "attention.output.dense",
    "norm1": "attention.output.LayerNorm",
    "ffn.lin1": "intermediate.dense",
    "ffn.lin2": "output.dense",
    "norm2": "output.LayerNorm",
}
_HF_QKV = ("attention.self.query", "attention.self.key", "attention.self.value")
_HF_EMBEDDINGS = {
    "embeddings.weight": "embeddings.word_embeddings.weight",
    "position_embeddings.weight": "embeddings.position_embeddings.weight",
    "token_type_embeddings.weight": "embeddings.token_type_embeddings.weight",
    "norm_emb.weight": "embeddings.LayerNorm.weight",
    "norm_emb.bias": "embeddings.LayerNorm.bias",
}

HF_ROBERTA = EncoderNames(
    body="roberta.",
    blocks="encoder.layer",
    names={
        **_HF_EMBEDDINGS,
        "head.dense.weight": "^lm_head.dense.weight",
        "head.dense.bias": "^lm_head.dense.bias",
        "head.norm.weight": "^lm_head.layer_norm.weight",
        "head.norm.bias": "^lm_head.layer_norm.bias",
        "pred_bias": "^lm_head.bias",
    },
    layer=_HF_LAYER,
    qkv=_HF_QKV,
    tied={"lm_head.decoder.weight": "embeddings.weight", "lm_head.decoder.bias": "pred_bias"},
)

HF_BERT = EncoderNames(
    body="bert.",
    blocks="encoder.layer",
    names={
        **_HF_EMBEDDINGS,
        "head.dense.weight": "^cls.predictions.transform.dense.weight",
        "head.dense.bias": "^cls.predictions.transform.dense.bias",
        "head.norm.weight": "^cls.predictions.transform.LayerNorm.weight",
        "head.norm.bias": "^cls.predictions.transform.LayerNorm.bias",
        "pred_bias": "^cls.predictions.bias",
    },
    layer=_HF_LAYER,
    qkv=_HF_QKV,
    tied={"cls.predictions.decoder.weight": "embeddings.weight", "cls.predictions.decoder.bias": "pred_bias"},
)


def fairseq_roberta(prefix: str = "encoder.") -> EncoderNames:
    """fairseq's RoBERTa / XLM-R names under ``prefix`` (``encoder.``; ``decoder.`` in the
    files of fairseq before 0.9, such as the first XLM-R release). fairseq has no token-type
    embedding: it is absent here and imported as zeros."""
    return EncoderNames(
        body=f"{prefix}sentence_encoder.",
        blocks="layers",
        names={
            "embeddings.weight": "embed_tokens.weight",
            "position_embeddings.weight": "embed_positions.weight",
            "norm_emb.weight": "emb_layer_norm.weight",
            "norm_emb.bias": "emb_layer_norm.bias",
            "head.dense.weight": f"^{prefix}lm_head.dense.weight",
            "head.dense.bias": f"^{prefix}lm_head.dense.bias",
            "head.norm.weight": f"^{prefix}lm_head.layer_norm.weight",
            "head.norm.bias": f"^{prefix}lm_head.layer_norm.bias",
            "pred_bias": f"^{prefix}lm_head.bias",
        },
        layer={
            "attn.out": "self_attn.out_proj",
            "norm1": "self_attn_layer_norm",
            "ffn.lin1": "fc1",
            "ffn.lin2": "fc2",
            "norm2": "final_layer_norm",
        },
        qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
        tied={f"{prefix}lm_head.weight": "embeddings.weight"},
    )


FAIRSEQ_ROBERTA = fairseq_roberta()


def to_encoder_layout(state: Mapping[str, Tensor], names: EncoderNames) -> dict[str, Tensor]:
    """Our state dict (arch ``xlmr`` / ``bert``) -> ``names``' layout (tied copies left out,
    as ``save_pretrained`` does)."""
    out: dict[str, Tensor] = {}
    for ours, theirs in names.names.items():
        if ours in state:
            out[names.full(theirs)] = state[ours]
    for i in range(count_layers(state, "layers")):
        block = f"{names.body}{names.blocks}.{i}."
        for kind in ("weight", "bias"):
            for part, tensor in zip(names.qkv, state[f"layers.{i}.attn.qkv.{kind}"].chunk(3, dim=0)):
                out[f"{block}{part}.{kind}"] = tensor
            for ours, theirs in names.layer.items():
                out[f"{block}{theirs}.{kind}"] = state[f"layers.{i}.{ours}.{kind}"]
    return {k: v.contiguous() for k, v in out.items()}


def from_encoder_layout(
    state: Mapping[str, Tensor], names: EncoderNames, source: str, optional: tuple[str, ...] = ()
) -> tuple[dict[str, Tensor], list[str]]:
    """``names``' layout -> our state dict; returns ``(state, names of theirs not used)``.

    Our weights in ``optional`` may be absent (the caller fills them in); the tied copies
    must equal what they copy (our output layer is tied)."""
    src = dict(state)
    out: dict[str, Tensor] = {}

    def take(theirs: str, ours: str) -> None:
        if theirs in src:
            out[ours] = src.pop(theirs)
        elif ours not in optional:
            raise CheckpointError(f"{source}: weight {theirs!r} is missing")

    for ours, theirs in names.names.items():
        take(names.full(theirs), ours)
    n_layers = count_layers(src, f"{names.body}{names.blocks}")
    if n_layers == 0:
        raise CheckpointError(f"{source}: no blocks {names.body}{names.blocks}.0.* (not this model's layout)")
    for i in range(n_layers):
        block = f"{names.body}{names.blocks}.{i}."
        for kind in ("weight", "bias"):
            qkv = []
            for part in names.qkv:
                if f"{block}{part}.{kind}" not in src:
                    raise CheckpointError(f"{source}: weight {block}{part}.{kind!r} is missing")
                qkv.append(src.pop(f"{block}{part}.{kind}"))
            out[f"layers.{i}.attn.qkv.{kind}"] = torch.cat(qkv, dim=0)
            for ours, theirs in names.layer.items():
                take(f"{block}{theirs}.{kind}", f"layers.{i}.{ours}.{kind}")
    for theirs, ours in names.tied.items():
        if theirs in src:
            copy = src.pop(theirs)
            if ours in out and (copy.shape != out[ours].shape or not torch.equal(copy, out[ours])):
                raise CheckpointError(
                    f"{source}: {theirs} is not tied to {ours} (ours is): this model cannot be represented by ours"
                )
    return {k: v.contiguous() for k, v in out.items()}, sorted(src)
