"""The one SIGINT/SIGTERM helper every long-running loop uses (CLIs and the Kafka consumer)."""

from __future__ import annotations

import os
import signal
import threading

from newspulse.signals import stop_on_signals


def test_a_signal_sets_the_event_names_itself_and_the_old_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    said: list[str] = []
    with stop_on_signals(on_signal=said.append) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
    assert said == ["SIGTERM"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_callers_event_is_the_one_set() -> None:
    mine = threading.Event()
    with stop_on_signals(mine) as stop:
        assert stop is mine
        os.kill(os.getpid(), signal.SIGINT)
        assert mine.wait(5)


def test_off_the_main_thread_it_installs_nothing() -> None:
    """Python allows handlers only on the main thread: a loop run in a worker thread (as tests do)
    gets the event alone."""
    seen: dict[str, object] = {}

    def worker() -> None:
        with stop_on_signals() as stop:
            seen["handler"] = signal.getsignal(signal.SIGTERM)
            seen["set"] = stop.is_set()

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(10)
    assert seen == {"handler": before, "set": False}
