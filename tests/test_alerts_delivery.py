"""Delivery through the outbox to real local receivers: a webhook (http.server in a thread),
a receiver that is down and then comes back (delivered once, after it returns), 4xx rejects,
redelivery after a restart, and e-mail over a minimal SMTP server."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from newspulse.alerts.delivery import EmailNotifier
from newspulse.alerts.rules import ReceiverConfig, parse_rules
from newspulse.alerts.service import Alerter
from newspulse.alerts.silences import SilenceBook
from alert_streams import scored, windowed
from newspulse.schema import Alert, AlertStatus
from newspulse.store.sqlite import SQLiteStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A Slack-like webhook endpoint on a loopback port; answers with ``status``."""

    def __init__(self, port: int, status: int = 200) -> None:
        self.port = port
        self.status = status
        self.requests: list[tuple[dict, dict]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.requests.append((dict(self.headers), json.loads(body)))
                self.send_response(owner.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def rules(url: str) -> str:
    return f"""
allowed_lateness_minutes: 0
receivers:
  hook: {{type: webhook, url: "{url}", timeout_seconds: 2, min_backoff_seconds: 0.2, max_backoff_seconds: 1}}
rules:
  - name: acme
    scope: ticker
    windows: [15]
    hop_minutes: 15
    min_volume: 4
    min_count: 3
    z_threshold: 3
    min_share_delta: 0.25
    cooldown_minutes: 0
    receivers: [hook]
    baseline: {{lookback_windows: 16, min_history: 4, seasonality: false}}
"""


def spike_stream() -> list:
    arts = windowed(T0, 15, [(4, 1)] * 8 + [(6, 6)])
    return arts + [scored(T0 + timedelta(minutes=15 * 9, seconds=1), tickers=["OTHER"])]


@pytest.fixture
def store(tmp_path: Path):
    s = SQLiteStore(tmp_path / "alerts.db")
    yield s
    s.close()


def make(store, tmp_path: Path, url: str, clock=None, background: bool = False) -> Alerter:
    return Alerter(parse_rules(rules(url)), store, SilenceBook(tmp_path / "silences.json"), clock=clock or Clock(T0 + timedelta(days=30)), background=background)


def test_webhook_gets_slack_json_with_a_dedup_key(store, tmp_path):
    rx = Receiver(free_port())
    try:
        alerter = make(store, tmp_path, f"http://127.0.0.1:{rx.port}/hook")
        alerter.observe(spike_stream())
        assert alerter.deliver_pending() == 1
        assert alerter.deliver_pending() == 0
    finally:
        rx.stop()
    (headers, body), = rx.requests
    alert = store.list_alerts()[0]
    assert alert.delivery == {"hook:firing": "delivered"}
    assert headers["Idempotency-Key"] == f"{alert.id}:firing"
    assert "ticker:ACME" in body["text"] and body["blocks"][0]["type"] == "section"
    assert body["newspulse"]["dedup_key"] == f"{alert.id}:firing"
    assert body["newspulse"]["alert"]["status"] == "firing" and body["newspulse"]["alert"]["drivers"]


def test_receiver_down_then_up_is_delivered_once_after_it_returns(store, tmp_path):
    port = free_port()
    clock = Clock(T0 + timedelta(days=30))
    alerter = make(store, tmp_path, f"http://127.0.0.1:{port}/hook", clock=clock)
    alerter.observe(spike_stream())
    assert alerter.deliver_pending() == 0  # nobody listening: connection refused
    status = store.list_alerts()[0].delivery["hook:firing"]
    assert status.startswith("failed (attempt 1)")
    assert alerter.deliver_pending() == 0  # backoff: not retried before it is due
    assert store.list_alerts()[0].delivery["hook:firing"] == status

    rx = Receiver(port)
    try:
        clock.now += timedelta(seconds=5)
        assert alerter.deliver_pending() == 1
        clock.now += timedelta(minutes=10)
        assert alerter.deliver_pending() == 0
    finally:
        rx.stop()
    assert len(rx.requests) == 1
    assert store.list_alerts()[0].delivery == {"hook:firing": "delivered"}


def test_background_outbox_retries_until_the_receiver_is_back(store, tmp_path):
    port = free_port()
    alerter = make(store, tmp_path, f"http://127.0.0.1:{port}/hook", clock=lambda: datetime.now(timezone.utc), background=True)
    alerter.observe(spike_stream())  # raises the alert and starts the delivery thread
    deadline = time.monotonic() + 10
    while not store.list_alerts()[0].delivery["hook:firing"].startswith("failed") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.list_alerts()[0].delivery["hook:firing"].startswith("failed")
    rx = Receiver(port)
    try:
        while store.list_alerts()[0].delivery["hook:firing"] != "delivered" and time.monotonic() < deadline + 10:
            time.sleep(0.05)
        alerter.close()
    finally:
        rx.stop()
    assert store.list_alerts()[0].delivery["hook:firing"] == "delivered"
    assert len(rx.requests) == 1


def test_client_error_is_rejected_not_retried(store, tmp_path):
    rx = Receiver(free_port(), status=400)
    clock = Clock(T0 + timedelta(days=30))
    try:
        alerter = make(store, tmp_path, f"http://127.0.0.1:{rx.port}/hook", clock=clock)
        alerter.observe(spike_stream())
        alerter.deliver_pending()
        clock.now += timedelta(hours=1)
        alerter.deliver_pending()
    finally:
        rx.stop()
    assert len(rx.requests) == 1
    assert store.list_alerts()[0].delivery["hook:firing"].startswith("rejected: HTTP 400")


def test_server_error_is_retried(store, tmp_path):
    rx = Receiver(free_port(), status=503)
    clock = Clock(T0 + timedelta(days=30))
    try:
        alerter = make(store, tmp_path, f"http://127.0.0.1:{rx.port}/hook", clock=clock)
        alerter.observe(spike_stream())
        alerter.deliver_pending()
        rx.status = 200
        clock.now += timedelta(seconds=5)
        alerter.deliver_pending()
    finally:
        rx.stop()
    assert len(rx.requests) == 2
    assert store.list_alerts()[0].delivery["hook:firing"] == "delivered"


def test_a_restarted_alerter_sends_what_the_last_one_owed(store, tmp_path):
    port = free_port()
    first = make(store, tmp_path, f"http://127.0.0.1:{port}/hook")
    first.observe(spike_stream())
    first.deliver_pending()  # fails: receiver down; then the process "dies"
    assert store.list_alerts()[0].delivery["hook:firing"].startswith("failed")

    rx = Receiver(port)
    try:
        second = make(store, tmp_path, f"http://127.0.0.1:{port}/hook")
        second.recover()
        assert second.deliver_pending() == 1
    finally:
        rx.stop()
    assert len(rx.requests) == 1 and store.list_alerts()[0].delivery["hook:firing"] == "delivered"


class ReadCountingStore(SQLiteStore):
    """A real SQLite store that counts how often alerts are read back one by one."""

    reads = 0

    def get_alert(self, alert_id):
        self.reads += 1
        return super().get_alert(alert_id)


def test_the_alerter_writes_from_its_own_state_and_never_clears_an_ack(tmp_path):
    """An alert is read once, when it first opens (to adopt notices a replay of the same stream
    sent before), never before each write: the alerter's copy is the truth for its deliveries,
    and the store keeps an analyst's ack made meanwhile from another process."""
    from newspulse.alerts import ack_alert

    store = ReadCountingStore(tmp_path / "alerts.db")
    analyst = SQLiteStore(tmp_path / "alerts.db")  # the dashboard's connection
    port = free_port()
    rx = Receiver(port)
    try:
        alerter = make(store, tmp_path, f"http://127.0.0.1:{port}/hook")
        alerter.observe(spike_stream())
        assert alerter.deliver_pending() == 1
        (alert,) = store.list_alerts()
        ack_alert(analyst, alert.id, by="desk")
        end = T0 + timedelta(minutes=15 * 9)
        alerter.observe(windowed(end, 15, [(4, 0)] * 3) + [scored(end + timedelta(minutes=46), tickers=["OTHER"])])  # calm: it resolves
        assert alerter.deliver_pending() == 1
    finally:
        rx.stop()
    got = analyst.get_alert(alert.id)
    assert got.status == AlertStatus.resolved and got.acknowledged
    assert got.delivery == {"hook:firing": "delivered", "hook:resolved": "delivered"}
    assert len(rx.requests) == 2 and store.reads == 1
    store.close()
    analyst.close()


class SMTPHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP (RFC 5321) to accept one message."""

    def handle(self) -> None:
        self.wfile.write(b"220 test ESMTP\r\n")
        data_mode, lines = False, []
        for raw in self.rfile:
            line = raw.decode().rstrip("\r\n")
            if data_mode:
                if line == ".":
                    self.server.messages.append("\n".join(lines))  # type: ignore[attr-defined]
                    data_mode = False
                    self.wfile.write(b"250 queued\r\n")
                else:
                    lines.append(line)
                continue
            verb = line.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self.wfile.write(b"250 test\r\n")
            elif verb == "DATA":
                data_mode = True
                self.wfile.write(b"354 go ahead\r\n")
            elif verb == "QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


def test_email_over_smtp():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), SMTPHandler)
    server.messages = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = ReceiverConfig(type="email", smtp_host="127.0.0.1", smtp_port=server.server_address[1], starttls=False, sender="alerts@np.test", to=["desk@np.test"])
        alert = Alert(id="a1", scope="ticker:ACME", status=AlertStatus.firing, window_minutes=15, started_at=T0, updated_at=T0, magnitude=5.0, baseline=0.2, value=0.9, volume=10, message="ticker:ACME: 90% negative")
        EmailNotifier(cfg).send(alert, "firing", "a1:firing")
    finally:
        server.shutdown()
        server.server_close()
    (msg,) = server.messages  # type: ignore[attr-defined]
    assert "Subject: [WARNING] ticker:ACME: 90% negative" in msg
    assert "Message-ID: <a1.firing@newspulse>" in msg and "To: desk@np.test" in msg
