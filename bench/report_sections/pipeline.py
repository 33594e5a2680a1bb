"""The pipeline's section: bench/pipeline.py's pipeline.json (articles/s against the classifier
alone, p95 arrival → indexed at half of capacity, per backend and per extra check kept beside
the main run) and its three plots."""

from __future__ import annotations

from pathlib import Path

from .base import Row, at_least, at_most, dig, missing, not_measured, number, pyplot, save, speeds

TITLES = {"pipeline": "Pipeline: throughput, latency, scale, memory (bench/pipeline.py)"}
BACKENDS = (("embedded", "embedded"), ("kafka_es", "Kafka + Elasticsearch"))
#: A latency run counts as "at half of capacity" when it offered 40-52.5 % of the measured capacity.
HALF_CAPACITY = (0.40, 0.525)


def pipeline_runs(pipeline: dict | None) -> list[tuple[str, dict]]:
    """The main run ("") and any extra check pipeline.json keeps beside it (a sub-object with
    its own per-backend figures, e.g. a short check after a change), each to be judged alike."""
    if not pipeline:
        return [("", {})]
    checks = [(key, sub) for key, sub in pipeline.items() if isinstance(sub, dict) and any(isinstance(sub.get(b), dict) and "ratio" in sub[b] for b, _ in BACKENDS)]
    return [("", pipeline), *checks]


def pipeline_rows(pipeline: dict | None) -> list[Row]:
    area, src = "Pipeline (#16)", "pipeline"
    rows = []
    for name, run in pipeline_runs(pipeline):
        for backend, label in BACKENDS:
            if name and backend not in run:
                continue
            target = f"{label}{f' ({name})' if name else ''}: ≥ 0.8 of classifier-only articles/s"
            ratio = number(run, f"{backend}.ratio")
            if ratio is None:
                rows.append(missing(area, target, src, f"pipeline.json lacks {backend}.ratio"))
                continue
            rate, alone = number(run, f"{backend}.articles_per_s"), number(run, f"{backend}.classifier_only_per_s")
            detail = f" ({rate:.1f} vs {alone:.1f}/s)" if rate is not None and alone is not None else ""
            rows.append(Row(area, target, f"{ratio:.2f}{detail}", at_least(ratio, 0.8), (src,)))
    return rows


def latency_runs(pipeline: dict | None) -> dict[str, dict]:
    """Latency run per backend: ``<backend>.latency_s`` (bench/pipeline.py measures both), or
    older results' single Kafka + Elasticsearch run under ``latency_s``."""
    runs: dict[str, dict] = {}
    flat = dig(pipeline, "latency_s")
    if isinstance(flat, dict) and "p95" in flat:
        runs["kafka_es"] = flat
    for backend in ("embedded", "kafka_es"):
        run = dig(pipeline, f"{backend}.latency_s")
        if isinstance(run, dict) and "p95" in run:
            runs[backend] = run
    return runs


def capacity(pipeline: dict, backend: str, run: dict) -> float | None:
    return number(run, "capacity_per_s") or number(pipeline, f"{backend}.articles_per_s")


def latency_rows(pipeline: dict | None) -> list[Row]:
    area, src = "Latency, CPU (#16)", "pipeline"
    rows = []
    for name, check in pipeline_runs(pipeline):
        runs = latency_runs(check)
        for backend, label in BACKENDS:
            if name and backend not in runs:
                continue
            target = f"{label}{f' ({name})' if name else ''}: p95 arrival → indexed ≤ 1 s at half of capacity"
            run = runs.get(backend)
            if run is None:
                rows.append(missing(area, target, src, f"pipeline.json has no {backend} latency run"))
                continue
            p95, offered, cap = number(run, "p95"), number(run, "offered_per_s"), capacity(check, backend, run)
            if p95 is None or offered is None or not cap:
                rows.append(missing(area, target, src, f"the {backend} latency run lacks p95, offered_per_s or a capacity"))
                continue
            share = offered / cap
            measured = f"p95 {p95:.2f} s at {offered:.2f}/s offered = {share:.2f}× capacity"
            if HALF_CAPACITY[0] <= share <= HALF_CAPACITY[1]:
                rows.append(Row(area, target, measured, at_most(p95, 1.0), (src,)))
            else:
                rows.append(Row(area, target, measured, not_measured(f"offered {share:.2f}× capacity, not half"), (src,)))
    return rows


def plot_pipeline(pipeline: dict | None, path: Path) -> Path | None:
    """Pipeline articles/s against the classifier alone, with the 0.8× target on each backend."""
    backends = [b for b in ("embedded", "kafka_es") if number(pipeline, f"{b}.articles_per_s", ) is not None and number(pipeline, f"{b}.classifier_only_per_s") is not None]
    if not backends:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for i, b in enumerate(backends):
        alone, rate = number(pipeline, f"{b}.classifier_only_per_s"), number(pipeline, f"{b}.articles_per_s")
        ax.bar(i - 0.2, alone, 0.38, color="#888888", label="classifier only" if i == 0 else None)
        bar = ax.bar(i + 0.2, rate, 0.38, color="#4c72b0", label="pipeline" if i == 0 else None)
        ax.bar_label(bar, labels=[f"{rate / alone:.2f}×"], label_type="center", color="white")
        ax.hlines(0.8 * alone, i + 0.01, i + 0.39, colors="#c44e52", linestyles="--", label="target 0.8× classifier" if i == 0 else None)
    ax.set_ylim(0, 1.35 * max(max(number(pipeline, f"{b}.classifier_only_per_s"), number(pipeline, f"{b}.articles_per_s")) for b in backends))
    ax.set_xticks(range(len(backends)), ["embedded" if b == "embedded" else "Kafka + ES" for b in backends])
    ax.set_ylabel("articles/s")
    ax.set_title("Pipeline against its classifier, one run")
    ax.legend(fontsize=8, loc="upper center", ncol=3)
    return save(fig, path)


def plot_stage_costs(pipeline: dict | None, path: Path) -> Path | None:
    """Milliseconds per article of each pipeline stage on its own: where the pipeline's time goes."""
    costs = {k.removesuffix("_ms_per_article"): v for k, v in speeds(dig(pipeline, "stage_costs")).items() if k.endswith("_ms_per_article")}
    if not costs:
        return None
    plt = pyplot()
    names = sorted(costs, key=costs.get)
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) + 1.3))
    bars = ax.barh(names, [costs[n] for n in names], color=["#4c72b0" if n.startswith("classif") else "#888888" for n in names])
    ax.bar_label(bars, fmt="%.2g ms", padding=3)
    ax.set_xlim(0, max(costs.values()) * 1.2)
    ax.set_xlabel("ms per article, each stage alone (CPU)")
    ax.set_title("Pipeline stage costs")
    return save(fig, path)


def plot_latency(pipeline: dict | None, path: Path) -> Path | None:
    """p50/p95 arrival → indexed per backend, with the 1 s target, labelled with the load offered."""
    runs = {b: r for b, r in latency_runs(pipeline).items() if number(r, "p50") is not None and number(r, "p95") is not None}
    if not runs:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    values = []
    ticks = []
    for i, (b, run) in enumerate(sorted(runs.items())):
        p50, p95 = number(run, "p50"), number(run, "p95")
        values += [p50, p95]
        bars = ax.bar([i - 0.2, i + 0.2], [p50, p95], 0.38, color=["#4c72b0", "#dd8452"], label=["p50", "p95"] if i == 0 else None)
        ax.bar_label(bars, fmt="%.3g s", padding=2, fontsize=8)
        offered, cap = number(run, "offered_per_s"), capacity(pipeline, b, run)
        load = f"\n{offered:.2f}/s offered" + (f" = {offered / cap:.2f}× capacity" if offered and cap else "") if offered else ""
        ticks.append(("embedded" if b == "embedded" else "Kafka + ES" if b == "kafka_es" else b) + load)
    ax.axhline(1.0, color="#c44e52", linestyle="--", label="target p95 ≤ 1 s")
    if max(values) > 20:  # keep the 1 s target line visible next to queueing delays
        ax.set_yscale("log")
        ax.set_ylim(min(0.3, min(values) / 2), max(values) * 4)
    else:
        ax.set_ylim(0, max(max(values), 1.0) * 1.25)
    ax.set_xticks(range(len(ticks)), ticks, fontsize=8)
    ax.set_ylabel("seconds, arrival → indexed")
    ax.set_title("Latency (CPU)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return save(fig, path)
