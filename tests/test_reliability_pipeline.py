"""Reliability of the processing core and the embedded queue (issue #18, cases 3, 6, 11, 14):
an unavailable store pauses instead of killing the worker or dead-lettering, a permanent failure
stops with its reason, and bad records are dead-lettered with a true reason at the first try.

Real peers only: the SQLite store is locked by another connection, or its file is corrupted.
After every fault, every message has exactly one fate and the counters add up."""

from __future__ import annotations

import json
import queue
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client import REGISTRY
from test_kafka_stream import wait_for
from test_pipeline import FirstSentence, KeywordClassifier, raw

from newspulse.embedded import EmbeddedPipeline, PipelineStopped
from newspulse.pipeline import Counters, Fate, Processor, RawMessage
from newspulse.retrying import Backoff
from newspulse.store.sink import StoreSink
from newspulse.settings import load_settings
from newspulse.store.base import StorePermanentError, StoreUnavailable
from newspulse.store.sqlite import SQLiteStore

FAST = Backoff(first_s=0.01, max_s=0.05)


def processor(store: SQLiteStore) -> Processor:
    sink = StoreSink(store)
    return Processor(KeywordClassifier(), FirstSentence(), [sink], sink)


def assert_adds_up(c: Counters, *, received: int, store: SQLiteStore | None = None) -> None:
    """Every message has exactly one fate, and the store agrees with the counters."""
    assert c.received == received
    assert c.pending == 0, c.summary()
    assert c.stored + c.dead_lettered + c.duplicate + c.released == received, c.summary()
    if store is not None:
        stats = store.stats()
        assert stats["dead_letters"] == c.dead_lettered, (stats, c.summary())
        assert stats["articles"] <= c.stored


def paused(source: str) -> float | None:
    return REGISTRY.get_sample_value("newspulse_pipeline_paused", {"source": source})


def test_sqlite_locked_is_unavailable_not_a_bad_record(tmp_path):
    """A database-wide SQLite error is raised as StoreUnavailable (an outage to wait out), never
    reported article by article as refused documents."""
    from test_store_contract import make_corpus

    from newspulse.pipeline import RawMessage, to_dead_letter

    path = tmp_path / "s.db"
    store = SQLiteStore(path, busy_timeout_s=0.05)
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    with pytest.raises(StoreUnavailable, match="database is locked"):
        store.upsert_articles(make_corpus(3))
    with pytest.raises(StoreUnavailable, match="database is locked"):
        store.add_dead_letters([to_dead_letter(RawMessage(b"x"), "test")])
    locker.execute("ROLLBACK")
    locker.close()
    assert store.upsert_articles(make_corpus(3)).ok
    store.close()


def test_store_outage_does_not_kill_embedded_worker(tmp_path):
    """#18.3: the store is locked by another writer mid-stream. The worker pauses (gauge, log)
    and retries; submit applies back-pressure; nothing is dead-lettered for the outage; once the
    lock goes, everything queued is stored and the worker resumes by itself."""
    path = tmp_path / "s.db"
    store = SQLiteStore(path, busy_timeout_s=0.05)
    settings = load_settings(queue_max_items=4, batch_max_records=4, batch_max_wait_ms=5)
    pipe = EmbeddedPipeline(settings, processor(store), backoff=FAST)
    pipe.submit(raw(0))
    wait_for(lambda: pipe.counters.stored == 1, 10, "the first article stored")

    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    sent = 1
    try:
        for i in range(1, 4):
            pipe.submit(raw(i))
            sent += 1
        pipe.submit(b"{not json")  # poison in the same stream: dead-lettered once, after the outage
        sent += 1
        wait_for(lambda: paused("embedded") == 1, 10, "the paused gauge")
        for i in range(5, 9):  # fills the queue while the worker holds its batch
            pipe.submit(raw(i))
            sent += 1
        with pytest.raises(queue.Full, match="queue full"):
            pipe.submit(raw(99), timeout=0.3)  # back-pressure: blocks, then says why
        wait_for(lambda: pipe.counters.infrastructure_retries >= 3, 10, "several retries")
        assert pipe._worker.is_alive() and pipe.failure is None
        assert pipe.counters.dead_lettered == 0 and pipe.counters.stored == 1
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    pipe.close()
    assert paused("embedded") == 0
    assert pipe.counters.infrastructure_retries >= 3 and pipe.counters.retried == 0  # an outage costs no attempts
    assert_adds_up(pipe.counters, received=sent, store=store)
    assert store.stats()["articles"] == 8 and pipe.counters.dead_lettered == 1
    assert "malformed JSON" in store.list_dead_letters()[0].reason
    store.close()


def test_close_with_a_timeout_during_an_outage_says_what_is_still_queued(tmp_path):
    """close() waits through an outage; with a timeout it raises instead, counting what is left."""
    path = tmp_path / "s.db"
    store = SQLiteStore(path, busy_timeout_s=0.05)
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        pipe = EmbeddedPipeline(load_settings(batch_max_wait_ms=5), processor(store), backoff=FAST)
        for i in range(3):
            pipe.submit(raw(i))
        with pytest.raises(TimeoutError, match="3 of 3 submitted messages not processed"):
            pipe.close(timeout=0.5)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert store.stats()["dead_letters"] == 0 and pipe.counters.pending == 3
    store.close()


def test_permanent_store_failure_stops_embedded_worker_with_its_reason(tmp_path):
    """The worker never dies silently: a store that can never work (a corrupt file) stops it, and
    submit and close raise with the reason and how many messages were not processed."""
    path = tmp_path / "s.db"
    SQLiteStore(path).close()
    store = SQLiteStore(path)
    store.close()  # the worker thread opens its own connection, after the damage below
    path.write_bytes(b"this is not a SQLite database " * 200)
    for side in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        side.unlink(missing_ok=True)
    pipe = EmbeddedPipeline(load_settings(batch_max_wait_ms=5), processor(store), backoff=FAST)
    pipe.submit(raw(1))
    wait_for(lambda: pipe.failure is not None, 10, "the worker to stop")
    assert isinstance(pipe.failure, StorePermanentError) and "not a database" in str(pipe.failure)
    with pytest.raises(PipelineStopped, match="not a database"):
        pipe.submit(raw(2))
    with pytest.raises(PipelineStopped, match=r"not a database.*1 of 1 submitted messages not processed"):
        pipe.close()
    c = pipe.counters
    assert (c.received, c.stored, c.dead_lettered, c.pending) == (1, 0, 0, 1)


def test_far_future_published_at_dead_lettered(tmp_path):
    """#18.6: a year-9999 story (or one before 1900, or two days ahead) is dead-lettered with the
    bound it broke; a story dated a few hours ahead (a time zone off) is stored."""
    store = SQLiteStore(tmp_path / "s.db")
    now = datetime.now(timezone.utc)
    dates = {
        "9999-12-31T00:00:00Z": "in the future",
        "1850-01-01T00:00:00Z": "before 1900",
        (now + timedelta(days=2)).isoformat(): "in the future",
        (now + timedelta(hours=5)).isoformat(): None,
    }
    with EmbeddedPipeline(load_settings(batch_max_wait_ms=20), processor(store), backoff=FAST) as pipe:
        for i, date in enumerate(dates):
            pipe.submit(json.dumps({**raw(i), "published_at": date}))
    reasons = sorted(d.reason for d in store.list_dead_letters())
    assert len(reasons) == 3
    assert all(r.startswith("invalid article: published_at:") for r in reasons)
    assert sum("in the future" in r for r in reasons) == 2 and sum("before 1900" in r for r in reasons) == 1
    assert_adds_up(pipe.counters, received=4, store=store)
    assert pipe.counters.stored == 1 and store.stats()["articles"] == 1
    store.close()


def test_published_at_margin_follows_the_setting(tmp_path):
    """NEWSPULSE_MAX_PUBLISHED_AHEAD_HOURS sets the margin the processor applies, also to an
    Article submitted already validated (checked against the processor's margin, not re-parsed)."""
    from newspulse.schema import Article

    settings = load_settings(max_published_ahead_hours=48, store_url=f"sqlite:///{tmp_path / 's.db'}")
    ahead = (datetime.now(timezone.utc) + timedelta(hours=30)).isoformat()
    store = SQLiteStore(settings.sqlite_path)
    sink = StoreSink(store)
    wide = Processor(KeywordClassifier(), FirstSentence(), [sink], sink, max_published_ahead=timedelta(hours=settings.max_published_ahead_hours))
    assert [o.fate for o in wide.process([RawMessage({**raw(1), "published_at": ahead})]).outcomes] == [Fate.stored]
    narrow = Processor(KeywordClassifier(), FirstSentence(), [sink], sink, max_published_ahead=timedelta(hours=1))
    made_elsewhere = Article.model_validate({**raw(2), "published_at": (datetime.now(timezone.utc) + timedelta(hours=5)).isoformat()})
    [outcome] = narrow.process([RawMessage(None, article=made_elsewhere)]).outcomes
    assert outcome.fate is Fate.dead_lettered and "is more than 1 h in the future" in outcome.reason
    assert store.list_dead_letters()[0].payload == made_elsewhere.model_dump_json().encode()
    store.close()


def test_deeply_nested_json_dead_lettered(tmp_path):
    """#18.11: JSON nested beyond the parser's recursion limit is dead-lettered with that reason
    at the first try; its batch is processed once, not retried whole."""
    store = SQLiteStore(tmp_path / "s.db")
    deep = "[" * 200_000 + "]" * 200_000
    deep_object = '{"title": ' * 100_000 + "1" + "}" * 100_000
    with EmbeddedPipeline(load_settings(batch_max_wait_ms=50), processor(store), backoff=FAST) as pipe:
        pipe.submit(raw(1))
        pipe.submit(deep.encode())
        pipe.submit(deep_object)
        pipe.submit(raw(2))
    reasons = [d.reason for d in store.list_dead_letters()]
    assert reasons == ["JSON nested too deeply to read"] * 2
    c = pipe.counters
    assert c.retried == 0 and c.infrastructure_retries == 0 and c.batches == 1
    assert_adds_up(c, received=4, store=store)
    assert c.stored == 2
    store.close()


def test_null_value_dead_lettered_in_process():
    """A message without a value (a Kafka tombstone) is poison with a true reason; its dead
    letter keeps an empty payload."""
    letters = []

    class Letters:
        def dead_letter(self, batch):
            letters.extend(batch)

    result = Processor(KeywordClassifier(), FirstSentence(), [], Letters()).process([RawMessage(None, origin="kafka://raw/0/7")])
    assert [o.fate for o in result.outcomes] == [Fate.dead_lettered]
    assert [(d.reason, d.payload, d.origin) for d in letters] == [("empty record (null value)", b"", "kafka://raw/0/7")]


def test_duplicate_ids_in_batch_counted(tmp_path):
    """#18.14: the same story three times in one batch is stored once and the two earlier copies
    are counted as duplicates, so the counters add up."""
    store = SQLiteStore(tmp_path / "s.db")
    with EmbeddedPipeline(load_settings(batch_max_wait_ms=200, batch_max_records=10), processor(store), backoff=FAST) as pipe:
        pipe.submit(raw(1))
        pipe.submit(raw(2))
        pipe.submit({**raw(1), "title": "Widget maker rises 1, updated"})
        pipe.submit({**raw(1), "url": "https://x.test/1?utm_source=feed"})  # the same story by canonical URL
        pipe.submit(raw(3))
    c = pipe.counters
    assert (c.stored, c.duplicate, c.dead_lettered) == (3, 2, 0)
    assert_adds_up(c, received=5, store=store)
    assert store.stats()["articles"] == 3
    store.close()


def test_submitted_article_is_not_parsed_again(tmp_path):
    """Parse once: an Article submitted in-process travels as the validated object, with no
    payload to parse (a payload-less message that were parsed would be dead-lettered as empty)."""
    from newspulse.schema import Article

    store = SQLiteStore(tmp_path / "s.db")
    art = Article.model_validate(raw(1))
    with EmbeddedPipeline(load_settings(batch_max_wait_ms=5), processor(store), backoff=FAST) as pipe:
        pipe.submit(art)
    assert store.get_article(art.id) is not None and store.stats()["dead_letters"] == 0
    assert_adds_up(pipe.counters, received=1, store=store)
    store.close()


def test_corrupt_store_file_is_one_clear_line_and_exit_1(tmp_path):
    """A store that cannot work ends a command with its reason and exit 1, not a traceback."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a SQLite database " * 200)
    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSPULSE_")} | {"NEWSPULSE_STORE_URL": f"sqlite:///{path}", "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-m", "newspulse.cli", "store", "stats"], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "file is not a database" in done.stderr


def test_a_failing_observer_does_not_give_stored_articles_a_second_fate(tmp_path):
    """The alerter (an observer) raising after a batch is stored must not turn the stored
    articles into retries or dead letters: each keeps exactly one fate."""

    class BrokenAlerter:
        calls = 0

        def observe(self, articles):
            BrokenAlerter.calls += 1
            raise RuntimeError("alerter bug")

        def flush(self):
            pass

        def close(self):
            pass

    store = SQLiteStore(tmp_path / "s.db")
    sink = StoreSink(store)
    with EmbeddedPipeline(load_settings(batch_max_wait_ms=20), Processor(KeywordClassifier(), FirstSentence(), [sink], sink, observers=[BrokenAlerter()]), backoff=FAST) as pipe:
        for i in range(3):
            pipe.submit(raw(i))
    assert store.stats()["articles"] == 3 and store.stats()["dead_letters"] == 0 and BrokenAlerter.calls >= 1
    assert pipe.counters.retried == 0
    assert_adds_up(pipe.counters, received=3, store=store)
    store.close()
