"""Duplicate detection and novelty, with state in SQLite so a restart forgets nothing.

Three tests, cheapest first:
1. the canonical URL was seen before (same story, another link or a re-poll) → duplicate;
2. the normalised text hashes to one seen before (the same wire story syndicated by two feeds) →
   duplicate;
3. MinHash/LSH over word shingles finds earlier stories with estimated Jaccard similarity at or
   above ``near_threshold`` → a near-duplicate (a rewrite of the same event). At or above
   ``duplicate_threshold`` it counts as a duplicate; below, it is a follow-up and is kept.

Novelty (``Article.novelty``, 0-100) says how new a story is to the reader: the first story on
an event scores 100; a follow-up scores ``100 × (1 − similarity)`` and loses a further 20% for
each earlier story in its cluster; a duplicate scores 0. Duplicates are recorded (with the id
of the story they repeat) but not emitted, so the same story in two feeds is stored once.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasketch import MinHash, MinHashLSH

from newspulse.redact import get_logger
from newspulse.schema import Article, canonical_url

log = get_logger(__name__)

NUM_PERM = 64
#: Hash scheme of the stored signatures (datasketch 2 wants it named when restoring them).
MINHASH_SCHEME = "affine32"
SHINGLE_WORDS = 3
_WORDS_RE = re.compile(r"\w+")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stories (
    article_id   TEXT PRIMARY KEY,
    url          TEXT,
    content_hash TEXT NOT NULL,
    source       TEXT NOT NULL,
    title        TEXT NOT NULL,
    seen_at      REAL NOT NULL,
    status       TEXT NOT NULL,          -- new | follow_up | duplicate
    duplicate_of TEXT,
    cluster_id   TEXT NOT NULL,
    similarity   REAL NOT NULL,
    novelty      REAL NOT NULL,
    minhash      BLOB,
    delivered    INTEGER NOT NULL DEFAULT 1   -- 0: handed to a sink that has not acknowledged it yet
);
CREATE INDEX IF NOT EXISTS stories_url ON stories(url);
CREATE INDEX IF NOT EXISTS stories_hash ON stories(content_hash);
CREATE INDEX IF NOT EXISTS stories_cluster ON stories(cluster_id);
CREATE TABLE IF NOT EXISTS feed_state (
    feed          TEXT PRIMARY KEY,
    etag          TEXT,
    last_modified TEXT,
    last_polled   REAL
);
"""


@dataclass(frozen=True)
class Verdict:
    status: str  # "new", "follow_up" or "duplicate"
    novelty: float
    reason: str = ""  # for duplicates: "url", "content" or "near"
    duplicate_of: str | None = None
    similarity: float = 0.0

    @property
    def is_duplicate(self) -> bool:
        return self.status == "duplicate"


def normalise_text(text: str) -> str:
    return " ".join(_WORDS_RE.findall(text.lower()))


def content_hash(article: Article) -> str:
    """Hash of the normalised text; short bodies include the title so headlines-only differ."""
    body = normalise_text(article.body)
    key = body if len(body) >= 200 else normalise_text(article.title) + "\x1f" + body
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def minhash_of(text: str) -> MinHash:
    words = normalise_text(text).split()
    shingles = {" ".join(words[i:i + SHINGLE_WORDS]) for i in range(max(1, len(words) - SHINGLE_WORDS + 1))}
    m = MinHash(num_perm=NUM_PERM, scheme=MINHASH_SCHEME)
    m.update_batch([s.encode("utf-8") for s in shingles])
    return m


class DedupState:
    """The crawler's memory: stories seen (with MinHash signatures) and per-feed HTTP validators.

    One instance per process; methods are thread-safe. The LSH index lives in memory and is
    rebuilt at start-up from the stories of the last ``window_days`` (older events are not
    compared: a story repeating one from last month is news again).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        near_threshold: float = 0.5,
        duplicate_threshold: float = 0.85,
        window_days: float = 7.0,
    ) -> None:
        if not 0 < near_threshold <= duplicate_threshold <= 1:
            raise ValueError("need 0 < near_threshold <= duplicate_threshold <= 1")
        self.path = Path(path)
        self.near_threshold = near_threshold
        self.duplicate_threshold = duplicate_threshold
        self.window_s = window_days * 86400
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        if "delivered" not in {row[1] for row in self._db.execute("PRAGMA table_info(stories)")}:  # a file from before the column
            self._db.execute("ALTER TABLE stories ADD COLUMN delivered INTEGER NOT NULL DEFAULT 1")
        self._lock = threading.Lock()
        self._lsh = MinHashLSH(threshold=near_threshold, num_perm=NUM_PERM)
        self._signatures: dict[str, MinHash] = {}
        self._forget_undelivered()
        self._load_recent()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "DedupState":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- stories --------------------------------------------------------------------------
    def seen_url(self, url: str) -> bool:
        """True when this link (canonicalised) was recorded: lets the crawler skip fetching it."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM stories WHERE url = ? LIMIT 1", (canonical_url(url),)).fetchone() is not None

    def check_and_record(self, article: Article, *, delivered: bool = True) -> Verdict:
        """Classify ``article`` against everything seen, record it, and return the verdict.

        ``delivered=False``: the story is about to go to a sink that acknowledges later (the
        embedded queue, once the store has it; :meth:`confirm`). Until then it counts as seen in
        this process, so the next poll does not offer it twice; if the process dies first, the
        next start forgets it and its feed is fetched again in full (:meth:`_forget_undelivered`)."""
        url = canonical_url(article.url) if article.url else None
        digest = content_hash(article)
        sig = minhash_of(article.text)
        with self._lock:
            verdict = self._classify(article, url, digest, sig)
            if verdict.status == "duplicate" and verdict.reason == "url":
                return verdict  # the very same link again: nothing new to record
            cluster = self._cluster_of(verdict.duplicate_of) if verdict.duplicate_of else article.id
            self._db.execute(
                "INSERT OR IGNORE INTO stories VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    article.id, url, digest, article.source, article.title[:500], time.time(), verdict.status,
                    verdict.duplicate_of, cluster, verdict.similarity, verdict.novelty,
                    None if verdict.is_duplicate else sig.hashvalues.astype(np.uint64).tobytes(),
                    int(delivered or verdict.is_duplicate),  # a duplicate is not sent anywhere
                ),
            )
            if not verdict.is_duplicate and article.id not in self._signatures:
                self._lsh.insert(article.id, sig)
                self._signatures[article.id] = sig
        return verdict

    def confirm(self, article_ids: Sequence[str]) -> None:
        """The sink has these stories for good (stored, or dead-lettered with a reason): they stay
        seen across restarts."""
        with self._lock:
            self._db.executemany("UPDATE stories SET delivered = 1 WHERE article_id = ? AND delivered = 0", [(i,) for i in article_ids])

    def forget(self, article_id: str) -> None:
        """Undo :meth:`check_and_record` for a story that could not be delivered, so the next
        poll offers it again instead of treating it as already seen."""
        with self._lock:
            self._db.execute("DELETE FROM stories WHERE article_id = ?", (article_id,))
            if self._signatures.pop(article_id, None) is not None:
                self._lsh.remove(article_id)

    def story(self, article_id: str) -> dict | None:
        """The recorded verdict of one story (for tests and operators)."""
        with self._lock:
            cur = self._db.execute(
                "SELECT article_id, url, source, title, status, duplicate_of, cluster_id, similarity, novelty FROM stories WHERE article_id = ?",
                (article_id,),
            )
            row = cur.fetchone()
            return dict(zip([c[0] for c in cur.description], row)) if row else None

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT status, COUNT(*) FROM stories GROUP BY status").fetchall())

    # --- feed validators ------------------------------------------------------------------
    def feed_validators(self, feed: str) -> tuple[str | None, str | None]:
        with self._lock:
            row = self._db.execute("SELECT etag, last_modified FROM feed_state WHERE feed = ?", (feed,)).fetchone()
        return (row[0], row[1]) if row else (None, None)

    def save_feed_validators(self, feed: str, etag: str | None, last_modified: str | None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO feed_state(feed, etag, last_modified, last_polled) VALUES (?,?,?,?) "
                "ON CONFLICT(feed) DO UPDATE SET etag=excluded.etag, last_modified=excluded.last_modified, last_polled=excluded.last_polled",
                (feed, etag, last_modified, time.time()),
            )

    # --- internals ------------------------------------------------------------------------
    def _classify(self, article: Article, url: str | None, digest: str, sig: MinHash) -> Verdict:
        if url:
            row = self._db.execute("SELECT article_id FROM stories WHERE url = ? LIMIT 1", (url,)).fetchone()
            if row:
                return Verdict("duplicate", 0.0, "url", row[0], 1.0)
        row = self._db.execute(
            "SELECT article_id FROM stories WHERE content_hash = ? AND article_id != ? ORDER BY seen_at LIMIT 1", (digest, article.id)
        ).fetchone()
        if row:
            return Verdict("duplicate", 0.0, "content", row[0], 1.0)
        best_id, best_sim = None, 0.0
        for cand in self._lsh.query(sig):
            if cand == article.id:
                continue
            sim = float(sig.jaccard(self._signatures[cand]))
            if sim > best_sim:
                best_id, best_sim = cand, sim
        if best_id is None or best_sim < self.near_threshold:
            return Verdict("new", 100.0)
        if best_sim >= self.duplicate_threshold:
            return Verdict("duplicate", 0.0, "near", best_id, round(best_sim, 3))
        earlier = self._db.execute(
            "SELECT COUNT(*) FROM stories WHERE cluster_id = ? AND status != 'duplicate'", (self._cluster_of(best_id),)
        ).fetchone()[0]
        novelty = 100.0 * (1.0 - best_sim) * 0.8 ** max(0, earlier - 1)
        return Verdict("follow_up", round(novelty, 1), "near", best_id, round(best_sim, 3))

    def _cluster_of(self, article_id: str) -> str:
        row = self._db.execute("SELECT cluster_id FROM stories WHERE article_id = ?", (article_id,)).fetchone()
        return row[0] if row else article_id

    def _forget_undelivered(self) -> None:
        """At start-up: stories handed to a sink that never acknowledged them (the process was
        killed with them queued) are forgotten, and their feeds' HTTP validators dropped, so the
        next poll fetches those feeds in full and offers the stories again instead of losing them."""
        # with the copies recorded as their duplicates (another feed's syndicated copy): those
        # were never sent either, and would otherwise make the story a duplicate of itself
        rows = self._db.execute(
            """WITH RECURSIVE lost(id) AS (
                   SELECT article_id FROM stories WHERE delivered = 0
                   UNION SELECT s.article_id FROM stories s JOIN lost ON s.duplicate_of = lost.id AND s.status = 'duplicate')
               SELECT article_id, source FROM stories WHERE article_id IN (SELECT id FROM lost)"""
        ).fetchall()
        if not rows:
            return
        feeds = sorted({source for _, source in rows})
        self._db.executemany("DELETE FROM stories WHERE article_id = ?", [(i,) for i, _ in rows])
        self._db.executemany("UPDATE feed_state SET etag = NULL, last_modified = NULL WHERE feed = ?", [(f,) for f in feeds])
        log.warning("%d stories were queued but not stored when the crawler last stopped; %d feed(s) will offer them again", len(rows), len(feeds))

    def _load_recent(self) -> None:
        since = time.time() - self.window_s
        rows = self._db.execute("SELECT article_id, minhash FROM stories WHERE minhash IS NOT NULL AND seen_at >= ?", (since,)).fetchall()
        for art_id, blob in rows:
            sig = MinHash(num_perm=NUM_PERM, hashvalues=np.frombuffer(blob, dtype=np.uint64), scheme=MINHASH_SCHEME)
            self._lsh.insert(art_id, sig)
            self._signatures[art_id] = sig
