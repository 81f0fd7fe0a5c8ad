"""The shared vocabulary: ``vocab.json`` (the complete token -> id map) plus the files of
its kind, and the ids of its special tokens (:class:`Specials`).

Three kinds, told apart by ``vocab_info.json`` (``{"kind": ..., "specials": {"start": TOKEN,
"end": TOKEN, "pad": TOKEN, "unk": TOKEN, "mask": TOKEN}}``; ids come from ``vocab.json``):

* ``bpe`` (no ``vocab_info.json``): XLM's layout, ``merges.txt`` in the ``</w>`` end-of-word
  form that Hugging Face's ``XLMTokenizer`` reads. ``<s>``=0, ``</s>``=1, ``<pad>``=2,
  ``<unk>``=3, ``<special0>``..``<special9>``=4..13, the mask token is ``<special1>``=5, and a
  sentence is fed to the model as ``</s> w1 ... wn </s>`` (start and end are both ``</s>``);
* ``sentencepiece``: ``sentencepiece.bpe.model``, ids as ``XLMRobertaTokenizer`` gives them
  (``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3, piece i >= 3 at i + 1, ``<mask>`` last);
  sentences are framed ``<s> w1 ... wn </s>``;
* ``wordpiece``: BERT's ``vocab.txt`` (id = line number); ``[CLS] w1 ... wn [SEP]``.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from xlm.errors import DataError
from xlm.fileio import read_json, write_json

BOS_WORD, EOS_WORD, PAD_WORD, UNK_WORD = "<s>", "</s>", "<pad>", "<unk>"
SPECIAL_WORDS = [f"<special{i}>" for i in range(10)]
SPECIAL_TOKENS = [BOS_WORD, EOS_WORD, PAD_WORD, UNK_WORD, *SPECIAL_WORDS]
BOS_INDEX, EOS_INDEX, PAD_INDEX, UNK_INDEX = 0, 1, 2, 3
MASK_WORD = "<special1>"
MASK_INDEX = 5
N_SPECIAL = len(SPECIAL_TOKENS)
END_OF_WORD = "</w>"

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
VOCAB_INFO_FILE = "vocab_info.json"
SENTENCEPIECE_FILE = "sentencepiece.bpe.model"  # the name XLM-R releases use
WORDPIECE_FILE = "vocab.txt"  # BERT's

Kind = Literal["bpe", "sentencepiece", "wordpiece"]
KINDS: tuple[str, ...] = ("bpe", "sentencepiece", "wordpiece")
MODEL_FILES: dict[str, str] = {"bpe": MERGES_FILE, "sentencepiece": SENTENCEPIECE_FILE, "wordpiece": WORDPIECE_FILE}
SPECIAL_ROLES = ("start", "end", "pad", "unk", "mask")


@dataclass(frozen=True)
class Specials:
    """The ids a vocabulary gives its special roles. A sentence is ``start w1 ... wn end``
    (XLM: ``</s> ... </s>``), batches are padded with ``pad``, MLM masks with ``mask``."""

    kind: str = "bpe"
    start: int = EOS_INDEX
    end: int = EOS_INDEX
    pad: int = PAD_INDEX
    unk: int = UNK_INDEX
    mask: int = MASK_INDEX

    def ids(self) -> dict[str, int]:
        return {r: getattr(self, r) for r in SPECIAL_ROLES}

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.ids()}

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> Specials:
        """From :meth:`to_json`'s form; ``None`` (data or models from before kinds) is XLM's."""
        if not d:
            return XLM_SPECIALS
        return cls(str(d.get("kind", "bpe")), *(int(d[r]) for r in SPECIAL_ROLES))


XLM_SPECIALS = Specials()
XLM_SPECIAL_TOKENS = {"start": EOS_WORD, "end": EOS_WORD, "pad": PAD_WORD, "unk": UNK_WORD, "mask": MASK_WORD}
SENTENCEPIECE_SPECIAL_TOKENS = {"start": "<s>", "end": "</s>", "pad": "<pad>", "unk": "<unk>", "mask": "<mask>"}
WORDPIECE_SPECIAL_TOKENS = {"start": "[CLS]", "end": "[SEP]", "pad": "[PAD]", "unk": "[UNK]", "mask": "[MASK]"}
_RESERVED_RE = re.compile(r"<special\d+>|\[unused\d+\]")


def vocab_hash(vocab_path: Path, merges_path: Path, info_path: Path | None = None) -> str:
    """A short fingerprint of a vocabulary: binarized data records it and checks it on load.
    (A BPE vocabulary's is that of ``vocab.json`` + ``merges.txt``, as before kinds existed.)"""
    h = hashlib.sha256()
    h.update(vocab_path.read_bytes())
    h.update(b"\0")
    h.update(merges_path.read_bytes())
    if info_path is not None:
        h.update(b"\0")
        h.update(info_path.read_bytes())
    return h.hexdigest()[:16]


def vocabulary_files(directory: str | Path) -> list[str]:
    """The names of the files that make up the vocabulary in ``directory`` (those present):
    what a checkpoint copies to be self-contained."""
    d = Path(directory)
    kind, _ = read_vocab_info(d)
    info = {
        "bpe": [],
        "sentencepiece": [VOCAB_INFO_FILE, "sentencepiece.json"],
        "wordpiece": [VOCAB_INFO_FILE, "wordpiece.json"],
    }
    return [n for n in (VOCAB_FILE, MODEL_FILES[kind], *info[kind]) if (d / n).is_file()]


def copy_vocabulary(source: str | Path, directory: str | Path) -> None:
    """Copy the files of the vocabulary in ``source`` (:func:`vocabulary_files`) into ``directory``."""
    for name in vocabulary_files(source):
        shutil.copyfile(Path(source) / name, Path(directory) / name)


def read_vocab_info(directory: str | Path) -> tuple[str, dict[str, str]]:
    """``(kind, {role: token})`` from ``vocab_info.json``; XLM's BPE layout when there is none."""
    p = Path(directory) / VOCAB_INFO_FILE
    if not p.is_file():
        return "bpe", dict(XLM_SPECIAL_TOKENS)
    info = read_json(p, DataError)
    kind = info.get("kind") if isinstance(info, dict) else None
    if kind not in KINDS:
        raise DataError(f"{p}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    specials = info.get("specials")
    if not isinstance(specials, dict) or any(not isinstance(specials.get(r), str) for r in SPECIAL_ROLES):
        raise DataError(f"{p}: 'specials' must give a token for each of {', '.join(SPECIAL_ROLES)}")
    return kind, {r: specials[r] for r in SPECIAL_ROLES}


def write_vocab_info(directory: str | Path, kind: str, tokens: dict[str, str]) -> None:
    """``vocab_info.json``: the kind and the token of each special role (in the order given)."""
    write_json(Path(directory) / VOCAB_INFO_FILE, {"kind": kind, "specials": tokens}, sort_keys=False)


def write_vocab_json(directory: str | Path, tokens: Sequence[str]) -> None:
    """``vocab.json``: token -> id in the order of ``tokens`` (the one writer of it, for every kind)."""
    mapping = {t: i for i, t in enumerate(tokens)}
    write_json(Path(directory) / VOCAB_FILE, mapping, indent=0, sort_keys=False, ensure_ascii=False)


@dataclass
class Vocabulary:
    """Token <-> id mapping with the ids of its special tokens (:attr:`specials`).

    ``special_tokens`` maps each role of :data:`SPECIAL_ROLES` to its token (default: XLM's
    layout, which is also checked); ``source`` names the file that declared them, for errors."""

    token_to_id: dict[str, int]
    hash: str = ""
    kind: str = "bpe"
    special_tokens: dict[str, str] | None = None
    source: str = "vocabulary"
    id_to_token: list[str] = field(init=False)
    specials: Specials = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.token_to_id)
        self.id_to_token = [""] * n
        for tok, i in self.token_to_id.items():
            if not 0 <= i < n or self.id_to_token[i]:
                raise DataError(f"vocabulary ids are not a permutation of 0..{n - 1} (token {tok!r} -> {i})")
            self.id_to_token[i] = tok
        roles = self.special_tokens if self.special_tokens is not None else XLM_SPECIAL_TOKENS
        if self.kind == "bpe":  # BPE vocabularies are always in XLM's layout
            for i, tok in enumerate(SPECIAL_TOKENS):
                if i >= n or self.id_to_token[i] != tok:
                    raise DataError(f"vocabulary must have {tok!r} at id {i} (the XLM special-token layout)")
        missing = [f"{r}={t!r}" for r, t in roles.items() if t not in self.token_to_id]
        if missing:
            raise DataError(f"{self.source}: special tokens {', '.join(missing)} are not in the {n}-token {VOCAB_FILE}")
        self.specials = Specials(self.kind, *(self.token_to_id[roles[r]] for r in SPECIAL_ROLES))
        special_ids = set(self.specials.ids().values()) | {
            i for i, t in enumerate(self.id_to_token) if t in SPECIAL_TOKENS or _RESERVED_RE.fullmatch(t)
        }
        lo, hi = 0, n
        while lo < n and lo in special_ids:
            lo += 1
        while hi > lo and hi - 1 in special_ids:
            hi -= 1
        self.words_start, self.words_end = lo, hi  # ordinary tokens: ids in [words_start, words_end)

    @classmethod
    def from_dir(cls, directory: str | Path) -> Vocabulary:
        d = Path(directory)
        vp = d / VOCAB_FILE
        kind, tokens = read_vocab_info(d)
        info_path = d / VOCAB_INFO_FILE
        mp = d / MODEL_FILES[kind]
        if not vp.is_file():
            raise DataError(f"{vp}: vocabulary file not found")
        if not mp.is_file():
            raise DataError(f"{mp}: {'merges' if kind == 'bpe' else kind + ' model'} file not found")
        mapping = read_json(vp, DataError, "not a JSON vocabulary")
        if not isinstance(mapping, dict) or not all(isinstance(v, int) for v in mapping.values()):
            raise DataError(f"{vp}: expected a JSON object mapping tokens to integer ids")
        has_info = info_path.is_file()
        return cls(
            mapping,
            hash=vocab_hash(vp, mp, info_path if has_info else None),
            kind=kind,
            special_tokens=tokens if has_info else None,
            source=str(info_path if has_info else vp),
        )

    def __len__(self) -> int:
        return len(self.id_to_token)

    def __getitem__(self, token: str) -> int:
        return self.token_to_id.get(token, self.specials.unk)

    def token(self, index: int) -> str:
        return self.id_to_token[index]

    def is_word(self, index: int) -> bool:
        """Whether ``index`` is an ordinary token (not special, not reserved)."""
        return self.words_start <= index < self.words_end
