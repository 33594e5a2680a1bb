"""The consumer-group processor: ``news.raw`` → Processor → store + ``news.scored`` (+ ``news.dlq``).

Delivery is at-least-once with idempotent writes, which makes the store exactly-once:

* records are micro-batched (``batch_max_records`` / ``batch_max_wait_ms``) and handed to the
  processing core; offsets are committed only after every sink accepted the batch;
* when a sink refuses some articles, each partition is committed only up to its first refused
  record and the consumer seeks back there, so the refused ones (and what follows) come again;
  a record refused ``max_attempts`` times is dead-lettered instead of blocking its partition;
* a batch that raises (store down, broker hiccup) is retried from its first offsets with
  backoff; after ``max_attempts`` its records are processed one by one so a single poison
  record is dead-lettered with the error and the rest go on;
* every store write is keyed by article id, so a redelivery after a crash overwrites instead of
  duplicating.

Partitions taken away by a rebalance lose their not-yet-processed buffered records (the new
owner reads them from the committed offset), and anything processed but not yet committed is
committed in the revocation callback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError

from newspulse.kafka import metrics
from newspulse.kafka.client import describe, ensure_topics, group_config, is_transient, retry
from newspulse.kafka.producer import PublishError, build_producer
from newspulse.kafka.sinks import DeadLetterTopicSink, ScoredTopicSink, record_origin
from newspulse.pipeline import ArticleSink, BatchResult, DeadLetterSink, Processor, RawMessage, parse_message
from newspulse.schema import Article
from newspulse.settings import Settings
from newspulse.store.base import DeadLetter

log = logging.getLogger(__name__)

#: How long an idle poll waits, which bounds how quickly a stop request is noticed.
IDLE_POLL_MS = 500

#: A valid article the processor scores once before joining the group (nothing is written).
_WARM_UP = Article(published_at=datetime(2020, 1, 1, tzinfo=timezone.utc), source="warm-up", title="Company shares rise after results beat estimates")

ProcessorFactory = Callable[[Settings, ArticleSink, DeadLetterSink], Processor]


@dataclass
class RunStats:
    """What one run did (also exported as Prometheus metrics)."""

    consumed: int = 0
    stored: int = 0
    dead_lettered: int = 0
    failed: int = 0
    batches: int = 0
    commits: int = 0
    errors: list[str] = field(default_factory=list)


class RevocationListener(AsyncConsumerRebalanceListener):
    """Rebalance callbacks. They run on kafka-python's IO thread, so they only await
    non-blocking calls (the commit) and leave buffer clean-up to the polling thread."""

    def __init__(self, owner: "StreamProcessor") -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked) -> None:
        self.owner._note_revoked(revoked)
        offsets = self.owner._take_uncommitted(revoked)
        if offsets and self.owner.consumer is not None:
            try:
                await self.owner.consumer.commit_async(_offset_metadata(offsets))
                log.info("committed %d partition(s) on revocation", len(offsets))
            except Exception as err:  # the next owner re-reads them: duplicates, never loss
                log.warning("commit on revocation failed (%s); the new owner will reprocess", err)

    async def on_partitions_assigned(self, assigned) -> None:
        self.owner.assigned = frozenset(self.owner.assigned | set(assigned))
        log.info("assigned partitions %s", sorted(tp.partition for tp in assigned))

    async def on_partitions_lost(self, lost) -> None:
        # Evicted from the group: committing would be refused; drop state, the new owner redelivers.
        self.owner._note_revoked(lost)
        self.owner._take_uncommitted(lost)


class StreamProcessor:
    """Polls ``news.raw`` in a consumer group and feeds micro-batches to a Processor.

    Not thread-safe: one instance per thread or process (the Kafka consumer is not shareable).
    """

    def __init__(self, settings: Settings, processor: Processor, *, dead_letters: DeadLetterSink, max_attempts: int = 5, **consumer_overrides: object) -> None:
        self.settings = settings
        self.processor = processor
        self.dead_letters = dead_letters
        self.max_attempts = max_attempts
        self.consumer_overrides = consumer_overrides
        self.stats = RunStats()
        self.consumer = None
        #: Partitions this processor owns now (kept by the rebalance callbacks; readable from any thread).
        self.assigned: frozenset = frozenset()
        self._buffer: list = []
        self._batch_started: float | None = None
        self._attempts: dict[tuple, int] = {}
        self._next_offset: dict = {}
        self._lock = threading.Lock()
        self._revoked: set = set()
        self._uncommitted: dict = {}
        self._failures_in_row = 0
        #: Records per batch now: ``batch_max_records``, halved while batches run close to
        #: ``kafka_max_poll_interval_ms`` (a slow machine must not be evicted from the group).
        self.batch_limit = settings.batch_max_records

    # --- consumer -------------------------------------------------------------------------
    def _build_consumer(self) -> KafkaConsumer:
        s = self.settings
        cfg = {
            **group_config(s, s.kafka_group_id),
            "client_id": f"newspulse-processor-{socket.gethostname()}-{os.getpid()}",
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_poll_records": s.batch_max_records,
            "session_timeout_ms": s.kafka_session_timeout_ms,
            "heartbeat_interval_ms": max(100, min(3000, s.kafka_session_timeout_ms // 3)),
            "max_poll_interval_ms": s.kafka_max_poll_interval_ms,
            # bounded memory under a backlog: at most this much prefetched, plus one batch
            "fetch_max_bytes": max(16 * 1024 * 1024, s.kafka_max_message_bytes),
            "max_partition_fetch_bytes": 1024 * 1024,
        }
        cfg.update(self.consumer_overrides)
        return KafkaConsumer(**cfg)

    def run(self, stop: threading.Event) -> RunStats:
        """Consume until ``stop`` is set, then finish the batch in hand, commit and leave the group."""
        self._warm_up()
        self.consumer = retry(self._build_consumer, f"connecting to {describe(self.settings)}", timeout_s=120, stop=stop)
        try:
            self.consumer.subscribe([self.settings.kafka_topic_raw], listener=RevocationListener(self))
            log.info("processing %s in group %s", self.settings.kafka_topic_raw, self.settings.kafka_group_id)
            while not stop.is_set():
                self._poll()
                if self._batch_due():
                    self._flush_guarded(stop)
            if self._buffer:
                log.info("stopping: finishing the batch of %d in hand", len(self._buffer))
                self._flush_guarded(stop)
        finally:
            try:
                if self._uncommitted:
                    self._commit({})
            finally:
                self.consumer.close(autocommit=False)  # the revocation callback commits what is still pending, then it leaves
                self.consumer = None
            log.info("processor stopped: %s", self.stats)
        return self.stats

    def _warm_up(self) -> None:
        """Load the model and summariser before joining the group, so the first batch is not
        slowed by loading (and evicted for exceeding the poll interval)."""
        t0 = time.perf_counter()
        try:
            self.processor.enrich([_WARM_UP])
        except Exception as err:  # the first real batch will meet the same error and handle it
            log.warning("warm-up failed: %s", err)
            return
        log.info("warmed up in %.1fs", time.perf_counter() - t0)

    def _adapt_batch_limit(self, seconds: float) -> None:
        budget = self.settings.kafka_max_poll_interval_ms / 1000
        if seconds > budget / 2 and self.batch_limit > 1:
            self.batch_limit = max(1, self.batch_limit // 2)
            log.warning("batch took %.1fs (poll interval %.0fs): batches now %d records", seconds, budget, self.batch_limit)
        elif seconds < budget / 8 and self.batch_limit < self.settings.batch_max_records:
            self.batch_limit = min(self.settings.batch_max_records, self.batch_limit * 2)

    def _poll(self) -> None:
        if self._buffer:
            timeout = max(0, int((self._batch_started + self.settings.batch_max_wait_ms / 1000 - time.monotonic()) * 1000))
        else:
            timeout = IDLE_POLL_MS
        try:
            polled = self.consumer.poll(timeout_ms=timeout, max_records=self.batch_limit - len(self._buffer))
        except Exception as err:
            if not isinstance(err, KafkaError) and not is_transient(err):
                raise
            self._note_error(f"poll: {type(err).__name__}: {err}")
            self._backoff(None)
            return
        metrics.LAST_POLL.set_to_current_time()
        self._drop_revoked()
        for records in polled.values():
            self._buffer.extend(records)
            metrics.CONSUMED.inc(len(records))
            self.stats.consumed += len(records)
        if self._buffer and self._batch_started is None:
            self._batch_started = time.monotonic()
        self._update_lag()

    def _batch_due(self) -> bool:
        if not self._buffer:
            return False
        if len(self._buffer) >= self.batch_limit:
            return True
        return time.monotonic() - self._batch_started >= self.settings.batch_max_wait_ms / 1000

    # --- rebalance bookkeeping (the listener runs on the IO thread) ----------------------------
    def _note_revoked(self, partitions) -> None:
        self.assigned = frozenset(self.assigned - set(partitions))
        with self._lock:
            self._revoked |= set(partitions)

    def _take_uncommitted(self, partitions) -> dict:
        with self._lock:
            return {tp: self._uncommitted.pop(tp) for tp in list(self._uncommitted) if tp in partitions}

    def _drop_revoked(self) -> None:
        """Forget buffered records of partitions we no longer own; their next owner reads them."""
        with self._lock:
            revoked, self._revoked = self._revoked, set()
        if not revoked:
            return
        kept = [r for r in self._buffer if _tp(r) not in revoked]
        if len(kept) != len(self._buffer):
            log.info("rebalance: dropped %d buffered record(s) of revoked partitions", len(self._buffer) - len(kept))
        self._buffer = kept
        if not kept:
            self._batch_started = None
        for tp in revoked:
            self._next_offset.pop(tp, None)
            with contextlib.suppress(KeyError):
                metrics.LAG.remove(tp.topic, str(tp.partition))

    # --- processing -----------------------------------------------------------------------
    def _flush_guarded(self, stop: threading.Event) -> None:
        """Process the buffered batch; if the broker fails us mid-way (a dead letter or a commit
        not delivered), rewind to the batch's first offsets and retry after a backoff."""
        batch, self._buffer, self._batch_started = self._buffer, [], None
        try:
            self._flush(batch, stop)
        except Exception as err:
            if not isinstance(err, (KafkaError, PublishError)) and not is_transient(err):
                raise
            self._note_error(f"batch of {len(batch)}: {type(err).__name__}: {err}")
            log.warning("batch of %d not completed (%s); retrying from its first offsets", len(batch), err)
            self._rewind(batch)
            self._backoff(stop)

    def _flush(self, batch: list, stop: threading.Event) -> None:
        messages = [RawMessage(payload=r.value, origin=record_origin(r.topic, r.partition, r.offset), key=r.key) for r in batch]
        t0 = time.perf_counter()
        try:
            result = self.processor.process(messages)
        except Exception as err:
            metrics.FAILED.inc(len(batch))
            self.stats.failed += len(batch)
            reason = f"{type(err).__name__}: {err}"
            self._note_error(f"batch of {len(batch)}: {reason}")
            log.exception("batch of %d failed", len(batch))
            first = batch[0]
            attempts = self._attempts[_key(first)] = self._attempts.get(_key(first), 0) + 1
            if attempts >= self.max_attempts:
                self._process_one_by_one(batch, reason)
                self._attempts.pop(_key(first), None)
                return
            self._rewind(batch)
            self._backoff(stop)
            return
        elapsed = time.perf_counter() - t0
        metrics.BATCH_SECONDS.observe(elapsed)
        self._adapt_batch_limit(elapsed)
        self._failures_in_row = 0
        self._account(result)
        self._commit_batch(batch, messages, result)
        metrics.observe_indexed(batch)

    def _process_one_by_one(self, batch: list, batch_error: str) -> None:
        """Isolate what keeps failing a batch: each record alone; the ones that still raise are
        dead-lettered with their error. Ends with every record stored or dead-lettered."""
        log.warning("batch failed %d times (%s); processing its %d records one by one", self.max_attempts, batch_error, len(batch))
        for record in batch:
            msg = RawMessage(payload=record.value, origin=record_origin(record.topic, record.partition, record.offset), key=record.key)
            try:
                result = self.processor.process([msg])
            except Exception as err:
                self._dead_letter([record], f"processing failed {self.max_attempts} times: {type(err).__name__}: {err}")
                continue
            self._account(result)
            if result.failed:
                self._dead_letter([record], f"rejected by sink: {next(iter(result.failed.values()))}")
        self._commit(_offsets_after(batch))

    def _account(self, result: BatchResult) -> None:
        self.stats.batches += 1
        self.stats.stored += len(result.stored)
        self.stats.dead_lettered += len(result.dead)
        self.stats.failed += len(result.failed)
        metrics.PROCESSED.inc(len(result.stored))
        metrics.DEAD_LETTERED.inc(len(result.dead))
        metrics.FAILED.inc(len(result.failed))

    def _commit_batch(self, batch: list, messages: Sequence[RawMessage], result: BatchResult) -> None:
        """Commit each partition up to its first refused record; seek back there to retry it."""
        refused: dict[int, str] = {}
        if result.failed:
            for i, msg in enumerate(messages):
                try:
                    art_id = parse_message(msg).id
                except ValueError:
                    continue
                if art_id in result.failed:
                    refused[i] = result.failed[art_id]
        offsets: dict = {}
        rewind_to: dict = {}
        for i, record in enumerate(batch):
            tp = _tp(record)
            if tp in rewind_to:
                continue
            if i in refused:
                attempts = self._attempts[_key(record)] = self._attempts.get(_key(record), 0) + 1
                if attempts < self.max_attempts:
                    rewind_to[tp] = record.offset
                    continue
                self._attempts.pop(_key(record), None)
                self._dead_letter([record], f"rejected by sink {attempts} times: {refused[i]}")
            offsets[tp] = record.offset + 1
            if self._attempts:
                self._attempts.pop(_key(record), None)  # done: forget earlier failures
        self._commit(offsets)
        for tp, offset in rewind_to.items():
            log.warning("partition %d: record %d refused by a sink; retrying from there", tp.partition, offset)
            self.consumer.seek(tp, offset)
        if rewind_to:
            self._backoff(None)

    def _dead_letter(self, records: list, reason: str) -> None:
        now = datetime.now(timezone.utc)
        self.dead_letters.dead_letter(
            [DeadLetter(reason=reason, payload=r.value or b"", origin=record_origin(r.topic, r.partition, r.offset), received_at=now) for r in records]
        )
        metrics.DEAD_LETTERED.inc(len(records))
        self.stats.dead_lettered += len(records)

    def _rewind(self, batch: list) -> None:
        for tp, offset in _first_offsets(batch).items():
            self.consumer.seek(tp, offset)

    def _backoff(self, stop: threading.Event | None) -> None:
        self._failures_in_row += 1
        delay = min(5.0, 0.1 * 2 ** self._failures_in_row)
        if stop is not None:
            stop.wait(delay)
        else:
            time.sleep(delay)

    # --- offsets --------------------------------------------------------------------------
    def _commit(self, offsets: dict) -> None:
        """Commit ``{tp: next offset}`` plus anything an earlier failed commit left behind."""
        with self._lock:
            for tp, off in offsets.items():
                self._uncommitted[tp] = max(off, self._uncommitted.get(tp, 0))
            pending = dict(self._uncommitted)
        if not pending:
            return
        self._next_offset.update(pending)
        try:
            retry(lambda: self.consumer.commit(_offset_metadata(pending)), "offset commit", timeout_s=30)
        except Exception as err:
            # Not committed: they stay pending for the next commit or the revocation callback.
            # If the group moved on, the new owner reprocesses them (idempotent writes).
            self._note_error(f"commit: {type(err).__name__}: {err}")
            log.warning("offset commit failed: %s", err)
            return
        with self._lock:
            for tp, off in pending.items():
                if self._uncommitted.get(tp) == off:
                    del self._uncommitted[tp]
        self.stats.commits += 1

    def _update_lag(self) -> None:
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            done = self._next_offset.get(tp)
            if high is not None and done is not None:
                metrics.LAG.labels(tp.topic, str(tp.partition)).set(max(0, high - done))

    def _note_error(self, text: str) -> None:
        self.stats.errors = (self.stats.errors + [text])[-20:]


def _offset_metadata(offsets: dict) -> dict:
    return {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}


def _tp(record) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)


def _key(record) -> tuple:
    return (record.topic, record.partition, record.offset)


def _first_offsets(batch: list) -> dict:
    first: dict = {}
    for r in batch:
        first.setdefault(_tp(r), r.offset)
    return first


def _offsets_after(batch: list) -> dict:
    return {_tp(r): r.offset + 1 for r in batch}


def run_processor(
    settings: Settings,
    stop: threading.Event | None = None,
    *,
    processor_factory: ProcessorFactory | None = None,
    **consumer_overrides: object,
) -> RunStats:
    """Run one processor of the consumer group until ``stop`` is set or SIGTERM/SIGINT arrives.

    Creates the topics if missing, serves metrics when ``metrics_port`` is set, and wires the
    production Processor (real classifier, summariser, tagger, the store from ``store_url``,
    news.scored and news.dlq). In Kafka mode the alerter consumes news.scored itself, so no
    in-process alerter runs here. ``processor_factory`` replaces that wiring (tests).
    """
    stop = stop or threading.Event()
    restore = _install_signal_handlers(stop)
    store = None
    try:
        if settings.metrics_port is not None:
            metrics.serve_metrics(settings.metrics_port)
        ensure_topics(settings, stop=stop)
        producer = build_producer(settings)
        try:
            scored = ScoredTopicSink(settings, producer)
            dlq = DeadLetterTopicSink(settings, producer)
            if processor_factory is None:
                from newspulse.embedded import build_processor
                from newspulse.store import open_store

                store = open_store(settings)
                processor = build_processor(settings, store, sinks_extra=[scored], dead_letters=dlq, observers=())
            else:
                processor = processor_factory(settings, scored, dlq)
            return StreamProcessor(settings, processor, dead_letters=dlq, **consumer_overrides).run(stop)
        finally:
            producer.close()
    finally:
        if store is not None:
            store.close()
        restore()


def _install_signal_handlers(stop: threading.Event) -> Callable[[], None]:
    """SIGTERM/SIGINT set ``stop`` (finish the batch, commit, close) instead of killing mid-batch."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handle(signum, _frame) -> None:
        log.info("%s received: finishing the current batch, committing and leaving the group", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
