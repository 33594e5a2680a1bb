"""`newspulse alerts run --source kafka` against a real Kafka-protocol broker (tansu): the alerter
consumes news.scored with its own group, skips a malformed record, raises the alert and commits
its offsets only after that."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from newspulse.alerts import build_alerter
from newspulse.alerts.synthetic import scored, windowed
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


def test_alerter_consumes_news_scored(tmp_path):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from peers import start_kafka

    from newspulse.kafka.client import connection_config, ensure_topics

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    with start_kafka() as bootstrap:
        settings = load_settings(
            kafka_bootstrap=bootstrap,
            kafka_partitions=1,
            kafka_session_timeout_ms=6000,
            kafka_max_poll_interval_ms=8000,
            store_url=f"sqlite:///{tmp_path / 'np.db'}",
            alert_rules=rules,
            alert_silences=tmp_path / "silences.json",
        )
        ensure_topics(settings)
        articles = windowed(T0, 15, [(4, 1)] * 8 + [(6, 6)]) + [scored(T0 + timedelta(minutes=135, seconds=1), tickers=["OTHER"])]
        producer = KafkaProducer(**connection_config(settings))
        producer.send(settings.kafka_topic_scored, b"{not json")
        for a in articles:
            producer.send(settings.kafka_topic_scored, a.model_dump_json().encode())
        producer.flush()
        producer.close()

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
