"""Alerting that cannot be wedged (issue 29, items 2, 3, 4, 8, 13 and 16): a store error as an
alert fires pauses the alerter instead of losing the alert, one poisoned notification never
holds back the others, a webhook secret never shows in an error, a replay never re-sends what
was delivered, a ticker cannot forge a log line, and an acknowledgement keeps its author.

Real SQLite stores, a real webhook endpoint and a real SMTP server on loopback; failures are
injected by a store whose alert writes raise StoreUnavailable, as a locked SQLite file does."""

from __future__ import annotations

import io
import logging
import socketserver
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from alert_streams import scored, windowed
from test_alerts_delivery import T0, Clock, Receiver, SMTPHandler, free_port, rules, spike_stream
from test_pipeline import FirstSentence, KeywordClassifier, raw

from newspulse.alerts import ack_alert, service
from newspulse.alerts.checkpoint import Checkpoint
from newspulse.alerts.delivery import LogNotifier
from newspulse.alerts.rules import RulesError, parse_rules
from newspulse.alerts.service import Alerter
from newspulse.alerts.silences import SilenceBook
from newspulse.logs import TEXT_FORMAT, TextFormatter
from newspulse.pipeline import Fate, Processor, RawMessage
from newspulse.retrying import Backoff
from newspulse.schema import Alert, AlertStatus
from newspulse.store.base import StoreUnavailable
from newspulse.store.sink import StoreSink
from newspulse.store.sqlite import SQLiteStore

#: The end of the spike window of spike_stream(), and a wall clock a few minutes after it.
SPIKE_END = T0 + timedelta(minutes=15 * 9)
LIVE_NOW = SPIKE_END + timedelta(minutes=5)


class FlakyStore(SQLiteStore):
    """A real SQLite store whose next ``failures`` alert writes fail as a locked file does."""

    failures = 0
    alert_writes = 0

    def upsert_alerts(self, alerts):
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable(f"SQLite store {self.path}: writing {len(alerts)} alerts failed: database is locked")
        self.alert_writes += 1
        return super().upsert_alerts(alerts)


def alerter(store, tmp_path: Path, url: str, clock, *, checkpoint: Checkpoint | None = None, yaml: str | None = None) -> Alerter:
    return Alerter(parse_rules(yaml or rules(url)), store, SilenceBook(tmp_path / "silences.json"), clock=clock, background=False, checkpoint=checkpoint)


# --- 2: a store error as an alert fires ---------------------------------------------------
def test_store_error_as_an_alert_fires_pauses_and_delivers_once_the_store_is_back(tmp_path):
    store = FlakyStore(tmp_path / "a.db")
    rx = Receiver(free_port())
    try:
        a = alerter(store, tmp_path, f"http://127.0.0.1:{rx.port}/hook", Clock(T0 + timedelta(days=30)))
        store.failures = 2
        with pytest.raises(StoreUnavailable):
            a.observe(spike_stream())  # the window closes and fires; its write fails
        assert store.list_alerts() == []
        assert a.deliver_pending() == 0  # nothing goes out before the alert is stored
        assert rx.requests == []
        assert a.deliver_pending() == 1  # the store is back: stored, then sent
        assert a.deliver_pending() == 0
    finally:
        rx.stop()
    (alert,) = store.list_alerts()
    assert alert.status == AlertStatus.firing and alert.delivery == {"hook:firing": "delivered"}
    assert len(rx.requests) == 1


def test_store_error_as_an_alert_fires_does_not_stop_the_service_loop(tmp_path, monkeypatch):
    """``alerts run`` following the store: StoreUnavailable on upsert_alerts does not escape
    the loop; it backs off, retries and delivers the alert once."""
    monkeypatch.setattr(service, "STORE_BACKOFF", Backoff(first_s=0.05, max_s=0.2))
    store = FlakyStore(tmp_path / "a.db")
    store.upsert_articles(spike_stream())
    store.failures = 3
    rx = Receiver(free_port())
    stop = threading.Event()
    a = Alerter(parse_rules(rules(f"http://127.0.0.1:{rx.port}/hook")), store, SilenceBook(tmp_path / "s.json"), clock=Clock(T0 + timedelta(days=30)))
    runner = threading.Thread(target=a.run_forever, kwargs={"stop": stop, "poll_seconds": 0.05})
    runner.start()
    try:
        deadline = time.monotonic() + 20
        while not rx.requests and runner.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runner.is_alive(), "the service loop died on the store error"
        time.sleep(0.5)  # more passes: still exactly one POST
    finally:
        stop.set()
        runner.join(10)
        rx.stop()
    assert store.failures == 0 and len(rx.requests) == 1
    assert store.list_alerts()[0].delivery == {"hook:firing": "delivered"}


def test_restart_after_a_store_error_as_an_alert_fires_re_evaluates_the_window(tmp_path):
    """The alerter dies while the alert it raised waits for the store; the next one warms up
    from the stored history and evaluates the windows after the checkpoint: the alert fires
    once. (Before, the warm-up evaluated nothing: 0 alerts, 0 notifications.)"""
    store = FlakyStore(tmp_path / "a.db")
    arts = spike_stream()
    store.upsert_articles(arts)
    checkpoint = tmp_path / "checkpoint.json"
    rx = Receiver(free_port())
    url = f"http://127.0.0.1:{rx.port}/hook"
    try:
        first = alerter(store, tmp_path, url, Clock(LIVE_NOW), checkpoint=Checkpoint(checkpoint, "a.db"))
        spike_start = T0 + timedelta(minutes=15 * 8)
        first.observe([x for x in arts if x.published_at < spike_start])  # history: closes 7 windows durably
        assert first.checkpoint.read() is not None
        store.failures = 1
        with pytest.raises(StoreUnavailable):
            first.observe([x for x in arts if x.published_at >= spike_start])
        del first  # killed before the store came back
        assert store.list_alerts() == [] and rx.requests == []

        second = alerter(store, tmp_path, url, Clock(LIVE_NOW + timedelta(minutes=1)), checkpoint=Checkpoint(checkpoint, "a.db"))
        second.recover()
        assert second.deliver_pending() == 1
        third = alerter(store, tmp_path, url, Clock(LIVE_NOW + timedelta(minutes=2)), checkpoint=Checkpoint(checkpoint, "a.db"))
        third.recover()  # a second restart finds the windows closed durably: nothing again
        assert third.deliver_pending() == 0
    finally:
        rx.stop()
    (alert,) = store.list_alerts()
    assert alert.status == AlertStatus.firing and alert.delivery == {"hook:firing": "delivered"}
    assert len(rx.requests) == 1


def test_checkpoint_of_another_store_is_ignored(tmp_path):
    path = tmp_path / "checkpoint.json"
    Checkpoint(path, "store-a").write(T0)
    assert Checkpoint(path, "store-a").read() == T0
    assert Checkpoint(path, "store-b").read() is None
    path.write_text("{not json")
    assert Checkpoint(path, "store-a").read() is None


# --- 3: one bad notification blocks every delivery ------------------------------------------
def email_rules(port: int) -> str:
    """The delivery tests' rule with an e-mail receiver instead of the webhook."""
    mail = f"mail: {{type: email, smtp_host: 127.0.0.1, smtp_port: {port}, starttls: false, sender: alerts@np.test, to: [desk@np.test], min_backoff_seconds: 0.2}}"
    yaml = rules("")
    hook = next(line for line in yaml.splitlines() if line.strip().startswith("hook:"))
    return yaml.replace(hook.strip(), mail).replace("receivers: [hook]", "receivers: [mail]")


def test_one_bad_notification_does_not_block_the_others(tmp_path):
    """A ticker with ``\\r\\n`` (read from a store written before validation refused it) makes
    the mail library refuse the subject: that notice is failed permanently with its reason,
    and the clean alert beside it is delivered, in the same pass and in every later one."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), SMTPHandler)
    server.messages = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    store = SQLiteStore(tmp_path / "a.db")
    clock = Clock(T0 + timedelta(days=30))
    try:
        a = alerter(store, tmp_path, "", clock, yaml=email_rules(server.server_address[1]))
        plan = [(4, 1)] * 8 + [(6, 6)]
        a.observe(windowed(T0, 15, plan, ticker="AC\r\nME") + windowed(T0, 15, plan, ticker="GOOD") + [scored(SPIKE_END + timedelta(seconds=1), tickers=["OTHER"])])
        assert a.deliver_pending() == 1
        clock.now += timedelta(hours=1)
        assert a.deliver_pending() == 0  # the bad one is not retried
    finally:
        server.shutdown()
        server.server_close()
        store.close()
    by_scope = {x.scope: x.delivery["mail:firing"] for x in SQLiteStore(tmp_path / "a.db").list_alerts()}
    assert by_scope["ticker:GOOD"] == "delivered"
    assert by_scope["ticker:AC\r\nME"].startswith("failed permanently: ValueError: ")
    (message,) = server.messages  # type: ignore[attr-defined]
    assert "ticker:GOOD" in message


@pytest.mark.parametrize("field", ["tickers", "topics", "source"])
def test_control_characters_in_tickers_topics_sources_are_dead_lettered_with_a_reason(tmp_path, field):
    store = SQLiteStore(tmp_path / "a.db")
    sink = StoreSink(store)
    value = "AC\r\nME" if field != "source" else "wire\x1b[31m"
    message = RawMessage({**raw(1), field: [value] if field != "source" else value})
    [outcome] = Processor(KeywordClassifier(), FirstSentence(), [sink], sink).process([message]).outcomes
    assert outcome.fate is Fate.dead_lettered
    assert "contains control character U+00" in outcome.reason and "\n" not in outcome.reason
    assert store.stats()["articles"] == 0 and len(store.list_dead_letters()) == 1
    store.close()


# --- 4: webhook secret in errors ----------------------------------------------------------
def test_webhook_secret_with_a_trailing_newline_is_stripped_and_never_shown(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HOOK_TOKEN", "S3CRET-TOKEN-42\n")  # as read from a secret file
    echo = Receiver(free_port(), status=500)  # an error page that echoes the request's headers
    url = f"http://127.0.0.1:{echo.port}/hook"
    yaml = rules(url).replace("timeout_seconds: 2,", 'timeout_seconds: 2, headers: {Authorization: "Bearer ${HOOK_TOKEN}"},')
    assert parse_rules(yaml).receivers["hook"].headers == {"Authorization": "Bearer S3CRET-TOKEN-42"}

    store = SQLiteStore(tmp_path / "a.db")
    original = echo.server.RequestHandlerClass.do_POST

    def echo_headers(handler) -> None:
        handler.rfile.read(int(handler.headers["Content-Length"]))
        handler.send_response(500)
        handler.end_headers()
        handler.wfile.write(f"bad request with Authorization: {handler.headers['Authorization']}".encode())
        echo.requests.append(({}, {}))

    echo.server.RequestHandlerClass.do_POST = echo_headers
    try:
        a = alerter(store, tmp_path, url, Clock(T0 + timedelta(days=30)), yaml=yaml)
        a.observe(spike_stream())
        with caplog.at_level(logging.WARNING):
            a.deliver_pending()
    finally:
        echo.server.RequestHandlerClass.do_POST = original
        echo.stop()
    status = store.list_alerts()[0].delivery["hook:firing"]
    assert status.startswith("failed (attempt 1): HTTP 500") and "Authorization: ***" in status
    assert "S3CRET" not in status and "S3CRET" not in caplog.text and "HTTP 500" in caplog.text
    store.close()


def test_webhook_header_with_an_inner_control_character_is_refused_without_its_value(monkeypatch):
    monkeypatch.setenv("HOOK_TOKEN", "S3CRET\r\nX-Injected: 1")
    with pytest.raises(RulesError) as err:
        parse_rules(rules("http://127.0.0.1:9/hook").replace("timeout_seconds: 2,", 'timeout_seconds: 2, headers: {Authorization: "Bearer ${HOOK_TOKEN}"},'))
    assert "header 'Authorization' contains control character U+000D (value not shown)" in str(err.value)
    assert "S3CRET" not in str(err.value)


# --- 8: replaying a corpus twice ----------------------------------------------------------
def test_replaying_a_corpus_twice_does_not_resend_delivered_notices(tmp_path):
    store = SQLiteStore(tmp_path / "a.db")
    rx = Receiver(free_port())

    def replay() -> int:
        """One `newspulse replay` of the same corpus into the store; POSTs received so far."""
        a = alerter(store, tmp_path, f"http://127.0.0.1:{rx.port}/hook", Clock(T0 + timedelta(days=30)))
        a.recover()
        a.observe(spike_stream() + windowed(SPIKE_END, 15, [(4, 0)] * 3) + [scored(SPIKE_END + timedelta(minutes=46), tickers=["OTHER"])])
        a.flush()
        a.deliver_pending()
        return len(rx.requests)

    try:
        assert replay() == 2  # firing and resolved
        assert replay() == 2  # nothing sent again
    finally:
        rx.stop()
    (alert,) = store.list_alerts()
    assert alert.delivery == {"hook:firing": "delivered", "hook:resolved": "delivered"}
    store.close()


# --- 13: text-format log injection ----------------------------------------------------------
def test_ticker_with_a_newline_cannot_forge_a_text_log_line():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter(TEXT_FORMAT))
    notify = logging.getLogger("newspulse.alerts.notify")
    notify.addHandler(handler)
    try:
        forged = "ACME\n2026-03-02 09:00:00,000 INFO newspulse.alerts.service: all clear\u2028"
        alert = Alert(id="a1", scope=f"ticker:{forged}", status=AlertStatus.firing, window_minutes=15, started_at=T0, updated_at=T0, magnitude=5.0, baseline=0.2, value=0.9, volume=10)
        LogNotifier().send(alert, "firing", "a1:firing")
    finally:
        notify.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert "ticker:ACME\\n2026-03-02 09:00:00,000 INFO" in lines[0] and "\\u2028" in lines[0]


# --- 16: who acknowledged an alert ----------------------------------------------------------
def test_who_acknowledged_an_alert_is_kept_at_the_next_window(tmp_path):
    store = SQLiteStore(tmp_path / "a.db")
    analyst = SQLiteStore(tmp_path / "a.db")
    a = alerter(store, tmp_path, "", Clock(T0 + timedelta(days=30)), yaml=rules("").replace("receivers: [hook]", "receivers: []"))
    a.observe(spike_stream())
    (alert,) = store.list_alerts()
    ack_alert(analyst, alert.id, by="alice")
    a.observe(windowed(SPIKE_END, 15, [(6, 6), (6, 5)]) + [scored(SPIKE_END + timedelta(minutes=31), tickers=["OTHER"])])  # still spiking
    got = analyst.get_alert(alert.id)
    assert got.updated_at > alert.updated_at and got.status == AlertStatus.firing  # the alerter wrote it again
    assert got.acknowledged and got.acknowledged_by == "alice"
    store.close()
    analyst.close()
