"""The alerter: detector + lifecycle + outbox over a Store, as a pipeline Observer or a service.

In the embedded pipeline it is an Observer: ``observe(batch)`` runs after each stored batch,
and deliveries go out from a background thread so a slow webhook never holds up scoring. As a
service (``newspulse alerts run``) it follows the store (polling new articles) or consumes the
``news.scored`` topic with its own consumer group; either way it is the same object.

Event time throughout: windows close on the watermark (newest ``published_at`` minus allowed
lateness). :meth:`Alerter.flush` closes the remaining windows at the end of a finite replay;
:meth:`Alerter.tick` advances the watermark by the wall clock when the stream is live but quiet,
so the last window of a burst does not wait for the next story to close.

Consuming ``news.scored``, the alerter is safe to run twice (or more): its consumer group gives
every partition to the longest-running member and none to the others, which stand by (no
scoring, no ticking, no deliveries) until it leaves or dies; the next one then rebuilds its state
from the store and goes on from the group's committed offsets. Keying ``news.scored`` by scope
instead cannot work: an article counts towards several scopes (each ticker, each topic, the
market), and every scope's baseline follows the whole market's rhythm. Following the store, run
one alerter per store: two would each deliver the same notifications (the dedup key lets a
receiver drop the copies, but log and e-mail would show both).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import ValidationError

from newspulse.alerts import metrics
from newspulse.alerts.delivery import PENDING, Notifier, Outbox, build_notifiers, is_outstanding
from newspulse.alerts.detector import Detector
from newspulse.alerts.lifecycle import Lifecycle, Transition
from newspulse.alerts.rules import RuleSet
from newspulse.alerts.silences import SilenceBook
from newspulse.schema import Alert, AlertStatus, ScoredArticle, to_utc, utcnow
from newspulse.store.base import Filter, Store

if TYPE_CHECKING:  # kafka-python is the [kafka] extra: the embedded alerter runs without it
    from newspulse.kafka.client import ActiveMember

log = logging.getLogger(__name__)

#: A stream whose newest story is at most this old (wall clock) is live: quiet periods advance
#: the watermark by the clock, and a restart recovers state from this much recent history.
LIVE_HORIZON = timedelta(hours=6)
#: Stories dated further in the future than this do not move the watermark (clock skew, bad feeds).
MAX_FUTURE = timedelta(minutes=5)
WARM_UP_CAP = timedelta(days=2)


class Alerter:
    """Observer of scored articles that raises, stores and delivers alerts."""

    def __init__(
        self,
        rules: RuleSet,
        store: Store,
        silences: SilenceBook,
        *,
        notifiers: dict[str, Notifier | None] | None = None,
        clock: Callable[[], datetime] = utcnow,
        rescan_seconds: float = 60.0,
        background: bool = True,
    ) -> None:
        """``background=False`` leaves delivery to explicit :meth:`deliver_pending` calls."""
        self.rules = rules
        self.store = store
        self.silences = silences
        self.clock = clock
        self.lateness = timedelta(minutes=rules.allowed_lateness_minutes)
        self.detectors = {r.name: Detector(r) for r in rules.rules}
        self.lifecycle = Lifecycle(rules.rules, self._acknowledged)
        self.max_event_time: datetime | None = None
        self.watermark: datetime | None = None
        self.outbox = Outbox(
            notifiers if notifiers is not None else build_notifiers(rules.receivers),
            rules.receivers,
            lambda scope, now: (s.id if (s := silences.match(scope, now)) else None),
            clock,
        )
        self.rescan_seconds = rescan_seconds
        self._lock = threading.RLock()
        self._owed: dict[str, Alert] = {}  # alerts with outstanding deliveries
        self._sending: set[tuple[str, str]] = set()
        self.background = background
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Cleared while this alerter stands by for another (Kafka mode): it neither delivers
        #: nor persists anything then.
        self.active = threading.Event()
        self.active.set()
        #: This alerter's place in the news.scored consumer group (Kafka mode only).
        self.member: ActiveMember | None = None

    # --- start-up ------------------------------------------------------------------------
    def recover(self) -> None:
        """Adopt outstanding deliveries and recent open alerts; warm baselines from live history.

        Only history within LIVE_HORIZON of the wall clock is replayed into the baselines, so a
        replay of an old corpus into a populated store starts from scratch and raises exactly the
        alerts it raised the first time (same ids: upserts, and delivered notices stay delivered).
        """
        now = self.clock()
        with self._lock:
            # One read of the alerts: from here on this alerter's own copies are the truth (an
            # owed notice and its open alert are one object, so a delivery is remembered by both)
            alerts = self.store.list_alerts(limit=1000)
            for alert in alerts:
                if any(is_outstanding(s) for s in alert.delivery.values()):
                    self._owed.setdefault(alert.id, alert)
            latest = self.store.latest_published_at()
            if latest is None or now - latest > LIVE_HORIZON:
                return
            span = max(r.baseline.lookback_windows * max(r.windows) for r in self.rules.rules)
            start = latest - min(timedelta(minutes=span), WARM_UP_CAP)
            for batch in self.store.iter_articles(Filter(start=start)):
                self._ingest(batch, evaluate=False)
            for alert in alerts:
                if alert.status != AlertStatus.resolved and now - alert.updated_at <= LIVE_HORIZON:
                    self.lifecycle.restore(self._owed.get(alert.id, alert))
            self._export_firing()
        log.info("alerter recovered: %d outstanding notifications, watermark %s", len(self._owed), self.watermark)

    # --- the Observer --------------------------------------------------------------------
    def observe(self, articles: Sequence[ScoredArticle]) -> None:
        """Count a stored batch into its windows; close the windows the watermark has passed."""
        if not articles:
            return
        with self._lock:
            self._ingest(articles, evaluate=True)
        self._nudge()

    def flush(self) -> None:
        """End of a finite stream: close every window that holds an article."""
        with self._lock:
            if self.max_event_time is not None:
                longest = max(max(r.windows) for r in self.rules.rules)
                self._advance(self.max_event_time + timedelta(minutes=longest) + self.lateness, evaluate=True)
        self._nudge()

    def tick(self, now: datetime | None = None) -> None:
        """Let wall-clock time close windows while a live stream is quiet."""
        now = to_utc(now) if now else self.clock()
        with self._lock:
            if self.max_event_time is not None and now - self.max_event_time <= LIVE_HORIZON:
                self._advance(now - self.lateness, evaluate=True)
        self._nudge()

    def open_from(self) -> datetime | None:
        """Start of the earliest bucket still open: articles older than this count as late."""
        starts = [end - timedelta(minutes=d.hop) for d in self.detectors.values() if (end := d.next_close()) is not None]
        return min(starts, default=None)

    @property
    def late_dropped(self) -> int:
        return sum(d.late_dropped for d in self.detectors.values())

    def _ingest(self, articles: Sequence[ScoredArticle], evaluate: bool) -> None:
        ceiling = self.clock() + MAX_FUTURE
        for det in self.detectors.values():
            det.add(articles)
        newest = max((a.published_at for a in articles if a.published_at <= ceiling), default=None)
        if newest is not None and (self.max_event_time is None or newest > self.max_event_time):
            self.max_event_time = newest
        if self.max_event_time is not None:
            self._advance(self.max_event_time - self.lateness, evaluate)

    def _advance(self, watermark: datetime, evaluate: bool) -> None:
        """Close windows in event-time order up to ``watermark``; persist what changed."""
        if self.watermark is not None and watermark <= self.watermark:
            return
        self.watermark = watermark
        transitions: list[Transition] = []
        while True:
            nxt = min(
                ((end, name) for name, det in self.detectors.items() if (end := det.next_close()) is not None),
                default=None,
            )
            if nxt is None or nxt[0] > watermark:
                break
            end, name = nxt
            det = self.detectors[name]
            active = self.lifecycle.active_scopes(name) if evaluate else []
            skipped_to = None if active else det.skip_idle(watermark)
            if skipped_to is not None:
                if evaluate:
                    transitions.extend(self.lifecycle.expire(name, skipped_to))
                continue
            for verdict in det.close(active, evaluate=evaluate):
                transitions.extend(self.lifecycle.apply(verdict))
            if evaluate:
                transitions.extend(self.lifecycle.expire(name, end))
        if transitions:
            self._persist(transitions)

    # --- persistence and delivery --------------------------------------------------------
    def _persist(self, transitions: list[Transition]) -> None:
        changed: dict[str, Alert] = {}
        for t in transitions:
            rule = self.lifecycle.rules[t.alert.rule]
            for event in t.events:
                metrics.TRANSITIONS.labels(rule.name, event).inc()
                for receiver in rule.receivers:
                    t.alert.delivery.setdefault(f"{receiver}:{event}", PENDING)
            changed[t.alert.id] = t.alert
        self._save(list(changed.values()))
        for alert in changed.values():
            if any(is_outstanding(s) for s in alert.delivery.values()):
                self._owed[alert.id] = alert
            log.info("alert %s %s %s z=%.1f", alert.id, alert.scope, alert.status.value, alert.magnitude)
        self._export_firing()

    def _export_firing(self) -> None:
        """Firing alerts per severity; every severity of the rules is set, zeros included, so a
        resolved alert brings its series back to 0 rather than leaving the last count."""
        firing: dict[str, int] = {}
        for group in self.lifecycle.groups.values():
            if group.state == "firing":
                firing[group.alert.severity] = firing.get(group.alert.severity, 0) + 1
        for severity in {*firing, *(s.severity for r in self.rules.rules for s in r.severities)}:
            metrics.FIRING.labels(severity).set(firing.get(severity, 0))

    def _save(self, alerts: list[Alert]) -> None:
        """Write this alerter's copies without reading them back: its state is the truth for
        everything but an analyst's ack, which the store's upsert never clears
        (:meth:`~newspulse.store.base.Store.upsert_alerts`). Only one alerter is active at a
        time, and it rebuilt its state from the store when it started (:meth:`recover`)."""
        self.store.upsert_alerts(alerts)

    def _acknowledged(self, alert: Alert) -> bool:
        stored = self.store.get_alert(alert.id)
        return bool(stored and stored.acknowledged)

    def deliver_pending(self) -> int:
        """One outbox pass: try every notification that is due. Returns how many were delivered."""
        now = self.clock()
        with self._lock:
            due = self.outbox.due(list(self._owed.values()), now)
        delivered = 0
        for alert_id, key in due:
            with self._lock:
                current = self._owed.get(alert_id)
                if current is None or not is_outstanding(current.delivery.get(key, "")) or (alert_id, key) in self._sending:
                    continue
                self._sending.add((alert_id, key))  # claimed: no other pass sends it meanwhile
                snapshot = current.model_copy(deep=True)
            try:
                status = self.outbox.attempt(snapshot, key, now)  # network I/O outside the lock
            finally:
                with self._lock:
                    self._sending.discard((alert_id, key))
            with self._lock:
                current = self._owed.get(alert_id, current)
                current.delivery[key] = status
                self._save([current])
                if not any(is_outstanding(s) for s in current.delivery.values()):
                    self._owed.pop(alert_id, None)
            metrics.DELIVERIES.labels(key.partition(":")[0], metrics.outcome_of(status)).inc()
            delivered += status == "delivered"
        with self._lock:
            metrics.OUTSTANDING.set(sum(is_outstanding(s) for a in self._owed.values() for s in a.delivery.values()))
        return delivered

    def rescan(self) -> None:
        """Pick up outstanding notifications written by an earlier run of the alerter."""
        with self._lock:
            held = {g.alert.id: g.alert for g in self.lifecycle.groups.values()}
            for alert in self.store.list_alerts(limit=1000):
                if alert.id not in self._owed and alert.id not in held and any(is_outstanding(s) for s in alert.delivery.values()):
                    self._owed[alert.id] = alert

    def _nudge(self) -> None:
        if self._owed and self.background:
            if self._thread is None:
                self.start()
            self._wake.set()

    def start(self) -> None:
        """Start the delivery thread (idempotent)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._deliver_loop, name="alert-outbox", daemon=True)
        self._thread.start()

    def _deliver_loop(self) -> None:
        last_scan = self.clock()
        while not self._stop.is_set():
            if not self.active.is_set():
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                if (self.clock() - last_scan).total_seconds() >= self.rescan_seconds:
                    self.rescan()
                    last_scan = self.clock()
                self.deliver_pending()
            except Exception:  # the loop must survive a store hiccup; the outbox retries later
                log.exception("alert delivery pass failed")
            self._wake.wait(1.0)
            self._wake.clear()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the delivery thread after one last pass; undelivered notices stay in the store."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if not self.active.is_set():
            return
        try:
            self.deliver_pending()
        except Exception:
            log.exception("final alert delivery pass failed; notices stay pending in the store")

    # --- service loops -------------------------------------------------------------------
    def run_forever(
        self,
        source: Literal["store", "kafka"] = "store",
        stop: threading.Event | None = None,
        poll_seconds: float = 2.0,
        kafka_settings: object | None = None,
    ) -> None:
        """Follow the store (poll new articles) or consume ``news.scored`` until ``stop`` is set."""
        stop = stop or threading.Event()
        if source == "kafka":
            self.active.clear()  # until the group gives this member the partitions
        else:
            self.recover()
        self.start()
        try:
            if source == "kafka":
                self._consume_kafka(kafka_settings, stop, poll_seconds)
            else:
                self._follow_store(stop, poll_seconds)
        finally:
            self.close()

    def _follow_store(self, stop: threading.Event, poll_seconds: float) -> None:
        while not stop.is_set():
            since = self.open_from()
            for batch in self.store.iter_articles(Filter(start=since)):
                self.observe(batch)  # re-read articles of open windows replace themselves by id
            metrics.LAST_POLL.set_to_current_time()
            self.tick()
            stop.wait(poll_seconds)

    def _take_over(self) -> None:
        """Become the active alerter: start from what the store holds (open alerts, owed
        notices, recent history), not from what this member saw before it stood by."""
        with self._lock:
            self.detectors = {r.name: Detector(r) for r in self.rules.rules}
            self.lifecycle = Lifecycle(self.rules.rules, self._acknowledged)
            self.max_event_time = self.watermark = None
            self._owed.clear()
        self.recover()
        self.active.set()
        self._nudge()
        log.info("alerter active: consuming every partition of news.scored")

    def _consume_kafka(self, settings: object, stop: threading.Event, poll_seconds: float) -> None:
        from kafka import KafkaConsumer

        from newspulse.kafka.client import ActiveMember, SingleActiveAssignor, group_config

        consumer = KafkaConsumer(
            **group_config(settings, f"{settings.kafka_group_id}-alerter", (SingleActiveAssignor(),)),  # type: ignore[arg-type, attr-defined]
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_interval_ms=getattr(settings, "kafka_max_poll_interval_ms", 300_000),
            session_timeout_ms=getattr(settings, "kafka_session_timeout_ms", 10_000),
        )
        self.member = member = ActiveMember()
        consumer.subscribe([settings.kafka_topic_scored], listener=member)  # type: ignore[attr-defined]
        try:
            while not stop.is_set():
                records = consumer.poll(timeout_ms=int(poll_seconds * 1000))
                metrics.LAST_POLL.set_to_current_time()
                if not member.owns:
                    if self.active.is_set():
                        self.active.clear()
                        log.info("alerter standing by: another member of the group is active")
                    continue
                if not self.active.is_set():
                    self._take_over()
                batch: list[ScoredArticle] = []
                for recs in records.values():
                    for rec in recs:
                        try:
                            batch.append(ScoredArticle.model_validate_json(rec.value))
                        except ValidationError as err:
                            log.warning("skipping malformed news.scored record at %s/%s: %s", rec.partition, rec.offset, err.errors()[:1])
                self.observe(batch)
                self.tick()
                if records:
                    consumer.commit()  # after the alerts these records raised are stored
            if self.active.is_set():
                self.deliver_pending()  # the last pass, while no other member can take over
        finally:
            self.active.clear()
            consumer.close()

