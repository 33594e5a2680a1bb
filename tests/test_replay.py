"""Corpus replay: event-time order, pacing, shifting, and bad rows passed on to be dead-lettered."""

import gzip
from datetime import datetime, timezone

import pytest

from newspulse.ingest.replay import DEFAULT_CORPUS, ReplayError, replay

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
    monkeypatch.setattr("newspulse.ingest.replay.time.sleep", slept.append)
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


def _corpus_rows(n: int) -> list[str]:
    return [f'2024-01-01T10:{i // 60 % 60:02d}:{i % 60:02d}Z,wire,"Story {i}, told","Body of {i} with ""quotes"", commas",https://x.test/{i},' for i in range(n)]


def test_18_7_an_unclosed_quote_is_a_clear_error_with_its_line_not_a_silent_loss(tmp_path):
    rows = _corpus_rows(1000)
    rows[10] = rows[10].replace('"Story 10, told"', '"Story 10, told')  # the closing quote is lost
    bad = tmp_path / "unclosed.csv"
    bad.write_text("published_at,source,title,body,url,tickers\n" + "\n".join(rows) + "\n")
    with pytest.raises(ReplayError, match=r"unclosed\.csv: line 12: .*quot"):
        list(replay(bad, progress=False))
    # the same file without the fault replays every row
    good = tmp_path / "good.csv"
    good.write_text("published_at,source,title,body,url,tickers\n" + "\n".join(_corpus_rows(1000)) + "\n")
    assert len(list(replay(good, progress=False))) == 1000


def test_18_7_a_row_that_swallowed_its_neighbour_is_reported(tmp_path):
    header = "published_at,source,title,body,url,tickers\n"
    first, last = "2024-01-01T10:00:00Z,wire,First,b,,\n", "2024-01-01T10:00:03Z,wire,Fourth,b,,\n"
    # the quote opened on line 3 is closed on line 4 before a comma: one row, six fields, one row lost
    merged = tmp_path / "merged.csv"
    merged.write_text(header + first + '2024-01-01T10:00:01Z,wire,"Second,b,,\n' + '2024-01-01T10:00:02Z,wire,Third",b,,\n' + last)
    with pytest.raises(ReplayError, match=r"line 3: its title field holds a line that looks like another row"):
        list(replay(merged, progress=False))
    # closed mid-field instead: the merged row has too many fields
    wide = tmp_path / "wide.csv"
    wide.write_text(header + first + '2024-01-01T10:00:01Z,wire,"Second,b,,\n' + '2024-01-01T10:00:02Z,wire,Third",b,x,y,z,\n' + last)
    with pytest.raises(ReplayError, match=r"line 3: row has 8 fields, the header 6"):
        list(replay(wide, progress=False))


def test_18_10_invalid_utf8_is_a_clear_error_with_its_line(tmp_path):
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(CSV.replace("Second", "Sécond").encode("utf-8").replace("é".encode(), b"\xe9"))
    with pytest.raises(ReplayError, match=r"latin1\.csv: line 2, column 28: byte 0xe9 is not valid UTF-8"):
        list(replay(bad, progress=False))
    gz = tmp_path / "latin1.csv.gz"
    gz.write_bytes(gzip.compress(bad.read_bytes()))
    with pytest.raises(ReplayError, match="line 2, column 28"):
        list(replay(gz, progress=False))


def test_18_6_shift_to_now_with_a_year_9999_story_does_not_crash(tmp_path, caplog):
    p = tmp_path / "future.csv"
    p.write_text(CSV + "9999-12-31T23:59:59Z,wire,Typo year,b,,\n")
    with caplog.at_level("WARNING", logger="newspulse.ingest"):
        msgs = list(replay(p, shift_to_now=True, speed=1000.0, progress=False))
    assert [m["title"] for m in msgs][-1] == "Typo year" and len(msgs) == 5
    by_title = {m["title"]: m for m in msgs}
    # the plausible rows end now; the typo row is passed on unshifted for the schema to reject
    last = datetime.fromisoformat(by_title["Second"]["published_at"])
    assert abs((datetime.now(timezone.utc) - last).total_seconds()) < 5
    assert by_title["Typo year"]["published_at"].startswith("9999-12-31T23:59:59")
    assert any("line 7" in r.getMessage() and "cannot be shifted" in r.getMessage() for r in caplog.records)


def test_a_bad_file_is_reported_when_replay_is_called_not_at_the_first_message(tmp_path):
    """The CLI loads the model after calling replay(): the file's error must come first (#18.13)."""
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"published_at,source,title,body,url,tickers\n2024-01-01T10:00:00Z,wire,\xff,b,,\n")
    with pytest.raises(ReplayError, match="line 2"):
        replay(bad, progress=False)  # no iteration


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (CSV.replace('"Quoted, title"', '"Quoted, title').encode(), "line 5: broken CSV quoting"),
        (CSV.encode().replace(b"Second", b"S\xe9cond"), "line 2, column 28: byte 0xe9 is not valid UTF-8"),
    ],
    ids=["unclosed-quote", "latin-1"],
)
def test_replay_command_reports_the_file_error_before_any_model_error(tmp_path, monkeypatch, content, needle):
    from typer.testing import CliRunner

    from newspulse.cli import app
    from newspulse.settings import get_settings

    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)
    monkeypatch.setenv("NEWSPULSE_MODEL_REGISTRY", str(tmp_path / "no-models-here"))
    monkeypatch.setenv("NEWSPULSE_STORE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["replay", "--file", str(bad)])
    get_settings.cache_clear()
    assert result.exit_code == 2 and needle in result.stderr and "Traceback" not in result.output
