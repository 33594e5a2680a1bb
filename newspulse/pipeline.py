"""The processing core: raw message → Article → enrich (tags, sentiment, summary) → sinks.

It knows no backend. Sources (the embedded queue, a Kafka consumer) hand it batches of raw
messages; it returns which messages were stored, which were dead-lettered and which failed, so
the source can commit (Kafka offsets) only what a sink accepted.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

import numpy as np
from pydantic import ValidationError

from newspulse.schema import LABELS, Article, ScoredArticle
from newspulse.store.base import DeadLetter, WriteResult

log = logging.getLogger(__name__)


class Classifier(Protocol):
    """Scores whole articles. Rows of the result are P(negative), P(neutral), P(positive)."""

    version: str

    def score_articles(self, articles: Sequence[Article]) -> np.ndarray: ...


class Summarizer(Protocol):
    def summarize(self, articles: Sequence[Article]) -> list[str]: ...


class Tagger(Protocol):
    """Adds tickers and topics an article lacks (the crawler tags at ingest; replays may not)."""

    def tag(self, article: Article) -> Article: ...


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


@dataclass(frozen=True)
class RawMessage:
    """Bytes as received, with where they came from (for dead letters and offset commits)."""

    payload: bytes | str | dict
    origin: str = "embedded"
    key: object = None


@dataclass
class BatchResult:
    stored: list[ScoredArticle] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every message is either stored or dead-lettered (safe to commit)."""
        return not self.failed


def parse_message(msg: RawMessage) -> Article:
    """Turn one raw message into a validated Article or raise ValueError saying why not."""
    payload = msg.payload
    if isinstance(payload, (bytes, bytearray)):
        try:
            payload = bytes(payload).decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"not UTF-8: {err}") from None
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except json.JSONDecodeError as err:
            raise ValueError(f"malformed JSON: {err}") from None
    if not isinstance(payload, dict):
        raise ValueError(f"expected a JSON object, got {type(payload).__name__}")
    try:
        return Article.model_validate(payload)
    except ValidationError as err:
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in err.errors())
        raise ValueError(f"invalid article: {details}") from None


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
        on_batch: Callable[[BatchResult], None] | None = None,
    ) -> None:
        self.classifier = classifier
        self.summarizer = summarizer
        self.sinks = list(sinks)
        self.dead_letters = dead_letters
        self.tagger = tagger
        self.observers = list(observers)
        self.on_batch = on_batch

    def enrich(self, articles: Sequence[Article]) -> list[ScoredArticle]:
        """Tag, score and summarise; the classifier sees whole articles, batched."""
        if self.tagger is not None:
            articles = [self.tagger.tag(a) for a in articles]
        probs = self.classifier.score_articles(articles)
        summaries = self.summarizer.summarize(articles)
        return [
            ScoredArticle.from_article(
                a,
                dict(zip(LABELS, (float(p) for p in row))),
                summary=s,
                model_version=self.classifier.version,
            )
            for a, row, s in zip(articles, probs, summaries)
        ]

    def process(self, messages: Sequence[RawMessage]) -> BatchResult:
        """Process one micro-batch. Bad messages are dead-lettered; good ones always go on."""
        t0 = time.perf_counter()
        result = BatchResult()
        unique: dict[str, Article] = {}
        for msg in messages:
            try:
                art = parse_message(msg)
            except ValueError as err:
                result.dead.append(_dead(msg, str(err)))
                continue
            unique[art.id] = art  # the same id twice in a batch: last one wins
        if result.dead:
            self.dead_letters.dead_letter(result.dead)
            for d in result.dead:
                log.warning("dead-lettered message from %s: %s", d.origin, d.reason)
        if unique:
            scored = self.enrich(list(unique.values()))
            accepted = set(unique)
            for sink in self.sinks:
                written = sink.write(scored)
                for art_id, reason in written.failed.items():
                    result.failed[art_id] = reason
                accepted -= set(written.failed)
            result.stored = [s for s in scored if s.id in accepted]
            for obs in self.observers:
                obs.observe(result.stored)
        result.seconds = time.perf_counter() - t0
        if self.on_batch is not None:
            self.on_batch(result)
        return result


def payload_bytes(payload: bytes | str | dict) -> bytes:
    """The original message as bytes, for a dead letter."""
    if isinstance(payload, dict):
        payload = json.dumps(payload, default=str)
    if isinstance(payload, str):
        payload = payload.encode("utf-8", "replace")
    return bytes(payload)


def _dead(msg: RawMessage, reason: str) -> DeadLetter:
    return DeadLetter(reason=reason, payload=payload_bytes(msg.payload), origin=msg.origin, received_at=datetime.now(timezone.utc))
