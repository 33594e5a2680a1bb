"""The feeds file: which RSS/Atom feeds the crawler polls, how often, and what it may reach.

YAML (``feeds.yaml``) or TOML (``feeds.toml``), chosen by the file extension::

    feeds:
      - name: SEC press releases          # becomes Article.source
        url: https://www.sec.gov/news/pressreleases.rss
        poll_interval: 600                # seconds, at least 30
        language: en                      # expected language; used when detection fails
        allow_private: false              # true only for feeds on your own network

A bad file stops the crawler at start-up with a message naming the line, the feed and the field,
like a bad setting does (:class:`FeedsFileError`); a URL the crawler could not parse (a port out of
range, a control character, no host) is such an error.
"""

from __future__ import annotations

import re
import tomllib
from collections import Counter
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from newspulse.ingest.fetch import FetchError, parse_url
from newspulse.errors import BadInput

DEFAULT_FEEDS = Path(__file__).with_name("feeds.yaml")


class FeedsFileError(BadInput):
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
        try:
            parse_url(v)
        except FetchError as err:
            raise ValueError(f"cannot be parsed: {err.reason}") from None
        return v


def load_feeds(path: Path | str = DEFAULT_FEEDS) -> list[FeedConfig]:
    """Parse and validate a feeds file; raise :class:`FeedsFileError` saying what is wrong where."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise FeedsFileError(f"{path}: cannot read ({err.strerror or err})") from None
    positions: list[dict[str, int]] | None = None  # YAML: per feed, the line of the entry ("") and of each field
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            data, positions = _yaml_with_lines(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as err:
        raise FeedsFileError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {err}") from None
    entries = data.get("feeds") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise FeedsFileError(f"{path}: needs a non-empty 'feeds' list")
    feeds: list[FeedConfig] = []
    for i, entry in enumerate(entries):
        try:
            feeds.append(FeedConfig.model_validate(entry))
        except ValidationError as err:
            label = entry.get("name", f"#{i + 1}") if isinstance(entry, dict) else f"#{i + 1}"
            first = err.errors()[0]["loc"]
            field = first[0] if first else None
            where = _error_line(text, entries, i, field, positions)
            details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in err.errors())
            raise FeedsFileError(f"{path}:{where}: feed {label!r}: {details}" if where else f"{path}: feed {label!r}: {details}") from None
    dupes = sorted(name for name, count in Counter(f.name for f in feeds).items() if count > 1)
    if dupes:
        raise FeedsFileError(f"{path}: feed names must be unique; repeated: {', '.join(dupes)}")
    return feeds


def _yaml_with_lines(text: str) -> tuple[object, list[dict[str, int]] | None]:
    """The YAML document, and for each entry of its ``feeds`` list the 1-based line of the entry
    (key ``""``) and of each field's value, from the parser's own marks: one pass, exact even
    for names written with escapes or quotes."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    if not isinstance(node, yaml.MappingNode):
        return data, None
    feeds = next((value for key, value in node.value if isinstance(key, yaml.ScalarNode) and key.value == "feeds"), None)
    if not isinstance(feeds, yaml.SequenceNode):
        return data, None
    positions = []
    for item in feeds.value:
        where = {"": item.start_mark.line + 1}
        if isinstance(item, yaml.MappingNode):
            where.update({str(key.value): value.start_mark.line + 1 for key, value in item.value if isinstance(key, yaml.ScalarNode)})
        positions.append(where)
    return data, positions


def _error_line(text: str, entries: list, index: int, field: object, positions: list[dict[str, int]] | None) -> int:
    """The line to name for an invalid field of entry ``index`` (0 when unknown). YAML has exact
    positions; TOML's parser keeps none, so the file is searched, only now that it is needed."""
    if positions is not None and index < len(positions):
        where = positions[index]
        return where.get(field, where[""]) if isinstance(field, str) else where[""]
    lines = text.splitlines()
    line = 0
    for entry in entries[: index + 1]:  # each feed's name is found after the previous one's
        line = _line_of(lines, entry.get("name") if isinstance(entry, dict) else None, line) or line
    return _field_line(lines, entries[index], field, max(0, line - 1)) or line


def _field_line(lines: list[str], entry: object, field: object, after: int) -> int:
    """The line of a feed's bad field: where its value is written, else where its key is."""
    if not isinstance(entry, dict) or not isinstance(field, str):
        return 0
    key = re.compile(rf"^\s*(-\s*)?[\"']?{re.escape(field)}[\"']?\s*[:=]")
    found = _line_of(lines, entry.get(field), after)
    return found or next((n + 1 for n in range(after, len(lines)) if key.match(lines[n])), 0)


def _line_of(lines: list[str], value: object, after: int) -> int:
    """1-based number of the first line after line ``after`` that holds ``value``, else 0.

    Neither the YAML nor the TOML parser keeps positions in the data; a feed's name and values are
    written literally in the file, so searching from the previous feed's line finds them."""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool) or value == "":
        return 0
    needle = str(value).strip()
    for number in range(after, len(lines)):
        if needle in lines[number]:
            return number + 1
    return 0
