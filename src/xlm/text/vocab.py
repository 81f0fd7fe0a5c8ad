"""The shared vocabulary: ``vocab.json`` (token -> id) and ``merges.txt`` in the ``</w>``
end-of-word form that Hugging Face's ``XLMTokenizer`` reads.

Special tokens keep the ids of the original XLM: ``<s>``=0, ``</s>``=1, ``<pad>``=2,
``<unk>``=3, ``<special0>``..``<special9>``=4..13; the mask token is ``<special1>``=5.
A sentence is fed to the model as ``</s> w1 ... wn </s>``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from xlm.errors import DataError

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


def vocab_hash(vocab_path: Path, merges_path: Path) -> str:
    """A short fingerprint of a vocabulary: binarized data records it and checks it on load."""
    h = hashlib.sha256()
    h.update(vocab_path.read_bytes())
    h.update(b"\0")
    h.update(merges_path.read_bytes())
    return h.hexdigest()[:16]


@dataclass
class Vocabulary:
    """Token <-> id mapping with the special ids above."""

    token_to_id: dict[str, int]
    hash: str = ""
    id_to_token: list[str] = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.token_to_id)
        self.id_to_token = [""] * n
        for tok, i in self.token_to_id.items():
            if not 0 <= i < n or self.id_to_token[i]:
                raise DataError(f"vocabulary ids are not a permutation of 0..{n - 1} (token {tok!r} -> {i})")
            self.id_to_token[i] = tok
        for i, tok in enumerate(SPECIAL_TOKENS):
            if i >= n or self.id_to_token[i] != tok:
                raise DataError(f"vocabulary must have {tok!r} at id {i} (the XLM special-token layout)")

    @classmethod
    def from_dir(cls, directory: str | Path) -> Vocabulary:
        d = Path(directory)
        vp, mp = d / VOCAB_FILE, d / MERGES_FILE
        if not vp.is_file():
            raise DataError(f"{vp}: vocabulary file not found")
        if not mp.is_file():
            raise DataError(f"{mp}: merges file not found")
        try:
            mapping = json.loads(vp.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{vp}: not a JSON vocabulary: {e}") from None
        if not isinstance(mapping, dict) or not all(isinstance(v, int) for v in mapping.values()):
            raise DataError(f"{vp}: expected a JSON object mapping tokens to integer ids")
        return cls(mapping, hash=vocab_hash(vp, mp))

    def __len__(self) -> int:
        return len(self.id_to_token)

    def __getitem__(self, token: str) -> int:
        return self.token_to_id.get(token, UNK_INDEX)

    def token(self, index: int) -> str:
        return self.id_to_token[index]

    bos_index = BOS_INDEX
    eos_index = EOS_INDEX
    pad_index = PAD_INDEX
    unk_index = UNK_INDEX
    mask_index = MASK_INDEX
