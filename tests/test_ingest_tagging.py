"""Ticker and topic tagging: measured quality on hand-labelled samples, and behaviour case by case."""

from __future__ import annotations

import csv
import gzip
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from newspulse.ingest.tagging import ALIAS_HISTORY_CSV, COMPANIES_CSV, TOPICS, Tagger, build_tagger, is_tagged
from newspulse.ingest.tagging_eval import SAMPLE, SAMPLE_TOPICS, evaluate, load_sample
from newspulse.models.topics.model import TopicModel
from newspulse.schema import Article

HELDOUT = SAMPLE.with_name("heldout_tagging.jsonl")
HELDOUT2 = SAMPLE.with_name("heldout2_tagging.jsonl")
REUTERS = Path(__file__).resolve().parent.parent / "data" / "news" / "reuters21578.csv.gz"


@pytest.fixture(scope="module")
def tagger():
    return build_tagger()


def tickers(tagger, title: str, body: str = "") -> list[str]:
    return [m.symbol for m in tagger.analyze(title, body).tickers]


# --- measured quality (numbers reported in docs/ingest.md) --------------------------------------

def test_precision_recall_floors_on_the_labelled_sample(tagger):
    """The rules were developed against this sample: the floors guard against regressions."""
    rows = load_sample()
    assert len(rows) >= 50
    scores = evaluate(tagger, rows)
    assert scores["tickers"].precision >= 0.93 and scores["tickers"].recall >= 0.95, scores["tickers"].errors
    # Topics: earnings, M&A and macro come from the Reuters-trained topic model since issue 14 (the
    # keyword rules scored 0.97 / 1.00 here, being developed on this sample); measured 0.80 / 0.94.
    assert scores["topics"].precision >= 0.78 and scores["topics"].recall >= 0.92, scores["topics"].errors


@pytest.mark.parametrize("sample", [HELDOUT, HELDOUT2], ids=["held-out-1", "held-out-2"])
def test_precision_recall_floors_on_the_held_out_samples(tagger, sample):
    """Labelled after the rules were written (held-out 2 after the last change) and never tuned
    on: the honest estimate."""
    rows = load_sample(sample)
    assert len(rows) >= 30
    scores = evaluate(tagger, rows)
    assert scores["tickers"].precision >= 0.88 and scores["tickers"].recall >= 0.95, scores["tickers"].errors
    # Topic model + analyst rules measured 0.80 / 0.86 and 0.74 / 0.85 (keyword rules: 0.82 / 0.89, 0.81 / 0.91).
    assert scores["topics"].precision >= 0.72 and scores["topics"].recall >= 0.84, scores["topics"].errors


def test_labels_use_known_topics_and_listed_symbols():
    with COMPANIES_CSV.open(newline="", encoding="utf-8") as fh:
        symbols = {row["symbol"] for row in csv.DictReader(fh)}
    assert len(symbols) >= 300
    for row in load_sample() + load_sample(HELDOUT) + load_sample(HELDOUT2):
        assert set(row["topics"]) <= SAMPLE_TOPICS <= set(TOPICS) | {"other"}, row["title"]
        assert set(row["tickers"]) <= symbols, row["title"]


# --- tickers of the story's date (issue 28) ---------------------------------------------------

def _on(tagger, day: str, title: str, body: str = "", given: list[str] | None = None) -> list[str]:
    article = Article(published_at=f"{day}T12:00:00Z", source="wire", title=title, body=body, tickers=given or [])
    return tagger.tag(article).tickers


def test_28_a_1987_chrysler_story_gets_chryslers_symbol_of_the_time_not_stla(tagger):
    title = "Chrysler raises car output for the second quarter"
    assert _on(tagger, "1987-03-02", title) == ["C"]  # Chrysler Corporation, NYSE: C
    assert _on(tagger, "2005-06-01", title) == ["DCX"]  # DaimlerChrysler
    assert _on(tagger, "2010-06-01", title) == []  # privately held: no symbol
    assert _on(tagger, "2024-06-01", title) == ["STLA"]


def test_28_a_symbol_that_had_not_begun_is_not_given_to_an_older_story(tagger):
    assert _on(tagger, "1987-03-02", "Visa card volumes rise") == []  # Visa Inc. listed in 2008
    assert _on(tagger, "2024-03-02", "Visa card volumes rise") == ["V"]
    assert _on(tagger, "1987-03-02", "Exxon cuts heating oil price") == ["XON"]
    assert _on(tagger, "1987-03-02", "Debt strategy splits Manila officials") == []  # no company was called Strategy
    assert "CCI" in _on(tagger, "1987-03-02", "Citibank lends more to Brazil") and "C" not in _on(tagger, "1987-03-02", "Citibank lends more to Brazil")


def test_28_a_ticker_given_by_the_source_wins(tagger):
    """The wire tagged the story <C>; the tagger maps "Chrysler" to STLA today but adds nothing."""
    assert _on(tagger, "2024-06-01", "Chrysler unit sells notes", given=["C"]) == ["C"]
    assert _on(tagger, "2024-06-01", "Chrysler and Ford Motor cut output", given=["C"]) == ["C", "F"]  # other companies still tagged


def test_28_analyze_without_a_date_uses_todays_symbols(tagger):
    assert [m.symbol for m in tagger.analyze("Chrysler raises output").tickers] == ["STLA"]
    assert [m.symbol for m in tagger.analyze("Chrysler raises output", on=date(1987, 3, 2)).tickers] == ["C"]


def test_28_alias_history_dates_are_well_formed():
    with ALIAS_HISTORY_CSV.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    by_alias: dict[str, list[tuple[date, date]]] = {}
    for row in rows:
        start = date.fromisoformat(row["valid_from"]) if row["valid_from"] else date.min
        end = date.fromisoformat(row["valid_until"]) if row["valid_until"] else date.max
        assert start < end, row
        assert row["note"], f"{row['alias']}: say what the symbol was"
        by_alias.setdefault(row["alias"], []).append((start, end))
    for alias, spans in by_alias.items():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), f"{alias}: overlapping validity"
    with COMPANIES_CSV.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            assert not row["since"] or date.fromisoformat(row["since"]) <= date.today(), row["symbol"]


# --- explicit symbols ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("$AAPL and $TSLA rally", ["AAPL", "TSLA"]),
        ("Shares of NASDAQ:AAPL rise", ["AAPL"]),
        ("International Business Machines (NYSE: IBM) reports", ["IBM"]),
        ("AAPL.O slips in early trade", ["AAPL"]),
        ("KLM.AS and VOWG.F move higher", ["KLM.AS", "VOWG.F"]),
        ("LSE:BARC falls", ["BARC.L"]),
        ("TEXACO <TX> FILES SUIT", ["TX"]),
        ("U.S. and U.N. officials meet; cost is $5 per share in US$ terms", []),
    ],
)
def test_explicit_symbol_forms(tagger, title, expected):
    assert sorted(tickers(tagger, title)) == sorted(expected)


# --- names, aliases and relevance ---------------------------------------------------------------

def test_names_aliases_and_possessives(tagger):
    found = tickers(tagger, "Procter & Gamble and J&J report; Alphabet's Google sued")
    assert found[0] == "GOOGL" and sorted(found) == ["GOOGL", "JNJ", "PG"]  # two mentions rank first
    assert tickers(tagger, "Coca-Cola's quarter") == ["KO"]


def test_relevance_orders_title_over_lead_and_drops_a_passing_mention(tagger):
    body = "Oracle said revenue rose. " + "Filler sentence about the market. " * 20 + "Rival Microsoft also sells cloud services."
    result = tagger.analyze("Oracle beats estimates", body)
    assert [m.symbol for m in result.tickers] == ["ORCL"]
    repeated = tagger.analyze("Oracle beats estimates", body + " Microsoft Microsoft")
    assert [m.symbol for m in repeated.tickers] == ["ORCL", "MSFT"]  # three mentions add up
    assert repeated.tickers[0].relevance > repeated.tickers[1].relevance


def test_a_company_named_only_as_the_yardstick_is_not_tagged(tagger):
    assert tickers(tagger, "Intel launches AI chip to challenge Nvidia", "Intel said the chip is faster than Nvidia's H100.") == ["INTC"]
    assert tickers(tagger, "Chipmakers such as AMD rally") == []
    assert tickers(tagger, "Nvidia shares jump", "Rivals such as AMD also rose, but Nvidia led.") == ["NVDA"]


def test_everyday_word_aliases_need_corroboration(tagger):
    assert tickers(tagger, "Target practice for traders as volatility returns") == []
    assert tickers(tagger, "Target cuts outlook", "Target Corp lowered its forecast on Wednesday.") == ["TGT"]
    assert tickers(tagger, "Delta variant weighs on markets") == []


def test_indexes_and_rating_desks_are_not_companies(tagger):
    assert tickers(tagger, "S&P 500 hits record as Nasdaq Composite climbs") == []
    assert tickers(tagger, "Hertz cut to junk", "S&P Global Ratings lowered Hertz to B.") == []
    assert tickers(tagger, "S&P Global to buy IHS Markit") == ["SPGI"]


def test_all_caps_wire_headlines_match_only_distinctive_names(tagger):
    assert tickers(tagger, "BROWN-FORMAN <BFDB> SETS STOCK SPLIT, UPS PAYOUT") == ["BFDB", "BF.B"]
    assert tickers(tagger, "GENERAL MOTORS TO CUT OUTPUT") == ["GM"]


# --- topics ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("title", "topic"),
    [
        ("Nike cuts full-year revenue outlook", "guidance"),
        ("Goldman upgrades Tesla to buy", "analyst_rating"),
        ("FTC sues Amazon over antitrust violations", "regulation_legal"),
        ("Boeing CEO to step down at year-end", "management"),
        ("Apple unveils new iPhone", "product"),
        ("WeWork files for Chapter 11 bankruptcy", "credit_bankruptcy"),
    ],
)
def test_each_analyst_defined_rule_topic(tagger, title, topic):
    assert topic in tagger.analyze(title).topics


@pytest.mark.parametrize(
    ("title", "body", "topics"),
    [
        ("ACME CORP 1ST QTR NET", "Shr 45 cts vs 38 cts. Net 12.1 mln vs 10.2 mln. Revs 150.3 mln vs 141.0 mln.", {"earnings"}),
        ("Chevron agrees to buy Hess for $53 billion", "Chevron Corp said it agreed to acquire Hess Corp in an all-stock deal.", {"mergers_acquisitions"}),
        ("Fed raises interest rates as inflation persists", "The Federal Reserve raised its benchmark interest rate by a quarter point.", {"interest", "macro"}),
        ("Wheat exports rise as harvest beats forecasts", "U.S. wheat and grain exports rose after the winter wheat harvest, the Agriculture Department said.", {"grain", "wheat"}),
    ],
)
def test_model_topics_with_their_product_names(tagger, title, body, topics):
    assert topics <= set(tagger.analyze(title, body).topics)


def _toy_tagger(directory) -> Tagger:
    """A tagger over a three-category topic model: one word per category, margin 4 when present."""
    model = TopicModel(
        categories=["earn", "crude", "interest"], vocabulary=["profit", "oil", "rates"], idf=np.ones(3, np.float32),
        coef=np.eye(3, dtype=np.float32) * 6, intercept=np.array([-2.0, -1.5, -3.0], np.float32),
        thresholds=np.full(3, 0.5, np.float32), vectorizer_params={"ngram_range": [1, 1], "sublinear_tf": True, "lowercase": True},
    )
    return Tagger(directory, model)


def test_model_categories_first_then_macro_then_rule_topics(tagger):
    toy = _toy_tagger(tagger.directory)
    assert toy.analyze("Quarterly profit up").topics == ["earnings"]
    result = toy.analyze("Oil and rates: Boeing CEO to step down")
    assert result.topics == ["crude", "interest", "macro", "management"]
    assert 0.5 < result.topic_scores["crude"] < 1 and result.topic_scores["management"] >= 1


def test_without_a_confident_category_rule_topics_else_the_top_category(tagger):
    toy = _toy_tagger(tagger.directory)
    assert toy.analyze("Boeing CEO to step down").topics == ["management"]  # the story has a topic already
    assert toy.analyze("Costco raises membership fee").topics == ["crude"]  # the highest margin: always one topic


def test_rating_agency_downgrade_is_credit_not_an_analyst_call(tagger):
    topics = tagger.analyze("Moody's downgrades Ford to junk").topics
    assert "credit_bankruptcy" in topics and "analyst_rating" not in topics


# --- the pipeline contract -------------------------------------------------------------------

def test_tag_returns_a_copy_with_existing_tickers_first(tagger):
    art = Article(published_at="2024-01-01T00:00:00Z", source="Wire", title="Microsoft to acquire Activision", tickers=["ATVI"])
    tagged = tagger.tag(art)
    assert tagged.tickers == ["ATVI", "MSFT"] and tagged.topics == ["mergers_acquisitions"]
    assert art.tickers == ["ATVI"] and art.topics == []  # the original is untouched
    assert tagged.id == art.id
    assert tagger.tag(tagged) == tagged  # idempotent


def test_a_batch_tags_like_one_by_one_and_skips_what_the_crawler_tagged(tagger):
    """tag_many scores topics for the whole batch at once, with the same result as tag(); an
    article the crawler tagged (novelty set, topics given) is not tagged again, while a replayed
    row or a producer's article with topics but no novelty still gets its tickers."""
    arts = [
        Article(published_at="2024-01-01T00:00:00Z", source="Wire", title="Microsoft to acquire Activision", tickers=["ATVI"]),
        Article(published_at="2024-01-01T00:00:00Z", source="Wire", title="OPEC agrees to cut crude output", body="Ministers agreed to cut oil production."),
        Article(published_at="2024-01-01T00:00:00Z", source="Wire", title="Apple profit beats estimates", topics=["earnings"]),
    ]
    crawled = tagger.tag(Article(published_at="2024-01-01T00:00:00Z", source="Feed", title="Tesla recalls cars")).model_copy(update={"novelty": 1.0})
    batch = tagger.tag_many([*arts, crawled])
    assert batch[:3] == [tagger.tag(a) for a in arts]
    assert batch[2].tickers == ["AAPL"] and batch[2].topics[0] == "earnings"  # topics alone are no marker
    assert batch[3] is crawled and crawled.tickers == ["TSLA"]
    assert is_tagged(crawled) and not any(is_tagged(a) for a in batch[:3])


def test_build_tagger_loads_the_company_list_once():
    assert build_tagger().directory is build_tagger().directory


def test_reuters_corpus_keeps_its_tickers(tagger):
    with gzip.open(REUTERS, "rt", encoding="utf-8", newline="") as fh:
        rows = [row for _, row in zip(range(300), csv.DictReader(fh))]
    for row in rows:
        given = [t for t in row["tickers"].split(";") if t]
        art = Article(published_at=row["published_at"], source=row["source"], title=row["title"], body=row["body"], url=row["url"] or None, tickers=given)
        tagged = tagger.tag(art)
        assert tagged.tickers[: len(given)] == given
        assert tagged.topics and set(tagged.topics) <= set(TOPICS)
