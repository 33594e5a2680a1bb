"""How far the alerter has closed its windows durably, so a restart evaluates the rest.

A window is closed durably once it was evaluated and every alert change it caused is in the
store. The alerter keeps the event time up to which that holds (its watermark after the last
successful save) in a small JSON file, ``NEWSPULSE_ALERT_CHECKPOINT``. On a restart it warms its
baselines from the store's recent history without evaluating the windows up to that time (their
alerts are stored already), then evaluates the windows after it: the ones a crash, a kill or a
store outage left unsaved. Alert ids are deterministic and delivered notices stay delivered, so
a window evaluated twice raises nothing twice.

The file names the store it belongs to: a checkpoint of another store (another deployment, a
test) is ignored. A missing or unreadable file means "nothing known", and the restart evaluates
no window of its warm-up. The file lives beside the silences file and must be shared the same
way by alerters that take over from one another (a standby on another host without it recovers
as if there were none).
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from pathlib import Path

from newspulse.schema import to_utc

log = logging.getLogger(__name__)


class Checkpoint:
    """The file holding the event time through which one store's windows are closed durably."""

    def __init__(self, path: Path, store_key: str) -> None:
        self.path = Path(path)
        self.store_key = store_key
        self._written: datetime | None = None

    def read(self) -> datetime | None:
        """The durable close time of this store, or None (no file, another store's, unreadable)."""
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if doc.get("store") != self.store_key:
                return None
            return to_utc(datetime.fromisoformat(doc["closed_through"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            log.warning("ignoring alerter checkpoint %s: %s", self.path, err)
            return None

    def write(self, closed_through: datetime) -> None:
        """Record ``closed_through`` (atomically); a failure is logged, never raised: a stale
        checkpoint only makes a restart evaluate more windows again."""
        if closed_through == self._written:
            return
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"store": self.store_key, "closed_through": closed_through.isoformat()}), encoding="utf-8")
            os.replace(tmp, self.path)
            self._written = closed_through
        except OSError as err:
            log.warning("cannot write alerter checkpoint %s: %s", self.path, err)
