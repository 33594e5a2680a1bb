"""Prometheus metrics of the Kafka processor, served on ``NEWSPULSE_METRICS_PORT``."""

from __future__ import annotations

import logging
import threading

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

CONSUMED = Counter("newspulse_kafka_records_consumed", "Records read from the raw topic (redeliveries included).")
PROCESSED = Counter("newspulse_kafka_articles_processed", "Articles scored and accepted by every sink.")
FAILED = Counter("newspulse_kafka_records_failed", "Records whose batch or sink write failed and that will be retried.")
DEAD_LETTERED = Counter("newspulse_kafka_records_dead_lettered", "Records sent to the dead-letter topic.")
BATCH_SECONDS = Histogram(
    "newspulse_kafka_batch_seconds",
    "Time to process one micro-batch (parse, score, summarise, write).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
LAG = Gauge("newspulse_kafka_consumer_lag", "Records in a partition not yet processed by this processor.", ["topic", "partition"])

_server_lock = threading.Lock()
_server_port: int | None = None


def serve_metrics(port: int) -> int:
    """Start the /metrics HTTP endpoint once per process; returns the bound port (0 = any free)."""
    global _server_port
    with _server_lock:
        if _server_port is None:
            server, _thread = start_http_server(port)
            _server_port = server.server_port
            log.info("Prometheus metrics on :%d/metrics", _server_port)
        return _server_port
