"""Replay a historical corpus as if it were arriving live.

Any CSV (optionally gzip-compressed) with the columns
``published_at,source,title,body,url,tickers`` (tickers ``;``-separated) is streamed in event-time
order. ``speed`` is a multiple of real time (0 = as fast as the sink takes it), and
``shift_to_now`` moves every timestamp by one offset so the stream ends at the current time.
Downstream everything runs on event time, so a fast replay gives the same results as a live one.
"""

from __future__ import annotations

import csv
import gzip
import io
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO

from newspulse.redact import get_logger
from newspulse.bundled import data_dir
from newspulse.errors import BadInput
from newspulse.schema import MAX_PUBLISHED_AHEAD, to_utc

log = get_logger(__name__)

REQUIRED_COLUMNS = ("published_at", "source", "title", "body", "url", "tickers")
DEFAULT_CORPUS = data_dir() / "news" / "reuters21578.csv.gz"


class ReplayError(BadInput):
    """The file cannot be replayed at all (missing, unreadable, not UTF-8, broken CSV structure)."""


@dataclass(frozen=True)
class ReplayRow:
    line: int
    published_at: datetime | None
    record: dict


def _open_binary(path: Path) -> BinaryIO:
    if not path.exists():
        raise ReplayError(f"{path}: no such file")
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _parse_time(value: str) -> datetime | None:
    try:
        return to_utc(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
    except (ValueError, AttributeError, OverflowError):
        return None


def _first_bad_utf8(path: Path) -> str:
    """Where the file stops being UTF-8: "line N, column C" (no UTF-8 sequence spans a newline)."""
    with _open_binary(path) as fh:
        for number, raw in enumerate(fh, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                return f"line {number}, column {err.start + 1}: byte 0x{raw[err.start]:02x} is not valid UTF-8"
    return "an undecodable byte"


def read_rows(path: Path, limit: int | None = None) -> list[ReplayRow]:
    """Read and sort the rows by event time. Rows with an unreadable time sort first and are
    passed on unchanged, so the pipeline dead-letters them with a reason instead of dropping them.

    The file's structure is checked strictly before anything is replayed, because a CSV error
    there silently merges rows: an unclosed quote swallows every later row into one field. A
    quoting error, or a row with more or fewer fields than the header, is a ReplayError naming
    the line where that row starts; so is a byte that is not UTF-8.
    """
    csv.field_size_limit(sys.maxsize)
    try:
        with io.TextIOWrapper(_open_binary(path), encoding="utf-8-sig", newline="") as fh:
            return _read_sorted(path, csv.DictReader(fh, strict=True), limit)
    except UnicodeDecodeError:
        raise ReplayError(f"{path}: {_first_bad_utf8(path)}; re-encode the file as UTF-8") from None
    except (OSError, EOFError, zlib.error) as err:
        raise ReplayError(f"{path}: cannot read ({err})") from None


def _read_sorted(path: Path, reader: csv.DictReader, limit: int | None) -> list[ReplayRow]:
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ReplayError(f"{path}: missing column(s) {', '.join(missing)}; need {','.join(REQUIRED_COLUMNS)}")
    width = len(reader.fieldnames or [])
    rows = []
    while limit is None or len(rows) < limit:
        start = reader.line_num + 1
        try:
            rec = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise ReplayError(f"{path}: line {start}: broken CSV quoting ({err}); is a quote opened on line {start} never closed?") from None
        fields = width + len(rec.get(None) or []) - sum(v is None for k, v in rec.items() if k is not None)
        if fields != width:
            raise ReplayError(
                f"{path}: line {start}: row has {fields} fields, the header {width} (an unbalanced quote merges or splits rows); "
                "fix the file, nothing was replayed"
            )
        swallowed = _swallowed_row(rec, reader.fieldnames or [])
        if swallowed:
            raise ReplayError(f"{path}: line {start}: {swallowed}; is a quote opened on line {start} never closed? Fix the file, nothing was replayed")
        rows.append(ReplayRow(line=start, published_at=_parse_time(rec.get("published_at") or ""), record=rec))
    rows.sort(key=lambda r: (r.published_at is not None, r.published_at or datetime.min.replace(tzinfo=timezone.utc)))
    return rows


def _swallowed_row(rec: dict, fieldnames: list[str]) -> str | None:
    """Why ``rec`` looks like rows merged by a stray quote, or None.

    A quote closed on a later line by chance keeps the field count right, but the field then
    holds a line that starts like a row of this file: its published_at column parses as a time."""
    at = fieldnames.index("published_at")
    for name, value in rec.items():
        if not isinstance(value, str) or "\n" not in value:
            continue
        for embedded in value.split("\n")[1:]:
            cells = next(csv.reader([embedded]), [])
            if len(cells) > at + 1 and _parse_time(cells[at]) is not None:
                return f"its {name} field holds a line that looks like another row ({embedded[:60]!r})"
    return None


def to_message(row: ReplayRow, offset: timedelta) -> dict:
    """The wire form of a row: the Article fields, timestamps shifted by ``offset``.

    A time the shift would carry past year 9999 (or before year 1) is passed on unshifted, with a
    warning naming the line; the schema's bound on ``published_at`` dead-letters such a row."""
    rec = dict(row.record)
    if row.published_at is not None and offset:
        try:
            rec["published_at"] = (row.published_at + offset).isoformat()
        except OverflowError:
            log.warning("replay line %d: published_at %s cannot be shifted by %s (out of range); passed on unshifted", row.line, row.published_at.isoformat(), offset)
    rec["tickers"] = [t for t in (rec.get("tickers") or "").split(";") if t.strip()]
    rec["url"] = rec.get("url") or None
    return {k: v for k, v in rec.items() if k in REQUIRED_COLUMNS}


def shift_offset(times: list[datetime], now: datetime) -> timedelta:
    """The offset that makes the latest *plausible* event time now.

    Times beyond the schema's bound (more than ``MAX_PUBLISHED_AHEAD`` in the future: a year-9999
    typo) are not anchors: they would shift every other row into the distant past. They stay in
    the stream for the schema to reject."""
    plausible = [t for t in times if t <= now + MAX_PUBLISHED_AHEAD]
    return now - max(plausible) if plausible else timedelta(0)


def replay(path: Path, *, speed: float = 0.0, limit: int | None = None, shift_to_now: bool = False, progress: bool = True) -> Iterator[dict]:
    """Article messages in event-time order, paced at ``speed`` × real time.

    The file is read and checked *now*, not at the first message: a bad file is a ReplayError
    before the caller loads a model or opens a sink, so its error is never hidden behind theirs."""
    if speed < 0:
        raise ReplayError("speed must be >= 0 (0 = as fast as possible)")
    rows = read_rows(path, limit)
    now = datetime.now(timezone.utc)
    times = [r.published_at for r in rows if r.published_at is not None]
    offset = shift_offset(times, now) if shift_to_now else timedelta(0)
    paced = [t for t in times if t <= now + MAX_PUBLISHED_AHEAD]
    return _paced(path.name, rows, offset, speed, min(paced) if paced else None, now + MAX_PUBLISHED_AHEAD, progress)


def _paced(name: str, rows: list[ReplayRow], offset: timedelta, speed: float, first_event: datetime | None, latest: datetime, progress: bool) -> Iterator[dict]:
    from tqdm import tqdm

    start_wall = time.monotonic()
    for row in tqdm(rows, desc=f"replay {name}", unit="art", disable=not progress, file=sys.stderr):
        if speed > 0 and row.published_at is not None and first_event is not None and row.published_at <= latest:
            due = (row.published_at - first_event).total_seconds() / speed
            wait = due - (time.monotonic() - start_wall)
            if wait > 0:
                time.sleep(wait)
        yield to_message(row, offset)
