"""The one query interface that the pipeline, the alerter and the dashboard use.

Both backends (embedded SQLite, Elasticsearch) implement :class:`Store`, and a shared contract
suite (tests/test_store_contract.py) checks that they give the same answers query by query, so
nothing above this module knows which one it talks to.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from newspulse.entities import story_verdict
from newspulse.errors import InfrastructureError, PermanentFailure, Unavailable
from newspulse.schema import LABELS, Alert, Feedback, ScoredArticle

FacetField = Literal["tickers", "topics", "source"]


@dataclass(frozen=True)
class Filter:
    """Which articles a query looks at. ``start`` is inclusive, ``end`` exclusive (event time)."""

    start: datetime | None = None
    end: datetime | None = None
    ticker: str | None = None
    topic: str | None = None
    source: str | None = None
    label: str | None = None


@dataclass(frozen=True)
class Bucket:
    """One time bucket of a series: counts per label and the mean score of its articles."""

    start: datetime
    count: int
    negative: int
    neutral: int
    positive: int
    mean_score: float

    @property
    def negative_share(self) -> float:
        return self.negative / self.count if self.count else 0.0


@dataclass(frozen=True)
class SearchHit:
    article: ScoredArticle
    relevance: float
    highlights: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Facet:
    """A value of a facet field with its volume and tone."""

    value: str
    count: int
    negative: int
    mean_score: float

    @property
    def negative_share(self) -> float:
        return self.negative / self.count if self.count else 0.0


@dataclass
class WriteResult:
    """What a bulk write accepted. Ids in ``failed`` were *not* stored and must not be acked.

    ``failed`` holds what the store refused document by document (a value its mapping cannot
    take, a version conflict). A store that cannot take the request at all raises
    :class:`StoreUnavailable` or :class:`StorePermanentError` instead, so that an outage is
    never mistaken for bad records; a write the outage cut short says in
    ``StoreUnavailable.done`` what it stored before."""

    written: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class DeadLetter:
    """A message that could not become an Article, kept with why and where it came from."""

    reason: str
    payload: bytes
    origin: str
    received_at: datetime


def stored_form(article: ScoredArticle) -> ScoredArticle:
    """The record as both stores keep it: entity verdicts, when it has any, cover exactly its
    tickers (one a ticker the record no longer carries is dropped; a ticker without one gets
    the story verdict, basis ``story``), so a per-ticker aggregation never has to look up
    which of a record's tickers has a verdict. A record without entities (scored before
    entity-level scoring) stays as it is: the story verdict stands in for all its tickers."""
    if not article.entities or [e.ticker for e in article.entities] == article.tickers:
        return article
    own = {e.ticker: e for e in article.entities}
    story = np.array([article.probabilities[label] for label in LABELS])
    return article.model_copy(update={"entities": [own.get(t) or story_verdict(t, story) for t in article.tickers]})


def alert_update(alert: Alert) -> dict:
    """The partial document an alert upsert merges into the stored one (both backends): every
    field, except ``acknowledged`` while it is False and ``acknowledged_by`` while it is None,
    so the writer (the alerter, which learns of an ack late or never) never clears an ack."""
    exclude = {"acknowledged"} if not alert.acknowledged else set()
    if alert.acknowledged_by is None:
        exclude.add("acknowledged_by")
    return alert.model_dump(mode="json", exclude=exclude)


#: Lucene's English stop words (Elasticsearch's ``_english_`` list): dropped from search text by
#: both backends, because Elasticsearch's English analyser never indexes them.
ENGLISH_STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then"
    " there these they this to was will with".split()
)
_TERM = re.compile(r"\w+(?:['’]\w+)*", re.UNICODE)


def search_terms(text: str) -> list[str]:
    """The words of a search, as both stores match them: lower-cased, possessive ``'s`` removed,
    stop words dropped, duplicates removed. Every term must match (AND)."""
    terms: dict[str, None] = {}
    for word in _TERM.findall(text.lower()):
        word = re.sub(r"['’]s$", "", word)
        if word and word not in ENGLISH_STOP_WORDS:
            terms.setdefault(word, None)
    return list(terms)


class StoreError(InfrastructureError):
    """A store could not be reached or refused a whole request: never one record's fault.

    Raised as is it counts as transient (the pipeline pauses and retries); the two subclasses
    say which kind it is where the backend knows."""


class StoreUnavailable(StoreError, Unavailable):
    """Unreachable, timing out, overloaded (429/5xx) or locked: retry with backoff (``done``:
    what a bulk write cut short stored, :class:`~newspulse.errors.Unavailable`)."""


class StorePermanentError(StoreError, PermanentFailure):
    """Retrying cannot help (a rejected or expired credential, a bad mapping): stop."""


@runtime_checkable
class Store(Protocol):
    """Persistence and queries for scored articles, alerts, feedback and dead letters."""

    #: "sqlite" or "elasticsearch": shown by `newspulse store stats` and `store init`.
    backend: str

    # writes ---------------------------------------------------------------------------
    def upsert_articles(self, articles: Sequence[ScoredArticle]) -> WriteResult:
        """Insert or replace by article id (idempotent); report per-document failures."""

    def upsert_alerts(self, alerts: Sequence[Alert]) -> None:
        """Insert or update alerts by alert id, merging into what is stored: the given fields
        replace the stored ones and ``delivery`` merges key by key, except that an alert once
        ``acknowledged`` stays acknowledged, by whoever acknowledged it. An analyst acknowledges in the store from another
        process; the alerter writes from its own state without reading each alert back first,
        so the store is where an ack must not be lost."""

    def add_feedback(self, feedback: Feedback) -> None:
        """Store an analyst's label correction (the latest per article wins)."""

    def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Keep malformed input with its reason (embedded mode's dead-letter queue)."""

    # reads ----------------------------------------------------------------------------
    def get_article(self, article_id: str) -> ScoredArticle | None: ...

    def stored_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are stored: one query for a whole batch, reading no document
        (``newspulse demo`` skips what an earlier run stored without parsing rows twice)."""

    def timeseries(self, flt: Filter, bucket: timedelta) -> list[Bucket]:
        """Counts per label and mean score per bucket, oldest first; empty buckets omitted.

        Buckets are aligned to multiples of ``bucket`` since the Unix epoch (UTC).
        """

    def top_negative(self, flt: Filter, limit: int = 10) -> list[ScoredArticle]:
        """Most negative articles (lowest score; ties: newest first, then id)."""

    def search(self, text: str, flt: Filter, limit: int = 20) -> list[SearchHit]:
        """Full-text search over title, body and summary: all terms must match (English
        stemming); best first; highlights are plain-text snippets with ``**`` around matches."""

    def facets(self, field: FacetField, flt: Filter, limit: int = 10, by: Literal["volume", "negativity"] = "volume", min_count: int = 1) -> list[Facet]:
        """Top values of a field by article count, or by negative share (``min_count`` guards
        against one-article values topping the list)."""

    def iter_articles(self, flt: Filter, batch_size: int = 500) -> Iterator[list[ScoredArticle]]:
        """Every matching article in (published_at, id) order, a batch at a time (re-scoring)."""

    def latest_published_at(self) -> datetime | None: ...

    def list_alerts(self, status: str | None = None, limit: int = 200) -> list[Alert]:
        """Alerts, newest started first."""

    def get_alert(self, alert_id: str) -> Alert | None: ...

    def list_feedback(self) -> list[Feedback]: ...

    def list_dead_letters(self, limit: int = 100) -> list[DeadLetter]: ...

    def stats(self) -> dict:
        """``{"articles", "unique_ids", "by_label": {...}, "alerts", "feedback", "dead_letters",
        "first_published_at", "last_published_at", "model_versions": {...}, "backend"}``"""

    def close(self) -> None: ...
