#!/usr/bin/env python3
"""Container health checks of docker-compose.yml (installed as ``newspulse-healthcheck``).

Standard library only, so a check costs a few milliseconds and never imports torch. Checks,
any number per call, all must pass (exit 0; otherwise exit 1 with the reason on stderr):

``http URL``   GET URL answers 2xx (processor metrics, the dashboard's /_stcore/health).
``kafka``      a TCP connection to one of ``NEWSPULSE_KAFKA_BOOTSTRAP``'s brokers opens.
``store``      Elasticsearch at ``NEWSPULSE_STORE_URL`` answers ``_cluster/health`` with green
               or yellow, authenticated the way the application is (``NEWSPULSE_ES_*``).

The crawler and the alerter have no HTTP endpoint; with ``init: true`` their container stops
when the process dies, so "healthy" for them means "running, and its brokers are reachable".
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import sys
import urllib.request

TIMEOUT_S = 5.0


def check_http(url: str, headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None) -> bytes:
    """GET ``url``; raises unless the answer is 2xx."""
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=TIMEOUT_S, context=context) as resp:  # noqa: S310 - URLs come from our own compose file
        if not 200 <= resp.status < 300:
            raise RuntimeError(f"{url} answered {resp.status}")
        return resp.read()


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
            elif check == "kafka":
                check_kafka(env)
            elif check == "store":
                check_store(env)
            else:
                print(f"unknown check {check!r} (http URL, kafka, store)", file=sys.stderr)
                return 2
    except Exception as err:  # any failure is "unhealthy", with the reason in `docker inspect`
        print(f"unhealthy: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], dict(os.environ)))
