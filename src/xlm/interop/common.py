"""What every importer and exporter shares: reading ``torch.save`` files without running
code, sizes read from a state dict and checked against a configuration, checks of the output
directory, and the atomic writing of an imported checkpoint with its vocabulary files.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from xlm.checkpoint_io import save_checkpoint
from xlm.errors import CheckpointError
from xlm.fileio import write_json
from xlm.model.pretrained import MODEL_JSON, WEIGHTS, ModelInfo
from xlm.model.transformer import ModelConfig, TransformerModel
from xlm.text.bpe import write_merges
from xlm.text.vocab import VOCAB_FILE, write_vocab_info

SAFE_GLOBALS: list[Any] = [argparse.Namespace]


# --------------------------------------------------------------------------- sizes


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


def infer_sizes(state: Mapping[str, Tensor]) -> dict[str, int]:
    """Sizes read from our state dict: vocab_size, emb_dim, n_layers, ffn_dim, max_positions, n_langs."""
    vocab_size, emb_dim = state["embeddings.weight"].shape
    lang = state.get("lang_embeddings.weight")
    return {
        "vocab_size": int(vocab_size),
        "emb_dim": int(emb_dim),
        "n_layers": count_layers(state, "layers"),
        "ffn_dim": int(state["layers.0.ffn.lin1.weight"].shape[0])
        if "layers.0.ffn.lin1.weight" in state
        else 4 * int(emb_dim),
        "max_positions": int(state["position_embeddings.weight"].shape[0]),
        "n_langs": int(lang.shape[0]) if lang is not None else 0,
    }


def check_sizes(cfg: ModelConfig, state: Mapping[str, Tensor], source: str) -> None:
    """Raise a clear error when the configuration and the weights disagree on a size."""
    sizes = infer_sizes(state)
    types = state.get("token_type_embeddings.weight")
    if cfg.n_token_types() and (types is None or types.shape[0] != cfg.n_token_types()):
        got = "none" if types is None else types.shape[0]
        raise CheckpointError(
            f"{source}: the {cfg.arch} network has {cfg.n_token_types()} token types but the weights have {got}"
        )
    expected = {
        "vocab_size": cfg.vocab_size,
        "emb_dim": cfg.emb_dim,
        "n_layers": cfg.n_layers,
        "ffn_dim": cfg.ffn_size(),
        "max_positions": cfg.position_rows(),
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


# Options of the original XLM (and of transformers' XLMConfig) whose other value our network
# cannot represent: (option, the value ours needs, what the other value means).
XLM_FEATURES: tuple[tuple[str, bool, str], ...] = (
    ("asm", False, "an adaptive softmax output layer"),
    ("gelu_activation", True, "ReLU instead of GELU"),
)


def check_features(options: Mapping[str, Any], features: tuple[tuple[str, bool, str], ...], source: str) -> None:
    """Refuse a model whose ``options`` (a missing one has the value ours needs) give one of
    ``features`` (see :data:`XLM_FEATURES`) the other value."""
    for flag, ok, why in features:
        if bool(options.get(flag, ok)) != ok:
            raise CheckpointError(
                f"{source}: the model uses {why} ({flag}={options.get(flag)}), which ours does not support"
            )


def strip_module_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    """Remove the ``module.`` that DataParallel/DistributedDataParallel put before every name."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


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
    """``torch.load`` that runs no code from the file unless ``trust_pickle`` is set: torch's
    restricted unpickler (``weights_only=True``) builds tensors, numbers, strings and
    containers, plus ``argparse.Namespace`` (the options fairseq stores under ``args``: an
    attribute bag whose construction runs no code); any other global is refused. A file that
    is no checkpoint at all (empty, text, random bytes) is named as what it is."""
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
        with torch.serialization.safe_globals(SAFE_GLOBALS):
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


# --------------------------------------------------------------------------- vocabularies


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


# --------------------------------------------------------------------------- writing ours


@dataclass
class VocabFiles:
    """The vocabulary files of an imported checkpoint: ``vocab.json`` (``tokens`` in id order)
    and, by kind, ``merges.txt`` (bpe), or ``vocab_info.json`` (kind and special tokens) with
    the tokenizer's own files copied beside it (``sentencepiece.bpe.model``, ``vocab.txt``)."""

    tokens: list[str]
    merges: list[tuple[str, str]] = field(default_factory=list)
    kind: str = "bpe"
    specials: dict[str, str] = field(default_factory=dict)  # role (start, end, pad, unk, mask) -> token
    copies: dict[str, Path] = field(default_factory=dict)  # file name -> source file
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # file name -> JSON (the tokenizer's settings)
    texts: dict[str, str] = field(default_factory=dict)  # file name -> text (a vocab.txt rebuilt from tokenizer.json)
    source: str = ""  # where the tokens were read, for error messages

    def write(self, directory: Path) -> None:
        mapping = {t: i for i, t in enumerate(self.tokens)}
        (directory / VOCAB_FILE).write_text(json.dumps(mapping, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
        if self.kind == "bpe":
            write_merges(directory, self.merges)
        else:
            write_vocab_info(directory, self.kind, self.specials)
        for name, path in self.copies.items():
            shutil.copyfile(path, directory / name)
        for name, data in self.settings.items():
            write_json(directory / name, data)
        for name, text in self.texts.items():
            (directory / name).write_text(text, encoding="utf-8")


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
    vocab: VocabFiles,
    overwrite: bool = False,
    verify: bool = True,
) -> Path:
    """Write a checkpoint of ours (weights, model.json, the vocabulary files, manifest)
    atomically. ``verify`` checks first that ``state`` is exactly a language model's (so that
    ``load_pretrained(out)`` reads it); a translation model is checked by its caller."""
    check_output_dir(out, overwrite)
    if len(vocab.tokens) != info.config.vocab_size:
        raise CheckpointError(
            f"{vocab.source or out}: the vocabulary has {len(vocab.tokens)} tokens but the model has "
            f"vocab_size={info.config.vocab_size} (embedding rows)"
        )
    if verify:
        verify_layout(state, info.config, False, str(out))

    def write(tmp: Path) -> None:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / WEIGHTS))
        write_json(tmp / MODEL_JSON, info.to_json())
        vocab.write(tmp)

    return save_checkpoint(out, write)
