"""Spike detection over sliding event-time windows, one detector per rule.

Articles are placed in buckets of ``hop_minutes`` by ``published_at`` (never by arrival time);
a bucket closes when the event-time watermark (newest ``published_at`` seen minus the allowed
lateness) passes its end. Closing depends only on the data, so a replay at full speed closes the
same buckets with the same contents as the live stream did, and so raises the same alerts.

Each time a bucket closes, every window length of the rule (e.g. 15 and 60 minutes) is judged
over the buckets it spans, for each scope with enough matching articles in it (plus scopes
whose alert is open, so quiet windows count towards resolution). Sliding windows are what keep
detection delay short: a burst that starts mid-window is caught when the window ending
``hop_minutes`` later holds enough of it, not only at the next fixed boundary.

A ticker scope counts each article by the company's own verdict (its entity verdict) where
the article has one, so a burst of stories that are bad for X and good for Y is a spike for X
only; topic, source and market scopes count the story's verdict.

The window's share of articles in the rule's direction is compared with the scope's baseline,
built from the scope's past, non-overlapping windows of the same length:

* the level is the pooled share over the lookback (``lookback_windows`` windows, or - once
  ``seasonal_min_weeks`` of history exist - the windows at the same hour of the week in past
  weeks), shrunk towards the rule-wide share by ``prior_weight`` pseudo-articles so that a quiet
  ticker borrows strength from the market;
* windows that were themselves anomalous are left out, so a long story does not teach the
  detector that it is normal - unless they are more than a third of the reference windows, when
  the level has shifted and becomes the new normal;
* the spread is binomial at the window's volume times an over-dispersion factor estimated
  robustly (median/MAD of the past windows' standardised residuals): news about a company comes
  in clumps, so its share varies more than coin flips would;
* the z-score is the smaller of the normal approximation and the exact binomial tail turned into
  a z-score (4 of 6 at a 17% baseline looks like z=3.2 but happens about once in 100 windows).

A window is a *spike* when volume, count, z-score, share jump and count-versus-baseline-count all
pass the rule's thresholds. A window that misses the spike bar but is still clearly above
baseline is *elevated*: it keeps an open alert open (hysteresis), which is what stops an alert
flapping on a decaying story.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Literal

from newspulse.alerts.rules import Rule
from newspulse.schema import DriverArticle, ScoredArticle

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
WEEK = timedelta(days=7)
_MAD_TO_SIGMA = 1.4826
_Z_CAP = 40.0
_PRUNE_EVERY = 64

Level = Literal["spike", "elevated", "normal"]


@dataclass(frozen=True)
class _Obs:
    """What a bucket keeps of an article: enough to count it and to name it as a driver."""

    id: str
    published_at: datetime
    hit: bool
    score: float
    title: str
    scopes: tuple[str, ...]
    tickers: tuple[str, ...]
    #: ``(scope, hit, score)`` for scopes that count another verdict than the story's: a
    #: ticker scope counts the company's own (entity) verdict where the article has one.
    own: tuple[tuple[str, bool, float], ...] = ()

    def seen_from(self, scope: str) -> "_Obs":
        """The article as ``scope`` counts it (its hit and score there)."""
        for name, hit, score in self.own:
            if name == scope:
                return replace(self, hit=hit, score=score, own=())
        return self


@dataclass(frozen=True)
class Verdict:
    """The outcome of one window for one scope."""

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


def own_verdicts(rule: Rule, article: ScoredArticle, scopes: Sequence[str]) -> tuple[tuple[str, bool, float], ...]:
    """``(scope, hit, score)`` of each ticker scope whose company has its own verdict in the
    article: "Intel slides as AMD wins" is a hit for ``ticker:INTC``, not for ``ticker:AMD``.
    Topic, source and market scopes keep the story's verdict (none here)."""
    if rule.scope != "ticker" or not article.entities:
        return ()
    wanted = set(scopes)
    return tuple(
        (f"ticker:{e.ticker}", e.label.value == rule.direction, e.score) for e in article.entities if f"ticker:{e.ticker}" in wanted
    )


def exact_z(hits: int, n: int, p0: float) -> float:
    """The binomial upper tail P(X >= hits | n, p0) expressed as a z-score."""
    if hits <= 0:
        return 0.0
    if p0 <= 0:
        return _Z_CAP
    from scipy.special import bdtrc, ndtri  # imported here: scipy costs ~1 s at CLI start-up

    tail = float(bdtrc(hits - 1, n, min(p0, 1 - 1e-9)))
    return min(_Z_CAP, float(-ndtri(tail))) if tail > 0 else _Z_CAP


def poisson_z(hits: int, expected: float) -> float:
    """The Poisson upper tail P(X >= hits | expected) expressed as a z-score."""
    if hits <= 0:
        return 0.0
    from scipy.special import ndtri, pdtrc

    tail = float(pdtrc(hits - 1, max(expected, 1e-9)))
    return min(_Z_CAP, float(-ndtri(tail))) if tail > 0 else _Z_CAP


@dataclass(frozen=True)
class _Context:
    """Rule-wide figures for one window end: the share prior and how busy the news is."""

    prior: float
    warmed_up: bool
    volume_now: int
    volume_mean: float

    def activity(self, own: int) -> float:
        """How busy the news is now relative to usual, leaving out the scope's own stories: the
        expected count of a scope's negative stories follows the market's rhythm (day/night,
        weekends) even before hour-of-week seasonality has enough history."""
        if self.volume_mean <= 0 or own * 2 > self.volume_now:
            return 1.0  # the scope is most of the news (the market itself): nothing to compare with
        return min(4.0, max(0.25, (self.volume_now - own) / self.volume_mean))


@dataclass
class _Baseline:
    share: float
    hits: float
    dispersion: float


class Detector:
    """Buckets, window histories, baselines and verdicts for one rule."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.hop = rule.hop_minutes
        self.spans = {w: w // self.hop for w in rule.windows}
        self.longest = max(self.spans.values())
        self.week = int(WEEK / timedelta(minutes=self.hop))
        base = rule.baseline
        self.retention = {
            w: max(base.lookback_windows * m, (base.seasonal_weeks * self.week + 2 * m) if base.seasonality else 0) + m
            for w, m in self.spans.items()
        }
        self.late_dropped = 0
        self.open: dict[int, dict[str, _Obs]] = {}
        # closed buckets inside the longest window: bucket -> scope -> its articles there, so that
        # a scope's window is read without scanning every article's scopes (an article with
        # thousands of tickers would make that quadratic)
        self.recent: dict[int, dict[str, list[_Obs]]] = {}
        self.bucket_scopes: dict[int, dict[str, tuple[int, int]]] = {}
        self.closed_through: int | None = None  # every bucket with index <= this is closed
        self.any_closed = False
        # window length -> scope -> window-end bucket -> (articles, hits, anomalous)
        self.history: dict[int, dict[str, dict[int, tuple[int, int, bool]]]] = {w: {} for w in self.spans}
        self.first_seen: dict[int, dict[str, int]] = {w: {} for w in self.spans}
        self.totals: dict[int, tuple[int, int]] = {}
        self._closes = 0
        self._prior_sums: dict[int, tuple[int, int, int, int]] = {}
        self._first_bucket: int | None = None

    # --- buckets ---------------------------------------------------------------------------
    def _bucket(self, ts: datetime) -> int:
        return int((ts - EPOCH).total_seconds() // (self.hop * 60))

    def _time(self, bucket: int) -> datetime:
        return EPOCH + timedelta(minutes=bucket * self.hop)

    def add(self, articles: Sequence[ScoredArticle]) -> None:
        """Place articles in their event-time buckets; articles for closed buckets are dropped."""
        for art in articles:
            idx = self._bucket(art.published_at)
            if self.closed_through is None or (not self.any_closed and idx <= self.closed_through):
                self.closed_through = idx - 1
            if idx <= self.closed_through:
                self.late_dropped += 1
                continue
            scopes = scopes_of(self.rule, art)
            self.open.setdefault(idx, {})[art.id] = _Obs(
                id=art.id,
                published_at=art.published_at,
                hit=art.label.value == self.rule.direction,
                score=art.score,
                title=art.title,
                scopes=scopes,
                tickers=tuple(art.tickers),
                own=own_verdicts(self.rule, art, scopes),
            )

    def next_close(self) -> datetime | None:
        """End of the next bucket to close (None before the first article)."""
        return None if self.closed_through is None else self._time(self.closed_through + 2)

    def skip_idle(self, watermark: datetime) -> datetime | None:
        """Close a run of buckets at once when nothing is open or in any window (gaps in event
        time); returns the end of the last bucket skipped."""
        assert self.closed_through is not None
        if self.closed_through + 1 in self.open or self.recent:
            return None
        target = self._bucket(watermark) - 1
        if self.open:
            target = min(target, min(self.open) - 1)
        if target <= self.closed_through:
            return None
        self.closed_through = target
        self.any_closed = True
        return self._time(target + 1)

    def close(self, extra_scopes: Iterable[str] = (), evaluate: bool = True) -> list[Verdict]:
        """Close the next bucket and judge every window that ends with it.

        Scopes are judged when their window holds at least ``min_count`` hits, or when listed in
        ``extra_scopes`` (open alerts). With ``evaluate=False`` (warm-up from the store) windows
        only feed the baselines.
        """
        assert self.closed_through is not None
        k = self.closed_through + 1
        self.closed_through = k
        self.any_closed = True
        content = list(self.open.pop(k, {}).values())
        if content:
            by_scope: dict[str, list[_Obs]] = {}
            for obs in content:
                for scope in obs.scopes:
                    by_scope.setdefault(scope, []).append(obs.seen_from(scope))
            self.recent[k] = by_scope
            self.bucket_scopes[k] = {s: (len(items), sum(o.hit for o in items)) for s, items in by_scope.items()}
            self.totals[k] = (len(content), sum(o.hit for o in content))
            if self._first_bucket is None:
                self._first_bucket = k
        for old in [b for b in self.recent if b <= k - self.longest]:
            del self.recent[old]
            self.bucket_scopes.pop(old, None)

        extra = set(extra_scopes)
        verdicts: list[Verdict] = []
        for w, m in self.spans.items():
            sums: dict[str, list[int]] = {}
            for b in range(k - m + 1, k + 1):
                for scope, (n, h) in self.bucket_scopes.get(b, {}).items():
                    c = sums.setdefault(scope, [0, 0])
                    c[0] += n
                    c[1] += h
            ctx = self._context(k, w, m) if evaluate else None
            hist, first = self.history[w], self.first_seen[w]
            for scope in sorted(set(sums) | (extra if evaluate else set())):
                n, h = sums.get(scope, (0, 0))
                anomalous = False
                if evaluate and (h >= self.rule.min_count or scope in extra):
                    v = self._judge(k, w, m, scope, n, h, ctx)  # type: ignore[arg-type]
                    verdicts.append(v)
                    anomalous = v.level == "spike"
                if n:  # judged after: a window is never part of its own baseline
                    hist.setdefault(scope, {})[k] = (n, h, anomalous)
                    first.setdefault(scope, k)
        self._closes += 1
        if self._closes % _PRUNE_EVERY == 0:
            self._prune(k)
        return verdicts

    def _prune(self, k: int) -> None:
        for w, per_scope in self.history.items():
            floor = k - self.retention[w]
            for scope in list(per_scope):
                hist = per_scope[scope]
                for b in [b for b in hist if b < floor]:
                    del hist[b]
                if not hist:
                    del per_scope[scope]
                    self.first_seen[w].pop(scope, None)
        floor = k - max(self.retention.values())
        for b in [b for b in self.totals if b < floor]:
            del self.totals[b]

    # --- baselines -----------------------------------------------------------------------
    def _context(self, k: int, w: int, m: int) -> _Context:
        """Rule-wide share and news activity over the lookback (running sums over buckets
        (k - lookback*m, k - m], updated as k advances by one)."""
        lo, hi = k - self.rule.baseline.lookback_windows * m, k - m
        state = self._prior_sums.get(w)
        if state is not None and state[0] == k - 1:
            _, n, h, c = state
            for b, sign in ((hi, 1), (lo, -1)):
                if b in self.totals:
                    n += sign * self.totals[b][0]
                    h += sign * self.totals[b][1]
                    c += sign
        else:
            inside = [t for b, t in self.totals.items() if lo < b <= hi]
            n, h, c = sum(t[0] for t in inside), sum(t[1] for t in inside), len(inside)
        self._prior_sums[w] = (k, n, h, c)
        first = self._first_bucket if self._first_bucket is not None else k
        windows_seen = max(1.0, (hi - max(lo, first - 1)) / m)
        now = sum(self.totals.get(b, (0, 0))[0] for b in range(k - m + 1, k + 1))
        return _Context(
            prior=h / n if n else 0.5,
            warmed_up=c >= self.rule.baseline.min_history,
            volume_now=now,
            volume_mean=n / windows_seen,
        )

    def _reference_ends(self, k: int, m: int, first: int | None) -> list[int]:
        """Ends of past non-overlapping windows: same hour of week in past weeks, or the lookback."""
        base = self.rule.baseline
        if base.seasonality and first is not None and k - first >= base.seasonal_min_weeks * self.week:
            reach = (60 // self.hop) // m // 2  # windows either side that stay within the hour
            ends = [k - wk * self.week + j * m for wk in range(1, base.seasonal_weeks + 1) for j in range(-reach, reach + 1)]
            ends = [e for e in ends if e >= first]
            if len(ends) >= base.seasonal_min_weeks * (2 * reach + 1):
                return ends
        lo = k - base.lookback_windows * m
        if first is not None:
            lo = max(lo, first - 1)
        return list(range(k - m, lo, -m))

    def _baseline(self, k: int, w: int, m: int, scope: str, prior: float) -> _Baseline:
        rule, base = self.rule, self.rule.baseline
        hist = self.history[w].get(scope, {})
        refs = [hist.get(e, (0, 0, False)) for e in self._reference_ends(k, m, self.first_seen[w].get(scope))]
        flagged = sum(1 for _, _, a in refs if a)
        if flagged and flagged * 3 <= sum(1 for n, _, _ in refs if n):
            refs = [r for r in refs if not r[2]]
        # negatives per window, plus half a story of pseudo-count so that a scope with an empty
        # past does not make its first negative story infinitely surprising
        hits = (sum(h for _, h, _ in refs) + 0.5) / (len(refs) + 1)
        pooled_n = sum(n for n, _, _ in refs)
        pooled_h = sum(h for _, h, _ in refs)
        p0 = (pooled_h + base.prior_weight * prior) / (pooled_n + base.prior_weight) if pooled_n + base.prior_weight else prior
        p0 = min(max(p0, 0.005), 0.995)
        residuals = [(h - n * p0) / math.sqrt(n * p0 * (1 - p0)) for n, h, _ in refs if n >= rule.min_volume]
        dispersion = 1.0
        if len(residuals) >= base.min_history:
            med = statistics.median(residuals)
            mad = statistics.median(abs(r - med) for r in residuals)
            dispersion = max(1.0, (_MAD_TO_SIGMA * mad) ** 2)
        return _Baseline(p0, hits, dispersion)

    def _window(self, k: int, m: int, scope: str) -> list[_Obs]:
        return [o for b in range(k - m + 1, k + 1) for o in self.recent.get(b, {}).get(scope, ())]

    def _without_top_companies(self, k: int, m: int, scope: str) -> tuple[int, int]:
        """(articles, hits) of a window once the ``exclude_top`` tickers with the most hits are
        left out: a market, topic or source spike must not be one company's bad day."""
        items = self._window(k, m, scope)
        by_ticker: dict[str, int] = {}
        for o in items:
            if o.hit:
                for t in o.tickers:
                    by_ticker[t] = by_ticker.get(t, 0) + 1
        top = set(sorted(by_ticker, key=lambda t: (-by_ticker[t], t))[: self.rule.exclude_top])
        rest = [o for o in items if not top.intersection(o.tickers)]
        return len(rest), sum(o.hit for o in rest)

    def _scores(self, n: int, hits: int, b: _Baseline, ctx: _Context) -> tuple[float, float, float]:
        """(share_z, z, spread). The tone must have shifted (share_z); then evidence from either
        the share or the count of negative stories (a quiet name suddenly in many gloomy
        headlines) makes the case."""
        if not n:
            return 0.0, 0.0, math.sqrt(b.dispersion * b.share * (1 - b.share))
        share = hits / n
        spread = math.sqrt(b.dispersion * b.share * (1 - b.share) / n)
        share_z = min((share - b.share) / spread, exact_z(hits, n, b.share) / math.sqrt(b.dispersion))
        count_z = poisson_z(hits, b.hits * ctx.activity(n)) / math.sqrt(b.dispersion)
        return share_z, (max(share_z, count_z) if share_z >= self.rule.min_share_z else share_z), spread

    def _is_spike(self, n: int, hits: int, b: _Baseline, ctx: _Context) -> bool:
        rule = self.rule
        share_z, z, _ = self._scores(n, hits, b, ctx)
        return (
            ctx.warmed_up
            and n >= rule.min_volume
            and hits >= rule.min_count
            and z >= rule.z_threshold
            and share_z >= rule.min_share_z
            and hits / n - b.share >= rule.min_share_delta
            and hits >= rule.volume_ratio * b.hits
        )

    def _judge(self, k: int, w: int, m: int, scope: str, n: int, hits: int, ctx: _Context) -> Verdict:
        """Compare one scope's window with its baseline."""
        rule = self.rule
        b = self._baseline(k, w, m, scope, ctx.prior)
        share = hits / n if n else 0.0
        share_z, z, spread = self._scores(n, hits, b, ctx)
        level: Level = "normal"
        if self._is_spike(n, hits, b, ctx) and (not rule.exclude_top or self._is_spike(*self._without_top_companies(k, m, scope), b, ctx)):
            level = "spike"
        elif hits and share_z >= rule.min_share_z / 2 and share - b.share >= rule.min_share_delta / 2:
            level = "elevated"

        drivers: list[DriverArticle] = []
        if level != "normal":
            items = [o for o in self._window(k, m, scope) if o.hit]
            items.sort(key=lambda o: (o.score if rule.direction == "negative" else -o.score, o.id))
            drivers = [DriverArticle(id=o.id, title=o.title, score=o.score, published_at=o.published_at) for o in items[: rule.max_drivers]]
        end = self._time(k + 1)
        return Verdict(
            rule=rule.name,
            scope=scope,
            window_minutes=w,
            start=end - timedelta(minutes=w),
            end=end,
            count=n,
            hits=hits,
            share=share,
            baseline_share=b.share,
            baseline_hits=b.hits,
            spread=spread,
            z=z,
            level=level,
            drivers=drivers,
        )
