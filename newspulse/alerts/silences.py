"""Silences: "don't notify me about ticker:XYZ until 18:00" (scope glob + until).

Silences are an operator's decision in wall-clock time (like Alertmanager's), so they are checked
against the clock when a notification would be sent, not against event time. A silenced alert is
still detected and stored, with its delivery marked ``silenced: <id>``; only the notification is
held back.

They live in a small JSON file (``NEWSPULSE_ALERT_SILENCES``) that the alerter service, the
embedded pipeline and the dashboard share. Writes take an exclusive ``flock`` and replace the
file atomically, so two processes adding silences at once never lose one and a reader never sees
half a file.
"""

from __future__ import annotations

import fcntl
import fnmatch
import json
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field, TypeAdapter, field_validator

from newspulse.schema import to_utc, utcnow


class Silence(BaseModel):
    id: str
    scope: str = Field(description="Scope or glob, e.g. 'ticker:AAPL', 'topic:*', 'market'.")
    until: datetime
    created_at: datetime = Field(default_factory=utcnow)
    created_by: str = "analyst"
    comment: str = ""

    @field_validator("until", "created_at")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return to_utc(v)

    def covers(self, scope: str, now: datetime) -> bool:
        return self.created_at <= now < self.until and fnmatch.fnmatchcase(scope, self.scope)


_SILENCES = TypeAdapter(list[Silence])


class SilenceBook:
    """The silences file: add, expire, list and match."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._mutex = threading.Lock()
        self._cache: tuple[float, list[Silence]] | None = None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._mutex, open(self.path.with_suffix(self.path.suffix + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> list[Silence]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return []
        if self._cache is not None and self._cache[0] == mtime:
            return list(self._cache[1])
        items = _SILENCES.validate_json(self.path.read_bytes() or b"[]")
        self._cache = (mtime, items)
        return list(items)

    def _write(self, items: list[Silence]) -> None:
        tmp = self.path.with_suffix(self.path.suffix + f".{os.getpid()}.tmp")
        tmp.write_bytes(_SILENCES.dump_json(items, indent=2))
        os.replace(tmp, self.path)
        self._cache = None

    def add(self, scope: str, until: datetime, *, comment: str = "", created_by: str = "analyst", now: datetime | None = None) -> Silence:
        """Silence ``scope`` (a glob) until ``until``; expired silences are dropped on the way."""
        now = to_utc(now) if now else utcnow()
        until = to_utc(until)
        if until <= now:
            raise ValueError(f"silence end {until.isoformat()} is not in the future")
        if not scope.strip():
            raise ValueError("silence scope is empty")
        silence = Silence(id=secrets.token_hex(6), scope=scope.strip(), until=until, created_at=now, created_by=created_by, comment=comment)
        with self._locked():
            items = [s for s in self._read() if s.until > now]
            items.append(silence)
            self._write(items)
        return silence

    def expire(self, silence_id: str, now: datetime | None = None) -> bool:
        """End a silence now; False when there is no such active silence."""
        now = to_utc(now) if now else utcnow()
        with self._locked():
            items = self._read()
            found = False
            for s in items:
                if s.id == silence_id and s.until > now:
                    s.until = now
                    found = True
            if found:
                self._write(items)
        return found

    def active(self, now: datetime | None = None) -> list[Silence]:
        now = to_utc(now) if now else utcnow()
        with self._mutex:
            return [s for s in self._read() if s.created_at <= now < s.until]

    def match(self, scope: str, now: datetime | None = None) -> Silence | None:
        """The active silence covering ``scope``, if any."""
        now = to_utc(now) if now else utcnow()
        with self._mutex:
            return next((s for s in self._read() if s.covers(scope, now)), None)
