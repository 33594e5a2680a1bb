"""The alerter's section: bench/alerts.py's alerts.json (precision, recall and median delay
against the targets the file states) and the plot of detection delays beside the static
threshold's."""

from __future__ import annotations

import statistics
from pathlib import Path

from .base import Row, at_least, at_most, dig, missing, number, pyplot, save

TITLES = {"alerts": "Alerts: labelled spike benchmark (bench/alerts.py)"}


def alert_rows(alerts: dict | None) -> list[Row]:
    area, src = "Alerts", "alerts"
    figures = (("precision", "precision ≥ {:g}", at_least, "{:.3f}"), ("recall", "recall ≥ {:g}", at_least, "{:.3f}"), ("median_delay_minutes", "median delay ≤ {:g} min", at_most, "{:.1f} min"))
    rows = []
    for key, target, compare, shape in figures:
        goal, value = number(alerts, f"targets.{key}"), number(alerts, f"alerter.{key}")
        label = target.format(goal) if goal is not None else target.replace(" {:g}", "")
        if goal is None or value is None:
            rows.append(missing(area, label, src, f"alerts.json lacks targets.{key} or alerter.{key}"))
        else:
            rows.append(Row(area, label, shape.format(value), compare(value, goal), (src,)))
    return rows


def plot_alert_delays(alerts: dict | None, path: Path) -> Path | None:
    """Distribution of detection delays, the alerter against the static threshold."""
    pooled = {}
    for who in ("alerter", "static_threshold"):
        delays = [d for run in (alerts or {}).get("runs", []) for d in (dig(run, f"{who}.delays_minutes") or []) if isinstance(d, (int, float))]
        if delays:
            pooled[who] = delays
    if not pooled:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    top = min(max(max(d) for d in pooled.values()), 120)
    bins = [5 * i for i in range(int(top // 5) + 2)]
    for (who, delays), color in zip(pooled.items(), ("#4c72b0", "#888888")):
        ax.hist([min(d, bins[-1]) for d in delays], bins=bins, alpha=0.6, color=color, label=f"{who.replace('_', ' ')} (median {statistics.median(delays):.1f} min, n={len(delays)})")
    goal = number(alerts, "targets.median_delay_minutes")
    if goal is not None:
        ax.axvline(goal, color="#c44e52", linestyle="--", label=f"target median ≤ {goal:g} min")
    ax.set_xlabel(f"minutes from burst start to alert (last bin: ≥ {bins[-1]})")
    ax.set_ylabel("detected bursts")
    ax.set_title("Alert delay")
    ax.legend(fontsize=8)
    return save(fig, path)
