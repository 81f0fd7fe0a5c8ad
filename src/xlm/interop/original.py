"""The original XLM research code's checkpoints and vocabularies (the parameter names are in
:mod:`xlm.interop.layout`, the shared loading and writing in :mod:`xlm.interop.common`).

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

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from xlm.errors import CheckpointError, DataError
from xlm.interop.common import (
    XLM_FEATURES,
    VocabFiles,
    check_features,
    check_output_dir,
    check_sizes,
    infer_sizes,
    merges_outside_vocab,
    outside_note,
    safe_torch_load,
    save_imported,
    strip_module_prefix,
    verify_layout,
)
from xlm.interop.layout import from_xlm_layout
from xlm.model.pretrained import ENCODER_DECODER, ModelInfo
from xlm.model.transformer import ModelConfig
from xlm.text.vocab import END_OF_WORD, N_SPECIAL, PAD_INDEX, SPECIAL_TOKENS

FASTBPE_CONTINUATION = "@@"
ORIGINAL_MAX_POSITIONS = 512  # N_MAX_POSITIONS of the original code (also read from the weights)


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

    def files(self, source: str) -> VocabFiles:
        return VocabFiles(self.tokens, self.merges, source=source)


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
            raise CheckpointError(
                f"the checkpoint's dictionary does not start with the XLM special tokens: {dico[:N_SPECIAL]}"
            )
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


# --------------------------------------------------------------------------- checkpoints


@dataclass
class OriginalModel:
    """One network of an original checkpoint, converted to our names."""

    state: dict[str, Tensor]
    config: ModelConfig
    is_decoder: bool
    part: str


def model_parts(ckpt: Mapping[str, Any]) -> list[str]:
    return [k for k in ("model", "encoder", "decoder") if isinstance(ckpt.get(k), Mapping)]


def _param(params: Mapping[str, Any], name: str, default: Any) -> Any:
    value = params.get(name, default)
    return default if value is None else value


def original_config(params: Mapping[str, Any], state: Mapping[str, Tensor], source: str) -> ModelConfig:
    """Our ModelConfig from the original ``params`` and the (converted) weights' sizes."""
    check_features(params, (*XLM_FEATURES, ("use_memory", False, "product-key memory layers")), source)
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
        raise CheckpointError(
            f"{source}: pad_index={cfg.pad_index}, but the XLM vocabulary layout has <pad> at {PAD_INDEX}"
        )
    n_words = params.get("n_words")
    if n_words is not None and int(n_words) != cfg.vocab_size:
        raise CheckpointError(f"{source}: params.n_words={n_words} but embeddings.weight has {cfg.vocab_size} rows")
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
        raise CheckpointError(
            f"{source}: no {part!r} weights in the checkpoint (it has: {model_parts(ckpt) or 'none'})"
        )
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


# --------------------------------------------------------------------------- import


@dataclass
class OriginalImportReport:
    directory: Path
    config: ModelConfig
    lang2id: dict[str, int]
    parts: list[str]
    notes: list[str]


def translation_state(
    encoder: OriginalModel, decoder: OriginalModel, source: str
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """One state dict ``encoder.*`` / ``decoder.*`` and the model.json fields of a translation
    checkpoint (the layout that ``xlm.model.seq2seq.load_translator`` reads)."""
    if not decoder.is_decoder:
        raise CheckpointError(f"{source}: the 'decoder' network has no cross-attention (encoder_attn.*)")
    same = {"n_layers": decoder.config.n_layers}
    if decoder.config != encoder.config.model_copy(update=same):
        enc, dec = encoder.config.model_dump(), decoder.config.model_dump()
        diff = {k: (enc[k], dec[k]) for k in enc if k != "n_layers" and enc[k] != dec[k]}
        raise CheckpointError(
            f"{source}: encoder and decoder differ in more than their depth (encoder, decoder): {diff}"
        )
    state = {f"encoder.{k}": v for k, v in encoder.state.items()}
    state.update({f"decoder.{k}": v for k, v in decoder.state.items()})
    extra = {"architecture": ENCODER_DECODER, "decoder_layers": decoder.config.n_layers, "share_embeddings": False}
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
        save_imported(out, state, info, converted.files(str(vocab)), overwrite, verify=False)
    else:
        info = ModelInfo(main.config, lang2id, lowercase_and_remove_accent, extra)
        save_imported(out, main.state, info, converted.files(str(vocab)), overwrite)
    return OriginalImportReport(out, main.config, lang2id, used, converted.notes)
