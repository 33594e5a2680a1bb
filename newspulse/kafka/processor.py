"""The consumer-group processor: ``news.raw`` → Processor → store + ``news.scored`` (+ ``news.dlq``).

The consumer is one :class:`~newspulse.runner.Source` of the shared source loop
(:class:`~newspulse.runner.SourceRunner`: micro-batching, scoring overlapped with writing, the
retry/dead-letter policy, the same as the embedded queue's). Delivery is at-least-once with
idempotent writes, which makes the store exactly-once:

* offsets are committed only once every record of the batch is stored, dead-lettered or a
  superseded duplicate, in batch order;
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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.errors import AuthorizationError, KafkaError, SaslAuthenticationFailedError

from newspulse.errors import Failure, classify
from newspulse.kafka import metrics
from newspulse.kafka.client import BROKER_BACKOFF, ensure_topics, group_config, is_transient, topic_id, until_reached, without_topic_creation
from newspulse.kafka.producer import RenewingProducer
from newspulse.kafka.sinks import DeadLetterTopicSink, ScoredTopicSink, record_origin
from newspulse.pipeline import ArticleSink, Counters, DeadLetterSink, Fate, Outcome, Processor, RawMessage
from newspulse.retrying import Backoff
from newspulse.runner import SourceRunner
from newspulse.schema import Article
from newspulse.settings import Settings
from newspulse.signals import stop_on_signals

log = logging.getLogger(__name__)

#: How long one poll waits while the processor is paused (bounds how quickly a stop is noticed).
PAUSED_POLL_S = 0.5
#: How long one offset commit may take; a commit that fails stays pending for the next one.
COMMIT_TIMEOUT_MS = 30_000

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

    def __init__(self, owner: "KafkaSource") -> None:
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


@dataclass(frozen=True)
class PolledRecord(RawMessage):
    """A ``news.raw`` record as the pipeline sees it, with its partition, offset, Kafka timestamp
    (Unix ms) and the partition's seek epoch when it was fetched: a record fetched before its
    partition was sought back or revoked is stale and comes again (:meth:`KafkaSource.keep`)."""

    tp: TopicPartition | None = None
    offset: int = -1
    timestamp: int | None = None
    epoch: int = 0


class KafkaSource:
    """``news.raw`` in a consumer group as a :class:`~newspulse.runner.Source`; :meth:`run`
    drives it through the shared :class:`~newspulse.runner.SourceRunner`.

    Not thread-safe: one instance per thread or process (the Kafka consumer is not shareable).
    """

    def __init__(self, settings: Settings, processor: Processor, *, max_attempts: int = 5, backoff: Backoff = Backoff(), **consumer_overrides: object) -> None:
        self.settings = settings
        self.processor = processor
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.consumer_overrides = consumer_overrides
        self.stats = Counters(source="kafka")
        self.consumer = None
        #: Partitions this processor owns now (kept by the rebalance callbacks; readable from any thread).
        self.assigned: frozenset = frozenset()
        #: Records per batch now: ``batch_max_records``, halved while batches run close to
        #: ``kafka_max_poll_interval_ms`` (a slow machine must not be evicted from the group).
        self.batch_limit = settings.batch_max_records
        #: Records polled while paused (from partitions assigned meanwhile): the next poll's.
        self._held: list[PolledRecord] = []
        #: Bumped when a partition is sought back or revoked: records fetched before are stale.
        self._epoch: dict[TopicPartition, int] = {}
        self._next_offset: dict = {}
        self._lock = threading.Lock()
        self._revoked: set = set()
        self._uncommitted: dict = {}
        self._failures_in_row = 0
        self._retried = 0
        self._stop = threading.Event()
        #: The raw topic's broker id when first seen; another id means it was created again.
        self._topic_id: str | None = None

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
        return without_topic_creation(KafkaConsumer(**cfg))

    def run(self, stop: threading.Event) -> Counters:
        """Consume until ``stop`` is set, then finish the batch in hand, commit and leave the group.

        Raises :class:`~newspulse.errors.PermanentFailure` (after leaving the group, with the
        failed batch uncommitted) when retrying cannot help."""
        self._stop = stop
        self._warm_up()
        # the start's own clock (NEWSPULSE_KAFKA_CONNECT_TIMEOUT_S): a broker coming up is
        # waited for, a missing one stops the command with one line
        self.consumer = until_reached(self._build_consumer, "connecting the processor", self.settings, stop=stop)
        runner = SourceRunner(
            self,
            self.processor,
            self.stats,
            batch_max_wait_ms=self.settings.batch_max_wait_ms,
            max_paused_s=self.settings.max_paused_s,
            max_attempts=self.max_attempts,
            backoff=self.backoff,
            classify_failure=kafka_failure,
            name="newspulse-kafka-scoring",
        )
        try:
            self.consumer.subscribe([self.settings.kafka_topic_raw], listener=RevocationListener(self))
            log.info("processing %s in group %s", self.settings.kafka_topic_raw, self.settings.kafka_group_id)
            runner.run(stop)
        finally:
            if self._held:  # polled while paused and never processed: uncommitted, they come again
                self.stats.release(len(self._held))
                self._held = []
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

    # --- the Source protocol --------------------------------------------------------------
    def poll(self, max_records: int, timeout_s: float) -> list[RawMessage]:
        """Records held from a pause first, then the consumer's, up to ``max_records``."""
        taken: list[RawMessage] = list(self._held[:max_records])
        del self._held[:max_records]
        room = max_records - len(taken)
        if room <= 0:
            return taken
        try:
            polled = self.consumer.poll(timeout_ms=0 if taken else int(timeout_s * 1000), max_records=room)
        except Exception as err:
            if not isinstance(err, KafkaError) and not is_transient(err):
                raise
            self.stats.note_error(f"poll: {type(err).__name__}: {err}")
            self._backoff()
            return taken
        metrics.LAST_POLL.set_to_current_time()
        self._drop_revoked()
        self._restart_if_recreated()
        taken += self._take(polled)
        self._update_lag()
        return taken

    def keep(self, messages: list[RawMessage]) -> list[RawMessage]:
        """Release the gathered records of partitions revoked or sought back since they were
        fetched (their next owner, or the next fetch, reads them again)."""
        kept = [m for m in messages if not self._stale(m)]
        if len(kept) != len(messages):
            log.info("dropped %d gathered record(s) of partitions revoked or sought back; they will be read again", len(messages) - len(kept))
            self.stats.release(len(messages) - len(kept))
        return kept

    def pause(self, seconds: float, messages: Sequence[RawMessage]) -> bool:
        """Wait between retries with every partition paused, polling so that the group keeps
        this member; False when stopping or when the batch's partitions were taken away."""
        partitions = {m.tp for m in messages if isinstance(m, PolledRecord)}
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            with self._lock:
                if self._revoked & partitions:
                    return False
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            self.consumer.pause(*self.consumer.assignment())
            try:
                polled = self.consumer.poll(timeout_ms=max(1, int(min(left, PAUSED_POLL_S) * 1000)))
            except Exception as err:
                if kafka_failure(err) is not Failure.transient:
                    raise
                self.stats.note_error(f"poll while paused: {type(err).__name__}: {err}")
                self._stop.wait(min(left, PAUSED_POLL_S))
                continue
            metrics.LAST_POLL.set_to_current_time()  # paused, not stuck: the healthcheck sees the loop alive
            self._held += self._take(polled)  # only from partitions assigned since the pause: the next batch
        return False

    def ack(self, messages: list[RawMessage], outcomes: list[Outcome], seconds: float) -> bool:
        """Commit each owned partition up to its first unsettled record and seek back there;
        what is not committed is released to be delivered again, and so are stale records."""
        if self.consumer.paused():
            self.consumer.resume(*self.consumer.paused())
        metrics.FAILED.inc(self.stats.retried - self._retried)
        self._retried = self.stats.retried
        metrics.BATCH_SECONDS.observe(seconds)
        self._adapt_batch_limit(seconds)
        metrics.observe_indexed([m for m, o in zip(messages, outcomes) if o.fate is not Fate.retry])
        offsets: dict = {}
        rewind: dict = {}
        settled: list[Outcome] = []
        released = 0
        for msg, outcome in zip(messages, outcomes):
            assert isinstance(msg, PolledRecord)
            tp = msg.tp
            if self._stale(msg):
                released += 1
                continue
            if tp in rewind or outcome.fate is Fate.retry or tp not in self.assigned:
                if tp not in rewind and tp in self.assigned:
                    rewind[tp] = msg.offset
                released += 1
                continue
            settled.append(outcome)
            offsets[tp] = msg.offset + 1
        self.stats.settle(settled)  # counts each fate in newspulse_pipeline_messages_total{source="kafka"}
        if released:
            self.stats.release(released)
        self._commit(offsets)
        for tp, offset in rewind.items():
            log.warning("partition %d: records from offset %d not finished; they will be read again", tp.partition, offset)
            self.consumer.seek(tp, offset)
            self._epoch[tp] = self._epoch.get(tp, 0) + 1
        return True

    def _stale(self, msg: RawMessage) -> bool:
        return isinstance(msg, PolledRecord) and msg.epoch != self._epoch.get(msg.tp, 0)

    def _take(self, polled: dict) -> list[PolledRecord]:
        taken: list[PolledRecord] = []
        for records in polled.values():
            taken += [
                PolledRecord(
                    payload=r.value,
                    origin=record_origin(r.topic, r.partition, r.offset),
                    key=r.key,
                    tp=_tp(r),
                    offset=r.offset,
                    timestamp=r.timestamp,
                    epoch=self._epoch.get(_tp(r), 0),
                )
                for r in records
            ]
            metrics.CONSUMED.inc(len(records))
            self.stats.receive(len(records))
        return taken

    def _adapt_batch_limit(self, seconds: float) -> None:
        budget = self.settings.kafka_max_poll_interval_ms / 1000
        if seconds > budget / 2 and self.batch_limit > 1:
            self.batch_limit = max(1, self.batch_limit // 2)
            log.warning("batch took %.1fs (poll interval %.0fs): batches now %d records", seconds, budget, self.batch_limit)
        elif seconds < budget / 8 and self.batch_limit < self.settings.batch_max_records:
            self.batch_limit = min(self.settings.batch_max_records, self.batch_limit * 2)

    # --- rebalance bookkeeping (the listener runs on the IO thread) ----------------------------
    def _note_revoked(self, partitions) -> None:
        self.assigned = frozenset(self.assigned - set(partitions))
        with self._lock:
            self._revoked |= set(partitions)

    def _take_uncommitted(self, partitions) -> dict:
        with self._lock:
            return {tp: self._uncommitted.pop(tp) for tp in list(self._uncommitted) if tp in partitions}

    def _drop_revoked(self) -> None:
        """Mark records of partitions we no longer own as stale; their next owner reads them."""
        with self._lock:
            revoked, self._revoked = self._revoked, set()
        for tp in revoked:
            self._epoch[tp] = self._epoch.get(tp, 0) + 1
            self._next_offset.pop(tp, None)
            with contextlib.suppress(KeyError):
                metrics.LAG.remove(tp.topic, str(tp.partition))

    def _restart_if_recreated(self) -> None:
        """Read the raw topic from its beginning if the broker created it again (it restarted
        empty). The consumer would otherwise keep fetching at its old positions, past the end of
        the new log, and skip every record below them as they arrive; records of the old log
        still in hand are released, and their offsets never committed into the new one."""
        current = topic_id(self.consumer, self.settings.kafka_topic_raw)
        if current is None or current == self._topic_id:
            return
        known, self._topic_id = self._topic_id, current
        if known is None:
            return
        parts = [tp for tp in self.consumer.assignment() if tp.topic == self.settings.kafka_topic_raw]
        log.warning("%s was created again on the broker: reading its %d assigned partition(s) from the beginning", self.settings.kafka_topic_raw, len(parts))
        with self._lock:
            for tp in parts:
                self._uncommitted.pop(tp, None)
        for tp in parts:
            self._epoch[tp] = self._epoch.get(tp, 0) + 1
            self._next_offset.pop(tp, None)
        if parts:
            self.consumer.seek_to_beginning(*parts)

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
            self.consumer.commit(_offset_metadata(pending), timeout_ms=COMMIT_TIMEOUT_MS)
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
        # one attempt per call; the start's own clock, as for the consumer
        until_reached(lambda: ensure_topics(settings), "creating topics", settings, stop=stop)
        producer = RenewingProducer(settings)
        try:
            scored = ScoredTopicSink(settings, producer)
            dlq = DeadLetterTopicSink(settings, producer)
            processor = processor_factory(settings, scored, dlq)
            return KafkaSource(settings, processor, **consumer_overrides).run(stop)
        finally:
            producer.close()
