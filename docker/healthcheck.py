#!/usr/bin/env python3
"""Container health checks of docker-compose.yml (installed as ``newspulse-healthcheck``).

Standard library only, so a check costs a few milliseconds and never imports torch. Checks,
any number per call, all must pass (exit 0; otherwise exit 1 with the reason on stderr):

``http URL``   GET URL answers 2xx (the dashboard's /_stcore/health).
``fresh URL METRIC SECONDS``
               the Prometheus endpoint at URL has a sample of METRIC (a Unix timestamp gauge,
               any labels) no older than SECONDS: the process's main loop polled its source
               recently. The newest sample counts (the crawler has one per feed). If the
               endpoint also reports that processing paused for an unavailable store or broker
               (``newspulse_pipeline_paused_since_timestamp_seconds``) longer ago than its own
               limit (``newspulse_pipeline_pause_limit_seconds``, ``NEWSPULSE_MAX_PAUSED_S``),
               the check fails with "paused for N s": a paused loop keeps polling to stay in
               its group, so its last poll alone would look healthy while nothing is stored.
``kafka``      a TCP connection to one of ``NEWSPULSE_KAFKA_BOOTSTRAP``'s brokers opens.
``store``      Elasticsearch at ``NEWSPULSE_STORE_URL`` answers ``_cluster/health`` with green
               or yellow, authenticated the way the application is (``NEWSPULSE_ES_*``).

A live metrics thread alone proves nothing (it keeps answering while the poll loop is stuck), so
the processors, the alerter and the crawler are checked with ``fresh`` on the last-poll timestamp
each of them exports.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import sys
import time
import urllib.request

TIMEOUT_S = 5.0


def check_http(url: str, headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None) -> bytes:
    """GET ``url``; raises unless the answer is 2xx."""
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=TIMEOUT_S, context=context) as resp:  # noqa: S310 - URLs come from our own compose file
        if not 200 <= resp.status < 300:
            raise RuntimeError(f"{url} answered {resp.status}")
        return resp.read()


#: Set by the pipeline while paused (Unix time the pause began, 0 while running) and its limit.
PAUSED_SINCE = "newspulse_pipeline_paused_since_timestamp_seconds"
PAUSE_LIMIT = "newspulse_pipeline_pause_limit_seconds"


def samples(exposition: str, metric: str) -> dict[str, float]:
    """Every value of ``metric`` in a Prometheus text exposition, by its label set as written."""
    values = {}
    for line in exposition.splitlines():
        if line.startswith(metric) and line[len(metric) : len(metric) + 1] in (" ", "{"):
            if "}" in line:
                labels, rest = line[len(metric) :].rsplit("}", 1)
                values[labels + "}"] = float(rest.split()[0])
            else:
                values[""] = float(line.rsplit(" ", 1)[1])
    return values


def newest_sample(exposition: str, metric: str) -> float | None:
    """The largest value of ``metric`` (any labels) in a Prometheus text exposition."""
    return max(samples(exposition, metric).values(), default=None)


def paused_too_long(exposition: str, now: float) -> str | None:
    """Why the exposition's pipeline counts as wedged (a source paused past its own limit), or None."""
    limits = samples(exposition, PAUSE_LIMIT)
    for labels, started in samples(exposition, PAUSED_SINCE).items():
        limit = limits.get(labels)
        if started > 0 and limit is not None and now - started > limit:
            return f"paused for {now - started:.0f}s (limit {limit:.0f}s): store or broker unavailable"
    return None


def check_fresh(url: str, metric: str, max_age_s: float) -> None:
    """The newest ``metric`` timestamp at ``url`` is at most ``max_age_s`` seconds old, and the
    pipeline there (if any) is not paused past its limit."""
    exposition = check_http(url).decode("utf-8", "replace")
    newest = newest_sample(exposition, metric)
    if newest is None or newest <= 0:
        raise RuntimeError(f"{metric} not reported yet at {url}")
    now = time.time()
    age = now - newest
    if age > max_age_s:
        raise RuntimeError(f"{metric}: last poll {age:.0f}s ago (limit {max_age_s:.0f}s)")
    wedged = paused_too_long(exposition, now)
    if wedged is not None:
        raise RuntimeError(wedged)


def check_kafka(env: dict[str, str]) -> None:
    """One broker of the bootstrap list accepts a TCP connection."""
    servers = [s.strip() for s in env.get("NEWSPULSE_KAFKA_BOOTSTRAP", "localhost:9092").split(",") if s.strip()]
    errors = []
    for server in servers:
        host, _, port = server.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=TIMEOUT_S).close()
            return
        except OSError as err:
            errors.append(f"{server}: {err}")
    raise RuntimeError("no Kafka broker reachable: " + "; ".join(errors))


def store_request(env: dict[str, str]) -> tuple[dict[str, str], ssl.SSLContext | None]:
    """Authorization header and TLS context the way newspulse.store.elastic connects."""
    headers = {"Accept": "application/json"}
    if env.get("NEWSPULSE_ES_API_KEY"):
        headers["Authorization"] = "ApiKey " + env["NEWSPULSE_ES_API_KEY"]
    elif env.get("NEWSPULSE_ES_USERNAME"):
        token = f"{env['NEWSPULSE_ES_USERNAME']}:{env.get('NEWSPULSE_ES_PASSWORD', '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
    context = None
    if env.get("NEWSPULSE_STORE_URL", "").startswith("https://"):
        context = ssl.create_default_context(cafile=env.get("NEWSPULSE_ES_CA_CERTS") or None)
        if env.get("NEWSPULSE_ES_VERIFY_CERTS", "true").lower() in ("0", "false", "no", "off"):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    return headers, context


def check_store(env: dict[str, str]) -> None:
    """Elasticsearch is up for the application's credentials and not red."""
    url = env.get("NEWSPULSE_STORE_URL", "")
    if not url.startswith(("http://", "https://")):
        raise RuntimeError(f"NEWSPULSE_STORE_URL={url!r} is not an Elasticsearch URL")
    headers, context = store_request(env)
    body = json.loads(check_http(url.rstrip("/") + "/_cluster/health", headers, context))
    if body.get("status") not in ("green", "yellow"):
        raise RuntimeError(f"Elasticsearch cluster status is {body.get('status')}")


def main(argv: list[str], env: dict[str, str]) -> int:
    args = list(argv)
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        while args:
            check = args.pop(0)
            if check == "http":
                check_http(args.pop(0))
            elif check == "fresh":
                check_fresh(args.pop(0), args.pop(0), float(args.pop(0)))
            elif check == "kafka":
                check_kafka(env)
            elif check == "store":
                check_store(env)
            else:
                print(f"unknown check {check!r} (http URL, fresh URL METRIC SECONDS, kafka, store)", file=sys.stderr)
                return 2
    except Exception as err:  # any failure is "unhealthy", with the reason in `docker inspect`
        print(f"unhealthy: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], dict(os.environ)))
