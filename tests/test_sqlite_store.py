"""The SQLite store on its own: idempotent upserts, filters, FTS, paging. Parity with
Elasticsearch is covered by the contract suite."""

from datetime import datetime, timedelta, timezone

import pytest

from newspulse.schema import Alert, AlertStatus, Article, Feedback, Label, ScoredArticle
from newspulse.store.base import DeadLetter, Filter
from newspulse.store.sqlite import SQLiteStore, fts_query

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=timezone.utc)


def scored(i: int, label: str, minutes: int, tickers=("AAPL",), topics=("earnings",), title=None) -> ScoredArticle:
    probs = {"negative": 0.1, "neutral": 0.1, "positive": 0.1}
    probs[label] = 0.8
    art = Article(
        published_at=T0 + timedelta(minutes=minutes),
        source="wire" if i % 2 else "blog",
        title=title or f"Story {i} about widgets",
        body=f"Body {i}. Apple said widgets sold well.",
        url=f"https://news.example/{i}",
        tickers=list(tickers),
        topics=list(topics),
    )
    return ScoredArticle.from_article(art, probs, summary=f"summary {i}", model_version="v1")


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(tmp_path / "s.db")
    yield s
    s.close()


def test_upsert_is_idempotent_by_id(store):
    arts = [scored(i, "negative", i) for i in range(5)]
    assert store.upsert_articles(arts).written == [a.id for a in arts]
    store.upsert_articles(arts)
    stats = store.stats()
    assert stats["articles"] == 5 and stats["unique_ids"] == 5
    assert stats["by_label"] == {"negative": 5, "neutral": 0, "positive": 0}


def test_reupsert_replaces_tags_and_text(store):
    a = scored(1, "negative", 0, tickers=("AAPL",))
    store.upsert_articles([a])
    b = a.model_copy(update={"tickers": ["MSFT"], "title": "Renamed headline"})
    store.upsert_articles([b])
    assert store.facets("tickers", Filter()) [0].value == "MSFT"
    assert len(store.facets("tickers", Filter())) == 1
    assert [h.article.id for h in store.search("renamed", Filter())] == [a.id]
    assert store.search("widgets story 1", Filter()) == []


def test_timeseries_buckets_and_filters(store):
    store.upsert_articles(
        [scored(0, "negative", 0), scored(1, "positive", 10), scored(2, "neutral", 61, tickers=("MSFT",))]
    )
    series = store.timeseries(Filter(), timedelta(hours=1))
    assert [b.count for b in series] == [2, 1]
    assert series[0].start == T0 and series[0].negative == 1 and series[0].positive == 1
    assert series[0].mean_score == pytest.approx(0.0)
    only_msft = store.timeseries(Filter(ticker="MSFT"), timedelta(hours=1))
    assert [(b.start, b.neutral) for b in only_msft] == [(T0 + timedelta(hours=1), 1)]
    assert store.timeseries(Filter(start=T0 + timedelta(minutes=5), end=T0 + timedelta(minutes=61)), timedelta(hours=1))[0].count == 1


def test_top_negative_and_facets(store):
    store.upsert_articles([scored(i, "negative" if i < 3 else "positive", i, tickers=("X",) if i < 3 else ("Y", "Z")) for i in range(6)])
    top = store.top_negative(Filter(), limit=2)
    assert [a.label for a in top] == [Label.negative, Label.negative]
    assert top[0].published_at >= top[1].published_at  # equal scores: newest first
    vol = store.facets("tickers", Filter(), by="volume")
    assert [(f.value, f.count) for f in vol] == [("X", 3), ("Y", 3), ("Z", 3)]
    neg = store.facets("tickers", Filter(), by="negativity")
    assert neg[0].value == "X" and neg[0].negative_share == 1.0
    assert {f.value for f in store.facets("source", Filter())} == {"wire", "blog"}


def test_search_all_terms_stemmed_with_highlights(store):
    store.upsert_articles([scored(1, "neutral", 0, title="Profits surged at Apple"), scored(2, "neutral", 1, title="Apple recalls phones")])
    hits = store.search("profit apple", Filter())
    assert [h.article.title for h in hits] == ["Profits surged at Apple"]
    assert any("**Profits**" in h for h in hits[0].highlights)
    assert store.search('"; DROP TABLE articles; --', Filter()) == []


def test_fts_query_quotes_every_word():
    # operators become plain words; "and"/"or" are English stop words, dropped like Elasticsearch does
    assert fts_query('apple AND "x" OR NEAR(') == '"apple" "x" "near"'


def test_iter_articles_pages_in_event_order(store):
    arts = [scored(i, "neutral", minutes=i % 7) for i in range(23)]
    store.upsert_articles(arts)
    seen = [a for batch in store.iter_articles(Filter(), batch_size=5) for a in batch]
    assert len(seen) == 23 and len({a.id for a in seen}) == 23
    assert seen == sorted(seen, key=lambda a: (a.published_at, a.id))


def test_alerts_feedback_dead_letters(store):
    alert = Alert(id="a1", scope="ticker:AAPL", status=AlertStatus.firing, window_minutes=15, started_at=T0, updated_at=T0, magnitude=4.2, baseline=0.1, value=0.7, volume=12)
    store.upsert_alerts([alert])
    store.upsert_alerts([alert.model_copy(update={"status": AlertStatus.resolved})])
    assert [a.status for a in store.list_alerts()] == [AlertStatus.resolved]
    assert store.list_alerts(status="firing") == []
    store.add_feedback(Feedback(article_id="x", label=Label.positive, text="good"))
    store.add_feedback(Feedback(article_id="x", label=Label.negative, text="good"))
    assert [f.label for f in store.list_feedback()] == [Label.negative]
    store.add_dead_letters([DeadLetter(reason="malformed JSON", payload=b"\xff{", origin="test", received_at=T0)])
    assert store.list_dead_letters()[0].payload == b"\xff{"
    stats = store.stats()
    assert (stats["alerts"], stats["feedback"], stats["dead_letters"]) == (1, 1, 1)


def test_add_feedback_on_a_locked_store_is_store_unavailable(tmp_path):
    """Issue 29 #19: add_feedback let the raw sqlite3.OperationalError out."""
    import sqlite3

    from newspulse.store import StoreUnavailable

    path = tmp_path / "s.db"
    store = SQLiteStore(path, busy_timeout_s=0.05)
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    with pytest.raises(StoreUnavailable, match="saving the correction of article x failed: database is locked"):
        store.add_feedback(Feedback(article_id="x", label=Label.positive, text="good"))
    locker.execute("ROLLBACK")
    locker.close()
    store.add_feedback(Feedback(article_id="x", label=Label.positive, text="good"))
    assert len(store.list_feedback()) == 1
