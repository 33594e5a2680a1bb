"""Embedded mode: an in-process bounded queue feeding the processing core, and the wiring of
the real components (classifier, summariser, tagger, store, alerter) that every mode shares.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from newspulse.pipeline import ArticleSink, BatchResult, DeadLetterSink, Observer, Processor, RawMessage, parse_message, payload_bytes
from newspulse.schema import Article, ScoredArticle
from newspulse.settings import Settings
from newspulse.store.base import DeadLetter, Store, WriteResult

log = logging.getLogger(__name__)


class StoreSink:
    """Adapts a Store to the pipeline's article and dead-letter sinks."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def write(self, articles: Sequence[ScoredArticle]) -> WriteResult:
        return self.store.upsert_articles(articles)

    def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        self.store.add_dead_letters(letters)


def build_processor(
    settings: Settings,
    store: Store,
    *,
    sinks_extra: Sequence[ArticleSink] = (),
    dead_letters: DeadLetterSink | None = None,
    observers: Sequence[Observer] | None = None,
    on_batch: Callable[[BatchResult], None] | None = None,
) -> Processor:
    """The production Processor: real classifier, summariser and tagger, writing to ``store``.

    ``observers=None`` runs the alerter in-process; pass ``()`` where a separate alerter service
    consumes news.scored instead.
    """
    from ingest.tagging import build_tagger
    from models.predict import load_classifier
    from models.summarize import build_summarizer

    sink = StoreSink(store)
    if observers is None:
        from newspulse.alerts import build_alerter

        observers = [build_alerter(settings, store)]
    return Processor(
        classifier=load_classifier(settings),
        summarizer=build_summarizer(settings),
        sinks=[sink, *sinks_extra],
        dead_letters=dead_letters or sink,
        tagger=build_tagger(),
        observers=observers,
        on_batch=on_batch,
    )


@dataclass
class PipelineCounters:
    submitted: int = 0
    stored: int = 0
    dead_lettered: int = 0
    failed: int = 0
    batches: int = 0
    errors: list[str] = field(default_factory=list)


_STOP = object()


class EmbeddedPipeline:
    """Bounded in-process queue + one worker thread that micro-batches into a Processor.

    ``submit`` blocks when the queue is full (back-pressure instead of unbounded memory).
    A batch that raises (a transient store error, say) is retried with backoff; after the
    last attempt its messages are dead-lettered with the error, so nothing vanishes silently.
    """

    max_attempts = 5

    def __init__(self, settings: Settings, processor: Processor, dead_letters: DeadLetterSink, *, finite: bool = False) -> None:
        self.settings = settings
        self.finite = finite
        self.processor = processor
        self.dead_letters = dead_letters
        self.counters = PipelineCounters()
        self._queue: queue.Queue = queue.Queue(maxsize=settings.queue_max_items)
        self._worker = threading.Thread(target=self._run, name="newspulse-embedded", daemon=True)
        self._worker.start()

    def __enter__(self) -> "EmbeddedPipeline":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(end_of_stream=exc[0] is None and self.finite)

    def submit(self, item: Article | dict | bytes | str, origin: str = "embedded") -> None:
        if not self._worker.is_alive():
            raise RuntimeError("embedded pipeline is closed")
        payload = item.model_dump(mode="json") if isinstance(item, Article) else item
        self._queue.put(RawMessage(payload=payload, origin=origin))
        self.counters.submitted += 1

    def close(self, timeout: float | None = None, *, end_of_stream: bool = False) -> None:
        """Drain everything submitted so far, then stop the worker and the observers.

        ``end_of_stream`` (a finished replay, not a stopped live stream) lets observers conclude
        what waits for later data: the alerter closes its last windows, which a live stream
        must not do on shutdown because they are still filling.
        """
        if not self._worker.is_alive():
            return
        self._queue.put(_STOP)
        self._worker.join(timeout)
        for observer in self.processor.observers:
            if end_of_stream:
                observer.flush()
            observer.close()

    def _next_batch(self) -> tuple[list[RawMessage], bool]:
        batch: list[RawMessage] = []
        first = self._queue.get()
        if first is _STOP:
            return batch, True
        batch.append(first)
        deadline = time.monotonic() + self.settings.batch_max_wait_ms / 1000
        while len(batch) < self.settings.batch_max_records:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _run(self) -> None:
        stop = False
        while not stop:
            batch, stop = self._next_batch()
            if batch:
                self._process(batch)

    def _process(self, batch: list[RawMessage]) -> None:
        error = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                result = self.processor.process(batch)
            except Exception as err:  # a crash in one batch must not kill the worker
                error = f"{type(err).__name__}: {err}"
                log.exception("batch of %d failed (attempt %d/%d)", len(batch), attempt, self.max_attempts)
                time.sleep(min(0.2 * 2**attempt, 5))
                continue
            self.counters.batches += 1
            self.counters.stored += len(result.stored)
            self.counters.dead_lettered += len(result.dead)
            if result.failed:
                self.counters.failed += len(result.failed)
                self.counters.errors.extend(sorted(set(result.failed.values()))[:5])
                self._dead_letter_failed(batch, result)
            return
        self.counters.failed += len(batch)
        self.counters.errors.append(error)
        now = datetime.now(timezone.utc)
        self.dead_letters.dead_letter(
            [DeadLetter(reason=f"processing failed after {self.max_attempts} attempts: {error}", payload=payload_bytes(m.payload), origin=m.origin, received_at=now) for m in batch]
        )

    def _dead_letter_failed(self, batch: list[RawMessage], result: BatchResult) -> None:
        """Articles every sink refused are kept as dead letters with the store's reason."""
        now = datetime.now(timezone.utc)
        letters = []
        for msg in batch:
            try:
                art_id = parse_message(msg).id
            except ValueError:
                continue
            if art_id in result.failed:
                letters.append(DeadLetter(reason=f"rejected by store: {result.failed[art_id]}", payload=payload_bytes(msg.payload), origin=msg.origin, received_at=now))
        if letters:
            self.dead_letters.dead_letter(letters)


def open_embedded(
    settings: Settings,
    store: Store,
    *,
    finite: bool = False,
    observers: Sequence[Observer] | None = None,
    on_batch: Callable[[BatchResult], None] | None = None,
) -> EmbeddedPipeline:
    """The whole embedded pipeline over ``store``: real components, in-process alerter.

    ``finite``: the input is a replay that ends, so leaving the ``with`` block normally also
    closes the alerter's last windows.
    """
    processor = build_processor(settings, store, observers=observers, on_batch=on_batch)
    return EmbeddedPipeline(settings, processor, StoreSink(store), finite=finite)
