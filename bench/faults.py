"""Fault suite: kill, cut off and poison the real Kafka pipeline, and count what became of each message.

Every scenario runs the production processor (``newspulse process --source kafka``, the real
classifier) as a child process against real peers on free loopback ports (tansu for Kafka,
noida-db for Elasticsearch, a local HTTP proxy for credentials), stopped by PID. It prints one
line per scenario, verdict and figures, and merges its results into bench/results/faults.json
(one object per scenario, with the parameters used, the date and the machine).

    python bench/faults.py                         # R1, R2 (30 s and 600 s outages), R3
    python bench/faults.py --only R1 --articles 2000
    python bench/faults.py --only R2 --outage-seconds 30

R1  kill -9 the processor 5 times during a stream: stored = unique produced, 0 duplicates.
R2  the store unreachable mid-stream (SQLite locked by another writer; noida-db stopped, then
    started again), and an expired Elasticsearch credential: 0 lost, 0 dead-lettered, resumes by
    itself; the credential stops the process with a clear message and nothing committed.
R3  poison messages of 12 kinds mixed into good ones (and one kill -9 mid-stream): each poison
    message dead-lettered with its reason and its source topic/partition/offset, every good one
    stored.
R4  the crawler against hostile feeds: bench/faults_crawler.py (registered in SCENARIOS).
R5  the broker killed -9 mid-stream and restarted empty (its own tansu): every story before and
    after the restart stored once, the raw topic back with the configured partitions, and the
    processor's health check never green while it was paused past its limit.
R6  the alerter's store fails as an alert fires (it waits, and once killed while waiting, its
    successor evaluates the window again): the alert is delivered exactly once.
R7  a poisoned notification among good ones: every good one delivered, each poisoned one ends
    with its own status. R6 and R7: bench/faults_alerts.py (registered in SCENARIOS).

A scenario passes only if every message has exactly one fate: stored, dead-lettered with a
reason, or (after a permanent failure) still uncommitted. The articles are headlines with a
short body (Reuters titles), so 10,000 of them fit a 2-core CPU in minutes.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import re
import signal
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench"), str(ROOT / "docker")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from kafka import KafkaConsumer, TopicPartition  # noqa: E402
from tqdm import tqdm  # noqa: E402

from newspulse.kafka.client import connection_config, ensure_topics, until_reached  # noqa: E402
from newspulse.kafka.producer import build_producer  # noqa: E402
from newspulse.kafka.sinks import read_dead_letter  # noqa: E402
from newspulse.schema import Article  # noqa: E402
from newspulse.settings import Settings, load_settings  # noqa: E402
from peers import CredentialProxy, Peer, free_port, start_elasticsearch_peer, start_kafka, start_kafka_peer  # noqa: E402
from fault_results import ChildProcess, Outcome, SQLiteWriteLock, failed_outcome, machine, wait_until, write_results  # noqa: E402
from provenance import commit  # noqa: E402
from faults_alerts import run_scenario as run_alert_scenario  # noqa: E402
from faults_crawler import r4_result  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "faults.json"
#: A wait fails when the processor has stored nothing new for this long (not on a fixed deadline).
STALL_S = 600.0


# --- the stack ------------------------------------------------------------------------------
@dataclass
class Stack:
    """One Kafka broker for the whole run; each scenario gets its own topics, group and store."""

    bootstrap: str
    registry: Path
    workdir: Path


@dataclass
class Run:
    """One scenario's settings, as this process uses them and as the child processor gets them."""

    settings: Settings
    env: dict[str, str]
    workdir: Path


def new_run(stack: Stack, name: str, store_url: str | None = None, **overrides: object) -> Run:
    """Fresh topics, group, store and index prefix; the same values reach the child by env."""
    tag = f"{re.sub(r'[^a-z0-9]+', '-', name.lower())}-{uuid.uuid4().hex[:6]}"
    workdir = stack.workdir / tag
    workdir.mkdir(parents=True)
    values: dict[str, object] = {
        "kafka_bootstrap": stack.bootstrap,
        "kafka_topic_raw": f"raw-{tag}",
        "kafka_topic_scored": f"scored-{tag}",
        "kafka_topic_dlq": f"dlq-{tag}",
        "kafka_group_id": f"group-{tag}",
        "kafka_partitions": 4,
        "kafka_session_timeout_ms": 6000,
        "store_url": store_url or f"sqlite:///{workdir / 'store.db'}",
        "es_index_prefix": f"np-{tag}",
        "model_registry": stack.registry,
        "log_level": "INFO",
        **overrides,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSPULSE_")}
    env.update({f"NEWSPULSE_{k.upper()}": str(v) for k, v in values.items()})
    env["PYTHONPATH"] = str(ROOT)
    settings = load_settings(**values)
    ensure_topics(settings)
    return Run(settings, env, workdir)


class ProcessorProcess(ChildProcess):
    """``newspulse process --source kafka`` as a child process, its output in a log file."""

    role = "processor"
    tail_lines = 15

    def __init__(self, run: Run) -> None:
        super().__init__([sys.executable, "-m", "newspulse.cli", "process", "--source", "kafka"], run.env, run.workdir, run.workdir / "processor.log")
        self.run = run
        self.starts = 0

    def start(self) -> None:
        super().start()
        self.starts += 1

    def counters(self) -> dict | None:
        """The processor's own counters, from the last "processor stopped: {...}" log line."""
        found = re.findall(r"processor stopped: (\{.*\})", self.log.read_text(errors="replace")) if self.log.exists() else []
        with contextlib.suppress(ValueError, SyntaxError, IndexError):
            return ast.literal_eval(found[-1])
        return None


# --- inputs ---------------------------------------------------------------------------------
def headlines(n: int, tag: str) -> list[Article]:
    """``n`` distinct articles: Reuters titles with a short body, each with its own URL (id)."""
    from pipeline import corpus

    base = corpus(min(n, 5000), with_body=False)
    return [
        Article(published_at=a.published_at, source=a.source, title=a.title, body=a.body[:200], url=f"https://faults.invalid/{tag}/{i}")
        for i, a in enumerate(base[i % len(base)] for i in range(n))
    ]


def poison_messages(n: int, template: Article) -> list[tuple[str, bytes | None]]:
    """``n`` poison messages, round-robin over 12 kinds: ``(kind, value)``."""
    good = json.loads(template.model_dump_json())
    good.pop("id")
    nested = 100_000  # far deeper than any JSON parser's recursion limit

    def kind(i: int) -> tuple[str, bytes | None]:
        url = f"https://faults.invalid/poison/{i}"
        variants: list[tuple[str, Callable[[], bytes | None]]] = [
            ("invalid_json", lambda: b'{"title": "unterminated ' + str(i).encode()),
            ("not_an_object", lambda: json.dumps([i, "title"]).encode()),
            ("wrong_types", lambda: json.dumps(good | {"url": url, "published_at": {"day": i}, "tickers": 7}).encode()),
            ("missing_title", lambda: json.dumps({k: v for k, v in good.items() if k != "title"} | {"url": url}).encode()),
            ("null_value", lambda: None),
            ("deeply_nested", lambda: b'{"title": ' + b"[" * nested + b"]" * nested + b"}"),
            ("far_future_published_at", lambda: json.dumps(good | {"url": url, "published_at": "9999-12-31T23:59:59Z"}).encode()),
            ("invalid_utf8", lambda: b'{"title": "caf\xe9 \xff\xfe ' + str(i).encode() + b'"}'),
            ("huge_body", lambda: json.dumps(good | {"url": url, "body": "x" * 1_100_000}).encode()),
            ("empty_payload", lambda: b""),
            ("empty_title_and_body", lambda: json.dumps(good | {"url": url, "title": " ", "body": ""}).encode()),
            ("unknown_schema_version", lambda: json.dumps(good | {"url": url, "schema_version": 99}).encode()),
        ]
        name, make = variants[i % len(variants)]
        return name, make()

    return [kind(i) for i in range(n)]


def publish(settings: Settings, items: list[tuple[bytes | None, bytes | None]], what: str) -> list[tuple[int, int]]:
    """Send ``(key, value)`` records to news.raw; returns each one's (partition, offset)."""
    producer = build_producer(settings)
    try:
        futures = [producer.send(settings.kafka_topic_raw, key=k, value=v) for k, v in tqdm(items, desc=f"publish {what}", unit="msg", leave=False)]
        producer.flush()
        return [(m.partition, m.offset) for m in (f.get(timeout=60) for f in futures)]
    finally:
        producer.close()


def publish_articles(settings: Settings, arts: list[Article], what: str) -> list[tuple[int, int]]:
    return publish(settings, [(a.id.encode(), a.model_dump_json().encode()) for a in arts], what)


# --- observations ---------------------------------------------------------------------------
def stored_counts(settings: Settings) -> tuple[int, int]:
    """(articles, distinct ids) in the store. SQLite is read through a read-only connection of
    its own, which works while another connection holds the write lock (the R2 outage)."""
    if settings.sqlite_path is not None:
        if not settings.sqlite_path.exists():  # the processor has not opened it yet
            return 0, 0
        conn = sqlite3.connect(f"file:{settings.sqlite_path}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute("SELECT count(*), count(DISTINCT id) FROM articles").fetchone()
        except sqlite3.OperationalError:  # nor created its tables
            return 0, 0
        finally:
            conn.close()
    from newspulse.wiring import open_store

    store = open_store(settings)
    try:
        stats = store.stats()
        return stats["articles"], stats["unique_ids"]
    finally:
        store.close()


def sqlite_ids(path: Path) -> set[str]:
    """Every article id in a SQLite store."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM articles")}
    finally:
        conn.close()


def read_topic(settings: Settings, topic: str, idle_ms: int = 1500) -> list:
    """Every record of ``topic`` from the beginning (no group), until ``idle_ms`` bring nothing."""
    consumer = KafkaConsumer(**connection_config(settings), enable_auto_commit=False, max_partition_fetch_bytes=16 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        records: list = []
        while batch := [r for recs in consumer.poll(timeout_ms=idle_ms).values() for r in recs]:
            records.extend(batch)
        return records
    finally:
        consumer.close()


def committed(settings: Settings) -> dict[int, int]:
    """The group's committed offset per partition of news.raw (0 where none)."""
    consumer = KafkaConsumer(**connection_config(settings), group_id=settings.kafka_group_id, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(settings.kafka_topic_raw, p)) or 0 for p in range(settings.kafka_partitions)}
    finally:
        consumer.close()


def lag(settings: Settings, positions: list[tuple[int, int]]) -> int:
    """Produced records of news.raw not covered by the group's committed offsets."""
    end: dict[int, int] = {}
    for p, off in positions:
        end[p] = max(end.get(p, 0), off + 1)
    done = committed(settings)
    return sum(max(0, last - done.get(p, 0)) for p, last in end.items())


def progress_wait(count: Callable[[], int], target: int, what: str, child: ChildProcess | None = None, stall_s: float = STALL_S) -> float:
    """Wait, with a progress bar, until ``count() >= target``; return the seconds it took. Raise
    TimeoutError only when the count has not moved for ``stall_s``: a slow shared machine is
    not a failure, a processor that stopped making progress is."""
    bar = tqdm(total=target, desc=what, unit="msg", leave=False)
    t0 = last_move = time.monotonic()
    last = -1
    try:
        while (n := count()) < target:
            if n > last:
                bar.update(max(0, n - max(last, 0)))
                last, last_move = n, time.monotonic()
            if child is not None and not child.alive:
                raise RuntimeError(f"the {child.role} exited while waiting for {what}")
            if time.monotonic() - last_move > stall_s:
                raise TimeoutError(f"{what}: stuck at {n} of {target} for {stall_s:.0f}s")
            time.sleep(1.0)
        return time.monotonic() - t0
    finally:
        bar.close()


def sleep_with_bar(seconds: float, what: str, check: Callable[[], None] | None = None) -> None:
    """Sleep ``seconds`` with a progress bar, calling ``check`` about every second."""
    end = time.monotonic() + seconds
    with tqdm(total=int(seconds), desc=what, unit="s", leave=False) as bar:
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(1.0, left))
            bar.n = int(seconds - max(0.0, end - time.monotonic()))
            bar.refresh()
            if check is not None:
                check()


# --- R1: kill -9 ----------------------------------------------------------------------------
def r1_kill9(stack: Stack, args: argparse.Namespace) -> list[Outcome]:
    """Kill -9 the processor ``kills`` times while it works through a stream, restart it each
    time; at the end every unique article is stored once and every offset committed."""
    n, kills = args.articles, args.kills
    params = {"articles": n, "republished": n // 20, "kills": kills, "store": "sqlite", "partitions": 4}
    run = new_run(stack, "r1")
    proc = ProcessorProcess(run)
    try:
        arts = headlines(n, "r1")
        positions = publish_articles(run.settings, arts + arts[: n // 20], "R1")  # 5% re-published: same ids
        unique = len({a.id for a in arts})
        stored = lambda: stored_counts(run.settings)[0]  # noqa: E731
        t0 = time.monotonic()
        proc.start()
        at_kill, lag_at_kill = [], []
        for k in range(1, kills + 1):
            progress_wait(stored, unique * k // (kills + 1), f"R1 before kill {k}", child=proc)
            proc.kill9()
            at_kill.append(stored())
            lag_at_kill.append(lag(run.settings, positions))
            proc.start()
        progress_wait(stored, unique, "R1 catching up", child=proc)
        wait_until(lambda: lag(run.settings, positions) == 0, 120, "R1 every offset committed", child=proc)
        elapsed = time.monotonic() - t0
        rc = proc.stop()
        articles, ids = stored_counts(run.settings)
        dlq = len(read_topic(run.settings, run.settings.kafka_topic_dlq))
        figures = {
            "produced": len(positions), "unique": unique, "stored": articles, "duplicates": articles - ids,
            "dead_lettered": dlq, "kills": len(at_kill), "stored_at_kills": at_kill, "uncommitted_at_kills": lag_at_kill,
            "final_lag": lag(run.settings, positions), "exit_code": rc, "articles_per_s": unique / elapsed,
            "last_processor_counters": proc.counters(),
        }
        passed = articles == ids == unique and dlq == 0 and figures["final_lag"] == 0 and rc == 0 and len(at_kill) == kills
        return [Outcome("R1 kill-9", passed, figures, params, elapsed)]
    except Exception as err:
        return [failed_outcome("R1 kill-9", params, err, proc)]
    finally:
        proc.stop(30)


# --- R2: store outages and credentials -----------------------------------------------------
class PeerOutage:
    """Stops the noida-db server (gracefully, so it keeps what it acknowledged) and starts it again
    on the same port and data folder."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer

    def begin(self) -> None:
        self.peer.stop(graceful=True)

    def end(self) -> None:
        self.peer.start()


def r2_outage(stack: Stack, args: argparse.Namespace, backend: str, seconds: float) -> Outcome:
    """The store is unreachable for ``seconds`` while articles keep arriving; then it returns.
    The processor must neither exit nor dead-letter, and must store everything once it is back."""
    n = args.outage_articles
    name = f"R2 {backend} {seconds:g}s outage"
    params = {"backend": backend, "outage_seconds": seconds, "articles": n, "stored_before_outage_at_least": n // 4}
    proc = None
    with contextlib.ExitStack() as cleanup:
        try:
            if backend == "sqlite":
                run = new_run(stack, f"r2-sqlite-{seconds:g}")
                outage = SQLiteWriteLock(run.settings.sqlite_path)
            else:
                peer = cleanup.enter_context(start_elasticsearch_peer())
                run = new_run(stack, f"r2-es-{seconds:g}", store_url=f"http://127.0.0.1:{peer.port}")
                outage = PeerOutage(peer)
            proc = ProcessorProcess(run)
            cleanup.callback(proc.stop, 30)
            arts = headlines(n, f"r2-{backend}-{seconds:g}")
            first, second = arts[: n // 2], arts[n // 2 :]
            positions = publish_articles(run.settings, first, "R2 first half")
            stored = lambda: stored_counts(run.settings)[0]  # noqa: E731
            proc.start()
            progress_wait(stored, n // 4, f"{name}: before", child=proc)
            outage.begin()
            t_out = time.monotonic()
            positions += publish_articles(run.settings, second, "R2 second half (during the outage)")
            exited_during = []

            def check() -> None:
                if not proc.alive and not exited_during:
                    exited_during.append(round(time.monotonic() - t_out, 1))

            sleep_with_bar(max(0.0, seconds - (time.monotonic() - t_out)), f"{name}: store down", check)
            at_end_of_outage = stored() if backend == "sqlite" else None  # SQLite readers work during the outage
            outage.end()
            t_back = time.monotonic()
            alive_after_outage = proc.alive
            resume_s = None
            if alive_after_outage:
                resume_s = progress_wait(stored, n, f"{name}: after", child=proc)
                wait_until(lambda: lag(run.settings, positions) == 0, 120, "every offset committed", child=proc)
            rc = proc.stop()
            articles, ids = stored_counts(run.settings)
            dlq = len(read_topic(run.settings, run.settings.kafka_topic_dlq))
            figures = {
                "produced": n, "stored": articles, "lost": n - ids, "dead_lettered": dlq,
                "processor_exited_during_outage_after_s": exited_during[0] if exited_during else None,
                "stored_when_outage_ended": at_end_of_outage, "seconds_to_catch_up_after_outage": resume_s,
                "final_lag": lag(run.settings, positions), "exit_code": rc, "outage_measured_s": t_back - t_out,
                "processor_counters": proc.counters(),
            }
            passed = articles == ids == n and dlq == 0 and not exited_during and figures["final_lag"] == 0 and rc == 0
            return Outcome(name, passed, figures, params, time.monotonic() - t_out)
        except Exception as err:
            return failed_outcome(name, params, err, proc)


def r2_credential(stack: Stack, args: argparse.Namespace) -> Outcome:
    """The Elasticsearch API key expires mid-stream: the processor stops with a clear message and
    a non-zero exit, dead-letters nothing, commits nothing it did not store; with a renewed key a
    restarted processor stores everything."""
    n = args.outage_articles
    name = "R2 es expired key"
    params = {"articles": n, "expire_after_stored_at_least": n // 4}
    proc = None
    with contextlib.ExitStack() as cleanup:
        try:
            peer = cleanup.enter_context(start_elasticsearch_peer())
            key = "ZmF1bHRzOmtleQ=="
            proxy = CredentialProxy(peer.port, key)
            cleanup.callback(proxy.close)
            run = new_run(stack, "r2-credential", store_url=f"http://127.0.0.1:{proxy.port}", es_api_key=key)
            probe = run.settings.model_copy(update={"store_url": f"http://127.0.0.1:{peer.port}", "es_api_key": None})  # not through the proxy
            proc = ProcessorProcess(run)
            cleanup.callback(proc.stop, 30)
            arts = headlines(n, "r2-credential")
            positions = publish_articles(run.settings, arts, "R2 credential")
            stored = lambda: stored_counts(probe)[0]  # noqa: E731
            proc.start()
            progress_wait(stored, n // 4, f"{name}: before", child=proc)
            proxy.expired = True
            t_exp = time.monotonic()
            with contextlib.suppress(TimeoutError):
                wait_until(lambda: not proc.alive, args.credential_exit_timeout, "the processor to stop on the expired key")
            exit_s = time.monotonic() - t_exp if not proc.alive else None
            rc = proc.proc.returncode if not proc.alive else None
            message = _last_error_line(proc.tail(200))
            proxy.expired = False
            stored_at_stop = stored()
            committed_at_stop = sum(committed(run.settings).values())
            dlq = len(read_topic(run.settings, run.settings.kafka_topic_dlq))
            proc.stop(30)
            proc.start()  # renewed key: everything not committed must still be there
            progress_wait(stored, n, f"{name}: renewed key", child=proc)
            wait_until(lambda: lag(run.settings, positions) == 0, 120, "every offset committed", child=proc)
            final_rc = proc.stop()
            articles, ids = stored_counts(probe)
            figures = {
                "produced": n, "exit_code_on_expired_key": rc, "seconds_to_stop": exit_s, "message": message,
                "dead_lettered": dlq, "stored_when_stopped": stored_at_stop, "committed_when_stopped": committed_at_stop,
                "committed_beyond_stored": max(0, committed_at_stop - stored_at_stop), "requests_refused_401": proxy.refused,
                "stored_after_renewal": articles, "lost": n - ids, "exit_code_after_renewal": final_rc,
            }
            clear = bool(message) and bool(re.search(r"401|credential|authenticat|api key|unauthori", message, re.I))
            passed = rc not in (None, 0) and clear and dlq == 0 and committed_at_stop <= stored_at_stop and articles == ids == n and final_rc == 0
            return Outcome(name, passed, figures, params, time.monotonic() - t_exp)
        except Exception as err:
            return failed_outcome(name, params, err, proc)


def _last_error_line(log_text: str) -> str:
    """The last log line that reports an error (not a traceback frame): what an operator reads."""
    lines = [line for line in log_text.splitlines() if re.search(r"\b(ERROR|CRITICAL|Error|error)\b", line) and not line.startswith((" ", "\t", "Traceback"))]
    return lines[-1].strip()[:500] if lines else ""


def r2_all(stack: Stack, args: argparse.Namespace) -> Iterator[Outcome]:
    parts = {p.strip() for p in args.r2_parts.split(",")}
    for seconds in args.outage_seconds:
        for backend in ("sqlite", "es"):
            if backend in parts:
                yield r2_outage(stack, args, backend, seconds)
    if "credential" in parts:
        yield r2_credential(stack, args)


# --- R3: poison -----------------------------------------------------------------------------
def r3_poison(stack: Stack, args: argparse.Namespace) -> list[Outcome]:
    """Poison of 12 kinds mixed into good articles, one kill -9 mid-stream: each poison message is
    in the dead-letter topic with a reason and its source topic/partition/offset (twice only with
    the same origin headers), every good article is stored, nothing else is dead-lettered."""
    n_good, n_poison, kills = args.articles, args.poison, args.r3_kills
    params = {"good": n_good, "poison": n_poison, "kills": kills, "kinds": 12, "store": "sqlite"}
    run = new_run(stack, "r3")
    proc = ProcessorProcess(run)
    try:
        good = headlines(n_good, "r3")
        poison = poison_messages(n_poison, good[0])
        items: list[tuple[bytes | None, bytes | None]] = []
        kinds_at: list[str | None] = []
        step = max(1, n_good // max(1, n_poison))
        gi = 0
        for i, (kind, value) in enumerate(poison):  # interleaved: poison shares batches with good
            for a in good[gi : gi + step]:
                items.append((a.id.encode(), a.model_dump_json().encode()))
                kinds_at.append(None)
            gi += step
            items.append((f"poison-{i}".encode(), value))
            kinds_at.append(kind)
        for a in good[gi:]:
            items.append((a.id.encode(), a.model_dump_json().encode()))
            kinds_at.append(None)
        positions = publish(run.settings, items, "R3")
        poison_at = {(run.settings.kafka_topic_raw, p, o): k for (p, o), k in zip(positions, kinds_at) if k is not None}
        stored = lambda: stored_counts(run.settings)[0]  # noqa: E731
        t0 = time.monotonic()
        proc.start()
        for k in range(1, kills + 1):
            progress_wait(stored, n_good * k // (kills + 1), f"R3 before kill {k}", child=proc)
            proc.kill9()
            proc.start()
        progress_wait(stored, n_good, "R3 good stored", child=proc)
        wait_until(lambda: lag(run.settings, positions) == 0, STALL_S, "R3 every offset committed", child=proc)
        elapsed = time.monotonic() - t0
        rc = proc.stop()
        letters = [read_dead_letter(r) for r in read_topic(run.settings, run.settings.kafka_topic_dlq)]
        by_origin: dict[tuple, list[dict]] = {}
        without_origin = 0
        for d in letters:
            if {"topic", "partition", "offset"} <= d.keys():
                by_origin.setdefault((d["topic"], d["partition"], d["offset"]), []).append(d)
            else:
                without_origin += 1
        good_ids = {a.id for a in good}
        ids_stored = sqlite_ids(run.settings.sqlite_path)
        per_kind: dict[str, dict] = {}
        for origin, kind in poison_at.items():
            entry = per_kind.setdefault(kind, {"produced": 0, "dead_lettered": 0, "written_twice": 0, "without_reason": 0, "reason": ""})
            entry["produced"] += 1
            found = by_origin.get(origin, [])
            if found:
                entry["dead_lettered"] += 1
                entry["written_twice"] += len(found) - 1
                entry["without_reason"] += sum(1 for d in found if not d.get("reason", "").strip())
                entry["reason"] = entry["reason"] or found[0].get("reason", "")[:160]
        not_poison = [o for o in by_origin if o not in poison_at]
        figures = {
            "good_produced": n_good, "good_stored": len(good_ids & ids_stored), "good_lost": len(good_ids - ids_stored),
            "poison_stored": len(ids_stored - good_ids),
            "poison_produced": len(poison_at), "poison_dead_lettered": sum(e["dead_lettered"] for e in per_kind.values()),
            "dead_letters_written_twice_same_origin": sum(e["written_twice"] for e in per_kind.values()),
            "dead_letters_without_origin_headers": without_origin, "good_dead_lettered": len(not_poison),
            "final_lag": lag(run.settings, positions), "exit_code": rc, "messages_per_s": len(items) / elapsed,
            "last_processor_counters": proc.counters(), "kinds": per_kind,
        }
        passed = (
            ids_stored == good_ids
            and figures["poison_dead_lettered"] == len(poison_at)
            and all(e["without_reason"] == 0 for e in per_kind.values())
            and without_origin == 0 and not not_poison and figures["final_lag"] == 0 and rc == 0
        )
        return [Outcome("R3 poison", passed, figures, params, elapsed)]
    except Exception as err:
        return [failed_outcome("R3 poison", params, err, proc)]
    finally:
        proc.stop(30)


# --- R5: the broker restarts empty ---------------------------------------------------------
class HealthWatch:
    """Samples the processor every second: its container health check (``newspulse-healthcheck
    fresh``, run in-process on its metrics endpoint), how long its pipeline has been paused
    (``newspulse_pipeline_paused_since_timestamp_seconds``) and the store's count. A sample is
    *wedged* when the processor has been paused for longer than its limit: the health check must
    not be green then. (Before the fix, a processor wedged after a broker restart stayed paused
    for good with a green check.) ``stalled_s``: how long no story was stored while some waited."""

    def __init__(self, url: str, limit_s: float, stored: Callable[[], int]) -> None:
        import threading

        self.url, self.limit_s, self.stored = url, limit_s, stored
        self.samples: list[dict] = []
        self.waiting = False  # set while stories are published and not all stored
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="r5-health", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import healthcheck

        last, moved = -1, time.monotonic()
        while not self._stop.wait(1.0):
            n = self.stored()
            if n != last or not self.waiting:
                last, moved = n, time.monotonic()
            try:
                started = [t for t in healthcheck.samples(healthcheck.check_http(self.url).decode(), healthcheck.PAUSED_SINCE).values() if t > 0]
            except Exception:  # the processor is not serving metrics yet
                started = []
            paused = time.time() - min(started) if started else 0.0
            try:
                healthcheck.check_fresh(self.url, "newspulse_kafka_last_poll_timestamp_seconds", 360)
                healthy, why = True, ""
            except Exception as err:  # unhealthy, or the processor not up yet
                healthy, why = False, str(err)
            self.samples.append({"healthy": healthy, "why": why, "paused_s": paused, "stalled_s": time.monotonic() - moved, "wedged": paused > self.limit_s})

    def close(self) -> dict:
        self._stop.set()
        self._thread.join(10)
        wedged = [s for s in self.samples if s["wedged"]]
        return {
            "health_samples": len(self.samples),
            "wedged_samples": len(wedged),
            "wedged_but_healthy": sum(s["healthy"] for s in wedged),
            "longest_pause_s": max((s["paused_s"] for s in self.samples), default=0.0),
            "longest_stall_s": max((s["stalled_s"] for s in self.samples), default=0.0),
            "unhealthy_reasons": sorted({s["why"].split(":")[0] for s in self.samples if not s["healthy"]})[:5],
        }


def r5_broker_restart(stack: Stack, args: argparse.Namespace) -> list[Outcome]:
    """The processor consumes ``n`` stories; the broker is killed -9 and restarted with nothing
    in it; ``n`` more are published. Every story is stored once and the health check is never
    green while the processor is paused past its limit (its own broker: the shared one must not
    restart)."""
    n, limit = args.restart_articles, args.max_paused
    params = {"articles_before": n, "articles_after": n, "store": "sqlite", "partitions": 2, "max_paused_s": limit}
    proc = None
    watch = None
    try:
        with start_kafka_peer() as broker:
            port = free_port()
            run = new_run(Stack(f"127.0.0.1:{broker.port}", stack.registry, stack.workdir), "r5", kafka_partitions=2, max_paused_s=limit, metrics_port=port)
            proc = ProcessorProcess(run)
            stored = lambda: stored_counts(run.settings)[0]  # noqa: E731
            before, after = headlines(n, "r5-before"), headlines(n, "r5-after")
            publish_articles(run.settings, before, "R5 before the restart")
            t0 = time.monotonic()
            proc.start()
            watch = HealthWatch(f"http://127.0.0.1:{port}/metrics", limit, stored)
            watch.waiting = True
            progress_wait(stored, n, "R5 before the restart", child=proc)
            watch.waiting = False
            broker.stop()  # kill -9: every topic, offset and producer id is gone
            time.sleep(5)
            broker.start()
            time.sleep(5)
            probe = KafkaConsumer(**connection_config(run.settings))
            auto_created = run.settings.kafka_topic_raw in probe.topics()  # the processor's requests must not create it
            probe.close()
            until_reached(lambda: ensure_topics(run.settings), "creating topics", run.settings)  # what `kafka init-topics` does
            publish_articles(run.settings, after, "R5 after the restart")
            watch.waiting = True
            progress_wait(stored, 2 * n, "R5 after the restart", child=proc)
            watch.waiting = False
            elapsed = time.monotonic() - t0
            time.sleep(3)
            health = watch.close()
            rc = proc.stop()
            articles, ids = stored_counts(run.settings)
            consumer = KafkaConsumer(**connection_config(run.settings))
            partitions = len(consumer.partitions_for_topic(run.settings.kafka_topic_raw) or ())
            consumer.close()
            log_text = proc.log.read_text(errors="replace")
            figures = {
                "produced": 2 * n, "stored": articles, "duplicates": articles - ids, "raw_partitions": partitions,
                "auto_created_before_init": auto_created, "producers_dropped": log_text.count("dropping the Kafka producer"),
                "topic_recreated_seen": log_text.count("was created again on the broker"), "exit_code": rc,
                **health, "last_processor_counters": proc.counters(),
            }
            passed = articles == ids == 2 * n and partitions == 2 and not auto_created and health["wedged_but_healthy"] == 0 and rc == 0
            return [Outcome("R5 broker restart", passed, figures, params, elapsed)]
    except Exception as err:
        return [failed_outcome("R5 broker restart", params, err, proc)]
    finally:
        if watch is not None:
            watch.close()
        if proc is not None:
            proc.stop(30)


# --- the suite ------------------------------------------------------------------------------
#: Scenario name → function(stack, args) giving its outcomes (printed as each one ends). Each
#: runs on the shared broker.
SCENARIOS: dict[str, Callable[[Stack, argparse.Namespace], Iterable[Outcome]]] = {
    "R1": r1_kill9,
    "R2": r2_all,
    "R3": r3_poison,
    "R4": lambda stack, args: [Outcome("R4 hostile feeds", *r4_result())],  # bench/faults_crawler.py
    "R5": r5_broker_restart,
    "R6": lambda stack, args: [run_alert_scenario("R6")],  # bench/faults_alerts.py
    "R7": lambda stack, args: [run_alert_scenario("R7")],
}


def quick_registry() -> Path:
    """The quick-trained classifier registry the tests use (trained once, cached under .cache/)."""
    from conftest import quick_classifier_registry

    return quick_classifier_registry()


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios to run (default: all)")
    ap.add_argument("--articles", type=int, default=10_000, help="articles in the R1 stream and good articles in R3")
    ap.add_argument("--kills", type=int, default=5, help="kill -9 of the processor in R1")
    ap.add_argument("--outage-seconds", type=float, nargs="+", default=[30.0, 600.0], help="store outage lengths in R2")
    ap.add_argument("--outage-articles", type=int, default=2000, help="articles per R2 scenario")
    ap.add_argument("--r2-parts", default="sqlite,es,credential", help="R2's parts to run: outages of the sqlite and es stores, the expired es credential (several runs can share --out side by side)")
    ap.add_argument("--credential-exit-timeout", type=float, default=300.0, help="longest R2 waits for the processor to stop on an expired key")
    ap.add_argument("--poison", type=int, default=1000, help="poison messages in R3 (12 kinds, round-robin)")
    ap.add_argument("--r3-kills", type=int, default=1, help="kill -9 of the processor during R3 (dead letters written twice must carry the same origin)")
    ap.add_argument("--restart-articles", type=int, default=400, help="stories published before, and again after, the broker restart in R5")
    ap.add_argument("--max-paused", type=float, default=20.0, help="R5's NEWSPULSE_MAX_PAUSED_S: how long the processor may make no progress before its health check must fail")
    ap.add_argument("--registry", type=Path, help="model registry of the classifier (default: the tests' quick-trained one)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results file (merged: other scenarios' results are kept)")
    args = ap.parse_args(argv)
    wanted = [s.strip().upper() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    registry = (args.registry or quick_registry()).resolve()
    from newspulse.models.sentiment.registry import Registry

    run_info = {
        "started_at": datetime.now(timezone.utc).isoformat(), "machine": machine(), "commit": commit(),
        "classifier": f"{registry.name}/{Registry(registry).production_version()}",
    }
    signal.signal(signal.SIGTERM, _interrupted)  # stop the peers and processors on the way out
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="newspulse-faults-") as tmp, start_kafka() as bootstrap:
        stack = Stack(bootstrap=bootstrap, registry=registry, workdir=Path(tmp))
        for name in wanted:
            for outcome in SCENARIOS[name](stack, args):
                print(outcome.line(), flush=True)
                for line in str(outcome.figures.get("processor_log_tail", "")).splitlines()[-8:]:
                    print(f"    {line}", flush=True)
                outcomes.append(outcome)
                write_results(args.out, outcomes, run_info)
    print(f"{sum(o.passed for o in outcomes)}/{len(outcomes)} scenarios passed; results in {args.out}")
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
