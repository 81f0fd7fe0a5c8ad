"""Reports shared by every command: plain-text tables, JSON metrics and PNG plots (matplotlib,
headless), written through :mod:`xlm.fileio` (atomic; ``-`` is standard output)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xlm.fileio import usual_permissions, write_atomic, write_figure, write_json

__all__ = [
    "format_table",
    "plot_training",
    "read_metrics",
    "save_figure",
    "usual_permissions",
    "write_atomic",
    "write_json",
]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], floatfmt: str = "{:.2f}") -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "-" if math.isnan(v) else floatfmt.format(v)
        return str(v)

    body = [[cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths)))
    sep = "  ".join("-" * w for w in widths)
    out = [line, sep]
    for r in body:
        out.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))))
    return "\n".join(out)


def save_figure(fig: Any, path: str | Path) -> Path:
    """A figure as an image file, written atomically (see :mod:`xlm.fileio`)."""
    return write_figure(fig, path, dpi=120, bbox_inches="tight")


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics (is {run_dir} a training run folder?)")
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_training(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """``loss.png`` (training loss per objective) and ``ppl.png`` (evaluation perplexity per
    language and objective) from a run's ``metrics.jsonl``."""
    plt = pyplot()
    records = read_metrics(run_dir)
    out = Path(out_dir) if out_dir else Path(run_dir) / "plots"
    written = []
    series: dict[str, tuple[list[int], list[float]]] = {}
    for r in records:
        if r.get("type") == "train":
            for k, v in r.items():
                if k.startswith("loss/") and v is not None:
                    name = k.split("/")[1]
                    series.setdefault(name, ([], []))
                    series[name][0].append(r["step"])
                    series[name][1].append(v)
    if series:
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, (steps, vals) in sorted(series.items()):
            ax.plot(steps, _smooth(vals, 20), label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (moving average)")
        ax.legend()
        ax.grid(alpha=0.3)
        written.append(save_figure(fig, out / "loss.png"))
        plt.close(fig)
    evals = [r for r in records if r.get("type") == "eval"]
    curves: dict[str, tuple[list[int], list[float]]] = {}
    for r in evals:
        for k, v in r.items():
            parts = k.split("/")
            if len(parts) == 4 and parts[3] == "ppl":
                curves.setdefault("/".join(parts[:3]), ([], []))
                curves["/".join(parts[:3])][0].append(r["step"])
                curves["/".join(parts[:3])][1].append(v)
    if curves:
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, (steps, vals) in sorted(curves.items()):
            ax.plot(steps, vals, marker="o", ms=3, label=name)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("perplexity")
        ax.legend(fontsize=7, ncol=2)
        ax.grid(alpha=0.3, which="both")
        written.append(save_figure(fig, out / "ppl.png"))
        plt.close(fig)
    return written
