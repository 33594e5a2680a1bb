"""Prometheus metrics of the alerter, so a failed or stuck notification is visible on a
dashboard, not only in a log line (served by ``newspulse alerts run`` on ``NEWSPULSE_METRICS_PORT``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

#: Every outcome a delivery attempt can end with (newspulse.alerts.delivery).
OUTCOMES = ("delivered", "failed", "failed_permanently", "rejected", "silenced", "disabled")

DELIVERIES = Counter(
    "newspulse_alert_deliveries",
    "Notification attempts by receiver and outcome: delivered, failed (retried later), failed_permanently (could not be built or handed over: given up), rejected (4xx: given up), silenced, disabled.",
    ["receiver", "outcome"],
)
OUTSTANDING = Gauge("newspulse_alert_deliveries_outstanding", "Notifications owed (pending or failed, to be retried) after the last outbox pass.")
FIRING = Gauge("newspulse_alerts_firing", "Alerts firing now, by severity.", ["severity"])
TRANSITIONS = Counter("newspulse_alert_transitions", "Alert lifecycle events (pending, firing, repeat, resolved, ...) by rule.", ["rule", "event"])
PAUSED = Gauge("newspulse_alerter_paused", "1 while the alerter waits for the store to come back (alert changes held in memory, nothing sent).")
LAST_POLL = Gauge(
    "newspulse_alerter_last_poll_timestamp_seconds",
    "Unix time the alerter last read its source (news.scored or the store): the healthcheck's proof that it is alive.",
)


def outcome_of(status: str) -> str:
    """The outcome label of a delivery status string (``failed (attempt 2): ...`` → failed)."""
    if status.startswith("failed permanently"):
        return "failed_permanently"
    word = status.split(":", 1)[0].split(" ", 1)[0]
    return word if word in OUTCOMES else "failed"
