"""The wiring layer: the one place that picks the real components and plugs them into the kernel.

The kernel (:mod:`newspulse.pipeline`, :mod:`newspulse.schema`, :mod:`newspulse.settings`,
:mod:`newspulse.store.base`, :mod:`newspulse.errors`) defines Protocols and knows no backend;
the plugins (``models/``, ``ingest/``, the store backends, Kafka, the alerter, the embedded
queue) implement them. Only this module (and the CLIs, DAGs and dashboard that call it) knows
which plugin fills which slot, for both modes. ``tests/test_layers.py`` enforces the direction.

The plugin imports are inside the functions: building a processor loads torch, and importing
this module (the dashboard does) should not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta

from newspulse.entities import EntityScorer
from newspulse.pipeline import ArticleSink, Counters, DeadLetterSink, Observer, Processor, RawMessage, parse_message
from newspulse.schema import Article, Feedback
from newspulse.settings import Settings
from newspulse.store.base import Store


def open_store(settings: Settings) -> Store:
    """SQLite for ``sqlite:///path``, Elasticsearch for ``http(s)://host:port`` (``settings.store_url``)."""
    if settings.sqlite_path is not None:
        from newspulse.store.sqlite import SQLiteStore

        return SQLiteStore(settings.sqlite_path)
    from newspulse.store.elastic import ElasticStore

    return ElasticStore(settings)


def feedback_source(settings: Settings) -> Callable[[], list[Feedback]]:
    """Reads the analyst feedback from the store when training asks for it (not before: a
    training run without feedback never opens the store)."""

    def read() -> list[Feedback]:
        store = open_store(settings)
        try:
            return list(store.list_feedback())
        finally:
            store.close()

    return read


def build_alerter(settings: Settings, store: Store, *, recover: bool = True):
    """The alerter for ``settings.alert_rules`` over ``store`` (see :func:`newspulse.alerts.build_alerter`)."""
    from newspulse.alerts import build_alerter as build

    return build(settings, store, recover=recover)


def build_processor(
    settings: Settings,
    store: Store,
    *,
    sinks_extra: Sequence[ArticleSink] = (),
    dead_letters: DeadLetterSink | None = None,
    observers: Sequence[Observer] | None = None,
) -> Processor:
    """The production Processor: real classifier, summariser and tagger, writing to ``store``.

    ``observers=None`` runs the alerter in-process (embedded mode); pass ``()`` where a separate
    alerter service consumes news.scored instead (Kafka mode).
    """
    from newspulse.ingest.tagging import build_mention_finder, build_tagger
    from newspulse.models.sentiment.predict import load_classifier
    from newspulse.models.summarize import build_summarizer
    from newspulse.store.sink import StoreSink

    sink = StoreSink(store)
    if observers is None:
        observers = [build_alerter(settings, store)]
    return Processor(
        classifier=load_classifier(settings),
        summarizer=build_summarizer(settings),
        sinks=[sink, *sinks_extra],
        dead_letters=dead_letters or sink,
        tagger=build_tagger(),
        observers=observers,
        max_published_ahead=timedelta(hours=settings.max_published_ahead_hours),
        max_tags=settings.max_tags_per_record,
        entities=EntityScorer.from_settings(settings, build_mention_finder()),
    )


def open_embedded(settings: Settings, store: Store, *, finite: bool = False, observers: Sequence[Observer] | None = None, on_settled=None):
    """Embedded mode over ``store``: the bounded in-process queue feeding the production
    Processor, with the alerter in-process.

    ``finite``: the input is a replay that ends, so leaving the ``with`` block normally also
    closes the alerter's last windows. ``on_settled``: see :class:`newspulse.embedded.EmbeddedPipeline`.
    """
    from newspulse.embedded import EmbeddedPipeline

    return EmbeddedPipeline(settings, build_processor(settings, store, observers=observers), finite=finite, on_settled=on_settled)


#: Rows checked against the store in one query when a replay skips what is already stored.
STORED_CHECK_CHUNK = 256

#: Paces a replay's rows: ``(rows, flush, stored)`` → rows, where ``flush()`` hands what is held
#: to the pipeline (call it before waiting) and ``stored`` counts the articles already in the store.
RowPacer = Callable[[Iterable[dict], Callable[[], None], int], Iterable[dict]]


def replay_embedded(
    settings: Settings,
    rows: Iterable[dict],
    *,
    origin: str,
    stop: threading.Event | None = None,
    skip_stored: bool = False,
    pace: RowPacer | None = None,
) -> dict:
    """Replay ``rows`` (event-time order) into the embedded store: the one path of
    `newspulse replay --to embedded` and `newspulse demo`; returns the counters and the store's stats.

    Each row is parsed once, here: a valid one travels on as its Article, an invalid one goes
    through as it is, to be dead-lettered with its reason. ``skip_stored`` leaves out the articles a
    previous run stored, asking the store once per chunk of rows (:meth:`Store.stored_ids`), not
    row by row; without it each row is submitted at once, so a paced replay is never held back.
    ``stop`` ends the replay early and leaves the alerter's windows open (the stream did not end)."""
    store = open_store(settings)
    skipped = 0
    held: list[Article | dict] = []
    chunk_size = STORED_CHECK_CHUNK if skip_stored else 1
    try:
        pipe = open_embedded(settings, store)

        def flush() -> None:
            nonlocal skipped
            stored = store.stored_ids([item.id for item in held if isinstance(item, Article)]) if skip_stored else set()
            for item in held:
                if isinstance(item, Article) and item.id in stored:
                    skipped += 1
                else:
                    pipe.submit(item, origin=origin)
            held.clear()

        ended = False
        try:
            if pace is not None:
                rows = pace(rows, flush, int(store.stats().get("articles") or 0))
            for msg in rows:
                if stop is not None and stop.is_set():
                    break
                try:
                    held.append(parse_message(RawMessage(msg, origin=origin)))
                except ValueError:
                    held.append(msg)
                if len(held) >= chunk_size:
                    flush()
            if stop is None or not stop.is_set():
                flush()
                ended = True
        finally:
            pipe.close(end_of_stream=ended)  # a stopped or failed replay leaves its windows open
        summary = {**pipe.counters.summary(), "store": store.stats()}
        return {**summary, "already_stored": skipped} if skip_stored else summary
    finally:
        store.close()


def run_kafka_processor(settings: Settings, stop: threading.Event | None = None, **consumer_overrides: object) -> Counters:
    """Kafka mode: one member of the processor group with the production Processor, writing to
    the store and to news.scored / news.dlq (the alerter is a separate service there)."""
    from newspulse.kafka.processor import run_processor

    opened: list[Store] = []

    def factory(settings: Settings, scored: ArticleSink, dlq: DeadLetterSink) -> Processor:
        opened.append(open_store(settings))
        return build_processor(settings, opened[0], sinks_extra=[scored], dead_letters=dlq, observers=())

    try:
        return run_processor(settings, stop, processor_factory=factory, **consumer_overrides)
    finally:
        for store in opened:
            store.close()
