"""Cross-lingual sentence retrieval: for each sentence of one language, find its translation
among all the sentences of the other language, by cosine similarity of sentence embeddings
or by the ratio margin of Artetxe & Schwenk (2019)::

    margin(x, y) = cos(x, y) / ( sum_{z in NN_k(x)} cos(x, z) / 2k + sum_{z in NN_k(y)} cos(y, z) / 2k )

where ``NN_k(x)`` are the k nearest target sentences of x and ``NN_k(y)`` the k nearest source
sentences of y (k=4). Precision@1 is reported in both directions; metric keys are
``SRC-TGT/p@1`` (cosine) and ``SRC-TGT/margin/p@1``, ``SRC-TGT`` meaning "queries in SRC,
candidates in TGT". Line ``i`` of one side is the translation of line ``i`` of the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from xlm.errors import DataError, XLMError

MARGIN_K = 4


def normalize_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def cosine_matrix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(N, M)`` cosine similarities between the rows of ``x`` and of ``y``."""
    return normalize_rows(x) @ normalize_rows(y).T


def topk_mean(sim: np.ndarray, k: int) -> np.ndarray:
    """Mean of the ``k`` largest values of each row (``k`` capped at the row length)."""
    k = max(1, min(k, sim.shape[1]))
    part = np.partition(sim, sim.shape[1] - k, axis=1)[:, sim.shape[1] - k :]
    return part.mean(axis=1)


def margin_matrix(sim: np.ndarray, k: int = MARGIN_K) -> np.ndarray:
    """Ratio-margin scores from a cosine matrix ``sim`` (rows: queries, columns: candidates).
    The formula is symmetric, so the transpose scores the other direction."""
    knn_x = topk_mean(sim, k)  # each query's k nearest candidates
    knn_y = topk_mean(sim.T, k)  # each candidate's k nearest queries
    denom = (knn_x[:, None] + knn_y[None, :]) / 2.0
    return sim / np.where(np.abs(denom) < 1e-12, 1e-12, denom)


def precision_at_k(scores: np.ndarray, gold: np.ndarray | None = None, k: int = 1) -> float:
    """Share of rows whose gold column (default: the row's own index) is among the ``k``
    best-scored columns."""
    n, m = scores.shape
    if n == 0:
        return float("nan")
    gold = np.arange(n) if gold is None else np.asarray(gold)
    if k == 1:
        return float(np.mean(scores.argmax(axis=1) == gold))
    k = min(k, m)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float(np.mean((top == gold[:, None]).any(axis=1)))


def retrieval_metrics(
    src: np.ndarray, tgt: np.ndarray, src_lang: str, tgt_lang: str, margin: bool = True, k: int = MARGIN_K
) -> dict[str, float]:
    """P@1 of retrieving ``tgt[i]`` for ``src[i]`` and back, cosine and (optionally) margin."""
    if src.shape != tgt.shape:
        raise XLMError(f"{src_lang}-{tgt_lang}: {src.shape[0]} source and {tgt.shape[0]} target sentences differ")
    sim = cosine_matrix(src, tgt)
    fwd, bwd = f"{src_lang}-{tgt_lang}", f"{tgt_lang}-{src_lang}"
    out = {f"{fwd}/n": float(len(src)), f"{fwd}/p@1": precision_at_k(sim), f"{bwd}/p@1": precision_at_k(sim.T)}
    if margin:
        m = margin_matrix(sim, k)
        out[f"{fwd}/margin/p@1"] = precision_at_k(m)
        out[f"{bwd}/margin/p@1"] = precision_at_k(m.T)
    return out


def read_pairs_tsv(path: str | Path) -> tuple[list[str], list[str]]:
    """``source<TAB>target`` lines -> (sources, targets). Blank lines are skipped; a line
    without exactly one tab is an error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: pairs file not found")
    src, tgt = [], []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{n}: invalid UTF-8 ({e.reason})") from None
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
                raise DataError(
                    f"{path}:{n}: expected 'source<TAB>target' (one tab, two non-empty sides), got {line[:80]!r}"
                )
            src.append(parts[0])
            tgt.append(parts[1])
    if not src:
        raise DataError(f"{path}: no sentence pairs")
    return src, tgt


def parse_pair_spec(spec: str) -> tuple[str, str, str]:
    """``en-fr=FILE`` -> ("en", "fr", "FILE")."""
    if "=" not in spec:
        raise XLMError(f"{spec!r}: expected LANG-LANG=FILE (e.g. en-fr=pairs.tsv)")
    pair, path = spec.split("=", 1)
    langs = pair.split("-")
    if len(langs) != 2 or not all(langs) or langs[0] == langs[1] or not path:
        raise XLMError(f"{spec!r}: expected LANG-LANG=FILE (e.g. en-fr=pairs.tsv)")
    return langs[0], langs[1], path


def plot_heatmap(metrics: Mapping[str, float], path: str | Path, metric: str = "p@1", title: str = "") -> Path:
    """Heat-map of ``SRC-TGT/<metric>`` over language pairs (rows: queries, columns: candidates)."""
    from xlm.reports import pyplot, save_figure

    cells: dict[tuple[str, str], float] = {}
    for key, value in metrics.items():
        head, _, rest = key.partition("/")
        if rest == metric and head.count("-") == 1:
            a, b = head.split("-")
            cells[(a, b)] = value
    if not cells:
        raise XLMError(f"no '{metric}' metric to plot")
    langs = sorted({lang for pair in cells for lang in pair})
    grid = np.full((len(langs), len(langs)), np.nan)
    for (a, b), v in cells.items():
        grid[langs.index(a), langs.index(b)] = v
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.1 * len(langs) + 2.5, 1.0 * len(langs) + 1.8))
    im = ax.imshow(np.ma.masked_invalid(grid), vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(langs)), langs)
    ax.set_yticks(range(len(langs)), langs)
    ax.set_xlabel("candidates (target)")
    ax.set_ylabel("queries (source)")
    for i in range(len(langs)):
        for j in range(len(langs)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", color="w" if grid[i, j] < 0.6 else "k")
    ax.set_title(title or f"sentence retrieval {metric}")
    fig.colorbar(im, ax=ax, fraction=0.046)
    out = save_figure(fig, path)
    plt.close(fig)
    return out
