"""The consumer-group processor: ``news.raw`` → Processor → store + ``news.scored`` (+ ``news.dlq``).

Delivery is at-least-once with idempotent writes, which makes the store exactly-once:

* records are micro-batched (``batch_max_records``; a partial batch goes once no record came
  for about one record's scoring time, at most ``batch_max_wait_ms`` after its first) and
  handed to the shared
  :class:`~newspulse.pipeline.BatchDriver` (the same retry/dead-letter policy as the embedded
  queue); offsets are committed only once every record of the batch is stored, dead-lettered
  or a superseded duplicate;
* two stages overlap: the :class:`~newspulse.pipeline.ScoringStage` thread classifies batch
  k+1 while this thread summarises and writes batch k and commits its offsets, in order (at
  most one batch in each stage);
* while the store or the broker is unavailable the driver keeps the batch and retries it with
  capped backoff for as long as it takes; meanwhile this processor pauses its partitions and
  keeps polling, so it stays in the group without fetching more (gauge
  ``newspulse_pipeline_paused``); nothing is dead-lettered or committed for an outage;
* a permanent failure (a rejected credential, a bad mapping) stops the processor with the error;
  the batch in hand is not committed;
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
import socket
import threading
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone

from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.errors import AuthorizationError, KafkaError, SaslAuthenticationFailedError

from newspulse.errors import Failure, classify
from newspulse.kafka import metrics
from newspulse.kafka.client import BROKER_BACKOFF, describe, ensure_topics, group_config, is_transient, retry
from newspulse.kafka.producer import build_producer
from newspulse.kafka.sinks import DeadLetterTopicSink, ScoredTopicSink, record_origin
from newspulse.pipeline import ArticleSink, Backoff, BatchDriver, Counters, DeadLetterSink, Fate, Outcome, Processor, RawMessage, ScoringStage
from newspulse.schema import Article
from newspulse.settings import Settings
from newspulse.signals import stop_on_signals

log = logging.getLogger(__name__)

#: How long an idle poll waits, which bounds how quickly a stop request is noticed.
IDLE_POLL_MS = 500
#: While a batch is being scored, how often the loop polls for the next one.
BUSY_POLL_S = 0.05

#: A valid article the processor scores once before joining the group (nothing is written).
_WARM_UP = Article(published_at=datetime(2020, 1, 1, tzinfo=timezone.utc), source="warm-up", title="Company shares rise after results beat estimates")

ProcessorFactory = Callable[[Settings, ArticleSink, DeadLetterSink], Processor]


def kafka_failure(err: BaseException) -> Failure:
    """The kernel's classification plus the broker's: a refused credential or ACL is permanent,
    any other broker error is the infrastructure's (transient), never a record's fault."""
    kind = classify(err)
    if kind is not Failure.unknown:
        return kind
    if isinstance(err, (AuthorizationError, SaslAuthenticationFailedError)):
        return Failure.permanent
    if isinstance(err, KafkaError):
        return Failure.transient
    return Failure.unknown


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
    """Polls ``news.raw`` in a consumer group and feeds micro-batches to the shared BatchDriver.

    Not thread-safe: one instance per thread or process (the Kafka consumer is not shareable).
    """

    def __init__(self, settings: Settings, processor: Processor, *, max_attempts: int = 5, backoff: Backoff = Backoff(), **consumer_overrides: object) -> None:
        self.settings = settings
        self.processor = processor
        self.consumer_overrides = consumer_overrides
        self.stats = Counters(source="kafka")
        self.driver = BatchDriver(processor, self.stats, max_attempts=max_attempts, backoff=backoff, classify_failure=kafka_failure)
        self.consumer = None
        #: Partitions this processor owns now (kept by the rebalance callbacks; readable from any thread).
        self.assigned: frozenset = frozenset()
        self._buffer: list = []
        self._batch_started: float | None = None
        self._last_arrival = 0.0
        self._next_offset: dict = {}
        self._lock = threading.Lock()
        self._revoked: set = set()
        self._uncommitted: dict = {}
        self._failures_in_row = 0
        self.scoring = ScoringStage(processor, "newspulse-kafka-scoring")
        #: The batch being scored while the one before it is written (at most one).
        self._inflight: Inflight | None = None
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

    def run(self, stop: threading.Event) -> Counters:
        """Consume until ``stop`` is set, then finish the batch in hand, commit and leave the group.

        Raises :class:`~newspulse.errors.PermanentFailure` (after leaving the group, with the
        failed batch uncommitted) when retrying cannot help."""
        self._warm_up()
        self.consumer = retry(self._build_consumer, f"connecting to {describe(self.settings)}", timeout_s=120, stop=stop)
        try:
            self.consumer.subscribe([self.settings.kafka_topic_raw], listener=RevocationListener(self))
            log.info("processing %s in group %s", self.settings.kafka_topic_raw, self.settings.kafka_group_id)
            while not stop.is_set():
                self._poll()
                self._step(stop)
            if self._inflight is not None or self._buffer:
                log.info("stopping: finishing the %d record(s) in hand", len(self._buffer) + (len(self._inflight.records) if self._inflight else 0))
            self._finish_inflight(stop, start_next=False)
            if self._buffer:
                self._inflight = self._start()
                self._finish_inflight(stop, start_next=False)
        finally:
            self.scoring.close()
            try:
                if self._uncommitted:
                    self._commit({})
            finally:
                self.consumer.close(autocommit=False)  # the revocation callback commits what is still pending, then it leaves
                self.consumer = None
            log.info("processor stopped: %s", self.stats.summary())
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
        scoring = self._inflight is not None and not self._inflight.scored.done()
        if scoring:  # records that arrive while a batch is scored form the next one
            futures.wait([self._inflight.scored], timeout=BUSY_POLL_S)
        room = self.batch_limit - len(self._buffer)
        if room <= 0:
            return  # a full batch waits for the scoring thread: fetch no more
        if scoring:
            timeout = 0
        elif self._buffer:
            timeout = max(0, int((self._partial_batch_ends() - time.monotonic()) * 1000))
        else:
            timeout = IDLE_POLL_MS
        try:
            polled = self.consumer.poll(timeout_ms=timeout, max_records=room)
        except Exception as err:
            if not isinstance(err, KafkaError) and not is_transient(err):
                raise
            self.stats.note_error(f"poll: {type(err).__name__}: {err}")
            self._backoff()
            return
        metrics.LAST_POLL.set_to_current_time()
        self._drop_revoked()
        self._take(polled)
        self._update_lag()

    def _take(self, polled: dict) -> None:
        for records in polled.values():
            self._buffer.extend(records)
            metrics.CONSUMED.inc(len(records))
            self.stats.receive(len(records))
            self._last_arrival = time.monotonic()
        if self._buffer and self._batch_started is None:
            self._batch_started = time.monotonic()

    def _partial_batch_ends(self) -> float:
        """When a partial batch goes: once no record came for :meth:`ScoringStage.gap_s`, or
        ``batch_max_wait_ms`` after its first record, whichever is sooner."""
        max_wait = self.settings.batch_max_wait_ms / 1000
        return min(self._batch_started + max_wait, self._last_arrival + self.scoring.gap_s(max_wait))

    def _batch_due(self) -> bool:
        if not self._buffer:
            return False
        if len(self._buffer) >= self.batch_limit:
            return True
        return time.monotonic() >= self._partial_batch_ends()

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
            self.stats.release(len(self._buffer) - len(kept))
        self._buffer = kept
        if not kept:
            self._batch_started = None
        for tp in revoked:
            self._next_offset.pop(tp, None)
            with contextlib.suppress(KeyError):
                metrics.LAG.remove(tp.topic, str(tp.partition))

    # --- processing -----------------------------------------------------------------------
    def _step(self, stop: threading.Event) -> None:
        """Once the batch in flight is scored, start scoring the buffered records (if any) and
        write and commit the scored batch meanwhile; with nothing in flight, start a batch when
        it is due."""
        if self._inflight is not None:
            if self._inflight.scored.done():
                self._finish_inflight(stop, start_next=True)
        elif self._batch_due():
            self._inflight = self._start()

    def _start(self) -> "Inflight":
        """Hand the buffered records to the scoring thread."""
        batch, self._buffer, self._batch_started = self._buffer, [], None
        messages = [RawMessage(payload=r.value, origin=record_origin(r.topic, r.partition, r.offset), key=r.key) for r in batch]
        return Inflight(batch, messages, self.scoring.submit(messages))

    def _finish_inflight(self, stop: threading.Event, *, start_next: bool) -> None:
        """Write and commit the batch in flight; with ``start_next`` the buffered records are
        scored meanwhile and become the batch in flight."""
        done, self._inflight = self._inflight, None
        if done is None:
            return
        nxt = self._start() if start_next and self._buffer else None
        rewound = self._write(done, stop)
        if nxt is not None:
            nxt.rewound |= rewound
        self._inflight = nxt

    def _write(self, inflight: "Inflight", stop: threading.Event) -> set:
        """Run a scored batch through the driver (writes, retries), then commit what it settled;
        the partitions it had to rewind."""
        batch = inflight.records
        partitions = {_tp(r) for r in batch}
        retried, paused = self.stats.retried, self.driver.paused_seconds
        prepared = inflight.scored.result()
        t0 = time.perf_counter()
        try:
            outcomes = self.driver.run(inflight.messages, lambda seconds: self._wait_paused(seconds, stop, partitions), prepared)
        finally:
            if self.consumer.paused():
                self.consumer.resume(*self.consumer.paused())
        metrics.FAILED.inc(self.stats.retried - retried)
        working = prepared.seconds + time.perf_counter() - t0 - (self.driver.paused_seconds - paused)
        metrics.BATCH_SECONDS.observe(working)
        self._adapt_batch_limit(working)
        rewound = self._acknowledge(batch, outcomes, inflight.rewound)
        metrics.observe_indexed([r for r, o in zip(batch, outcomes) if o.fate is not Fate.retry])
        return rewound

    def _wait_paused(self, seconds: float, stop: threading.Event, partitions: set) -> bool:
        """Wait between retries with every partition paused, polling so that the group keeps
        this member; False when stopping or when the batch's partitions were taken away."""
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            with self._lock:
                if self._revoked & partitions:
                    return False
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            self.consumer.pause(*self.consumer.assignment())
            try:
                polled = self.consumer.poll(timeout_ms=max(1, int(min(left, IDLE_POLL_MS / 1000) * 1000)))
            except Exception as err:
                if kafka_failure(err) is not Failure.transient:
                    raise
                self.stats.note_error(f"poll while paused: {type(err).__name__}: {err}")
                stop.wait(min(left, IDLE_POLL_MS / 1000))
                continue
            metrics.LAST_POLL.set_to_current_time()  # paused, not stuck: the healthcheck sees the loop alive
            self._take(polled)  # only from partitions assigned since the pause: the next batch
        return False

    def _acknowledge(self, batch: list, outcomes: list[Outcome], rewound: set = frozenset()) -> set:
        """Commit each owned partition up to its first unsettled record and seek back there;
        what is not committed is released to be delivered again. Records of ``rewound``
        partitions (sought back after this batch was fetched) are released as they are. Returns
        the partitions sought back now; their buffered records are dropped too (they come again)."""
        offsets: dict = {}
        rewind: dict = {}
        settled: list[Outcome] = []
        released = 0
        for record, outcome in zip(batch, outcomes):
            tp = _tp(record)
            if tp in rewound:
                released += 1
                continue
            if tp in rewind or outcome.fate is Fate.retry or tp not in self.assigned:
                if tp not in rewind and tp in self.assigned:
                    rewind[tp] = record.offset
                released += 1
                continue
            settled.append(outcome)
            offsets[tp] = record.offset + 1
        self.stats.settle(settled)
        metrics.PROCESSED.inc(sum(o.fate is Fate.stored for o in settled))
        metrics.DEAD_LETTERED.inc(sum(o.fate is Fate.dead_lettered for o in settled))
        if released:
            self.stats.release(released)
        self._commit(offsets)
        for tp, offset in rewind.items():
            log.warning("partition %d: records from offset %d not finished; they will be read again", tp.partition, offset)
            self.consumer.seek(tp, offset)
        if rewind:
            kept = [r for r in self._buffer if _tp(r) not in rewind]
            if len(kept) != len(self._buffer):
                self.stats.release(len(self._buffer) - len(kept))
                self._buffer = kept
                if not kept:
                    self._batch_started = None
        return set(rewind)

    def _backoff(self) -> None:
        self._failures_in_row += 1
        time.sleep(BROKER_BACKOFF.delay(self._failures_in_row))

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
            self.stats.note_error(f"commit: {type(err).__name__}: {err}")
            log.warning("offset commit failed: %s", err)
            return
        self._failures_in_row = 0
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


@dataclass
class Inflight:
    """A batch handed to the scoring thread: its records (for offsets), its messages, the
    Future of its :class:`~newspulse.pipeline.Prepared`, and the partitions an earlier batch
    sought back after this one was fetched (its records of those are released, not committed)."""

    records: list
    messages: list[RawMessage]
    scored: Future
    rewound: set = field(default_factory=set)


def _offset_metadata(offsets: dict) -> dict:
    return {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}


def _tp(record) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)


def run_processor(
    settings: Settings,
    stop: threading.Event | None = None,
    *,
    processor_factory: ProcessorFactory,
    **consumer_overrides: object,
) -> Counters:
    """Run one processor of the consumer group until ``stop`` is set or SIGTERM/SIGINT arrives.

    Creates the topics if missing, serves metrics when ``metrics_port`` is set, and runs the
    Processor that ``processor_factory`` builds around the news.scored and news.dlq sinks
    (:func:`newspulse.wiring.run_kafka_processor` passes the production one; tests a fake).
    """
    def say(name: str) -> None:
        log.info("%s received: finishing the current batch, committing and leaving the group", name)

    with stop_on_signals(stop, on_signal=say) as stop:
        if settings.metrics_port is not None:
            metrics.serve_metrics(settings.metrics_port)
        ensure_topics(settings, stop=stop)
        producer = build_producer(settings)
        try:
            scored = ScoredTopicSink(settings, producer)
            dlq = DeadLetterTopicSink(settings, producer)
            processor = processor_factory(settings, scored, dlq)
            return StreamProcessor(settings, processor, **consumer_overrides).run(stop)
        finally:
            producer.close()
