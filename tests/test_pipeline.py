"""The processing core and the embedded queue, with a keyword classifier standing in for the
model so that these tests check the plumbing (validation, dead letters, acks, retries) alone.
The real classifier runs through the same code in tests/test_e2e.py."""

import json
from datetime import datetime, timezone

import numpy as np

from newspulse.embedded import EmbeddedPipeline
from newspulse.pipeline import Fate, Processor, RawMessage
from newspulse.retrying import Backoff
from newspulse.store.sink import StoreSink
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


#: Retries in these tests back off for milliseconds, not seconds.
FAST = Backoff(first_s=0.001, max_s=0.01)


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
    assert [o.fate for o in result.outcomes] == [Fate.stored] + [Fate.dead_lettered] * 7 + [Fate.stored]
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
    assert [o.fate for o in result.outcomes] == [Fate.duplicate, Fate.duplicate, Fate.stored]


class RefusingSink:
    """Refuses every article whose title mentions 'reject' (a mapping conflict, say)."""

    def write(self, articles):
        return WriteResult(written=[a.id for a in articles if "reject" not in a.title], failed={a.id: "mapping conflict" for a in articles if "reject" in a.title})


def test_refused_articles_are_not_reported_stored(tmp_path):
    store = SQLiteStore(tmp_path / "p.db")
    result = make_processor(store, sinks=[StoreSink(store), RefusingSink()]).process([RawMessage(raw(1)), RawMessage(raw(2, "please reject"))])
    assert [a.title for a in result.stored] == ["Widget maker rises 1"]
    retry = result.outcomes[1]
    assert retry.fate is Fate.retry and retry.reason == "refused by a sink: mapping conflict" and not retry.transient and not result.done
    assert retry.message.article is not None and retry.message.article.title == "please reject 2"  # kept parsed for the retry


def test_embedded_queue_drains_everything_on_close(tmp_path):
    store = SQLiteStore(tmp_path / "p.db")
    settings = load_settings(queue_max_items=8, batch_max_records=16, batch_max_wait_ms=20)
    with EmbeddedPipeline(settings, make_processor(store)) as pipe:
        for i in range(300):
            pipe.submit(raw(i % 250) if i % 50 else b"garbage")
    assert store.stats()["articles"] == 245  # ids 0-249 minus the five multiples of 50, only ever sent as garbage
    c = pipe.counters
    assert c.dead_lettered == 6 and c.received == 300 and c.pending == 0
    assert c.stored + c.dead_lettered + c.duplicate == 300


class FlakyClassifier(KeywordClassifier):
    """Raises ``error`` for its first ``failures`` batches, and for every batch holding ``poison``."""

    def __init__(self, failures: int, error: Exception, poison: str = "") -> None:
        self.failures = failures
        self.error = error
        self.poison = poison

    def score_articles(self, articles):
        if self.failures or (self.poison and any(self.poison in a.title for a in articles)):
            self.failures = max(0, self.failures - 1)
            raise self.error
        return super().score_articles(articles)


def test_embedded_waits_out_a_transient_error_without_dead_lettering(tmp_path):
    store = SQLiteStore(tmp_path / "p.db")
    sink = StoreSink(store)
    with EmbeddedPipeline(load_settings(batch_max_wait_ms=1), Processor(FlakyClassifier(7, ConnectionError("model server down")), FirstSentence(), [sink], sink), backoff=FAST) as pipe:
        pipe.submit(raw(1))
    assert store.stats()["articles"] == 1 and store.stats()["dead_letters"] == 0
    assert pipe.counters.infrastructure_retries == 7 and pipe.counters.stored == 1 and pipe.counters.pending == 0


def test_embedded_retries_a_failing_batch_then_dead_letters_only_the_culprit(tmp_path):
    store = SQLiteStore(tmp_path / "p.db")
    sink = StoreSink(store)
    clf = FlakyClassifier(0, RuntimeError("tokenizer crashed"), poison="crash me")
    with EmbeddedPipeline(load_settings(batch_max_wait_ms=50), Processor(clf, FirstSentence(), [sink], sink), backoff=FAST) as pipe:
        for i in range(4):
            pipe.submit(raw(i, "crash me" if i == 2 else "Widget maker rises"))
    assert store.stats()["articles"] == 3
    [letter] = store.list_dead_letters()
    assert letter.reason == "processing failed alone after its batch failed 5 times: RuntimeError: tokenizer crashed" and b"crash me 2" in letter.payload
    c = pipe.counters
    assert (c.received, c.stored, c.dead_lettered, c.pending) == (4, 3, 1, 0) and c.retried > 0


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
        with EmbeddedPipeline(load_settings(batch_max_wait_ms=1), Processor(KeywordClassifier(), FirstSentence(), [sink], sink, observers=[obs]), finite=finite) as pipe:
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


class GatedSink(StoreSink):
    """Holds the first write until the classifier has started on a later batch (or 10 s pass),
    recording what the counters had acknowledged while the write was still in progress."""

    def __init__(self, store, next_batch_scored):
        super().__init__(store)
        self.next_batch_scored = next_batch_scored
        self.overlapped: bool | None = None
        self.acked_during_first_write: int | None = None
        self.pipe = None

    def write(self, articles):
        if self.overlapped is None:
            self.overlapped = self.next_batch_scored.wait(10)
            self.acked_during_first_write = self.pipe.counters.stored
        return super().write(articles)


def test_the_next_batch_is_scored_while_the_store_write_runs_and_acks_follow_the_write(tmp_path):
    """Scoring and writing overlap (a store write does not stall the next batch), yet nothing
    is acknowledged before its write returned, and every message ends stored once."""
    import threading

    scored_batches = []
    second_scored, all_submitted = threading.Event(), threading.Event()

    class CountingClassifier(KeywordClassifier):
        def score_articles(self, articles):
            scored_batches.append(len(articles))
            all_submitted.wait(10)  # the next batch gathers while this one is scored
            if len(scored_batches) >= 2:
                second_scored.set()
            return super().score_articles(articles)

    store = SQLiteStore(tmp_path / "p.db")
    sink = GatedSink(store, second_scored)
    settings = load_settings(batch_max_records=4, batch_max_wait_ms=1)
    with EmbeddedPipeline(settings, Processor(CountingClassifier(), FirstSentence(), [sink], sink)) as pipe:
        sink.pipe = pipe
        for i in range(12):
            pipe.submit(raw(i))
        all_submitted.set()
    assert sink.overlapped is True and sink.acked_during_first_write == 0
    assert store.stats()["articles"] == 12 and pipe.counters.stored == 12 and pipe.counters.pending == 0


def test_a_failing_batch_is_parsed_once_across_its_retries(tmp_path, monkeypatch):
    """Retries after an error reuse the Articles parsed on the first attempt."""
    from newspulse.pipeline import Counters
    from newspulse.runner import BatchDriver
    from newspulse.schema import Article

    validated = []
    original = Article.model_validate.__func__
    monkeypatch.setattr(Article, "model_validate", classmethod(lambda cls, *a, **k: validated.append(1) or original(cls, *a, **k)))
    store = SQLiteStore(tmp_path / "p.db")
    sink = StoreSink(store)
    driver = BatchDriver(Processor(FlakyClassifier(2, RuntimeError("tokenizer crashed")), FirstSentence(), [sink], sink), Counters(), backoff=FAST)
    outcomes = driver.run([RawMessage(json.dumps(raw(i)).encode()) for i in range(3)], lambda seconds: True)
    assert [o.fate for o in outcomes] == [Fate.stored] * 3 and store.stats()["articles"] == 3
    assert len(validated) == 3 and driver.counters.retried == 6  # two failed attempts of 3, one parse each


def test_backoff_doubles_to_its_cap_and_jitter_stays_within_its_fraction() -> None:
    """The one delay policy (batch driver, the Kafka poll loop, the alerter, commands waiting for a peer)."""
    plain = Backoff(first_s=0.25, max_s=10.0)
    assert [plain.delay(n) for n in range(1, 8)] == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
    jittered = Backoff(first_s=0.2, max_s=5.0, jitter=0.2)
    delays = [jittered.delay(3) for _ in range(200)]
    assert all(0.64 <= d <= 0.96 for d in delays) and len(set(delays)) > 1


def test_a_record_with_more_tickers_or_topics_than_the_cap_is_dead_lettered_with_the_reason(tmp_path):
    """Issue 29 #7: a 100k-ticker row was accepted and stalled the embedded worker. Above
    ``max_tags`` (NEWSPULSE_MAX_TAGS_PER_RECORD) tickers or topics, a record is dead-lettered,
    whether it arrives as JSON or as an Article made by the replay or the crawler."""
    from newspulse.schema import Article

    store = SQLiteStore(tmp_path / "p.db")
    sink = StoreSink(store)
    processor = Processor(KeywordClassifier(), FirstSentence(), [sink], sink, max_tags=5)
    at_cap = {**raw(1), "tickers": [f"T{i}" for i in range(5)], "topics": [f"t{i}" for i in range(5)]}
    flood = {**raw(2), "tickers": ";".join(f"T{i}" for i in range(100_000))}
    topics = Article.model_validate({**raw(3), "topics": [f"t{i}" for i in range(6)]})
    result = processor.process([RawMessage(json.dumps(at_cap)), RawMessage(json.dumps(flood)), RawMessage(None, article=topics)])
    assert [o.fate for o in result.outcomes] == [Fate.stored, Fate.dead_lettered, Fate.dead_lettered]
    assert sorted(d.reason for d in store.list_dead_letters()) == [
        "invalid article: tickers: 100,000 values, more than the 5 a record may carry (NEWSPULSE_MAX_TAGS_PER_RECORD)",
        "invalid article: topics: 6 values, more than the 5 a record may carry (NEWSPULSE_MAX_TAGS_PER_RECORD)",
    ]
    assert load_settings().max_tags_per_record == 200 and load_settings(max_tags_per_record=50).max_tags_per_record == 50
