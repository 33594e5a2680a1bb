"""Embedded mode: an in-process bounded queue feeding the processing core.

The queue is one :class:`~newspulse.runner.Source` of the shared source loop
(:class:`~newspulse.runner.SourceRunner`), run on a worker thread. It receives a built
Processor; :func:`newspulse.wiring.open_embedded` builds the production one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from newspulse.errors import NewsPulseError, PermanentFailure
from newspulse.pipeline import Counters, Fate, Outcome, Processor, RawMessage
from newspulse.retrying import Backoff
from newspulse.runner import SourceRunner
from newspulse.schema import Article
from newspulse.settings import Settings

log = logging.getLogger(__name__)


_STOP = object()

#: How often a blocked ``submit`` or ``close`` checks that the worker is still alive.
_LIVENESS_S = 0.2


class PipelineStopped(NewsPulseError, RuntimeError):
    """The embedded worker has stopped (a permanent failure, a bug) or the pipeline was closed:
    the message says why and how many submitted messages were not processed (the CLI prints it
    and exits 1; a bug's traceback is in the log)."""


class EmbeddedSource:
    """The bounded queue as a :class:`~newspulse.runner.Source`: messages are acknowledged by
    counting them (and telling ``on_settled``); ``close`` giving up (``abandon``) hands the batch
    in hand back unfinished."""

    def __init__(
        self, messages: queue.Queue, counters: Counters, batch_limit: int, on_settled: Callable[[Sequence[Outcome]], None] | None = None
    ) -> None:
        self.batch_limit = batch_limit
        self.counters = counters
        self.on_settled = on_settled
        self.abandon = threading.Event()
        self._queue = messages
        self._ended = False

    def poll(self, max_records: int, timeout_s: float) -> list[RawMessage] | None:
        """What is queued, waiting ``timeout_s`` for the first; None after the stop marker."""
        if self._ended:
            return None
        batch: list[RawMessage] = []
        try:
            item = self._queue.get(timeout=timeout_s) if timeout_s > 0 else self._queue.get_nowait()
            while True:
                if item is _STOP:
                    self._ended = True
                    break
                batch.append(item)
                if len(batch) >= max_records:
                    break
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        return batch

    def keep(self, messages: list[RawMessage]) -> list[RawMessage]:
        return messages

    def pause(self, seconds: float, messages: Sequence[RawMessage]) -> bool:
        return not self.abandon.wait(seconds)

    def ack(self, messages: list[RawMessage], outcomes: list[Outcome], seconds: float) -> bool:
        """Count the settled outcomes; False when ``close`` gave up waiting (the rest of the
        batch stays pending, not acknowledged)."""
        settled = [o for o in outcomes if o.fate is not Fate.retry]  # a retry: close() gave up waiting
        self.counters.settle(settled)
        if self.on_settled is not None and settled:
            try:
                self.on_settled(settled)
            except Exception:  # the stories are stored: a listener's failure only means they may be offered again
                log.exception("on_settled listener failed on %d settled messages", len(settled))
        return len(settled) == len(outcomes)


class EmbeddedPipeline:
    """Bounded in-process queue + a worker thread that micro-batches into a Processor, with a
    scoring thread beside it (:class:`~newspulse.runner.ScoringStage`): the next batch is
    classified while the worker summarises the current one, writes it to the store and shows it
    to the alerter.

    ``submit`` blocks while the queue is full: back-pressure instead of unbounded memory, and
    during a store outage the queue stays full until the store is back. The worker runs every
    batch through the shared :class:`~newspulse.runner.SourceRunner`: an unavailable store
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
        self.finite = finite
        self.processor = processor
        self.counters = Counters(source="embedded")
        self.failure: BaseException | None = None
        self._closed = False
        self._queue: queue.Queue = queue.Queue(maxsize=settings.queue_max_items)
        self.source = EmbeddedSource(self._queue, self.counters, settings.batch_max_records, on_settled)
        self.runner = SourceRunner(
            self.source, processor, self.counters, batch_max_wait_ms=settings.batch_max_wait_ms, max_paused_s=settings.max_paused_s, max_attempts=max_attempts, backoff=backoff
        )
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
            self.source.abandon.set()
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

    def _run(self) -> None:
        """The worker thread. Whatever stops it is kept in ``failure`` for submit/close to raise."""
        try:
            self.runner.run(threading.Event())
        except BaseException as err:  # noqa: BLE001 - never die silently: submit/close raise it
            self.failure = err
            log.critical("embedded pipeline stopped: %s: %s", type(err).__name__, err, exc_info=not isinstance(err, PermanentFailure))
