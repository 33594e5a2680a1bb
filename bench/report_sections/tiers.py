"""The accurate tier's section (issue 26, items 1 and 3): the all-mpnet-base-v2 classifier's
learning curve from experiments/teacher_curve.py's teacher.json, and the cascade's
accuracy-vs-throughput curve from bench/cascade.py's cascade.json."""

from __future__ import annotations

from pathlib import Path

from .base import MET, NOT_MET, Row, at_least, missing, not_measured, number, pyplot, save

TITLES = {
    "teacher": "Accurate tier / teacher: all-mpnet-base-v2 learning curve (experiments/teacher_curve.py)",
    "cascade": "Cascade: fast tier + accurate tier over confidence thresholds (bench/cascade.py)",
}
#: The issue's convergence recipe: epochs over every training row, and independent seeds.
TEACHER_EPOCHS, TEACHER_SEEDS = 3.0, 2
#: The cascade's targets (PhraseBank dev, Twitter dev) and the speed floor they hold at.
CASCADE_TARGETS = (
    ("PhraseBank accuracy ≥ 0.88", "phrasebank_accuracy", 0.88),
    ("PhraseBank macro-F1 ≥ 0.86", "phrasebank_macro_f1", 0.86),
    ("PhraseBank 100 %-agreement accuracy ≥ 0.98", "phrasebank_100_accuracy", 0.98),
    ("Twitter weighted-F1 ≥ 0.88", "twitter_weighted_f1", 0.88),
)
CASCADE_MIN_RATIO = 8.0
#: The fast tier's targets alone (the `make demo` model at the precision production serves):
#: FinBERT's published figures, and its speed against BERT-base fp32 in the same run.
FAST_TARGETS = (
    ("PhraseBank accuracy ≥ 0.86", "phrasebank_accuracy", 0.86),
    ("PhraseBank macro-F1 ≥ 0.85", "phrasebank_macro_f1", 0.85),
    ("PhraseBank 100 %-agreement accuracy ≥ 0.97", "phrasebank_100_accuracy", 0.97),
    ("Twitter weighted-F1 ≥ 0.87", "twitter_weighted_f1", 0.87),
    ("≥ 20× BERT-base fp32 sentences/s, same run", "ratio_vs_bert_base", 20.0),
)


def _runs(teacher: dict | None) -> list[dict]:
    return [run for run in (teacher or {}).get("runs", []) if isinstance(run, dict) and run.get("history")]


def teacher_rows(teacher: dict | None) -> list[Row]:
    """Convergence: how far the runs got (epochs, seeds) and where the dev curve stands."""
    area, src = "Accurate tier (#26)", "teacher"
    target = f"teacher trained to convergence: ≥ {TEACHER_EPOCHS:.0f} epochs, ≥ {TEACHER_SEEDS} seeds, dev curve per half epoch"
    runs = _runs(teacher)
    if not runs:
        return [missing(area, target, src, "no teacher.json with a learning curve (python experiments/teacher_curve.py)")]
    parts, reached = [], []
    for run in runs:
        last = run["history"][-1]
        best = max(point["dev_macro_f1"] for point in run["history"])
        reached.append(float(last["epoch"]))
        parts.append(f"seed {run['seed']}: {last['epoch']:.2f} epochs, dev macro-F1 {last['dev_macro_f1']:.3f} (best {best:.3f})")
    done = min(reached) >= TEACHER_EPOCHS and len(runs) >= TEACHER_SEEDS
    return [Row(area, target, "; ".join(parts), MET if done else NOT_MET, (src,))]


def _chosen(cascade: dict) -> dict | None:
    """The curve point at the threshold production uses (cascade.json's ``default_threshold``),
    else the most accurate point at or above the speed floor."""
    points = [p for p in cascade.get("curve", []) if isinstance(p, dict)]
    default = number(cascade, "default_threshold")
    if default is not None:
        return next((p for p in points if abs(p.get("threshold", -1) - default) < 1e-9), None)
    fast_enough = [p for p in points if (number(p, "ratio_vs_bert_base") or 0) >= CASCADE_MIN_RATIO]
    return max(fast_enough, key=lambda p: number(p, "phrasebank_accuracy") or 0, default=None)


def cascade_rows(cascade: dict | None) -> list[Row]:
    """The cascade's targets at the threshold production uses, with its speed ratio."""
    area, src = "Cascade (#26)", "cascade"
    targets = [f"{t} at ≥ {CASCADE_MIN_RATIO:.0f}× BERT-base (PhraseBank dev mix)" for t, _, _ in CASCADE_TARGETS]
    if not cascade or not cascade.get("curve"):
        return [missing(area, t, src, "no cascade.json (needs a promoted accurate model: bench/cascade.py)") for t in targets]
    point = _chosen(cascade)
    if point is None:
        return [missing(area, t, src, f"no threshold keeps ≥ {CASCADE_MIN_RATIO:.0f}× BERT-base") for t in targets]
    ratio = number(point, "ratio_vs_bert_base") or 0.0
    rows = []
    for target, (_, key, goal) in zip(targets, CASCADE_TARGETS):
        value = number(point, key)
        measured = "—" if value is None else f"{value:.3f} at threshold {point['threshold']:g} ({point.get('phrasebank_routed', 0):.0%} routed, {ratio:.1f}× BERT-base)"
        verdict = not_measured("no figure") if value is None else (at_least(value, goal) if ratio >= CASCADE_MIN_RATIO else NOT_MET)
        rows.append(Row(area, target, measured, verdict, (src,)))
    return rows


def fast_tier_rows(cascade: dict | None) -> list[Row]:
    """The fast tier alone: cascade.json's threshold-0 point routes nothing, so it is the
    production student scored and timed as served (the precision its card allows), beside
    BERT-base in the same run."""
    area, src = "Fast tier (#26)", "cascade"
    point = next((p for p in (cascade or {}).get("curve", []) if isinstance(p, dict) and p.get("threshold") == 0.0), None)
    if point is None:
        return [missing(area, t, src, "no cascade.json point at threshold 0 (bench/cascade.py)") for t, _, _ in FAST_TARGETS]
    fast = (cascade.get("tiers") or {}).get("fast", {})
    served = f"{fast.get('version', '?')} {fast.get('precision', '?')}"
    rows = []
    for target, key, goal in FAST_TARGETS:
        value = number(point, key)
        if value is None:
            rows.append(missing(area, target, src, f"no {key} at threshold 0"))
            continue
        measured = f"{value:.1f}× ({point.get('sentences_per_s', 0):,.0f}/s, {served})" if key == "ratio_vs_bert_base" else f"{value:.3f} ({served})"
        rows.append(Row(area, target, measured, at_least(value, goal), (src,)))
    return rows


def plot_teacher_curve(teacher: dict | None, out: Path) -> Path | None:
    """Dev macro-F1 against epochs, one line per seed: the current recipe solid, runs of an
    earlier recipe (``earlier_runs``: fewer steps, another precision) dashed."""
    runs = _runs(teacher)
    if not runs:
        return None
    earlier = [run for run in (teacher or {}).get("earlier_runs", []) if isinstance(run, dict) and run.get("history")]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for run in runs:
        ax.plot([p["epoch"] for p in run["history"]], [p["dev_macro_f1"] for p in run["history"]], marker="o", label=f"seed {run['seed']}, {run['steps']:,} steps")
    for run in earlier:
        label = f"seed {run['seed']}, {run['steps']:,} steps {run.get('precision', 'fp32')} (earlier recipe)"
        ax.plot([p["epoch"] for p in run["history"]], [p["dev_macro_f1"] for p in run["history"]], marker=".", linestyle="--", alpha=0.6, label=label)
    return _labelled(fig, ax, "epochs over the training rows", "dev macro-F1 (PhraseBank + Twitter)", "all-mpnet-base-v2 classifier: learning curve", out)


def plot_cascade(cascade: dict | None, out: Path) -> Path | None:
    """PhraseBank accuracy and Twitter weighted-F1 against throughput (× BERT-base), one point per
    threshold."""
    points = [p for p in (cascade or {}).get("curve", []) if number(p, "ratio_vs_bert_base") is not None]
    if not points:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ratios = [p["ratio_vs_bert_base"] for p in points]
    for key, label in (("phrasebank_accuracy", "PhraseBank accuracy"), ("twitter_weighted_f1", "Twitter weighted-F1")):
        ax.plot(ratios, [p.get(key) for p in points], marker="o", label=label)
    for p in points:
        ax.annotate(f"{p['threshold']:g}", (p["ratio_vs_bert_base"], p.get("phrasebank_accuracy")), fontsize=7, xytext=(2, 3), textcoords="offset points")
    ax.axvline(CASCADE_MIN_RATIO, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    return _labelled(fig, ax, "sentences/s ÷ BERT-base fp32 (same run)", "dev score", "Cascade: accuracy against speed per threshold", out)


def _labelled(fig, ax, xlabel: str, ylabel: str, title: str, out: Path) -> Path:
    """Axis labels, title, grid and legend, then the PNG."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, out)
