"""The Overview's per-analyst watchlists: tickers an analyst follows, kept between sessions.

An analyst signed in with OIDC has a name the identity provider vouches for, so their list is
saved under it in a JSON file (``NEWSPULSE_DASHBOARD_WATCHLISTS``, beside the alert silences on
the compose stack's state volume). With the shared password or no sign-in, anyone can type any
name, so a list saved under it could be read or overwritten by a colleague: there the list lives
in the link instead (``?watch=XOM,IBM``), which the analyst bookmarks.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path

#: Most tickers one watchlist holds (the panel shows one row each).
MAX_TICKERS = 50

_lock = threading.Lock()  # the dashboard's sessions share one process


def clean(tickers: list[str]) -> list[str]:
    """Upper-cased, deduplicated, non-empty symbols in the given order, at most :data:`MAX_TICKERS`."""
    return list(dict.fromkeys(t.strip().upper() for t in tickers if t and t.strip()))[:MAX_TICKERS]


def read_watchlists(path: Path) -> dict[str, list[str]]:
    """Every saved watchlist by user; {} when the file does not exist yet or is not readable
    (a damaged file must not take the Overview down: the next save rewrites it)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {str(user): clean([str(t) for t in tickers]) for user, tickers in raw.items() if isinstance(tickers, list)}


def watchlist_of(path: Path, user: str) -> list[str]:
    return read_watchlists(path).get(user, [])


def save_watchlist(path: Path, user: str, tickers: list[str]) -> None:
    """Replace ``user``'s list, leaving the others as they are; written to a temporary file and
    renamed, so a reader never sees half a file."""
    path = Path(path)
    with _lock:
        lists = read_watchlists(path)
        lists[user] = clean(tickers)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".watchlists-", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(lists, fh, indent=2, sort_keys=True)
        os.replace(tmp, path)
