"""Labelled spike benchmark for the alerter (issue 8): precision, recall and detection delay.

A synthetic replay stream (tests/alert_streams.py: per-ticker background flow with its own
volume, daily rhythm and normal tone; injected negative bursts with known ticker, start and end;
decoys: neutral-tone volume surges and single negative stories on quiet tickers) goes through
the real Alerter at full speed, with the built-in rules (or --rules). Ticker alerts are scored:

* a fired alert is a true positive when its ticker has a burst and it fired between the burst's
  start and its end plus the rule's longest window (the last window can only close then);
* recall = bursts with at least one such alert; delay = first firing window end − burst start
  (event time; a live stream sees it ``allowed_lateness`` later, reported too).

**Two-company stories.** A second stream adds, to the same background, bursts of stories about
two companies at once that are bad for one and good for the other ("{X} shares slide as {Y}
wins a $2 billion order"): every story is tagged with both tickers, the story-level verdict
leans either way, and each company has its own (entity) verdict, wrong for ``--entity-error``
of the stories (a classifier's error rate). The ground truth is a burst on X only. It is scored
with the entity verdicts (what the pipeline stores) and with the story verdict alone (what
ticker alerts counted before entity-level verdicts), so ``good_company_alerts`` counts alerts
on Y during its good-news bursts.

The same stream is scored for a static threshold (≥3 negative stories and ≥50% negative in a
15-minute window, consecutive windows merged into one alert), the usual hand-written rule.
Streams are generated from seeds that were not used to choose the default thresholds (tuning
used seeds 1-3). Output: bench/results/alerts.json.

    python bench/alerts.py [--seeds 11 12 13] [--days 14] [--rules my_rules.yaml]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tqdm import tqdm

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent.parent / "tests")]

from newspulse.alerts.rules import RuleSet, load_rules  # noqa: E402
from newspulse.schema import EntityVerdict, ScoredArticle  # noqa: E402
from newspulse.alerts.service import Alerter  # noqa: E402
from newspulse.alerts.silences import SilenceBook  # noqa: E402
from alert_streams import LABEL_PROBABILITIES, Burst, LabelledStream, labelled_stream, poisson_times, scored  # noqa: E402
from newspulse.store.sqlite import SQLiteStore  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "alerts.json"
START = datetime(2026, 3, 2, tzinfo=timezone.utc)  # a Monday
STATIC_WINDOW = 15
STATIC_MIN_NEGATIVE = 3
STATIC_MIN_SHARE = 0.5


@dataclass(frozen=True)
class Fired:
    ticker: str
    fired_at: datetime


def run_alerter(stream: LabelledStream, rules: RuleSet, workdir: Path, batch: int = 64) -> tuple[list[Fired], dict]:
    """Replay the stream through the real Alerter at full speed; ticker alerts that fired."""
    store = SQLiteStore(workdir / "alerts.db")
    alerter = Alerter(rules, store, SilenceBook(workdir / "silences.json"), notifiers={})
    t0 = time.perf_counter()
    for i in range(0, len(stream.articles), batch):
        alerter.observe(stream.articles[i : i + batch])
    alerter.flush()
    seconds = time.perf_counter() - t0
    alerter.close()
    alerts = store.list_alerts(limit=100_000)
    store.close()
    by_kind: dict[str, int] = defaultdict(int)
    fired = []
    for a in alerts:
        if a.fired_at is None:
            continue
        by_kind[a.scope.split(":", 1)[0]] += 1
        if a.scope.startswith("ticker:"):
            fired.append(Fired(a.scope.split(":", 1)[1], a.fired_at))
    pending_only = sum(1 for a in alerts if a.fired_at is None)
    return fired, {"seconds": seconds, "fired_by_scope_kind": dict(by_kind), "cleared_while_pending": pending_only, "late_dropped": alerter.late_dropped}


def run_static(stream: LabelledStream) -> list[Fired]:
    """≥STATIC_MIN_NEGATIVE negatives and ≥STATIC_MIN_SHARE negative in a window; runs merged."""
    counts: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    width = timedelta(minutes=STATIC_WINDOW)
    for a in stream.articles:
        idx = int((a.published_at - START) // width)
        for t in a.tickers:
            c = counts[(t, idx)]
            c[0] += 1
            c[1] += a.label.value == "negative"
    hot = sorted(k for k, (n, neg) in counts.items() if neg >= STATIC_MIN_NEGATIVE and neg / n >= STATIC_MIN_SHARE)
    fired, last = [], {}
    for ticker, idx in hot:
        if last.get(ticker) != idx - 1:
            fired.append(Fired(ticker, START + (idx + 1) * width))
        last[ticker] = idx
    return fired


def score(fired: list[Fired], bursts: list[Burst], grace: timedelta, lateness: timedelta) -> dict:
    """Precision over fired alerts, recall over bursts, delay of the first matching alert."""
    by_ticker: dict[str, list[Burst]] = defaultdict(list)
    for b in bursts:
        by_ticker[b.ticker].append(b)
    first_hit: dict[Burst, datetime] = {}
    tp = 0
    for f in fired:
        match = [b for b in by_ticker.get(f.ticker, []) if b.start <= f.fired_at <= b.end + grace]
        if match:
            tp += 1
            for b in match:
                if b not in first_hit or f.fired_at < first_hit[b]:
                    first_hit[b] = f.fired_at
    delays = [(first_hit[b] - b.start).total_seconds() / 60 for b in first_hit]
    return {
        "delays_minutes": sorted(round(d, 2) for d in delays),
        "alerts": len(fired),
        "true_positives": tp,
        "false_positives": len(fired) - tp,
        "precision": tp / len(fired) if fired else 0.0,
        "recall": len(first_hit) / len(bursts) if bursts else 0.0,
        "bursts": len(bursts),
        "bursts_detected": len(first_hit),
        "median_delay_minutes": statistics.median(delays) if delays else None,
        "p90_delay_minutes": statistics.quantiles(delays, n=10)[-1] if len(delays) >= 2 else None,
        "median_delay_minutes_live": statistics.median(delays) + lateness.total_seconds() / 60 if delays else None,
    }


#: Two-company headlines: {bad} is the company the story is bad news for, {good} the other.
PAIR_TITLES = (
    "{bad} shares slide as {good} wins a $2 billion order",
    "{good} takes market share from {bad} in data-centre chips",
    "{bad} cuts its forecast while rival {good} raises its own",
    "{good} beats estimates; {bad} misses and suspends its buyback",
    "{bad} loses key customer to {good}",
)


def _verdict(ticker: str, label: str) -> EntityVerdict:
    probs = LABEL_PROBABILITIES[label]
    return EntityVerdict(ticker=ticker, label=label, probabilities=probs, score=probs["positive"] - probs["negative"], basis="mentions", mentions=1)


def with_pair_bursts(stream: LabelledStream, *, pairs: int, seed: int, entity_error: float) -> tuple[LabelledStream, list[Burst]]:
    """The stream plus ``pairs`` bursts of two-company stories (bad for one, good for the
    other), each with both companies' verdicts; returns it and the good-news side of each
    burst (where an alert is a false positive)."""
    rng = random.Random(seed + 10_000)
    assert stream.start is not None and stream.end is not None
    names = sorted({t for a in stream.articles for t in a.tickers})
    truth, good_side = list(stream.bursts), []
    articles = list(stream.articles)

    def clear(ticker: str, start: datetime, end: datetime) -> bool:
        return not any(b.ticker == ticker and b.start < end + timedelta(hours=4) and start < b.end + timedelta(hours=4) for b in truth + good_side)

    while len(good_side) < pairs:
        bad, good = rng.sample(names, 2)
        hours = rng.uniform(0.5, 2.0)
        span = (stream.end - stream.start - timedelta(days=2, hours=hours + 2)).total_seconds()
        start = stream.start + timedelta(days=2, seconds=rng.uniform(0, span))
        end = start + timedelta(hours=hours)
        if not (clear(bad, start, end) and clear(good, start, end)):
            continue
        truth.append(Burst(bad, start, end))
        good_side.append(Burst(good, start, end))
        for t in poisson_times(rng, start, end, rng.uniform(12, 30)):
            story = rng.choices(["negative", "positive", "neutral"], weights=[5, 3, 2])[0]
            bad_label = "negative" if rng.random() >= entity_error else "neutral"
            good_label = "positive" if rng.random() >= entity_error else "neutral"
            title = rng.choice(PAIR_TITLES).format(bad=bad, good=good) + f" ({len(articles)})"
            art = scored(t, label=story, tickers=[bad, good], source=rng.choice(["wire", "daily", "blog"]), title=title, serial=len(articles))
            articles.append(art.model_copy(update={"entities": [_verdict(bad, bad_label), _verdict(good, good_label)]}))
    articles.sort(key=lambda a: (a.published_at, a.id))
    merged = LabelledStream(articles, sorted(truth, key=lambda b: b.start), stream.decoys, stream.start, stream.end)
    return merged, good_side


def story_verdicts_only(stream: LabelledStream) -> LabelledStream:
    """The same stream with the entity verdicts removed: every ticker counts the story's."""
    plain: list[ScoredArticle] = [a.model_copy(update={"entities": []}) if a.entities else a for a in stream.articles]
    return LabelledStream(plain, stream.bursts, stream.decoys, stream.start, stream.end)


def good_company_alerts(fired: list[Fired], good_side: list[Burst], grace: timedelta) -> int:
    """Alerts on a company during a burst of stories that were good news for it."""
    return sum(1 for f in fired if any(b.ticker == f.ticker and b.start <= f.fired_at <= b.end + grace for b in good_side))


def two_company_case(args: argparse.Namespace, rules: RuleSet, grace: timedelta, lateness: timedelta) -> dict:
    """Ticker-scope precision/recall on the stream with two-company bursts, with entity verdicts
    and with the story verdict alone, pooled over the seeds."""
    out: dict[str, dict] = {}
    per: dict[str, list[dict]] = {"entity_verdicts": [], "story_verdict_only": []}
    wrong: dict[str, int] = {"entity_verdicts": 0, "story_verdict_only": 0}
    for seed in tqdm(args.seeds, desc="two-company seeds"):
        base = labelled_stream(start=START, days=args.days, tickers=args.tickers, seed=seed)
        stream, good_side = with_pair_bursts(base, pairs=args.pairs, seed=seed, entity_error=args.entity_error)
        for name, variant in (("entity_verdicts", stream), ("story_verdict_only", story_verdicts_only(stream))):
            with tempfile.TemporaryDirectory() as tmp:
                fired, _ = run_alerter(variant, rules, Path(tmp))
            per[name].append(score(fired, variant.bursts, grace, lateness))
            wrong[name] += good_company_alerts(fired, good_side, grace)
    for name, rows in per.items():
        out[name] = {**_pooled(rows), "good_company_alerts": wrong[name]}
    return {"pair_bursts_per_seed": args.pairs, "entity_error": args.entity_error, **out}


def _pooled(per_seed: list[dict]) -> dict:
    keys = ("alerts", "true_positives", "false_positives", "bursts", "bursts_detected")
    total = {k: sum(r[k] for r in per_seed) for k in keys}
    total["precision"] = total["true_positives"] / total["alerts"] if total["alerts"] else 0.0
    total["recall"] = total["bursts_detected"] / total["bursts"] if total["bursts"] else 0.0
    delays = sorted(d for r in per_seed for d in r["delays_minutes"])
    total["median_delay_minutes"] = statistics.median(delays) if delays else None
    total["p90_delay_minutes"] = statistics.quantiles(delays, n=10)[-1] if len(delays) >= 2 else None
    return total


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13])
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--tickers", type=int, default=60)
    ap.add_argument("--rules", type=Path, default=None, help="Rules YAML (default: the built-in rules).")
    ap.add_argument("--pairs", type=int, default=15, help="two-company bursts added per seed (the two-company case)")
    ap.add_argument("--entity-error", type=float, default=0.08, help="share of two-company stories whose entity verdict is wrong (neutral)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("newspulse.alerts").setLevel(logging.ERROR)

    rules = load_rules(args.rules)
    ticker_rules = [r for r in rules.rules if r.scope == "ticker"]
    if not ticker_rules:
        raise SystemExit("the rules have no ticker rule to benchmark")
    window = min(ticker_rules[0].windows)
    grace = timedelta(minutes=max(max(r.windows) for r in ticker_rules))
    lateness = timedelta(minutes=rules.allowed_lateness_minutes)

    runs, ours, static = [], [], []
    for seed in tqdm(args.seeds, desc="seeds"):
        stream = labelled_stream(start=START, days=args.days, tickers=args.tickers, seed=seed)
        with tempfile.TemporaryDirectory() as tmp:
            fired, info = run_alerter(stream, rules, Path(tmp))
        o = score(fired, stream.bursts, grace, lateness)
        s = score(run_static(stream), stream.bursts, grace, timedelta(0))
        ours.append(o)
        static.append(s)
        runs.append({
            "seed": seed,
            "articles": len(stream.articles),
            "articles_per_second": len(stream.articles) / info["seconds"],
            "alerter": {**o, **info},
            "static_threshold": s,
        })

    result = {
        "benchmark": "labelled negative-spike stream (synthetic, full-speed replay)",
        "stream": {"days": args.days, "tickers": args.tickers, "seeds": args.seeds, "decoys_per_seed": stream.decoys},
        "rules": str(args.rules or "built-in default_rules.yaml"),
        "window_minutes": window,
        "allowed_lateness_minutes": rules.allowed_lateness_minutes,
        "targets": {"precision": 0.9, "recall": 0.95, "median_delay_minutes": window},
        "alerter": _pooled(ours),
        "static_threshold": {**_pooled(static), "rule": f">={STATIC_MIN_NEGATIVE} negative and >={STATIC_MIN_SHARE:.0%} negative in a {STATIC_WINDOW}-min window"},
        "runs": runs,
        "two_company": two_company_case(args, rules, grace, lateness),
    }
    a = result["alerter"]
    result["meets_targets"] = bool(a["precision"] >= 0.9 and a["recall"] >= 0.95 and a["median_delay_minutes"] is not None and a["median_delay_minutes"] <= window)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({k: result[k] for k in ("alerter", "static_threshold", "meets_targets", "two_company")}, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
