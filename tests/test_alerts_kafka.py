"""`newspulse alerts run --source kafka` against a real Kafka-protocol broker (tansu): the alerter
consumes news.scored with its own group, skips a malformed record, raises the alert and commits
its offsets only after that."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from newspulse.alerts import build_alerter
from alert_streams import scored, windowed
from newspulse.schema import AlertStatus
from newspulse.settings import load_settings
from newspulse.store.sqlite import SQLiteStore

pytestmark = pytest.mark.kafka

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)

RULES = """
allowed_lateness_minutes: 0
receivers: {log: {type: log}}
rules:
  - {name: t, scope: ticker, windows: [15], hop_minutes: 15, min_volume: 4, min_count: 3, z_threshold: 3,
     min_share_delta: 0.25, receivers: [log], baseline: {lookback_windows: 16, min_history: 4, seasonality: false}}
"""


def alerter_settings(bootstrap: str, tmp_path, rules, *, partitions: int):
    """Settings of an alerter on the test broker: short group timeouts, so a leaving member's
    partitions move within seconds, and a SQLite store in ``tmp_path``."""
    return load_settings(
        kafka_bootstrap=bootstrap,
        kafka_partitions=partitions,
        kafka_session_timeout_ms=6000,
        kafka_max_poll_interval_ms=8000,
        store_url=f"sqlite:///{tmp_path / 'np.db'}",
        alert_rules=rules,
        alert_silences=tmp_path / "silences.json",
    )


def publish_spike(settings, *raw: bytes) -> list:
    """Put ``raw`` records, then a spike on ACME and a later story that closes its window, on
    news.scored; returns the articles."""
    from kafka import KafkaProducer

    from newspulse.kafka.client import connection_config

    articles = windowed(T0, 15, [(4, 1)] * 8 + [(6, 6)]) + [scored(T0 + timedelta(minutes=135, seconds=1), tickers=["OTHER"])]
    producer = KafkaProducer(**connection_config(settings))
    for value in [*raw, *(a.model_dump_json().encode() for a in articles)]:
        producer.send(settings.kafka_topic_scored, value)
    producer.flush()
    producer.close()
    return articles


def test_alerter_consumes_news_scored(tmp_path):
    from kafka import KafkaConsumer, TopicPartition
    from peers import start_kafka

    from newspulse.kafka.client import connection_config, ensure_topics

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    with start_kafka() as bootstrap:
        settings = alerter_settings(bootstrap, tmp_path, rules, partitions=1)
        ensure_topics(settings)
        articles = publish_spike(settings, b"{not json")

        store = SQLiteStore(settings.sqlite_path)
        alerter = build_alerter(settings, store, recover=False)
        stop = threading.Event()
        worker = threading.Thread(target=alerter.run_forever, kwargs={"source": "kafka", "stop": stop, "poll_seconds": 0.5, "kafka_settings": settings})
        worker.start()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(a.delivery.get("log:firing") == "delivered" for a in store.list_alerts()):
                time.sleep(0.2)
            time.sleep(1.0)  # one more poll loop: the commit follows the batch
        finally:
            stop.set()
            worker.join(30)
        assert not worker.is_alive()
        (alert,) = store.list_alerts()
        store.close()
        assert alert.scope == "ticker:ACME" and alert.status == AlertStatus.firing

        consumer = KafkaConsumer(**connection_config(settings), group_id=f"{settings.kafka_group_id}-alerter", enable_auto_commit=False)
        try:
            committed = consumer.committed(TopicPartition(settings.kafka_topic_scored, 0))
        finally:
            consumer.close()
        assert committed == len(articles) + 1  # every record, the malformed one included


class AlerterThread:
    """``run_forever(source="kafka")`` in a thread, stopped through its Event."""

    def __init__(self, alerter, settings) -> None:
        self.alerter = alerter
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=alerter.run_forever, kwargs={"source": "kafka", "stop": self.stop, "poll_seconds": 0.3, "kafka_settings": settings}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "alerter did not stop"


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.2)


def test_a_second_alerter_stands_by_and_takes_over(tmp_path, caplog):
    """Run twice, the alerter is safe: the group gives every partition of news.scored to the
    first member; the second consumes nothing and delivers nothing until the first leaves, then
    takes over from the committed offsets. The alert is raised and notified once."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from peers import start_kafka

    from newspulse.kafka.client import connection_config, ensure_topics

    rules = tmp_path / "rules.yaml"
    # lateness covers the whole episode: records of three partitions interleave in any order
    rules.write_text(RULES.replace("allowed_lateness_minutes: 0", "allowed_lateness_minutes: 180"))
    caplog.set_level(logging.WARNING, logger="newspulse.alerts.notify")
    with start_kafka() as bootstrap:
        settings = alerter_settings(bootstrap, tmp_path, rules, partitions=3)
        ensure_topics(settings)
        group = f"{settings.kafka_group_id}-alerter"
        producer = KafkaProducer(**connection_config(settings))
        published = 0

        def publish(batch) -> None:
            nonlocal published
            for a in batch:
                producer.send(settings.kafka_topic_scored, key=a.id.encode(), value=a.model_dump_json().encode())
            producer.flush()
            published += len(batch)

        def committed() -> int:
            check = KafkaConsumer(**connection_config(settings), group_id=group, enable_auto_commit=False)
            try:
                return sum(check.committed(TopicPartition(settings.kafka_topic_scored, p)) or 0 for p in range(3))
            finally:
                check.close()

        stores = [SQLiteStore(settings.sqlite_path), SQLiteStore(settings.sqlite_path)]
        alerters = [build_alerter(settings, st, recover=False) for st in stores]
        first = AlerterThread(alerters[0], settings)
        second = None
        try:
            _wait(alerters[0].active.is_set, 60, "the first alerter to become active")
            second = AlerterThread(alerters[1], settings)
            _wait(lambda: alerters[1].member is not None and alerters[1].member.assignments > 0, 60, "the second alerter to join the group")
            time.sleep(1.0)  # a rebalance, if any, has settled
            assert alerters[0].active.is_set() and not alerters[1].active.is_set()

            publish(windowed(T0, 15, [(4, 1)] * 8 + [(6, 6)]))
            _wait(lambda: committed() == published, 60, "the episode consumed")
            publish([scored(T0 + timedelta(minutes=135 + 181), tickers=["OTHER"])])  # moves the watermark past it
            _wait(lambda: any(a.delivery.get("log:firing") == "delivered" for a in stores[0].list_alerts()), 60, "the alert delivered")
            assert not alerters[1].active.is_set(), "the standby stayed idle"

            first.close()
            _wait(alerters[1].active.is_set, 60, "the standby to take over")
            publish([scored(T0 + timedelta(minutes=400 + i), tickers=["OTHER"]) for i in range(5)])
            _wait(lambda: committed() == published, 60, "the records published after the take-over consumed")
        finally:
            first.close()
            if second is not None:
                second.close()
            producer.close()
        (alert,) = stores[1].list_alerts()
        assert alert.scope == "ticker:ACME" and alert.status == AlertStatus.firing
        firing = [r for r in caplog.records if f"({alert.id}:firing)" in r.getMessage()]
        assert len(firing) == 1, [r.getMessage() for r in firing]
        for st in stores:
            st.close()


def test_store_error_as_an_alert_fires_over_kafka_commits_nothing_until_stored(tmp_path, monkeypatch):
    """#29.2 in Kafka mode: upsert_alerts raising StoreUnavailable does not escape the loop; the
    alerter keeps polling, commits no offset while the alert waits for the store, and once the
    store is back stores the alert, delivers it and commits every record."""
    from kafka import KafkaConsumer, TopicPartition
    from peers import start_kafka

    from newspulse.alerts import service
    from newspulse.kafka.client import connection_config, ensure_topics
    from newspulse.retrying import Backoff
    from test_alerts_reliability import FlakyStore

    monkeypatch.setattr(service, "STORE_BACKOFF", Backoff(first_s=0.1, max_s=0.3))
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    with start_kafka() as bootstrap:
        settings = alerter_settings(bootstrap, tmp_path, rules, partitions=1)
        ensure_topics(settings)
        articles = publish_spike(settings)

        def committed():
            consumer = KafkaConsumer(**connection_config(settings), group_id=f"{settings.kafka_group_id}-alerter", enable_auto_commit=False)
            try:
                return consumer.committed(TopicPartition(settings.kafka_topic_scored, 0))
            finally:
                consumer.close()

        store = FlakyStore(settings.sqlite_path)
        store.failures = locked = 10**6  # until the test unlocks it
        alerter = build_alerter(settings, store, recover=False)
        worker = AlerterThread(alerter, settings)
        try:
            deadline = time.monotonic() + 60
            while locked - store.failures < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert locked - store.failures >= 3 and worker.thread.is_alive()
            assert store.list_alerts() == [] and committed() is None
            store.failures = 0
            while time.monotonic() < deadline and not any(a.delivery.get("log:firing") == "delivered" for a in store.list_alerts()):
                time.sleep(0.2)
            time.sleep(1.0)  # one more poll loop: the commit follows the stored changes
        finally:
            worker.close()
        (alert,) = store.list_alerts()
        store.close()
        assert alert.status == AlertStatus.firing and alert.delivery == {"log:firing": "delivered"}
        assert committed() == len(articles)
