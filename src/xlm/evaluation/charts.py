"""Grouped bar charts for evaluation metrics (word translation, perplexity)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from xlm.errors import XLMError


def bar_chart(
    groups: Mapping[str, Mapping[str, float]], path: str | Path, ylabel: str, title: str = "", log: bool = False
) -> Path:
    """``groups`` maps a group label (x axis, e.g. a language pair) to ``{series: value}``."""
    from xlm.reports import pyplot, save_figure

    if not groups:
        raise XLMError("nothing to plot")
    series = list(dict.fromkeys(s for values in groups.values() for s in values))  # first-seen order
    labels = list(groups)
    width = 0.8 / max(1, len(series))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(min(14.0, max(4.0, 0.35 * len(labels) * len(series) + 2)), 4))
    x = np.arange(len(labels))
    for i, s in enumerate(series):
        values = [groups[g].get(s, float("nan")) for g in labels]
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=s)
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
    ax.set_xticks(x, labels)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    out = save_figure(fig, path)
    plt.close(fig)
    return out
