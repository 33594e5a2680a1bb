"""The one retry policy: how long to wait between attempts, and how long to keep trying.

An outage is retried by one layer with one clock. The clients of the peers never retry: the
Elasticsearch store (``newspulse.store.elastic``) and the Kafka client (``newspulse.kafka.client``)
make one attempt, bounded by a timeout (``NEWSPULSE_ES_REQUEST_TIMEOUT_S``,
``NEWSPULSE_KAFKA_CONNECT_TIMEOUT_S``), and raise a typed error: transient
(:class:`~newspulse.errors.Unavailable`: ``StoreUnavailable``, ``BrokerUnreachable``) or
permanent (:class:`~newspulse.errors.PermanentFailure`). Whoever called them owns the clock:

* the **batch driver** (:class:`newspulse.runner.BatchDriver`) owns the outage clock of the
  stream: a store or broker that is down pauses the batch and retries it with :class:`Backoff`
  for as long as it takes (the health check turns unhealthy after ``NEWSPULSE_MAX_PAUSED_S``).
  A bulk write that the store took only in part is retried for the rest only;
* the **alerter** keeps its unsaved changes through a store outage and retries them with its
  own backoff (``newspulse.alerts.service``);
* a one-shot command that must reach a peer before it can start (creating topics, connecting
  a consumer, ``store init``), and a dashboard loader, calls :func:`retry_until` at the call site with its own stated
  deadline (for a broker through ``newspulse.kafka.client.until_reached``) and then stops with
  the last error, as one line.

docs/architecture.md ("Who retries what") has the table of layers and clocks.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff: ``first_s``, doubling, at most ``max_s``; ``jitter`` spreads
    each delay by up to that fraction either way, so clients that failed together (every
    processor of a group when the broker restarts) don't retry in step."""

    first_s: float = 0.2
    max_s: float = 10.0
    jitter: float = 0.0

    def delay(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (1 = the first retry)."""
        base = min(self.max_s, self.first_s * 2 ** max(0, attempt - 1))
        return base * random.uniform(1 - self.jitter, 1 + self.jitter) if self.jitter else base


def retry_until(
    action: Callable[[], T],
    what: str,
    *,
    timeout_s: float,
    transient: Callable[[BaseException], bool],
    backoff: Backoff = Backoff(),
    stop: threading.Event | None = None,
) -> T:
    """Run ``action`` until it succeeds, backing off between attempts that fail with an error
    ``transient`` accepts, for at most ``timeout_s`` (a retry that would start past it is not
    made). Other errors, the last transient one, and any error once ``stop`` is set propagate."""
    deadline = time.monotonic() + timeout_s
    attempt = 1
    while True:
        try:
            return action()
        except Exception as err:
            delay = backoff.delay(attempt)
            if not transient(err) or time.monotonic() + delay > deadline or (stop is not None and stop.is_set()):
                raise
            log.warning("%s failed (attempt %d, retrying in %.1fs): %s", what, attempt, delay, err)
            if stop is not None:
                stop.wait(delay)
            else:
                time.sleep(delay)
            attempt += 1
