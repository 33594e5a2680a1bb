"""Corpus replay: event-time order, pacing, shifting, and bad rows passed on to be dead-lettered."""

import gzip
from datetime import datetime, timezone

import pytest

from ingest.replay import DEFAULT_CORPUS, ReplayError, replay

CSV = """published_at,source,title,body,url,tickers
2024-01-01T10:00:02Z,wire,Second,b,,AAPL;MSFT
2024-01-01T10:00:00Z,wire,First,b,https://x.test/1,
not-a-date,wire,Broken,b,,
2024-01-01T10:00:01Z,wire,"Quoted, title","multi
line body",,TSLA
"""


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text(CSV)
    return p


def test_rows_come_in_event_time_order_with_bad_rows_passed_on(corpus):
    msgs = list(replay(corpus, progress=False))
    assert [m["title"] for m in msgs] == ["Broken", "First", "Quoted, title", "Second"]
    assert msgs[3]["tickers"] == ["AAPL", "MSFT"] and msgs[1]["url"] == "https://x.test/1" and msgs[3]["url"] is None
    assert msgs[2]["body"] == "multi\nline body"


def test_gzip_limit_and_shift_to_now(tmp_path):
    p = tmp_path / "c.csv.gz"
    p.write_bytes(gzip.compress(CSV.encode()))
    msgs = list(replay(p, limit=2, shift_to_now=True, progress=False))
    assert [m["title"] for m in msgs] == ["First", "Second"]
    last = datetime.fromisoformat(msgs[-1]["published_at"])
    assert abs((datetime.now(timezone.utc) - last).total_seconds()) < 5
    first = datetime.fromisoformat(msgs[0]["published_at"])
    assert (last - first).total_seconds() == pytest.approx(2.0)


def test_speed_paces_by_event_time(corpus, monkeypatch):
    slept = []
    monkeypatch.setattr("ingest.replay.time.sleep", slept.append)
    list(replay(corpus, speed=2.0, progress=False))
    assert max(slept) == pytest.approx(1.0, abs=0.05)  # the last row is due 2 s of event time in, at 2x


def test_missing_columns_and_file_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("title,body\nx,y\n")
    with pytest.raises(ReplayError, match="missing column"):
        list(replay(bad, progress=False))
    with pytest.raises(ReplayError, match="no such file"):
        list(replay(tmp_path / "nope.csv", progress=False))


def test_bundled_corpus_is_complete_and_ordered():
    msgs = list(replay(DEFAULT_CORPUS, progress=False))
    assert len(msgs) == 21576
    times = [m["published_at"] for m in msgs]
    assert times == sorted(times)
