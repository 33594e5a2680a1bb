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
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from newspulse.schema import to_utc

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("published_at", "source", "title", "body", "url", "tickers")
DEFAULT_CORPUS = Path(__file__).resolve().parent.parent / "data" / "news" / "reuters21578.csv.gz"


class ReplayError(ValueError):
    """The file cannot be replayed at all (missing, unreadable, wrong columns)."""


@dataclass(frozen=True)
class ReplayRow:
    line: int
    published_at: datetime | None
    record: dict


def _open_text(path: Path) -> io.TextIOBase:
    if not path.exists():
        raise ReplayError(f"{path}: no such file")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _parse_time(value: str) -> datetime | None:
    try:
        return to_utc(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
    except (ValueError, AttributeError):
        return None


def read_rows(path: Path, limit: int | None = None) -> list[ReplayRow]:
    """Read and sort the rows by event time. Rows with an unreadable time sort first and are
    passed on unchanged, so the pipeline dead-letters them with a reason instead of dropping them."""
    csv.field_size_limit(sys.maxsize)
    with _open_text(path) as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ReplayError(f"{path}: missing column(s) {', '.join(missing)}; need {','.join(REQUIRED_COLUMNS)}")
        rows = []
        for i, rec in enumerate(reader):
            if limit is not None and i >= limit:
                break
            rows.append(ReplayRow(line=reader.line_num, published_at=_parse_time(rec.get("published_at") or ""), record=rec))
    rows.sort(key=lambda r: (r.published_at is not None, r.published_at or datetime.min.replace(tzinfo=timezone.utc)))
    return rows


def to_message(row: ReplayRow, offset: timedelta) -> dict:
    """The wire form of a row: the Article fields, timestamps shifted by ``offset``."""
    rec = dict(row.record)
    if row.published_at is not None:
        rec["published_at"] = (row.published_at + offset).isoformat()
    rec["tickers"] = [t for t in (rec.get("tickers") or "").split(";") if t.strip()]
    rec["url"] = rec.get("url") or None
    return {k: v for k, v in rec.items() if k in REQUIRED_COLUMNS}


def replay(path: Path, *, speed: float = 0.0, limit: int | None = None, shift_to_now: bool = False, progress: bool = True) -> Iterator[dict]:
    """Yield article messages in event-time order, paced at ``speed`` × real time."""
    if speed < 0:
        raise ReplayError("speed must be >= 0 (0 = as fast as possible)")
    rows = read_rows(path, limit)
    times = [r.published_at for r in rows if r.published_at is not None]
    offset = (datetime.now(timezone.utc) - max(times)) if (shift_to_now and times) else timedelta(0)
    from tqdm import tqdm

    start_wall = time.monotonic()
    first_event = min(times) if times else None
    for row in tqdm(rows, desc=f"replay {path.name}", unit="art", disable=not progress, file=sys.stderr):
        if speed > 0 and row.published_at is not None and first_event is not None:
            due = (row.published_at - first_event).total_seconds() / speed
            wait = due - (time.monotonic() - start_wall)
            if wait > 0:
                time.sleep(wait)
        yield to_message(row, offset)
