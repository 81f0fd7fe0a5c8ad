"""XLM-R and BERT checkpoints: ``transformers``' ``XLMRobertaForMaskedLM`` / ``XLMRobertaModel``
(``model_type`` ``xlm-roberta``) and ``BertForMaskedLM`` / ``BertModel`` (``bert``) directories,
both ways, for our networks of ``arch`` ``xlmr`` and ``bert``.

An exported directory holds ``config.json``, ``model.safetensors`` (the weights under
``transformers``' names, the tied output projection left out as ``save_pretrained`` does), the
tokenizer (``sentencepiece.bpe.model`` for ``XLMRobertaTokenizer``, ``vocab.txt`` for
``BertTokenizer``, each with its ``tokenizer_config.json``) and a ``README.md``. An imported
one becomes a checkpoint of ours with a sentencepiece- or wordpiece-kind vocabulary directory
(``vocab.json`` + ``vocab_info.json`` + the tokenizer file). Neither direction needs
``transformers``: both work on the files.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from xlm.errors import CheckpointError
from xlm.interop.common import VocabFiles, check_sizes, save_imported
from xlm.interop.layout import HF_BERT, HF_ROBERTA, EncoderNames, from_encoder_layout, to_encoder_layout
from xlm.model.pretrained import ANY_LANGUAGE, ModelInfo, Pretrained
from xlm.model.transformer import ModelConfig
from xlm.text.sentencepiece import SP_INFO_FILE, vocab_tokens
from xlm.text.vocab import (
    SENTENCEPIECE_FILE,
    SENTENCEPIECE_SPECIAL_TOKENS,
    WORDPIECE_FILE,
    WORDPIECE_SPECIAL_TOKENS,
)
from xlm.text.wordpiece import WP_INFO_FILE
from xlm.training.checkpoint import read_json, state_dict_for_saving, write_json


@dataclass(frozen=True)
class EncoderFormat:
    """How ``transformers`` writes one of our BERT-family networks."""

    arch: str
    model_type: str
    architecture: str  # the class written to config.json
    names: EncoderNames
    vocab_kind: str
    tokenizer_class: str
    tokenizer_file: str
    specials: Mapping[str, str]  # our roles -> tokens
    settings_file: str  # where our tokenizer reads its settings (lowercasing)


FORMATS = {
    "xlmr": EncoderFormat(
        "xlmr", "xlm-roberta", "XLMRobertaForMaskedLM", HF_ROBERTA, "sentencepiece",
        "XLMRobertaTokenizer", SENTENCEPIECE_FILE, SENTENCEPIECE_SPECIAL_TOKENS, SP_INFO_FILE,
    ),
    "bert": EncoderFormat(
        "bert", "bert", "BertForMaskedLM", HF_BERT, "wordpiece", "BertTokenizer", WORDPIECE_FILE, WORDPIECE_SPECIAL_TOKENS,
        WP_INFO_FILE,
    ),
}  # fmt: skip
MODEL_TYPES = {f.model_type: f for f in FORMATS.values()}


# --------------------------------------------------------------------------- tokenizer files


def sentencepiece_tokens(path: Path) -> list[str]:
    """XLM-R's vocabulary of a SentencePiece model: ``<s> <pad> </s> <unk>``, the model's
    pieces from id 3 on (at id + 1), and ``<mask>`` last."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (the SentencePiece model of the vocabulary)")
    try:
        import sentencepiece as spm
    except ImportError as e:
        raise CheckpointError(f"{path}: reading a SentencePiece model needs the sentencepiece package") from e
    sp = spm.SentencePieceProcessor()
    try:
        sp.LoadFromSerializedProto(path.read_bytes())
    except (RuntimeError, OSError) as e:
        raise CheckpointError(f"{path}: not a SentencePiece model ({str(e).strip().splitlines()[0]})") from None
    if (sp.unk_id(), sp.bos_id(), sp.eos_id()) != (0, 1, 2):
        raise CheckpointError(
            f"{path}: <unk>={sp.unk_id()} <s>={sp.bos_id()} </s>={sp.eos_id()}, but XLM-R's SentencePiece models have 0, 1, 2"
        )
    return vocab_tokens(sp)


def wordpiece_tokens(path: Path) -> list[str]:
    """BERT's ``vocab.txt``: one token per line, id = line number."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (BERT's WordPiece vocabulary)")
    tokens = path.read_text(encoding="utf-8").split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    seen: set[str] = set()
    for n, tok in enumerate(tokens, 1):
        if not tok.strip() or tok in seen:
            raise CheckpointError(f"{path}:{n}: {'an empty' if not tok.strip() else 'a repeated'} token {tok!r}")
        seen.add(tok)
    return tokens


def tokenizer_json_wordpiece(path: Path) -> list[str]:
    """BERT's vocabulary from a ``tokenizer.json`` (what transformers 5's ``save_pretrained``
    writes instead of ``vocab.txt``): its WordPiece model's ``vocab``, in id order."""
    data = read_json(path)
    model = data.get("model") if isinstance(data, dict) else None
    vocab = model.get("vocab") if isinstance(model, dict) and model.get("type") == "WordPiece" else None
    if not isinstance(vocab, dict) or sorted(vocab.values()) != list(range(len(vocab))):
        raise CheckpointError(f"{path}: not a WordPiece tokenizer with ids 0..n-1 (and there is no vocab.txt)")
    return sorted(vocab, key=vocab.__getitem__)


def read_tokens(fmt: EncoderFormat, directory: Path) -> list[str]:
    path = directory / fmt.tokenizer_file
    if fmt.vocab_kind == "sentencepiece":
        if not path.is_file() and (directory / "tokenizer.json").is_file():
            raise CheckpointError(
                f"{path}: missing; tokenizer.json alone cannot be turned back into a SentencePiece model "
                "(copy the model's sentencepiece.bpe.model into the directory)"
            )
        return sentencepiece_tokens(path)
    if not path.is_file() and (directory / "tokenizer.json").is_file():
        return tokenizer_json_wordpiece(directory / "tokenizer.json")
    return wordpiece_tokens(path)


def vocab_files(fmt: EncoderFormat, directory: Path, tokens: list[str], lowercase: bool = False) -> VocabFiles:
    path = directory / fmt.tokenizer_file
    missing = [t for t in fmt.specials.values() if t not in tokens]
    if missing:
        raise CheckpointError(
            f"{path}: the special tokens {missing} of {fmt.tokenizer_class} are not in the vocabulary"
        )
    settings = {"lowercase_and_remove_accent": lowercase, "imported_from": str(directory.resolve())}
    return VocabFiles(
        tokens,
        kind=fmt.vocab_kind,
        specials=dict(fmt.specials),
        copies={fmt.tokenizer_file: path} if path.is_file() else {},
        texts={} if path.is_file() else {fmt.tokenizer_file: "".join(f"{t}\n" for t in tokens)},
        settings={fmt.settings_file: settings},
        source=str(path),
    )


# --------------------------------------------------------------------------- export


def hf_config(fmt: EncoderFormat, cfg: ModelConfig, specials: Mapping[str, int]) -> dict[str, Any]:
    """``config.json`` of ``XLMRobertaForMaskedLM`` / ``BertForMaskedLM`` for a model of ours."""
    out: dict[str, Any] = {
        "architectures": [fmt.architecture],
        "model_type": fmt.model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.emb_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "intermediate_size": cfg.ffn_size(),
        "hidden_act": "gelu",
        "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout,
        "max_position_embeddings": cfg.position_rows(),
        "type_vocab_size": cfg.n_token_types(),
        "layer_norm_eps": cfg.norm_eps(),
        "initializer_range": 0.02,
        "position_embedding_type": "absolute",
        "pad_token_id": cfg.pad_index,
        "tie_word_embeddings": True,
        "dtype": "float32",
    }
    if fmt.arch == "xlmr":
        out.update(bos_token_id=specials["start"], eos_token_id=specials["end"])
    return out


def hf_tokenizer_config(fmt: EncoderFormat, cfg: ModelConfig, lowercase: bool) -> dict[str, Any]:
    s = fmt.specials
    out: dict[str, Any] = {
        "tokenizer_class": fmt.tokenizer_class,
        "cls_token": s["start"],
        "sep_token": s["end"],
        "pad_token": s["pad"],
        "unk_token": s["unk"],
        "mask_token": s["mask"],
        "model_max_length": cfg.max_positions,
    }
    if fmt.arch == "xlmr":
        out.update(bos_token=s["start"], eos_token=s["end"])
    else:
        out.update(do_lower_case=lowercase, strip_accents=None, tokenize_chinese_chars=True)
    return out


def model_card(fmt: EncoderFormat, pre: Pretrained, source: str) -> str:
    cfg = pre.info.config
    s = fmt.specials
    return f"""# {fmt.architecture} exported by `xlm export`

Source checkpoint: `{source}` (our network `arch = "{cfg.arch}"`). Size: hidden_size={cfg.emb_dim},
{cfg.n_layers} layers, {cfg.n_heads} heads, a {pre.vocab.kind} vocabulary of {cfg.vocab_size} tokens,
up to {cfg.max_positions} tokens per sequence. No language embeddings: the text's language is not an input.

Input format: a sentence is `{s["start"]} w1 ... wn {s["end"]}`, as `{fmt.tokenizer_class}` builds it.

```python
from transformers import AutoModelForMaskedLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained("THIS_DIR")
model = AutoModelForMaskedLM.from_pretrained("THIS_DIR").eval()
batch = tok(["Le chat dort.", "The cat is asleep on the mat."], padding=True, return_tensors="pt")
logits = model(**batch).logits
```
"""


def export_encoder(pre: Pretrained, tmp: Path, source: str) -> None:
    """Fill ``tmp`` with the ``transformers`` directory of ``pre`` (arch ``xlmr`` / ``bert``)."""
    cfg = pre.info.config
    fmt = FORMATS[cfg.arch]
    state = state_dict_for_saving(pre.model)
    if any(".cross_attn." in k for k in state):
        raise CheckpointError(f"{source}: a decoder (with cross-attention) cannot be exported as {fmt.architecture}")
    if pre.vocab.kind != fmt.vocab_kind:
        raise CheckpointError(
            f"{source}: an {cfg.arch} model is exported with a {fmt.vocab_kind} vocabulary ({fmt.tokenizer_class}), "
            f"but this one is {pre.vocab.kind}"
        )
    ids = pre.vocab.specials.ids()
    for role, token in fmt.specials.items():
        if pre.vocab.token(ids[role]) != token:
            raise CheckpointError(
                f"{source}: the {role} token is {pre.vocab.token(ids[role])!r}, {fmt.tokenizer_class} uses {token!r}"
            )
    if ids["pad"] != cfg.pad_index:
        raise CheckpointError(
            f"{source}: the model pads with id {cfg.pad_index} but the vocabulary's <pad> is {ids['pad']}"
        )
    save_file(to_encoder_layout(state, fmt.names), str(tmp / "model.safetensors"), metadata={"format": "pt"})
    write_json(tmp / "config.json", hf_config(fmt, cfg, ids))
    write_json(tmp / "tokenizer_config.json", hf_tokenizer_config(fmt, cfg, pre.info.lowercase_and_remove_accent))
    shutil.copyfile(pre.directory / fmt.tokenizer_file, tmp / fmt.tokenizer_file)
    (tmp / "README.md").write_text(model_card(fmt, pre, source), encoding="utf-8")


# --------------------------------------------------------------------------- import


def model_config_from_encoder(fmt: EncoderFormat, config: Mapping[str, Any], source: str) -> ModelConfig:
    """Our ModelConfig from an ``XLMRobertaConfig`` / ``BertConfig`` dict; what ours lacks is refused."""
    act = config.get("hidden_act", "gelu")
    if act != "gelu":
        raise CheckpointError(f"{source}: hidden_act={act!r}; ours is 'gelu' (exact)")
    pos = config.get("position_embedding_type", "absolute")
    if pos != "absolute":
        raise CheckpointError(f"{source}: position_embedding_type={pos!r}; ours is 'absolute'")
    if config.get("is_decoder") or config.get("add_cross_attention"):
        raise CheckpointError(f"{source}: a decoder; ours reads encoders only")
    try:
        pad = int(config.get("pad_token_id", 1 if fmt.arch == "xlmr" else 0))
        cfg = ModelConfig(
            arch=fmt.arch,
            vocab_size=int(config["vocab_size"]),
            n_langs=1,
            emb_dim=int(config.get("hidden_size", 768)),
            n_layers=int(config.get("num_hidden_layers", 12)),
            n_heads=int(config.get("num_attention_heads", 12)),
            ffn_dim=int(config.get("intermediate_size", 3072)),
            dropout=float(config.get("hidden_dropout_prob", 0.1)),
            attention_dropout=float(config.get("attention_probs_dropout_prob", 0.1)),
            max_positions=int(config.get("max_position_embeddings", 512)) - (pad + 1 if fmt.arch == "xlmr" else 0),
            pad_index=pad,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: invalid {fmt.model_type} configuration: {e}") from None
    eps = float(config.get("layer_norm_eps", cfg.norm_eps()))
    if not math.isclose(eps, cfg.norm_eps(), rel_tol=1e-6):
        raise CheckpointError(f"{source}: layer_norm_eps={eps}, but our {fmt.arch} network uses {cfg.norm_eps()}")
    types = int(config.get("type_vocab_size", cfg.n_token_types()))
    if types != cfg.n_token_types():
        raise CheckpointError(
            f"{source}: type_vocab_size={types}, but our {fmt.arch} network has {cfg.n_token_types()}"
        )
    if cfg.emb_dim % cfg.n_heads:
        raise CheckpointError(
            f"{source}: hidden_size {cfg.emb_dim} is not divisible by num_attention_heads {cfg.n_heads}"
        )
    return cfg


HEAD_WEIGHTS = ("head.dense.weight", "head.dense.bias", "head.norm.weight", "head.norm.bias", "pred_bias")


def fill_missing_head(state: dict[str, Tensor], cfg: ModelConfig) -> bool:
    """A bare encoder (``XLMRobertaModel``, ``BertModel``) has no LM head: start one as our
    initialisation does (seeded, so an import is reproducible). Returns whether it did."""
    if all(k in state for k in HEAD_WEIGHTS):
        return False
    d = cfg.emb_dim
    g = torch.Generator().manual_seed(0)
    state.update({
        "head.dense.weight": torch.randn(d, d, generator=g) * 0.02,
        "head.dense.bias": torch.zeros(d),
        "head.norm.weight": torch.ones(d),
        "head.norm.bias": torch.zeros(d),
        "pred_bias": torch.zeros(cfg.vocab_size),
    })  # fmt: skip
    return True


def split_encoder_state(
    fmt: EncoderFormat, tensors: Mapping[str, Tensor], source: str
) -> tuple[dict[str, Tensor], list[str], list[str]]:
    """``(our state, notes, ignored names)`` of the weights of a ``transformers`` directory:
    with the task model's prefix (``roberta.``, ``bert.``) or without (a bare ``XLMRobertaModel``)."""
    names = fmt.names
    tensors = {k: v for k, v in tensors.items() if not k.endswith(("position_ids", "token_type_ids"))}
    if not any(k.startswith(names.body) for k in tensors):
        names = replace(names, body="")
    state, ignored = from_encoder_layout(tensors, names, source, optional=HEAD_WEIGHTS)
    notes = []
    if ignored:
        notes.append(f"ignored {len(ignored)} weights of other heads: {', '.join(ignored[:5])}")
    return state, notes, ignored


def check_vocab_rows(
    tokens: list[str], cfg: ModelConfig, state: Mapping[str, Tensor], vocab_path: Path, weights: str
) -> None:
    rows = int(state["embeddings.weight"].shape[0])
    if len(tokens) != rows:
        raise CheckpointError(f"{vocab_path}: {len(tokens)} tokens, but the embeddings of {weights} have {rows} rows")
    if rows != cfg.vocab_size:
        raise CheckpointError(
            f"{weights}: the embeddings have {rows} rows, but config.json says vocab_size={cfg.vocab_size}"
        )


def import_encoder(
    src: Path,
    config: Mapping[str, Any],
    tensors: Mapping[str, Tensor],
    out: Path,
    langs: list[str] | None,
    overwrite: bool,
) -> tuple[ModelConfig, dict[str, int], bool, list[str]]:
    """A ``transformers`` XLM-R / BERT directory (config and weights already read) -> a
    checkpoint of ours. Returns ``(config, lang2id, lowercase, notes)``."""
    fmt = MODEL_TYPES[str(config.get("model_type"))]
    cfg = model_config_from_encoder(fmt, config, str(src / "config.json"))
    state, notes, _ = split_encoder_state(fmt, tensors, str(src))
    tokens = read_tokens(fmt, src)
    check_vocab_rows(tokens, cfg, state, src / fmt.tokenizer_file, str(src))
    if fill_missing_head(state, cfg):
        notes.append("no LM head (a bare encoder): the MLM head starts from our initialisation")
    check_sizes(cfg, state, str(src))
    tok_path = src / "tokenizer_config.json"
    tok_config = read_json(tok_path) if tok_path.is_file() else {}
    lowercase = False
    if fmt.arch == "bert":
        lowercase = bool(tok_config.get("do_lower_case", True))
        if "do_lower_case" not in tok_config:
            notes.append("tokenizer_config.json does not say do_lower_case: True, BertTokenizer's default")
    lang2id = {lang: i for i, lang in enumerate(langs or [])}
    info = ModelInfo(
        cfg,
        lang2id,
        lowercase,
        {"imported_from": {"format": "huggingface", "path": str(src.resolve())}, ANY_LANGUAGE: not lang2id},
    )
    save_imported(
        out, {k: v.float() for k, v in state.items()}, info, vocab_files(fmt, src, tokens, lowercase), overwrite
    )
    return cfg, lang2id, lowercase, notes
