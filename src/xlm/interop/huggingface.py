"""Hugging Face ``transformers`` XLM format: export a checkpoint of ours, import one of theirs.
(XLM-R and BERT directories are in :mod:`xlm.interop.encoders`; the entry points here
dispatch on the model's ``arch`` / the directory's ``model_type``.)

An exported directory holds ``config.json`` (an ``XLMConfig``), ``model.safetensors`` (the
weights of ``XLMWithLMHeadModel``), ``vocab.json`` + ``merges.txt`` + ``tokenizer_config.json``
(an ``XLMTokenizer``), and a ``README.md`` model card. ``transformers`` is not needed to write
or read these files: both directions work on the files alone.

Sentences are fed as ``</s> w1 ... wn </s>`` (id 1 first, as the original XLM was trained,
not ``<s>``). The exported tokenizer_config sets ``bos_token`` to ``</s>`` so that
``XLMTokenizer``'s ``build_inputs_with_special_tokens`` produces exactly that. Note that
``XLMTokenizer.__call__`` / ``tokenize`` drop their ``lang`` argument (every language gets the
English Moses rules); ``_tokenize(text, lang=...)`` honours it (see the model card).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from xlm.checkpoint_io import read_json, state_dict_for_saving
from xlm.errors import CheckpointError
from xlm.fileio import replace_directory, write_json
from xlm.interop.common import (
    XLM_FEATURES,
    VocabFiles,
    check_features,
    check_output_dir,
    check_sizes,
    merges_outside_vocab,
    outside_note,
    safe_torch_load,
    save_imported,
)
from xlm.interop.encoders import MODEL_TYPES, export_encoder, import_encoder
from xlm.interop.layout import from_xlm_layout, to_xlm_layout
from xlm.model.pretrained import ENCODER_DECODER, MODEL_JSON, ModelInfo, load_pretrained
from xlm.model.transformer import ModelConfig
from xlm.text.bpe import read_merges
from xlm.text.vocab import (
    BOS_INDEX,
    BOS_WORD,
    EOS_INDEX,
    EOS_WORD,
    MASK_INDEX,
    MASK_WORD,
    MERGES_FILE,
    PAD_INDEX,
    PAD_WORD,
    SPECIAL_TOKENS,
    SPECIAL_WORDS,
    UNK_INDEX,
    UNK_WORD,
    VOCAB_FILE,
)

HF_CONFIG = "config.json"
HF_WEIGHTS = "model.safetensors"
HF_WEIGHTS_INDEX = "model.safetensors.index.json"
HF_TORCH_WEIGHTS = "pytorch_model.bin"
HF_TOKENIZER_CONFIG = "tokenizer_config.json"
HF_MODEL_CARD = "README.md"
HF_PREFIX = "transformer."
LAYER_NORM_EPS = 1e-12  # our LayerNorms; XLMConfig's default too


# --------------------------------------------------------------------------- export


def hf_config(info: ModelInfo) -> dict[str, Any]:
    """The ``config.json`` of ``XLMWithLMHeadModel`` for a model of ours."""
    cfg = info.config
    id2lang = {str(i): lang for lang, i in sorted(info.lang2id.items(), key=lambda kv: kv[1])}
    return {
        "architectures": ["XLMWithLMHeadModel"],
        "model_type": "xlm",
        "vocab_size": cfg.vocab_size,
        "emb_dim": cfg.emb_dim,
        "n_layers": cfg.n_layers,
        "n_heads": cfg.n_heads,
        "dropout": cfg.dropout,
        "attention_dropout": cfg.attention_dropout,
        "gelu_activation": True,
        "sinusoidal_embeddings": cfg.sinusoidal_embeddings,
        "causal": False,
        "asm": False,
        "n_langs": cfg.n_langs,
        "use_lang_emb": cfg.use_lang_emb,
        "lang2id": dict(info.lang2id),
        "id2lang": id2lang,
        "lang_id": 0,
        "max_position_embeddings": cfg.max_positions,
        "layer_norm_eps": LAYER_NORM_EPS,
        "embed_init_std": cfg.emb_dim**-0.5,
        "is_encoder": True,
        "bos_token_id": BOS_INDEX,
        "eos_token_id": EOS_INDEX,
        "pad_token_id": cfg.pad_index,
        "unk_index": UNK_INDEX,
        "mask_index": MASK_INDEX,
        "mask_token_id": MASK_INDEX,
        "tie_word_embeddings": True,
        "dtype": "float32",
    }


def hf_tokenizer_config(info: ModelInfo) -> dict[str, Any]:
    """``tokenizer_config.json`` for ``XLMTokenizer``: ``bos_token`` is ``</s>`` so that
    sentences are built as ``</s> w1 ... wn </s>``, as the model was trained."""
    id2lang = {str(i): lang for lang, i in sorted(info.lang2id.items(), key=lambda kv: kv[1])}
    return {
        "tokenizer_class": "XLMTokenizer",
        "do_lowercase_and_remove_accent": info.lowercase_and_remove_accent,
        "lang2id": dict(info.lang2id),
        "id2lang": id2lang,
        "bos_token": EOS_WORD,
        "sep_token": EOS_WORD,
        "cls_token": EOS_WORD,
        "pad_token": PAD_WORD,
        "unk_token": UNK_WORD,
        "mask_token": MASK_WORD,
        "extra_special_tokens": [BOS_WORD, *SPECIAL_WORDS],
        "model_max_length": info.config.max_positions,
    }


def model_card(info: ModelInfo, source: str) -> str:
    langs = ", ".join(f"`{lang}`={i}" for lang, i in sorted(info.lang2id.items(), key=lambda kv: kv[1]))
    cfg = info.config
    lang_note = (
        "Pass `langs` (a tensor like `input_ids`, filled with the sentence's language id)."
        if cfg.use_lang_emb and cfg.n_langs > 1
        else "This model has no language embeddings: `langs` is not needed (and ignored)."
    )
    return f"""# XLM model exported by `xlm export`

Source checkpoint: `{source}`. Languages (language ids): {langs}.
Size: emb_dim={cfg.emb_dim}, n_layers={cfg.n_layers}, n_heads={cfg.n_heads}, vocabulary of {cfg.vocab_size} BPE tokens,
up to {cfg.max_positions} positions. Text is {"lowercased and stripped of accents" if info.lowercase_and_remove_accent else "kept in its case and accents"}
before BPE (`do_lowercase_and_remove_accent` in tokenizer_config.json).

Input format: a sentence is `</s> w1 ... wn </s>` — it *starts* with `</s>` (id 1), as the
original XLM models were trained, not with `<s>` (id 0). The tokenizer here is configured
(`bos_token` = `</s>`) so that `build_inputs_with_special_tokens` (and `tokenizer(text)`)
builds exactly this.

Language of the text: `XLMTokenizer._tokenize(text, lang=...)` applies the Moses rules of
`lang`, but `tokenizer(text, lang=...)` / `tokenizer.tokenize(text, lang=...)` do not pass
`lang` on (transformers 4.x and 5.x) and tokenize every language with the English rules
(e.g. French `l'objet` becomes `l 'objet` instead of `l' objet`). To get the ids the model
was trained on:

```python
import torch
from transformers import XLMTokenizer, XLMWithLMHeadModel

tok = XLMTokenizer.from_pretrained("THIS_DIR")
model = XLMWithLMHeadModel.from_pretrained("THIS_DIR").eval()

def encode(text: str, lang: str) -> list[int]:
    return tok.build_inputs_with_special_tokens(tok.convert_tokens_to_ids(tok._tokenize(text, lang=lang)))

ids = torch.tensor([encode("Le chat dort.", "fr")])
langs = torch.full_like(ids, tok.lang2id["fr"])
logits = model(input_ids=ids, langs=langs).logits
```

{lang_note} With padding, pass `attention_mask` as usual.
"""


def export_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our state dict -> ``XLMWithLMHeadModel`` names (the tied output weight is left out, as
    ``save_pretrained`` does)."""
    xlm = to_xlm_layout(state)
    out = {f"{HF_PREFIX}{k}": v for k, v in xlm.items() if not k.startswith("pred_layer.")}
    out["pred_layer.proj.bias"] = xlm["pred_layer.proj.bias"]
    return out


def check_exportable(info: ModelInfo, state: Mapping[str, Tensor], source: str) -> None:
    cfg = info.config
    if cfg.ffn_size() != 4 * cfg.emb_dim:
        raise CheckpointError(
            f"{source}: ffn_dim={cfg.ffn_size()} but transformers' XLM always uses 4 x emb_dim = {4 * cfg.emb_dim}"
        )
    if cfg.pad_index != PAD_INDEX:
        raise CheckpointError(f"{source}: pad_index={cfg.pad_index}; the XLM format needs {PAD_INDEX}")
    if any(".cross_attn." in k for k in state):
        raise CheckpointError(
            f"{source}: a decoder (with cross-attention) cannot be exported: transformers' XLM is encoder-only"
        )
    if cfg.n_langs > 1 and len(info.lang2id) != cfg.n_langs:
        raise CheckpointError(f"{source}: n_langs={cfg.n_langs} but model.json lists {len(info.lang2id)} languages")


@dataclass
class ExportReport:
    directory: Path
    files: list[str]
    n_parameters: int


def export_hf(checkpoint: str | Path, out: str | Path, overwrite: bool = False) -> ExportReport:
    """Write checkpoint ``checkpoint`` (ours) as a Hugging Face XLM directory ``out``."""
    model_json = Path(checkpoint) / MODEL_JSON
    if model_json.is_file() and read_json(model_json).get("architecture") == ENCODER_DECODER:
        raise CheckpointError(
            f"{checkpoint}: a translation model (encoder-decoder) cannot be exported: transformers' XLM is encoder-only"
        )
    pre = load_pretrained(checkpoint)
    if pre.info.config.arch != "xlm":
        directory = write_directory(Path(out), lambda tmp: export_encoder(pre, tmp, str(checkpoint)), overwrite)
        return ExportReport(directory, sorted(p.name for p in directory.iterdir()), pre.model.num_parameters())
    state = state_dict_for_saving(pre.model)
    check_exportable(pre.info, state, str(checkpoint))
    tensors = export_state_dict(state)

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / HF_WEIGHTS), metadata={"format": "pt"})
        write_json(tmp / HF_CONFIG, hf_config(pre.info))
        write_json(tmp / HF_TOKENIZER_CONFIG, hf_tokenizer_config(pre.info))
        for name in (VOCAB_FILE, MERGES_FILE):
            shutil.copyfile(pre.directory / name, tmp / name)
        (tmp / HF_MODEL_CARD).write_text(model_card(pre.info, str(checkpoint)), encoding="utf-8")

    directory = write_directory(Path(out), write, overwrite)
    return ExportReport(directory, sorted(p.name for p in directory.iterdir()), pre.model.num_parameters())


def write_directory(out: Path, write: Callable[[Path], None], overwrite: bool) -> Path:
    """Fill a temporary sibling folder with ``write`` and rename it to ``out`` when complete."""
    check_output_dir(out, overwrite)
    return replace_directory(out, write)


# --------------------------------------------------------------------------- import


def read_hf_weights(directory: Path, trust_pickle: bool = False) -> dict[str, Tensor]:
    """Tensors of a Hugging Face model directory: ``model.safetensors``, sharded safetensors
    (``model.safetensors.index.json``) or ``pytorch_model.bin`` (read without running code)."""
    single, index, legacy = directory / HF_WEIGHTS, directory / HF_WEIGHTS_INDEX, directory / HF_TORCH_WEIGHTS
    if single.is_file():
        return _load_safetensors(single)
    if index.is_file():
        shards = sorted(set(read_json(index).get("weight_map", {}).values()))
        if not shards:
            raise CheckpointError(f"{index}: no weight_map")
        tensors: dict[str, Tensor] = {}
        for shard in shards:
            tensors.update(_load_safetensors(directory / shard))
        return tensors
    if legacy.is_file():
        state = safe_torch_load(legacy, trust_pickle)
        if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
            raise CheckpointError(f"{legacy}: expected a state dict of tensors")
        return dict(state)
    raise CheckpointError(f"{directory}: no weights ({HF_WEIGHTS}, {HF_WEIGHTS_INDEX} or {HF_TORCH_WEIGHTS})")


def _load_safetensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read tensors: {e}") from None


def split_hf_state(tensors: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Keep the XLM body (``transformer.*``, or unprefixed for a bare ``XLMModel``) and the LM
    head ``pred_layer.proj``; return ``(state in the original names, ignored names)``."""
    prefixed = any(k.startswith(HF_PREFIX) for k in tensors)
    state: dict[str, Tensor] = {}
    ignored: list[str] = []
    for k, v in tensors.items():
        if k.endswith("position_ids"):
            continue
        if k.startswith("pred_layer.proj."):
            state[k] = v
        elif prefixed and k.startswith(HF_PREFIX):
            state[k[len(HF_PREFIX) :]] = v
        elif not prefixed and k.split(".")[0] in _XLM_BODY:
            state[k] = v
        else:
            ignored.append(k)
    return state, sorted(ignored)


_XLM_BODY = {
    "embeddings", "position_embeddings", "lang_embeddings", "layer_norm_emb",
    "attentions", "layer_norm1", "ffns", "layer_norm2",
}  # fmt: skip


def model_config_from_hf(config: Mapping[str, Any], source: str) -> ModelConfig:
    """Our ModelConfig from an ``XLMConfig`` dict; features ours lacks are refused clearly."""
    if config.get("model_type") != "xlm":
        known = ", ".join(repr(t) for t in ("xlm", *MODEL_TYPES))
        raise CheckpointError(f"{source}: model_type is {config.get('model_type')!r}, not one of {known}")
    check_features(config, (*XLM_FEATURES, ("is_encoder", True, "a decoder")), source)
    eps = float(config.get("layer_norm_eps", LAYER_NORM_EPS))
    if not math.isclose(eps, LAYER_NORM_EPS, rel_tol=1e-6):
        raise CheckpointError(f"{source}: layer_norm_eps={eps}, ours is fixed at {LAYER_NORM_EPS}")
    pad = config.get("pad_token_id", config.get("pad_index", PAD_INDEX))
    if pad != PAD_INDEX:
        raise CheckpointError(f"{source}: pad_token_id={pad}; the XLM vocabulary layout has <pad> at {PAD_INDEX}")
    try:
        vocab_size = int(config.get("vocab_size", config.get("n_words", 30145)))
        return ModelConfig(
            vocab_size=vocab_size,
            n_langs=int(config.get("n_langs", 1)),
            emb_dim=int(config.get("emb_dim", 2048)),
            n_layers=int(config.get("n_layers", 12)),
            n_heads=int(config.get("n_heads", 16)),
            ffn_dim=0,
            dropout=float(config.get("dropout", 0.1)),
            attention_dropout=float(config.get("attention_dropout", 0.1)),
            max_positions=int(config.get("max_position_embeddings", 512)),
            sinusoidal_embeddings=bool(config.get("sinusoidal_embeddings", False)),
            use_lang_emb=bool(config.get("use_lang_emb", True)),
            pad_index=PAD_INDEX,
        )
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: invalid XLM configuration: {e}") from None


def hf_lang2id(
    config: Mapping[str, Any], tokenizer_config: Mapping[str, Any], n_langs: int, langs: list[str] | None, source: str
) -> dict[str, int]:
    """Languages from ``--langs``, else config.json, else tokenizer_config.json."""
    lang2id: dict[str, int] | None = None
    if langs:
        lang2id = {lang: i for i, lang in enumerate(langs)}
    for where in (config, tokenizer_config):
        if lang2id:
            break
        if where.get("lang2id"):
            lang2id = {str(k): int(v) for k, v in where["lang2id"].items()}
        elif where.get("id2lang"):
            lang2id = {str(v): int(k) for k, v in where["id2lang"].items()}
    if not lang2id:
        raise CheckpointError(
            f"{source}: neither config.json nor tokenizer_config.json names the model's languages "
            f"(lang2id / id2lang); pass them in id order with --langs (n_langs={n_langs})"
        )
    if sorted(lang2id.values()) != list(range(len(lang2id))):
        raise CheckpointError(f"{source}: language ids are not 0..{len(lang2id) - 1}: {lang2id}")
    if n_langs > 1 and len(lang2id) != n_langs:
        raise CheckpointError(f"{source}: n_langs={n_langs} but {len(lang2id)} languages are named: {sorted(lang2id)}")
    return lang2id


def read_hf_vocab(directory: Path) -> list[str]:
    """Tokens of ``vocab.json`` in id order (ids must be 0..n-1)."""
    path = directory / VOCAB_FILE
    mapping = read_json_object(path, "the tokenizer files vocab.json and merges.txt are needed", "token -> id")
    tokens = [""] * len(mapping)
    for tok, i in mapping.items():
        if not isinstance(i, int) or not 0 <= i < len(mapping) or tokens[i]:
            raise CheckpointError(f"{path}: ids are not a permutation of 0..{len(mapping) - 1} (token {tok!r} -> {i})")
        tokens[i] = tok
    if tokens[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
        raise CheckpointError(
            f"{path}: ids 0..{len(SPECIAL_TOKENS) - 1} must be the XLM special tokens {SPECIAL_TOKENS}"
        )
    return tokens


def read_hf_merges(directory: Path) -> list[tuple[str, str]]:
    path = directory / MERGES_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{path}: missing. transformers' XLM conversion script writes no merges file; take it from the "
            "original BPE codes (`xlm import original ... --codes CODES`, or copy the codes' first two columns "
            "into merges.txt)"
        )
    return read_merges(path)


@dataclass
class ImportReport:
    directory: Path
    config: ModelConfig
    lang2id: dict[str, int]
    lowercase_and_remove_accent: bool
    notes: list[str] = field(default_factory=list)


def import_hf(
    directory: str | Path,
    out: str | Path,
    langs: list[str] | None = None,
    overwrite: bool = False,
    trust_pickle: bool = False,
) -> ImportReport:
    """A Hugging Face XLM directory -> a checkpoint of ours (``load_pretrained`` reads it)."""
    src = Path(directory)
    if not src.is_dir():
        raise CheckpointError(f"{src}: not a directory")
    config = read_hf_config(src)
    if config.get("model_type") in MODEL_TYPES:
        tensors = read_hf_weights(src, trust_pickle)
        cfg, lang2id, lower, notes = import_encoder(src, config, tensors, Path(out), langs, overwrite)
        return ImportReport(Path(out), cfg, lang2id, lower, notes)
    cfg = model_config_from_hf(config, str(src / HF_CONFIG))
    tok_path = src / HF_TOKENIZER_CONFIG
    tok_config = read_json(tok_path) if tok_path.is_file() else {}
    notes = []
    tensors = read_hf_weights(src, trust_pickle)
    xlm_state, ignored = split_hf_state(tensors)
    if ignored:
        notes.append(f"ignored {len(ignored)} weights of other heads: {', '.join(ignored[:5])}")
    if "pred_layer.proj.bias" not in xlm_state:
        notes.append("no LM head (pred_layer.proj.bias): the output bias starts at zero")
    state, is_decoder = from_xlm_layout(xlm_state, str(src))
    if is_decoder:
        raise CheckpointError(f"{src}: has cross-attention weights; transformers' XLM is encoder-only")
    tokens = read_hf_vocab(src)
    rows = state["embeddings.weight"].shape[0]
    if len(tokens) != cfg.vocab_size:
        raise CheckpointError(
            f"{src}: config.json has vocab_size={cfg.vocab_size} but {VOCAB_FILE} has {len(tokens)} tokens"
        )
    if rows != cfg.vocab_size:
        raise CheckpointError(f"{src}: config.json has vocab_size={cfg.vocab_size} but the embeddings have {rows} rows")
    check_sizes(cfg, state, str(src))
    lang2id = hf_lang2id(config, tok_config, cfg.n_langs, langs, str(src))
    if "do_lowercase_and_remove_accent" in tok_config:
        lower = bool(tok_config["do_lowercase_and_remove_accent"])
    else:
        lower = True
        notes.append("tokenizer_config.json does not say do_lowercase_and_remove_accent: True, XLMTokenizer's default")
    merges = read_hf_merges(src)
    outside = merges_outside_vocab(tokens, merges)
    if outside:
        notes.append(outside_note(outside, len(merges), str(src / MERGES_FILE)))
    info = ModelInfo(cfg, lang2id, lower, {"imported_from": {"format": "huggingface", "path": str(src.resolve())}})
    save_imported(
        Path(out),
        {k: v.float() for k, v in state.items()},
        info,
        VocabFiles(tokens, merges, source=str(src)),
        overwrite,
    )
    return ImportReport(Path(out), cfg, lang2id, lower, notes)


def read_hf_config(directory: Path) -> dict[str, Any]:
    return read_json_object(directory / HF_CONFIG, "not a Hugging Face model directory")


def read_json_object(path: Path, if_missing: str, holding: str = "") -> dict[str, Any]:
    """The JSON object of a file a model directory needs; errors say ``if_missing`` (why it is
    needed) for a missing file and ``holding`` (what the object maps) for another value."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing ({if_missing})")
    data = read_json(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object" + (f" {holding}" if holding else ""))
    return data
