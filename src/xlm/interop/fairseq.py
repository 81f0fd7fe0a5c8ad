"""fairseq's XLM-R release layout: a directory with ``model.pt`` (``torch.save`` of a dict:
``model`` the state dict, ``args`` an ``argparse.Namespace`` of the training options, or
``cfg`` in later fairseq), ``dict.txt`` (fairseq's dictionary: ``token count`` lines, ids from
4 after ``<s> <pad> </s> <unk>``; the masked-LM task appends ``<mask>``) and
``sentencepiece.bpe.model``. ``model.pt`` is read without running code (see
:func:`xlm.interop.common.safe_torch_load`).

fairseq's RoBERTa has no token-type embedding; the imported model gets a zero one (what
``transformers``' conversion script does), which leaves every output unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from xlm.errors import CheckpointError
from xlm.interop.common import check_output_dir, check_sizes, safe_torch_load, save_imported, strip_module_prefix
from xlm.interop.encoders import FORMATS, check_vocab_rows, sentencepiece_tokens, vocab_files
from xlm.interop.layout import fairseq_roberta, from_encoder_layout
from xlm.model.pretrained import ANY_LANGUAGE, ModelInfo
from xlm.model.transformer import ModelConfig
from xlm.text.sentencepiece import FAIRSEQ_HEAD, N_SP_CONTROL

FAIRSEQ_MODEL = "model.pt"
FAIRSEQ_DICT = "dict.txt"
FAIRSEQ_PAD = 1
HEADS_BY_ARCH = {"roberta_base": 12, "xlm_base": 12, "roberta_large": 16, "xlm_large": 16}


@dataclass
class FairseqImportReport:
    directory: Path
    config: ModelConfig
    lang2id: dict[str, int]
    notes: list[str] = field(default_factory=list)


def read_fairseq_dict(path: Path) -> list[str]:
    """Tokens of a fairseq ``dict.txt`` in id order, from id 4 (``token count [#fairseq:overwrite]``)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (fairseq's dictionary)")
    tokens: list[str] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        parts = line.rstrip().rsplit(" ", 2 if line.rstrip().endswith("#fairseq:overwrite") else 1)
        if len(parts) < 2 or not parts[1].lstrip("-").isdigit():
            raise CheckpointError(f"{path}:{n}: expected 'token count', got {line!r}")
        tokens.append(parts[0])
    return tokens


def fairseq_options(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """The model's options: ``args`` (a Namespace, read as data) or ``cfg["model"]``."""
    args = ckpt.get("args")
    if args is not None:
        return dict(vars(args)) if hasattr(args, "__dict__") else dict(args) if isinstance(args, Mapping) else {}
    cfg = ckpt.get("cfg")
    if isinstance(cfg, Mapping):
        model = cfg.get("model")
        return dict(vars(model)) if hasattr(model, "__dict__") else dict(model) if isinstance(model, Mapping) else {}
    return {}


def fairseq_config(opts: Mapping[str, Any], state: Mapping[str, Tensor], source: str, notes: list[str]) -> ModelConfig:
    act = opts.get("activation_fn", "gelu")
    if act != "gelu":
        raise CheckpointError(f"{source}: activation_fn={act!r}; ours is 'gelu'")
    if opts.get("encoder_normalize_before"):
        raise CheckpointError(f"{source}: encoder_normalize_before=True (pre-LN); XLM-R and ours are post-LN")
    vocab, dim = state["embeddings.weight"].shape
    heads = opts.get("encoder_attention_heads") or HEADS_BY_ARCH.get(str(opts.get("arch")))
    if not heads:
        heads = max(1, int(dim) // 64)
        notes.append(f"the options do not give encoder_attention_heads: {heads} (hidden size / 64, as XLM-R's)")
    rows = int(state["position_embeddings.weight"].shape[0])
    try:
        return ModelConfig(
            arch="xlmr",
            vocab_size=int(vocab),
            n_langs=1,
            emb_dim=int(dim),
            n_layers=sum(1 for k in state if k.endswith(".attn.qkv.weight")),
            n_heads=int(heads),
            ffn_dim=int(state["layers.0.ffn.lin1.weight"].shape[0]),
            dropout=float(opts.get("dropout", 0.1)),
            attention_dropout=float(opts.get("attention_dropout", 0.1)),
            max_positions=rows - FAIRSEQ_PAD - 1,
            pad_index=FAIRSEQ_PAD,
        )
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: invalid options: {e}") from None


def fairseq_vocab(directory: Path) -> list[str]:
    """Our token list from ``dict.txt`` (the reference for the ids), checked against the
    SentencePiece model (dictionary token ``k`` must be piece ``k + 3``)."""
    words = read_fairseq_dict(directory / FAIRSEQ_DICT)
    pieces = sentencepiece_tokens(directory / FORMATS["xlmr"].tokenizer_file)[len(FAIRSEQ_HEAD) : -1]
    for k, (w, p) in enumerate(zip(words, pieces)):
        if w != p:
            raise CheckpointError(
                f"{directory / FAIRSEQ_DICT}: token id {k + len(FAIRSEQ_HEAD)} is {w!r} but the SentencePiece "
                f"model's piece {k + N_SP_CONTROL} is {p!r}: the two files are not of one vocabulary"
            )
    return [*FAIRSEQ_HEAD, *words, "<mask>"]


def import_fairseq(
    directory: str | Path, out: str | Path, trust_pickle: bool = False, overwrite: bool = False
) -> FairseqImportReport:
    """A fairseq XLM-R directory (``model.pt`` + ``dict.txt`` + ``sentencepiece.bpe.model``)
    -> a checkpoint of ours (arch ``xlmr``)."""
    src, out = Path(directory), Path(out)
    if not src.is_dir():
        raise CheckpointError(
            f"{src}: not a directory (expected {FAIRSEQ_MODEL}, {FAIRSEQ_DICT} and sentencepiece.bpe.model)"
        )
    check_output_dir(out, overwrite)
    path = src / FAIRSEQ_MODEL
    ckpt = safe_torch_load(path, trust_pickle)
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("model"), Mapping):
        raise CheckpointError(f"{path}: expected a dict with the state dict under 'model'")
    raw = strip_module_prefix(ckpt["model"])
    bad = [k for k, v in raw.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{path}: model entries that are not tensors: {bad[:5]}")
    prefix = next((p for p in ("encoder.", "decoder.") if f"{p}sentence_encoder.embed_tokens.weight" in raw), None)
    if prefix is None:
        raise CheckpointError(f"{path}: no sentence_encoder.embed_tokens.weight: not a fairseq RoBERTa / XLM-R model")
    names = fairseq_roberta(prefix)
    if f"{names.body}layernorm_embedding.weight" in raw:  # the name of later fairseq versions
        emb_norm = {k: f"{names.body}layernorm_embedding.{k.rsplit('.', 1)[1]}" for k in ("weight", "bias")}
        names = replace(
            names, names={**names.names, **{f"norm_emb.{k}": v[len(names.body) :] for k, v in emb_norm.items()}}
        )
    raw = {k: v for k, v in raw.items() if not k.endswith((".version", "_float_tensor"))}
    state, ignored = from_encoder_layout(raw, names, str(path))
    notes = [f"ignored {len(ignored)} weights of other heads: {', '.join(ignored[:5])}"] if ignored else []
    opts = fairseq_options(ckpt)
    cfg = fairseq_config(opts, state, str(path), notes)
    state["token_type_embeddings.weight"] = torch.zeros(1, cfg.emb_dim, dtype=state["embeddings.weight"].dtype)
    tokens = fairseq_vocab(src)
    check_vocab_rows(tokens, cfg, state, src / FAIRSEQ_DICT, str(path))
    check_sizes(cfg, state, str(path))
    info = ModelInfo(
        cfg, {}, False, {"imported_from": {"format": "fairseq", "path": str(src.resolve())}, ANY_LANGUAGE: True}
    )
    files = vocab_files(FORMATS["xlmr"], src, tokens)
    save_imported(out, {k: v.float() for k, v in state.items()}, info, files, overwrite)
    return FairseqImportReport(out, cfg, {}, notes)
