"""The embedded store: one SQLite file in WAL mode, FTS5 for search.

WAL lets the dashboard read while the pipeline writes from another process. Tickers and topics
live in side tables so that filtering by them uses an index instead of scanning JSON; a ticker's
row also holds its entity verdict (label, score; NULL for a record scored before entity-level
scoring), so per-ticker aggregations read the company's own sentiment with the story's as the
fallback: ``COALESCE(t.label, a.label)``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from newspulse.schema import Alert, Feedback, ScoredArticle, epoch_ms, from_epoch_ms
from newspulse.store.base import Bucket, DeadLetter, alert_update, Facet, FacetField, Filter, SearchHit, StoreError, StorePermanentError, StoreUnavailable, WriteResult, search_terms, stored_form

_SCHEMA = """
CREATE TABLE IF NOT EXISTS articles (
    id TEXT PRIMARY KEY,
    published_ms INTEGER NOT NULL,
    source TEXT NOT NULL,
    label TEXT NOT NULL,
    score REAL NOT NULL,
    model_version TEXT NOT NULL,
    processed_ms INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS articles_published ON articles(published_ms);
CREATE INDEX IF NOT EXISTS articles_score ON articles(score, published_ms);
CREATE INDEX IF NOT EXISTS articles_source ON articles(source, published_ms);
CREATE TABLE IF NOT EXISTS article_tickers (id TEXT NOT NULL, value TEXT NOT NULL, label TEXT, score REAL, PRIMARY KEY (value, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS article_tickers_id ON article_tickers(id);
CREATE TABLE IF NOT EXISTS article_topics (id TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (value, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS article_topics_id ON article_topics(id);
CREATE VIRTUAL TABLE IF NOT EXISTS articles_fts USING fts5(
    id UNINDEXED, title, body, summary, tokenize = 'porter unicode61'
);
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY, scope TEXT NOT NULL, status TEXT NOT NULL, started_ms INTEGER NOT NULL, doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_started ON alerts(started_ms);
CREATE TABLE IF NOT EXISTS feedback (article_id TEXT PRIMARY KEY, created_ms INTEGER NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, received_ms INTEGER NOT NULL, origin TEXT NOT NULL, reason TEXT NOT NULL, payload BLOB NOT NULL
);
"""

#: Ids per ``IN (...)`` query: below SQLite's bound on host parameters (999 in old builds).
_IDS_PER_QUERY = 500

def fts_query(text: str) -> str:
    """Turn free text into an FTS5 query: every word must match (AND), no operator injection.

    Words come from :func:`search_terms` (stop words dropped) so that SQLite and Elasticsearch
    match the same articles."""
    return " ".join('"' + w.replace('"', "") + '"' for w in search_terms(text))


class SQLiteStore:
    """Store implementation over one SQLite database file.

    One connection per thread (sqlite3 connections are not shareable across threads), all on
    the same WAL database; writes are serialised by a process-wide lock.

    A write that meets a locked, read-only, full or unreadable database raises
    :class:`StoreUnavailable` (the pipeline pauses and retries) after waiting up to
    ``busy_timeout_s`` for another process's lock; a corrupt file raises
    :class:`StorePermanentError`. Only a record's own fault is reported in ``WriteResult.failed``.
    """

    backend = "sqlite"

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        with self._write_lock:
            try:
                self._install()
            except sqlite3.Error as err:
                self.close()
                raise self._infrastructure(err, "creating the schema") from err

    def _install(self) -> None:
        """Create the tables if missing and migrate older files."""
        conn = self._conn()
        conn.executescript(_SCHEMA)
        if conn.execute("PRAGMA user_version").fetchone()[0] < 1:
            # version 1: FTS rows share their article's rowid (see _upsert_one); re-key old files
            conn.executescript(
                """BEGIN IMMEDIATE;
                DELETE FROM articles_fts;
                INSERT INTO articles_fts (rowid, id, title, body, summary)
                    SELECT rowid, id, json_extract(doc, '$.title'), json_extract(doc, '$.body'), json_extract(doc, '$.summary') FROM articles;
                PRAGMA user_version = 1;
                COMMIT;"""
            )
        columns = {row[1] for row in conn.execute("PRAGMA table_info(article_tickers)")}
        if "label" not in columns:
            # version 2: a ticker's row holds its entity verdict; older rows stay NULL (the
            # story verdict stands in) until re-scoring fills them
            conn.executescript(
                """BEGIN IMMEDIATE;
                ALTER TABLE article_tickers ADD COLUMN label TEXT;
                ALTER TABLE article_tickers ADD COLUMN score REAL;
                PRAGMA user_version = 2;
                COMMIT;"""
            )
        conn.commit()

    # --- plumbing ------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
            except sqlite3.Error as err:
                raise self._infrastructure(err, "opening") from err
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            except sqlite3.Error as err:
                conn.close()
                raise self._infrastructure(err, "opening") from err
            self._local.conn = conn
        return conn

    def _infrastructure(self, err: sqlite3.Error, what: str) -> StoreError:
        """A database-wide error as the pipeline's kind: corrupt is permanent, the rest
        (locked, busy, read-only, disk full or failing) is an outage to wait out."""
        text = f"SQLite store {self.path}: {what} failed: {err}"
        if isinstance(err, sqlite3.DatabaseError) and getattr(err, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
            return StorePermanentError(text)
        return StoreUnavailable(text)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _where(self, flt: Filter, alias: str = "a") -> tuple[str, list]:
        clauses: list[str] = []
        params: list = []
        if flt.start is not None:
            clauses.append(f"{alias}.published_ms >= ?")
            params.append(epoch_ms(flt.start))
        if flt.end is not None:
            clauses.append(f"{alias}.published_ms < ?")
            params.append(epoch_ms(flt.end))
        if flt.source:
            clauses.append(f"{alias}.source = ?")
            params.append(flt.source)
        if flt.ticker and flt.label:  # the company's own verdict, the story's where it has none
            clauses.append(f"EXISTS (SELECT 1 FROM article_tickers t WHERE t.id = {alias}.id AND t.value = ? AND COALESCE(t.label, {alias}.label) = ?)")
            params += [flt.ticker, flt.label]
        elif flt.label:
            clauses.append(f"{alias}.label = ?")
            params.append(flt.label)
        elif flt.ticker:
            clauses.append(f"{alias}.id IN (SELECT id FROM article_tickers WHERE value = ?)")
            params.append(flt.ticker)
        if flt.topic:
            clauses.append(f"{alias}.id IN (SELECT id FROM article_topics WHERE value = ?)")
            params.append(flt.topic)
        return (" AND ".join(clauses) or "1=1"), params

    @staticmethod
    def _verdict(flt: Filter) -> tuple[str, str, str, list]:
        """``(join, label, score, params)``: which verdict a query counts. With a ticker filter,
        that company's entity verdict (the story's where the record has none); else the story's."""
        if not flt.ticker:
            return "", "a.label", "a.score", []
        return "JOIN article_tickers tv ON tv.id = a.id AND tv.value = ?", "COALESCE(tv.label, a.label)", "COALESCE(tv.score, a.score)", [flt.ticker]

    # --- writes --------------------------------------------------------------------
    def upsert_articles(self, articles: Sequence[ScoredArticle]) -> WriteResult:
        result = WriteResult()
        if not articles:
            return result
        with self._write_lock:
            conn = self._conn()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as err:
                raise self._infrastructure(err, "starting a write") from err
            try:
                for art in articles:
                    try:
                        self._upsert_one(conn, art)
                    except (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.DataError, ValueError, TypeError) as err:
                        result.failed[art.id] = f"{type(err).__name__}: {err}"  # this article's own fault
                    else:
                        result.written.append(art.id)
                conn.execute("COMMIT")
            except sqlite3.Error as err:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise self._infrastructure(err, f"writing {len(articles)} articles") from err
        return result

    def _upsert_one(self, conn: sqlite3.Connection, art: ScoredArticle) -> None:
        art = stored_form(art)
        conn.execute("SAVEPOINT one")
        try:
            # The FTS row shares the article's rowid: deleting by rowid is a key lookup, where
            # deleting by the UNINDEXED id column scanned the whole FTS table (quadratic bulk loads).
            old = conn.execute("SELECT rowid FROM articles WHERE id = ?", (art.id,)).fetchone()
            if old is not None:
                conn.execute("DELETE FROM articles_fts WHERE rowid = ?", old)
            cur = conn.execute(
                "INSERT OR REPLACE INTO articles (id, published_ms, source, label, score, model_version, processed_ms, doc) VALUES (?,?,?,?,?,?,?,?)",
                (art.id, epoch_ms(art.published_at), art.source, art.label.value, art.score, art.model_version, epoch_ms(art.processed_at), art.model_dump_json()),
            )
            verdicts = {v.ticker: v for v in art.entities}
            conn.execute("DELETE FROM article_tickers WHERE id = ?", (art.id,))
            conn.executemany(
                "INSERT OR IGNORE INTO article_tickers (id, value, label, score) VALUES (?, ?, ?, ?)",
                [(art.id, t, *((verdicts[t].label.value, verdicts[t].score) if t in verdicts else (None, None))) for t in art.tickers],
            )
            conn.execute("DELETE FROM article_topics WHERE id = ?", (art.id,))
            conn.executemany("INSERT OR IGNORE INTO article_topics (id, value) VALUES (?, ?)", [(art.id, v) for v in art.topics])
            conn.execute(
                "INSERT INTO articles_fts (rowid, id, title, body, summary) VALUES (?,?,?,?,?)",
                (cur.lastrowid, art.id, art.title, art.body, art.summary),
            )
        except Exception:
            conn.execute("ROLLBACK TO one")
            conn.execute("RELEASE one")
            raise
        conn.execute("RELEASE one")

    def upsert_alerts(self, alerts: Sequence[Alert]) -> None:
        with self._write_lock:
            conn = self._conn()
            try:
                # json_patch merges like Elasticsearch's partial update; an unacknowledged alert
                # carries no "acknowledged" field, so it never clears an analyst's ack
                conn.executemany(
                    """INSERT INTO alerts (id, scope, status, started_ms, doc) VALUES (?,?,?,?,?)
                       ON CONFLICT(id) DO UPDATE SET scope = excluded.scope, status = excluded.status,
                           started_ms = excluded.started_ms, doc = json_patch(alerts.doc, excluded.doc)""",
                    [(a.id, a.scope, a.status.value, epoch_ms(a.started_at), json.dumps(alert_update(a))) for a in alerts],
                )
            except sqlite3.Error as err:
                raise self._infrastructure(err, f"writing {len(alerts)} alerts") from err

    def add_feedback(self, feedback: Feedback) -> None:
        with self._write_lock:
            try:
                self._conn().execute(
                    "INSERT OR REPLACE INTO feedback (article_id, created_ms, doc) VALUES (?,?,?)",
                    (feedback.article_id, epoch_ms(feedback.created_at), feedback.model_dump_json()),
                )
            except sqlite3.Error as err:  # locked past busy_timeout_s, read-only, full: the caller says so and keeps the form
                raise self._infrastructure(err, f"saving the correction of article {feedback.article_id}") from err

    def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        with self._write_lock:
            conn = self._conn()
            try:
                conn.executemany(
                    "INSERT INTO dead_letters (received_ms, origin, reason, payload) VALUES (?,?,?,?)",
                    [(epoch_ms(d.received_at), d.origin, d.reason, d.payload) for d in letters],
                )
            except sqlite3.Error as err:
                raise self._infrastructure(err, f"writing {len(letters)} dead letters") from err

    # --- reads ---------------------------------------------------------------------
    def get_article(self, article_id: str) -> ScoredArticle | None:
        row = self._conn().execute("SELECT doc FROM articles WHERE id = ?", (article_id,)).fetchone()
        return ScoredArticle.model_validate_json(row[0]) if row else None

    def stored_ids(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        unique = list(dict.fromkeys(ids))
        for lo in range(0, len(unique), _IDS_PER_QUERY):
            chunk = unique[lo : lo + _IDS_PER_QUERY]
            rows = self._conn().execute(f"SELECT id FROM articles WHERE id IN ({','.join('?' * len(chunk))})", chunk).fetchall()
            found.update(r[0] for r in rows)
        return found

    def timeseries(self, flt: Filter, bucket: timedelta) -> list[Bucket]:
        size = int(bucket.total_seconds() * 1000)
        if size <= 0:
            raise ValueError("bucket must be positive")
        where, params = self._where(flt)
        join, label, score, join_params = self._verdict(flt)
        rows = self._conn().execute(
            f"""SELECT (a.published_ms / ?) * ? AS b, COUNT(*),
                       SUM({label} = 'negative'), SUM({label} = 'neutral'), SUM({label} = 'positive'), AVG({score})
                FROM articles a {join} WHERE {where} GROUP BY b ORDER BY b""",
            [size, size, *join_params, *params],
        ).fetchall()
        return [Bucket(start=from_epoch_ms(b), count=n, negative=neg, neutral=neu, positive=pos, mean_score=mean) for b, n, neg, neu, pos, mean in rows]

    def top_negative(self, flt: Filter, limit: int = 10) -> list[ScoredArticle]:
        where, params = self._where(flt)
        join, _, score, join_params = self._verdict(flt)
        rows = self._conn().execute(
            f"SELECT a.doc FROM articles a {join} WHERE {where} ORDER BY {score} ASC, a.published_ms DESC, a.id ASC LIMIT ?",
            [*join_params, *params, limit],
        ).fetchall()
        return [ScoredArticle.model_validate_json(r[0]) for r in rows]

    def search(self, text: str, flt: Filter, limit: int = 20) -> list[SearchHit]:
        query = fts_query(text)
        if not query:
            return []
        where, params = self._where(flt)
        rows = self._conn().execute(
            f"""SELECT a.doc, -bm25(articles_fts, 0.0, 3.0, 1.0, 1.0) AS rel,
                       snippet(articles_fts, 1, '**', '**', ' … ', 16), snippet(articles_fts, 2, '**', '**', ' … ', 16)
                FROM articles_fts JOIN articles a ON a.id = articles_fts.id
                WHERE articles_fts MATCH ? AND {where}
                ORDER BY rel DESC, a.published_ms DESC, a.id ASC LIMIT ?""",
            [query, *params, limit],
        ).fetchall()
        hits = []
        for doc, rel, title_snip, body_snip in rows:
            highlights = [s for s in (title_snip, body_snip) if s and "**" in s]
            hits.append(SearchHit(article=ScoredArticle.model_validate_json(doc), relevance=float(rel), highlights=highlights))
        return hits

    def facets(
        self,
        field: FacetField,
        flt: Filter,
        limit: int = 10,
        by: Literal["volume", "negativity"] = "volume",
        min_count: int = 1,
    ) -> list[Facet]:
        where, params = self._where(flt)
        if field == "source":
            source = f"SELECT a.source AS value, a.label, a.score FROM articles a WHERE {where}"
        elif field == "tickers":  # each company's own verdict, the story's where it has none
            source = f"SELECT t.value AS value, COALESCE(t.label, a.label) AS label, COALESCE(t.score, a.score) AS score FROM article_tickers t JOIN articles a ON a.id = t.id WHERE {where}"
        elif field == "topics":
            source = f"SELECT t.value AS value, a.label, a.score FROM article_topics t JOIN articles a ON a.id = t.id WHERE {where}"
        else:
            raise ValueError(f"unknown facet field {field!r}")
        order = "n DESC, value ASC" if by == "volume" else "CAST(neg AS REAL) / n DESC, n DESC, value ASC"
        rows = self._conn().execute(
            f"""SELECT value, COUNT(*) AS n, SUM(label = 'negative') AS neg, AVG(score) FROM ({source})
                GROUP BY value HAVING n >= ? ORDER BY {order} LIMIT ?""",
            [*params, min_count, limit],
        ).fetchall()
        return [Facet(value=v, count=n, negative=neg, mean_score=m) for v, n, neg, m in rows]

    def iter_articles(self, flt: Filter, batch_size: int = 500) -> Iterator[list[ScoredArticle]]:
        where, params = self._where(flt)
        last_ms, last_id = -(2**62), ""
        while True:
            rows = self._conn().execute(
                f"""SELECT a.published_ms, a.id, a.doc FROM articles a
                    WHERE {where} AND (a.published_ms > ? OR (a.published_ms = ? AND a.id > ?))
                    ORDER BY a.published_ms, a.id LIMIT ?""",
                [*params, last_ms, last_ms, last_id, batch_size],
            ).fetchall()
            if not rows:
                return
            last_ms, last_id = rows[-1][0], rows[-1][1]
            yield [ScoredArticle.model_validate_json(r[2]) for r in rows]

    def latest_published_at(self) -> datetime | None:
        row = self._conn().execute("SELECT MAX(published_ms) FROM articles").fetchone()
        return from_epoch_ms(row[0]) if row and row[0] is not None else None

    def list_alerts(self, status: str | None = None, limit: int = 200) -> list[Alert]:
        sql, params = "SELECT doc FROM alerts", []
        if status:
            sql += " WHERE status = ?"
            params.append(status)
        sql += " ORDER BY started_ms DESC, id ASC LIMIT ?"
        return [Alert.model_validate_json(r[0]) for r in self._conn().execute(sql, [*params, limit]).fetchall()]

    def get_alert(self, alert_id: str) -> Alert | None:
        row = self._conn().execute("SELECT doc FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return Alert.model_validate_json(row[0]) if row else None

    def list_feedback(self) -> list[Feedback]:
        rows = self._conn().execute("SELECT doc FROM feedback ORDER BY created_ms, article_id").fetchall()
        return [Feedback.model_validate_json(r[0]) for r in rows]

    def list_dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        rows = self._conn().execute(
            "SELECT reason, payload, origin, received_ms FROM dead_letters ORDER BY seq DESC LIMIT ?", (limit,)
        ).fetchall()
        return [DeadLetter(reason=r, payload=bytes(p), origin=o, received_at=from_epoch_ms(ms)) for r, p, o, ms in rows]

    def stats(self) -> dict:
        conn = self._conn()
        n, first, last = conn.execute("SELECT COUNT(*), MIN(published_ms), MAX(published_ms) FROM articles").fetchone()
        by_label = {"negative": 0, "neutral": 0, "positive": 0}
        by_label.update(dict(conn.execute("SELECT label, COUNT(*) FROM articles GROUP BY label").fetchall()))
        versions = dict(conn.execute("SELECT model_version, COUNT(*) FROM articles GROUP BY model_version ORDER BY model_version").fetchall())
        alerts_by_status = dict(conn.execute("SELECT status, COUNT(*) FROM alerts GROUP BY status ORDER BY status").fetchall())
        return {
            "backend": self.backend,
            "articles": n,
            "unique_ids": conn.execute("SELECT COUNT(DISTINCT id) FROM articles").fetchone()[0],
            "by_label": by_label,
            "alerts": sum(alerts_by_status.values()),
            "alerts_by_status": alerts_by_status,
            "feedback": conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0],
            "dead_letters": conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0],
            "first_published_at": from_epoch_ms(first).isoformat() if first is not None else None,
            "last_published_at": from_epoch_ms(last).isoformat() if last is not None else None,
            "model_versions": versions,
        }

