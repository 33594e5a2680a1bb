"""One contract for every Store: the same inputs give the same answers, query by query.

Each test runs against the embedded SQLite store and against Elasticsearch (the noida-db peer,
a real server speaking the ES 8.15 REST API). Expected values come from a plain-Python oracle
over the corpus, and :func:`test_backends_answer_identically` also compares the two backends'
answers to each other directly.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from newspulse.schema import Alert, AlertStatus, Article, Feedback, Label, ScoredArticle
from newspulse.settings import load_settings
from newspulse.store.base import DeadLetter, Filter, Store, search_terms
from newspulse.store.sqlite import SQLiteStore
from peers import start_elasticsearch

T0 = datetime(2024, 1, 30, 22, 0, tzinfo=timezone.utc)  # the corpus spans a month boundary

TICKERS = [["AAPL"], ["MSFT"], ["AAPL", "MSFT"], ["TSLA"], [], ["JPM"]]
TOPICS = [["earnings"], ["mergers"], ["earnings", "guidance"], [], ["litigation"]]
SOURCES = ["reuters", "bloomberg", "wire"]
TITLES = [
    "Apple profits fall as iPhone sales slow",
    "Microsoft beats estimates on cloud growth",
    "Tesla recalls vehicles over braking fault",
    "Banks face lawsuit over fees",
    "Apple and Microsoft shares rally",
    "Regulators probe the company's accounting",
]
BODIES = [
    "The company's quarterly earnings were weak and guidance was cut.",
    "Revenue rose sharply; analysts raised their targets.",
    "Shares dropped after the recall was announced.",
    "The lawsuit claims customers were charged hidden fees.",
    "Investors cheered the results of both technology giants.",
]


def make_corpus(n: int = 60) -> list[ScoredArticle]:
    """Deterministic articles with repeated scores and timestamps, so tie-breaks matter."""
    arts = []
    for i in range(n):
        neg = [0.8, 0.1, 0.1, 0.45, 0.05, 0.6][i % 6]
        pos = [0.1, 0.8, 0.1, 0.1, 0.9, 0.2][i % 6]
        probs = {"negative": neg, "positive": pos, "neutral": round(1 - neg - pos, 6)}
        art = Article(
            published_at=T0 + timedelta(minutes=37 * (i // 2)),  # pairs share a timestamp
            source=SOURCES[i % 3],
            title=f"{TITLES[i % len(TITLES)]} ({i})",
            body=BODIES[i % len(BODIES)],
            url=f"https://news.example/story/{i}",
            tickers=TICKERS[i % len(TICKERS)],
            topics=TOPICS[i % len(TOPICS)],
        )
        arts.append(ScoredArticle.from_article(art, probs, summary=f"Summary of story {i}.", model_version=f"v{1 + i % 2}"))
    return arts


CORPUS = make_corpus()


# --- fixtures --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def es_url():
    with start_elasticsearch() as url:
        yield url


def open_backend(kind: str, tmp_path, es_url_factory) -> Store:
    if kind == "sqlite":
        return SQLiteStore(tmp_path / "contract.db")
    from newspulse.store.elastic import ElasticStore

    # a fresh index prefix per test: one server, no state shared between tests
    settings = load_settings(store_url=es_url_factory(), es_index_prefix=f"t{uuid.uuid4().hex[:10]}", es_retry_seconds=5)
    return ElasticStore(settings)


@pytest.fixture(params=["sqlite", pytest.param("elasticsearch", marks=pytest.mark.es)])
def store(request, tmp_path):
    s = open_backend(request.param, tmp_path, lambda: request.getfixturevalue("es_url"))
    yield s
    s.close()


@pytest.fixture
def loaded(store):
    result = store.upsert_articles(CORPUS)
    assert result.ok and result.written == [a.id for a in CORPUS]
    return store


# --- oracle ----------------------------------------------------------------------------
def matching(flt: Filter) -> list[ScoredArticle]:
    def ok(a: ScoredArticle) -> bool:
        return (
            (flt.start is None or a.published_at >= flt.start)
            and (flt.end is None or a.published_at < flt.end)
            and (flt.ticker is None or flt.ticker in a.tickers)
            and (flt.topic is None or flt.topic in a.topics)
            and (flt.source is None or a.source == flt.source)
            and (flt.label is None or a.label.value == flt.label)
        )

    return [a for a in CORPUS if ok(a)]


FILTERS = [
    Filter(),
    Filter(ticker="AAPL"),
    Filter(topic="earnings", source="reuters"),
    Filter(start=T0 + timedelta(hours=2), end=T0 + timedelta(hours=9)),
    Filter(label="negative", ticker="MSFT"),
    Filter(ticker="NOPE"),
]


# --- writes ----------------------------------------------------------------------------
def test_upsert_is_idempotent_and_replaces(loaded):
    again = loaded.upsert_articles(CORPUS[:10])
    assert again.ok and again.written == [a.id for a in CORPUS[:10]]
    changed = CORPUS[0].model_copy(update={"tickers": ["NFLX"], "title": "Netflix subscribers slump"})
    assert loaded.upsert_articles([changed]).ok
    stats = loaded.stats()
    assert stats["articles"] == stats["unique_ids"] == len(CORPUS)
    assert loaded.get_article(changed.id).tickers == ["NFLX"]
    assert [h.article.id for h in loaded.search("netflix slump", Filter())] == [changed.id]
    assert [f.value for f in loaded.facets("tickers", Filter(ticker="NFLX"))] == ["NFLX"]


def test_moving_published_at_keeps_one_copy(loaded):
    """A corrected timestamp may move an article to another month: still one copy."""
    moved = CORPUS[3].model_copy(update={"published_at": T0 + timedelta(days=70)})
    assert loaded.upsert_articles([moved]).ok
    stats = loaded.stats()
    assert stats["articles"] == stats["unique_ids"] == len(CORPUS)
    assert loaded.latest_published_at() == moved.published_at
    assert loaded.get_article(moved.id).published_at == moved.published_at


def test_get_article_round_trips(loaded):
    for art in (CORPUS[0], CORPUS[17], CORPUS[-1]):
        got = loaded.get_article(art.id)
        assert got is not None
        # floats compared to 1e-12: noida-db re-prints _source numbers with 15-16 digits
        # (real Elasticsearch returns _source byte for byte)
        want, have = art.model_dump(), got.model_dump()
        assert have.pop("score") == pytest.approx(want.pop("score"), abs=1e-12)
        assert have.pop("probabilities") == pytest.approx(want.pop("probabilities"), abs=1e-12)
        assert have == want
    assert loaded.get_article("does-not-exist") is None


# --- queries ---------------------------------------------------------------------------
@pytest.mark.parametrize("flt", FILTERS)
def test_timeseries_matches_oracle(loaded, flt):
    size = timedelta(hours=3)
    got = loaded.timeseries(flt, size)
    expected: dict[int, list[ScoredArticle]] = {}
    step = int(size.total_seconds() * 1000)
    for a in matching(flt):
        ms = int(a.published_at.timestamp() * 1000)
        expected.setdefault(ms // step * step, []).append(a)
    assert [int(b.start.timestamp() * 1000) for b in got] == sorted(expected)
    for b in got:
        arts = expected[int(b.start.timestamp() * 1000)]
        assert b.count == len(arts)
        assert (b.negative, b.neutral, b.positive) == tuple(sum(a.label.value == lb for a in arts) for lb in ("negative", "neutral", "positive"))
        assert b.mean_score == pytest.approx(sum(a.score for a in arts) / len(arts), abs=1e-9)


def test_timeseries_buckets_align_to_epoch(loaded):
    for b in loaded.timeseries(Filter(), timedelta(days=1)):
        assert b.start.timestamp() % 86400 == 0


@pytest.mark.parametrize("flt", FILTERS)
def test_top_negative_order_and_tie_breaks(loaded, flt):
    expected = sorted(matching(flt), key=lambda a: (a.score, -a.published_at.timestamp(), a.id))[:7]
    assert [a.id for a in loaded.top_negative(flt, limit=7)] == [a.id for a in expected]


STEMMING_QUERIES = {"APPLE profit", "recall"}


@pytest.mark.parametrize(
    "text, flt",
    [
        ("apple", Filter()),
        ("APPLE profit", Filter()),  # stemming: profit ~ profits
        ("the earnings", Filter()),  # a stop word is ignored, not required
        ("apple earnings", Filter()),  # terms may match in different fields
        ("recall", Filter(source="wire")),  # stemming: recall ~ recalls
        ("summary story", Filter(ticker="TSLA")),  # the summary is searched too
        ("fees lawsuit", Filter(start=T0 + timedelta(hours=3))),
        ("zebra", Filter()),
        ("the", Filter()),
    ],
)
def test_search_matches_all_terms(loaded, text, flt):
    def stem(word: str) -> str:
        return word.lower().rstrip("s")

    terms = search_terms(text)

    def has_all(a: ScoredArticle) -> bool:
        words = {stem(w) for w in " ".join((a.title, a.body, a.summary)).replace("'s", "").replace("(", " ").replace(")", " ").replace(".", " ").replace(",", " ").replace(";", " ").split()}
        return bool(terms) and all(stem(t) in words for t in terms)

    expected = {a.id for a in matching(flt) if has_all(a)}
    hits = loaded.search(text, flt, limit=100)
    if text in STEMMING_QUERIES and loaded.backend == "elasticsearch" and {h.article.id for h in hits} != expected:
        # The mapping uses Elasticsearch's `english` analyser (Porter stemming, like SQLite's
        # porter tokenizer); the pinned noida-db 0.2.2 peer accepts it but does not stem.
        pytest.xfail("the noida-db 0.2.2 peer does not stem English")
    assert {h.article.id for h in hits} == expected
    rel = [h.relevance for h in hits]
    assert rel == sorted(rel, reverse=True)
    for h in hits:
        for snippet in h.highlights:
            assert "**" in snippet
            marked = snippet.split("**")[1::2]
            assert marked and all(any(stem(m).startswith(stem(t)[:4]) for t in terms) for m in marked), snippet


def test_search_ranks_title_matches_first(loaded):
    hits = loaded.search("lawsuit", Filter(), limit=100)
    in_title = [h for h in hits if "lawsuit" in h.article.title.lower()]
    assert len(in_title) < len(hits)  # some match in the body only
    assert hits[: len(in_title)] == in_title and in_title
    assert any(h.highlights for h in hits)


@pytest.mark.parametrize("field", ["tickers", "topics", "source"])
@pytest.mark.parametrize("by", ["volume", "negativity"])
@pytest.mark.parametrize("flt", FILTERS[:4])
def test_facets_match_oracle(loaded, field, by, flt):
    groups: dict[str, list[ScoredArticle]] = {}
    for a in matching(flt):
        for v in [a.source] if field == "source" else getattr(a, field):
            groups.setdefault(v, []).append(a)
    rows = [(v, len(arts), sum(a.label == Label.negative for a in arts), sum(a.score for a in arts) / len(arts)) for v, arts in groups.items() if len(arts) >= 3]
    if by == "volume":
        rows.sort(key=lambda r: (-r[1], r[0]))
    else:
        rows.sort(key=lambda r: (-r[2] / r[1], -r[1], r[0]))
    got = loaded.facets(field, flt, limit=4, by=by, min_count=3)
    assert [(f.value, f.count, f.negative) for f in got] == [r[:3] for r in rows[:4]]
    for f, r in zip(got, rows):
        assert f.mean_score == pytest.approx(r[3], abs=1e-9)


def test_iter_articles_pages_in_event_order(loaded):
    flt = Filter(start=T0 + timedelta(hours=1))
    batches = list(loaded.iter_articles(flt, batch_size=7))
    assert all(len(b) <= 7 for b in batches)
    seen = [a.id for b in batches for a in b]
    assert seen == [a.id for a in sorted(matching(flt), key=lambda a: (a.published_at, a.id))]


def test_latest_published_at(store):
    assert store.latest_published_at() is None
    store.upsert_articles(CORPUS)
    assert store.latest_published_at() == max(a.published_at for a in CORPUS)


def test_stats(loaded):
    stats = loaded.stats()
    assert stats["backend"] in ("sqlite", "elasticsearch")
    assert stats["articles"] == stats["unique_ids"] == len(CORPUS)
    assert stats["by_label"] == {lb: sum(a.label.value == lb for a in CORPUS) for lb in ("negative", "neutral", "positive")}
    assert stats["model_versions"] == {"v1": 30, "v2": 30}
    assert stats["first_published_at"] == min(a.published_at for a in CORPUS).isoformat()
    assert stats["last_published_at"] == max(a.published_at for a in CORPUS).isoformat()
    assert (stats["alerts"], stats["feedback"], stats["dead_letters"]) == (0, 0, 0)


# --- alerts, feedback, dead letters -----------------------------------------------------
def make_alert(i: int, status: AlertStatus, started_minutes: int) -> Alert:
    start = T0 + timedelta(minutes=started_minutes)
    return Alert(
        id=f"alert-{i}", scope=f"ticker:T{i}", status=status, window_minutes=60, started_at=start, updated_at=start,
        magnitude=2.5, baseline=0.1, value=0.6, volume=12,
    )


def test_alerts(store):
    alerts = [make_alert(0, AlertStatus.firing, 10), make_alert(1, AlertStatus.resolved, 30), make_alert(2, AlertStatus.firing, 30), make_alert(3, AlertStatus.pending, 5)]
    store.upsert_alerts(alerts)
    assert [a.id for a in store.list_alerts()] == ["alert-1", "alert-2", "alert-0", "alert-3"]
    assert [a.id for a in store.list_alerts(status="firing")] == ["alert-2", "alert-0"]
    assert [a.id for a in store.list_alerts(limit=2)] == ["alert-1", "alert-2"]
    acked = alerts[0].model_copy(update={"acknowledged": True, "status": AlertStatus.resolved})
    store.upsert_alerts([acked])
    assert store.get_alert("alert-0") == acked
    assert store.get_alert("nope") is None
    assert store.stats()["alerts"] == 4
    assert store.stats()["alerts_by_status"] == {"pending": 1, "resolved": 2, "firing": 1}


def test_alert_upsert_keeps_an_analysts_ack_and_merges_delivery(store):
    """The alerter writes from its own state without reading alerts back: an upsert of its
    (unacknowledged) copy keeps the analyst's ack, and delivery statuses merge key by key."""
    first = make_alert(0, AlertStatus.firing, 10).model_copy(update={"delivery": {"log:firing": "delivered"}})
    store.upsert_alerts([first])
    store.upsert_alerts([first.model_copy(update={"acknowledged": True, "message": "acked"})])  # the analyst, elsewhere
    later = first.model_copy(update={"status": AlertStatus.resolved, "resolved_at": T0, "delivery": {"log:resolved": "pending"}, "magnitude": 4.0})
    store.upsert_alerts([later])
    got = store.get_alert(first.id)
    assert got.acknowledged and got.status == AlertStatus.resolved and got.resolved_at == T0 and got.magnitude == 4.0
    assert got.delivery == {"log:firing": "delivered", "log:resolved": "pending"}
    assert [a.id for a in store.list_alerts(status="resolved")] == [first.id] and store.stats()["alerts"] == 1
    reopened = later.model_copy(update={"status": AlertStatus.firing, "resolved_at": None})
    store.upsert_alerts([reopened])
    got = store.get_alert(first.id)
    assert got.resolved_at is None and got.status == AlertStatus.firing and got.acknowledged


def test_stored_ids_is_one_batched_lookup(loaded):
    wanted = [CORPUS[0].id, "missing-1", CORPUS[31].id, CORPUS[0].id, CORPUS[-1].id, "missing-2"]
    assert loaded.stored_ids(wanted) == {CORPUS[0].id, CORPUS[31].id, CORPUS[-1].id}
    assert loaded.stored_ids([]) == set()
    many = [f"missing-{i}" for i in range(2500)] + [a.id for a in CORPUS]  # more ids than one query takes
    assert loaded.stored_ids(many) == {a.id for a in CORPUS}


def test_feedback_latest_wins(store):
    store.add_feedback(Feedback(article_id="a1", label=Label.negative, text="x", created_at=T0))
    store.add_feedback(Feedback(article_id="a2", label=Label.neutral, text="y", created_at=T0 + timedelta(minutes=1)))
    store.add_feedback(Feedback(article_id="a1", label=Label.positive, text="x", created_at=T0 + timedelta(minutes=2)))
    got = store.list_feedback()
    assert [(f.article_id, f.label) for f in got] == [("a2", Label.neutral), ("a1", Label.positive)]
    assert store.stats()["feedback"] == 2


def test_dead_letters_newest_first(store):
    letters = [DeadLetter(reason=f"bad json {i}", payload=bytes([0, 255, i]) + b"{", origin=f"news.raw/0@{i}", received_at=T0 + timedelta(seconds=i)) for i in range(5)]
    store.add_dead_letters(letters[:3])
    store.add_dead_letters(letters[3:])
    got = store.list_dead_letters(limit=4)
    assert got == list(reversed(letters))[:4]
    assert store.stats()["dead_letters"] == 5


# --- the two backends against each other -------------------------------------------------
@pytest.mark.es
def test_backends_answer_identically(tmp_path, es_url):
    """The same corpus in both stores; every dashboard/alerter query compared answer by answer."""
    sqlite = open_backend("sqlite", tmp_path, lambda: es_url)
    elastic = open_backend("elasticsearch", tmp_path, lambda: es_url)
    try:
        for s in (sqlite, elastic):
            assert s.upsert_articles(CORPUS).ok

        def answers(s: Store) -> dict:
            out: dict = {}
            for i, flt in enumerate(FILTERS):
                out[f"timeseries{i}"] = [(b.start, b.count, b.negative, b.neutral, b.positive, round(b.mean_score, 9)) for b in s.timeseries(flt, timedelta(minutes=45))]
                out[f"top{i}"] = [a.id for a in s.top_negative(flt, limit=15)]
                for field in ("tickers", "topics", "source"):
                    for by in ("volume", "negativity"):
                        out[f"facets{i}{field}{by}"] = [(f.value, f.count, f.negative, round(f.mean_score, 9)) for f in s.facets(field, flt, limit=5, by=by, min_count=2)]
                out[f"iter{i}"] = [[a.id for a in b] for b in s.iter_articles(flt, batch_size=9)]
                # words without inflection: the noida-db peer does not stem (see above)
                for text in ("apple", "earnings guidance", "the lawsuit", "apple microsoft rally"):
                    out[f"search{i}{text}"] = sorted(h.article.id for h in s.search(text, flt, limit=100))
            out["latest"] = s.latest_published_at()
            stats = s.stats()
            stats.pop("backend")
            out["stats"] = stats
            return out

        a, b = answers(sqlite), answers(elastic)
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == b[key], key
    finally:
        sqlite.close()
        elastic.close()
