"""Notifications: webhook (Slack-compatible JSON), email (SMTP) and the log, behind an outbox.

The outbox is the alert record itself: every notification an alert owes is a key
``"<receiver>:<event>"`` in ``Alert.delivery`` whose value is its status:

* ``pending``: not sent yet (just raised, or the process stopped before sending);
* ``failed (attempt N): <reason>``: the receiver was down; retried with exponential backoff;
* ``delivered``, ``silenced: <silence id>``, ``rejected: <reason>`` (the receiver answered with a
  4xx other than 408/429: retrying the same payload cannot help), ``failed permanently: <reason>``
  (the notification could not even be built or handed over, e.g. a mail header the SMTP library
  refuses: the same alert would fail the same way every time), ``disabled`` (receiver has no
  URL/host configured).

Every notification is attempted on its own: whatever one of them raises ends as its own status,
so a poisoned alert never holds back the others. Error texts quote no secret: every header value
and the SMTP password are masked (:func:`newspulse.redact.redact`) before an error is logged or
stored.

Because the alert is stored with its pending deliveries *before* anything is sent, a receiver
that is down, a crash or a restart only delays a notification: whoever runs the alerter next picks
up every ``pending``/``failed`` key and sends it. Each notification carries a dedup key
(``<alert id>:<event>``, also sent as the ``Idempotency-Key`` header) so a receiver that got a
message whose acknowledgement was lost can drop the retry.
"""

from __future__ import annotations

import json
import logging
import os
import random
import smtplib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Protocol

import httpx

from newspulse.alerts.rules import ReceiverConfig
from newspulse.redact import redact
from newspulse.schema import Alert

log = logging.getLogger(__name__)
notify_log = logging.getLogger("newspulse.alerts.notify")

PENDING = "pending"
DELIVERED = "delivered"
#: Status prefix of a notification given up on without the receiver having refused it.
FAILED_PERMANENTLY = "failed permanently"
#: Status prefix of a failed attempt that is retried with backoff.
FAILED_ATTEMPT = "failed (attempt"


class DeliveryError(RuntimeError):
    """A send failed; ``retryable`` says whether trying again later can succeed."""

    def __init__(self, reason: str, *, retryable: bool = True) -> None:
        super().__init__(reason)
        self.retryable = retryable


class Notifier(Protocol):
    def send(self, alert: Alert, event: str, dedup_key: str) -> None:
        """Deliver one notification or raise DeliveryError."""


def is_outstanding(status: str) -> bool:
    """Whether a delivery status still owes a send."""
    return status == PENDING or status.startswith(FAILED_ATTEMPT)


def headline(alert: Alert, event: str) -> str:
    if event == "resolved":
        return f"RESOLVED {alert.scope}: negative-news spike over (rule {alert.rule})"
    prefix = "REPEAT " if event.startswith("repeat") else ""
    return f"{prefix}[{alert.severity.upper()}] {alert.message or alert.scope}"


def payload(alert: Alert, event: str, dedup_key: str) -> dict:
    """Slack-compatible body (``text`` + ``blocks``) with the full alert under ``newspulse``."""
    lines = [f"• {d.score:+.2f} {d.title}" for d in alert.drivers]
    text = headline(alert, event) + ("\n" + "\n".join(lines) if lines and event != "resolved" else "")
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": headline(alert, event)}},
            *([{"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}}] if lines else []),
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"alert {alert.id} · {event} · dedup {dedup_key}"}]},
        ],
        "newspulse": {"event": event, "dedup_key": dedup_key, "alert": json.loads(alert.model_dump_json())},
    }


class LogNotifier:
    def send(self, alert: Alert, event: str, dedup_key: str) -> None:
        notify_log.warning("%s (%s)", headline(alert, event), dedup_key)


class WebhookNotifier:
    """POST the Slack-compatible JSON; 2xx = delivered, 408/429/5xx/network = retry later."""

    def __init__(self, cfg: ReceiverConfig) -> None:
        assert cfg.url
        self.url = cfg.url
        self.headers = dict(cfg.headers)
        self.timeout = cfg.timeout_seconds
        self.secrets = cfg.secrets

    def send(self, alert: Alert, event: str, dedup_key: str) -> None:
        self.post(payload(alert, event, dedup_key), dedup_key)

    def post(self, body: dict, dedup_key: str) -> None:
        """POST one JSON body; raises DeliveryError (retryable or not) unless 2xx."""
        try:
            resp = httpx.post(self.url, json=body, headers={**self.headers, "Idempotency-Key": dedup_key}, timeout=self.timeout)
        except httpx.HTTPError as err:
            raise DeliveryError(redact(f"{type(err).__name__}: {err}", self.secrets)) from None
        if resp.is_success:
            return
        retryable = resp.status_code in (408, 429) or resp.status_code >= 500
        # a receiver may echo the request's headers in its error page
        raise DeliveryError(redact(f"HTTP {resp.status_code}: {resp.text[:200]}", self.secrets), retryable=retryable)


class EmailNotifier:
    """Plain-text mail over SMTP (STARTTLS and login when configured)."""

    def __init__(self, cfg: ReceiverConfig) -> None:
        self.cfg = cfg

    def send(self, alert: Alert, event: str, dedup_key: str) -> None:
        self.mail(headline(alert, event), payload(alert, event, dedup_key)["text"] + f"\n\nalert {alert.id} · dedup {dedup_key}\n", dedup_key)

    def mail(self, subject: str, text: str, dedup_key: str) -> None:
        """Send one plain-text mail; raises DeliveryError (retryable or not) on failure."""
        cfg = self.cfg
        msg = EmailMessage()
        msg["Subject"] = subject[:200]
        msg["From"] = cfg.sender
        msg["To"] = ", ".join(cfg.to)
        msg["Message-ID"] = f"<{dedup_key.replace(':', '.')}@newspulse>"  # same id on a retry: mail clients dedupe
        msg.set_content(text)
        try:
            with smtplib.SMTP(cfg.smtp_host or "", cfg.smtp_port, timeout=cfg.timeout_seconds) as smtp:
                if cfg.starttls:
                    smtp.starttls()
                if cfg.username:
                    smtp.login(cfg.username, os.environ.get(cfg.password_env or "", ""))
                smtp.send_message(msg)
        except smtplib.SMTPResponseException as err:
            raise DeliveryError(redact(f"SMTP {err.smtp_code}: {err.smtp_error!r}", cfg.secrets), retryable=err.smtp_code >= 400 and err.smtp_code < 500) from None
        except (smtplib.SMTPException, OSError) as err:
            raise DeliveryError(redact(f"{type(err).__name__}: {err}", cfg.secrets)) from None


def build_notifiers(receivers: dict[str, ReceiverConfig]) -> dict[str, Notifier | None]:
    """One notifier per configured receiver; None for a receiver that is configured but off."""
    out: dict[str, Notifier | None] = {}
    for name, cfg in receivers.items():
        if not cfg.enabled:
            out[name] = None
        elif cfg.type == "webhook":
            out[name] = WebhookNotifier(cfg)
        elif cfg.type == "email":
            out[name] = EmailNotifier(cfg)
        else:
            out[name] = LogNotifier()
    return out


def notify_operators(receivers: dict[str, ReceiverConfig], subject: str, text: str, dedup_key: str) -> dict[str, str]:
    """Send one plain notice (not an alert) to every receiver of the alert rules, once each.

    For failures outside the alert pipeline that an operator must hear about, such as a
    retraining run that failed for good: the same webhook and SMTP settings, no second set to
    maintain. Returns each receiver's outcome (``delivered``, ``disabled`` or ``failed: ...``).
    """
    outcomes: dict[str, str] = {}
    for name, cfg in receivers.items():
        if not cfg.enabled:
            outcomes[name] = "disabled"
            continue
        try:
            if cfg.type == "webhook":
                WebhookNotifier(cfg).post({"text": f"{subject}\n{text}", "newspulse": {"event": "operator_notice", "subject": subject, "dedup_key": dedup_key}}, dedup_key)
            elif cfg.type == "email":
                EmailNotifier(cfg).mail(subject, f"{text}\n\ndedup {dedup_key}\n", dedup_key)
            else:
                notify_log.error("%s: %s (%s)", subject, text, dedup_key)
            outcomes[name] = DELIVERED
        except Exception as err:  # one receiver's failure, whatever it is, must not stop the others
            reason = str(err) if isinstance(err, DeliveryError) else redact(f"{type(err).__name__}: {err}", cfg.secrets)
            log.error("notice %r to %s failed: %s", subject, name, reason)
            outcomes[name] = f"failed: {reason}"[:300]
    return outcomes


@dataclass
class _Attempts:
    count: int = 0
    next_due: datetime | None = None


class Outbox:
    """Sends what alerts owe, with per-notification exponential backoff (schedule in memory).

    ``load`` fetches the current version of an alert and ``save`` writes one back; both are called
    under the caller's lock so a concurrent lifecycle update is never overwritten.
    """

    def __init__(
        self,
        notifiers: dict[str, Notifier | None],
        receivers: dict[str, ReceiverConfig],
        silenced: Callable[[str, datetime], str | None],
        clock: Callable[[], datetime],
    ) -> None:
        self.notifiers = notifiers
        self.receivers = receivers
        self.silenced = silenced
        self.clock = clock
        self._attempts: dict[tuple[str, str], _Attempts] = {}

    def due(self, alerts: Iterable[Alert], now: datetime) -> list[tuple[str, str]]:
        """(alert id, delivery key) pairs whose next attempt is due."""
        out = []
        for alert in alerts:
            for key, status in alert.delivery.items():
                if is_outstanding(status):
                    att = self._attempts.get((alert.id, key))
                    if att is None or att.next_due is None or att.next_due <= now:
                        out.append((alert.id, key))
        return out

    def attempt(self, alert: Alert, key: str, now: datetime) -> str:
        """Try one notification; returns the new status for ``alert.delivery[key]``."""
        receiver, _, event = key.partition(":")
        notifier = self.notifiers.get(receiver)
        if receiver not in self.notifiers or notifier is None:
            return "disabled"
        if event != "resolved":
            silence = self.silenced(alert.scope, now)
            if silence:
                return f"silenced: {silence}"
        att = self._attempts.setdefault((alert.id, key), _Attempts())
        att.count += 1
        try:
            notifier.send(alert, event, f"{alert.id}:{event}")
        except DeliveryError as err:
            if not err.retryable:
                self._attempts.pop((alert.id, key), None)
                log.error("alert %s: %s rejected %s: %s", alert.id, receiver, event, err)
                return f"rejected: {err}"[:300]
            cfg = self.receivers[receiver]
            backoff = min(cfg.max_backoff_seconds, cfg.min_backoff_seconds * 2 ** (att.count - 1))
            att.next_due = now + timedelta(seconds=backoff * random.uniform(0.8, 1.2))
            log.warning("alert %s: %s %s failed (attempt %d), retry in %.0fs: %s", alert.id, receiver, event, att.count, backoff, err)
            return f"failed (attempt {att.count}): {err}"[:300]
        except Exception as err:  # not the receiver's answer: building or handing over this notice broke
            self._attempts.pop((alert.id, key), None)
            reason = redact(f"{type(err).__name__}: {err}", cfg.secrets if (cfg := self.receivers.get(receiver)) else ())
            log.error("alert %s: %s %s failed permanently: %s", alert.id, receiver, event, reason)
            return f"{FAILED_PERMANENTLY}: {reason}"[:300]
        self._attempts.pop((alert.id, key), None)
        return DELIVERED
