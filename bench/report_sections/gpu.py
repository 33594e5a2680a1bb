"""The GPU section: bench/gpu.py's gpu.json (issue 16's GPU targets, counted only when the file
names its device), its throughput plot, the profiler's before/after table, and how the run is
made on a lent device machine."""

from __future__ import annotations

from pathlib import Path

from .base import Row, at_least, dig, fmt, missing, number, speeds, throughput_bars

TITLES = {"gpu": "GPU: classifier and summariser on CUDA (bench/gpu.py)"}
#: The GPU run's steps for the page's "How to measure" (bench/device_run.sh points here).
HOW_TO_RUN = """### GPU run

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
