"""Entity-level verdicts through the Processor: mention finding over the company list, one
``score_mentions`` call per batch, confidence-weighted combination, evidence offsets, the story
fallback and the cost caps. A test double classifier reads the marked entity's clause, so a
two-company story is good for one company and bad for the other."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from newspulse.embedded import EmbeddedPipeline
from newspulse.store.sink import StoreSink
from newspulse.entities import EntityScorer, Passage, clip, combine
from newspulse.ingest.tagging import build_mention_finder
from newspulse.pipeline import Processor, RawMessage
from newspulse.schema import Article, Label, ScoredArticle
from newspulse.settings import load_settings
from newspulse.store.sqlite import SQLiteStore

NEG = [0.85, 0.1, 0.05]
NEU = [0.1, 0.8, 0.1]
POS = [0.05, 0.1, 0.85]
_BAD = re.compile(r"\b(slides?|falls?|drops?|loses?|cuts?|sued)\b")
_GOOD = re.compile(r"\b(wins?|rises?|gains?|beats?|rall(y|ies))\b")


def clause_verdict(text: str) -> list[float]:
    low = text.lower()
    return NEG if _BAD.search(low) else POS if _GOOD.search(low) else NEU


class ClauseClassifier:
    """Story level: the headline's first clause. Entity level: the clause right after the first
    marked mention (up to ``as``/``while``/a comma), so "Intel slides as AMD wins" is bad for
    Intel and good for AMD. Counts its calls and the passages it was asked about."""

    version = "clause-test"

    def __init__(self) -> None:
        self.mention_calls = 0
        self.passages: list[tuple[str, list[tuple[int, int]]]] = []

    def score_articles(self, articles):
        return np.array([clause_verdict(re.split(r"\bas\b|\bwhile\b|,", a.title)[0]) for a in articles])

    def score_mentions(self, items):
        self.mention_calls += 1
        self.passages += [(t, list(s)) for t, s in items]
        rows = []
        for text, spans in items:
            end = min(e for _, e in spans)
            rows.append(clause_verdict(re.split(r"\bas\b|\bwhile\b|,|;", text[end:])[0]))
        return np.array(rows)


class FirstSentence:
    def summarize(self, articles):
        return [a.text.split(".")[0] for a in articles]


TWO_COMPANY = Article(
    published_at=datetime(2024, 3, 4, 14, 0, tzinfo=timezone.utc),
    source="wire",
    title="Intel shares slide as AMD wins a $2 billion order",
    body=(
        "Advanced Micro Devices gains a cloud contract worth $2 billion, the company said on Monday. "
        "Intel falls further behind in data-centre chips, analysts said. "
        "Microsoft-backed funds were not involved."
    ),
    url="https://news.example/intel-amd",
    tickers=["INTC", "AMD", "MSFT", "JPM"],
)


def processor(store, clf=None, **caps) -> Processor:
    sink = StoreSink(store)
    return Processor(clf or ClauseClassifier(), FirstSentence(), [sink], sink, entities=EntityScorer(build_mention_finder(), **caps))


def test_two_company_story_gets_one_verdict_per_company_with_evidence(tmp_path):
    store = SQLiteStore(tmp_path / "e.db")
    result = processor(store).process([RawMessage(None, article=TWO_COMPANY)])
    (scored,) = result.stored
    by = {v.ticker: v for v in scored.entities}
    assert [v.ticker for v in scored.entities] == ["INTC", "AMD", "MSFT", "JPM"]
    assert scored.label is Label.negative  # the story leans on its first clause
    assert by["INTC"].label is Label.negative and by["INTC"].basis == "mentions" and by["INTC"].mentions == 2
    assert by["AMD"].label is Label.positive and by["AMD"].basis == "mentions" and by["AMD"].score > 0.5
    # named only inside "Microsoft-backed": still a mention (neutral), JPM never named: the story stands in
    assert by["MSFT"].basis == "mentions" and by["MSFT"].label is Label.neutral
    assert by["JPM"].basis == "story" and by["JPM"].label is scored.label and by["JPM"].evidence == []
    assert by["JPM"].probabilities == scored.probabilities


def test_stored_evidence_offsets_point_at_the_text(tmp_path):
    store = SQLiteStore(tmp_path / "e.db")
    processor(store).process([RawMessage(None, article=TWO_COMPANY)])
    stored = store.get_article(TWO_COMPANY.id)
    text = stored.text
    amd = next(v for v in stored.entities if v.ticker == "AMD")
    assert 1 <= len(amd.evidence) <= 3
    for ev in amd.evidence:
        assert text[ev.start : ev.end] == ev.text
        assert "AMD" in ev.text or "Advanced Micro Devices" in ev.text
    assert amd.evidence[0].start == 0 and amd.evidence[0].text == TWO_COMPANY.title  # the headline drove it
    assert abs(sum(ev.weight for ev in amd.evidence) - 1.0) < 1e-3  # both of its passages are evidence
    intc = next(v for v in stored.entities if v.ticker == "INTC")
    assert {ev.text for ev in intc.evidence} == {TWO_COMPANY.title, "Intel falls further behind in data-centre chips, analysts said."}


def test_one_mention_call_per_batch_and_only_mention_sentences_scored(tmp_path):
    clf = ClauseClassifier()
    store = SQLiteStore(tmp_path / "e.db")
    other = TWO_COMPANY.model_copy(update={"id": "", "url": "https://news.example/other", "title": "AMD rallies"})
    other = Article.model_validate(other.model_dump())
    processor(store, clf).process([RawMessage(None, article=TWO_COMPANY), RawMessage(None, article=other)])
    assert clf.mention_calls == 1
    for text, spans in clf.passages:
        assert all(text[s:e] in {"Intel", "AMD", "Advanced Micro Devices", "Microsoft"} for s, e in spans)


def test_long_article_costs_a_bounded_number_of_passages(tmp_path):
    clf = ClauseClassifier()
    body = " ".join(f"Intel falls for the {i}th day while AMD gains." for i in range(500))
    long = Article(published_at=TWO_COMPANY.published_at, source="wire", title="Chips", body=body, tickers=["INTC", "AMD", "NVDA"])
    scorer = EntityScorer(build_mention_finder(), max_tickers=2, max_sentences=3)
    (verdicts,) = scorer.verdicts([long], np.array([NEU]), clf)
    assert len(clf.passages) == 2 * 3
    assert [(v.ticker, v.basis, v.label) for v in verdicts] == [("INTC", "mentions", Label.negative), ("AMD", "mentions", Label.positive), ("NVDA", "story", Label.neutral)]


def test_clip_keeps_a_long_sentence_around_its_first_mention():
    text = "x" * 2000 + " AMD " + "y" * 2000
    psg = clip(Passage(0, len(text), ((2001, 2004),)), limit=600)
    assert psg.end - psg.start == 600 and psg.start <= 2001 and psg.end >= 2004 and psg.mentions == ((2001, 2004),)


def test_combine_weights_decisive_passages_and_the_headline_more():
    text = "AMD wins. AMD is mentioned. AMD loses."
    passages = [Passage(0, 9, ((0, 3),), title=True), Passage(10, 27, ((10, 13),)), Passage(28, 38, ((28, 31),))]
    verdict = combine("AMD", text, passages, np.array([POS, [0.33, 0.34, 0.33], NEG]))
    assert verdict.label is Label.positive  # the headline counts double
    assert verdict.evidence[0].text == "AMD wins." and verdict.evidence[0].weight > verdict.evidence[1].weight


def test_embedded_pipeline_stores_entity_verdicts(tmp_path):
    store = SQLiteStore(tmp_path / "e.db")
    with EmbeddedPipeline(load_settings(batch_max_wait_ms=1), processor(store), finite=True) as pipe:
        pipe.submit(TWO_COMPANY.model_dump_json())
    stored = store.get_article(TWO_COMPANY.id)
    assert {(v.ticker, v.label) for v in stored.entities} >= {("INTC", Label.negative), ("AMD", Label.positive)}
    assert stored.schema_version == 2


@pytest.mark.kafka
@pytest.mark.es
def test_two_company_story_through_kafka_and_elasticsearch(tmp_path):
    """Scaled mode: news.raw → the processor group → Elasticsearch and news.scored, each
    company with its own verdict, stored and queryable per ticker."""
    from peers import start_elasticsearch, start_kafka
    from test_kafka_stream import ProcessorThread, make_settings, read_topic, wait_for

    from newspulse.kafka.producer import KafkaArticlePublisher
    from newspulse.store.base import Filter
    from newspulse.store.elastic import ElasticStore

    with start_kafka() as bootstrap, start_elasticsearch() as es_url:
        s = make_settings(bootstrap, tmp_path, store_url=es_url, es_index_prefix=f"e{uuid.uuid4().hex[:10]}")
        store = ElasticStore(s)

        def factory(settings, scored, dlq):
            return Processor(ClauseClassifier(), FirstSentence(), sinks=[StoreSink(store), scored], dead_letters=dlq, entities=EntityScorer(build_mention_finder()))

        proc = ProcessorThread(s, factory)
        try:
            with KafkaArticlePublisher(s) as pub:
                pub.publish([TWO_COMPANY])
            stored = wait_for(lambda: store.get_article(TWO_COMPANY.id), 90, "the story in Elasticsearch")
        finally:
            proc.close()
        try:
            by = {v.ticker: v for v in stored.entities}
            assert (by["INTC"].label, by["AMD"].label, by["JPM"].basis) == (Label.negative, Label.positive, "story")
            assert all(stored.text[ev.start : ev.end] == ev.text for v in stored.entities for ev in v.evidence)
            (record,) = read_topic(s, s.kafka_topic_scored, 1)
            assert ScoredArticle.model_validate_json(record.value).entities == stored.entities
            (amd,) = store.timeseries(Filter(ticker="AMD"), timedelta(days=1))
            (intc,) = store.timeseries(Filter(ticker="INTC"), timedelta(days=1))
            assert (amd.positive, amd.negative, intc.positive, intc.negative) == (1, 0, 0, 1)
            assert [a.id for a in store.top_negative(Filter(ticker="AMD", label="positive"))] == [TWO_COMPANY.id]
        finally:
            store.close()


def test_mentions_follow_the_company_list_and_its_symbol_forms():
    finder = build_mention_finder()
    art = Article(
        published_at=TWO_COMPANY.published_at, source="wire", title="APPLE RALLIES; Target cuts outlook",
        body="Shares of $AAPL rose. Apple (NASDAQ:AAPL) and AAPL.O traded higher. An apple a day. "
        "GE Vernova grew while General Electric shrank. Target Corp. said sales slowed.",
        tickers=["AAPL", "TGT", "GE"],
    )
    found = finder.passages(art, art.tickers)
    text = art.text
    assert [[text[s:e] for s, e in p.mentions] for p in found["AAPL"]] == [["APPLE"], ["$AAPL"], ["Apple", "AAPL", "AAPL.O"]]
    assert found["AAPL"][0].title and not found["AAPL"][1].title
    assert [[text[s:e] for s, e in p.mentions] for p in found["TGT"]] == [["Target"], ["Target"]]  # a weak alias counts: TGT is tagged
    assert [[text[s:e] for s, e in p.mentions] for p in found["GE"]] == [["General Electric"]]  # not GE Vernova's "GE"
