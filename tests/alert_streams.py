"""Labelled synthetic news streams for the alert benchmark and tests (no model needed).

Articles are ScoredArticles made directly with a chosen label, so what the detector sees is
known exactly: a background stream per ticker (its own volume, daily rhythm and normal negative
share), injected negative bursts (the ground truth: ticker, start, end) and decoys that a good
detector must ignore (volume surges with a neutral tone, a single negative story on a quiet
ticker).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from newspulse.schema import ScoredArticle

#: Class probabilities of a story with each label (what a confident classifier gives).
LABEL_PROBABILITIES = {
    "negative": {"negative": 0.86, "neutral": 0.1, "positive": 0.04},
    "neutral": {"negative": 0.08, "neutral": 0.84, "positive": 0.08},
    "positive": {"negative": 0.04, "neutral": 0.1, "positive": 0.86},
}


def scored(
    published_at: datetime,
    *,
    label: str = "neutral",
    tickers: Iterable[str] = ("ACME",),
    topics: Iterable[str] = (),
    source: str = "wire",
    title: str | None = None,
    serial: int = 0,
) -> ScoredArticle:
    """One scored article with a fixed label (probabilities consistent with it)."""
    probs = LABEL_PROBABILITIES[label]
    tickers = list(tickers)
    return ScoredArticle(
        published_at=published_at,
        source=source,
        title=title or f"{label} story {serial} on {','.join(tickers) or 'markets'} at {published_at:%Y-%m-%d %H:%M:%S}",
        tickers=tickers,
        topics=list(topics),
        label=label,
        probabilities=probs,
        score=probs["positive"] - probs["negative"],
        model_version="synthetic",
    )


def windowed(start: datetime, minutes: int, plan: Iterable[tuple[int, int]], *, ticker: str = "ACME", source: str = "wire") -> list[ScoredArticle]:
    """Articles for consecutive windows from ``start``: ``plan`` gives (articles, negatives) per
    window, spread evenly inside each window (negatives first)."""
    out: list[ScoredArticle] = []
    for w, (count, negatives) in enumerate(plan):
        for i in range(count):
            t = start + timedelta(minutes=w * minutes) + timedelta(seconds=(i + 0.5) * minutes * 60 / count)
            label = "negative" if i < negatives else "neutral"
            out.append(scored(t, label=label, tickers=[ticker], source=source, serial=len(out)))
    return out


@dataclass(frozen=True)
class Burst:
    """Ground truth: a negative episode on a ticker."""

    ticker: str
    start: datetime
    end: datetime


@dataclass
class LabelledStream:
    articles: list[ScoredArticle]
    bursts: list[Burst]
    decoys: dict[str, int] = field(default_factory=dict)
    start: datetime | None = None
    end: datetime | None = None


def poisson_times(rng: random.Random, start: datetime, end: datetime, rate_per_hour: float) -> list[datetime]:
    """Arrival times of a Poisson process of ``rate_per_hour`` between ``start`` and ``end``."""
    out, t = [], start
    while rate_per_hour > 0:
        t += timedelta(hours=rng.expovariate(rate_per_hour))
        if t >= end:
            break
        out.append(t)
    return out


def _busy(t: datetime) -> float:
    """Daily rhythm: news flow peaks in the (UTC) afternoon and is thin at night and weekends."""
    hour = t.hour + t.minute / 60
    day = 0.35 + 0.65 * math.exp(-((hour - 15) ** 2) / 18)
    return day * (0.4 if t.weekday() >= 5 else 1.0)


def labelled_stream(
    *,
    start: datetime,
    days: int = 14,
    tickers: int = 60,
    bursts: int = 40,
    surges: int = 25,
    singles: int = 40,
    warm_up_days: float = 2.0,
    seed: int = 7,
) -> LabelledStream:
    """A background stream with injected negative bursts and decoys, in published_at order."""
    rng = random.Random(seed)
    end = start + timedelta(days=days)
    names = [f"T{i:03d}" for i in range(tickers)]
    rate = {n: rng.choice([0.3, 0.6, 1.0, 2.0, 4.0, 8.0]) for n in names}  # articles per busy hour
    share = {n: rng.uniform(0.08, 0.4) for n in names}  # normal negative share
    articles: list[ScoredArticle] = []

    def emit(t: datetime, ticker: str, label: str, kind: str) -> None:
        articles.append(scored(t, label=label, tickers=[ticker], source=rng.choice(["wire", "daily", "blog"]), title=f"{kind} {ticker} {len(articles)}", serial=len(articles)))

    def background_label(ticker: str) -> str:
        return "negative" if rng.random() < share[ticker] else rng.choice(["neutral", "neutral", "positive"])

    for n in names:
        peak = rate[n]
        for t in poisson_times(rng, start, end, peak):
            if rng.random() < _busy(t):  # thinning: a non-homogeneous Poisson process
                emit(t, n, background_label(n), "background")

    def random_slot(hours: float) -> datetime:
        span = (end - start - timedelta(days=warm_up_days) - timedelta(hours=hours + 2)).total_seconds()
        return start + timedelta(days=warm_up_days) + timedelta(seconds=rng.uniform(0, span))

    truth: list[Burst] = []
    for _ in range(bursts):
        n = rng.choice(names)
        hours = rng.uniform(0.5, 2.0)
        b_start = random_slot(hours)
        b_end = b_start + timedelta(hours=hours)
        if any(b.ticker == n and b.start < b_end + timedelta(hours=4) and b_start < b.end + timedelta(hours=4) for b in truth):
            continue
        truth.append(Burst(n, b_start, b_end))
        for t in poisson_times(rng, b_start, b_end, rng.uniform(12, 30)):
            emit(t, n, "negative" if rng.random() < 0.85 else "neutral", "burst")

    busy_names = sorted(names, key=lambda x: -rate[x])
    quiet_names = [n for n in names if rate[n] <= 0.6]
    for _ in range(surges):  # a flood of routine coverage: volume x5-x10, tone as usual or calmer
        n = rng.choice(busy_names[: len(names) // 2])
        s = random_slot(2.0)
        for t in poisson_times(rng, s, s + timedelta(hours=rng.uniform(0.5, 2.0)), rng.uniform(15, 40)):
            emit(t, n, "negative" if rng.random() < share[n] * 0.8 else "neutral", "surge")
    for _ in range(singles):  # one bad story on a ticker that hardly ever makes the news
        emit(random_slot(1.0), rng.choice(quiet_names or names), "negative", "single")

    articles.sort(key=lambda a: (a.published_at, a.id))
    return LabelledStream(articles, sorted(truth, key=lambda b: b.start), {"volume_surges": surges, "single_negative_stories": singles}, start, end)
