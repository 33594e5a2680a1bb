"""Reliability of the Kafka processor (issue #18, cases 5 and 11), against real peers: tansu for
Kafka, the SQLite store locked by another writer, noida-db behind a proxy that answers 401 once
the API key "expires".

* an unavailable store pauses the partitions (the member stays in its group), dead-letters and
  commits nothing for it, and resumes by itself;
* a rejected credential stops the processor with a clear error, nothing committed that is not
  stored, nothing dead-lettered;
* a null value and deeply nested JSON are dead-lettered with a true reason at the first try.

After every fault the counters add up: received = stored + dead-lettered + duplicate + released.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid

import pytest
from peers import CredentialProxy, start_elasticsearch_peer
from prometheus_client import REGISTRY
from test_kafka_stream import ProcessorThread, articles, committed_lag, fake_factory, kafka_bootstrap, make_settings, read_topic, store_count, wait_for  # noqa: F401

from newspulse.kafka.client import ensure_topics
from newspulse.kafka.processor import KafkaSource
from newspulse.kafka.producer import RenewingProducer, build_producer
from newspulse.kafka.sinks import DeadLetterTopicSink, ScoredTopicSink, read_dead_letter
from newspulse.pipeline import Counters
from newspulse.retrying import Backoff
from newspulse.store.base import StorePermanentError
from newspulse.store.sqlite import SQLiteStore

pytestmark = pytest.mark.kafka

FAST = Backoff(first_s=0.05, max_s=0.5)


def produce(settings, items: list[tuple[bytes | None, bytes | None]]) -> None:
    ensure_topics(settings)
    producer = build_producer(settings)
    try:
        for key, value in items:
            producer.send(settings.kafka_topic_raw, key=key, value=value)
        producer.flush()
    finally:
        producer.close()


def indexed(store) -> int:
    """Articles an Elasticsearch store holds now, other writers' included (refreshed first;
    noida-db refreshes by alias, not by index pattern)."""
    from elasticsearch import NotFoundError

    try:
        store.client.indices.refresh(index=store.articles_alias)
    except NotFoundError:  # no article index yet
        return 0
    return store.stats()["articles"]


def assert_adds_up(c: Counters) -> None:
    assert c.pending == 0, c.summary()
    assert c.received == c.stored + c.dead_lettered + c.duplicate + c.released, c.summary()


def test_store_outage_kafka_pauses_not_dead_letters(kafka_bootstrap, tmp_path):
    """#18.5: the SQLite store is locked by another writer for longer than the poll interval.
    The processor pauses its partitions and keeps polling (it stays in the group), commits
    nothing and dead-letters nothing; then it resumes by itself and dead-letters only the one
    poison record of the stream."""
    s = make_settings(kafka_bootstrap, tmp_path, kafka_partitions=2, batch_max_records=20)
    good = articles(100, run="outage")
    produce(s, [(a.id.encode(), a.model_dump_json().encode()) for a in good] + [(b"bad", b"{not json")])
    store = SQLiteStore(s.sqlite_path, busy_timeout_s=0.05)
    locker = sqlite3.connect(s.sqlite_path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    producer = RenewingProducer(s)
    proc = KafkaSource(s, fake_factory(store)(s, ScoredTopicSink(s, producer), DeadLetterTopicSink(s, producer)), backoff=FAST)
    stop = threading.Event()
    thread = threading.Thread(target=proc.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: REGISTRY.get_sample_value("newspulse_pipeline_paused", {"source": "kafka"}) == 1, 60, "the processor to pause")
        owned = []
        t_out = time.monotonic()
        while time.monotonic() - t_out < s.kafka_max_poll_interval_ms / 1000 + 2:  # longer than the poll interval
            owned.append(len(proc.assigned))
            time.sleep(0.5)
        assert thread.is_alive() and set(owned) == {2}, "kept both partitions throughout: never left the group"
        assert proc.stats.infrastructure_retries >= 5 and proc.stats.stored == 0
        assert committed_lag(s, 101) == 101, "nothing committed during the outage"
        assert read_topic(s, s.kafka_topic_dlq, 0, timeout_s=2) == [], "nothing dead-lettered for the outage"
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    try:
        wait_for(lambda: store_count(s) >= 100, 60, "every article stored after the outage")
        wait_for(lambda: committed_lag(s, 101) == 0, 30, "every offset committed")
    finally:
        stop.set()
        thread.join(60)
        producer.close()
    assert REGISTRY.get_sample_value("newspulse_pipeline_paused", {"source": "kafka"}) == 0
    [letter] = [read_dead_letter(r) for r in read_topic(s, s.kafka_topic_dlq, 1, timeout_s=10)]
    assert "malformed JSON" in letter["reason"], "only the poison record is dead-lettered"
    assert store.stats()["articles"] == 100
    c = proc.stats
    assert (c.stored, c.dead_lettered, c.released) == (100, 1, 0)
    assert_adds_up(c)
    store.close()


def test_stop_during_store_outage_leaves_promptly_and_commits_nothing(kafka_bootstrap, tmp_path):
    """SIGTERM while paused: the processor hands its batch back uncommitted (released, not
    dead-lettered), leaves the group at once, and a later processor stores everything."""
    s = make_settings(kafka_bootstrap, tmp_path, kafka_partitions=1, batch_max_records=10)
    good = articles(30, run="stop-outage")
    produce(s, [(a.id.encode(), a.model_dump_json().encode()) for a in good])
    store = SQLiteStore(s.sqlite_path, busy_timeout_s=0.05)
    locker = sqlite3.connect(s.sqlite_path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    proc = ProcessorThread(s, fake_factory(store))
    try:
        wait_for(lambda: REGISTRY.get_sample_value("newspulse_pipeline_paused", {"source": "kafka"}) == 1, 60, "the processor to pause")
        t0 = time.monotonic()
        stats = proc.close(timeout_s=30)
        assert time.monotonic() - t0 < 15, "stopping does not wait for the store"
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert committed_lag(s, 30) == 30 and read_topic(s, s.kafka_topic_dlq, 0, timeout_s=2) == []
    assert stats.stored == 0 and stats.dead_lettered == 0 and stats.released == stats.received > 0
    assert_adds_up(stats)
    again = ProcessorThread(s, fake_factory(store))
    try:
        wait_for(lambda: store_count(s) >= 30, 60, "everything stored by the next processor")
        wait_for(lambda: committed_lag(s, 30) == 0, 30, "offsets committed")
    finally:
        assert_adds_up(again.close())
    store.close()


def test_null_kafka_value_dead_lettered(kafka_bootstrap, tmp_path):
    """#18.11: a tombstone (null value) and JSON nested deeper than the parser's recursion
    limit are dead-lettered with their true reason, in the same pass as the good records of
    their batch: no batch retry."""
    s = make_settings(kafka_bootstrap, tmp_path, kafka_partitions=1, batch_max_records=50, batch_max_wait_ms=500)
    good = articles(20, run="null")
    deep = b"[" * 200_000 + b"]" * 200_000
    items = [(a.id.encode(), a.model_dump_json().encode()) for a in good]
    items[5:5] = [(b"tombstone", None)]
    items[12:12] = [(b"deep", deep)]
    produce(s, items)
    store = SQLiteStore(s.sqlite_path)
    proc = ProcessorThread(s, fake_factory(store))
    try:
        wait_for(lambda: store_count(s) >= 20, 60, "20 stored")
        letters = {d["reason"]: d for d in map(read_dead_letter, read_topic(s, s.kafka_topic_dlq, 2))}
        wait_for(lambda: committed_lag(s, 22) == 0, 30, "offsets committed")
    finally:
        stats = proc.close()
    assert set(letters) == {"empty record (null value)", "JSON nested too deeply to read"}
    assert letters["empty record (null value)"]["payload"] in (None, b"") and letters["empty record (null value)"]["offset"] == 5
    assert letters["JSON nested too deeply to read"]["payload"] == deep
    assert stats.retried == 0 and stats.infrastructure_retries == 0
    assert (stats.stored, stats.dead_lettered) == (20, 2)
    assert_adds_up(stats)
    store.close()


@pytest.mark.es
def test_es_outage_kafka_pauses_and_resumes_by_itself(kafka_bootstrap, tmp_path):
    """#18.5 with Elasticsearch: noida-db is stopped mid-stream and started again. The processor
    pauses (nothing dead-lettered, nothing committed beyond what is stored) and, once the server
    is back, stores everything without an operator."""
    from newspulse.settings import load_settings
    from newspulse.store.elastic import ElasticStore

    with start_elasticsearch_peer() as peer:
        prefix = f"t{uuid.uuid4().hex[:8]}"
        s = make_settings(kafka_bootstrap, tmp_path, kafka_partitions=2, batch_max_records=10, store_url=f"http://127.0.0.1:{peer.port}", es_index_prefix=prefix)
        good = articles(150, run="es-outage")
        produce(s, [(a.id.encode(), a.model_dump_json().encode()) for a in good])
        direct = ElasticStore(load_settings(store_url=f"http://127.0.0.1:{peer.port}", es_index_prefix=prefix))

        stored_now = lambda: indexed(direct)  # noqa: E731

        proc = ProcessorThread(s, fake_factory(ElasticStore(s), delay_s=0.2))
        try:
            wait_for(lambda: stored_now() >= 20, 60, "some articles stored")
            peer.stop(graceful=True)  # noida-db saves what it acknowledged, as Elasticsearch would
            wait_for(lambda: REGISTRY.get_sample_value("newspulse_pipeline_paused", {"source": "kafka"}) == 1, 60, "the processor to pause")
            time.sleep(3)
            assert proc.thread.is_alive() and proc.error is None
            assert read_topic(s, s.kafka_topic_dlq, 0, timeout_s=2) == [], "nothing dead-lettered for the outage"
            peer.start()
            wait_for(lambda: stored_now() >= 150, 120, "everything stored once the server is back")
            wait_for(lambda: committed_lag(s, 150) == 0, 30, "offsets committed")
        finally:
            stats = proc.close()
        assert REGISTRY.get_sample_value("newspulse_pipeline_paused", {"source": "kafka"}) == 0
        assert stats.infrastructure_retries > 0 and stats.dead_lettered == 0
        assert_adds_up(stats)
        assert direct.stats()["articles"] == direct.stats()["unique_ids"] == 150
        direct.close()


@pytest.mark.es
def test_es_401_stops_with_clear_error_nothing_committed(kafka_bootstrap, tmp_path):
    """#18.5: the Elasticsearch API key expires mid-stream. The processor stops with a clear
    StorePermanentError (no retry can fix a credential), dead-letters nothing and commits no
    offset beyond what it stored; with the key renewed, a new processor stores everything."""
    from newspulse.settings import load_settings
    from newspulse.store.elastic import ElasticStore

    key = "dGVzdDprZXk="
    with start_elasticsearch_peer() as peer:
        proxy = CredentialProxy(peer.port, key)
        try:
            prefix = f"t{uuid.uuid4().hex[:8]}"
            s = make_settings(kafka_bootstrap, tmp_path, kafka_partitions=2, batch_max_records=10, store_url=f"http://127.0.0.1:{proxy.port}", es_api_key=key, es_index_prefix=prefix)
            direct = ElasticStore(load_settings(store_url=f"http://127.0.0.1:{peer.port}", es_index_prefix=prefix))  # the operator's view, not through the key

            stored_now = lambda: indexed(direct)  # noqa: E731

            good = articles(200, run="es401")
            produce(s, [(a.id.encode(), a.model_dump_json().encode()) for a in good])
            store = ElasticStore(s)
            proc = ProcessorThread(s, fake_factory(store, delay_s=0.2))  # 20 batches: ~4 s, so the key expires mid-stream
            try:
                wait_for(lambda: stored_now() >= 20, 60, "some articles stored")
                proxy.expired = True
                proc.thread.join(60)
                assert not proc.thread.is_alive(), "the processor stopped by itself"
            finally:
                stopped_with = proc.error
                proc.error = None
                proc.close()
            assert isinstance(stopped_with, StorePermanentError)
            assert "HTTP 401" in str(stopped_with) and "API key" in str(stopped_with)
            proxy.expired = False
            stored = stored_now()
            assert 200 - committed_lag(s, 200) <= stored < 200, "nothing committed that is not stored"
            assert read_topic(s, s.kafka_topic_dlq, 0, timeout_s=2) == [], "nothing dead-lettered"
            again = ProcessorThread(s, fake_factory(ElasticStore(s)))
            try:
                wait_for(lambda: stored_now() >= 200, 90, "everything stored with the renewed key")
                wait_for(lambda: committed_lag(s, 200) == 0, 30, "offsets committed")
            finally:
                stats = again.close()
            assert_adds_up(stats)
            assert direct.stats()["articles"] == direct.stats()["unique_ids"] == 200
            direct.close()
        finally:
            proxy.close()


@pytest.mark.es
def test_es_401_stops_embedded_worker_with_clear_error(tmp_path):
    """The embedded worker meets the same rejected key: it stops, and close() raises with the
    reason and the number of messages not processed; nothing is dead-lettered."""
    from test_pipeline import raw
    from test_reliability_pipeline import processor

    from newspulse.embedded import EmbeddedPipeline, PipelineStopped
    from newspulse.settings import load_settings
    from newspulse.store.elastic import ElasticStore

    with start_elasticsearch_peer() as peer:
        proxy = CredentialProxy(peer.port, "right-key")
        try:
            settings = load_settings(store_url=f"http://127.0.0.1:{proxy.port}", es_api_key="wrong-key", es_index_prefix=f"t{uuid.uuid4().hex[:8]}", batch_max_wait_ms=20)
            store = ElasticStore(settings)
            pipe = EmbeddedPipeline(settings, processor(store), backoff=FAST)
            pipe.submit(raw(1))
            pipe.submit(b"{poison")
            with pytest.raises(PipelineStopped, match=r"HTTP 401.*2 of 2 submitted messages not processed"):
                pipe.close()
            assert pipe.counters.dead_lettered == 0 and pipe.counters.pending == 2
        finally:
            proxy.close()
