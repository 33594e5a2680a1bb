"""Spike detection over event-time tumbling windows, one detector per rule.

Articles are placed in windows by ``published_at`` (never by arrival time); a window closes when
the event-time watermark (newest ``published_at`` seen minus the allowed lateness) passes its
end. Closing depends only on the data, so a replay at full speed closes the same windows with the
same contents as the live stream did, and so raises the same alerts.

For each closed window and each scope seen in it (plus scopes whose alert is open, so quiet
windows count towards resolution), the window's share of articles in the rule's direction is
compared with the scope's own baseline:

* dense scopes (``min_history`` past windows with at least ``min_volume`` articles): the median
  share of those windows, spread = 1.4826 × MAD (robust to past spikes in the lookback);
* sparse scopes: the pooled share of the lookback shrunk towards the rule-wide share
  (``prior_weight`` pseudo-articles), so a quiet ticker borrows strength from the market;
* with ``seasonal_min_weeks`` of history, only past windows at the same hour of the week are used
  (markets are busier and gloomier at some hours than others).

The spread is never below the binomial standard error at the window's volume, so a window of four
articles needs a far larger share jump than a window of forty. A window is a *spike* when volume,
count, z-score, share jump and count-versus-baseline-count all pass the rule's thresholds. A
window that misses the spike bar but is still clearly above baseline is *elevated*: it keeps an
open alert open (hysteresis), which is what stops an alert flapping on a decaying story.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Literal

from scipy.stats import binom, norm

from newspulse.alerts.rules import Rule
from newspulse.schema import DriverArticle, ScoredArticle

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
WEEK = timedelta(days=7)
_MAD_TO_SIGMA = 1.4826
_MIN_SPREAD = 0.02
_TRIM = 0.1
_Z_CAP = 40.0

Level = Literal["spike", "elevated", "normal"]


@dataclass(frozen=True)
class _Obs:
    """What a window keeps of an article: enough to count it and to name it as a driver."""

    id: str
    published_at: datetime
    hit: bool
    score: float
    title: str
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class Verdict:
    """The outcome of one closed window for one scope."""

    rule: str
    scope: str
    window_minutes: int
    start: datetime
    end: datetime
    count: int
    hits: int
    share: float
    baseline_share: float
    baseline_hits: float
    spread: float
    z: float
    level: Level
    drivers: list[DriverArticle] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.share / self.baseline_share if self.baseline_share > 0 else math.inf


def _index(ts: datetime, minutes: int) -> int:
    return int((ts - EPOCH).total_seconds() // (minutes * 60))


def _start(idx: int, minutes: int) -> datetime:
    return EPOCH + timedelta(minutes=idx * minutes)


def scopes_of(rule: Rule, article: ScoredArticle) -> tuple[str, ...]:
    """The scope keys an article counts towards under a rule: ``market``, ``ticker:X``, ..."""
    if rule.scope == "market":
        return ("market",)
    values: Iterable[str]
    if rule.scope == "ticker":
        values = article.tickers
    elif rule.scope == "topic":
        values = article.topics
    else:
        values = [article.source]
    return tuple(f"{rule.scope}:{v}" for v in values if rule.watches(v))


def _exact_z(hits: int, n: int, p0: float) -> float:
    """The binomial tail P(X >= hits) as a z-score: the normal approximation flatters small windows
    (4 of 6 at a 17% baseline looks like z=3.2 but happens about once in 100 windows)."""
    if hits == 0 or p0 <= 0:
        return 0.0 if hits == 0 else _Z_CAP
    tail = float(binom.sf(hits - 1, n, min(p0, 1 - 1e-9)))
    return float(norm.isf(tail)) if tail > 0 else _Z_CAP


def _trimmed_mean(values: list[int]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    keep = len(ordered) - int(math.ceil(len(ordered) * _TRIM)) if len(ordered) >= 5 else len(ordered)
    return sum(ordered[:keep]) / keep


class _WindowSeries:
    """Open windows and closed-window history of one window length."""

    def __init__(self, minutes: int, retention: int) -> None:
        self.minutes = minutes
        self.retention = retention
        self.open: dict[int, dict[str, _Obs]] = {}
        self.closed_through: int | None = None  # every window with index <= this is closed
        self.any_closed = False
        self.history: dict[str, dict[int, tuple[int, int]]] = {}
        self.first_seen: dict[str, int] = {}
        self.totals: dict[int, tuple[int, int]] = {}

    def add(self, obs: _Obs) -> bool:
        idx = _index(obs.published_at, self.minutes)
        if self.closed_through is None or (not self.any_closed and idx <= self.closed_through):
            self.closed_through = idx - 1
        if idx <= self.closed_through:
            return False
        self.open.setdefault(idx, {})[obs.id] = obs
        return True

    def next_end(self) -> datetime | None:
        if self.closed_through is None:
            return None
        return _start(self.closed_through + 2, self.minutes)

    def prune(self, idx: int) -> None:
        floor = idx - self.retention
        for scope in list(self.history):
            hist = self.history[scope]
            for i in [i for i in hist if i < floor]:
                del hist[i]
            if not hist:
                del self.history[scope]
                self.first_seen.pop(scope, None)
        for i in [i for i in self.totals if i < floor]:
            del self.totals[i]


class Detector:
    """Windows, baselines and verdicts for one rule (all its window lengths)."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.late_dropped = 0
        base = rule.baseline
        self.series: dict[int, _WindowSeries] = {}
        for w in rule.windows:
            seasonal = int(base.seasonal_weeks * WEEK / timedelta(minutes=w)) + 1 if base.seasonality else 0
            self.series[w] = _WindowSeries(w, max(base.lookback_windows, seasonal))

    def add(self, articles: Sequence[ScoredArticle]) -> None:
        """Place articles in their event-time windows; articles for closed windows are dropped."""
        for art in articles:
            obs = _Obs(
                id=art.id,
                published_at=art.published_at,
                hit=art.label.value == self.rule.direction,
                score=art.score,
                title=art.title,
                scopes=scopes_of(self.rule, art),
            )
            for series in self.series.values():
                if not series.add(obs):
                    self.late_dropped += 1

    def next_close(self) -> tuple[datetime, int] | None:
        """The earliest end among this rule's next windows to close, with its window length."""
        ends = [(s.next_end(), w) for w, s in self.series.items() if s.next_end() is not None]
        return min(ends) if ends else None  # type: ignore[return-value]

    def skip_idle(self, minutes: int, watermark: datetime) -> datetime | None:
        """Close a run of empty windows at once (long gaps in event time); returns its end."""
        series = self.series[minutes]
        assert series.closed_through is not None
        if series.closed_through + 1 in series.open:
            return None
        target = _index(watermark, minutes) - 1
        if series.open:
            target = min(target, min(series.open) - 1)
        if target <= series.closed_through:
            return None
        series.closed_through = target
        series.any_closed = True
        return _start(target + 1, minutes)

    def close(self, minutes: int, extra_scopes: Iterable[str] = (), evaluate: bool = True) -> list[Verdict]:
        """Close the next window of length ``minutes``; verdicts for its scopes (+ ``extra_scopes``).

        With ``evaluate=False`` (warm-up from the store) the window only feeds the baselines.
        """
        series = self.series[minutes]
        assert series.closed_through is not None
        idx = series.closed_through + 1
        content = series.open.pop(idx, {})
        series.closed_through = idx
        series.any_closed = True
        per_scope: dict[str, list[_Obs]] = {}
        for obs in content.values():
            for scope in obs.scopes:
                per_scope.setdefault(scope, []).append(obs)
        verdicts = []
        if evaluate:
            lo = idx - self.rule.baseline.lookback_windows
            recent = [t for i, t in series.totals.items() if i >= lo]
            global_n = sum(c for c, _ in recent)
            prior = sum(h for _, h in recent) / global_n if global_n else 0.5
            warmed_up = len(recent) >= self.rule.baseline.min_history
            for scope in sorted(set(per_scope) | set(extra_scopes)):
                verdicts.append(self._judge(series, idx, scope, per_scope.get(scope, []), prior, warmed_up))
        # History is updated after judging, so a window is never part of its own baseline.
        for scope, items in per_scope.items():
            series.history.setdefault(scope, {})[idx] = (len(items), sum(o.hit for o in items))
            series.first_seen.setdefault(scope, idx)
        if content:
            series.totals[idx] = (len(content), sum(o.hit for o in content.values()))
        series.prune(idx)
        return verdicts

    # --- baselines ---------------------------------------------------------------------
    def _reference_windows(self, series: _WindowSeries, idx: int, scope: str) -> list[int]:
        """Indices of past windows that form the baseline: same hour of week, or the lookback."""
        base = self.rule.baseline
        first = series.first_seen.get(scope)
        week_windows = WEEK / timedelta(minutes=series.minutes)
        if base.seasonality and first is not None and idx - first >= base.seasonal_min_weeks * week_windows:
            start = _start(idx, series.minutes)
            hour = start.replace(minute=0, second=0, microsecond=0)
            out: list[int] = []
            for week in range(1, base.seasonal_weeks + 1):
                lo = _index(hour - week * WEEK, series.minutes)
                hi = _index(hour - week * WEEK + timedelta(hours=1) - timedelta(microseconds=1), series.minutes)
                out.extend(i for i in range(lo, hi + 1) if i >= first)
            hist = series.history.get(scope, {})
            eligible = sum(1 for i in out if hist.get(i, (0, 0))[0] >= self.rule.min_volume)
            if eligible >= base.min_history or len(out) >= base.min_history:
                return out
        lo = idx - base.lookback_windows
        if first is not None:
            lo = max(lo, first)
        return list(range(lo, idx))

    def _judge(self, series: _WindowSeries, idx: int, scope: str, items: list[_Obs], prior: float, warmed_up: bool) -> Verdict:
        """Compare one scope's window with its baseline; ``prior`` is the rule-wide share."""
        rule = self.rule
        base = rule.baseline
        n = len(items)
        hits = sum(o.hit for o in items)
        share = hits / n if n else 0.0
        hist = series.history.get(scope, {})
        ref = self._reference_windows(series, idx, scope)
        counts = [hist.get(i, (0, 0)) for i in ref]
        baseline_hits = _trimmed_mean([h for _, h in counts])


        shares = [h / c for c, h in counts if c >= rule.min_volume]
        if len(shares) >= base.min_history:
            p0 = statistics.median(shares)
            mad = statistics.median(abs(s - p0) for s in shares)
            spread_hist = _MAD_TO_SIGMA * mad
        else:
            pooled_n = sum(c for c, _ in counts)
            pooled_h = sum(h for _, h in counts)
            p0 = (pooled_h + base.prior_weight * prior) / (pooled_n + base.prior_weight) if pooled_n + base.prior_weight else prior
            spread_hist = 0.0
        binomial = math.sqrt(max(p0 * (1 - p0), 0.01) / max(n, 1))
        spread = max(spread_hist, binomial, _MIN_SPREAD)
        z = min((share - p0) / spread, _exact_z(hits, n, p0)) if n else 0.0

        level: Level = "normal"
        if (
            warmed_up
            and n >= rule.min_volume
            and hits >= rule.min_count
            and z >= rule.z_threshold
            and share - p0 >= rule.min_share_delta
            and hits >= rule.volume_ratio * baseline_hits
        ):
            level = "spike"
        elif n and hits and z >= rule.z_threshold / 2 and share - p0 >= rule.min_share_delta / 2:
            level = "elevated"

        hit_items = [o for o in items if o.hit]
        hit_items.sort(key=lambda o: (o.score if rule.direction == "negative" else -o.score, o.id))
        drivers = [DriverArticle(id=o.id, title=o.title, score=o.score, published_at=o.published_at) for o in hit_items[: rule.max_drivers]]
        start = _start(idx, series.minutes)
        return Verdict(
            rule=rule.name,
            scope=scope,
            window_minutes=series.minutes,
            start=start,
            end=start + timedelta(minutes=series.minutes),
            count=n,
            hits=hits,
            share=share,
            baseline_share=p0,
            baseline_hits=baseline_hits,
            spread=spread,
            z=z,
            level=level,
            drivers=drivers,
        )
