"""The Prometheus ``/metrics`` endpoint every long-running NewsPulse process can serve.

The processors, the alerter and the crawler each register their own metrics (in their stage's
module) on prometheus_client's default registry; this module only starts the HTTP server once
per process, so several stages sharing a process share one port.
"""

from __future__ import annotations

import logging
import threading

from prometheus_client import start_http_server

log = logging.getLogger(__name__)

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
