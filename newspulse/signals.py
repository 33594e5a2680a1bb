"""SIGINT and SIGTERM as a request to stop, for every long-running loop.

The commands (``newspulse demo``, ``crawl``, ``alerts run``, ``replay``) and the Kafka consumer all
poll a ``threading.Event`` instead of dying mid-batch, so they can finish the batch, commit,
close and stop their children first. One helper sets that event, in the kernel so a plugin (the
Kafka consumer) and the applications share it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def stop_on_signals(stop: threading.Event | None = None, *, on_signal: Callable[[str], None] | None = None) -> Iterator[threading.Event]:
    """An event (``stop``, or a new one) that SIGINT or SIGTERM sets while the block runs; the
    previous handlers come back after it. ``on_signal`` gets the signal's name first (to log what
    the loop will do now).

    Python lets only the main thread install handlers: elsewhere (a test running a loop in a
    thread) the block runs with the event alone, which its caller sets.
    """
    stop = stop if stop is not None else threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handle(signum: int, _frame: object) -> None:
        if on_signal is not None:
            on_signal(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
