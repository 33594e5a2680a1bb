"""The fault suite's section: bench/faults.py's faults.json, one summary row per scenario family
(R1-R7, met only when every run of it passed, and said so when a run was smaller than issue 18
states) and a table of every scenario's figures."""

from __future__ import annotations

from .base import MET, NOT_MET, Row, fmt, missing, number

TITLES = {"faults": "Faults: kill -9, store outages, expired credentials, poison (bench/faults.py)"}
#: Issue 18's stated sizes for the fault scenarios that a run may scale down.
FAULT_SIZES = {"R1": ("articles", 10_000), "R3": ("good", 10_000)}


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


def faults_table(data: dict) -> list[str]:
    """One row per fault scenario: its verdict and its scalar figures (per-kind detail stays in the JSON)."""
    lines = ["| scenario | verdict | figures | parameters |", "| --- | --- | --- | --- |"]
    for s in data.get("scenarios", []):
        figures = "; ".join(f"{k}={fmt(v)}" for k, v in s.get("figures", {}).items() if not isinstance(v, dict) and k != "processor_log_tail")
        params = "; ".join(f"{k}={fmt(v)}" for k, v in s.get("params", {}).items())
        lines.append(f"| {s.get('name')} | {'PASS' if s.get('passed') else 'FAIL'} | {figures} | {params} |")
    return lines
