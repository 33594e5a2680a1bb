"""Embedded mode: an in-process bounded queue feeding the processing core.

It receives a built Processor; :func:`newspulse.wiring.open_embedded` builds the production one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from newspulse.errors import NewsPulseError, PermanentFailure
from newspulse.pipeline import Backoff, BatchDriver, Counters, Fate, Outcome, Processor, RawMessage, ScoringStage
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


_STOP = object()

#: How often a blocked ``submit`` or ``close`` checks that the worker is still alive.
_LIVENESS_S = 0.2
#: How often the worker, gathering the next batch, checks whether the one in flight is scored.
_GATHER_S = 0.01


class PipelineStopped(NewsPulseError, RuntimeError):
    """The embedded worker has stopped (a permanent failure, a bug) or the pipeline was closed:
    the message says why and how many submitted messages were not processed (the CLI prints it
    and exits 1; a bug's traceback is in the log)."""


class EmbeddedPipeline:
    """Bounded in-process queue + a worker thread that micro-batches into a Processor, with a
    scoring thread beside it (:class:`~newspulse.pipeline.ScoringStage`): the next batch is
    classified while the worker summarises the current one, writes it to the store and shows it
    to the alerter.

    ``submit`` blocks while the queue is full: back-pressure instead of unbounded memory, and
    during a store outage the queue stays full until the store is back. The worker runs every
    batch through the shared :class:`~newspulse.pipeline.BatchDriver`: an unavailable store
    pauses it (retrying with backoff for as long as it takes, nothing dead-lettered); a
    permanent failure (a bad credential, say) stops it, and ``submit``/``close`` then raise
    :class:`PipelineStopped` with the reason. The worker never dies silently.
    """

    def __init__(
        self, settings: Settings, processor: Processor, *, finite: bool = False, max_attempts: int = 5, backoff: Backoff = Backoff(),
        on_settled: Callable[[Sequence[Outcome]], None] | None = None,
    ) -> None:
        """``on_settled`` hears every batch's final outcomes once they are durable (stored,
        dead-lettered, duplicates): the crawler marks its stories seen only then."""
        self.settings = settings
        self.on_settled = on_settled
        self.finite = finite
        self.processor = processor
        self.counters = Counters(source="embedded")
        self.driver = BatchDriver(processor, self.counters, max_attempts=max_attempts, backoff=backoff)
        self.scoring = ScoringStage(processor)
        self.failure: BaseException | None = None
        self._abandon = threading.Event()
        self._closed = False
        self._queue: queue.Queue = queue.Queue(maxsize=settings.queue_max_items)
        self._worker = threading.Thread(target=self._run, name="newspulse-embedded", daemon=True)
        self._worker.start()

    def __enter__(self) -> "EmbeddedPipeline":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(end_of_stream=exc[0] is None and self.finite)

    def submit(self, item: Article | dict | bytes | str, origin: str = "embedded", *, timeout: float | None = None) -> None:
        """Queue one message; blocks while the queue is full (``timeout``: then raise queue.Full).

        An Article goes through as it is (already validated: not parsed again)."""
        msg = RawMessage(payload=None, origin=origin, article=item) if isinstance(item, Article) else RawMessage(payload=item, origin=origin)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._check_running()
            wait = _LIVENESS_S if deadline is None else min(_LIVENESS_S, deadline - time.monotonic())
            try:
                self._queue.put(msg, timeout=max(0.0, wait))
                break
            except queue.Full:
                if deadline is not None and time.monotonic() >= deadline:
                    raise queue.Full(f"embedded queue full ({self._queue.maxsize} messages) for {timeout}s; {self._state()}") from None
        self.counters.receive()

    def close(self, timeout: float | None = None, *, end_of_stream: bool = False) -> None:
        """Process everything submitted so far, then stop the worker and the observers.

        Waits through a store outage for as long as it takes (or ``timeout`` seconds: then
        raises TimeoutError saying how many messages are still queued). Raises
        :class:`PipelineStopped` if the worker stopped on a failure, with its reason.
        ``end_of_stream``: see :meth:`Processor.close`.
        """
        if self._closed:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.failure is None:
            while self._worker.is_alive():  # _STOP goes in behind everything submitted
                try:
                    self._queue.put(_STOP, timeout=_LIVENESS_S)
                    break
                except queue.Full:
                    if deadline is not None and time.monotonic() >= deadline:
                        break
        while self._worker.is_alive() and (deadline is None or time.monotonic() < deadline):
            self._worker.join(_LIVENESS_S if deadline is None else min(_LIVENESS_S, max(0.0, deadline - time.monotonic())))
        if self._worker.is_alive():
            self._abandon.set()
            raise TimeoutError(f"embedded pipeline did not finish within {timeout}s: {self._state()}")
        self._closed = True
        self.processor.close(end_of_stream=end_of_stream and self.failure is None)
        if self.failure is not None:
            raise PipelineStopped(f"embedded pipeline stopped: {self.failure}; {self._state()}") from self.failure

    def _state(self) -> str:
        c = self.counters
        return f"{c.pending} of {c.received} submitted messages not processed (stored {c.stored}, dead-lettered {c.dead_lettered}, duplicates {c.duplicate})"

    def _check_running(self) -> None:
        if self.failure is not None:
            raise PipelineStopped(f"embedded pipeline stopped: {self.failure}; {self._state()}") from self.failure
        if self._closed or not self._worker.is_alive():
            raise PipelineStopped("embedded pipeline is closed")

    def _next_batch(self, scoring: Future | None) -> tuple[list[RawMessage], bool]:
        """Up to ``batch_max_records`` messages, and whether the stop marker came.

        Idle (``scoring`` is None): block for the first message, then take more while they come
        within :meth:`ScoringStage.gap_s` of each other (``batch_max_wait_ms`` in all). With a
        batch being scored: gather what arrives until that batch is scored, so the two overlap."""
        batch: list[RawMessage] = []
        deadline, gap = 0.0, 0.0
        if scoring is None:
            first = self._queue.get()
            if first is _STOP:
                return batch, True
            batch.append(first)
            max_wait = self.settings.batch_max_wait_ms / 1000
            deadline, gap = time.monotonic() + max_wait, self.scoring.gap_s(max_wait)
        while len(batch) < self.settings.batch_max_records:
            busy = scoring is not None and not scoring.done()
            timeout = _GATHER_S if busy else (min(gap, deadline - time.monotonic()) if scoring is None else 0.0)
            try:
                item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                if busy:
                    continue
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _run(self) -> None:
        """The worker: batch k+1 is scored on the scoring thread while batch k is written and
        acknowledged here. Whatever stops it is kept in ``failure`` for submit/close to raise."""
        stop = False
        inflight: tuple[list[RawMessage], Future] | None = None
        try:
            while not stop or inflight is not None:
                batch: list[RawMessage] = []
                if not stop:
                    batch, stop = self._next_batch(inflight[1] if inflight is not None else None)
                scoring = (batch, self.scoring.submit(batch)) if batch else None
                if inflight is not None and not self._write(*inflight):
                    return
                inflight = scoring
        except BaseException as err:  # noqa: BLE001 - never die silently: submit/close raise it
            self.failure = err
            log.critical("embedded pipeline stopped: %s: %s", type(err).__name__, err, exc_info=not isinstance(err, PermanentFailure))
        finally:
            self.scoring.close()

    def _write(self, batch: list[RawMessage], scored: Future) -> bool:
        """Write, dead-letter and acknowledge one scored batch through the driver; False when
        close() gave up waiting (the rest of the batch stays pending, not acknowledged)."""
        outcomes = self.driver.run(batch, self._wait, scored.result())
        settled = [o for o in outcomes if o.fate is not Fate.retry]  # a retry: close() gave up waiting
        self.counters.settle(settled)
        if self.on_settled is not None and settled:
            try:
                self.on_settled(settled)
            except Exception:  # the stories are stored: a listener's failure only means they may be offered again
                log.exception("on_settled listener failed on %d settled messages", len(settled))
        return len(settled) == len(outcomes)

    def _wait(self, seconds: float) -> bool:
        return not self._abandon.wait(seconds)
