"""The wire records: stable ids, UTC, validation that names the problem."""

from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from newspulse.schema import SCHEMA_VERSION, Article, ScoredArticle, article_id, canonical_url


def test_canonical_url_strips_tracking_and_normalises():
    assert canonical_url("HTTPS://News.Example.com:443/a/b/?utm_source=x&b=2&a=1&fbclid=z#frag") == "https://news.example.com/a/b?a=1&b=2"
    assert canonical_url("http://x.test:8080/") == "http://x.test:8080/"


def test_id_from_url_ignores_tracking_parameters():
    t = datetime(2024, 1, 1, tzinfo=timezone.utc)
    a = Article(published_at=t, source="a", title="x", url="https://x.test/story?utm_medium=rss")
    b = Article(published_at=t + timedelta(hours=1), source="b", title="y", url="https://x.test/story")
    assert a.id == b.id


def test_id_without_url_uses_source_title_time_in_utc():
    t = datetime(2024, 1, 1, 12, tzinfo=timezone.utc)
    local = t.astimezone(timezone(timedelta(hours=5)))
    a = Article(published_at=t, source="Wire", title="Big  News")
    b = Article(published_at=local, source="wire", title="big news")
    assert a.id == b.id == article_id(url=None, source="wire", title="big news", published_at=t)
    assert a.published_at.tzinfo == timezone.utc
    assert Article(published_at=t + timedelta(seconds=1), source="wire", title="big news").id != a.id


def test_naive_time_is_utc_and_tickers_parse_from_string():
    a = Article(published_at=datetime(2024, 1, 1), source="s", title="t", tickers="AAPL; MSFT;;AAPL")
    assert a.published_at == datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert a.tickers == ["AAPL", "MSFT"]


def test_rejects_empty_text_newer_schema_and_huge_body():
    t = datetime(2024, 1, 1, tzinfo=timezone.utc)
    with pytest.raises(ValidationError, match="neither title nor body"):
        Article(published_at=t, source="s", title="", body="")
    with pytest.raises(ValidationError, match="newer than this reader"):
        Article(published_at=t, source="s", title="t", schema_version=SCHEMA_VERSION + 1)
    with pytest.raises(ValidationError, match="body"):
        Article(published_at=t, source="s", title="t", body="x" * 1_000_001)


def test_scored_article_round_trips_as_json_and_checks_probabilities():
    art = Article(published_at=datetime(2024, 1, 1, tzinfo=timezone.utc), source="s", title="t")
    s = ScoredArticle.from_article(art, {"negative": 0.2, "neutral": 0.3, "positive": 0.5}, summary="t", model_version="v1")
    again = ScoredArticle.model_validate_json(s.model_dump_json())
    assert again == s and again.score == pytest.approx(0.3) and again.label.value == "positive"
    with pytest.raises(ValidationError, match="sum to"):
        ScoredArticle(**art.model_dump(), label="neutral", probabilities={"negative": 0.5, "neutral": 0.5, "positive": 0.5}, score=0, model_version="v")
    with pytest.raises(ValidationError, match="lack"):
        ScoredArticle(**art.model_dump(), label="neutral", probabilities={"neutral": 1.0}, score=0, model_version="v")


@pytest.mark.parametrize("tickers", [7, 3.5, {"AAPL": 1}, True])
def test_wrong_typed_tickers_are_a_validation_error_not_a_type_error(tickers):
    """R3's slow poison: a number for tickers used to raise TypeError, which escaped validation and
    failed the whole batch five times before the record was dead-lettered alone."""
    from newspulse.pipeline import RawMessage, parse_message

    t = datetime(2024, 1, 1, tzinfo=timezone.utc)
    with pytest.raises(ValidationError, match="list of symbols"):
        Article(published_at=t, source="s", title="t", tickers=tickers)
    with pytest.raises(ValueError, match="list of symbols"):
        parse_message(RawMessage({"published_at": t.isoformat(), "source": "s", "title": "t", "tickers": tickers}))


def test_version_1_scored_record_reads_with_empty_entities_and_is_written_as_version_2():
    """A record stored before entity-level scoring (schema 1: no entities, no explanation)."""
    v1 = {
        "schema_version": 1, "id": "abc", "published_at": "2024-01-01T00:00:00Z", "source": "wire", "title": "Intel slides",
        "tickers": ["INTC"], "label": "negative", "probabilities": {"negative": 0.8, "neutral": 0.1, "positive": 0.1},
        "score": -0.7, "model_version": "v1", "processed_at": "2024-01-01T00:00:01Z",
    }
    old = ScoredArticle.model_validate(v1)
    assert old.schema_version == 1 and old.entities == [] and old.explanation == []
    again = ScoredArticle.from_article(old, {"negative": 0.8, "neutral": 0.1, "positive": 0.1}, summary="", model_version="v2")
    assert again.schema_version == SCHEMA_VERSION == 2
