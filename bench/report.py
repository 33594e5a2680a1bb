"""Generate BENCHMARKS.md and its plots from bench/results/*.json, as measured: never edit the
numbers by hand.

BENCHMARKS.md opens with one screen: every target of issues 14, 16, 17 and 18 that a benchmark
measures, the measured value, and a verdict computed from the JSON: met, not met, or not
measured (and why: no GPU lent, a key the results file lacks, a run not made as the target
states). Plots follow (bench/plots/*.png), then every figure of every results file, collapsed.
A key missing from a results file reads "not measured", so a benchmark that changes its output
shape never breaks the report.

Each results file's section (its rows, plots and title) lives in ``bench/report_sections/``;
this driver reads the files and lays the sections out in the page's order.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # report_sections, provenance; also when loaded by path

from provenance import commit, cpu_model  # noqa: E402
from report_sections import alerts, entities, faults, gpu, int8, model, pipeline, rebalance, retrain, tiers, topics  # noqa: E402
from report_sections.base import MARKS, MET, NOT_MEASURED, NOT_MET, Row, fmt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PLOTS = ROOT / "bench" / "plots"
TITLES = {
    **pipeline.TITLES,
    **rebalance.TITLES,
    **model.TITLES,
    **int8.TITLES,
    "store": "Stores: bulk indexing and dashboard query latency (bench/store.py)",
    "store_10k": "Stores at 10,000 articles, SQLite and Elasticsearch (bench/store.py)",
    "summaries": "Summaries: ROUGE against lead baselines (bench/summaries.py)",
    **alerts.TITLES,
    **gpu.TITLES,
    **faults.TITLES,
    **topics.TITLES,
    **entities.TITLES,
    **tiers.TITLES,
}
#: A results file whose figures read better as its own table than as the flattened key list.
FIGURE_TABLES = {"faults": faults.faults_table, "int8": int8.int8_table}
DATE_KEYS = ("started_at", "created_at", "measured_at", "generated_at")
#: Which command writes which results file, then the GPU run (bench/device_run.sh points here).
HOW_TO_MEASURE = """## How to measure

| command | writes | time (2 cores) |
| --- | --- | --- |
| `make bench` | model, pipeline, rebalance, store, store_10k, summaries, alerts, topics `.json`, then this file | ≤ 15 min aimed |
| `make faults` (`FAULTS_ARGS="--only R1"` …) | faults.json | about an hour |
| `make topics-model` | retrains models/topics/bundled, then topics.json | ~17 min on a loaded machine word-only; about an hour of CPU with the char block |
| `python bench/int8.py` (`--arms …` for some) | int8.json (every quantisation arm per dev split and batch size) | ~3 min per arm under load |
| `python bench/retrain.py` | retrain.json (the default `newspulse model train`, timed whole) | ~8 min |
| `python bench/entities.py [--steps N --seeds …]` | entities.json (joint and story-only models trained and evaluated per seed) | ~20 min per seed on 2 idle cores |
| `python experiments/distill_cv.py folds`, `fit …`, `report` | distill_cv.json | hours (one run per fold and arm) |
| `python bench/gpu.py` (a CUDA host) | gpu.json | ≤ 8 min |
| `make report` | this file and bench/plots/*.png, from the results as they are | seconds |

""" + gpu.HOW_TO_RUN


def load_results(results: Path) -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(results.glob("*.json"))}


def measured_on(path: Path, data: dict) -> str:
    """When a results file was measured: its own timestamp, else its last commit, else its mtime."""
    data = data if isinstance(data, dict) else {}
    stamps = [data.get(k) for k in DATE_KEYS] + [s.get(k) for s in data.get("scenarios", []) if isinstance(s, dict) for k in DATE_KEYS]
    stamps = sorted(s[:10] for s in stamps if isinstance(s, str) and len(s) >= 10)
    if stamps:
        return stamps[-1] if stamps[0] == stamps[-1] else f"{stamps[0]}…{stamps[-1]}"
    try:
        done = subprocess.run(["git", "log", "-1", "--format=%cs", "--", path.name], cwd=path.parent, capture_output=True, text=True, check=True)
        if done.stdout.strip():
            return f"{done.stdout.strip()}, committed"
    except (OSError, subprocess.CalledProcessError):
        pass
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).strftime("%Y-%m-%d, file written")


def summary_rows(results: dict[str, dict]) -> list[Row]:
    """Every target's row, in the page's order: classifier and pipeline first, then quality,
    training, entities, faults, Kafka and alerts."""
    r = results.get
    return [
        *model.cpu_rows(r("model")),
        *int8.int8_rows(r("int8")),
        *gpu.gpu_rows(r("gpu")),
        *pipeline.pipeline_rows(r("pipeline")),
        *pipeline.latency_rows(r("pipeline")),
        *model.sentiment_rows(r("model"), r("distill_cv")),
        *tiers.teacher_rows(r("teacher")),
        *tiers.fast_tier_rows(r("cascade")),
        *tiers.cascade_rows(r("cascade")),
        *topics.topic_rows(r("topics")),
        *model.speed_rows(r("model")),
        *retrain.retrain_rows(r("retrain")),
        *retrain.fixed_recipe_rows(r("retrain")),
        *entities.entity_rows(r("entities")),
        *entities.entity_pipeline_rows(r("pipeline"), r("alerts")),
        *faults.fault_rows(r("faults")),
        *rebalance.rebalance_rows(r("rebalance")),
        *alerts.alert_rows(r("alerts")),
    ]


def write_plots(results: dict[str, dict], plots: Path) -> list[tuple[str, Path]]:
    """Every plot the results allow: (caption, PNG path)."""
    made = [
        ("Classifier throughput (CPU)", model.plot_cpu_throughput(results.get("model"), plots / "throughput_cpu.png")),
        ("Classifier throughput (GPU)", gpu.plot_gpu_throughput(results.get("gpu"), plots / "throughput_gpu.png")),
        ("Pipeline against classifier-only", pipeline.plot_pipeline(results.get("pipeline"), plots / "pipeline.png")),
        ("Pipeline stage costs", pipeline.plot_stage_costs(results.get("pipeline"), plots / "stage_costs.png")),
        ("Latency per backend", pipeline.plot_latency(results.get("pipeline"), plots / "latency.png")),
        ("Alert delay", alerts.plot_alert_delays(results.get("alerts"), plots / "alert_delay.png")),
        ("Accurate tier: learning curve", tiers.plot_teacher_curve(results.get("teacher"), plots / "teacher_curve.png")),
        ("Cascade: accuracy against speed", tiers.plot_cascade(results.get("cascade"), plots / "cascade.png")),
    ]
    kept = [(caption, path) for caption, path in made if path is not None]
    for stale in set(plots.glob("*.png")) - {path for _, path in kept}:  # a plot its data no longer allows
        stale.unlink()
    return kept


def flatten(value: object, prefix: str = "") -> list[tuple[str, object]]:
    if isinstance(value, dict):
        rows: list[tuple[str, object]] = []
        for key, sub in value.items():
            rows.extend(flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return rows
    if isinstance(value, list) and value and all(isinstance(v, (dict, list)) for v in value):
        return [row for i, sub in enumerate(value) for row in flatten(sub, f"{prefix}[{i}]")]
    return [(prefix, value)]


def figure_table(data: object) -> list[str]:
    """Every figure of a results file, one row per flattened key."""
    return ["| figure | value |", "| --- | --- |", *(f"| {k} | {fmt(v)} |" for k, v in flatten(data))]


def summary_table(rows: list[Row], dates: dict[str, str], link, noted: set[str]) -> list[str]:
    """The targets table; a source whose results file carries a note (which model it ran, …) says so."""
    counts = {v: sum(r.verdict.startswith(v) and not (v == MET and r.verdict.startswith(NOT_MEASURED)) for r in rows) for v in (MET, NOT_MET, NOT_MEASURED)}
    lines = [
        f"**{counts[MET]} met, {counts[NOT_MET]} not met, {counts[NOT_MEASURED]} not measured** of {len(rows)} targets.",
        "",
        "| area | target | measured | verdict | source (measured) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        mark = MARKS[next(v for v in (NOT_MEASURED, NOT_MET, MET) if r.verdict.startswith(v))]
        sources = ", ".join(f"[{s}.json]({link(s)}) ({dates.get(s, 'missing')}{'; see its note below' if s in noted else ''})" for s in r.sources)
        lines.append(f"| {r.area} | {r.target} | {r.measured} | {mark} {r.verdict} | {sources} |")
    return lines + [""]


def render(results_dir: Path = RESULTS, out: Path = ROOT / "BENCHMARKS.md", plots: Path = PLOTS) -> str:
    """BENCHMARKS.md's text; writes the plots it embeds under ``plots``."""
    results = load_results(results_dir)
    dates = {stem: measured_on(results_dir / f"{stem}.json", data) for stem, data in results.items()}
    notes = {stem: data["note"] for stem, data in results.items() if isinstance(data, dict) and isinstance(data.get("note"), str) and data["note"]}

    def link(target: Path | str) -> str:
        path = results_dir / f"{target}.json" if isinstance(target, str) else target
        return Path(os.path.relpath(path, out.parent)).as_posix()

    lines = [
        "# Benchmarks",
        "",
        "Generated by `bench/report.py` from `bench/results/*.json` (run `make bench`); verdicts are computed",
        "from those files, never typed. Comparisons are ratios taken in the same run, on the shared 2-core",
        "development machine unless a file names another; no GPU figure is claimed without `gpu.json` naming",
        "its device.",
        "",
        f"- generated: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} at commit {commit()}, on {cpu_model()}, {os.cpu_count()} cores",
        "",
        "## Targets at a glance",
        "",
        *summary_table(summary_rows(results), dates, link, set(notes)),
        *(f"- {stem}.json: {fmt(note)}" for stem, note in notes.items()),
        "",
    ]
    made = write_plots(results, plots)
    if made:
        lines += ["## Plots", ""]
        lines += [f"![{caption}]({link(path)})" for caption, path in made]
        lines.append("")
    lines += gpu.profile_section(results.get("gpu"))
    lines += HOW_TO_MEASURE.splitlines() + [""]
    lines += ["## All figures", "", "Every figure of every results file, as measured (click to open).", ""]
    for stem, data in results.items():
        table = FIGURE_TABLES.get(stem, figure_table)(data)
        title = re.sub(r"`([^`]*)`", r"<code>\1</code>", TITLES.get(stem, stem))  # no markdown inside HTML
        lines += [f"<details><summary>{title} — {link(stem)}, {dates[stem]}</summary>", "", *table, "", "</details>", ""]
    return "\n".join(lines)


def main() -> None:
    out = ROOT / "BENCHMARKS.md"
    out.write_text(render(RESULTS, out, PLOTS))
    print(f"wrote {out} and {PLOTS.relative_to(ROOT)}/*.png")


if __name__ == "__main__":
    main()
