"""The records that flow through NewsPulse, validated with pydantic and sent as JSON.

Every message on the wire (Kafka topics, the embedded queue, the store) is one of these
models serialised with ``model_dump_json``. ``SCHEMA_VERSION`` travels in each record so a
consumer can refuse or migrate records written by a newer producer instead of misreading them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

#: Version 2 adds ``ScoredArticle.entities`` and ``.explanation``. Readers accept every version
#: up to their own: a version-1 record reads with both lists empty (scored before entity-level
#: scoring; ``newspulse model rescore`` fills them). A record newer than the reader is refused.
SCHEMA_VERSION = 2

#: Upper bound on an article body; longer bodies are rejected (dead-lettered), not truncated
#: silently, because a 5 MB "article" is almost always a scraping accident.
MAX_BODY_CHARS = 1_000_000

#: Default upper bound on the tickers, and on the topics, of one record
#: (``NEWSPULSE_MAX_TAGS_PER_RECORD``); a record with more is dead-lettered with the reason.
MAX_TAGS_PER_RECORD = 200

#: Sanity bounds on ``published_at``. A story dated before 1900 or more than a day ahead of this
#: machine's clock is a data error (a year-9999 placeholder, a mangled time zone): it would
#: move every "latest" window into the future, so it is dead-lettered with the reason instead.
#: A day covers any time-zone mislabelling and clock skew between publishers and this host;
#: the processors take theirs from ``NEWSPULSE_MAX_PUBLISHED_AHEAD_HOURS`` through the
#: validation context ``{"max_published_ahead": timedelta}``.
EARLIEST_PUBLISHED_AT = datetime(1900, 1, 1, tzinfo=timezone.utc)
MAX_PUBLISHED_AHEAD = timedelta(days=1)

LABELS: tuple[str, str, str] = ("negative", "neutral", "positive")

_TRACKING_PREFIXES = ("utm_", "mc_", "ga_")
_TRACKING_KEYS = {"fbclid", "gclid", "dclid", "msclkid", "yclid", "ref", "cmpid", "ncid", "smid", "s_cid"}


class Label(str, Enum):
    """Sentiment classes, in the fixed order used for probability vectors."""

    negative = "negative"
    neutral = "neutral"
    positive = "positive"


def canonical_url(url: str) -> str:
    """Normalise a URL so that the same story reached by different links gets one id.

    Lower-cases scheme and host, drops the fragment, default ports, tracking parameters
    (utm_*, fbclid, ...) and a trailing slash, and sorts the remaining query parameters.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    if port and not ((scheme == "http" and port == 80) or (scheme == "https" and port == 443)):
        host = f"{host}:{port}"
    query = sorted(
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not k.lower().startswith(_TRACKING_PREFIXES) and k.lower() not in _TRACKING_KEYS
    )
    path = parts.path or "/"
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/")
    return urlunsplit((scheme, host, path, urlencode(query), ""))


def article_id(*, url: str | None, source: str, title: str, published_at: datetime) -> str:
    """Stable id: a hash of the canonical URL, or of source + title + time when there is no URL.

    Keying every write by this id is what makes replays and redeliveries idempotent.
    """
    if url:
        key = "url:" + canonical_url(url)
    else:
        key = "\x1f".join(("nourl", source.strip().lower(), " ".join(title.split()).lower(), to_utc(published_at).isoformat()))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]


def to_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def epoch_ms(value: datetime) -> int:
    """Milliseconds since the epoch, the form both stores index times in (naive = UTC)."""
    return int(to_utc(value).timestamp() * 1000)


def from_epoch_ms(ms: int | float) -> datetime:
    """The UTC datetime of :func:`epoch_ms`'s value."""
    return datetime.fromtimestamp(int(ms) / 1000, tz=timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def check_published_at(value: datetime, *, ahead: timedelta = MAX_PUBLISHED_AHEAD) -> None:
    """Raise ValueError when ``value`` lies before 1900 or more than ``ahead`` in the future."""
    value = to_utc(value)
    if value < EARLIEST_PUBLISHED_AT:
        raise ValueError(f"{value.isoformat()} is before {EARLIEST_PUBLISHED_AT.year}")
    latest = utcnow() + ahead
    if value > latest:
        raise ValueError(f"{value.isoformat()} is more than {ahead.total_seconds() / 3600:g} h in the future (latest accepted now: {latest.isoformat(timespec='seconds')})")


#: C0 and C1 control characters and the Unicode line and paragraph separators. None belongs in a
#: ticker, topic or source, and each can break a line where the value is shown: a ``\r\n`` in a
#: ticker forges a header line in an alert e-mail or a line in a text log. Records carrying one
#: are rejected (dead-lettered with the reason) rather than escaped, because an escaped value
#: would be a different ticker that matches no rule, watchlist or filter.
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def reject_control_chars(field: str, value: str) -> str:
    """``value`` unchanged, or ValueError naming the field and the first control character."""
    found = _CONTROL_CHARS.search(value)
    if found:
        raise ValueError(f"{field} {value!r} contains control character U+{ord(found.group()):04X}")
    return value


def _clean_symbols(values: Any) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = values.replace(",", ";").split(";")
    elif not isinstance(values, (list, tuple, set)):
        # ValueError, not the TypeError iterating would raise: pydantic reports it as this record's
        # validation error, so the record is dead-lettered at once instead of failing its batch
        raise ValueError(f"expected a list of symbols or a ';'-separated string, got {type(values).__name__}")
    seen: dict[str, None] = {}
    for v in values:
        s = str(v).strip()
        if s:
            seen.setdefault(s, None)
    return list(seen)


class Article(BaseModel):
    """A news story as ingested: before any model has looked at it."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    schema_version: int = SCHEMA_VERSION
    id: str = ""
    published_at: datetime
    source: Annotated[str, Field(min_length=1, max_length=200)]
    title: Annotated[str, Field(max_length=2000)]
    body: Annotated[str, Field(max_length=MAX_BODY_CHARS)] = ""
    url: str | None = None
    tickers: list[str] = Field(default_factory=list)
    topics: list[str] = Field(default_factory=list)
    language: str | None = None
    novelty: float | None = None

    @field_validator("published_at")
    @classmethod
    def _utc(cls, v: datetime, info: ValidationInfo) -> datetime:
        v = to_utc(v)
        if cls is Article:  # checked on the way in; stored and scored records are read back as they are
            check_published_at(v, ahead=(info.context or {}).get("max_published_ahead", MAX_PUBLISHED_AHEAD))
        return v

    @field_validator("tickers", "topics", mode="before")
    @classmethod
    def _symbols(cls, v: Any, info: ValidationInfo) -> list[str]:
        symbols = _clean_symbols(v)
        if cls is Article:  # checked on the way in, like published_at: stored records read back as they are
            for symbol in symbols:
                reject_control_chars("ticker" if info.field_name == "tickers" else "topic", symbol)
        return symbols

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        return reject_control_chars("source", v) if cls is Article else v

    @field_validator("url", mode="before")
    @classmethod
    def _empty_url(cls, v: Any) -> Any:
        return v or None

    @model_validator(mode="after")
    def _check(self) -> "Article":
        if self.schema_version > SCHEMA_VERSION:
            raise ValueError(f"schema_version {self.schema_version} is newer than this reader ({SCHEMA_VERSION})")
        if not self.title and not self.body:
            raise ValueError("article has neither title nor body text")
        expected = article_id(url=self.url, source=self.source, title=self.title, published_at=self.published_at)
        if not self.id:
            self.id = expected
        return self

    @property
    def text(self) -> str:
        """Title and body as one text, the title first (it carries the most signal)."""
        return f"{self.title}\n\n{self.body}".strip() if self.body else self.title


def verdict(probabilities: Mapping[str, float]) -> tuple[dict[Label, float], Label, float]:
    """Probabilities by label, the argmax label and the score P(positive) − P(negative) (clamped
    to [−1, 1]): how every verdict, a story's or a company's, is read from a distribution."""
    probs = {Label(k): float(v) for k, v in probabilities.items()}
    label = max(probs, key=lambda k: probs[k])
    return probs, label, max(-1.0, min(1.0, probs[Label.positive] - probs[Label.negative]))


class Evidence(BaseModel):
    """One passage behind a verdict: where it is, what the model said of it, how much it counted.

    ``start``/``end`` are character offsets into :attr:`Article.text` (the title, a blank line,
    the body), so a reader can highlight the passage in the story as stored."""

    model_config = ConfigDict(extra="ignore")

    start: Annotated[int, Field(ge=0)]
    end: Annotated[int, Field(ge=0)]
    text: str
    label: Label
    score: Annotated[float, Field(ge=-1.0, le=1.0)]
    weight: Annotated[float, Field(ge=0.0)] = 0.0

    @model_validator(mode="after")
    def _span(self) -> "Evidence":
        if self.end < self.start:
            raise ValueError(f"evidence span ends ({self.end}) before it starts ({self.start})")
        return self


class EntityVerdict(BaseModel):
    """The verdict about one company (ticker) in one story.

    ``basis`` says where it comes from: ``"mentions"`` when sentences naming the company were
    scored for it, ``"story"`` when the ticker was tagged but never named in the text, so the
    story's own verdict stands in (and says so)."""

    model_config = ConfigDict(extra="ignore")

    ticker: Annotated[str, Field(min_length=1)]
    label: Label
    probabilities: dict[Label, float]
    score: Annotated[float, Field(ge=-1.0, le=1.0)]
    basis: Literal["mentions", "story"]
    mentions: Annotated[int, Field(ge=0)] = 0
    evidence: list[Evidence] = Field(default_factory=list)


class ScoredArticle(Article):
    """An Article with the classifier's verdict and a summary attached."""

    label: Label
    probabilities: dict[Label, float]
    score: Annotated[float, Field(ge=-1.0, le=1.0)]
    summary: str = ""
    model_version: str
    processed_at: datetime = Field(default_factory=utcnow)
    #: One verdict per tagged ticker (empty for records scored before entity-level scoring).
    entities: list[EntityVerdict] = Field(default_factory=list)
    #: The passages that drove the story-level verdict (title, body sentences or chunks).
    explanation: list[Evidence] = Field(default_factory=list)
    #: Which serving tier decided the story verdict: ``fast`` (every record scored without an
    #: accurate-tier model, and the confident ones with it) or ``accurate`` (the cascade's
    #: second opinion on the fast tier's least-confident stories; models/sentiment/predict.py).
    decided_by: Literal["fast", "accurate"] = "fast"

    @field_validator("processed_at")
    @classmethod
    def _utc_processed(cls, v: datetime) -> datetime:
        return to_utc(v)

    @model_validator(mode="after")
    def _probabilities(self) -> "ScoredArticle":
        missing = set(Label) - set(self.probabilities)
        if missing:
            raise ValueError(f"probabilities lack {sorted(m.value for m in missing)}")
        total = sum(self.probabilities.values())
        if abs(total - 1.0) > 1e-3:
            raise ValueError(f"probabilities sum to {total:.4f}, not 1")
        return self

    @classmethod
    def from_article(
        cls,
        article: Article,
        probabilities: dict[str, float],
        *,
        summary: str,
        model_version: str,
        entities: list[EntityVerdict] | None = None,
        explanation: list[Evidence] | None = None,
        decided_by: str = "fast",
    ) -> "ScoredArticle":
        """Attach a verdict: label = argmax, score = P(positive) − P(negative), with the entity
        verdicts and the story's explanation (built and validated by their makers).

        The article was validated when it was parsed, so its fields are taken as they are
        (not dumped to a dict and validated again); the verdict's own checks still run. The
        record is written in this reader's schema version, whatever the article's was."""
        probs, label, score = verdict(probabilities)
        scored = cls.model_construct(
            **({name: getattr(article, name) for name in Article.model_fields} | {"schema_version": SCHEMA_VERSION}),
            entities=list(entities or []),
            explanation=list(explanation or []),
            decided_by=decided_by,
            label=label,
            probabilities=probs,
            score=score,
            summary=str(summary),
            model_version=str(model_version),
            processed_at=utcnow(),
        )
        return scored._probabilities()


class AlertStatus(str, Enum):
    pending = "pending"
    firing = "firing"
    resolved = "resolved"


class DriverArticle(BaseModel):
    """One of the stories that pushed an alert over its threshold."""

    id: str
    title: str
    score: float
    published_at: datetime | None = None


class Alert(BaseModel):
    """A negative-sentiment spike on one scope (market, ticker:X, topic:Y, source:Z)."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = SCHEMA_VERSION
    id: str
    rule: str = "default"
    scope: str
    status: AlertStatus
    severity: str = "warning"
    window_minutes: int
    started_at: datetime
    updated_at: datetime
    resolved_at: datetime | None = None
    fired_at: datetime | None = None
    flapping: bool = False
    magnitude: float
    baseline: float
    value: float
    volume: int
    drivers: list[DriverArticle] = Field(default_factory=list)
    acknowledged: bool = False
    #: Who acknowledged it. Kept apart from ``message``, which the alerter rewrites every window.
    acknowledged_by: str | None = None
    delivery: dict[str, str] = Field(default_factory=dict)
    message: str = ""

    @field_validator("started_at", "updated_at", "resolved_at", "fired_at")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return to_utc(v) if v is not None else None


class Feedback(BaseModel):
    """An analyst's correction of an article's label; the retraining DAG learns from these."""

    article_id: str
    label: Label
    text: str
    analyst: str = "analyst"
    created_at: datetime = Field(default_factory=utcnow)
    note: str = ""

    @field_validator("created_at")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return to_utc(v)
