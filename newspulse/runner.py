"""The source loop: gather → score (overlapped with writing) → write → acknowledge, for every source.

A :class:`Source` fetches and acknowledges messages (the embedded queue, a Kafka consumer); the
:class:`SourceRunner` owns everything else, once for both modes:

* **gather**: up to the source's batch limit. An idle runner waits for the first message, then
  takes more while they come within about one message's scoring time of each other
  (:meth:`ScoringStage.gap_s`, ``batch_max_wait_ms`` in all); a busy one gathers until the batch
  in flight is classified;
* **score**: the :class:`ScoringStage` thread classifies the next batch while this thread
  summarises and writes the current one (at most one batch in each stage);
* **write**: the :class:`BatchDriver` runs the scored batch through the Processor's writes under
  the one retry/dead-letter policy; while a store or broker is unavailable it pauses through
  :meth:`Source.pause` (the Kafka source keeps polling meanwhile, to stay in its group);
* **acknowledge**: :meth:`Source.ack` settles what has a final fate and hands the rest back, in
  batch order, only after the write.

Failures are told apart (:mod:`newspulse.errors`): a message's own fault is dead-lettered; an
unavailable store or broker pauses and retries for as long as it takes; a permanent failure
raises :class:`~newspulse.errors.PermanentFailure` out of :meth:`SourceRunner.run`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter, Gauge

from newspulse.errors import Failure, FailureClassifier, PermanentFailure, classify
from newspulse.pipeline import Counters, Fate, Outcome, Prepared, Processor, RawMessage
from newspulse.retrying import Backoff

log = logging.getLogger(__name__)

PAUSED = Gauge("newspulse_pipeline_paused", "1 while processing is paused because a store or broker is unavailable.", ["source"])
PAUSED_SINCE = Gauge(
    "newspulse_pipeline_paused_since_timestamp_seconds",
    "Unix time processing paused for an unavailable store or broker; 0 while it runs (the healthcheck's measure of a wedged loop).",
    ["source"],
)
PAUSE_LIMIT = Gauge(
    "newspulse_pipeline_pause_limit_seconds",
    "How long processing may stay paused before the healthcheck reports it unhealthy (NEWSPULSE_MAX_PAUSED_S).",
    ["source"],
)
INFRASTRUCTURE_RETRIES = Counter(
    "newspulse_pipeline_infrastructure_retries", "Batch retries after a store or broker was unavailable (never dead-lettered).", ["source"]
)

#: How long an idle runner waits for a first message before looking again (bounds how quickly a
#: stop request is noticed).
IDLE_POLL_S = 0.5
#: While a batch is being scored, how long the runner waits for it before gathering more.
BUSY_POLL_S = 0.05


class Source(Protocol):
    """Where messages come from and where their acknowledgements go (bytewax's input contract).

    Every message the source returns from :meth:`poll` comes back exactly once, through
    :meth:`ack` or :meth:`keep`, so it can count and commit them.
    """

    #: The most messages per batch now (the Kafka source lowers it when batches approach the
    #: group's poll interval).
    batch_limit: int

    def poll(self, max_records: int, timeout_s: float) -> list[RawMessage] | None:
        """At most ``max_records`` messages, waiting at most ``timeout_s`` for the first
        (``[]`` if none came); None once the source has ended and nothing more will come."""

    def keep(self, messages: list[RawMessage]) -> list[RawMessage]:
        """Of the gathered messages not yet scored, those still to process; the source hands
        the others back (records of Kafka partitions revoked or sought back since they were
        polled, which come again)."""

    def pause(self, seconds: float, messages: Sequence[RawMessage]) -> bool:
        """Wait ``seconds`` between retries of ``messages``; False when the source wants them
        back unfinished (it is stopping, or lost their partitions)."""

    def ack(self, messages: list[RawMessage], outcomes: list[Outcome], seconds: float) -> bool:
        """Settle the messages with a final fate and hand back the ``retry`` ones, in batch
        order; ``seconds``: the batch's working time (scoring and writes, pauses excluded).
        False when the runner must stop (the embedded queue was abandoned by ``close``)."""


@dataclass
class Inflight:
    """A batch handed to the scoring thread: its messages as polled and the Future of their
    :class:`~newspulse.pipeline.Prepared`."""

    messages: list[RawMessage]
    scored: Future


class SourceRunner:
    """Runs one source through one Processor: the loop both modes share (module doc).

    Not thread-safe: :meth:`run` runs on one thread (the embedded worker, the Kafka main thread).
    """

    def __init__(
        self,
        source: Source,
        processor: Processor,
        counters: Counters,
        *,
        batch_max_wait_ms: int,
        max_paused_s: float,
        max_attempts: int = 5,
        backoff: Backoff = Backoff(),
        classify_failure: FailureClassifier = classify,
        name: str = "newspulse-scoring",
    ) -> None:
        self.source = source
        self.driver = BatchDriver(processor, counters, max_attempts=max_attempts, backoff=backoff, classify_failure=classify_failure)
        self.scoring = ScoringStage(processor, name)
        self.max_wait_s = batch_max_wait_ms / 1000
        PAUSE_LIMIT.labels(counters.source).set(max_paused_s)
        self._pending: list[RawMessage] = []
        self._batch_started: float | None = None
        self._last_arrival = 0.0
        self._inflight: Inflight | None = None
        self._ended = False

    @property
    def in_hand(self) -> int:
        """Messages gathered or in flight, not yet acknowledged."""
        return len(self._pending) + (len(self._inflight.messages) if self._inflight is not None else 0)

    def run(self, stop: threading.Event) -> None:
        """Process until ``stop`` is set or the source ends, then finish what is in hand.

        Raises :class:`~newspulse.errors.PermanentFailure` when retrying cannot help (the batch
        in hand is not acknowledged)."""
        try:
            while not stop.is_set() and not self._ended:
                self._gather()
                if self._inflight is not None:
                    if self._inflight.scored.done() and not self._finish_inflight():
                        return
                elif self._batch_due():
                    self._inflight = self._start()
            if self.in_hand:
                log.info("%s: finishing the %d message(s) in hand", self.driver.counters.source, self.in_hand)
            while self._inflight is not None or self._pending:
                if self._inflight is None:
                    self._inflight = self._start()
                if not self._finish_inflight():
                    return
        finally:
            self.scoring.close()

    def _gather(self) -> None:
        """Poll the source for the next batch: idle, wait up to :data:`IDLE_POLL_S`; with a
        partial batch, until it is due; while a batch is scored, only what has arrived."""
        scoring = self._inflight is not None and not self._inflight.scored.done()
        if scoring:  # messages that arrive while a batch is scored form the next one
            futures.wait([self._inflight.scored], timeout=BUSY_POLL_S)
        room = self.source.batch_limit - len(self._pending)
        if room <= 0:
            return  # a full batch waits for the scoring thread: fetch no more
        if scoring:
            timeout = 0.0
        elif self._pending:
            timeout = max(0.0, self._partial_batch_ends() - time.monotonic())
        else:
            timeout = IDLE_POLL_S
        polled = self.source.poll(room, timeout)
        if polled is None:
            self._ended = True
            return
        if polled:
            self._pending.extend(polled)
            self._last_arrival = time.monotonic()
        self._keep()

    def _keep(self) -> None:
        self._pending = self.source.keep(self._pending)
        if not self._pending:
            self._batch_started = None
        elif self._batch_started is None:
            self._batch_started = time.monotonic()

    def _partial_batch_ends(self) -> float:
        """When a partial batch goes: once no message came for :meth:`ScoringStage.gap_s`, or
        ``batch_max_wait_ms`` after its first message, whichever is sooner."""
        assert self._batch_started is not None
        return min(self._batch_started + self.max_wait_s, self._last_arrival + self.scoring.gap_s(self.max_wait_s))

    def _batch_due(self) -> bool:
        if not self._pending:
            return False
        return len(self._pending) >= self.source.batch_limit or time.monotonic() >= self._partial_batch_ends()

    def _start(self) -> Inflight:
        """Hand the gathered messages to the scoring thread."""
        batch, self._pending, self._batch_started = self._pending, [], None
        return Inflight(batch, self.scoring.submit(batch))

    def _finish_inflight(self) -> bool:
        """Write and acknowledge the batch in flight while the gathered messages (if any) are
        scored as the next one; False when the source asked to stop."""
        done, self._inflight = self._inflight, None
        assert done is not None
        nxt = self._start() if self._pending else None
        prepared: Prepared = done.scored.result()
        paused = self.driver.paused_seconds
        t0 = time.perf_counter()
        outcomes = self.driver.run(done.messages, lambda seconds: self.source.pause(seconds, done.messages), prepared)
        working = prepared.seconds + time.perf_counter() - t0 - (self.driver.paused_seconds - paused)
        go_on = self.source.ack(done.messages, outcomes, working)
        self._inflight = nxt
        self._keep()
        return go_on


#: How a source waits between retries: returns False when the source wants the batch back
#: (it is stopping, or lost the messages' partitions); the Kafka source keeps polling meanwhile.
Wait = Callable[[float], bool]


class BatchDriver:
    """The one retry/dead-letter policy, shared by every source (the runner drives it).

    ``run`` keeps a batch until every message has a final fate:

    * unavailable store or broker (transient): pause (gauge ``newspulse_pipeline_paused``),
      back off, retry, for as long as it takes; never dead-letter, never count an attempt;
    * a permanent failure: raise :class:`PermanentFailure` (the process stops, nothing acked);
    * any other error (a bug, a message the model chokes on): retry the batch up to
      ``max_attempts`` times, then process it message by message and dead-letter the ones that
      still fail, with the error;
    * a document a sink refuses: retried up to ``max_attempts`` times, then dead-lettered.
    """

    def __init__(
        self,
        processor: Processor,
        counters: Counters,
        *,
        max_attempts: int = 5,
        backoff: Backoff = Backoff(),
        classify_failure: FailureClassifier = classify,
    ) -> None:
        self.processor = processor
        self.counters = counters
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.classify = classify_failure
        self.paused_since: float | None = None
        #: Seconds spent paused so far (the Kafka source keeps it out of its batch timing).
        self.paused_seconds = 0.0
        self._outages = 0

    def run(self, messages: Sequence[RawMessage], wait: Wait, prepared: Prepared | None = None) -> list[Outcome]:
        """Outcomes in input order; all final unless ``wait`` returned False (then the rest are
        ``retry`` and the source must hand them out again).

        ``prepared``: the batch already through :meth:`Processor.prepare` (a
        :class:`ScoringStage` scored it while the previous batch was written); otherwise it is
        prepared here. Either way each message is parsed once: retries reuse its Article."""
        if prepared is None:
            prepared = self.processor.prepare(messages)
        final: dict[int, Outcome] = {}
        todo: list[tuple[int, RawMessage]] = list(enumerate(prepared.messages))
        refusals: dict[int, int] = {}
        errors = 0
        isolating = False
        self.counters.batches += 1
        first: Prepared | None = prepared
        while todo:
            chunk = todo[:1] if isolating else todo
            try:
                if first is not None:  # the first attempt: scored already, only the writes are left
                    attempt, first = first, None
                    if attempt.error is not None:
                        raise attempt.error
                    result = self.processor.commit(attempt)
                else:
                    result = self.processor.process([m for _, m in chunk])
            except Exception as err:
                kind = self.classify(err)
                reason = f"{type(err).__name__}: {err}"
                if kind is Failure.permanent:
                    self._resume()
                    if isinstance(err, PermanentFailure):
                        raise
                    raise PermanentFailure(reason) from err
                if kind is Failure.transient:
                    if not self._pause(reason, wait):
                        return self._handed_back(messages, final)
                    continue
                errors += 1
                self.counters.note_error(reason)
                if isolating or (len(chunk) == 1 and errors >= self.max_attempts):
                    pos, msg = chunk[0]
                    why = f"processing failed alone after its batch failed {self.max_attempts} times" if isolating else f"processing failed {errors} times"
                    letters = self._dead_letter([(msg, f"{why}: {reason}")], wait)
                    if letters is None:
                        return self._handed_back(messages, final)
                    final[pos] = letters[0]
                    todo = todo[1:]
                    continue
                if errors >= self.max_attempts:
                    log.warning("batch of %d failed %d times (%s); processing its messages one by one", len(chunk), errors, reason)
                    isolating = True
                    continue
                log.exception("batch of %d failed (attempt %d/%d)", len(chunk), errors, self.max_attempts)
                self.counters.retried += len(chunk)
                if not wait(self.backoff.delay(errors)):
                    return self._handed_back(messages, final)
                continue
            retry: dict[int, RawMessage] = {}
            unavailable = ""
            give_up: list[tuple[int, RawMessage, str]] = []
            for (pos, _), outcome in zip(chunk, result.outcomes):
                if outcome.fate is not Fate.retry:
                    final[pos] = outcome
                elif outcome.transient:
                    retry[pos], unavailable = outcome.message, outcome.reason
                else:
                    refusals[pos] = refusals.get(pos, 0) + 1
                    if refusals[pos] >= self.max_attempts:
                        give_up.append((pos, outcome.message, f"{outcome.reason} ({refusals[pos]} times)"))
                    else:
                        retry[pos] = outcome.message
            if give_up:
                letters = self._dead_letter([(msg, reason) for _, msg, reason in give_up], wait)
                if letters is None:
                    return self._handed_back(messages, final)
                final.update((pos, letter) for (pos, _, _), letter in zip(give_up, letters))
            todo = [(pos, retry.get(pos, msg)) for pos, msg in todo if pos not in final]
            if not todo:
                break
            if unavailable:
                if not self._pause(unavailable, wait):
                    return self._handed_back(messages, final)
            else:
                self._resume()
                if retry:  # documents a sink refused: back off before the next attempt
                    self.counters.retried += len(retry)
                    if not wait(self.backoff.delay(max(refusals[p] for p in retry))):
                        return self._handed_back(messages, final)
        self._resume()
        return [final[i] for i in range(len(messages))]

    def _dead_letter(self, items: list[tuple[RawMessage, str]], wait: Wait) -> list[Outcome] | None:
        """Dead-letter what the policy gave up on, waiting out an unavailable sink; None if the
        source asked for the batch back meanwhile."""
        while True:
            try:
                letters = self.processor.dead_letter(items)
            except Exception as err:
                if self.classify(err) is not Failure.transient:
                    raise
                if not self._pause(f"dead-letter sink: {type(err).__name__}: {err}", wait):
                    return None
                continue
            return letters

    def _pause(self, reason: str, wait: Wait) -> bool:
        self._outages += 1
        self.counters.infrastructure_retries += 1
        INFRASTRUCTURE_RETRIES.labels(self.counters.source).inc()
        self.counters.note_error(reason)
        delay = self.backoff.delay(self._outages)
        if self.paused_since is None:
            self.paused_since = time.monotonic()
            PAUSED.labels(self.counters.source).set(1)
            PAUSED_SINCE.labels(self.counters.source).set(time.time())
            log.error("%s paused: store or broker unavailable (%s); retrying with backoff until it is back", self.counters.source, reason)
        else:
            log.warning("%s still paused after %.0fs (%s); next retry in %.1fs", self.counters.source, time.monotonic() - self.paused_since, reason, delay)
        return wait(delay)

    def _resume(self) -> None:
        if self.paused_since is not None:
            paused = time.monotonic() - self.paused_since
            self.paused_seconds += paused
            log.warning("%s resumed after %.0fs paused (%d retries)", self.counters.source, paused, self._outages)
            PAUSED.labels(self.counters.source).set(0)
            PAUSED_SINCE.labels(self.counters.source).set(0)
            self.paused_since = None
        self._outages = 0

    def _handed_back(self, messages: Sequence[RawMessage], final: dict[int, Outcome]) -> list[Outcome]:
        self._resume()
        return [final.get(i) or Outcome(msg, Fate.retry, "handed back unfinished") for i, msg in enumerate(messages)]


class ScoringStage:
    """Classifies the next batch on its own thread while the source summarises, writes and
    acknowledges the current one, so a store write (or the alerter) never stalls scoring.

    One thread, first in first out, and a source keeps at most one batch in it besides the one
    it is writing: memory stays bounded and batches are still written and acknowledged in
    order, each only after its sink writes succeeded. :meth:`Processor.prepare` does no I/O, so
    nothing here needs the retry policy: the :class:`BatchDriver` applies it when the source
    writes the batch (an enrichment error travels in :attr:`Prepared.error`).
    """

    def __init__(self, processor: Processor, name: str = "newspulse-scoring") -> None:
        self.processor = processor
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        #: Seconds per message of the last batch prepared (the partial-batch wait adapts to it).
        self.per_message_s = 0.0

    def submit(self, messages: Sequence[RawMessage]) -> Future:
        """Start preparing ``messages``; the Future's result is their :class:`Prepared`."""
        return self._pool.submit(self._prepare, list(messages))

    def _prepare(self, messages: list[RawMessage]) -> Prepared:
        prepared = self.processor.prepare(messages)
        self.per_message_s = prepared.seconds / max(1, len(messages))
        return prepared

    def gap_s(self, max_wait_s: float) -> float:
        """How long an idle source lets a partial batch wait for its next message: about the
        time one message takes to score. A burst is gathered whole (its messages come closer
        than that); a trickle goes at once instead of waiting out ``max_wait_s``, which stays
        the cap on the whole wait. Under load the next batch fills while one is scored."""
        return min(max_wait_s, self.per_message_s)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
