"""Prometheus metrics of the Kafka processor, served on ``NEWSPULSE_METRICS_PORT``.

Only what is Kafka's own lives here (records read, retried, lag, polls, arrival latency): what
became of each message (stored, dead-lettered, duplicate, released) is counted once, for both
modes, by ``newspulse_pipeline_messages_total{source,fate}`` (newspulse.pipeline.MESSAGES)."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram

from newspulse.metrics import serve_metrics  # noqa: F401  (re-exported: the processor starts the endpoint here)

CONSUMED = Counter("newspulse_kafka_records_consumed", "Records read from the raw topic (redeliveries included).")
FAILED = Counter("newspulse_kafka_records_failed", "Records whose batch or sink write failed and that will be retried.")
BATCH_SECONDS = Histogram(
    "newspulse_kafka_batch_seconds",
    "Time to process one micro-batch (parse, score, summarise, write).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
LAG = Gauge("newspulse_kafka_consumer_lag", "Records in a partition not yet processed by this processor.", ["topic", "partition"])
LAST_POLL = Gauge(
    "newspulse_kafka_last_poll_timestamp_seconds",
    "Unix time of the processor's last successful poll of the raw topic: the healthcheck's proof that the loop is alive.",
)
ARRIVAL_TO_INDEXED = Histogram(
    "newspulse_kafka_arrival_to_indexed_seconds",
    "From a record's arrival on the raw topic (its Kafka timestamp) to the end of the batch that stored or dead-lettered it (a record a sink refused is observed again when retried).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600),
)


def observe_indexed(records: list) -> None:
    """Record arrival → indexed latency of a finished batch (Kafka timestamps are Unix ms)."""
    now_ms = time.time() * 1000
    for record in records:
        if record.timestamp is not None and record.timestamp > 0:
            ARRIVAL_TO_INDEXED.observe(max(0.0, (now_ms - record.timestamp) / 1000))
