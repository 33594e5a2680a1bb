"""The feeds file: which RSS/Atom feeds the crawler polls, how often, and what it may reach.

YAML (``feeds.yaml``) or TOML (``feeds.toml``), chosen by the file extension::

    feeds:
      - name: SEC press releases          # becomes Article.source
        url: https://www.sec.gov/news/pressreleases.rss
        poll_interval: 600                # seconds, at least 30
        language: en                      # expected language; used when detection fails
        allow_private: false              # true only for feeds on your own network

A bad file stops the crawler at start-up with a message naming the feed and field, like a bad
setting does (:class:`FeedsFileError`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_FEEDS = Path(__file__).with_name("feeds.yaml")


class FeedsFileError(ValueError):
    """The feeds file is missing, unparsable or has an invalid feed."""


class FeedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=200)]
    url: str
    poll_interval: Annotated[int, Field(ge=30, le=86_400)] = 300
    language: Annotated[str, Field(pattern=r"^[a-z]{2}(-[A-Za-z]{2})?$")] | None = None
    allow_private: bool = False
    fetch_articles: bool = True  # fetch each linked page for full text (else the feed summary)

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        v = v.strip()
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return v


def load_feeds(path: Path | str = DEFAULT_FEEDS) -> list[FeedConfig]:
    """Parse and validate a feeds file; raise :class:`FeedsFileError` saying what is wrong where."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise FeedsFileError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as err:
        raise FeedsFileError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {err}") from None
    entries = data.get("feeds") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise FeedsFileError(f"{path}: needs a non-empty 'feeds' list")
    feeds: list[FeedConfig] = []
    for i, entry in enumerate(entries):
        label = entry.get("name", f"#{i + 1}") if isinstance(entry, dict) else f"#{i + 1}"
        try:
            feeds.append(FeedConfig.model_validate(entry))
        except ValidationError as err:
            details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in err.errors())
            raise FeedsFileError(f"{path}: feed {label!r}: {details}") from None
    names = [f.name for f in feeds]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise FeedsFileError(f"{path}: feed names must be unique; repeated: {', '.join(dupes)}")
    return feeds
