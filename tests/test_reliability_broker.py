"""Reliability of the Kafka processor against its broker (issue 29 #1, #14, #17).

* a broker that restarts empty (kill -9, in-memory storage) must not wedge the processor: its
  producer is replaced after a failed delivery (kafka-python's idempotent producer otherwise
  stays in a fatal state), topics come back only with the configured layout, and every story
  is stored once;
* a pipeline paused past ``NEWSPULSE_MAX_PAUSED_S`` is unhealthy (tests/test_observability.py);
* ``process`` with no broker stops with one line within ``NEWSPULSE_KAFKA_CONNECT_TIMEOUT_S``;
* a broker refusing this client's credential or ACL on news.scored / news.dlq stops the
  processor (permanent) instead of pausing it forever as an outage.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
from kafka import KafkaConsumer
from kafka.errors import KafkaError, SaslAuthenticationFailedError, TopicAuthorizationFailedError
from peers import free_port, start_kafka_peer
from test_kafka_stream import FakeClassifier, FakeSummarizer, ProcessorThread, articles, env_for, fake_factory, make_settings, store_count, wait_for

from newspulse.errors import Failure, PermanentFailure, classify
from newspulse.kafka import producer as producer_module
from newspulse.kafka.client import connection_config
from newspulse.kafka.processor import kafka_failure
from newspulse.kafka.producer import KafkaArticlePublisher, PublishError, PublishRefused, RenewingProducer
from newspulse.kafka.sinks import DeadLetterTopicSink, ScoredTopicSink
from newspulse.pipeline import Counters, Fate, Processor, RawMessage
from newspulse.retrying import Backoff
from newspulse.runner import BatchDriver
from newspulse.schema import ScoredArticle
from newspulse.settings import load_settings
from newspulse.store.base import DeadLetter
from newspulse.store.sink import StoreSink
from newspulse.store.sqlite import SQLiteStore


# --- unit: the producer and its errors, injected --------------------------------------------
class Delivery:
    """A kafka-python FutureRecordMetadata stand-in: failed with ``error``, or acknowledged."""

    def __init__(self, error: BaseException | None) -> None:
        self.exception = error

    def failed(self) -> bool:
        return self.exception is not None


class ScriptedProducer:
    """A KafkaProducer stand-in whose every delivery fails with ``error`` (None: succeeds), or
    whose ``send`` raises ``raises``."""

    def __init__(self, error: BaseException | None = None, raises: BaseException | None = None) -> None:
        self.error, self.raises = error, raises
        self.sent = 0
        self.closed = False

    def send(self, topic, key=None, value=None, headers=None) -> Delivery:
        if self.raises is not None:
            raise self.raises
        self.sent += 1
        return Delivery(self.error)

    def flush(self, timeout=None) -> None:
        pass

    def close(self, timeout=None) -> None:
        self.closed = True


def scored(n: int) -> list[ScoredArticle]:
    return [ScoredArticle.from_article(a, {"negative": 0.1, "neutral": 0.8, "positive": 0.1}, summary="", model_version="fake-1") for a in articles(n, run="unit")]


def scripted(monkeypatch, *producers: ScriptedProducer) -> RenewingProducer:
    """A RenewingProducer whose successive builds are ``producers``."""
    queue = list(producers)
    monkeypatch.setattr(producer_module, "build_producer", lambda settings, **overrides: queue.pop(0))
    return RenewingProducer(load_settings())


def test_a_producer_in_kafka_pythons_fatal_state_is_replaced_by_a_fresh_one(monkeypatch):
    """#1: after the broker restarts empty, the idempotent producer fails every delivery for good
    ("InitProducerIdResponse UnknownError"). The failed write is an outage (the driver pauses)
    and drops the producer; the retry builds a new one and gets through."""
    fatal = ScriptedProducer(error=KafkaError("Unexpected error in InitProducerIdResponse: UnknownError"))
    fresh = ScriptedProducer()
    producer = scripted(monkeypatch, fatal, fresh)
    sink = ScoredTopicSink(load_settings(), producer)
    with pytest.raises(PublishError):
        sink.write(scored(3))
    assert fatal.closed and producer.builds == 1
    assert sink.write(scored(3)).written and fresh.sent == 3 and producer.builds == 2
    assert not fresh.closed, "a producer that delivers is kept"


def test_a_record_too_large_does_not_drop_the_producer(monkeypatch):
    from kafka.errors import MessageSizeTooLargeError

    only = ScriptedProducer(error=MessageSizeTooLargeError("too large"))
    producer = scripted(monkeypatch, only)
    result = ScoredTopicSink(load_settings(), producer).write(scored(2))
    assert len(result.failed) == 2 and not only.closed and producer.builds == 1


class PartlyDelivering(ScriptedProducer):
    """A KafkaProducer stand-in whose deliveries fail with ``errors[i]`` in turn (None: acked)."""

    def __init__(self, errors: list[BaseException | None]) -> None:
        super().__init__()
        self.errors = list(errors)

    def send(self, topic, key=None, value=None, headers=None) -> Delivery:
        self.sent += 1
        return Delivery(self.errors.pop(0) if self.errors else None)


def test_partial_delivery_to_news_scored_resends_only_the_undelivered_records(monkeypatch, tmp_path):
    """Issue 27, the broker's side of a partial bulk failure: the broker acknowledged two of
    three records of a batch. The sink says which (PublishError with ``done``), the driver
    pauses once, and its retry sends only the third, to news.scored and to the store alike."""
    from kafka.errors import KafkaTimeoutError

    partly = PartlyDelivering([None, KafkaTimeoutError("batch expired"), None])
    fresh = ScriptedProducer()
    settings = load_settings()
    producer = scripted(monkeypatch, partly, fresh)
    store = SQLiteStore(tmp_path / "s.db")

    class CountingStoreSink(StoreSink):
        def __init__(self, store: SQLiteStore) -> None:
            super().__init__(store)
            self.written: list[str] = []

        def write(self, articles):
            self.written += [a.id for a in articles]
            return super().write(articles)

    stored = CountingStoreSink(store)
    processor = Processor(FakeClassifier(), FakeSummarizer(), sinks=[stored, ScoredTopicSink(settings, producer)], dead_letters=StoreSink(store))
    driver = BatchDriver(processor, Counters(source="kafka"), backoff=Backoff(first_s=0.001, max_s=0.01), classify_failure=kafka_failure)
    batch = articles(3, run="partial")
    outcomes = driver.run([RawMessage(a.model_dump_json()) for a in batch], lambda s: True)
    assert [o.fate for o in outcomes] == [Fate.stored] * 3
    assert partly.sent == 3 and fresh.sent == 1, "only the undelivered record was sent again"
    assert driver.counters.infrastructure_retries == 1 and driver.counters.dead_lettered == 0
    assert stored.written == [a.id for a in batch] + [batch[1].id] and store.stats()["articles"] == 3
    store.close()


@pytest.mark.parametrize(
    "producer",
    [
        ScriptedProducer(error=TopicAuthorizationFailedError("news.scored")),
        ScriptedProducer(raises=TopicAuthorizationFailedError("news.scored")),
        ScriptedProducer(error=SaslAuthenticationFailedError("bad password")),
    ],
    ids=["acl-on-delivery", "acl-on-send", "sasl"],
)
def test_an_authorization_refusal_on_news_scored_stops_the_processor_instead_of_pausing(monkeypatch, tmp_path, producer):
    """#17: an ACL or SASL refusal when producing to news.scored was wrapped in the outage error,
    so the processor paused forever. It is permanent: the driver raises PermanentFailure at the
    first attempt (``process`` exits with the failure code), nothing is stored as a retry."""
    settings = load_settings()
    producer = scripted(monkeypatch, producer)
    store = SQLiteStore(tmp_path / "s.db")
    processor = Processor(FakeClassifier(), FakeSummarizer(), sinks=[StoreSink(store), ScoredTopicSink(settings, producer)], dead_letters=StoreSink(store))
    with pytest.raises(PublishRefused) as refused:
        ScoredTopicSink(settings, producer).write(scored(1))
    assert kafka_failure(refused.value) is Failure.permanent and "refused this client" in str(refused.value)
    waits: list[float] = []
    driver = BatchDriver(processor, Counters(source="kafka"), backoff=Backoff(first_s=0.001, max_s=0.01), classify_failure=kafka_failure)
    message = RawMessage(articles(1, run="acl")[0].model_dump_json())
    with pytest.raises(PermanentFailure):
        driver.run([message], lambda s: waits.append(s) or True)
    assert waits == [], "refused, not paused"
    store.close()


def test_an_authorization_refusal_on_news_dlq_is_permanent_too(monkeypatch):
    from datetime import datetime, timezone

    producer = scripted(monkeypatch, ScriptedProducer(error=TopicAuthorizationFailedError("news.dlq")))
    letter = DeadLetter(reason="malformed JSON", payload=b"{", origin="kafka://news.raw/0/1", received_at=datetime.now(timezone.utc))
    with pytest.raises(PublishRefused) as refused:
        DeadLetterTopicSink(load_settings(), producer).dead_letter([letter])
    assert kafka_failure(refused.value) is Failure.permanent


def test_clients_never_ask_the_broker_to_create_topics(monkeypatch):
    """#1: after a restart the consumer's metadata request auto-created news.raw with the broker's
    default partition count. Every client asks with auto-creation off, and waits for a broker
    at most NEWSPULSE_KAFKA_CONNECT_TIMEOUT_S."""
    from newspulse.kafka.client import group_config

    settings = load_settings(kafka_connect_timeout_s=7)
    built: list[dict] = []
    monkeypatch.setattr(producer_module, "KafkaProducer", lambda **cfg: built.append(cfg) or SimpleNamespace(_metadata=SimpleNamespace(config={})))
    producer_module.build_producer(settings)
    assert built[0]["allow_auto_create_topics"] is False and built[0]["bootstrap_timeout_ms"] == 7000
    assert group_config(settings, "g")["allow_auto_create_topics"] is False
    assert connection_config(settings)["bootstrap_timeout_ms"] == 7000


def test_the_alerters_consumer_never_asks_the_broker_to_create_topics(tmp_path, monkeypatch):
    """#1, the alerter's side: its news.scored consumer is built with auto-creation off where
    kafka-python reads it too, so a restarted, empty broker does not get news.scored back with
    the broker's default layout from the alerter's subscription."""
    import kafka

    from newspulse.alerts import build_alerter

    class Subscribed(Exception):
        """Stops the service loop once the consumer is built and subscribed."""

    built: list[SimpleNamespace] = []

    def consumer(**cfg):
        client = SimpleNamespace(cfg=cfg, _cluster=SimpleNamespace(config={"allow_auto_create_topics": True}))
        client.subscribe = lambda topics, listener=None: (_ for _ in ()).throw(Subscribed())
        built.append(client)
        return client

    monkeypatch.setattr(kafka, "KafkaConsumer", consumer)
    settings = load_settings(store_url=f"sqlite:///{tmp_path / 'np.db'}", alert_checkpoint=tmp_path / "checkpoint.json")
    store = SQLiteStore(tmp_path / "np.db")
    alerter = build_alerter(settings, store, recover=False)
    with pytest.raises(Subscribed):
        alerter._consume_kafka(settings, threading.Event(), 0.1)
    assert built[0].cfg["allow_auto_create_topics"] is False
    assert built[0]._cluster.config["allow_auto_create_topics"] is False


def test_process_with_no_broker_stops_with_one_line_within_the_connect_timeout(tmp_path):
    """#14: ``newspulse process`` with no broker retried for 60 s and then printed a traceback.
    It now stops within NEWSPULSE_KAFKA_CONNECT_TIMEOUT_S with one line naming the broker and
    the failure exit code."""
    settings = make_settings(f"127.0.0.1:{free_port()}", tmp_path)
    env = env_for(settings) | {"NEWSPULSE_KAFKA_CONNECT_TIMEOUT_S": "3"}
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "newspulse.cli", "process"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - t0
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("newspulse process:")]
    assert len(lines) == 1 and settings.kafka_bootstrap in lines[0] and "within 3 s" in lines[0], done.stderr[-2000:]
    # the timeout bounds the broker wait; the rest is starting Python (a loaded 2-core CI box)
    assert elapsed < 3 + 60, elapsed


def test_ensure_topics_makes_one_attempt_and_the_caller_owns_the_deadline(monkeypatch):
    """Issue 27: topic creation retried inside the Kafka client until its own deadline, under
    the caller's. It makes one attempt now and raises BrokerUnreachable (transient); the caller
    retries it on its own clock (until_reached at the call site), which names that deadline
    when it gives up."""
    from newspulse.kafka import client

    settings = load_settings(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    admins: list[dict] = []
    real = client.KafkaAdminClient
    monkeypatch.setattr(client, "KafkaAdminClient", lambda **cfg: admins.append(cfg) or real(**cfg))
    t0 = time.monotonic()
    with pytest.raises(client.BrokerUnreachable, match=r"creating topics: no Kafka broker at 127\.0\.0\.1:\d+ \(PLAINTEXT\) answered \(") as caught:
        client.ensure_topics(settings, timeout_s=1)
    assert len(admins) == 1 and time.monotonic() - t0 < 10
    assert classify(caught.value) is Failure.transient
    admins.clear()
    with pytest.raises(client.BrokerUnreachable, match=r"answered within 4 s \(KafkaTimeoutError"):
        client.until_reached(lambda: client.ensure_topics(settings, timeout_s=0.5), "creating topics", settings, timeout_s=4)
    assert len(admins) >= 3, "the caller retried"


# --- against a real broker that restarts empty -----------------------------------------------
@pytest.mark.kafka
def test_broker_restart_empty_every_story_stored_once_and_topics_keep_the_configured_layout(tmp_path):
    """#1: the processor consumes; the broker is killed -9 and restarted with nothing in it; more
    stories are published. Every story is stored once (the producer that went fatal is replaced,
    the consumer starts the new log from its beginning), and news.raw comes back with the
    configured 2 partitions, not the broker's default (nothing auto-creates it)."""
    with start_kafka_peer() as broker:
        s = make_settings(f"127.0.0.1:{broker.port}", tmp_path, kafka_partitions=2, batch_max_records=20, kafka_connect_timeout_s=20)
        before, after = articles(100, run="before-restart"), articles(100, run="after-restart")
        with KafkaArticlePublisher(s) as publisher:
            publisher.publish(before)
        store = SQLiteStore(s.sqlite_path)
        processor = ProcessorThread(s, fake_factory(store))
        try:
            wait_for(lambda: store_count(s) >= len(before), 90, "the stories before the restart stored")
            broker.stop()  # kill -9: the in-memory broker loses every topic, offset and producer id
            time.sleep(2)
            broker.start()
            time.sleep(3)  # the processor's clients reconnect to an empty broker meanwhile
            consumer = KafkaConsumer(**connection_config(s))
            try:
                assert s.kafka_topic_raw not in consumer.topics(), "news.raw was auto-created by a client"
            finally:
                consumer.close()
            with KafkaArticlePublisher(s) as publisher:  # creates the topics with the configured layout
                publisher.publish(after)
            wait_for(lambda: store_count(s) >= len(before) + len(after), 180, "every story stored after the restart")
        finally:
            stats = processor.close(timeout_s=120)
        consumer = KafkaConsumer(**connection_config(s))
        try:
            assert consumer.partitions_for_topic(s.kafka_topic_raw) == {0, 1}
        finally:
            consumer.close()
        counts = store.stats()
        assert counts["articles"] == counts["unique_ids"] == len(before) + len(after)
        assert stats.pending == 0, stats.summary()
        store.close()
