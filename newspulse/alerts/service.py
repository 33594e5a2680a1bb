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

A store that is down pauses the alerter, it never stops it: alert changes it could not write
stay in memory (nothing is sent for them meanwhile, so every notice is stored before it goes
out) and are written when the store is back; the service loops back off and retry, and the
Kafka loop commits no offset past them. If the process dies meanwhile, the next one evaluates
again the windows after the last durable close (:mod:`newspulse.alerts.checkpoint`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import ValidationError

from newspulse.alerts import metrics
from newspulse.alerts.checkpoint import Checkpoint
from newspulse.alerts.delivery import PENDING, Notifier, Outbox, build_notifiers, is_outstanding
from newspulse.alerts.detector import Detector
from newspulse.alerts.lifecycle import Lifecycle, Transition
from newspulse.alerts.rules import RuleSet
from newspulse.alerts.silences import SilenceBook
from newspulse.retrying import Backoff
from newspulse.schema import Alert, AlertStatus, ScoredArticle, to_utc, utcnow
from newspulse.store.base import Filter, Store, StoreError, StoreUnavailable

if TYPE_CHECKING:  # kafka-python is the [kafka] extra: the embedded alerter runs without it
    from newspulse.kafka.client import ActiveMember

log = logging.getLogger(__name__)

#: A stream whose newest story is at most this old (wall clock) is live: quiet periods advance
#: the watermark by the clock, and a restart recovers state from this much recent history.
LIVE_HORIZON = timedelta(hours=6)
#: Stories dated further in the future than this do not move the watermark (clock skew, bad feeds).
MAX_FUTURE = timedelta(minutes=5)
WARM_UP_CAP = timedelta(days=2)
#: Waits between retries while the store is unavailable (the SQLite busy timeout or the
#: Elasticsearch client's own retries come on top of each).
STORE_BACKOFF = Backoff(first_s=1.0, max_s=30.0, jitter=0.2)


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
        checkpoint: Checkpoint | None = None,
    ) -> None:
        """``background=False`` leaves delivery to explicit :meth:`deliver_pending` calls;
        without ``checkpoint`` a restart evaluates none of the windows it warms up on."""
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
        self._owed: dict[str, Alert] = {}  # stored alerts with outstanding deliveries
        #: Alert changes not in the store yet (it was down): written before anything is sent.
        self._unsaved: dict[str, Alert] = {}
        #: Ids whose stored delivery state this alerter has already adopted (or created).
        self._known: set[str] = set()
        #: Delivery state of the alerts read at start, for :meth:`_adopt_settled` without a read.
        self._loaded_delivery: dict[str, dict[str, str]] = {}
        self.checkpoint = checkpoint
        self._closed_unmarked = False  # windows closed since the checkpoint was last written
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
        """Adopt outstanding deliveries and recent open alerts; warm baselines from live history;
        evaluate the windows that were not closed durably (after the checkpoint).

        Only history within LIVE_HORIZON of the wall clock is replayed into the baselines, so a
        replay of an old corpus into a populated store starts from scratch and raises exactly the
        alerts it raised the first time (same ids: upserts, and delivered notices stay delivered).
        Raises StoreUnavailable while the store is down; call :meth:`reset` before trying again.
        """
        now = self.clock()
        with self._lock:
            # One read of the alerts: from here on this alerter's own copies are the truth (an
            # owed notice and its open alert are one object, so a delivery is remembered by both)
            alerts = self.store.list_alerts(limit=1000)
            self._loaded_delivery = {a.id: dict(a.delivery) for a in alerts}
            for alert in alerts:
                if any(is_outstanding(s) for s in alert.delivery.values()):
                    self._owed.setdefault(alert.id, alert)
            latest = self.store.latest_published_at()
            if latest is None or now - latest > LIVE_HORIZON:
                return
            span = max(r.baseline.lookback_windows * max(r.windows) for r in self.rules.rules)
            start = latest - min(timedelta(minutes=span), WARM_UP_CAP)
            for batch in self.store.iter_articles(Filter(start=start)):
                self._count(batch)
            if self.max_event_time is not None:
                live_mark = self.max_event_time - self.lateness
                durable = self.checkpoint.read() if self.checkpoint else None
                self._advance(live_mark if durable is None else min(durable, live_mark), evaluate=False)
                for alert in alerts:
                    if alert.status != AlertStatus.resolved and now - alert.updated_at <= LIVE_HORIZON:
                        self.lifecycle.restore(self._owed.get(alert.id, alert))
                if durable is not None and durable < live_mark:
                    log.info("alerter re-evaluating windows closed after %s (not durably closed before the restart)", durable)
                    self._advance(live_mark, evaluate=True)
            self._export_firing()
        log.info("alerter recovered: %d outstanding notifications, watermark %s", len(self._owed), self.watermark)

    def reset(self) -> None:
        """Forget all state (windows, baselines, open alerts, owed notices): the next
        :meth:`recover` starts from what the store holds."""
        with self._lock:
            self.detectors = {r.name: Detector(r) for r in self.rules.rules}
            self.lifecycle = Lifecycle(self.rules.rules, self._acknowledged)
            self.max_event_time = self.watermark = None
            self._owed.clear()
            self._unsaved.clear()
            self._known.clear()
            self._loaded_delivery.clear()

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
        self._count(articles)
        if self.max_event_time is not None:
            self._advance(self.max_event_time - self.lateness, evaluate)

    def _count(self, articles: Sequence[ScoredArticle]) -> None:
        """Put articles in their buckets and move the newest event time; closes nothing."""
        ceiling = self.clock() + MAX_FUTURE
        for det in self.detectors.values():
            det.add(articles)
        newest = max((a.published_at for a in articles if a.published_at <= ceiling), default=None)
        if newest is not None and (self.max_event_time is None or newest > self.max_event_time):
            self.max_event_time = newest

    def _advance(self, watermark: datetime, evaluate: bool) -> None:
        """Close windows in event-time order up to ``watermark``; persist what changed (raises
        StoreUnavailable when the store is down: the changes stay unsaved, the windows closed)."""
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
            self._closed_unmarked = True
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
        else:
            self._mark_durable()

    # --- persistence and delivery --------------------------------------------------------
    def _persist(self, transitions: list[Transition]) -> None:
        for t in transitions:
            rule = self.lifecycle.rules[t.alert.rule]
            for event in t.events:
                metrics.TRANSITIONS.labels(rule.name, event).inc()
                for receiver in rule.receivers:
                    t.alert.delivery.setdefault(f"{receiver}:{event}", PENDING)
            self._unsaved[t.alert.id] = t.alert
            log.info("alert %s %s %s z=%.1f", t.alert.id, t.alert.scope, t.alert.status.value, t.alert.magnitude)
        self._export_firing()
        self.sync()

    def sync(self) -> None:
        """Write every alert change not stored yet; raises StoreUnavailable (keeping them) while
        the store is down. Alerts with notices owed join the outbox only once stored."""
        with self._lock:
            if self._unsaved:
                batch = list(self._unsaved.values())
                for alert in batch:
                    self._adopt_settled(alert)
                self._save(batch)
                self._unsaved.clear()
                for alert in batch:
                    if any(is_outstanding(s) for s in alert.delivery.values()):
                        self._owed[alert.id] = alert
            self._mark_durable()

    def _adopt_settled(self, alert: Alert) -> None:
        """Keep the notices the store says were settled (delivered, silenced, given up on).

        A replay raises the alerts it raised before, same ids, with every notice pending; the
        upsert merges ``delivery`` key by key, so without this a second replay would send every
        notice again. One read per alert opened here that was not among those read at start.
        """
        if alert.id in self._known:
            return
        if alert.id in self._loaded_delivery:
            delivery = self._loaded_delivery.pop(alert.id)
        else:
            stored = self.store.get_alert(alert.id)
            delivery = stored.delivery if stored else {}
        for key, status in delivery.items():
            if not is_outstanding(status):
                alert.delivery[key] = status
        self._known.add(alert.id)

    def _mark_durable(self) -> None:
        """Advance the checkpoint to the watermark once every window up to it is stored; only
        for a live stream (a restart recovers nothing else), and only after windows closed."""
        if self.checkpoint is None or self._unsaved or not self._closed_unmarked or self.watermark is None:
            return
        if self.clock() - self.watermark <= LIVE_HORIZON:
            self.checkpoint.write(self.watermark)
        self._closed_unmarked = False

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
        """Write this alerter's copies without reading them back before each write: its state
        is the truth for everything but an analyst's ack, which the store's upsert never clears
        (:meth:`~newspulse.store.base.Store.upsert_alerts`), and the notices a replay settled
        before, adopted once per alert (:meth:`_adopt_settled`). Only one alerter is active at
        a time, and it rebuilt its state from the store when it started (:meth:`recover`)."""
        self.store.upsert_alerts(alerts)

    def _acknowledged(self, alert: Alert) -> bool:
        """Whether an analyst acked the alert in the store. While the store cannot say, the
        answer is no: a repeat notice too many beats a window's changes lost mid-way."""
        try:
            stored = self.store.get_alert(alert.id)
        except StoreError as err:
            log.warning("cannot read the acknowledgement of alert %s, repeating it: %s", alert.id, err)
            return False
        return bool(stored and stored.acknowledged)

    def deliver_pending(self) -> int:
        """One outbox pass: try every notification that is due. Returns how many were delivered.

        Nothing is sent while alert changes wait for the store: a notice goes out only once
        the alert owing it is stored (a crash then re-sends it, never loses it)."""
        now = self.clock()
        with self._lock:
            try:
                self.sync()
            except StoreUnavailable as err:
                log.warning("alert deliveries paused: %d alert change(s) wait for the store: %s", len(self._unsaved), err)
                return 0
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
                if not any(is_outstanding(s) for s in current.delivery.values()):
                    self._owed.pop(alert_id, None)
                self._unsaved[current.id] = current
            metrics.DELIVERIES.labels(key.partition(":")[0], metrics.outcome_of(status)).inc()
            delivered += status == "delivered"
            try:
                self.sync()
            except StoreUnavailable as err:  # the status is kept in memory and written later
                log.warning("alert deliveries paused: cannot store a delivery status: %s", err)
                break
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
            except StoreUnavailable as err:
                log.warning("alert delivery pass paused: %s", err)
            except Exception:  # the loop must survive anything else too; the outbox retries later
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
        if self._unsaved:
            log.error("%d alert change(s) could not be stored before stopping; the next start evaluates their windows again", len(self._unsaved))

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
        elif not self._retry_store(self.recover, stop, reset=True):
            return
        self.start()
        try:
            if source == "kafka":
                self._consume_kafka(kafka_settings, stop, poll_seconds)
            else:
                self._follow_store(stop, poll_seconds)
        finally:
            self.close()

    def _follow_store(self, stop: threading.Event, poll_seconds: float) -> None:
        while self._retry_store(self._poll_store, stop) and not stop.wait(poll_seconds):
            pass

    def _poll_store(self) -> None:
        self.sync()
        since = self.open_from()
        for batch in self.store.iter_articles(Filter(start=since)):
            self.observe(batch)  # re-read articles of open windows replace themselves by id
        self.tick()
        self.sync()
        metrics.LAST_POLL.set_to_current_time()

    def _retry_store(self, step: Callable[[], None], stop: threading.Event, *, reset: bool = False) -> bool:
        """Run ``step`` until it gets past an unavailable store (backing off, gauge
        ``newspulse_alerter_paused`` at 1); False when ``stop`` was set first. With ``reset``
        the state is cleared before each retry (a half-done :meth:`recover`)."""
        attempt = 0
        while not stop.is_set():
            try:
                step()
            except StoreUnavailable as err:
                attempt += 1
                delay = STORE_BACKOFF.delay(attempt)
                metrics.PAUSED.set(1)
                log.warning("alerter paused (attempt %d), retry in %.1fs: %s", attempt, delay, err)
                if reset:
                    self.reset()
                stop.wait(delay)
                continue
            if attempt:
                metrics.PAUSED.set(0)
                log.info("alerter resumed after %d failed attempt(s)", attempt)
            return True
        return False

    def _take_over(self, stop: threading.Event) -> bool:
        """Become the active alerter: start from what the store holds (open alerts, owed
        notices, recent history), not from what this member saw before it stood by."""
        self.reset()
        if not self._retry_store(self.recover, stop, reset=True):
            return False
        self.active.set()
        self._nudge()
        log.info("alerter active: consuming every partition of news.scored")
        return True

    def _consume_kafka(self, settings: object, stop: threading.Event, poll_seconds: float) -> None:
        from kafka import KafkaConsumer

        from newspulse.kafka.client import ActiveMember, SingleActiveAssignor, group_config, without_topic_creation

        consumer = without_topic_creation(KafkaConsumer(
            **group_config(settings, f"{settings.kafka_group_id}-alerter", (SingleActiveAssignor(),)),  # type: ignore[arg-type, attr-defined]
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_interval_ms=getattr(settings, "kafka_max_poll_interval_ms", 300_000),
            session_timeout_ms=getattr(settings, "kafka_session_timeout_ms", 10_000),
        ))
        self.member = member = ActiveMember()
        consumer.subscribe([settings.kafka_topic_scored], listener=member)  # type: ignore[attr-defined]
        uncommitted, failures = False, 0
        try:
            while not stop.is_set():
                records = consumer.poll(timeout_ms=int(poll_seconds * 1000))
                if not member.owns:
                    metrics.LAST_POLL.set_to_current_time()  # standing by is healthy
                    if self.active.is_set():
                        self.active.clear()
                        log.info("alerter standing by: another member of the group is active")
                    continue
                if not self.active.is_set() and not self._take_over(stop):
                    break
                batch: list[ScoredArticle] = []
                for recs in records.values():
                    for rec in recs:
                        try:
                            batch.append(ScoredArticle.model_validate_json(rec.value))
                        except ValidationError as err:
                            log.warning("skipping malformed news.scored record at %s/%s: %s", rec.partition, rec.offset, err.errors()[:1])
                uncommitted = uncommitted or bool(records)
                try:
                    self.observe(batch)  # counted even when its changes cannot be stored yet
                    self.tick()
                    self.sync()
                except StoreUnavailable as err:
                    failures += 1
                    metrics.PAUSED.set(1)
                    log.warning("alerter paused (attempt %d): alert changes wait for the store, offsets stay uncommitted: %s", failures, err)
                    stop.wait(STORE_BACKOFF.delay(failures))
                    continue
                metrics.LAST_POLL.set_to_current_time()  # not while paused: the healthcheck sees it
                if failures:
                    metrics.PAUSED.set(0)
                    log.info("alerter resumed after %d failed attempt(s)", failures)
                    failures = 0
                if uncommitted:
                    consumer.commit()  # after the alerts these records raised are stored
                    uncommitted = False
            if self.active.is_set():
                self.deliver_pending()  # the last pass, while no other member can take over
        finally:
            self.active.clear()
            consumer.close()

