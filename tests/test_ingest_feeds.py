"""The feeds file: YAML and TOML, validated at start-up with errors that name the feed."""

from __future__ import annotations

from pathlib import Path

import pytest

from newspulse.ingest.feeds import DEFAULT_FEEDS, FeedConfig, FeedsFileError, load_feeds


def test_default_feeds_are_valid_public_https_feeds():
    feeds = load_feeds(DEFAULT_FEEDS)
    assert len(feeds) >= 10
    assert all(f.url.startswith("https://") and not f.allow_private and f.poll_interval >= 300 for f in feeds)
    assert len({f.name for f in feeds}) == len(feeds)


def test_yaml_and_toml_give_the_same_feeds(tmp_path: Path):
    yml = tmp_path / "f.yaml"
    yml.write_text("feeds:\n  - name: Local\n    url: http://127.0.0.1:8080/rss\n    poll_interval: 60\n    language: en\n    allow_private: true\n")
    toml = tmp_path / "f.toml"
    toml.write_text('[[feeds]]\nname = "Local"\nurl = "http://127.0.0.1:8080/rss"\npoll_interval = 60\nlanguage = "en"\nallow_private = true\n')
    expected = [FeedConfig(name="Local", url="http://127.0.0.1:8080/rss", poll_interval=60, language="en", allow_private=True)]
    assert load_feeds(yml) == load_feeds(toml) == expected


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("feeds: []\n", "non-empty 'feeds' list"),
        ("feeds:\n  - name: A\n    url: ftp://x\n", "feed 'A': url"),
        ("feeds:\n  - name: A\n    url: https://x\n    poll_interval: 5\n", "poll_interval"),
        ("feeds:\n  - name: A\n    url: https://x\n    colour: red\n", "colour"),
        ("feeds:\n  - name: A\n    url: https://x\n  - name: A\n    url: https://y\n", "repeated: A"),
        ("feeds: [\n", "not valid YAML"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, content: str, message: str):
    path = tmp_path / "feeds.yaml"
    path.write_text(content)
    with pytest.raises(FeedsFileError, match=message.replace("[", r"\[")):
        load_feeds(path)


def test_missing_file(tmp_path: Path):
    with pytest.raises(FeedsFileError, match="cannot read"):
        load_feeds(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://feeds.example.com:99999/rss", "Port out of range"),
        ("https://feeds.example.com/r\x7fss", "non-printable"),
        ("https://exa mple.com/rss", "whitespace"),
        ("http://[::1/rss", "invalid URL"),
        ("https:///rss", "no host"),
    ],
)
def test_18_15_unparsable_feed_url_stops_start_up_with_its_line(tmp_path: Path, url: str, reason: str):
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "feeds:\n  - name: Good\n    url: https://ok.example.com/rss\n"
        f"  - name: Bad\n    poll_interval: 60\n    url: \"{url.encode('unicode_escape').decode()}\"\n"
    )
    with pytest.raises(FeedsFileError) as err:
        load_feeds(path)
    message = str(err.value)
    assert message.startswith(f"{path}:6: feed 'Bad': url:") and "cannot be parsed" in message and reason in message


def test_18_15_toml_error_names_the_line_too(tmp_path: Path):
    path = tmp_path / "feeds.toml"
    path.write_text('[[feeds]]\nname = "A"\nurl = "https://a.example.com/rss"\n\n[[feeds]]\nname = "B"\nurl = "http://b.example.com:70000/rss"\n')
    with pytest.raises(FeedsFileError, match=r"feeds\.toml:7: feed 'B': url: .*Port out of range"):
        load_feeds(path)
