"""The processing core: raw message → Article → enrich (tags, sentiment, summary) → sinks.

It knows no backend. The source loop (:mod:`newspulse.runner`) hands batches of raw messages
from any source (the embedded queue, a Kafka consumer) to one batch driver, which runs them
through the :class:`Processor` under one retry/dead-letter policy and returns an
:class:`Outcome` per message: stored, dead-lettered with its reason, a duplicate of a later
message in the same batch, or (only when the source asked to stop mid-outage) still to be
retried. The sources differ only in how they fetch and acknowledge (a queue, Kafka offsets);
one :class:`Counters` counts both.

Failures are told apart (see :mod:`newspulse.errors`): a message's own fault is dead-lettered;
an unavailable store or broker pauses the batch and retries it with capped exponential backoff
for as long as it takes (nothing dead-lettered, nothing acknowledged); a permanent failure
(bad credentials, bad mapping) raises :class:`~newspulse.errors.PermanentFailure` so the process
stops.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
from prometheus_client import Counter
from pydantic import ValidationError

from newspulse.entities import EntityScorer, Span
from newspulse.errors import Failure, Unavailable, classify
from newspulse.schema import LABELS, MAX_PUBLISHED_AHEAD, MAX_TAGS_PER_RECORD, Article, EntityVerdict, Evidence, ScoredArticle, check_published_at
from newspulse.store.base import DeadLetter, WriteResult

log = logging.getLogger(__name__)


class Classifier(Protocol):
    """Scores whole articles, and one company's mentions for its entity-level verdict. Rows of
    the results are P(negative), P(neutral), P(positive)."""

    version: str

    def score_articles(self, articles: Sequence[Article]) -> np.ndarray: ...

    def score_mentions(self, items: Sequence[tuple[str, Sequence[Span]]]) -> np.ndarray:
        """Per ``(text, spans)``: the verdict about the entity named at those spans of the text."""


@runtime_checkable
class ExplainingClassifier(Protocol):
    """A classifier that also says which passages drove each story's verdict (the production
    model does, from the same forward pass); others leave ``explanation`` empty."""

    def explain_articles(self, articles: Sequence[Article]) -> tuple[np.ndarray, list[list[Evidence]]]: ...


@runtime_checkable
class TieredClassifier(Protocol):
    """A classifier that also says which serving tier decided each story (the production
    cascade does: ``fast`` or ``accurate``); the record keeps it in ``decided_by``."""

    def explain_articles_tiered(self, articles: Sequence[Article]) -> tuple[np.ndarray, list[list[Evidence]], list[str]]: ...


class Summarizer(Protocol):
    def summarize(self, articles: Sequence[Article]) -> list[str]: ...


class Tagger(Protocol):
    """Adds tickers and topics an article lacks (the crawler tags at ingest; replays may not)."""

    def tag_many(self, articles: Sequence[Article]) -> list[Article]:
        """Tagged copies in input order, one call per batch; articles already tagged at ingest
        come back as they are."""


class ArticleSink(Protocol):
    """Where scored articles go (a store, the news.scored topic)."""

    def write(self, articles: Sequence[ScoredArticle]) -> WriteResult: ...


class DeadLetterSink(Protocol):
    def dead_letter(self, letters: Sequence[DeadLetter]) -> None: ...


class Observer(Protocol):
    """Sees every batch after it is stored (the in-process alerter)."""

    def observe(self, articles: Sequence[ScoredArticle]) -> None: ...

    def flush(self) -> None:
        """The stream is finite and has ended: conclude whatever waits for later data."""

    def close(self) -> None:
        """Release resources; called once when the pipeline stops."""



MESSAGES = Counter("newspulse_pipeline_messages", "Messages by final fate: stored, dead_lettered, duplicate, released.", ["source", "fate"])


class Fate(str, Enum):
    """What became of one message. Every message gets exactly one final fate, or stays queued
    or uncommitted (``retry``) for the source to hand out again."""

    stored = "stored"
    dead_lettered = "dead_lettered"
    duplicate = "duplicate"  # a later message of the same batch has the same id and wins
    retry = "retry"


@dataclass(frozen=True)
class RawMessage:
    """Bytes as received, with where they came from (for dead letters and offset commits).

    ``article`` is the message already validated (an Article submitted in-process, or a message
    parsed by an earlier attempt), so nothing is parsed twice.
    """

    payload: bytes | str | dict | None
    origin: str = "embedded"
    key: object = None
    article: Article | None = None


@dataclass(frozen=True)
class Outcome:
    """One message's fate after a pass through the Processor.

    ``transient`` marks a retry that is the infrastructure's fault (a store or broker was
    unavailable): it never counts towards dead-lettering. Other retries (a sink refused the
    document) count as attempts.
    """

    message: RawMessage
    fate: Fate
    reason: str = ""
    article: ScoredArticle | None = None
    transient: bool = False


class Classified(NamedTuple):
    """A batch after tagging and classifying, in input order: the tagged articles, the story
    probabilities, each article's entity verdicts, its story's explanation and the tier that
    decided the story."""

    articles: list[Article]
    probabilities: np.ndarray
    entities: list[list[EntityVerdict]]
    explanations: list[list[Evidence]]
    tiers: list[str]


@dataclass
class Prepared:
    """A batch after parsing, tagging and classifying (:meth:`Processor.prepare`), so a source
    can classify the next batch while this one is summarised and written (:class:`newspulse.runner.ScoringStage`).

    ``messages`` carry their validated Article (a retry never parses again); ``error`` is what
    tagging or classifying raised, left for the :class:`newspulse.runner.BatchDriver` to handle like any failed
    attempt. ``scored`` is filled once, by the first :meth:`Processor.commit` that summarises."""

    messages: list[RawMessage]
    outcomes: list[Outcome | None]
    order: list[int] = field(default_factory=list)
    classified: Classified | None = None
    scored: list[ScoredArticle] = field(default_factory=list)
    poison: dict[int, str] = field(default_factory=dict)
    error: Exception | None = None
    seconds: float = 0.0


@dataclass
class BatchResult:
    """The outcome of each message of a batch, in input order."""

    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def stored(self) -> list[ScoredArticle]:
        return [o.article for o in self.outcomes if o.fate is Fate.stored and o.article is not None]

    def having(self, fate: Fate) -> list[Outcome]:
        return [o for o in self.outcomes if o.fate is fate]

    @property
    def done(self) -> bool:
        """True when no message is left to retry (the source may acknowledge the batch)."""
        return not self.having(Fate.retry)


@dataclass
class Counters:
    """What a source did with its messages; both modes count alike.

    ``received == stored + dead_lettered + duplicate + released + pending`` at any moment:
    ``released`` are messages handed back unacknowledged (Kafka records the group will redeliver),
    ``pending`` those still queued or in flight.
    """

    source: str = "embedded"
    received: int = 0
    stored: int = 0
    dead_lettered: int = 0
    duplicate: int = 0
    released: int = 0
    retried: int = 0
    infrastructure_retries: int = 0
    batches: int = 0
    commits: int = 0
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def pending(self) -> int:
        return self.received - self.stored - self.dead_lettered - self.duplicate - self.released

    def receive(self, n: int = 1) -> None:
        with self._lock:
            self.received += n

    def settle(self, outcomes: Iterable[Outcome]) -> None:
        """Count acknowledged outcomes (a ``retry`` outcome is never acknowledged)."""
        counts: dict[Fate, int] = {}
        for o in outcomes:
            counts[o.fate] = counts.get(o.fate, 0) + 1
        if Fate.retry in counts:
            raise ValueError("a message still to be retried cannot be acknowledged")
        with self._lock:
            self.stored += counts.get(Fate.stored, 0)
            self.dead_lettered += counts.get(Fate.dead_lettered, 0)
            self.duplicate += counts.get(Fate.duplicate, 0)
        for fate, n in counts.items():
            MESSAGES.labels(self.source, fate.value).inc(n)

    def release(self, n: int) -> None:
        """Messages handed back unacknowledged (their next delivery is counted as received again)."""
        with self._lock:
            self.released += n
        MESSAGES.labels(self.source, "released").inc(n)

    def note_error(self, text: str) -> None:
        with self._lock:
            self.errors = (self.errors + [text])[-20:]

    def summary(self) -> dict[str, int]:
        return {
            "received": self.received,
            "stored": self.stored,
            "dead_lettered": self.dead_lettered,
            "duplicate": self.duplicate,
            "released": self.released,
            "pending": self.pending,
            "retried": self.retried,
            "infrastructure_retries": self.infrastructure_retries,
        }


def parse_message(msg: RawMessage, *, max_published_ahead: timedelta = MAX_PUBLISHED_AHEAD, max_tags: int = MAX_TAGS_PER_RECORD) -> Article:
    """Turn one raw message into a validated Article or raise ValueError saying why not.

    An Article the message already carries was validated where it was made; only its date and
    its number of tickers and topics are checked again, against ``max_published_ahead`` and
    ``max_tags`` (the processor's settings)."""
    if msg.article is not None:
        try:
            check_published_at(msg.article.published_at, ahead=max_published_ahead)
        except ValueError as err:
            raise ValueError(f"invalid article: published_at: {err}") from None
        return check_tag_counts(msg.article, max_tags)
    payload = msg.payload
    if payload is None:
        raise ValueError("empty record (null value)")
    if isinstance(payload, (bytes, bytearray)):
        try:
            payload = bytes(payload).decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"not UTF-8: {err}") from None
    try:
        if isinstance(payload, str):
            try:
                payload = json.loads(payload)
            except json.JSONDecodeError as err:
                raise ValueError(f"malformed JSON: {err}") from None
        if not isinstance(payload, dict):
            raise ValueError(f"expected a JSON object, got {type(payload).__name__}")
        try:
            return check_tag_counts(Article.model_validate(payload, context={"max_published_ahead": max_published_ahead}), max_tags)
        except ValidationError as err:
            details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in err.errors())
            raise ValueError(f"invalid article: {details}") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None


def check_tag_counts(article: Article, limit: int) -> Article:
    """``article`` if it carries at most ``limit`` tickers and at most ``limit`` topics, else a
    ValueError naming the field: a record listing thousands of symbols is a scraping accident,
    and every symbol is an alert scope the alerter would judge in every window."""
    for name in ("tickers", "topics"):
        count = len(getattr(article, name))
        if count > limit:
            raise ValueError(f"invalid article: {name}: {count:,} values, more than the {limit:,} a record may carry (NEWSPULSE_MAX_TAGS_PER_RECORD)")
    return article


def payload_bytes(payload: bytes | str | dict | None) -> bytes:
    """The original message as bytes, for a dead letter (a null Kafka value becomes b"")."""
    if payload is None:
        return b""
    if isinstance(payload, dict):
        payload = json.dumps(payload, default=str)
    if isinstance(payload, str):
        payload = payload.encode("utf-8", "replace")
    return bytes(payload)


def to_dead_letter(msg: RawMessage, reason: str) -> DeadLetter:
    """The one place a dead letter is built: the original bytes, the reason and the origin."""
    payload = msg.payload if msg.payload is not None or msg.article is None else msg.article.model_dump_json()
    return DeadLetter(reason=reason, payload=payload_bytes(payload), origin=msg.origin, received_at=datetime.now(timezone.utc))


class Processor:
    """Validates, enriches and stores batches. One instance per worker thread or process."""

    def __init__(
        self,
        classifier: Classifier,
        summarizer: Summarizer,
        sinks: Sequence[ArticleSink],
        dead_letters: DeadLetterSink,
        tagger: Tagger | None = None,
        observers: Sequence[Observer] = (),
        max_published_ahead: timedelta = MAX_PUBLISHED_AHEAD,
        max_tags: int = MAX_TAGS_PER_RECORD,
        entities: EntityScorer | None = None,
    ) -> None:
        """``entities``: how tickers get their own verdicts; without one (or without its
        mention finder) every ticker gets the story verdict (basis ``story``)."""
        self.classifier = classifier
        self.summarizer = summarizer
        self.sinks = list(sinks)
        self.dead_letters = dead_letters
        self.tagger = tagger
        self.observers = list(observers)
        self.max_published_ahead = max_published_ahead
        self.max_tags = max_tags
        self.entities = entities or EntityScorer(None)

    def enrich(self, articles: Sequence[Article]) -> list[ScoredArticle]:
        """Tag, score and summarise; the classifier sees whole articles, batched."""
        return self._summarise(self._classify(articles))

    def _classify(self, articles: Sequence[Article]) -> Classified:
        """Tag (once per batch), classify whole articles (with their explanation when the
        classifier gives one), then each ticker's mentions (one ``score_mentions`` call per
        batch), batched."""
        tagged = self.tagger.tag_many(articles) if self.tagger is not None else list(articles)
        tiers = ["fast"] * len(tagged)
        if isinstance(self.classifier, TieredClassifier):
            probs, explanations, tiers = self.classifier.explain_articles_tiered(tagged)
        elif isinstance(self.classifier, ExplainingClassifier):
            probs, explanations = self.classifier.explain_articles(tagged)
        else:
            probs, explanations = self.classifier.score_articles(tagged), [[] for _ in tagged]
        return Classified(tagged, probs, self.entities.verdicts(tagged, probs, self.classifier), explanations, tiers)

    def _summarise(self, batch: Classified) -> list[ScoredArticle]:
        summaries = self.summarizer.summarize(batch.articles)
        return [
            ScoredArticle.from_article(
                a,
                dict(zip(LABELS, (float(p) for p in row))),
                summary=s,
                model_version=self.classifier.version,
                entities=verdicts,
                explanation=why,
                decided_by=tier,
            )
            for a, row, s, verdicts, why, tier in zip(batch.articles, batch.probabilities, summaries, batch.entities, batch.explanations, batch.tiers)
        ]

    def process(self, messages: Sequence[RawMessage]) -> BatchResult:
        """Process one micro-batch: :meth:`prepare`, then :meth:`commit`; one :class:`Outcome`
        per message, in order. Raises what enrichment raised, for the driver to handle."""
        prepared = self.prepare(messages)
        if prepared.error is not None:
            raise prepared.error
        return self.commit(prepared)

    def prepare(self, messages: Sequence[RawMessage]) -> Prepared:
        """The first half of a batch, no I/O: parse each message once (its Article is attached
        to it), collapse duplicate ids (the last one wins), tag and classify."""
        t0 = time.perf_counter()
        attached: list[RawMessage] = list(messages)
        outcomes: list[Outcome | None] = [None] * len(messages)
        parsed: dict[int, Article] = {}
        latest: dict[str, int] = {}
        poison: dict[int, str] = {}
        for i, msg in enumerate(messages):
            try:
                art = parse_message(msg, max_published_ahead=self.max_published_ahead, max_tags=self.max_tags)
            except ValueError as err:
                poison[i] = str(err)
                continue
            if msg.article is not art:
                attached[i] = replace(msg, article=art)
            if art.id in latest:  # the same id twice in a batch: the last one wins
                j = latest[art.id]
                outcomes[j] = Outcome(attached[j], Fate.duplicate, f"superseded by a later message with the same id {art.id} in its batch")
                del parsed[j]
            latest[art.id] = i
            parsed[i] = art
        prepared = Prepared(messages=attached, outcomes=outcomes, order=list(parsed), poison=poison)
        if parsed:
            try:
                prepared.classified = self._classify([parsed[i] for i in prepared.order])
            except Exception as err:  # noqa: BLE001 - handed to the driver with the parsed messages
                prepared.error = err
        prepared.seconds = time.perf_counter() - t0
        return prepared

    def commit(self, prepared: Prepared) -> BatchResult:
        """The second half: summarise (once, kept for retries), write the scored articles to
        every sink, dead-letter the bad messages, then show the stored batch to the observers
        (the alerter), once per batch. The summariser runs here, beside the next batch's
        classification, because the two together keep both cores busier than one after the
        other (``bench/pipeline.py``).

        Bad messages are dead-lettered and good ones always go on. A sink or dead-letter sink
        that is unavailable leaves its messages to retry (``transient``), only those it did not
        store when the outage cut its write short; a document a sink refuses is left to retry
        as an attempt. Anything else raises, for the driver to handle.
        Articles are written before dead letters: rewriting an article is idempotent,
        a dead letter written twice is a duplicate.
        """
        t0 = time.perf_counter()
        messages, outcomes = prepared.messages, list(prepared.outcomes)
        if prepared.classified is not None and prepared.classified.articles and not prepared.scored:
            prepared.scored = self._summarise(prepared.classified)
        if prepared.scored:
            try:
                refused, unavailable = self._write(prepared.scored)
            except Exception as err:
                if classify(err) is not Failure.transient:
                    raise
                reason = f"{type(err).__name__}: {err}"
                for i in prepared.order:
                    outcomes[i] = Outcome(messages[i], Fate.retry, reason, transient=True)
            else:
                for i, art in zip(prepared.order, prepared.scored):
                    if art.id in unavailable:
                        outcomes[i] = Outcome(messages[i], Fate.retry, unavailable[art.id], transient=True)
                    elif art.id in refused:
                        outcomes[i] = Outcome(messages[i], Fate.retry, f"refused by a sink: {refused[art.id]}")
                    else:
                        outcomes[i] = Outcome(messages[i], Fate.stored, article=art)
        if prepared.poison:
            try:
                self.dead_letters.dead_letter([to_dead_letter(messages[i], reason) for i, reason in prepared.poison.items()])
            except Exception as err:
                if classify(err) is not Failure.transient:
                    raise
                for i in prepared.poison:
                    outcomes[i] = Outcome(messages[i], Fate.retry, f"dead-letter sink unavailable: {type(err).__name__}: {err}", transient=True)
            else:
                for i, reason in prepared.poison.items():
                    outcomes[i] = Outcome(messages[i], Fate.dead_lettered, reason)
                    log.warning("dead-lettered message from %s: %s", messages[i].origin, reason)
        result = BatchResult(outcomes=[o for o in outcomes if o is not None])
        if result.stored:
            for obs in self.observers:
                try:
                    obs.observe(result.stored)
                except Exception:  # the articles are stored: an observer's failure must not make them retries or dead letters
                    log.exception("%s failed on a batch of %d stored articles; they stay stored", type(obs).__name__, len(result.stored))
        result.seconds = prepared.seconds + time.perf_counter() - t0
        return result

    def _write(self, scored: list[ScoredArticle]) -> tuple[dict[str, str], dict[str, str]]:
        """Write to every sink; the ids some sink refused, and the ids some sink could not take
        because an outage cut its write short, each with the reason. Those are not handed to the
        later sinks: the driver's retry writes them to every sink (again to the earlier ones,
        where an upsert by id overwrites), and the articles every sink took are not sent again.
        A sink that took nothing raises."""
        refused: dict[str, str] = {}
        unavailable: dict[str, str] = {}
        for sink in self.sinks:
            pending = [a for a in scored if a.id not in unavailable]
            if not pending:
                break
            try:
                written: WriteResult = sink.write(pending)
            except Unavailable as err:
                if err.done is None:
                    raise
                written = err.done
                stored = set(written.written)
                reason = f"{type(err).__name__}: {err}"
                unavailable.update((a.id, reason) for a in pending if a.id not in stored and a.id not in written.failed)
            refused.update(written.failed)
        return refused, unavailable

    def dead_letter(self, outcomes: Sequence[tuple[RawMessage, str]]) -> list[Outcome]:
        """Dead-letter messages the driver gave up on; raises if the sink is unavailable."""
        self.dead_letters.dead_letter([to_dead_letter(msg, reason) for msg, reason in outcomes])
        for msg, reason in outcomes:
            log.warning("dead-lettered message from %s: %s", msg.origin, reason)
        return [Outcome(msg, Fate.dead_lettered, reason) for msg, reason in outcomes]

    def close(self, end_of_stream: bool = False) -> None:
        """Stop the observers. ``end_of_stream`` (a finished replay, not a stopped live stream)
        lets them conclude what waits for later data: the alerter closes its last windows, which
        a live stream must not do on shutdown because they are still filling."""
        for observer in self.observers:
            if end_of_stream:
                observer.flush()
            observer.close()
