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

from newspulse.schema import Alert, AlertStatus, Article, EntityVerdict, Evidence, Feedback, Label, ScoredArticle
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


#: Entity verdicts (exact binary fractions: the peer re-prints _source numbers).
BAD_FOR = {"negative": 0.75, "neutral": 0.125, "positive": 0.125}
GOOD_FOR = {"negative": 0.125, "neutral": 0.125, "positive": 0.75}


def entity_verdicts(art: Article, i: int) -> list[EntityVerdict]:
    """One verdict per ticker, alternating bad/good between a story's companies, evidence in
    the title; the last of every four stories has a ticker that the text never names."""
    out = []
    for j, ticker in enumerate(art.tickers):
        probs = BAD_FOR if (i + j) % 2 else GOOD_FOR
        label = max(probs, key=probs.get)
        evidence = [Evidence(start=0, end=len(art.title), text=art.title, label=label, score=probs["positive"] - probs["negative"], weight=1.0)]
        basis = "story" if i % 4 == 2 and j == 1 else "mentions"
        out.append(EntityVerdict(ticker=ticker, label=label, probabilities=probs, score=probs["positive"] - probs["negative"], basis=basis, mentions=1, evidence=evidence))
    return out


def make_corpus(n: int = 60) -> list[ScoredArticle]:
    """Deterministic articles with repeated scores and timestamps, so tie-breaks matter. Three
    in four carry entity verdicts that disagree with the story; every fourth is a version-1
    record scored before entity-level scoring (no entities: the story verdict stands in)."""
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
        scored = ScoredArticle.from_article(art, probs, summary=f"Summary of story {i}.", model_version=f"v{1 + i % 2}", entities=entity_verdicts(art, i))
        arts.append(scored.model_copy(update={"schema_version": 1, "entities": []}) if i % 4 == 3 else scored)
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
    settings = load_settings(store_url=es_url_factory(), es_index_prefix=f"t{uuid.uuid4().hex[:10]}")
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
def verdict(a: ScoredArticle, ticker: str | None) -> tuple[str, float]:
    """What per-ticker queries count: the company's entity verdict, the story's without one."""
    own = [e for e in a.entities if e.ticker == ticker]
    return (own[0].label.value, own[0].score) if own else (a.label.value, a.score)


def matching(flt: Filter) -> list[ScoredArticle]:
    def ok(a: ScoredArticle) -> bool:
        return (
            (flt.start is None or a.published_at >= flt.start)
            and (flt.end is None or a.published_at < flt.end)
            and (flt.ticker is None or flt.ticker in a.tickers)
            and (flt.topic is None or flt.topic in a.topics)
            and (flt.source is None or a.source == flt.source)
            and (flt.label is None or verdict(a, flt.ticker)[0] == flt.label)
        )

    return [a for a in CORPUS if ok(a)]


FILTERS = [
    Filter(),
    Filter(ticker="AAPL"),
    Filter(topic="earnings", source="reuters"),
    Filter(start=T0 + timedelta(hours=2), end=T0 + timedelta(hours=9)),
    Filter(label="negative", ticker="MSFT"),
    Filter(ticker="NOPE"),
    Filter(label="positive", ticker="AAPL", start=T0 + timedelta(hours=4)),
    Filter(label="negative"),
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


def test_the_deciding_tier_is_stored_and_read_back(store):
    """Issue 26 #3: a record the cascade's accurate tier decided says so after a round trip; a
    record without the field (scored before the cascade) reads as the fast tier's."""
    art = Article(published_at=T0, source="wire", title="Guidance cut, shares steady")
    accurate = ScoredArticle.from_article(art, {"negative": 0.5, "neutral": 0.375, "positive": 0.125}, summary="", model_version="v1", decided_by="accurate")
    assert store.upsert_articles([accurate]).ok
    assert store.get_article(accurate.id).decided_by == "accurate"
    plain = ScoredArticle.from_article(Article(published_at=T0, source="wire", title="Dividend held"), {"negative": 0.125, "neutral": 0.75, "positive": 0.125}, summary="", model_version="v1")
    assert store.upsert_articles([plain]).ok
    assert store.get_article(plain.id).decided_by == "fast"


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
        counted = [verdict(a, flt.ticker) for a in arts]
        assert b.count == len(arts)
        assert (b.negative, b.neutral, b.positive) == tuple(sum(label == lb for label, _ in counted) for lb in ("negative", "neutral", "positive"))
        assert b.mean_score == pytest.approx(sum(score for _, score in counted) / len(arts), abs=1e-9)


def test_timeseries_buckets_align_to_epoch(loaded):
    for b in loaded.timeseries(Filter(), timedelta(days=1)):
        assert b.start.timestamp() % 86400 == 0


@pytest.mark.parametrize("flt", FILTERS)
def test_top_negative_order_and_tie_breaks(loaded, flt):
    expected = sorted(matching(flt), key=lambda a: (verdict(a, flt.ticker)[1], -a.published_at.timestamp(), a.id))[:7]
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
@pytest.mark.parametrize("flt", [*FILTERS[:4], FILTERS[-1]])
def test_facets_match_oracle(loaded, field, by, flt):
    groups: dict[str, list[tuple[str, float]]] = {}
    for a in matching(flt):
        for v in [a.source] if field == "source" else getattr(a, field):
            # a ticker counts its own verdict; topics and sources the story's
            groups.setdefault(v, []).append(verdict(a, v if field == "tickers" else None))
    rows = [(v, len(vs), sum(label == "negative" for label, _ in vs), sum(score for _, score in vs) / len(vs)) for v, vs in groups.items() if len(vs) >= 3]
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
    (unacknowledged) copy keeps the analyst's ack and who made it, and delivery statuses merge
    key by key."""
    first = make_alert(0, AlertStatus.firing, 10).model_copy(update={"delivery": {"log:firing": "delivered"}})
    store.upsert_alerts([first])
    store.upsert_alerts([first.model_copy(update={"acknowledged": True, "acknowledged_by": "alice"})])  # the analyst, elsewhere
    later = first.model_copy(update={"status": AlertStatus.resolved, "resolved_at": T0, "delivery": {"log:resolved": "pending"}, "magnitude": 4.0})
    store.upsert_alerts([later])
    got = store.get_alert(first.id)
    assert got.acknowledged and got.status == AlertStatus.resolved and got.resolved_at == T0 and got.magnitude == 4.0
    assert got.delivery == {"log:firing": "delivered", "log:resolved": "pending"}
    assert [a.id for a in store.list_alerts(status="resolved")] == [first.id] and store.stats()["alerts"] == 1
    reopened = later.model_copy(update={"status": AlertStatus.firing, "resolved_at": None})
    store.upsert_alerts([reopened])
    got = store.get_alert(first.id)
    assert got.resolved_at is None and got.status == AlertStatus.firing and got.acknowledged and got.acknowledged_by == "alice"
    store.upsert_alerts([reopened.model_copy(update={"acknowledged": True})])  # the alerter learnt of the ack, not who
    assert store.get_alert(first.id).acknowledged_by == "alice"


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


# --- stores written before entity-level verdicts (schema version 1) -----------------------
V1_DOC = {
    "schema_version": 1, "id": "v1-story", "published_at": "2024-01-31T08:00:00Z", "source": "wire", "title": "Intel slides as AMD wins",
    "body": "", "url": None, "tickers": ["INTC", "AMD"], "topics": [], "language": None, "novelty": None, "label": "negative",
    "probabilities": {"negative": 0.75, "neutral": 0.125, "positive": 0.125}, "score": -0.625, "summary": "", "model_version": "v0",
    "processed_at": "2024-01-31T08:00:01Z",
}
#: What the article tables looked like before schema version 2.
V1_SQLITE = """
CREATE TABLE articles (id TEXT PRIMARY KEY, published_ms INTEGER NOT NULL, source TEXT NOT NULL, label TEXT NOT NULL,
    score REAL NOT NULL, model_version TEXT NOT NULL, processed_ms INTEGER NOT NULL, doc TEXT NOT NULL);
CREATE TABLE article_tickers (id TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (value, id)) WITHOUT ROWID;
PRAGMA user_version = 1;
"""


def old_store(kind: str, tmp_path, es_url_factory) -> Store:
    """A store holding one version-1 record, written the way the code before entity verdicts did."""
    if kind == "sqlite":
        import json
        import sqlite3

        conn = sqlite3.connect(tmp_path / "old.db")
        conn.executescript(V1_SQLITE)
        conn.execute("INSERT INTO articles VALUES (?,?,?,?,?,?,?,?)", ("v1-story", 1706688000000, "wire", "negative", -0.625, "v0", 1706688001000, json.dumps(V1_DOC)))
        conn.executemany("INSERT INTO article_tickers VALUES (?, ?)", [("v1-story", "INTC"), ("v1-story", "AMD")])
        conn.commit()
        conn.close()
        return SQLiteStore(tmp_path / "old.db")
    from newspulse.store.elastic import ARTICLE_MAPPINGS, ENTITY_MAPPINGS

    store = open_backend(kind, tmp_path, es_url_factory)
    old_mapping = {**ARTICLE_MAPPINGS, "properties": {k: v for k, v in ARTICLE_MAPPINGS["properties"].items() if k not in ENTITY_MAPPINGS}}
    # the store's client, before the store's own first call installs anything
    store.client.indices.create(index=f"{store.articles_alias}-2024.01", mappings=old_mapping, aliases={store.articles_alias: {}})
    store.client.index(index=f"{store.articles_alias}-2024.01", id="v1-story", document=V1_DOC, refresh=True)
    return store


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("elasticsearch", marks=pytest.mark.es)])
def test_old_schema_documents_still_read_and_the_store_takes_entity_verdicts(kind, tmp_path, request):
    store = old_store(kind, tmp_path, lambda: request.getfixturevalue("es_url"))
    try:
        old = store.get_article("v1-story")
        assert old.schema_version == 1 and old.entities == [] and old.label is Label.negative
        # a new record in the same month (the same Elasticsearch index, created with the old mapping)
        art = Article(published_at=T0 + timedelta(hours=1), source="wire", title="AMD rallies while Intel falls", tickers=["INTC", "AMD"])
        new = ScoredArticle.from_article(art, {"negative": 0.125, "neutral": 0.75, "positive": 0.125}, summary="", model_version="v1", entities=entity_verdicts(art, 1))
        assert store.upsert_articles([new]).ok
        assert store.get_article(new.id) == new
        # the old record counts its story verdict (negative) for both; the new one each company's own
        assert [(v.ticker, v.label) for v in new.entities] == [("INTC", Label.negative), ("AMD", Label.positive)]
        (amd,) = store.timeseries(Filter(ticker="AMD"), timedelta(days=30))
        (intc,) = store.timeseries(Filter(ticker="INTC"), timedelta(days=30))
        assert (amd.count, amd.negative, amd.positive) == (2, 1, 1) and amd.mean_score == pytest.approx(0.0)
        assert (intc.count, intc.negative, intc.positive) == (2, 2, 0) and intc.mean_score == pytest.approx(-0.625)
        assert [a.id for a in store.top_negative(Filter(ticker="AMD"), limit=2)] == ["v1-story", new.id]
        assert [[a.id for a in batch] for batch in store.iter_articles(Filter(ticker="AMD", label="positive"))] == [[new.id]]
        assert {(f.value, f.count, f.negative) for f in store.facets("tickers", Filter())} == {("AMD", 2, 1), ("INTC", 2, 2)}
    finally:
        store.close()
