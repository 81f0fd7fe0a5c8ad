"""The original XLM research code's checkpoints and vocabularies.

Parameter names
    The original ``TransformerModel`` (and Hugging Face's ``XLMModel``, which copies it under the
    prefix ``transformer.``) stores one linear layer per projection: ``attentions.{i}.q_lin``,
    ``k_lin``, ``v_lin``, ``out_lin``, ``layer_norm1.{i}``, ``ffns.{i}.lin1/lin2``,
    ``layer_norm2.{i}``; decoders add ``encoder_attn.{i}.*`` and ``layer_norm15.{i}``; the output
    layer is ``pred_layer.proj`` (weight tied to ``embeddings.weight``). Our model fuses
    q/k/v into ``attn.qkv`` (rows q, then k, then v) and cross-attention k/v into ``cross_attn.kv``.
    :func:`to_xlm_layout` and :func:`from_xlm_layout` convert between the two, exactly.

Checkpoint files
    ``torch.save`` of a dict: ``model`` (or ``encoder`` / ``decoder``) state dicts, possibly
    prefixed ``module.``; ``params`` (a dict of the training options); ``dico_id2word``,
    ``dico_word2id``, ``dico_counts``. They are read with ``torch.load(weights_only=True)``, so
    no code in the file can run; a file that needs more is refused unless ``trust_pickle``.

Vocabularies
    fastBPE: ``vocab`` has ``token count`` per line, ``@@`` marks a non-final piece
    (``hel@@ lo``); ``codes`` has ``a b count`` per line with ``</w>`` on word-final pieces.
    We convert to the ``</w>`` form (``hel@@`` -> ``hel``, ``lo`` -> ``lo</w>``) keeping every
    token at the id of the original dictionary, so the embedding rows line up.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from xlm.errors import CheckpointError, DataError
from xlm.model.pretrained import MODEL_JSON, WEIGHTS, ModelInfo
from xlm.model.transformer import ModelConfig, TransformerModel
from xlm.text.vocab import END_OF_WORD, MERGES_FILE, N_SPECIAL, PAD_INDEX, SPECIAL_TOKENS, VOCAB_FILE
from xlm.training.checkpoint import save_checkpoint, write_json

FASTBPE_CONTINUATION = "@@"
ORIGINAL_MAX_POSITIONS = 512  # N_MAX_POSITIONS of the original code (also read from the weights)


# --------------------------------------------------------------------------- parameter names


def _layer_indices(state: Mapping[str, Tensor], prefix: str) -> list[int]:
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    found = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    return sorted(found)


def count_layers(state: Mapping[str, Tensor], prefix: str) -> int:
    """Number of blocks ``prefix.{i}.*`` in ``state``; they must be numbered 0..n-1."""
    found = _layer_indices(state, prefix)
    if found != list(range(len(found))):
        raise CheckpointError(f"layers {prefix}.* are not numbered 0..{len(found) - 1}: {found}")
    return len(found)


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


def from_xlm_layout(state: Mapping[str, Tensor], source: str) -> tuple[dict[str, Tensor], bool]:
    """Original / Hugging Face names -> our state dict; returns ``(state, is_decoder)``.

    Every tensor of ``state`` must be used: an unknown name is an error (it would be a
    feature our model lacks, e.g. product-key memory layers). ``pred_layer.proj.weight``
    must equal ``embeddings.weight`` (our output layer is tied); a missing output bias
    becomes zeros."""
    src = dict(state)
    used: set[str] = set()

    def take(name: str) -> Tensor:
        if name not in src:
            raise CheckpointError(f"{source}: weight {name!r} is missing")
        used.add(name)
        return src[name]

    out: dict[str, Tensor] = {
        "embeddings.weight": take("embeddings.weight"),
        "position_embeddings.weight": take("position_embeddings.weight"),
        "norm_emb.weight": take("layer_norm_emb.weight"),
        "norm_emb.bias": take("layer_norm_emb.bias"),
    }
    if "lang_embeddings.weight" in src:
        out["lang_embeddings.weight"] = take("lang_embeddings.weight")
    emb = out["embeddings.weight"]
    if "pred_layer.proj.weight" in src:
        proj = take("pred_layer.proj.weight")
        if proj.shape != emb.shape or not torch.equal(proj, emb):
            raise CheckpointError(
                f"{source}: the output projection pred_layer.proj.weight is not tied to embeddings.weight; "
                "this model (share_inout_emb=False) cannot be represented by ours, whose output layer is tied"
            )
    if "pred_layer.proj.bias" in src:
        out["pred_bias"] = take("pred_layer.proj.bias")
    else:
        out["pred_bias"] = torch.zeros(emb.shape[0], dtype=emb.dtype)

    n_layers = count_layers(src, "attentions")
    is_decoder = bool(_layer_indices(src, "encoder_attn"))
    for i in range(n_layers):
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
    unused = sorted(set(src) - used)
    if unused:
        shown = ", ".join(unused[:8]) + (f", ... ({len(unused)} in all)" if len(unused) > 8 else "")
        raise CheckpointError(f"{source}: weights that our model has no place for: {shown}")
    return {k: v.contiguous() for k, v in out.items()}, is_decoder


def infer_sizes(state: Mapping[str, Tensor]) -> dict[str, int]:
    """Sizes read from our state dict: vocab_size, emb_dim, n_layers, ffn_dim, max_positions, n_langs."""
    vocab_size, emb_dim = state["embeddings.weight"].shape
    lang = state.get("lang_embeddings.weight")
    return {
        "vocab_size": int(vocab_size),
        "emb_dim": int(emb_dim),
        "n_layers": count_layers(state, "layers"),
        "ffn_dim": int(state["layers.0.ffn.lin1.weight"].shape[0]) if "layers.0.ffn.lin1.weight" in state else 4 * int(emb_dim),
        "max_positions": int(state["position_embeddings.weight"].shape[0]),
        "n_langs": int(lang.shape[0]) if lang is not None else 0,
    }


def check_sizes(cfg: ModelConfig, state: Mapping[str, Tensor], source: str) -> None:
    """Raise a clear error when the configuration and the weights disagree on a size."""
    sizes = infer_sizes(state)
    expected = {
        "vocab_size": cfg.vocab_size,
        "emb_dim": cfg.emb_dim,
        "n_layers": cfg.n_layers,
        "ffn_dim": cfg.ffn_size(),
        "max_positions": cfg.max_positions,
    }
    for name, value in expected.items():
        if sizes[name] != value:
            raise CheckpointError(f"{source}: the configuration says {name}={value} but the weights have {sizes[name]}")
    has_lang = cfg.use_lang_emb and cfg.n_langs > 1
    if has_lang and sizes["n_langs"] != cfg.n_langs:
        raise CheckpointError(
            f"{source}: the configuration says n_langs={cfg.n_langs} with language embeddings, "
            f"but the weights have {sizes['n_langs'] or 'no'} language embeddings"
        )
    if not has_lang and sizes["n_langs"]:
        raise CheckpointError(
            f"{source}: the weights have language embeddings but the configuration disables them "
            f"(use_lang_emb={cfg.use_lang_emb}, n_langs={cfg.n_langs})"
        )


# --------------------------------------------------------------------------- safe loading


ZIP_MAGIC = b"PK\x03\x04"


def not_a_checkpoint(path: Path) -> str | None:
    """Why ``path`` cannot be a ``torch.save`` file, judged from its size and first bytes (a
    zip archive, or a pickle for the legacy format); None when it may be one."""
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(ZIP_MAGIC):
        if zipfile.is_zipfile(path):
            return None
        return f"a zip archive that is truncated or corrupt ({size} bytes; was it copied or downloaded in full?)"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocol 2 to 5
        return None
    text = head.decode("utf-8", "replace")
    if sum(c == "\ufffd" or (c < " " and c not in "\t\r\n") for c in text) <= len(text) // 20:
        first = text.strip().split("\n", 1)[0][:60]
        return f"a text file, not a PyTorch checkpoint (it starts with {first!r})"
    return f"not a PyTorch checkpoint: neither a zip archive nor a pickle (it starts with bytes {head[:8].hex(' ')})"


def _reason(e: BaseException) -> str:
    found = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))
    text = found.group(1) if found else str(e).strip().split("\n", 1)[0]
    return text.strip() or type(e).__name__


def safe_torch_load(path: Path, trust_pickle: bool = False) -> Any:
    """``torch.load`` that runs no code from the file unless ``trust_pickle`` is set. A file
    that is no checkpoint at all (empty, text, random bytes) is named as what it is."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    why = not_a_checkpoint(path)
    if why:
        raise CheckpointError(f"{path}: cannot read the checkpoint: {why}")
    if trust_pickle:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except (ModuleNotFoundError, AttributeError) as e:
            raise CheckpointError(f"{path}: the file refers to Python code that is not available here: {e}") from None
        except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError, KeyError) as e:
            raise CheckpointError(f"{path}: cannot read the checkpoint: {_reason(e)}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if not found:  # not a reference to code: a corrupt pickle
            raise CheckpointError(f"{path}: cannot read the checkpoint: a corrupt pickle ({_reason(e)})") from None
        what = f"it refers to {found.group(1)}"
        raise CheckpointError(
            f"{path}: refused: the file needs more than tensors, numbers, strings, lists and dicts to be read "
            f"({what}), and unpickling such objects can run any code the file's author chose. If you trust "
            "where the file comes from, pass --trust-pickle to load it anyway."
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint: {_reason(e)}") from None


# --------------------------------------------------------------------------- vocabulary


def read_fastbpe_vocab(path: Path) -> list[str]:
    """Tokens of a fastBPE vocabulary file in dictionary order, following the original
    ``Dictionary.read_vocab``: lines that are not ``token count`` (or contain U+2028), and
    tokens already seen or special, are skipped. Token ``k`` of the result has id ``14 + k``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: vocabulary file not found")
    seen = set(SPECIAL_TOKENS)
    tokens: list[str] = []
    with open(path, encoding="utf-8", newline="\n") as f:
        for line in f:
            if "\u2028" in line:
                continue
            parts = line.rstrip().split()
            if len(parts) != 2 or not parts[1].isdigit() or parts[0] in seen:
                continue
            seen.add(parts[0])
            tokens.append(parts[0])
    return tokens


def read_fastbpe_codes(path: Path) -> list[tuple[str, str]]:
    """Merges of a fastBPE codes file (``a b count`` per line), in rank order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: BPE codes file not found")
    merges: list[tuple[str, str]] = []
    with open(path, encoding="utf-8", newline="\n") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) not in (2, 3) or (len(parts) == 3 and not parts[2].isdigit()):
                raise DataError(f"{path}:{n}: expected 'a b count', got {line.rstrip()!r}")
            merges.append((parts[0], parts[1]))
    return merges


def fastbpe_to_eow(token: str) -> str:
    """``hel@@`` -> ``hel`` (a non-final piece); ``lo`` -> ``lo</w>`` (word-final)."""
    if token.endswith(FASTBPE_CONTINUATION) and len(token) > len(FASTBPE_CONTINUATION):
        return token[: -len(FASTBPE_CONTINUATION)]
    return token + END_OF_WORD


@dataclass
class ConvertedVocab:
    tokens: list[str]  # in id order, specials first, </w> form
    merges: list[tuple[str, str]]
    merges_outside_vocab: int = 0  # merges whose pieces or result are not tokens of the vocabulary
    notes: list[str] = field(default_factory=list)


def convert_fastbpe(
    vocab_path: Path, codes_path: Path, dico_id2word: Mapping[int, str] | None = None
) -> ConvertedVocab:
    """fastBPE vocabulary + codes -> our ``</w>`` tokens (ids kept) and merges.

    When the checkpoint carries its dictionary (``dico_id2word``), it is the reference for
    the ids: the vocabulary file must list the same tokens in the same order."""
    words = read_fastbpe_vocab(vocab_path)
    if dico_id2word is not None:
        if set(dico_id2word) != set(range(len(dico_id2word))):
            raise CheckpointError(f"the checkpoint's dictionary ids are not 0..{len(dico_id2word) - 1}")
        dico = [dico_id2word[i] for i in range(len(dico_id2word))]
        if dico[:N_SPECIAL] != SPECIAL_TOKENS:
            raise CheckpointError(f"the checkpoint's dictionary does not start with the XLM special tokens: {dico[:N_SPECIAL]}")
        if dico[N_SPECIAL:] != words:
            if len(dico) - N_SPECIAL != len(words):
                raise CheckpointError(
                    f"{vocab_path}: {len(words)} tokens (+{N_SPECIAL} special = {len(words) + N_SPECIAL}) but the "
                    f"checkpoint's dictionary has {len(dico)}: not the vocabulary this model was trained with"
                )
            k = next(i for i, (a, b) in enumerate(zip(dico[N_SPECIAL:], words)) if a != b)
            raise CheckpointError(
                f"{vocab_path}: token id {k + N_SPECIAL} is {words[k]!r} but the checkpoint's dictionary has "
                f"{dico[k + N_SPECIAL]!r}: not the vocabulary this model was trained with"
            )
    tokens = list(SPECIAL_TOKENS) + [fastbpe_to_eow(w) for w in words]
    seen: set[str] = set()
    for t in tokens:
        if t in seen:
            raise DataError(f"{vocab_path}: two tokens become {t!r} in the </w> form")
        seen.add(t)
    merges = read_fastbpe_codes(codes_path)
    outside = merges_outside_vocab(tokens, merges)
    notes = [outside_note(outside, len(merges), str(codes_path))] if outside else []
    return ConvertedVocab(tokens, merges, outside, notes)


def merges_outside_vocab(tokens: list[str], merges: list[tuple[str, str]]) -> int:
    """Merges whose pieces or result (``a + b``; word-final when ``b`` ends with ``</w>``) are
    not tokens of the vocabulary."""
    known = set(tokens)
    return sum(1 for a, b in merges if a not in known or b not in known or a + b not in known)


def outside_note(outside: int, total: int, where: str) -> str:
    return (
        f"{outside} of {total} merges in {where} use or produce pieces outside the vocabulary: transformers' "
        "XLMTokenizer applies them (a final piece outside the vocabulary becomes <unk>), but xlm's "
        "tokenizer (xlm.text.bpe.BPETokenizer) cannot load such merges yet"
    )


# --------------------------------------------------------------------------- checkpoints


@dataclass
class OriginalModel:
    """One network of an original checkpoint, converted to our names."""

    state: dict[str, Tensor]
    config: ModelConfig
    is_decoder: bool
    part: str


def strip_module_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    """Remove the ``module.`` that DataParallel/DistributedDataParallel put before every name."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def model_parts(ckpt: Mapping[str, Any]) -> list[str]:
    return [k for k in ("model", "encoder", "decoder") if isinstance(ckpt.get(k), Mapping)]


def _param(params: Mapping[str, Any], name: str, default: Any) -> Any:
    value = params.get(name, default)
    return default if value is None else value


def original_config(params: Mapping[str, Any], state: Mapping[str, Tensor], source: str) -> ModelConfig:
    """Our ModelConfig from the original ``params`` and the (converted) weights' sizes."""
    for flag, ok, why in (
        ("asm", False, "an adaptive softmax output layer"),
        ("gelu_activation", True, "ReLU instead of GELU"),
        ("use_memory", False, "product-key memory layers"),
    ):
        if bool(params.get(flag, ok)) != ok:
            raise CheckpointError(f"{source}: the model uses {why} ({flag}={params.get(flag)}), which ours does not have")
    sizes = infer_sizes(state)
    n_langs = int(_param(params, "n_langs", sizes["n_langs"] or 1))
    use_lang_emb = bool(_param(params, "use_lang_emb", True))
    cfg = ModelConfig(
        vocab_size=sizes["vocab_size"],
        n_langs=n_langs,
        emb_dim=sizes["emb_dim"],
        n_layers=sizes["n_layers"],
        n_heads=int(_param(params, "n_heads", 8)),
        ffn_dim=sizes["ffn_dim"],
        dropout=float(_param(params, "dropout", 0.1)),
        attention_dropout=float(_param(params, "attention_dropout", 0.1)),
        max_positions=sizes["max_positions"],
        sinusoidal_embeddings=bool(_param(params, "sinusoidal_embeddings", False)),
        use_lang_emb=use_lang_emb,
        pad_index=int(_param(params, "pad_index", PAD_INDEX)),
    )
    if cfg.pad_index != PAD_INDEX:
        raise CheckpointError(f"{source}: pad_index={cfg.pad_index}, but the XLM vocabulary layout has <pad> at {PAD_INDEX}")
    n_words = params.get("n_words")
    if n_words is not None and int(n_words) != cfg.vocab_size:
        raise CheckpointError(
            f"{source}: params.n_words={n_words} but embeddings.weight has {cfg.vocab_size} rows"
        )
    emb_dim = params.get("emb_dim")
    if emb_dim is not None and int(emb_dim) != cfg.emb_dim:
        raise CheckpointError(f"{source}: params.emb_dim={emb_dim} but the embeddings have {cfg.emb_dim} columns")
    if cfg.emb_dim % cfg.n_heads:
        raise CheckpointError(f"{source}: emb_dim {cfg.emb_dim} is not divisible by n_heads {cfg.n_heads}")
    check_sizes(cfg, state, source)
    return cfg


def original_lang2id(params: Mapping[str, Any], n_langs: int, source: str) -> dict[str, int]:
    lang2id = params.get("lang2id")
    if not lang2id and params.get("id2lang"):
        lang2id = {str(v): int(k) for k, v in params["id2lang"].items()}
    if not lang2id:
        langs = params.get("langs") or params.get("lgs")
        if isinstance(langs, str):
            langs = langs.split("-")
        if langs:
            lang2id = {str(lg): i for i, lg in enumerate(sorted(langs))}
    if not lang2id:
        raise CheckpointError(f"{source}: params has no lang2id / id2lang: the model's languages are unknown")
    lang2id = {str(k): int(v) for k, v in lang2id.items()}
    if sorted(lang2id.values()) != list(range(len(lang2id))):
        raise CheckpointError(f"{source}: lang2id ids are not 0..{len(lang2id) - 1}: {lang2id}")
    if n_langs > 1 and len(lang2id) != n_langs:
        raise CheckpointError(f"{source}: params.n_langs={n_langs} but lang2id lists {len(lang2id)} languages")
    return lang2id


def convert_original_part(ckpt: Mapping[str, Any], part: str, source: str) -> OriginalModel:
    """Convert the network ``part`` (``model``, ``encoder`` or ``decoder``) of a loaded checkpoint."""
    if part not in model_parts(ckpt):
        raise CheckpointError(f"{source}: no {part!r} weights in the checkpoint (it has: {model_parts(ckpt) or 'none'})")
    raw = strip_module_prefix(ckpt[part])
    bad = [k for k, v in raw.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{source}: {part} entries that are not tensors: {bad[:5]}")
    state, is_decoder = from_xlm_layout(raw, f"{source} [{part}]")
    params = ckpt.get("params") or {}
    if not isinstance(params, Mapping):
        params = vars(params) if hasattr(params, "__dict__") else {}
    cfg = original_config(params, state, f"{source} [{part}]")
    return OriginalModel({k: v.float() for k, v in state.items()}, cfg, is_decoder, part)


# --------------------------------------------------------------------------- writing ours


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse to replace a non-empty directory unless asked to."""
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CheckpointError(f"{out}: directory exists and is not empty (pass --overwrite to replace it)")


def verify_layout(state: Mapping[str, Tensor], cfg: ModelConfig, is_decoder: bool, source: str) -> None:
    """Check that ``state`` is exactly the state dict of our model with ``cfg`` (on the meta
    device: no memory is allocated and nothing is initialised)."""
    with torch.device("meta"):
        model = TransformerModel(cfg, is_decoder=is_decoder)
    try:
        missing, unexpected = model.load_state_dict(dict(state), strict=False, assign=True)
    except RuntimeError as e:
        raise CheckpointError(f"{source}: weights do not fit the model: {e}") from None
    if missing or unexpected:
        raise CheckpointError(f"{source}: weights do not match the model (missing {missing}, unexpected {unexpected})")


def save_imported(
    out: Path,
    state: Mapping[str, Tensor],
    info: ModelInfo,
    tokens: list[str],
    merges: list[tuple[str, str]],
    overwrite: bool = False,
    verify: bool = True,
) -> Path:
    """Write a checkpoint of ours (weights, model.json, vocab.json, merges.txt, manifest)
    atomically. ``verify`` checks first that ``state`` is exactly a language model's (so that
    ``load_pretrained(out)`` reads it); a translation model is checked by its caller."""
    check_output_dir(out, overwrite)
    if len(tokens) != info.config.vocab_size:
        raise CheckpointError(
            f"{out}: the vocabulary has {len(tokens)} tokens but the model has vocab_size={info.config.vocab_size}"
        )
    if verify:
        verify_layout(state, info.config, False, str(out))

    def write(tmp: Path) -> None:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / WEIGHTS))
        write_json(tmp / MODEL_JSON, info.to_json())
        write_vocab_files(tmp, tokens, merges)

    return save_checkpoint(out, write)


def write_vocab_files(directory: Path, tokens: list[str], merges: list[tuple[str, str]]) -> None:
    """``vocab.json`` (token -> id in the order of ``tokens``) and ``merges.txt`` (``a b`` lines)."""
    for a, b in merges:
        if not a or not b or any(c.isspace() for c in a + b):
            raise DataError(f"invalid merge {a!r} {b!r}")
    mapping = {t: i for i, t in enumerate(tokens)}
    (directory / VOCAB_FILE).write_text(json.dumps(mapping, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    (directory / MERGES_FILE).write_text("".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")


# --------------------------------------------------------------------------- import


@dataclass
class OriginalImportReport:
    directory: Path
    config: ModelConfig
    lang2id: dict[str, int]
    parts: list[str]
    notes: list[str]


TRANSLATION_ARCHITECTURE = "encoder-decoder"  # model.json "architecture" of a translation checkpoint


def translation_state(encoder: OriginalModel, decoder: OriginalModel, source: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """One state dict ``encoder.*`` / ``decoder.*`` and the model.json fields of a translation
    checkpoint (the layout that ``xlm.model.seq2seq.load_translator`` reads)."""
    if not decoder.is_decoder:
        raise CheckpointError(f"{source}: the 'decoder' network has no cross-attention (encoder_attn.*)")
    same = {"n_layers": decoder.config.n_layers}
    if decoder.config != encoder.config.model_copy(update=same):
        enc, dec = encoder.config.model_dump(), decoder.config.model_dump()
        diff = {k: (enc[k], dec[k]) for k in enc if k != "n_layers" and enc[k] != dec[k]}
        raise CheckpointError(f"{source}: encoder and decoder differ in more than their depth (encoder, decoder): {diff}")
    state = {f"encoder.{k}": v for k, v in encoder.state.items()}
    state.update({f"decoder.{k}": v for k, v in decoder.state.items()})
    extra = {"architecture": TRANSLATION_ARCHITECTURE, "decoder_layers": decoder.config.n_layers, "share_embeddings": False}
    return state, extra


def import_original(
    checkpoint: str | Path,
    vocab: str | Path,
    codes: str | Path,
    out: str | Path,
    lowercase_and_remove_accent: bool = True,
    trust_pickle: bool = False,
    overwrite: bool = False,
    encoder_only: bool = False,
) -> OriginalImportReport:
    """An original XLM ``.pth`` + fastBPE vocab/codes -> a checkpoint of ours.

    A language model (``model``) becomes a language-model checkpoint (``load_pretrained``);
    a translation model (``encoder`` + ``decoder``) a translation checkpoint (``encoder.*`` /
    ``decoder.*`` tensors, ``"architecture": "encoder-decoder"`` in model.json), or, with
    ``encoder_only``, a language-model checkpoint of its encoder."""
    path = Path(checkpoint)
    out = Path(out)
    check_output_dir(out, overwrite)
    ckpt = safe_torch_load(path, trust_pickle)
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{path}: expected a dict with 'model' (or 'encoder'/'decoder') and 'params'")
    parts = model_parts(ckpt)
    if "model" in parts:
        main_part = "model"
    elif "encoder" in parts:
        main_part = "encoder"
    else:
        raise CheckpointError(f"{path}: no 'model' or 'encoder' state dict (keys: {sorted(map(str, ckpt))[:10]})")
    main = convert_original_part(ckpt, main_part, str(path))
    if main.is_decoder:
        raise CheckpointError(f"{path}: the {main_part!r} network has cross-attention; expected an encoder")
    params = ckpt.get("params") or {}
    if not isinstance(params, Mapping):
        params = vars(params) if hasattr(params, "__dict__") else {}
    lang2id = original_lang2id(params, main.config.n_langs, str(path))
    dico = ckpt.get("dico_id2word")
    dico_map = {int(k): str(v) for k, v in dico.items()} if isinstance(dico, Mapping) else None
    converted = convert_fastbpe(Path(vocab), Path(codes), dico_map)
    if len(converted.tokens) != main.config.vocab_size:
        raise CheckpointError(
            f"{vocab}: {len(converted.tokens)} tokens (with the {N_SPECIAL} special ones) but the model "
            f"{path} has vocab_size={main.config.vocab_size} (embedding rows): not this model's vocabulary"
        )
    extra: dict[str, Any] = {"imported_from": {"format": "xlm-original", "path": str(path.resolve())}}
    used = [main_part]
    if main_part == "encoder" and "decoder" in parts and not encoder_only:
        decoder = convert_original_part(ckpt, "decoder", str(path))
        verify_layout(decoder.state, decoder.config, True, f"{path} [decoder]")
        verify_layout(main.state, main.config, False, f"{path} [encoder]")
        state, mt_extra = translation_state(main, decoder, str(path))
        extra.update(mt_extra)
        used.append("decoder")
        info = ModelInfo(main.config, lang2id, lowercase_and_remove_accent, extra)
        save_imported(out, state, info, converted.tokens, converted.merges, overwrite, verify=False)
    else:
        info = ModelInfo(main.config, lang2id, lowercase_and_remove_accent, extra)
        save_imported(out, main.state, info, converted.tokens, converted.merges, overwrite)
    return OriginalImportReport(out, main.config, lang2id, used, converted.notes)
