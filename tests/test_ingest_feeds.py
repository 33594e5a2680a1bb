"""The feeds file: YAML and TOML, validated at start-up with errors that name the feed."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.feeds import DEFAULT_FEEDS, FeedConfig, FeedsFileError, load_feeds


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
