"""What every section of BENCHMARKS.md shares: reading a key out of a results file (a missing
one reads None, so a benchmark that changes its output shape never breaks the report), a
summary row with its verdict, value formatting, and saving a plot without a version stamp."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MET, NOT_MET, NOT_MEASURED = "met", "not met", "not measured"
MARKS = {MET: "✅", NOT_MET: "❌", NOT_MEASURED: "⚪"}


def dig(data: Any, path: str) -> Any:
    """``data["a"]["b"]`` for path "a.b"; None when any step is missing."""
    for key in path.split("."):
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def number(data: Any, *paths: str) -> float | None:
    """The first of ``paths`` that holds a number (not a bool)."""
    for path in paths:
        value = dig(data, path)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


@dataclass(frozen=True)
class Row:
    """One line of the summary: a target, what was measured, and the verdict computed from it."""

    area: str
    target: str
    measured: str
    verdict: str  # MET, NOT_MET, or "not measured: why"
    sources: tuple[str, ...]


def at_least(value: float, target: float) -> str:
    return MET if value >= target else NOT_MET


def at_most(value: float, target: float) -> str:
    return MET if value <= target else NOT_MET


def not_measured(why: str) -> str:
    return f"{NOT_MEASURED}: {why}"


def missing(area: str, target: str, source: str, why: str) -> Row:
    return Row(area, target, "—", not_measured(why), (source,))


def speeds(throughput: Any) -> dict[str, float]:
    """Sentences/s per model variant from a ``throughput`` mapping (non-numbers skipped)."""
    return {name: speed for name in (throughput or {}) if (speed := number(throughput, name)) is not None}


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and len(value) > 8 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return f"{len(value)} values: min {fmt(float(min(value)))}, median {fmt(float(statistics.median(value)))}, max {fmt(float(max(value)))}"
    if isinstance(value, list):
        return ", ".join(fmt(v) for v in value)
    return str(value).replace("|", "/").replace("\n", " ")


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})  # no version stamp: reruns diff only on data
    pyplot().close(fig)
    return path


def throughput_bars(measured: dict[str, float], labels: list[str], lines: list[tuple[float, str]], xlabel: str, title: str, path: Path) -> Path:
    """Horizontal bars of sentences/s per variant (BERT-base grey), slowest first, with target lines."""
    plt = pyplot()
    names = sorted(measured, key=measured.get)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.4))
    bars = ax.barh([labels[list(measured).index(n)] for n in names], [measured[n] for n in names], color=["#888888" if n.startswith("bert") else "#4c72b0" for n in names])
    ax.bar_label(bars, fmt="{:,.0f}", padding=3)
    for (value, label), style in zip(lines, ("--", ":")):
        ax.axvline(value, color="#c44e52", linestyle=style, label=label)
    ax.set_xlim(0, max([*measured.values(), *(v for v, _ in lines)]) * 1.15)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return save(fig, path)
