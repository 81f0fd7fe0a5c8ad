"""Word translation and cross-lingual word similarity from the model's lookup table.

A word's vector is the mean of the embedding-table rows of its BPE pieces: the word is
normalized as the training text was (Moses rules of its language, lowercased when the
model's vocabulary is) and BPE-encoded with the model's vocabulary; ``<unk>`` pieces are
left out, and a word with no known piece has no vector (it is counted as out of
vocabulary). Words read from binarized data are already normalized and only BPE-encoded.

Translation retrieves, for each source word of a bilingual dictionary (MUSE format,
several correct targets allowed), the nearest target words among a target vocabulary
(the most frequent words of the model's corpus, plus every gold target), by cosine
similarity ("nearest neighbour") or CSLS (Conneau et al., 2018)::

    CSLS(x, y) = 2 cos(x, y) - r_T(x) - r_S(y)

with ``r_T(x)`` the mean cosine of x to its k=10 nearest target words and ``r_S(y)`` the
mean cosine of y to its k nearest source words (the source vocabulary: frequent source
words when known, plus the dictionary's source words). Precision@k counts a source word
as translated when any of its gold targets is among the k best.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from xlm.data.dataset import MonolingualData
from xlm.errors import DataError, XLMError
from xlm.evaluation.retrieval import normalize_rows, topk_mean
from xlm.model.pretrained import Pretrained
from xlm.text.lines import numbered_lines
from xlm.text.vocab import END_OF_WORD, N_SPECIAL, UNK_INDEX

CSLS_K = 10
TOP_KS = (1, 5, 10)
# word vectors by default: chosen by the sweep in docs/results.md ("Word translation: vectors
# and centering")
DEFAULT_WORD_VECTORS = "encoder"


# ----------------------------------------------------------------------------- reading


def read_dictionary(path: str | Path) -> list[tuple[str, str]]:
    """MUSE-format pairs: ``source<TAB>target`` or ``source target`` per line (a source
    word may appear on several lines, one per correct translation)."""
    path = Path(path)
    pairs = []
    for n, line in numbered_lines(path):
        if not line.strip():
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        parts = [p.strip() for p in parts]
        if len(parts) != 2 or not all(parts):
            raise DataError(f"{path}:{n}: expected 'source<TAB>target' or 'source target', got {line[:80]!r}")
        pairs.append((parts[0], parts[1]))
    if not pairs:
        raise DataError(f"{path}: empty dictionary")
    return pairs


def read_similarity(path: str | Path) -> list[tuple[str, str, float]]:
    """``word<TAB>word<TAB>score`` lines (whitespace-separated also accepted)."""
    path = Path(path)
    items = []
    for n, line in numbered_lines(path):
        if not line.strip():
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        try:
            if len(parts) != 3:
                raise ValueError
            items.append((parts[0].strip(), parts[1].strip(), float(parts[2])))
        except ValueError:
            raise DataError(f"{path}:{n}: expected 'word<TAB>word<TAB>score', got {line[:80]!r}") from None
    if not items:
        raise DataError(f"{path}: no word pairs")
    return items


def read_word_list(path: str | Path) -> list[str]:
    """One word per line (the first field; a count or other columns may follow)."""
    words = []
    for _, line in numbered_lines(path):
        fields = line.split()
        if fields:
            words.append(fields[0])
    return words


def frequent_words(
    data: MonolingualData, vocab_tokens: Sequence[str], n: int, max_tokens: int = 5_000_000
) -> list[str]:
    """The ``n`` most frequent words of a binarized file (its first ``max_tokens`` tokens),
    decoded from its pieces: BPE (a word ends at a piece ending in ``</w>``), SentencePiece (a
    word starts at a piece starting with ``▁``) or WordPiece (at a piece not starting with ``##``)."""
    sp = data.specials
    stream = np.asarray(data.tokens[:max_tokens], dtype=np.int64)
    if sp.kind == "bpe":
        stream = stream[(stream >= N_SPECIAL) | (stream == UNK_INDEX)]
    else:
        stream = stream[~np.isin(stream, [sp.start, sp.end, sp.pad, sp.mask])]
    if stream.size == 0:
        return []
    if sp.kind == "bpe":
        is_end = np.fromiter((t.endswith(END_OF_WORD) for t in vocab_tokens), dtype=bool, count=len(vocab_tokens))
        cuts = np.flatnonzero(is_end[stream]) + 1
    else:
        starts_word = (
            (lambda t: t.startswith("▁")) if sp.kind == "sentencepiece" else (lambda t: not t.startswith("##"))
        )
        is_start = np.fromiter((starts_word(t) for t in vocab_tokens), dtype=bool, count=len(vocab_tokens))
        cuts = np.flatnonzero(is_start[stream])
    marker = {"bpe": END_OF_WORD, "sentencepiece": "▁", "wordpiece": "##"}[sp.kind]
    counts: Counter[bytes] = Counter(w.tobytes() for w in np.split(stream, cuts) if w.size)
    words = []
    for key, _ in counts.most_common():
        ids = np.frombuffer(key, dtype=np.int64)
        if (ids == sp.unk).any():
            continue
        word = "".join(vocab_tokens[i] for i in ids).replace(marker, "")
        if not word:
            continue
        words.append(word)
        if len(words) >= n:
            break
    return words


def frequent_words_in_text(path: str | Path, lang: str, n: int, lowercase: bool, max_lines: int = 100_000) -> list[str]:
    """The ``n`` most frequent words of raw text (normalized first; first ``max_lines`` lines)."""
    from xlm.text.normalize import Normalizer

    norm = Normalizer(lang, lowercase)
    counts: Counter[str] = Counter()
    for k, line in numbered_lines(path):
        if k > max_lines:
            break
        counts.update(norm.tokens(line))
    return [w for w, _ in counts.most_common(n)]


# ----------------------------------------------------------------------------- vectors


WordVectors = Literal["table", "encoder"]
WORD_VECTORS: tuple[str, ...] = ("table", "encoder")


class WordEmbedder:
    """Word -> vector: ``table``, the mean of the embedding rows of its BPE pieces (``<unk>``
    pieces left out); ``encoder``, the word encoded alone as a sentence (``</s> w </s>``, its
    language id) and pooled as the checkpoint's sentence vectors are (see
    ``xlm.evaluation.embeddings.default_embedding``; uncentered here). ``progress`` (encoder
    vectors): as :class:`~xlm.evaluation.embeddings.EmbedOptions`' (None: a bar for long inputs)."""

    def __init__(self, pretrained: Pretrained, lang: str, source: str = "table", progress: bool | None = False):
        from xlm.text.tokenizer import TextEncoder

        if source not in WORD_VECTORS:
            raise XLMError(f"word vectors {source!r}: expected one of {WORD_VECTORS}")
        self.lang = lang
        self.source = source
        self.encoder = TextEncoder(pretrained.directory, lang, pretrained.info.lowercase_and_remove_accent)
        self.vocab = pretrained.vocab
        self.table = pretrained.model.embeddings.weight.detach().float().cpu().numpy()
        self.sentences = None
        if source == "encoder":
            from xlm.evaluation.embeddings import EmbedOptions, SentenceEncoder

            self.sentences = SentenceEncoder(pretrained, lang, EmbedOptions(center=False, progress=progress))

    def normalize(self, word: str) -> str:
        return self.encoder.normalize(word)

    def vectors(self, words: Sequence[str], normalized: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(N, D)`` vectors and a boolean mask of the words that have one."""
        texts = list(words) if normalized else [self.normalize(w) for w in words]
        ids = self.encoder.bpe.encode_batch(texts)
        out = np.zeros((len(texts), self.table.shape[1]), dtype=np.float32)
        found = np.zeros(len(texts), dtype=bool)
        for i, pieces in enumerate(ids):
            known = [p for p in pieces if self.vocab.is_word(p)]
            if known:
                out[i] = self.table[known].mean(axis=0)
                found[i] = True
        if self.sentences is not None and found.any():
            rows = np.flatnonzero(found)
            out[rows] = self.sentences.encode_ids([[p for p in ids[i] if self.vocab.is_word(p)] for i in rows])
        return out, found


@dataclass
class WordSet:
    """Normalized words with their vectors (only words that have one)."""

    words: list[str]
    vectors: np.ndarray

    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}


def build_word_set(
    embedder: WordEmbedder, frequent: Sequence[str], extra: Sequence[str], center: bool = False
) -> WordSet:
    """Frequent corpus words (already normalized) plus ``extra`` raw words (normalized
    here), de-duplicated, without the words that have no vector; ``center`` subtracts the
    mean vector of the set (each language's own: the language-specific component)."""
    seen: dict[str, None] = {}
    for w in frequent:
        seen.setdefault(w, None)
    for w in extra:
        seen.setdefault(embedder.normalize(w), None)
    words = [w for w in seen if w]
    vecs, found = embedder.vectors(words, normalized=True)
    vecs = vecs[found]
    if center and len(vecs):
        vecs = vecs - vecs.mean(axis=0, keepdims=True)
    return WordSet([w for w, f in zip(words, found) if f], vecs)


# ----------------------------------------------------------------------------- metrics


def csls_scores(queries: np.ndarray, targets: np.ndarray, sources: np.ndarray, k: int = CSLS_K) -> np.ndarray:
    """``2 cos(x, y) - r_T(x) - r_S(y)`` for every query x and target y; ``sources`` is the
    source vocabulary whose k nearest neighbours define ``r_S``."""
    q, t, s = normalize_rows(queries), normalize_rows(targets), normalize_rows(sources)
    sim = q @ t.T
    r_t = topk_mean(sim, k)
    r_s = topk_mean(t @ s.T, k)
    return 2 * sim - r_t[:, None] - r_s[None, :]


def precision_at(scores: np.ndarray, gold: Sequence[set[int]], ks: Sequence[int] = TOP_KS) -> dict[int, float]:
    """Share of rows with any of their gold columns among their k best columns."""
    out = {}
    if scores.shape[0] == 0:
        return {k: float("nan") for k in ks}
    order = np.argsort(-scores, axis=1, kind="stable")[:, : max(ks)]
    for k in ks:
        hits = [bool(gold[i].intersection(order[i, :k].tolist())) for i in range(len(gold))]
        out[k] = float(np.mean(hits))
    return out


def translation_metrics(
    queries: np.ndarray,
    targets: np.ndarray,
    gold: Sequence[set[int]],
    sources: np.ndarray | None = None,
    k: int = CSLS_K,
    ks: Sequence[int] = TOP_KS,
) -> dict[str, float]:
    """``p@k`` (nearest neighbour by cosine) and ``csls/p@k`` for query rows whose correct
    target rows are ``gold[i]``. ``sources`` defaults to the queries themselves."""
    sim = normalize_rows(queries) @ normalize_rows(targets).T
    csls = csls_scores(queries, targets, queries if sources is None else sources, k)
    out = {}
    for name, scores in (("", sim), ("csls/", csls)):
        for kk, v in precision_at(scores, gold, ks).items():
            out[f"{name}p@{kk}"] = v
    return out


def pair_distances(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Mean cosine similarity and mean L2 distance between row i of x and row i of y."""
    if len(x) == 0:
        return {"cosine": float("nan"), "l2": float("nan")}
    cos = np.sum(normalize_rows(x) * normalize_rows(y), axis=1)
    l2 = np.linalg.norm(np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64), axis=1)
    return {"cosine": float(cos.mean()), "l2": float(l2.mean())}


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given the average of the ranks they span."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    new_group = np.concatenate(([True], sorted_x[1:] != sorted_x[:-1])) if n else np.zeros(0, dtype=bool)
    group = np.cumsum(new_group) - 1
    counts = np.bincount(group)
    first = np.flatnonzero(new_group)  # 0-based position where each group starts
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = avg[group]
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else float("nan")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(rankdata(x), rankdata(y))


# ----------------------------------------------------------------------------- evaluation


@dataclass
class WordEvalInputs:
    """What one language pair's evaluation needs besides the model."""

    src_lang: str
    tgt_lang: str
    pairs: list[tuple[str, str]]
    target_frequent: list[str] = field(default_factory=list)  # normalized words, e.g. from binarized data
    source_frequent: list[str] = field(default_factory=list)
    target_listed: list[str] = field(default_factory=list)  # raw words (normalized here), e.g. a word list
    source_listed: list[str] = field(default_factory=list)


def evaluate_dictionary(
    pretrained: Pretrained,
    inputs: WordEvalInputs,
    k: int = CSLS_K,
    ks: Sequence[int] = TOP_KS,
    vectors: str = DEFAULT_WORD_VECTORS,
    center: bool = True,
    progress: bool | None = False,
) -> dict[str, float]:
    """Word translation P@k (NN and CSLS), and the mean cosine / L2 between the vectors of
    the dictionary pairs; keys ``SRC-TGT/p@1``, ``SRC-TGT/csls/p@1``, ``SRC-TGT/cosine`` ...
    ``vectors`` picks the word vectors and ``progress`` their progress bars (see
    :class:`WordEmbedder`); ``center`` subtracts each language's mean word vector (over its
    vocabulary) first."""
    src_emb = WordEmbedder(pretrained, inputs.src_lang, vectors, progress)
    tgt_emb = WordEmbedder(pretrained, inputs.tgt_lang, vectors, progress)
    pairs = [(src_emb.normalize(a), tgt_emb.normalize(b)) for a, b in inputs.pairs]
    target = build_word_set(
        tgt_emb, inputs.target_frequent, inputs.target_listed + [b for _, b in inputs.pairs], center
    )
    source = build_word_set(
        src_emb, inputs.source_frequent, inputs.source_listed + [a for a, _ in inputs.pairs], center
    )
    t_index, s_index = target.index(), source.index()
    gold: dict[str, set[int]] = {}
    kept_pairs = []
    for a, b in pairs:
        if a in s_index and b in t_index:
            gold.setdefault(a, set()).add(t_index[b])
            kept_pairs.append((s_index[a], t_index[b]))
    if not gold:
        raise XLMError(f"{inputs.src_lang}-{inputs.tgt_lang}: no dictionary pair has vectors on both sides")
    query_words = list(gold)
    queries = source.vectors[[s_index[w] for w in query_words]]
    metrics = translation_metrics(queries, target.vectors, [gold[w] for w in query_words], source.vectors, k, ks)
    si, ti = zip(*kept_pairs)
    metrics.update(pair_distances(source.vectors[list(si)], target.vectors[list(ti)]))
    metrics["n_queries"] = float(len(query_words))
    metrics["n_pairs"] = float(len(kept_pairs))
    metrics["oov_pairs"] = float(len(pairs) - len(kept_pairs))
    metrics["target_vocab"] = float(len(target.words))
    name = f"{inputs.src_lang}-{inputs.tgt_lang}"
    return {f"{name}/{key}": v for key, v in metrics.items()}


def evaluate_similarity(
    pretrained: Pretrained, src_lang: str, tgt_lang: str, items: Sequence[tuple[str, str, float]]
) -> dict[str, float]:
    """Pearson and Spearman correlation between human scores and the cosine of the word
    vectors (pairs with a word without vector are skipped and counted)."""
    a_vec, a_ok = WordEmbedder(pretrained, src_lang).vectors([a for a, _, _ in items])
    b_vec, b_ok = WordEmbedder(pretrained, tgt_lang).vectors([b for _, b, _ in items])
    ok = a_ok & b_ok
    if ok.sum() < 2:
        raise XLMError(f"{src_lang}-{tgt_lang}: fewer than 2 similarity pairs have vectors")
    cos = np.sum(normalize_rows(a_vec[ok]) * normalize_rows(b_vec[ok]), axis=1)
    gold = np.array([s for (_, _, s), keep in zip(items, ok) if keep])
    name = f"{src_lang}-{tgt_lang}/sim"
    return {
        f"{name}/pearson": pearson(cos, gold),
        f"{name}/spearman": spearman(cos, gold),
        f"{name}/n": float(ok.sum()),
        f"{name}/oov": float((~ok).sum()),
    }
