"""The processing core and the embedded queue, with a keyword classifier standing in for the
model so that these tests check the plumbing (validation, dead letters, acks, retries) alone.
The real classifier runs through the same code in tests/test_e2e.py."""

import json
from datetime import datetime, timezone

import numpy as np

from newspulse.embedded import EmbeddedPipeline, StoreSink
from newspulse.pipeline import Processor, RawMessage
from newspulse.settings import load_settings
from newspulse.store.base import WriteResult
from newspulse.store.sqlite import SQLiteStore


class KeywordClassifier:
    version = "keyword-test"

    def score_articles(self, articles):
        rows = []
        for a in articles:
            text = a.text.lower()
            rows.append([0.8, 0.1, 0.1] if "falls" in text else [0.1, 0.1, 0.8] if "rises" in text else [0.1, 0.8, 0.1])
        return np.array(rows)


class FirstSentence:
    def summarize(self, articles):
        return [a.text.split(".")[0] for a in articles]


def raw(i: int, title: str = "Widget maker rises") -> dict:
    return {"published_at": f"2024-01-01T00:{i % 60:02d}:00Z", "source": "wire", "title": f"{title} {i}", "body": "Body.", "url": f"https://x.test/{i}"}


def make_processor(store, sinks=None):
    sink = StoreSink(store)
    return Processor(KeywordClassifier(), FirstSentence(), sinks or [sink], sink)


def test_bad_messages_are_dead_lettered_and_good_ones_stored(tmp_path):
    store = SQLiteStore(tmp_path / "p.db")
    msgs = [
        RawMessage(json.dumps(raw(1)).encode()),
        RawMessage(b"{not json"),
        RawMessage(b"\xff\xfe\x00"),
        RawMessage(json.dumps({"source": "wire", "title": "no date"})),
        RawMessage(json.dumps({**raw(2), "published_at": "yesterday"})),
        RawMessage(json.dumps({**raw(3), "title": "", "body": ""})),
        RawMessage(json.dumps({**raw(4), "body": "x" * 1_100_000})),
        RawMessage(json.dumps([1, 2])),
        RawMessage(json.dumps(raw(5, "Shares falls"))),
    ]
    result = make_processor(store).process(msgs)
    assert {a.title for a in result.stored} == {"Widget maker rises 1", "Shares falls 5"}
    reasons = [d.reason for d in store.list_dead_letters()]
    assert len(reasons) == 7
    assert any("malformed JSON" in r for r in reasons)
    assert any("not UTF-8" in r for r in reasons)
    assert any("published_at" in r for r in reasons)
    assert any("neither title nor body" in r for r in reasons)
    assert any("body" in r and "1000000" in r for r in reasons)
    assert any("JSON object" in r for r in reasons)
    stored = store.get_article(result.stored[0].id)
    assert stored.model_version == "keyword-test" and stored.summary
    assert store.stats()["by_label"] == {"negative": 1, "neutral": 0, "positive": 1}


def test_duplicate_ids_in_a_batch_collapse_to_one(tmp_path):
    store = SQLiteStore(tmp_path / "p.db")
    result = make_processor(store).process([RawMessage(raw(1)), RawMessage(raw(1)), RawMessage({**raw(1), "url": "https://X.test/1?utm_source=feed"})])
    assert len(result.stored) == 1 and store.stats()["articles"] == 1


class RefusingSink:
    """Refuses every article whose title mentions 'reject' (a mapping conflict, say)."""

    def write(self, articles):
        return WriteResult(written=[a.id for a in articles if "reject" not in a.title], failed={a.id: "mapping conflict" for a in articles if "reject" in a.title})


def test_refused_articles_are_not_reported_stored(tmp_path):
    store = SQLiteStore(tmp_path / "p.db")
    result = make_processor(store, sinks=[StoreSink(store), RefusingSink()]).process([RawMessage(raw(1)), RawMessage(raw(2, "please reject"))])
    assert [a.title for a in result.stored] == ["Widget maker rises 1"]
    assert list(result.failed.values()) == ["mapping conflict"] and not result.ok


def test_embedded_queue_drains_everything_on_close(tmp_path):
    store = SQLiteStore(tmp_path / "p.db")
    settings = load_settings(queue_max_items=8, batch_max_records=16, batch_max_wait_ms=20)
    with EmbeddedPipeline(settings, make_processor(store), StoreSink(store)) as pipe:
        for i in range(300):
            pipe.submit(raw(i % 250) if i % 50 else b"garbage")
    assert store.stats()["articles"] == 245  # ids 0-249 minus the five multiples of 50, only ever sent as garbage
    assert pipe.counters.dead_lettered == 6 and pipe.counters.submitted == 300


class FlakyClassifier(KeywordClassifier):
    def __init__(self, failures: int) -> None:
        self.failures = failures

    def score_articles(self, articles):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("transient")
        return super().score_articles(articles)


def test_embedded_retries_a_failed_batch_then_dead_letters(tmp_path, monkeypatch):
    monkeypatch.setattr("newspulse.embedded.time.sleep", lambda s: None)
    store = SQLiteStore(tmp_path / "p.db")
    settings = load_settings(batch_max_wait_ms=1)
    sink = StoreSink(store)
    with EmbeddedPipeline(settings, Processor(FlakyClassifier(2), FirstSentence(), [sink], sink), sink) as pipe:
        pipe.submit(raw(1))
    assert store.stats()["articles"] == 1 and pipe.counters.failed == 0
    with EmbeddedPipeline(settings, Processor(FlakyClassifier(99), FirstSentence(), [sink], sink), sink) as pipe:
        pipe.submit(raw(2))
    assert store.stats()["articles"] == 1 and pipe.counters.failed == 1
    assert "after 5 attempts: ConnectionError: transient" in store.list_dead_letters()[0].reason


def test_scored_article_score_and_label():
    from newspulse.schema import Article, ScoredArticle

    art = Article(published_at=datetime(2024, 1, 1, tzinfo=timezone.utc), source="s", title="t")
    s = ScoredArticle.from_article(art, {"negative": 0.7, "neutral": 0.2, "positive": 0.1}, summary="", model_version="v")
    assert s.label.value == "negative" and abs(s.score + 0.6) < 1e-9


class RecordingObserver:
    def __init__(self):
        self.calls = []

    def observe(self, articles):
        self.calls.append(("observe", len(articles)))

    def flush(self):
        self.calls.append(("flush",))

    def close(self):
        self.calls.append(("close",))


def _observed(tmp_path, finite: bool, fail: bool) -> list:
    store = SQLiteStore(tmp_path / f"o{finite}{fail}.db")
    sink = StoreSink(store)
    obs = RecordingObserver()
    try:
        with EmbeddedPipeline(load_settings(batch_max_wait_ms=1), Processor(KeywordClassifier(), FirstSentence(), [sink], sink, observers=[obs]), sink, finite=finite) as pipe:
            pipe.submit(raw(1))
            if fail:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    return obs.calls


def test_observers_are_flushed_only_at_the_end_of_a_finite_stream(tmp_path):
    assert _observed(tmp_path, finite=True, fail=False) == [("observe", 1), ("flush",), ("close",)]
    assert _observed(tmp_path, finite=False, fail=False) == [("observe", 1), ("close",)]
    assert _observed(tmp_path, finite=True, fail=True) == [("observe", 1), ("close",)]
