"""Fault scenarios R6 and R7: the alerter (``newspulse alerts run``) against a failing store and
poisoned notifications.

Each runs the production alerter as a child process following a SQLite store, stopped by PID,
with real receivers on loopback: a webhook endpoint (http.server) and, in R7, an SMTP server.
The harness writes scored articles into the store itself (no classifier is involved: what the
detector sees is known exactly) and counts what each receiver got.

R6  store error as an alert fires, on a live stream (1-minute windows closing on the wall
    clock). (a) The store is locked by another writer while a burst's window closes: the
    alerter pauses, retries, and delivers the alert once the lock is released, without exiting.
    (b) Locked again as a second burst's window closes; the alerter is killed with SIGKILL while
    paused, the lock released, the stream goes on, and a new alerter is started: it evaluates
    the window again (after its checkpoint) and delivers that alert. Passes when each alert is
    stored once and its notice POSTed exactly once.
R7  a poisoned notification among good ones: 10 tickers burst (good), beside a ticker whose
    value carries ``\\r\\nBcc:`` (read from a store written before validation refused control
    characters: the mail library refuses the subject), one the webhook answers 500 forever, one
    it answers 400, and one it answers only after the client's timeout. Passes when every good
    alert is delivered by webhook and e-mail, and each poisoned notice ends with its own status.

    python bench/faults_alerts.py [--only R6,R7]    # merged into bench/results/faults.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socketserver
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from alert_streams import scored, windowed  # noqa: E402
from fault_results import ChildProcess, Outcome, SQLiteWriteLock, failed_outcome, machine, wait_until, write_results  # noqa: E402
from provenance import commit  # noqa: E402
from test_alerts_delivery import SMTPHandler  # noqa: E402

from newspulse.schema import ScoredArticle  # noqa: E402
from newspulse.store.sqlite import SQLiteStore  # noqa: E402

#: How often a wait polls the receivers and the alerter's log (the windows close on the minute).
POLL_S = 0.2
RULES = """
allowed_lateness_minutes: 0
receivers:
  hook: {{type: webhook, url: "http://127.0.0.1:{hook_port}/hook", timeout_seconds: 2, min_backoff_seconds: 0.5, max_backoff_seconds: 4}}
  mail: {{type: email, smtp_host: {smtp_host}, smtp_port: {smtp_port}, starttls: false, sender: alerts@np.test, to: [desk@np.test], min_backoff_seconds: 0.5, max_backoff_seconds: 4}}
rules:
  - name: burst
    scope: ticker
    windows: [{window}]
    hop_minutes: {window}
    min_volume: 4
    min_count: 3
    z_threshold: 3
    min_share_delta: 0.25
    cooldown_minutes: 0
    repeat_interval_minutes: 0
    receivers: [{receivers}]
    baseline: {{lookback_windows: 16, min_history: 4, seasonality: false}}
"""


class Webhook:
    """A webhook endpoint that records every POST (scope, event, dedup key) and answers per
    scope: ``answers`` maps a scope to an HTTP status, or to "hang" (answer after 5 s, past the
    client's 2 s timeout); every other scope gets 200."""

    def __init__(self, answers: dict[str, int | str] | None = None) -> None:
        self.posts: list[tuple[str, str, str]] = []
        owner, answers = self, answers or {}

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                scope = body["newspulse"]["alert"]["scope"]
                owner.posts.append((scope, body["newspulse"]["event"], body["newspulse"]["dedup_key"]))
                answer = answers.get(scope, 200)
                if answer == "hang":
                    time.sleep(5)
                    answer = 200
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # "SLOW": the client left
                    self.send_response(int(answer))
                    self.end_headers()
                    self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, scope: str) -> int:
        return sum(1 for s, _, _ in self.posts if s == scope)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    """A minimal SMTP server on loopback (the tests' handler); ``messages`` as received."""

    def __init__(self) -> None:
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), SMTPHandler)
        self.server.messages = []  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def messages(self) -> list[str]:
        return self.server.messages  # type: ignore[attr-defined]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class AlerterProcess(ChildProcess):
    """``newspulse alerts run`` (following the store) as a child process, its output in a log."""

    role = "alerter"

    def __init__(self, workdir: Path, rules: str) -> None:
        (workdir / "rules.yaml").write_text(rules)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSPULSE_")}
        env.update({
            "NEWSPULSE_STORE_URL": f"sqlite:///{workdir / 'store.db'}",
            "NEWSPULSE_ALERT_RULES": str(workdir / "rules.yaml"),
            "NEWSPULSE_ALERT_SILENCES": str(workdir / "silences.json"),
            "NEWSPULSE_ALERT_CHECKPOINT": str(workdir / "checkpoint.json"),
            "NEWSPULSE_LOG_LEVEL": "INFO",
            "PYTHONPATH": str(ROOT),
        })
        super().__init__([sys.executable, "-m", "newspulse.cli", "alerts", "run", "--poll-seconds", "0.5"], env, workdir, workdir / "alerter.log")

    def count(self, text: str) -> int:
        return self.log.read_text(errors="replace").count(text) if self.log.exists() else 0


def sleep_until(t: datetime) -> None:
    time.sleep(max(0.0, (t - datetime.now(timezone.utc)).total_seconds()))


def next_minute(after: datetime) -> datetime:
    return after.replace(second=0, microsecond=0) + timedelta(minutes=1)


def burst(ticker: str, start: datetime) -> list[ScoredArticle]:
    """Six negative stories on ``ticker`` within the first second after ``start``."""
    return [scored(start + timedelta(milliseconds=100 * i), label="negative", tickers=[ticker], serial=1000 + i, title=f"{ticker} recall {i} at {start:%H:%M}") for i in range(6)]


# --- R6 -------------------------------------------------------------------------------------
def r6_store_error_as_an_alert_fires(workdir: Path) -> Outcome:
    """(a) a store error as a live burst's window closes: paused, delivered once, never exits;
    (b) the alerter killed while paused: the next one evaluates the window again, delivered once."""
    params = {"window_minutes": 1, "history_minutes": 20, "lock_held_s": "until the alerter logged a failed write, +10 s", "busy_timeout_s": 30}
    t0 = time.monotonic()
    hook = Webhook()
    alerter = AlerterProcess(workdir, RULES.format(hook_port=hook.port, smtp_host="''", smtp_port=25, window=1, receivers="hook"))
    store = SQLiteStore(workdir / "store.db")
    figures: dict[str, object] = {}
    try:
        now = datetime.now(timezone.utc)
        history_start = now.replace(second=0, microsecond=0) - timedelta(minutes=20)
        for ticker in ("ALPHA", "BETA", "GAMMA"):
            store.upsert_articles(windowed(history_start, 1, [(4, 1)] * 20, ticker=ticker))
        alerter.start()
        wait_until(lambda: (workdir / "checkpoint.json").exists(), 180, "R6 alerter warmed up", POLL_S, child=alerter)

        # (a) the store is locked as ALPHA's burst window closes; the alerter must wait it out
        m = next_minute(datetime.now(timezone.utc))
        sleep_until(m + timedelta(seconds=1))
        store.upsert_articles(burst("ALPHA", m))
        sleep_until(m + timedelta(seconds=40))
        with SQLiteWriteLock(workdir / "store.db"):
            figures["a_paused_after_close_s"] = round(wait_until(lambda: alerter.count("alerter paused") >= 1, 150, "R6a alerter paused", POLL_S, child=alerter), 1)
            time.sleep(10)
        figures["a_alive_after_fault"] = alerter.alive
        figures["a_delivered_after_unlock_s"] = round(wait_until(lambda: hook.count("ticker:ALPHA") >= 1, 120, "R6a ALPHA delivered", POLL_S, child=alerter), 1)

        # (b) locked as BETA's burst window closes; killed while paused; the stream goes on
        m = next_minute(datetime.now(timezone.utc))
        sleep_until(m + timedelta(seconds=1))
        store.upsert_articles(burst("BETA", m))
        sleep_until(m + timedelta(seconds=40))
        paused_before = alerter.count("alerter paused")
        with SQLiteWriteLock(workdir / "store.db"):
            wait_until(lambda: alerter.count("alerter paused") > paused_before, 150, "R6b alerter paused", POLL_S, child=alerter)
            alerter.kill9()
        later = [scored(m + timedelta(seconds=61 + 4 * i), tickers=["GAMMA"], serial=2000 + i) for i in range(8)]
        sleep_until(later[-1].published_at)
        store.upsert_articles(later)  # newer stories: the warm-up's watermark passes BETA's window
        alerter.start()
        figures["b_delivered_after_restart_s"] = round(wait_until(lambda: hook.count("ticker:BETA") >= 1, 180, "R6b BETA delivered", POLL_S, child=alerter), 1)
        time.sleep(5)  # more passes: nothing may be sent twice
        figures["exit_code"] = alerter.stop()
        alerts = {a.scope: a for a in store.list_alerts()}
        figures.update({
            "alerts": sorted(alerts),
            "posts": {scope: hook.count(scope) for scope in ("ticker:ALPHA", "ticker:BETA", "ticker:GAMMA")},
            "delivery": {scope: a.delivery for scope, a in alerts.items()},
            "re_evaluated_after_restart": alerter.count("re-evaluating windows closed after") >= 1,
        })
        passed = (
            sorted(alerts) == ["ticker:ALPHA", "ticker:BETA"]
            and all(a.delivery == {"hook:firing": "delivered"} for a in alerts.values())
            and figures["posts"] == {"ticker:ALPHA": 1, "ticker:BETA": 1, "ticker:GAMMA": 0}
            and figures["a_alive_after_fault"] is True and figures["exit_code"] == 0
        )
        return Outcome("R6 alert store error", passed, figures, params, time.monotonic() - t0)
    except Exception as err:
        return failed_outcome("R6 alert store error", params, err, alerter, figures, time.monotonic() - t0)
    finally:
        alerter.stop(30)
        store.close()
        hook.stop()


# --- R7 -------------------------------------------------------------------------------------
GOOD = [f"GOOD{i:02d}" for i in range(10)]
#: Poisoned tickers and what each does to its notice.
POISON = {
    "EVIL\r\nBcc: victim@example.com": "mail header injection: the mail library refuses the subject",
    "STUCK": "webhook answers 500 forever",
    "REFUSED": "webhook answers 400",
    "SLOW": "webhook answers after the client's 2 s timeout",
}


def r7_poisoned_notification(workdir: Path) -> Outcome:
    """Every good alert delivered by webhook and e-mail despite the poisoned ones beside them."""
    params = {"good_alerts": len(GOOD), "poisoned": POISON, "receivers": ["webhook", "email"]}
    t0 = time.monotonic()
    hook = Webhook({"ticker:STUCK": 500, "ticker:REFUSED": 400, "ticker:SLOW": "hang"})
    mail = Mailbox()
    alerter = AlerterProcess(workdir, RULES.format(hook_port=hook.port, smtp_host="127.0.0.1", smtp_port=mail.port, window=15, receivers="hook, mail"))
    store = SQLiteStore(workdir / "store.db")
    figures: dict[str, object] = {}
    try:
        start = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
        arts: list[ScoredArticle] = []
        for ticker in [*POISON, *GOOD]:  # poisoned first: they come first in every pass
            arts += windowed(start, 15, [(4, 1)] * 8 + [(6, 6)], ticker=ticker)
        arts.append(scored(start + timedelta(minutes=15 * 9, seconds=1), tickers=["OTHER"]))  # closes the burst windows
        store.upsert_articles(arts)
        alerter.start()
        good_scopes = [f"ticker:{t}" for t in GOOD]
        figures["good_delivered_s"] = round(wait_until(
            lambda: all(hook.count(s) >= 1 for s in good_scopes) and sum(any(f"ticker:{t}" in m for t in GOOD) for m in mail.messages) >= len(GOOD),
            180, "R7 every good alert delivered", POLL_S, child=alerter,
        ), 1)
        time.sleep(10)  # the poisoned ones keep failing meanwhile; the good ones must not be sent again
        figures["exit_code"] = alerter.stop()
        alerts = {a.scope: a.delivery for a in store.list_alerts()}
        good = {s: alerts.get(s) for s in good_scopes}
        figures.update({
            "alerts": len(alerts),
            "good_delivered": sum(d == {"hook:firing": "delivered", "mail:firing": "delivered"} for d in good.values() if d),
            "good_posts": sum(hook.count(s) for s in good_scopes),
            "good_mails": sum(any(f"ticker:{t}" in m for t in GOOD) for m in mail.messages),
            "poisoned": {s: alerts.get(f"ticker:{s}") for s in POISON},
            "stuck_attempts": hook.count("ticker:STUCK"),
            "injected_bcc_sent": any("victim@example.com" in m for m in mail.messages),
        })
        poisoned = figures["poisoned"]
        evil = poisoned["EVIL\r\nBcc: victim@example.com"] or {}
        passed = (
            figures["good_delivered"] == len(GOOD) and figures["good_posts"] == len(GOOD) and figures["good_mails"] == len(GOOD)
            and evil.get("mail:firing", "").startswith("failed permanently: ValueError") and evil.get("hook:firing") == "delivered"
            and (poisoned["STUCK"] or {}).get("hook:firing", "").startswith("failed (attempt")
            and (poisoned["REFUSED"] or {}).get("hook:firing", "").startswith("rejected: HTTP 400")
            and not figures["injected_bcc_sent"] and figures["exit_code"] == 0
        )
        return Outcome("R7 poisoned notice", passed, figures, params, time.monotonic() - t0)
    except Exception as err:
        return failed_outcome("R7 poisoned notice", params, err, alerter, figures, time.monotonic() - t0)
    finally:
        alerter.stop(30)
        store.close()
        hook.stop()
        mail.stop()


#: R6 and R7 by name, each running in a fresh folder (bench/faults.py registers them too).
SCENARIOS: dict[str, Callable[[Path], Outcome]] = {"R6": r6_store_error_as_an_alert_fires, "R7": r7_poisoned_notification}


def run_scenario(name: str) -> Outcome:
    """Run R6 or R7 in a temporary folder of its own."""
    with tempfile.TemporaryDirectory(prefix=f"newspulse-{name.lower()}-") as tmp:
        return SCENARIOS[name](Path(tmp))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios (R6, R7)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "faults.json", help="results file (merged)")
    args = ap.parse_args(argv)
    wanted = [s.strip().upper() for s in args.only.split(",") if s.strip()]
    if unknown := [s for s in wanted if s not in SCENARIOS]:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    run_info = {"started_at": datetime.now(timezone.utc).isoformat(), "machine": machine(), "commit": commit()}
    outcomes = []
    for name in wanted:
        outcome = run_scenario(name)
        print(outcome.line(), flush=True)
        for line in str(outcome.figures.get("alerter_log_tail", "")).splitlines()[-8:]:
            print(f"    {line}", flush=True)
        outcomes.append(outcome)
        write_results(args.out, outcomes, run_info)
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
