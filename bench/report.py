"""Generate BENCHMARKS.md and its plots from bench/results/*.json, as measured: never edit the
numbers by hand.

BENCHMARKS.md opens with one screen: every target of issues 14, 16, 17 and 18 that a benchmark
measures, the measured value, and a verdict computed here from the JSON: met, not met, or not
measured (and why: no GPU lent, a key the results file lacks, a run not made as the target
states). Plots follow (bench/plots/*.png), then every figure of every results file, collapsed.
A key missing from a results file reads "not measured", so a benchmark that changes its output
shape never breaks the report.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import statistics
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PLOTS = ROOT / "bench" / "plots"
TITLES = {
    "pipeline": "Pipeline: throughput, latency, scale, memory (bench/pipeline.py)",
    "rebalance": "Rebalance: a second processor joining, eager vs cooperative (bench/rebalance.py)",
    "model": "Classifier: quality and throughput against BERT-base (`newspulse bench model`)",
    "store": "Stores: bulk indexing and dashboard query latency (bench/store.py)",
    "store_10k": "Stores at 10,000 articles, SQLite and Elasticsearch (bench/store.py)",
    "summaries": "Summaries: ROUGE against lead baselines (bench/summaries.py)",
    "alerts": "Alerts: labelled spike benchmark (bench/alerts.py)",
    "gpu": "GPU: classifier and summariser on CUDA (bench/gpu.py)",
    "faults": "Faults: kill -9, store outages, expired credentials, poison (bench/faults.py)",
    "distill_cv": "Distillation: k-fold CV of the sentiment recipe (experiments/distill_cv.py)",
    "topics": "Topics: Reuters-21578 ModApte classifier (bench/topics.py, from `make topics-model`)",
    "entities": "Entity-level sentiment: SEntFiN dev, joint vs story-only training (bench/entities.py)",
}

MET, NOT_MET, NOT_MEASURED = "met", "not met", "not measured"
MARKS = {MET: "✅", NOT_MET: "❌", NOT_MEASURED: "⚪"}
#: A latency run counts as "at half of capacity" when it offered 40-52.5 % of the measured capacity.
HALF_CAPACITY = (0.40, 0.525)
#: distill_cv.json arm of the strongest teacher measured (all-mpnet-base-v2; docs/model.md).
TEACHER_ARM = "mpnet"
#: distill_cv.json arm that is the shipped sentiment recipe (docs/model.md: distillation on the
#: training rows from the mpnet fold teachers, final weights; the default of the retraining).
SHIPPED_SENTIMENT_ARM = "dgold-last"
#: A same-architecture speed ratio this close to 1 is timing noise of the interleaved bench.
SPEED_NOISE = 0.95
#: Issue 18's stated sizes for the fault scenarios that a run may scale down.
FAULT_SIZES = {"R1": ("articles", 10_000), "R3": ("good", 10_000)}
DATE_KEYS = ("started_at", "created_at", "measured_at", "generated_at")
#: Which command writes which results file, and the GPU run (bench/device_run.sh points here).
HOW_TO_MEASURE = """## How to measure

| command | writes | time (2 cores) |
| --- | --- | --- |
| `make bench` | model, pipeline, rebalance, store, store_10k, summaries, alerts, topics `.json`, then this file | ≤ 15 min aimed |
| `make faults` (`FAULTS_ARGS="--only R1"` …) | faults.json | about an hour |
| `make topics-model` | retrains models/topics_model, then topics.json | ~17 min on a loaded machine |
| `python bench/retrain.py` | retrain.json (the default `newspulse model train`, timed whole) | ~8 min |
| `python bench/entities.py [--steps N --seeds …]` | entities.json (joint and story-only models trained and evaluated per seed) | ~20 min per seed on 2 idle cores |
| `python experiments/distill_cv.py folds`, `fit …`, `report` | distill_cv.json | hours (one run per fold and arm) |
| `python bench/gpu.py` (a CUDA host) | gpu.json | ≤ 8 min |
| `make report` | this file and bench/plots/*.png, from the results as they are | seconds |

### GPU run

On a lent device machine the GPU figures come from one prepared script:

1. here: `python bench/prepare_device.py` builds `.carry/` (the wheels the device image lacks, the
   MiniLM config, tokenizer and, when the upload stays under 64 MiB, its weights in fp16);
2. there, with `.carry` carried: `bash bench/device_run.sh` runs `bench/gpu.py` under a time
   limit and leaves `gpu.json`, its log and `nvidia-smi`'s view in `$OUT` (gpu.json is rewritten
   after every stage, so a run stopped at the limit keeps what it measured);
3. here: copy `$OUT/gpu.json` to `bench/results/gpu.json` and run `make report`.

Until gpu.json names its device, every GPU row above reads "not measured";
`python bench/gpu.py --smoke` checks the script on CPU and writes `var/gpu-smoke.json`, which counts
for nothing.
"""


# --- reading results -------------------------------------------------------------------------


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


# --- verdicts --------------------------------------------------------------------------------


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


def backend_of(model: dict, variant: str) -> str | None:
    """The inference backend (torch, onnxruntime, …) model.json's ``backends`` names for a variant."""
    value = dig(model, f"backends.{variant}")
    return value if isinstance(value, str) else None


def fastest_production(model: dict) -> tuple[str, float] | None:
    production = {k: v for k, v in speeds(model.get("throughput")).items() if k.startswith("production_")}
    return max(production.items(), key=lambda kv: kv[1]) if production else None


def cpu_rows(model: dict | None) -> list[Row]:
    area, src = "CPU classifier (#16)", "model"
    targets = ("≥ 20× BERT-base fp32 sentences/s, same run, 2 cores", "dev macro-F1 of that model within 0.005 of fp32", "≥ 99 % of fp32 dev predictions kept")
    if model is None:
        return [missing(area, t, src, "no model.json") for t in targets]
    rows = []
    best = fastest_production(model)
    bert = speeds(model.get("throughput")).get("bert_base_fp32")
    if best is None or bert is None:
        rows.append(missing(area, targets[0], src, "model.json lacks production or BERT-base throughput"))
    else:
        name, speed = best
        backend = backend_of(model, name)
        label = name.removeprefix("production_") + (f", {backend}" if backend else "")
        rows.append(Row(area, targets[0], f"{speed / bert:.1f}× ({label} {speed:,.0f}/s vs {bert:,.1f}/s)", at_least(speed / bert, 20), (src,)))
    fp32 = number(model, "dev_macro_f1")
    variant = best[0].removeprefix("production_") if best else None
    is_fp32 = bool(variant) and variant.endswith("fp32")  # fp32 on any backend: fp32's predictions
    served = fp32 if is_fp32 else number(model, f"dev_{variant}.macro_f1") if variant else None
    if fp32 is None or served is None:
        rows.append(missing(area, targets[1], src, f"model.json lacks dev macro-F1 of fp32 or {variant}"))
    else:
        rows.append(Row(area, targets[1], f"{served:.3f} vs fp32 {fp32:.3f} ({served - fp32:+.3f})", MET if fp32 - served <= 0.005 else NOT_MET, (src,)))
    agreement = 1.0 if is_fp32 else number(model, f"{variant}_agreement_on_dev")
    if agreement is None:
        rows.append(missing(area, targets[2], src, "model.json lacks the agreement with fp32"))
    else:
        rows.append(Row(area, targets[2], f"{agreement:.2%}", at_least(agreement, 0.99), (src,)))
    return rows


def gpu_device(gpu: dict | None) -> str | None:
    """The GPU that gpu.json's figures were measured on; None for no file, no device or a smoke run."""
    device = dig(gpu, "device")
    return device if isinstance(device, str) and device and not gpu.get("smoke") else None


def gpu_rows(gpu: dict | None) -> list[Row]:
    area, src = "GPU (#16)", "gpu"
    figures = [  # target, threshold, keys (bench/gpu.py's first, then older shapes), format, bench/gpu.py stage
        ("≥ 50,000 headlines/s (L ≤ 64)", 50_000, ("headlines_per_s", "classifier.headlines_per_s", "classifier.gpu.throughput.production_bf16"), "{:,.0f}/s", "headlines"),
        ("≥ 3,000 whole Reuters articles/s", 3_000, ("articles_per_s", "whole_articles_per_s", "classifier.articles_per_s", "whole_articles_per_s_bf16_batch256"), "{:,.0f}/s", "articles"),
        ("production ≥ 5× BERT-base, same run", 5, ("speedup_vs_bert_base", "classifier.speedup_vs_bert_base", "classifier.gpu.speedup_vs_bert_base"), "{:.1f}×", "headlines"),
        ("abstractive summaries ≥ 200 articles/s (t5-small, greedy)", 200, ("summaries_per_s", "summarizer.summaries_per_s", "summarizer.abstractive.summaries_per_s"), "{:,.1f}/s", "summaries"),
    ]
    device = gpu_device(gpu)
    if not device:
        why = "no GPU lent (no bench/results/gpu.json)" if gpu is None else "gpu.json is a smoke run" if gpu.get("smoke") else "gpu.json names no device"
        return [missing(area, target, src, why) for target, *_ in figures]
    rows = []
    for target, threshold, paths, shape, stage in figures:
        value = number(gpu, *paths)
        if value is None:
            error = dig(gpu, f"errors.{stage}")
            rows.append(missing(area, target, src, f"bench/gpu.py's {stage} stage failed: {error}" if error else f"gpu.json has none of {', '.join(paths)}"))
            continue
        graphs = number(gpu, "cuda_graphs.headlines_per_s") if stage == "headlines" and shape.endswith("/s") else None
        extra = f" (CUDA graphs: {graphs:,.0f}/s)" if graphs is not None else ""
        rows.append(Row(area, target, f"{shape.format(value)}{extra} on {device}", at_least(value, threshold), (src,)))
    return rows


BACKENDS = (("embedded", "embedded"), ("kafka_es", "Kafka + Elasticsearch"))


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


def fault_rows(faults: dict | None) -> list[Row]:
    area, src = "Faults (#18)", "faults"
    targets = {
        "R1": "kill -9 ×5 mid-stream: stored = unique produced, 0 duplicates",
        "R2": "store down 30 s / 10 min: 0 lost, 0 dead-lettered; bad key: stop, nothing committed",
        "R3": "poison (≥ 10 kinds): each dead-lettered once, every good one stored",
        "R4": "hostile feeds: healthy feeds keep their schedule, nothing crashes",
        "R5": "broker restarted empty mid-stream: every story stored once, never healthy while wedged",
        "R6": "alert store error as it fires (and the alerter killed meanwhile): delivered exactly once",
        "R7": "one undeliverable notification among good ones: every good one delivered",
    }
    scenarios = [s for s in (faults or {}).get("scenarios", []) if isinstance(s, dict)]
    rows = []
    for key, target in targets.items():
        runs = [s for s in scenarios if str(s.get("name", "")).startswith(key)]
        if not runs:
            rows.append(missing(area, target, src, f"faults.json has no {key} scenario"))
            continue
        passed = all(s.get("passed") is True for s in runs)
        verdict = MET if passed else NOT_MET
        if passed and key in FAULT_SIZES:
            param, stated = FAULT_SIZES[key]
            size = min(number(s, f"params.{param}") or 0 for s in runs)
            if size < stated:
                verdict = f"{MET} at {size:,.0f} of the stated {stated:,} articles"
        rows.append(Row(area, target, fault_summary(key, runs), verdict, (src,)))
    return rows


def count(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def fault_summary(key: str, runs: list[dict]) -> str:
    """The figures that prove a fault scenario, in a few words."""
    f = [s.get("figures", {}) for s in runs]
    failed = [s["name"] for s in runs if s.get("passed") is not True]
    tail = f"; failed: {', '.join(failed)}" if failed else ""
    if key == "R1":
        return f"{count(f[0].get('stored'))} stored of {count(f[0].get('unique'))} unique, {f[0].get('duplicates')} duplicates, {f[0].get('kills')} kills{tail}"
    if key == "R2":
        lost = sum(x.get("lost") or 0 for x in f)
        dead = sum(x.get("dead_lettered") or 0 for x in f)
        keys = [x for x in f if "exit_code_on_expired_key" in x]
        key_part = f"; bad key: exit {keys[0]['exit_code_on_expired_key']}, {keys[0].get('committed_beyond_stored')} committed beyond stored" if keys else ""
        return f"{len(runs)} runs: {lost} lost, {dead} dead-lettered{key_part}{tail}"
    if key == "R3":
        return f"{count(f[0].get('poison_dead_lettered'))}/{count(f[0].get('poison_produced'))} poison dead-lettered, {count(f[0].get('good_stored'))}/{count(f[0].get('good_produced'))} good stored{tail}"
    if key == "R5":
        return (f"{count(f[0].get('stored'))} stored of {count(f[0].get('produced'))}, {f[0].get('duplicates')} duplicates, "
                f"{f[0].get('wedged_but_healthy')} healthy samples while paused past the limit{tail}")
    if key == "R6":
        return f"POSTs per alert {f[0].get('posts')}, alerter alive through the outage {f[0].get('a_alive_after_fault')}{tail}"
    if key == "R7":
        return f"{f[0].get('good_delivered')}/{runs[0].get('params', {}).get('good_alerts')} good alerts delivered by webhook and e-mail beside {len(f[0].get('poisoned') or {})} bad ones{tail}"
    delay = number(f[0], "healthy_poll_delay_max_s")
    return f"healthy poll delay max {delay:.2f} s, {f[0].get('private_requests')} private requests, crashed {f[0].get('crashed')}{tail}" if delay is not None else f"passed {not failed}{tail}"


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


def entity_pipeline_rows(pipeline: dict | None, alerts: dict | None) -> list[Row]:
    """Issue 25's pipeline targets: entity scoring's cost beside the story-level classifier on
    the Reuters replay (bench/pipeline.py's stage costs), and ticker alerts on two-company
    stories (bench/alerts.py's two-company case)."""
    area = "Entity sentiment (#25)"
    rows = []
    target = "entity scoring adds ≤ 30 % to the classifier's per-article time (Reuters replay)"
    share = number(pipeline, "stage_costs.entity_share_of_classifier")
    if share is None:
        rows.append(missing(area, target, "pipeline", "pipeline.json's stage_costs lack entity_share_of_classifier"))
    else:
        entity_ms, story_ms = number(pipeline, "stage_costs.entities_ms_per_article"), number(pipeline, "stage_costs.classify_ms_per_article")
        detail = f" ({entity_ms:.1f} vs {story_ms:.1f} ms/article)" if entity_ms is not None and story_ms is not None else ""
        rows.append(Row(area, target, f"{share:.0%}{detail}", at_most(share, 0.30), ("pipeline",)))
    target = "two-company bursts alert on the company they are bad for only (ticker-scope precision ≥ 0.9, recall ≥ 0.95)"
    own = dig(alerts, "two_company.entity_verdicts")
    precision, recall = number(own, "precision"), number(own, "recall")
    if precision is None or recall is None:
        rows.append(missing(area, target, "alerts", "alerts.json lacks two_company.entity_verdicts"))
    else:
        story = dig(alerts, "two_company.story_verdict_only")
        detail = f"; story verdict alone {number(story, 'precision'):.3f} / {number(story, 'recall'):.3f}" if number(story, "precision") is not None else ""
        verdict = MET if precision >= 0.9 and recall >= 0.95 else NOT_MET
        rows.append(Row(area, target, f"{precision:.3f} / {recall:.3f}, {number(own, 'good_company_alerts') or 0:.0f} alerts on the good-news company{detail}", verdict, ("alerts",)))
    return rows


def rebalance_rows(rebalance: dict | None) -> list[Row]:
    area, src, target = "Kafka (#17)", "rebalance", "a processor joining revokes no kept partition (cooperative-sticky)"
    revoked = number(rebalance, "cooperative_sticky.first_revocations_of_kept")
    if revoked is None:
        return [missing(area, target, src, "rebalance.json lacks cooperative_sticky.first_revocations_of_kept")]
    eager = number(rebalance, "eager_range.first_revocations_of_kept")
    detail = f" (eager: {eager:.0f})" if eager is not None else ""
    return [Row(area, target, f"{revoked:.0f} revoked{detail}", MET if revoked == 0 else NOT_MET, (src,))]


def sentiment_rows(model: dict | None, distill: dict | None) -> list[Row]:
    """Issue 14's sentiment targets, on the production model's dev figures (model.json) and on
    held-out CV folds of the shipped recipe (distill_cv.json: its ``full_length`` section, the
    production recipe's step count, when there is one); met only when every one is."""
    area = "Sentiment (#14)"
    distill = (distill or {}).get("full_length") or distill
    arm = dig(distill, f"arms.{SHIPPED_SENTIMENT_ARM}")
    steps = dig(distill, "steps")
    figures = [
        ("PhraseBank accuracy ≥ 0.88", 0.88, "dev_accuracy", "held_phrasebank_accuracy"),
        ("PhraseBank macro-F1 ≥ 0.86", 0.86, "dev_macro_f1", "held_phrasebank_macro_f1"),
        ("PhraseBank, 100 % agreement: accuracy ≥ 0.97", 0.97, None, "held_phrasebank_100_accuracy"),
        ("Twitter Financial News weighted-F1 ≥ 0.88", 0.88, None, "held_twitter_weighted_f1"),
    ]
    rows = []
    for target, goal, dev_key, cv_key in figures:
        parts, values, sources = [], [], []
        dev = number(model, dev_key) if dev_key else None
        if dev is not None:
            parts.append(f"dev {dev:.3f} ({model.get('model_version', 'production')})")
            values.append(dev)
            sources.append("model")
        cv = number(arm, f"{cv_key}.mean")
        if cv is not None:
            spread = number(arm, f"{cv_key}.std")
            parts.append(f"{distill.get('k', '?')}-fold CV {cv:.3f}" + (f" ± {spread:.3f}" if spread is not None else "") + (f" ({steps}-step recipe)" if steps else ""))
            values.append(cv)
            sources.append("distill_cv")
        teacher = dig(distill, f"arms.{TEACHER_ARM}")
        if number(teacher, f"{cv_key}.mean") is not None:
            # context, not the verdict: the teacher is not what serves
            parts.append(f"teacher all-mpnet-base-v2 (not served) {number(teacher, f'{cv_key}.mean'):.3f} ± {number(teacher, f'{cv_key}.std'):.3f}")
        if not values:
            rows.append(missing(area, target, "model", f"neither model.json nor distill_cv.json ({SHIPPED_SENTIMENT_ARM} arm) has it"))
        else:
            rows.append(Row(area, target, "; ".join(parts), MET if all(v >= goal for v in values) else NOT_MET, tuple(sources)))
    return rows


def topic_rows(topics: dict | None) -> list[Row]:
    """The topic targets on ModApte test when topics.json has it; otherwise issue 26's: 5-fold CV
    over all of ModApte train (train + dev), judged on the CV mean; dev is shown beside it, since
    its 777 stories hold too few rare-category stories to decide anything."""
    area, src = "Topics (#26)", "topics"
    rows = []
    for key, goal in (("micro_f1", 0.91), ("macro_f1", 0.60)):
        target = f"ModApte {key.replace('_f1', '-F1')} ≥ {goal:.2f} (CV over train + dev)"
        test = number(topics, f"test.{key}")
        if test is not None:
            rows.append(Row(area, target, f"test {test:.3f}", at_least(test, goal), (src,)))
            continue
        dev, cv, spread = number(topics, f"model.dev.{key}"), number(topics, f"model.cv.{key}_mean"), number(topics, f"model.cv.{key}_std")
        if cv is None:
            rows.append(missing(area, target, src, f"topics.json lacks model.cv.{key}_mean"))
            continue
        figure = f"{dig(topics, 'model.cv.folds')}-fold CV over {dig(topics, 'model.cv.rows') or 'train'} {cv:.3f}" + (f" ± {spread:.3f}" if spread is not None else "")
        rows.append(Row(area, target, figure + (f"; dev {dev:.3f}" if dev is not None else ""), at_least(cv, goal), (src,)))
    return rows


def speed_rows(model: dict | None) -> list[Row]:
    """Issue 14: a distilled student must serve no slower than the model before it, timed in one
    run: `newspulse bench model` times the newest gold-only student beside a distilled production
    model (``distillation.speed_vs_gold_only``). The two have the same architecture, so a ratio
    within the interleaved timing's noise (``SPEED_NOISE``) counts as no slower."""
    area, target, src = "Sentiment speed (#14)", f"distilled student's CPU sentences/s no lower than the gold-only model's, same run (≥ {SPEED_NOISE:.2f}×: timing noise)", "model"
    if model is None:
        return [missing(area, target, src, "no model.json")]
    speed = dig(model, "distillation.speed_vs_gold_only")
    if speed is None:
        best = fastest_production(model)
        measured = f"production {best[0].removeprefix('production_')} {best[1]:,.0f}/s" if best else "—"
        why = "model.json times no gold-only model beside the student" if model.get("distillation") else "production is not a distilled student (model.json has no distillation)"
        return [Row(area, target, measured, not_measured(why), (src,))]
    measured = f"int8 {speed['production_int8']:,.0f}/s distilled ({model.get('model_version')}) vs {speed['gold_only_int8']:,.0f}/s gold-only ({speed['gold_only_version']}): {speed['ratio']:.2f}×"
    return [Row(area, target, measured, at_least(speed["ratio"], SPEED_NOISE), (src,))]


def retrain_rows(retrain: dict | None) -> list[Row]:
    """Issue 14: the default retraining (bench/retrain.py), timed whole, within 10 minutes on 2
    cores; only a run with the default command counts."""
    area, target, src = "Retraining (#14)", "default `newspulse model train` ≤ 10 min on 2 cores", "retrain"
    if retrain is None:
        return [missing(area, target, src, "no retrain.json (python bench/retrain.py)")]
    wall = float(retrain["wall_s"])
    measured = f"{wall / 60:.1f} min ({retrain['fine_tuning_s']:.0f} s fine-tuning, {retrain['steps']} steps; dev macro-F1 {retrain['dev_macro_f1']:.3f})"
    if retrain.get("command") != "newspulse model train" or retrain.get("setup", {}).get("cores") != 2:
        return [Row(area, target, measured, not_measured(f"`{retrain.get('command')}` on {retrain.get('setup', {}).get('cores')} cores, not the default on 2"), (src,))]
    return [Row(area, target, measured, at_most(wall, float(retrain.get("target_s", 600.0))), (src,))]


def _mean_sd(data: dict, path: str) -> str:
    mean, sd = number(data, f"{path}.mean"), number(data, f"{path}.std")
    return "—" if mean is None else f"{mean:.3f}" + (f" ± {sd:.3f}" if sd else "")


def entity_rows(entities: dict | None) -> list[Row]:
    """Issue 25's model targets from bench/entities.py: SEntFiN dev figures of the joint model
    (the story baseline of the same run beside them), the story-level cost of joint training,
    and int8 fidelity on entity verdicts. A run shorter than the default recipe is reported but
    not counted: the targets are about the model `make demo` trains."""
    area, src = "Entity sentiment (#25)", "entities"
    targets = [
        ("SEntFiN dev accuracy ≥ 0.92", "accuracy", 0.92),
        ("SEntFiN dev macro-F1 ≥ 0.91", "macro_f1", 0.91),
        ("SEntFiN dev conflicting-headline accuracy ≥ 0.88", "conflict_accuracy", 0.88),
    ]
    if entities is None:
        return [missing(area, t, src, "no entities.json (python bench/entities.py)") for t, _, _ in targets]
    steps, default = entities.get("steps"), entities.get("default_steps")
    seeds = len(entities.get("seeds", [])) or 1
    short = None if steps == default else not_measured(f"a {steps}-step run, not the default {default}-step recipe")
    rows = []
    for target, key, goal in targets:
        value = number(entities, f"joint.{key}.mean")
        measured = f"joint {_mean_sd(entities, f'joint.{key}')} vs story baseline {_mean_sd(entities, f'joint_story_baseline.{key}')} ({steps} steps, {seeds} seed(s))"
        rows.append(Row(area, target, measured, short or (not_measured("no figure") if value is None else at_least(value, goal)), (src,)))
    drops = {name: number(entities, f"story_level.{name}.joint_minus_story_only.mean") for name in ("phrasebank_dev_accuracy", "twitter_dev_weighted_f1")}
    measured = "; ".join(f"{name.replace('_', ' ')} {_mean_sd(entities, f'story_level.{name}.joint')} vs {_mean_sd(entities, f'story_level.{name}.story_only')} without SEntFiN" for name in drops)
    known = [d for d in drops.values() if d is not None]
    verdict = short or (not_measured("no figures") if len(known) < len(drops) else at_least(min(known), -0.005))
    rows.append(Row(area, "story level within 0.005 of the model trained without SEntFiN (PhraseBank accuracy, Twitter weighted-F1)", measured, verdict, (src,)))
    agreement = number(entities, "int8_entity_agreement.mean")
    rows.append(Row(area, "int8 keeps ≥ 99 % of fp32 entity verdicts on dev", f"{_mean_sd(entities, 'int8_entity_agreement')} ({steps} steps)",
                    short or (not_measured("no figure") if agreement is None else at_least(agreement, 0.99)), (src,)))
    return rows


def summary_rows(results: dict[str, dict]) -> list[Row]:
    r = results.get
    return [
        *cpu_rows(r("model")),
        *gpu_rows(r("gpu")),
        *pipeline_rows(r("pipeline")),
        *latency_rows(r("pipeline")),
        *sentiment_rows(r("model"), r("distill_cv")),
        *topic_rows(r("topics")),
        *speed_rows(r("model")),
        *retrain_rows(r("retrain")),
        *entity_rows(r("entities")),
        *entity_pipeline_rows(r("pipeline"), r("alerts")),
        *fault_rows(r("faults")),
        *rebalance_rows(r("rebalance")),
        *alert_rows(r("alerts")),
    ]


# --- plots -----------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})  # no version stamp: reruns diff only on data
    _pyplot().close(fig)
    return path


def throughput_bars(measured: dict[str, float], labels: list[str], lines: list[tuple[float, str]], xlabel: str, title: str, path: Path) -> Path:
    """Horizontal bars of sentences/s per variant (BERT-base grey), slowest first, with target lines."""
    plt = _pyplot()
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
    return _save(fig, path)


def plot_cpu_throughput(model: dict | None, path: Path) -> Path | None:
    """Sentences/s per model variant on CPU, with BERT-base and the 20× BERT-base target line."""
    measured = speeds((model or {}).get("throughput"))
    bert = measured.get("bert_base_fp32")
    if bert is None:
        return None
    labels = [n + (f" ({b})" if (b := backend_of(model, n)) and n.startswith("production_") else "") for n in measured]
    xlabel = f"sentences/s (CPU, {dig(model, 'setup.torch_threads') or '?'} threads, batch {dig(model, 'setup.batch_size') or '?'})"
    return throughput_bars(measured, labels, [(20 * bert, f"target: 20× BERT-base = {20 * bert:,.0f}/s")], xlabel, "Classifier throughput, CPU, one run", path)


def plot_gpu_throughput(gpu: dict | None, path: Path) -> Path | None:
    """Sentences/s per model variant on the GPU named in gpu.json, with the 5× BERT-base and
    50,000/s targets; nothing without a named device."""
    if not gpu_device(gpu):
        return None
    measured = next((m for p in ("throughput", "classifier.throughput", "classifier.gpu.throughput") if (m := speeds(dig(gpu, p)))), {})
    references = sorted((k for k in measured if k.startswith("bert_base")), key=lambda k: "batched" not in k)  # the path the target is on
    bert = measured[references[0]] if references else None
    if bert is None:
        return None
    lines = [(5 * bert, f"target: 5× BERT-base = {5 * bert:,.0f}/s"), (50_000.0, "target: 50,000 headlines/s")]
    return throughput_bars(measured, list(measured), lines, f"sentences/s on {gpu['device']}", "Classifier throughput, GPU, one run", path)


def plot_pipeline(pipeline: dict | None, path: Path) -> Path | None:
    """Pipeline articles/s against the classifier alone, with the 0.8× target on each backend."""
    backends = [b for b in ("embedded", "kafka_es") if number(pipeline, f"{b}.articles_per_s", ) is not None and number(pipeline, f"{b}.classifier_only_per_s") is not None]
    if not backends:
        return None
    plt = _pyplot()
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
    return _save(fig, path)


def plot_stage_costs(pipeline: dict | None, path: Path) -> Path | None:
    """Milliseconds per article of each pipeline stage on its own: where the pipeline's time goes."""
    costs = {k.removesuffix("_ms_per_article"): v for k, v in speeds(dig(pipeline, "stage_costs")).items() if k.endswith("_ms_per_article")}
    if not costs:
        return None
    plt = _pyplot()
    names = sorted(costs, key=costs.get)
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) + 1.3))
    bars = ax.barh(names, [costs[n] for n in names], color=["#4c72b0" if n.startswith("classif") else "#888888" for n in names])
    ax.bar_label(bars, fmt="%.2g ms", padding=3)
    ax.set_xlim(0, max(costs.values()) * 1.2)
    ax.set_xlabel("ms per article, each stage alone (CPU)")
    ax.set_title("Pipeline stage costs")
    return _save(fig, path)


def plot_latency(pipeline: dict | None, path: Path) -> Path | None:
    """p50/p95 arrival → indexed per backend, with the 1 s target, labelled with the load offered."""
    runs = {b: r for b, r in latency_runs(pipeline).items() if number(r, "p50") is not None and number(r, "p95") is not None}
    if not runs:
        return None
    plt = _pyplot()
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
    return _save(fig, path)


def plot_alert_delays(alerts: dict | None, path: Path) -> Path | None:
    """Distribution of detection delays, the alerter against the static threshold."""
    pooled = {}
    for who in ("alerter", "static_threshold"):
        delays = [d for run in (alerts or {}).get("runs", []) for d in (dig(run, f"{who}.delays_minutes") or []) if isinstance(d, (int, float))]
        if delays:
            pooled[who] = delays
    if not pooled:
        return None
    plt = _pyplot()
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
    return _save(fig, path)


def write_plots(results: dict[str, dict], plots: Path) -> list[tuple[str, Path]]:
    """Every plot the results allow: (caption, PNG path)."""
    made = [
        ("Classifier throughput (CPU)", plot_cpu_throughput(results.get("model"), plots / "throughput_cpu.png")),
        ("Classifier throughput (GPU)", plot_gpu_throughput(results.get("gpu"), plots / "throughput_gpu.png")),
        ("Pipeline against classifier-only", plot_pipeline(results.get("pipeline"), plots / "pipeline.png")),
        ("Pipeline stage costs", plot_stage_costs(results.get("pipeline"), plots / "stage_costs.png")),
        ("Latency per backend", plot_latency(results.get("pipeline"), plots / "latency.png")),
        ("Alert delay", plot_alert_delays(results.get("alerts"), plots / "alert_delay.png")),
    ]
    kept = [(caption, path) for caption, path in made if path is not None]
    for stale in set(plots.glob("*.png")) - {path for _, path in kept}:  # a plot its data no longer allows
        stale.unlink()
    return kept


# --- markdown --------------------------------------------------------------------------------


def profile_section(gpu: dict | None) -> list[str]:
    """Where the GPU time goes, before (plain path) and after (batched path): bench/gpu.py's
    torch profiler summaries side by side. Nothing without a named device."""
    before, after = dig(gpu, "profile.before_plain_path"), dig(gpu, "profile.after_batched_path")
    if not gpu_device(gpu) or not isinstance(before, dict) or not isinstance(after, dict):
        return []

    def syncs(summary: dict) -> object:
        counts = summary.get("syncs")
        return sum(v for v in counts.values() if isinstance(v, (int, float))) if isinstance(counts, dict) else None

    figures = [("wall time, s", lambda x: x.get("wall_s")), ("device busy, s", lambda x: x.get("device_busy_s")),
               ("device busy share", lambda x: x.get("device_busy_share")), ("host-device syncs", syncs),
               ("memcpy calls", lambda x: x.get("memcpy_calls")), ("kernel launches", lambda x: x.get("kernel_launches"))]
    lines = [f"## GPU profile: where the time goes ({gpu['device']}, torch profiler)", "",
             f"Workload: {fmt(dig(gpu, 'profile.workload') or '?')}. From `bench/results/gpu.json` (`profile`).", "",
             "| | before: plain path | after: batched path |", "| --- | --- | --- |"]
    lines += [f"| {name} | {fmt(get(before))} | {fmt(get(after))} |" for name, get in figures]
    tops = [x.get("top_ops_by_device_time") or [] for x in (before, after)]
    if any(tops):
        lines += ["", "| top ops by device time | before (calls, ms) | after (calls, ms) |", "| --- | --- | --- |"]
        for i in range(min(6, max(len(t) for t in tops))):
            cells = [f"`{t[i].get('op')}` ({t[i].get('calls')}, {fmt(t[i].get('device_ms'))})" if i < len(t) else "" for t in tops]
            lines.append(f"| {i + 1} | {cells[0]} | {cells[1]} |")
    return lines + [""]



def flatten(value: object, prefix: str = "") -> list[tuple[str, object]]:
    if isinstance(value, dict):
        rows: list[tuple[str, object]] = []
        for key, sub in value.items():
            rows.extend(flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return rows
    if isinstance(value, list) and value and all(isinstance(v, (dict, list)) for v in value):
        return [row for i, sub in enumerate(value) for row in flatten(sub, f"{prefix}[{i}]")]
    return [(prefix, value)]


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and len(value) > 8 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return f"{len(value)} values: min {fmt(float(min(value)))}, median {fmt(float(statistics.median(value)))}, max {fmt(float(max(value)))}"
    if isinstance(value, list):
        return ", ".join(fmt(v) for v in value)
    return str(value).replace("|", "/").replace("\n", " ")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


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


def faults_table(data: dict) -> list[str]:
    """One row per fault scenario: its verdict and its scalar figures (per-kind detail stays in the JSON)."""
    lines = ["| scenario | verdict | figures | parameters |", "| --- | --- | --- | --- |"]
    for s in data.get("scenarios", []):
        figures = "; ".join(f"{k}={fmt(v)}" for k, v in s.get("figures", {}).items() if not isinstance(v, dict) and k != "processor_log_tail")
        params = "; ".join(f"{k}={fmt(v)}" for k, v in s.get("params", {}).items())
        lines.append(f"| {s.get('name')} | {'PASS' if s.get('passed') else 'FAIL'} | {figures} | {params} |")
    return lines


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
    lines += profile_section(results.get("gpu"))
    lines += HOW_TO_MEASURE.splitlines() + [""]
    lines += ["## All figures", "", "Every figure of every results file, as measured (click to open).", ""]
    for stem, data in results.items():
        table = faults_table(data) if stem == "faults" else ["| figure | value |", "| --- | --- |", *(f"| {k} | {fmt(v)} |" for k, v in flatten(data))]
        title = re.sub(r"`([^`]*)`", r"<code>\1</code>", TITLES.get(stem, stem))  # no markdown inside HTML
        lines += [f"<details><summary>{title} — {link(stem)}, {dates[stem]}</summary>", "", *table, "", "</details>", ""]
    return "\n".join(lines)


def main() -> None:
    out = ROOT / "BENCHMARKS.md"
    out.write_text(render(RESULTS, out, PLOTS))
    print(f"wrote {out} and {PLOTS.relative_to(ROOT)}/*.png")


if __name__ == "__main__":
    main()
