"""Negative-sentiment spike detection, alert lifecycle and delivery.

Entry points: :func:`build_alerter` (the pipeline's in-process Observer, also the service behind
``newspulse alerts run``), and the analyst actions the CLI and the dashboard share:
:func:`ack_alert`, :func:`silence_scope`, :func:`list_silences`, :func:`expire_silence`.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from newspulse.alerts.checkpoint import Checkpoint
from newspulse.alerts.rules import RuleSet, RulesError, load_rules
from newspulse.alerts.service import Alerter
from newspulse.alerts.silences import Silence, SilenceBook
from newspulse.errors import NotFound
from newspulse.schema import Alert
from newspulse.settings import Settings
from newspulse.store.base import Store

__all__ = [
    "Alerter",
    "RuleSet",
    "RulesError",
    "Silence",
    "ack_alert",
    "build_alerter",
    "expire_silence",
    "list_silences",
    "load_rules",
    "silence_scope",
]


def build_alerter(settings: Settings, store: Store, *, recover: bool = True) -> Alerter:
    """The alerter for ``settings.alert_rules`` (or the built-in rules) over ``store``.

    Raises RulesError naming the file and field when the rules do not validate. With ``recover``
    it adopts notifications an earlier run still owed and, for a live stream, warms its
    baselines from recent history in the store and evaluates the windows the last run did not
    store (``settings.alert_checkpoint``).
    """
    # keyed by a hash of the store's URL: the file must not carry an Elasticsearch password
    store_key = hashlib.sha256(settings.store_url.encode()).hexdigest()[:16]
    alerter = Alerter(
        load_rules(settings.alert_rules), store, SilenceBook(settings.alert_silences), checkpoint=Checkpoint(settings.alert_checkpoint, store_key)
    )
    if recover:
        alerter.recover()
    return alerter


def ack_alert(store: Store, alert_id: str, *, by: str = "analyst") -> Alert:
    """Acknowledge an alert: it stays open but sends no more repeat notifications. ``by`` is
    kept in ``acknowledged_by``, which the alerter's later writes never touch."""
    alert = store.get_alert(alert_id)
    if alert is None:
        raise NotFound(f"no alert with id {alert_id!r}")
    if not alert.acknowledged:
        alert.acknowledged = True
        alert.acknowledged_by = by
        store.upsert_alerts([alert])
    return alert


def silence_scope(settings: Settings, scope: str, until: datetime, *, comment: str = "", by: str = "analyst") -> Silence:
    """Hold back notifications for ``scope`` (glob, e.g. ``ticker:AAPL``, ``topic:*``) until ``until``."""
    return SilenceBook(settings.alert_silences).add(scope, until, comment=comment, created_by=by)


def list_silences(settings: Settings) -> list[Silence]:
    """Silences in force now."""
    return SilenceBook(settings.alert_silences).active()


def expire_silence(settings: Settings, silence_id: str) -> bool:
    """End a silence now; False when no active silence has that id."""
    return SilenceBook(settings.alert_silences).expire(silence_id)
