"""Cached reads of the store for the dashboard, and the frames its charts are drawn from.

Every loader goes through the common :class:`~newspulse.store.base.Store` query interface, so
the dashboard works the same on SQLite and Elasticsearch. Loaders are cached with a short TTL:
many analysts (and the auto-refresh) hit the same queries, and a few seconds of staleness is
invisible next to the pipeline's own latency. Writes (feedback, acknowledgements) clear the
cache so that the analyst sees their own change at once. The store tries each read once; a
loader waits out a short outage (:data:`READ_DEADLINE_S`) on its own clock before the page says
the store cannot be read.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import streamlit as st

from newspulse.retrying import Backoff, retry_until
from newspulse.schema import LABELS, Alert, EntityVerdict, Feedback, Label, ScoredArticle
from newspulse.settings import Settings
from newspulse.store import Bucket, Facet, Filter, SearchHit, Store, StoreUnavailable
from newspulse.wiring import open_store

#: How long a cached query answer is reused. Shorter than the default auto-refresh interval so
#: that every refresh shows fresh numbers.
CACHE_TTL = timedelta(seconds=10)
#: How long a loader retries a store that is unavailable before the page shows the error: a
#: restarting node or a busy cluster is waited for, a dashboard never hangs.
READ_DEADLINE_S = 5.0
_READ_BACKOFF = Backoff(first_s=0.25, max_s=2.0)
#: Alerts listed per status (the Alerts page's tabs and the sidebar's counts).
ALERT_LIST_LIMIT = 200
ALERT_STATUSES = ("firing", "pending", "resolved")

#: Time ranges offered in the sidebar; None = everything in the store.
RANGES: dict[str, timedelta | None] = {
    "Last 24 hours": timedelta(days=1),
    "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30),
    "Last 90 days": timedelta(days=90),
    "All time": None,
}
DEFAULT_RANGE = "Last 30 days"
#: How each range is spelled in a shared link (``?range=7d``).
RANGE_SLUGS = {"Last 24 hours": "24h", "Last 7 days": "7d", "Last 30 days": "30d", "Last 90 days": "90d", "All time": "all"}

#: How far past the wall clock an article's time may lie and still anchor the time range. Feeds
#: stamp stories a little ahead (time zones, embargoes); a story dated in year 9999 is a bad row.
FUTURE_TOLERANCE = timedelta(days=1)

#: Bucket sizes, smallest first; :func:`pick_bucket` takes the first that gives ≤ 120 buckets.
_BUCKETS = (
    timedelta(minutes=15),
    timedelta(hours=1),
    timedelta(hours=6),
    timedelta(days=1),
    timedelta(days=7),
)
_MAX_BUCKETS = 120


def _settings_key(settings: Settings) -> tuple[str, str]:
    """Cache key of a store: which one, not the credentials used to reach it (the key/password
    settings are left out, and so is ``user:password@`` in the URL)."""
    url = urlsplit(settings.store_url)
    return (url._replace(netloc=url.netloc.rpartition("@")[2]).geturl(), settings.es_index_prefix)


_HASH_FUNCS = {Settings: _settings_key}


def _cached(func):
    """``func`` cached for :data:`CACHE_TTL`, retried for :data:`READ_DEADLINE_S` while the
    store is unavailable (failures are not cached)."""
    cached = st.cache_data(ttl=CACHE_TTL, show_spinner=False, hash_funcs=_HASH_FUNCS)(func)

    @functools.wraps(func)
    def read(*args: Any, **kwargs: Any) -> Any:
        what = f"dashboard read {func.__name__}"
        return retry_until(lambda: cached(*args, **kwargs), what, timeout_s=READ_DEADLINE_S, transient=lambda err: isinstance(err, StoreUnavailable), backoff=_READ_BACKOFF)

    read.clear = cached.clear  # type: ignore[attr-defined]  # forget this loader's answers
    return read


@st.cache_resource(show_spinner=False, hash_funcs=_HASH_FUNCS)
def get_store(settings: Settings) -> Store:
    """One store client per store URL, shared by all sessions (both backends are thread-safe)."""
    return open_store(settings)


def clear_caches() -> None:
    """Forget cached answers after a write, so the next run reads the store again."""
    st.cache_data.clear()


# --- time ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """The time range the pages look at, ending at the newest article in the store or at the
    wall clock, whichever is earlier.

    The data may come from 1987 (the Reuters replay) or from now (the live crawl), so "the last
    7 days" of a replay means the 7 days up to its latest article. Live data never ends later
    than now: one story stamped hours ahead (a feed's wrong time zone, within the accepted
    bound) would otherwise slide every window into the future and hide the day's news.
    """

    start: datetime | None
    end: datetime | None
    bucket: timedelta
    label: str

    def filter(self, **fields: Any) -> Filter:
        return Filter(start=self.start, end=self.end, **fields)

    def previous(self) -> "Window | None":
        """The equally long period just before this one (for deltas), if this one is bounded."""
        if self.start is None or self.end is None:
            return None
        span = self.end - self.start
        return Window(start=self.start - span, end=self.start, bucket=self.bucket, label="previous period")


def pick_bucket(span: timedelta) -> timedelta:
    for bucket in _BUCKETS:
        if span / bucket <= _MAX_BUCKETS:
            return bucket
    return _BUCKETS[-1]


def shift(moment: datetime, delta: timedelta) -> datetime:
    """``moment + delta``, held at the ends of the calendar instead of raising OverflowError."""
    try:
        return moment + delta
    except OverflowError:
        bound = datetime.max if delta > timedelta(0) else datetime.min
        return bound.replace(tzinfo=moment.tzinfo)


def make_window(choice: str, first: datetime | None, latest: datetime | None, now: datetime | None = None) -> Window:
    """The window for a sidebar choice, given the oldest and newest article times; it ends at
    ``latest`` or at ``now`` (default: the wall clock), whichever is earlier."""
    if latest is None:
        return Window(start=None, end=None, bucket=timedelta(days=1), label=choice)
    latest = min(latest, now or datetime.now(timezone.utc))
    # The end is exclusive; one second past the newest article includes it.
    end = shift(latest, timedelta(seconds=1))
    span = RANGES.get(choice)
    if span is None:
        start = first if first is not None else shift(latest, -timedelta(days=30))
    else:
        start = shift(end, -span)
    return Window(start=start, end=end, bucket=pick_bucket(end - start), label=choice)


def bucket_label(bucket: timedelta) -> str:
    if bucket >= timedelta(days=1):
        return f"{bucket.days} day" + ("s" if bucket.days > 1 else "")
    hours = bucket.total_seconds() / 3600
    if hours >= 1:
        return f"{hours:g} hour" + ("s" if hours > 1 else "")
    return f"{bucket.total_seconds() / 60:g} minutes"


# --- cached loaders ------------------------------------------------------------------------


@_cached
def load_stats(settings: Settings) -> dict:
    return get_store(settings).stats()


@dataclass(frozen=True)
class TimeSpan:
    """The event times the time ranges are anchored on: the oldest article and the newest one
    that is not in the future, and how many stored articles claim a later time."""

    first: datetime | None
    latest: datetime | None
    future: int = 0
    cutoff: datetime | None = None


@_cached
def load_span(settings: Settings) -> TimeSpan:
    """The store's time span with future-dated articles (a bad feed, a year-9999 row) set aside.

    Anchoring the ranges at such an article would move every page's window into the future and
    overflow the calendar, so the newest article up to now + :data:`FUTURE_TOLERANCE` anchors
    them instead, and the pages say how many articles were left out.
    """
    store = get_store(settings)
    stats = store.stats()
    first = _parse_time(stats.get("first_published_at"))
    latest = store.latest_published_at()
    cutoff = datetime.now(timezone.utc) + FUTURE_TOLERANCE
    if latest is None or latest <= cutoff:
        return TimeSpan(first, latest)
    future = sum(b.count for b in store.timeseries(Filter(start=cutoff), timedelta(days=3650)))
    newest = _newest_before(store, cutoff)
    return TimeSpan(first if newest is not None else None, newest, future, cutoff)


def _parse_time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _newest_before(store: Store, cutoff: datetime) -> datetime | None:
    """The newest article time before ``cutoff``, found by zooming in on the last non-empty bucket
    (the Store interface has no filtered maximum; this costs a few small queries)."""
    flt = Filter(end=cutoff)
    for bucket in (timedelta(days=365), timedelta(days=7), timedelta(hours=6), timedelta(minutes=15)):
        buckets = store.timeseries(flt, bucket)
        if not buckets:
            return None
        flt = Filter(start=max(buckets[-1].start, flt.start or buckets[-1].start), end=min(shift(buckets[-1].start, bucket), cutoff))
    return max((a.published_at for batch in store.iter_articles(flt) for a in batch), default=None)


def load_latest(settings: Settings) -> datetime | None:
    """The newest article time that is not in the future (None for an empty store)."""
    return load_span(settings).latest


@_cached
def load_series(settings: Settings, flt: Filter, bucket: timedelta) -> list[Bucket]:
    return get_store(settings).timeseries(flt, bucket)


@_cached
def load_facets(settings: Settings, field: str, flt: Filter, limit: int = 10, by: str = "volume", min_count: int = 1) -> list[Facet]:
    return get_store(settings).facets(field, flt, limit=limit, by=by, min_count=min_count)  # type: ignore[arg-type]


@_cached
def load_top_negative(settings: Settings, flt: Filter, limit: int = 10) -> list[ScoredArticle]:
    return get_store(settings).top_negative(flt, limit=limit)


@_cached
def load_search(settings: Settings, text: str, flt: Filter, limit: int = 20) -> list[SearchHit]:
    return get_store(settings).search(text, flt, limit=limit)


@_cached
def load_articles(settings: Settings, flt: Filter, limit: int = 500) -> list[ScoredArticle]:
    """Up to ``limit`` matching articles, oldest first (for small windows such as one bucket)."""
    out: list[ScoredArticle] = []
    for batch in get_store(settings).iter_articles(flt, batch_size=min(limit, 500)):
        out.extend(batch)
        if len(out) >= limit:
            break
    return out[:limit]


@_cached
def load_article(settings: Settings, article_id: str) -> ScoredArticle | None:
    return get_store(settings).get_article(article_id)


@_cached
def load_alerts(settings: Settings, status: str | None = None, limit: int = ALERT_LIST_LIMIT) -> list[Alert]:
    return get_store(settings).list_alerts(status=status, limit=limit)


def alert_counts(settings: Settings) -> dict[str, str]:
    """Alerts per status as the Alerts page lists them: read through the same cached
    :func:`load_alerts` calls, so the sidebar and the page's tabs show one snapshot (the store's
    own counts, cached apart, said "3 alerts" while the Resolved tab listed 7). ``"200+"`` at the
    list's limit."""
    counts = {}
    for status in ALERT_STATUSES:
        n = len(load_alerts(settings, status=status))
        counts[status] = f"{n}+" if n >= ALERT_LIST_LIMIT else str(n)
    return counts


@_cached
def load_feedback(settings: Settings) -> list[Feedback]:
    return get_store(settings).list_feedback()


@st.cache_resource(show_spinner=False)
def company_sectors() -> dict[str, str]:
    """Ticker → sector from the tagger's company list (``ingest/data/companies.csv``), loaded once."""
    from newspulse.ingest.tagging import CompanyDirectory

    return {c.symbol: c.sector or UNLISTED_SECTOR for c in CompanyDirectory.from_csv().companies.values()}


#: The roll-up's row for tickers the company list does not know (a source's own symbols, former ones).
UNLISTED_SECTOR = "Not in the company list"
#: Tickers read per window for the sector roll-up (busiest first).
SECTOR_TICKERS = 1000


def sector_rollup(facets: Sequence[Facet], sectors: dict[str, str]) -> pd.DataFrame:
    """Ticker facets summed by sector: ticker mentions, negative share and mean score weighted by
    each ticker's volume (a story naming two banks counts for Financials twice), most negative
    first."""
    rows: dict[str, list[float]] = {}
    for f in facets:
        acc = rows.setdefault(sectors.get(f.value, UNLISTED_SECTOR), [0, 0, 0.0, 0])
        acc[0] += f.count
        acc[1] += f.negative
        acc[2] += f.mean_score * f.count
        acc[3] += 1
    frame = pd.DataFrame(
        [{"sector": k, "tickers": int(t), "mentions": int(n), "negative share": neg / n if n else 0.0, "mean score": score / n if n else 0.0}
         for k, (n, neg, score, t) in rows.items()],
        columns=["sector", "tickers", "mentions", "negative share", "mean score"],
    )
    return frame.sort_values(["negative share", "mentions"], ascending=[False, False], ignore_index=True)


@_cached
def load_heatmap(settings: Settings, flt: Filter, tickers: int = 12, topics: int = 10) -> pd.DataFrame:
    """Negative share per (ticker, topic) for the busiest tickers and topics of the window.

    Built from per-ticker topic facets, so it needs nothing beyond the common query interface.
    Cells of a single article are left out: one story is not a share.
    """
    store = get_store(settings)
    top_topics = [f.value for f in store.facets("topics", flt, limit=topics)]
    rows = []
    for ticker in store.facets("tickers", flt, limit=tickers):
        per_topic = store.facets("topics", replace(flt, ticker=ticker.value), limit=max(topics * 3, 30), min_count=2)
        for facet in per_topic:
            if facet.value in top_topics:
                rows.append(_facet_row(facet, ticker=ticker.value, topic=facet.value))
    return pd.DataFrame(rows, columns=["ticker", "topic", "articles", "negative", "negative_share", "mean_score"])


@_cached
def load_ticker_heatmap(settings: Settings, flt: Filter, bucket: timedelta, tickers: int = 12) -> pd.DataFrame:
    """Negative share per (ticker, time bucket): the heat map when articles carry no topics."""
    store = get_store(settings)
    rows = []
    for ticker in store.facets("tickers", flt, limit=tickers):
        for b in store.timeseries(replace(flt, ticker=ticker.value), bucket):
            rows.append({"ticker": ticker.value, "time": b.start, "articles": b.count, "negative": b.negative,
                         "negative_share": b.negative_share, "mean_score": b.mean_score})
    return pd.DataFrame(rows, columns=["ticker", "time", "articles", "negative", "negative_share", "mean_score"])


@st.cache_data(ttl=CACHE_TTL, show_spinner=False)
def load_production_card(registry: str) -> dict[str, Any] | None:
    """The production model card as plain data, or None when nothing is promoted yet."""
    from newspulse.models.sentiment.registry import NoProductionModel, Registry

    try:
        return Registry(registry).production_card().model_dump(mode="json")
    except NoProductionModel:
        return None


@st.cache_data(ttl=CACHE_TTL, show_spinner=False)
def load_model_versions(registry: str) -> list[dict[str, Any]]:
    """Every version in the registry with its macro-F1 per split, oldest first."""
    from newspulse.models.sentiment.registry import Registry

    return Registry(registry).describe()


def _facet_row(facet: Facet, **keys: str) -> dict:
    return {**keys, "articles": facet.count, "negative": facet.negative,
            "negative_share": facet.negative_share, "mean_score": facet.mean_score}


# --- frames --------------------------------------------------------------------------------


def series_frame(buckets: Sequence[Bucket]) -> pd.DataFrame:
    """One row per bucket: volume per label, negative share and the sentiment index.

    The sentiment index is the mean score (P(pos) − P(neg)) × 100: −100 is all-negative news,
    +100 all-positive.
    """
    rows = [
        {
            "time": b.start,
            "articles": b.count,
            "negative": b.negative,
            "neutral": b.neutral,
            "positive": b.positive,
            "negative_share": b.negative_share,
            "sentiment_index": round(b.mean_score * 100, 2),
        }
        for b in buckets
    ]
    return pd.DataFrame(rows, columns=["time", "articles", *LABELS, "negative_share", "sentiment_index"])


@dataclass(frozen=True)
class Totals:
    articles: int
    negative: int
    neutral: int
    positive: int
    sentiment_index: float | None

    @property
    def negative_share(self) -> float | None:
        return self.negative / self.articles if self.articles else None

    def by_label(self) -> dict[str, int]:
        return {"negative": self.negative, "neutral": self.neutral, "positive": self.positive}


def totals(buckets: Sequence[Bucket]) -> Totals:
    """Sums over a series; the index is the article-weighted mean score × 100."""
    n = sum(b.count for b in buckets)
    index = sum(b.mean_score * b.count for b in buckets) / n * 100 if n else None
    return Totals(
        articles=n,
        negative=sum(b.negative for b in buckets),
        neutral=sum(b.neutral for b in buckets),
        positive=sum(b.positive for b in buckets),
        sentiment_index=index,
    )


@dataclass(frozen=True)
class Move:
    """A bucket where a series' sentiment index jumped, with its direction."""

    start: datetime
    end: datetime
    change: float
    articles: int


def biggest_moves(buckets: Sequence[Bucket], bucket: timedelta, limit: int = 3) -> list[Move]:
    """Buckets with the largest change in sentiment index from the previous non-empty bucket.

    Changes are weighted by √volume so that one lone article does not outrank a real shift.
    """
    moves = []
    for prev, cur in zip(buckets, buckets[1:]):
        change = (cur.mean_score - prev.mean_score) * 100
        moves.append((abs(change) * math.sqrt(cur.count), Move(cur.start, cur.start + bucket, change, cur.count)))
    moves.sort(key=lambda m: m[0], reverse=True)
    return [m for _, m in moves[:limit] if m.change != 0]


def verdict_for(article: ScoredArticle, ticker: str) -> EntityVerdict:
    """The story's verdict about one company: its entity verdict, or, for a record scored before
    entity-level scoring (no verdict for that ticker), the story's verdict standing in, with
    basis "story" as the pipeline itself writes for a company it cannot find in the text."""
    for verdict in article.entities:
        if verdict.ticker == ticker:
            return verdict
    return EntityVerdict(ticker=ticker, label=article.label, probabilities=article.probabilities, score=article.score, basis="story")


def drivers_of(move: Move, articles: Sequence[ScoredArticle], limit: int = 3, ticker: str | None = None) -> list[ScoredArticle]:
    """The articles of a move's bucket that pushed in the direction of the move: by the story's
    score, or by the company's own score when the move is one ``ticker``'s."""
    def score(article: ScoredArticle) -> float:
        return verdict_for(article, ticker).score if ticker else article.score

    ordered = sorted(articles, key=score, reverse=move.change > 0)
    return list(ordered[:limit])


def latest_negative(settings: Settings, ticker: str, buckets: Sequence[Bucket], bucket: timedelta, limit: int = 5) -> list[tuple[ScoredArticle, EntityVerdict]]:
    """The ``limit`` newest stories that are negative *about* ``ticker``, with that verdict.

    ``buckets`` is the ticker's timeline, whose negative counts are the company's own verdicts
    (the store counts a ticker's entity verdict, the story's for a record without one), and a
    ticker filter with a label matches that same verdict; so only buckets holding such a story
    are read, newest first, and only those stories are loaded: a few small queries however busy
    the ticker is."""
    found: list[tuple[ScoredArticle, EntityVerdict]] = []
    for b in reversed(buckets):
        if not b.negative:
            continue
        articles = load_articles(settings, Filter(start=b.start, end=shift(b.start, bucket), ticker=ticker, label=Label.negative.value))
        for article in sorted(articles, key=lambda a: a.published_at, reverse=True):
            found.append((article, verdict_for(article, ticker)))
            if len(found) == limit:
                return found
    return found


def label_drift(train: dict[str, float], live: dict[str, float]) -> pd.DataFrame:
    """Training vs live label shares side by side, with each label's PSI term."""
    t_total = sum(train.values()) or 1.0
    l_total = sum(live.values()) or 1.0
    rows = []
    for label in LABELS:
        p_train = train.get(label, 0) / t_total
        p_live = live.get(label, 0) / l_total
        rows.append({"label": label, "train_share": p_train, "live_share": p_live, "psi": _psi_term(p_train, p_live)})
    return pd.DataFrame(rows, columns=["label", "train_share", "live_share", "psi"])


def _psi_term(expected: float, actual: float, eps: float = 1e-4) -> float:
    e, a = max(expected, eps), max(actual, eps)
    return (a - e) * math.log(a / e)


def drift_verdict(psi: float) -> str:
    """The usual population-stability reading of a PSI value."""
    if psi < 0.1:
        return "stable"
    if psi < 0.25:
        return "moderate shift"
    return "significant shift"


def parse_scope(scope: str) -> dict[str, str]:
    """Filter fields of an alert scope: ``market``, ``ticker:X``, ``topic:Y``, ``source:Z``."""
    kind, _, value = scope.partition(":")
    if kind in ("ticker", "topic", "source") and value:
        return {kind: value}
    return {}
