"""`newspulse crawl --once` into the real sinks: Kafka news.raw (tansu) and the embedded pipeline."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from newspulse.ingest.cli import crawl
from newspulse.settings import get_settings
from newspulse.store.base import Filter
from test_ingest_crawler import FixtureServer, serve_wire_fixtures

EXPECTED_TITLES = {
    "Microsoft to buy Activision Blizzard in $69 billion deal",
    "Fed holds rates steady, signals cuts later this year",
    "Nvidia unveils new AI chips at developer conference",
}


@pytest.fixture
def wire(tmp_path: Path):
    server = FixtureServer()
    serve_wire_fixtures(server)
    feeds = tmp_path / "feeds.yaml"
    feeds.write_text(
        "feeds:\n"
        f"  - name: Wire A\n    url: {server.base}/a.xml\n    allow_private: true\n"
        f"  - name: Wire B\n    url: {server.base}/b.atom\n    allow_private: true\n"
    )
    yield feeds
    server.close()


def run_crawl(monkeypatch, tmp_path: Path, feeds: Path, to: str, **env: str) -> dict:
    monkeypatch.setenv("NEWSPULSE_CRAWLER_STATE", str(tmp_path / "crawler.db"))
    monkeypatch.setenv("NEWSPULSE_CRAWLER_HOST_DELAY_S", "0")
    monkeypatch.setenv("NEWSPULSE_CRAWLER_CONCURRENCY", "1")  # Wire A first: it has the original
    for key, value in env.items():
        monkeypatch.setenv(f"NEWSPULSE_{key.upper()}", value)
    get_settings.cache_clear()
    app = typer.Typer()
    app.command()(crawl)
    try:
        result = CliRunner().invoke(app, ["--feeds", str(feeds), "--once", "--to", to])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    return json.loads([line for line in result.stdout.splitlines() if line.startswith('{"feeds"')][-1])


@pytest.mark.kafka
def test_crawl_to_kafka_publishes_each_story_once(wire, tmp_path, monkeypatch):
    from kafka import KafkaConsumer, TopicPartition

    from peers import start_kafka

    topic = f"raw-{uuid.uuid4().hex[:8]}"
    with start_kafka() as bootstrap:
        summary = run_crawl(monkeypatch, tmp_path, wire, "kafka", kafka_bootstrap=bootstrap, kafka_topic_raw=topic, kafka_partitions="2")
        assert summary["emitted"] == 3 and summary["duplicates"] == 1 and summary["produced"] == 3
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        try:
            parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            records: list = []
            deadline = time.monotonic() + 30
            while len(records) < 3 and time.monotonic() < deadline:
                records.extend(r for recs in consumer.poll(timeout_ms=500).values() for r in recs)
            records.extend(r for recs in consumer.poll(timeout_ms=500).values() for r in recs)
        finally:
            consumer.close()
    values = [json.loads(r.value) for r in records]
    assert {v["title"] for v in values} == EXPECTED_TITLES and len(values) == 3
    assert all(r.key.decode() == v["id"] for r, v in zip(records, values))
    msft = next(v for v in values if v["title"].startswith("Microsoft"))
    assert msft["tickers"][0] == "MSFT" and msft["novelty"] == 100.0 and msft["language"] == "en"


class KeywordClassifier:
    """Stands in for the fine-tuned model where only the crawler's wiring is under test."""

    version = "keyword-test"

    def score_articles(self, articles):
        import numpy as np

        return np.array([[0.1, 0.2, 0.7] if "beat" in a.title.lower() else [0.2, 0.6, 0.2] for a in articles])

    def score_mentions(self, items):
        import numpy as np

        return np.array([[0.1, 0.2, 0.7] if "beat" in text.lower() else [0.2, 0.6, 0.2] for text, _ in items])


def test_crawl_embedded_stores_each_story_once_with_tags_and_novelty(wire, tmp_path, monkeypatch):
    import newspulse.models.sentiment.predict
    from newspulse.settings import load_settings
    from newspulse.wiring import open_store
    from newspulse.store.base import Filter

    monkeypatch.setattr(newspulse.models.sentiment.predict, "load_classifier", lambda settings: KeywordClassifier())
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    summary = run_crawl(monkeypatch, tmp_path, wire, "embedded", store_url=store_url)
    assert summary["emitted"] == 3 and summary["stored"] == 3 and summary["duplicates"] == 1
    again = run_crawl(monkeypatch, tmp_path, wire, "embedded", store_url=store_url)  # a restart
    assert again["emitted"] == 0 and again["stored"] == 0

    store = open_store(load_settings(store_url=store_url))
    try:
        assert store.stats()["articles"] == 3
        hits = store.search("Activision", Filter())
    finally:
        store.close()
    assert len(hits) == 1
    stored = hits[0].article
    assert stored.tickers[0] == "MSFT" and "mergers_acquisitions" in stored.topics
    assert stored.novelty == 100.0 and stored.language == "en" and stored.source == "Wire A"


@pytest.mark.slow
def test_crawl_embedded_scores_and_stores_each_story_once(wire, tmp_path, monkeypatch, trained_classifier_registry):
    from newspulse.settings import load_settings
    from newspulse.wiring import open_store
    from newspulse.store.base import Filter

    env = dict(store_url=f"sqlite:///{tmp_path / 'store.db'}", model_registry=str(trained_classifier_registry))
    summary = run_crawl(monkeypatch, tmp_path, wire, "embedded", **env)
    assert summary["emitted"] == 3 and summary["stored"] == 3 and summary["duplicates"] == 1

    again = run_crawl(monkeypatch, tmp_path, wire, "embedded", **env)  # a restart: nothing new
    assert again["emitted"] == 0 and again["duplicates"] == 4

    store = open_store(load_settings(store_url=env["store_url"]))
    try:
        assert store.stats()["articles"] == 3
        hits = store.search("Activision", Filter())
        stored = store.get_article(hits[0].article.id)
    finally:
        store.close()
    assert len(hits) == 1 and stored is not None
    assert stored.tickers[0] == "MSFT" and "mergers_acquisitions" in stored.topics and stored.summary


#: ``newspulse crawl --once --to embedded`` with a stand-in classifier and a store that never
#: answers a write: the stories sit in the embedded queue until the process is killed.
STUCK_STORE_CRAWL = """
import sys, threading
import numpy as np
import newspulse.models.sentiment.predict
from newspulse.store.sqlite import SQLiteStore

class KeywordClassifier:
    version = "keyword-test"
    def score_articles(self, articles):
        return np.array([[0.2, 0.6, 0.2]] * len(articles))
    def score_mentions(self, items):
        return np.array([[0.2, 0.6, 0.2]] * len(items))

newspulse.models.sentiment.predict.load_classifier = lambda settings: KeywordClassifier()
SQLiteStore.upsert_articles = lambda self, articles: threading.Event().wait()
from newspulse.cli import app
app(["crawl", "--feeds", sys.argv[1], "--once", "--to", "embedded"])
"""


def test_kill_9_with_stories_queued_loses_none(wire, tmp_path, monkeypatch):
    """Issue 29 #18: the embedded crawler marked a story seen when it was queued, so a kill -9
    lost up to NEWSPULSE_QUEUE_MAX_ITEMS stories for good. Now a story is seen across restarts
    only once the store acknowledged it: after the kill the next crawl stores all three."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys

    import newspulse.models.sentiment.predict
    from newspulse.settings import load_settings
    from newspulse.wiring import open_store

    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    env = {**os.environ, "NEWSPULSE_CRAWLER_STATE": str(tmp_path / "crawler.db"), "NEWSPULSE_STORE_URL": store_url,
           "NEWSPULSE_CRAWLER_HOST_DELAY_S": "0", "NEWSPULSE_CRAWLER_CONCURRENCY": "1", "NEWSPULSE_MODEL_REGISTRY": str(tmp_path / "registry")}
    proc = subprocess.Popen([sys.executable, "-c", STUCK_STORE_CRAWL, str(wire)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        queued = 0
        while queued < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            try:
                with sqlite3.connect(tmp_path / "crawler.db") as db:
                    queued = db.execute("SELECT COUNT(*) FROM stories WHERE status != 'duplicate'").fetchone()[0]
            except sqlite3.Error:
                continue
        assert queued == 3, proc.stderr.read().decode() if proc.poll() is not None else "the crawl did not queue its stories in time"
        time.sleep(1)  # the crawl is now waiting on the store with all three queued
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    monkeypatch.setattr(newspulse.models.sentiment.predict, "load_classifier", lambda settings: KeywordClassifier())
    summary = run_crawl(monkeypatch, tmp_path, wire, "embedded", store_url=store_url)
    assert (summary["emitted"], summary["stored"]) == (3, 3)
    store = open_store(load_settings(store_url=store_url))
    try:
        assert {a.title for batch in store.iter_articles(Filter()) for a in batch} == EXPECTED_TITLES
    finally:
        store.close()
