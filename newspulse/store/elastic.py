"""The scaled store: Elasticsearch 8 behind the same :class:`~newspulse.store.base.Store`
interface as the embedded SQLite store.

Index design (see docs/storage.md):

- ``{prefix}-articles-YYYY.MM``: one index per month of ``published_at``, created on demand from
  the index template ``{prefix}-articles`` (explicit, strict mappings). Every article is routed
  to the index of its own month, so the same id always lands in the same index and an upsert
  stays idempotent. Every monthly index carries the alias ``{prefix}-articles`` (for operators'
  tools); the store itself reads ``{prefix}-articles-*``. Retention drops whole months
  (:meth:`ElasticStore.drop_months_before`).
- ``{prefix}-alerts``, ``{prefix}-feedback`` (one document per article: the latest wins) and
  ``{prefix}-dead-letters``.

Every call makes one attempt, each request bounded by ``NEWSPULSE_ES_REQUEST_TIMEOUT_S``, and
never retries an outage itself: connection errors, timeouts, 429 and 5xx raise
:class:`~newspulse.store.base.StoreUnavailable`, and the caller's policy decides whether to pause
and retry (the batch driver, the alerter) or to give up (a command; :mod:`newspulse.retrying`).
A bulk write that the cluster took only in part (429 for some documents) raises it with
``done``, what was stored, so the driver re-sends only the rest. A rejected credential
(401/403) or a mapping that refuses our own fields raises
:class:`~newspulse.store.base.StorePermanentError` (retrying cannot help). Documents that the
cluster rejects for their own content are reported in ``WriteResult.failed`` with
Elasticsearch's reason at once and never hold up the rest of the batch.

Writes are not refreshed one by one (that would make every bulk request pay for a Lucene
refresh); instead a read from the same store object refreshes the indices it has written since
its last read, so a process always reads its own writes, and other processes see new documents
within the index refresh interval (1 s by default).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import threading
from collections import OrderedDict
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, TypeVar

from newspulse.redact import redact
from newspulse.schema import Alert, Feedback, ScoredArticle, epoch_ms, from_epoch_ms, to_utc
from newspulse.settings import Settings
from newspulse.store.base import (
    Bucket,
    DeadLetter,
    Facet,
    FacetField,
    Filter,
    SearchHit,
    StoreError,
    StorePermanentError,
    StoreUnavailable,
    WriteResult,
    alert_update,
    search_terms,
    stored_form,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Articles per bulk request: ~0.5–2 MB of JSON for typical news, well under the 100 MB limit.
BULK_CHUNK = 500
#: Ids per ``stored_ids`` search (well under the default 10,000-hit result window).
_IDS_PER_QUERY = 1000
#: Upper bound of distinct values a negativity facet ranks (terms aggregation size).
MAX_FACET_VALUES = 10_000
#: How long a point in time stays open between two pages of a deep read (renewed by each page).
PIT_KEEP_ALIVE = "2m"
#: Distinct ids that stats() counts exactly (the cardinality aggregation's maximum); above it
#: ``unique_ids`` is a HyperLogLog++ estimate.
EXACT_UNIQUE_IDS = 40_000
#: How many recently written ids (and their monthly index) a store remembers, ~10 MB.
RECENT_IDS = 100_000
_RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
#: Refusals that no retry can fix: the credential (401/403), or an index mapping that does not
#: take the fields every article has (the store's setup is wrong, not the record).
_DENIED_STATUS = frozenset({401, 403})
_BAD_MAPPING_ERRORS = ("strict_dynamic_mapping_exception",)

_TEXT = {"type": "text", "analyzer": "english"}
_KEYWORD = {"type": "keyword"}
_DATE = {"type": "date"}

_PROBABILITIES = {"properties": {"negative": {"type": "float"}, "neutral": {"type": "float"}, "positive": {"type": "float"}}}
#: Fields added since schema version 1 (entities, explanation, decided_by), also put into
#: monthly indices created before them.
ENTITY_MAPPINGS: dict[str, Any] = {
    # nested, not a plain object: "bad for X, good for Y" must not match a query for "bad for Y"
    # (a plain object array flattens tickers and labels into two unrelated lists)
    "entities": {
        "type": "nested",
        "properties": {
            "ticker": _KEYWORD,
            "label": _KEYWORD,
            "score": {"type": "double"},
            "basis": _KEYWORD,
            "mentions": {"type": "integer"},
            "probabilities": _PROBABILITIES,
            "evidence": {"type": "object", "enabled": False},  # shown, never queried
        },
    },
    "explanation": {"type": "object", "enabled": False},
    # the serving tier that decided the story verdict (the cascade, models/sentiment/predict.py)
    "decided_by": _KEYWORD,
}

ARTICLE_MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "schema_version": {"type": "short"},
        "id": _KEYWORD,
        "published_at": _DATE,
        "processed_at": _DATE,
        "source": _KEYWORD,
        "title": {**_TEXT, "fields": {"keyword": {"type": "keyword", "ignore_above": 1024}}},
        "body": _TEXT,
        "summary": _TEXT,
        "url": {"type": "keyword", "index": False, "doc_values": False},
        "tickers": _KEYWORD,
        "topics": _KEYWORD,
        "language": _KEYWORD,
        "novelty": {"type": "float"},
        "label": _KEYWORD,
        "model_version": _KEYWORD,
        "probabilities": _PROBABILITIES,
        # double, not float: sorting (top_negative's ties) and averages must match SQLite's REAL
        # exactly; float32 would merge scores that differ below 1e-7 and shift means.
        "score": {"type": "double"},
        **ENTITY_MAPPINGS,
    },
}

ALERT_MAPPINGS: dict[str, Any] = {
    "dynamic": False,  # the whole alert stays in _source; only what queries use is indexed
    "properties": {
        "id": _KEYWORD,
        "rule": _KEYWORD,
        "scope": _KEYWORD,
        "status": _KEYWORD,
        "severity": _KEYWORD,
        "started_at": _DATE,
        "updated_at": _DATE,
        "resolved_at": _DATE,
        "acknowledged": {"type": "boolean"},
    },
}

FEEDBACK_MAPPINGS: dict[str, Any] = {
    "dynamic": False,
    "properties": {"article_id": _KEYWORD, "label": _KEYWORD, "analyst": _KEYWORD, "created_at": _DATE},
}

DEAD_LETTER_MAPPINGS: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        "reason": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 1024}}},
        "origin": _KEYWORD,
        "received_at": _DATE,
        "payload": {"type": "binary"},
        "seq": {"type": "long"},
    },
}


class ElasticStore:
    """:class:`~newspulse.store.base.Store` over an Elasticsearch cluster of the Python client's
    major version (8.x: see docs/storage.md).

    Connecting is lazy: the constructor does no I/O, so a processor can start while the cluster
    is still down; the first call sets up templates and indices (idempotently).
    """

    backend = "elasticsearch"

    def __init__(self, settings: Settings, *, bulk_chunk: int = BULK_CHUNK) -> None:
        from elasticsearch import Elasticsearch

        if not settings.store_url.startswith(("http://", "https://")):
            raise ValueError("ElasticStore needs an http(s):// store URL")
        self.url = redact(settings.store_url)  # userinfo and credential-like query values masked
        self.prefix = settings.es_index_prefix
        self.replicas = {} if settings.es_replicas is None else {"number_of_replicas": settings.es_replicas}
        self.bulk_chunk = bulk_chunk
        self.articles_alias = f"{self.prefix}-articles"
        # Reads name the monthly indices by pattern: same result as the alias on Elasticsearch,
        # and noida-db (the test peer) resolves a multi-index alias to a single index.
        self.articles_read = f"{self.articles_alias}-*"
        self.alerts_index = f"{self.prefix}-alerts"
        self.feedback_index = f"{self.prefix}-feedback"
        self.dead_letters_index = f"{self.prefix}-dead-letters"

        kwargs: dict[str, Any] = {
            "request_timeout": settings.es_request_timeout_s,
            "max_retries": 0,  # one attempt: retrying an outage is the caller's (newspulse.retrying)
            "verify_certs": settings.es_verify_certs,
        }
        if settings.es_api_key is not None:
            kwargs["api_key"] = settings.es_api_key.get_secret_value()
        elif settings.es_username:
            password = settings.es_password.get_secret_value() if settings.es_password else ""
            kwargs["basic_auth"] = (settings.es_username, password)
        if settings.es_ca_certs is not None:
            kwargs["ca_certs"] = str(settings.es_ca_certs)
        self.client = Elasticsearch(settings.store_url, **kwargs)
        self._ready = False
        self._setup_lock = threading.Lock()
        self._dirty: set[str] = set()
        self._known_indices: set[str] = set()
        self._recent: OrderedDict[str, str] = OrderedDict()  # id -> index, this process's latest writes
        self._recent_lock = threading.Lock()
        self._dirty_lock = threading.Lock()
        self._seq_lock = threading.Lock()
        self._last_seq = 0

    def __repr__(self) -> str:
        return f"ElasticStore({self.url!r}, prefix={self.prefix!r})"

    # --- connection and setup -----------------------------------------------------------
    def _ensure_ready(self) -> None:
        if self._ready:
            return
        with self._setup_lock:
            if self._ready:
                return
            self._check_version()
            self._install()
            self._ready = True
            log.info("connected to Elasticsearch at %s (prefix %s)", self.url, self.prefix)

    def _check_version(self) -> None:
        """Refuse a server whose major version differs from the client's: each elasticsearch-py
        major speaks its own server major (compatibility headers, removed APIs)."""
        from elasticsearch import __versionstr__ as client_version

        number = str(self.client.info()["version"]["number"])
        if number.split(".")[0] != client_version.split(".")[0]:
            raise StorePermanentError(
                f"Elasticsearch {number} at {self.url} does not match the Python client elasticsearch {client_version}: "
                f"NewsPulse needs Elasticsearch {client_version.split('.')[0]}.x (docs/storage.md)"
            )
        self.server_version = number

    def _install(self) -> None:
        """Create the article index template and the side indices if they are missing."""
        from elasticsearch import BadRequestError

        self.client.indices.put_index_template(
            name=self.articles_alias,
            index_patterns=[f"{self.articles_alias}-*"],
            priority=200,
            template={
                "settings": {"number_of_shards": 1, "refresh_interval": "1s", **self.replicas},
                "mappings": ARTICLE_MAPPINGS,
                "aliases": {self.articles_alias: {}},
            },
            meta={"managed_by": "newspulse", "description": "scored news articles, one index per month"},
        )
        self._add_entity_mappings()
        for index, mappings in (
            (self.alerts_index, ALERT_MAPPINGS),
            (self.feedback_index, FEEDBACK_MAPPINGS),
            (self.dead_letters_index, DEAD_LETTER_MAPPINGS),
        ):
            if self.client.indices.exists(index=index):
                continue
            try:
                self.client.indices.create(index=index, mappings=mappings, settings={"number_of_shards": 1, **self.replicas})
            except BadRequestError as err:
                if "resource_already_exists" not in str(err):  # another process won the race
                    raise

    def _add_entity_mappings(self) -> None:
        """Monthly indices created before schema version 2 get its fields (adding fields to a
        mapping is allowed in place), so their strict mappings take new records and old
        documents stay where they are, readable as they were."""
        from elasticsearch import NotFoundError

        pattern = re.compile(re.escape(self.articles_alias) + r"-\d{4}\.\d{2}")
        for row in self.client.cat.indices(format="json").body:
            if pattern.fullmatch(row["index"]):
                with contextlib.suppress(NotFoundError):  # dropped meanwhile by retention
                    self.client.indices.put_mapping(index=row["index"], properties=ENTITY_MAPPINGS)

    def article_index(self, published_at: datetime) -> str:
        """The monthly index an article lives in: fixed by its published_at, never by write time."""
        ts = to_utc(published_at)
        return f"{self.articles_alias}-{ts.year:04d}.{ts.month:02d}"

    def _attempt(self, what: str, call: Callable[[], T]) -> T:
        """Run ``call`` once (setting the store up first if no call has yet) and type its
        failure: :class:`StoreUnavailable` when the cluster is unreachable, slow or overloaded,
        :class:`StorePermanentError` when it refuses the credential. Retrying is the caller's."""
        try:
            self._ensure_ready()
            return call()
        except Exception as err:  # noqa: BLE001 - classified right below
            reason = _transient_reason(err)
            if reason is None:
                self._raise_if_denied(err, what)
                raise
            raise StoreUnavailable(f"Elasticsearch at {self.url} unavailable for {what}: {reason}") from err

    def _raise_if_denied(self, err: BaseException, what: str) -> None:
        """A refused credential is permanent: say so plainly instead of a raw client error."""
        from elasticsearch import ApiError

        if isinstance(err, ApiError) and err.meta.status in _DENIED_STATUS:
            raise StorePermanentError(
                f"Elasticsearch at {self.url} refused {what} with HTTP {err.meta.status} ({err.error}): "
                "the API key or user is invalid, expired or lacks the privilege"
            ) from err

    def _read(self, what: str, call: Callable[[], T]) -> T:
        def refreshed() -> T:
            self._refresh_dirty()
            return call()

        return self._attempt(what, refreshed)

    def _mark_dirty(self, *indices: str) -> None:
        with self._dirty_lock:
            self._dirty.update(indices)

    def _refresh_dirty(self) -> None:
        """Make this process's own writes visible before it reads (read-your-writes)."""
        from elasticsearch import NotFoundError

        with self._dirty_lock:
            pending = sorted(self._dirty)
        for index in pending:
            try:
                self.client.indices.refresh(index=index)
            except NotFoundError:
                pass
            with self._dirty_lock:
                self._dirty.discard(index)

    def close(self) -> None:
        self.client.close()

    # --- writes ------------------------------------------------------------------------
    def upsert_articles(self, articles: Sequence[ScoredArticle]) -> WriteResult:
        """Bulk index by id into each article's monthly index, one request per
        :data:`BULK_CHUNK` articles, each sent once (the module docstring says what fails how).

        Stops at the first chunk the cluster could not take whole, with
        :class:`StoreUnavailable` whose ``done`` lists what the earlier chunks and that chunk's
        other documents stored: the batch driver pauses and then re-sends only the rest."""
        result = WriteResult()
        done: dict[str, None] = {}

        def so_far() -> WriteResult:
            return WriteResult(written=[a.id for a in articles if a.id in done and a.id not in result.failed], failed=dict(result.failed))

        for start in range(0, len(articles), self.bulk_chunk):
            chunk = articles[start : start + self.bulk_chunk]
            try:
                ok, failed, busy = self._write_chunk(chunk)
            except StoreUnavailable as err:
                if not done and not result.failed:
                    raise
                raise StoreUnavailable(str(err), done=so_far()) from err
            done.update(dict.fromkeys(ok))
            result.failed.update(failed)
            if busy:
                reason = next(iter(busy.values()))
                stored = so_far()
                raise StoreUnavailable(
                    f"Elasticsearch at {self.url} did not take {len(busy)} of {len(articles)} article(s) "
                    f"({len(stored.written)} stored): {reason}",
                    done=stored,
                )
        result.written = so_far().written
        if result.failed:
            log.warning("%d of %d articles not stored in Elasticsearch", len(result.failed), len(articles))
        return result

    def _write_chunk(self, chunk: Sequence[ScoredArticle]) -> tuple[list[str], dict[str, str], dict[str, str]]:
        """One bulk request: the ids stored, the ids refused for their content (with the
        reason), and the ids the cluster could not take now (429/5xx per document, or their
        relocation's delete failed), with the reason. A request that fails whole raises."""
        pending = {a.id: a for a in chunk}  # the same id twice in one chunk: the last one wins

        def send() -> tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
            return self._current_locations(pending), self._bulk_index(pending.values())

        moved, items = self._attempt("article write", send)
        written: list[str] = []
        failed: dict[str, str] = {}
        busy: dict[str, str] = {}
        relocated: list[tuple[str, str]] = []
        for art_id, status, error in items:
            if 200 <= status < 300:
                written.append(art_id)
                home = self.article_index(pending[art_id].published_at)
                relocated.extend((old, art_id) for old in moved.get(art_id, ()) if old != home)
                self._remember(art_id, home)
            elif status in _RETRYABLE_STATUS or status >= 500:
                busy[art_id] = f"HTTP {status}: {error}"
            elif status in _DENIED_STATUS or error.startswith(_BAD_MAPPING_ERRORS):
                raise StorePermanentError(f"Elasticsearch at {self.url} refused article {art_id} ({status}): {error}")
            else:
                failed[art_id] = f"rejected by Elasticsearch ({status}): {error}"
                log.warning("article %s rejected by Elasticsearch: %s", art_id, error)
        if relocated:
            try:
                self._delete_relocated(relocated)
            except StoreUnavailable as err:  # their old copies stay until the re-send deletes them
                moving = {art_id for _, art_id in relocated}
                written = [art_id for art_id in written if art_id not in moving]
                busy.update(dict.fromkeys(moving, str(err)))
        return written, failed, busy

    def _current_locations(self, pending: dict[str, ScoredArticle]) -> dict[str, set[str]]:
        """Where already stored ids live now: an article whose published_at was corrected moves
        to another monthly index, and its old copy must go, or it would be counted twice.

        A search sees what the cluster has refreshed (within ~1 s); the ids this process wrote
        more recently are covered by its own memory of where it put them, so no forced refresh
        slows the write path."""
        from elasticsearch import NotFoundError

        found: dict[str, set[str]] = {}
        try:
            resp = self.client.search(
                index=self.articles_read,
                query={"ids": {"values": list(pending)}},
                size=len(pending) * 2,
                source=False,
                ignore_unavailable=True,
                allow_no_indices=True,
            )
        except NotFoundError:
            resp = {"hits": {"hits": []}}
        for hit in resp["hits"]["hits"]:
            found.setdefault(hit["_id"], set()).add(hit["_index"])
        with self._recent_lock:
            for art_id in pending:
                if art_id in self._recent:
                    found.setdefault(art_id, set()).add(self._recent[art_id])
        return found

    def _remember(self, art_id: str, index: str) -> None:
        with self._recent_lock:
            self._recent[art_id] = index
            self._recent.move_to_end(art_id)
            while len(self._recent) > RECENT_IDS:
                self._recent.popitem(last=False)

    def _ensure_month_indices(self, names: set[str]) -> None:
        """Create missing monthly indices explicitly (with the read alias) rather than relying on
        auto-creation, which clusters often disable and which races when one bulk request
        creates several indices."""
        from elasticsearch import BadRequestError

        for name in sorted(names - self._known_indices):
            if not self.client.indices.exists(index=name):
                try:
                    self.client.indices.create(index=name, aliases={self.articles_alias: {}})
                except BadRequestError as err:
                    if "resource_already_exists" not in str(err):
                        raise
            self._known_indices.add(name)

    def _bulk_index(self, articles: Any) -> list[tuple[str, int, str]]:
        articles = list(articles)
        indices = {self.article_index(a.published_at) for a in articles}
        self._ensure_month_indices(indices)
        self._mark_dirty(*indices)
        operations: list[dict[str, Any]] = []
        for art in articles:
            operations.append({"index": {"_index": self.article_index(art.published_at), "_id": art.id}})
            operations.append(stored_form(art).model_dump(mode="json"))
        resp = self.client.bulk(operations=operations)
        out = []
        for item in resp["items"]:
            info = next(iter(item.values()))
            error = info.get("error")
            if isinstance(error, dict):
                error = f"{error.get('type')}: {error.get('reason')}"
            out.append((info["_id"], int(info["status"]), str(error or "")))
        return out

    def _delete_relocated(self, relocated: list[tuple[str, str]]) -> None:
        ops = [{"delete": {"_index": index, "_id": art_id}} for index, art_id in relocated]
        self._mark_dirty(*(index for index, _ in relocated))
        self._attempt("delete of relocated articles", lambda: self.client.bulk(operations=ops))

    def _index_docs(self, index: str, docs: list[tuple[str | None, dict[str, Any]]], what: str) -> None:
        """Bulk-write side documents (alerts, feedback, dead letters); raise on any failure."""
        if not docs:
            return
        ops: list[dict[str, Any]] = []
        for doc_id, doc in docs:
            ops.append({"index": {"_index": index, **({"_id": doc_id} if doc_id else {})}})
            ops.append(doc)
        self._bulk_side(index, ops, what)

    def _bulk_side(self, index: str, ops: list[dict[str, Any]], what: str) -> None:
        resp = self._attempt(what, lambda: self.client.bulk(operations=ops))
        self._mark_dirty(index)
        if resp.get("errors"):
            errors = [next(iter(i.values())).get("error") for i in resp["items"]]
            raise StoreError(f"Elasticsearch refused {what}: {[e for e in errors if e][:3]}")

    def upsert_alerts(self, alerts: Sequence[Alert]) -> None:
        """Partial updates (``doc_as_upsert``): see :meth:`Store.upsert_alerts` for what merges."""
        if not alerts:
            return
        ops: list[dict[str, Any]] = []
        for alert in alerts:
            ops.append({"update": {"_index": self.alerts_index, "_id": alert.id}})
            ops.append({"doc": alert_update(alert), "doc_as_upsert": True})
        self._bulk_side(self.alerts_index, ops, "alerts")

    def add_feedback(self, feedback: Feedback) -> None:
        self._index_docs(self.feedback_index, [(feedback.article_id, feedback.model_dump(mode="json"))], "feedback")

    def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        docs: list[tuple[str | None, dict[str, Any]]] = []
        for letter in letters:
            docs.append(
                (
                    None,
                    {
                        "reason": letter.reason,
                        "origin": letter.origin,
                        "received_at": epoch_ms(letter.received_at),
                        "payload": base64.b64encode(letter.payload).decode("ascii"),
                        "seq": self._next_seq(),
                    },
                )
            )
        self._index_docs(self.dead_letters_index, docs, "dead letters")

    def _next_seq(self) -> int:
        """Strictly increasing arrival order (ns clock), so newest-first listing is stable."""
        with self._seq_lock:
            self._last_seq = max(self._last_seq + 1, time.time_ns())
            return self._last_seq

    def drop_months_before(self, cutoff: datetime) -> list[str]:
        """Retention: delete the monthly article indices that end on or before ``cutoff``."""
        cutoff = to_utc(cutoff)

        def run() -> list[str]:
            names = [row["index"] for row in self.client.cat.indices(format="json").body]
            dropped = []
            for name in sorted(names):
                match = re.fullmatch(re.escape(self.articles_alias) + r"-(\d{4})\.(\d{2})", name)
                if not match:
                    continue
                year, month = int(match[1]), int(match[2])
                month_end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=timezone.utc)
                if month_end <= cutoff:
                    self.client.indices.delete(index=name)
                    self._known_indices.discard(name)
                    dropped.append(name)
            return dropped

        return self._attempt("retention", run)

    # --- reads -------------------------------------------------------------------------
    def _search(self, index: str, **body: Any) -> dict[str, Any]:
        """A search that treats a not-yet-created index as empty."""
        return self.client.search(index=index, ignore_unavailable=True, allow_no_indices=True, **body).body

    @staticmethod
    def _filter(flt: Filter) -> dict[str, Any]:
        clauses: list[dict[str, Any]] = []
        if flt.start is not None or flt.end is not None:
            rng: dict[str, Any] = {"format": "epoch_millis"}
            if flt.start is not None:
                rng["gte"] = epoch_ms(flt.start)
            if flt.end is not None:
                rng["lt"] = epoch_ms(flt.end)
            clauses.append({"range": {"published_at": rng}})
        for field, value in (("tickers", flt.ticker), ("topics", flt.topic), ("source", flt.source)):
            if value:
                clauses.append({"term": {field: value}})
        if flt.ticker and flt.label:  # the company's own verdict, the story's where it has none
            own = _entity_of(flt.ticker, {"term": {"entities.label": flt.label}})
            story = {"bool": {"filter": [{"term": {"label": flt.label}}], "must_not": [_entity_of(flt.ticker)]}}
            clauses.append({"bool": {"should": [own, story], "minimum_should_match": 1}})
        elif flt.label:
            clauses.append({"term": {"label": flt.label}})
        return {"bool": {"filter": clauses}}

    def get_article(self, article_id: str) -> ScoredArticle | None:
        resp = self._read("get_article", lambda: self._search(self.articles_read, query={"ids": {"values": [article_id]}}, size=1))
        hits = resp["hits"]["hits"]
        return ScoredArticle.model_validate(hits[0]["_source"]) if hits else None

    def stored_ids(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        unique = list(dict.fromkeys(ids))
        for lo in range(0, len(unique), _IDS_PER_QUERY):
            chunk = unique[lo : lo + _IDS_PER_QUERY]
            # size: an id may briefly have a copy in two monthly indices (see _current_locations)
            query = {"ids": {"values": chunk}}
            resp = self._read("stored_ids", lambda: self._search(self.articles_read, query=query, size=2 * len(chunk), source=False))
            found.update(h["_id"] for h in resp["hits"]["hits"])
        return found

    def timeseries(self, flt: Filter, bucket: timedelta) -> list[Bucket]:
        size = int(bucket.total_seconds() * 1000)
        if size <= 0:
            raise ValueError("bucket must be positive")
        # with a ticker: its entity verdict where the record has one, the story's elsewhere
        verdicts = _verdict_aggs(flt.ticker) if flt.ticker else _LABEL_SUM
        aggs = {
            "series": {
                # fixed intervals are aligned to multiples of the interval since the epoch (UTC)
                "date_histogram": {"field": "published_at", "fixed_interval": f"{size}ms", "min_doc_count": 1},
                "aggs": verdicts,
            }
        }
        resp = self._read("timeseries", lambda: self._search(self.articles_read, query=self._filter(flt), size=0, aggs=aggs))
        out = []
        for b in resp.get("aggregations", {}).get("series", {}).get("buckets", []):
            if not b["doc_count"]:
                continue
            labels, total = _label_counts(b)
            out.append(
                Bucket(
                    start=from_epoch_ms(b["key"]),
                    count=b["doc_count"],
                    negative=labels.get("negative", 0),
                    neutral=labels.get("neutral", 0),
                    positive=labels.get("positive", 0),
                    mean_score=total / b["doc_count"],
                )
            )
        return out

    def top_negative(self, flt: Filter, limit: int = 10) -> list[ScoredArticle]:
        if flt.ticker:
            return self._top_negative_for(flt, limit)
        sort = [{"score": "asc"}, {"published_at": "desc"}, {"id": "asc"}]
        resp = self._read("top_negative", lambda: self._search(self.articles_read, query=self._filter(flt), size=limit, sort=sort))
        return [ScoredArticle.model_validate(h["_source"]) for h in resp["hits"]["hits"]]

    def _top_negative_for(self, flt: Filter, limit: int) -> list[ScoredArticle]:
        """Most negative for one company, by its entity score (the story's where a record has
        none). Ranked here over the matching records' scores alone (``_source`` filtered to
        them), then the winners are fetched whole: a nested sort would do it in the cluster,
        but the test peer ignores nested sorts, and the contract demands the same order from
        both backends. Cost grows with the company's articles in the filter's range."""
        keyed: list[tuple[float, int, str]] = []
        sort = [{"published_at": "asc"}, {"id": "asc"}]
        for hits in self._pages("top_negative", self.articles_read, sort, self._filter(flt), 1000, source=["score", "entities.ticker", "entities.score"]):
            for h in hits:
                src = h["_source"]
                own = [e["score"] for e in src.get("entities") or [] if e.get("ticker") == flt.ticker]
                keyed.append((float(own[0] if own else src["score"]), -int(h["sort"][0]), h["_id"]))
        ids = [art_id for *_, art_id in sorted(keyed)[:limit]]
        if not ids:
            return []
        resp = self._read("top_negative", lambda: self._search(self.articles_read, query={"ids": {"values": ids}}, size=2 * len(ids)))
        found = {h["_id"]: ScoredArticle.model_validate(h["_source"]) for h in resp["hits"]["hits"]}
        return [found[i] for i in ids if i in found]

    def search(self, text: str, flt: Filter, limit: int = 20) -> list[SearchHit]:
        terms = search_terms(text)
        if not terms:
            return []
        query = self._filter(flt)
        # one clause per term: every term must match in title, body or summary (the title
        # weighs 3x, as in SQLite's bm25 weights)
        query["bool"]["must"] = [
            {"multi_match": {"query": term, "fields": ["title^3", "body", "summary"]}} for term in terms
        ]
        highlight = {
            "pre_tags": ["**"],
            "post_tags": ["**"],
            "fields": {"title": {"number_of_fragments": 0}, "body": {"fragment_size": 120, "number_of_fragments": 1}},
        }
        sort = [{"_score": "desc"}, {"published_at": "desc"}, {"id": "asc"}]
        resp = self._read(
            "search",
            lambda: self._search(self.articles_read, query=query, size=limit, sort=sort, highlight=highlight, track_scores=True),
        )
        hits = []
        for h in resp["hits"]["hits"]:
            hl = h.get("highlight", {})
            snippets = [" … ".join(hl[f]) for f in ("title", "body") if hl.get(f)]
            hits.append(
                SearchHit(article=ScoredArticle.model_validate(h["_source"]), relevance=float(h.get("_score") or 0.0), highlights=snippets)
            )
        return hits

    def facets(
        self,
        field: FacetField,
        flt: Filter,
        limit: int = 10,
        by: Literal["volume", "negativity"] = "volume",
        min_count: int = 1,
    ) -> list[Facet]:
        if field not in ("tickers", "topics", "source"):
            raise ValueError(f"unknown facet field {field!r}")
        if field == "tickers":
            facets = self._ticker_facets(flt)
        else:
            facets = self._facets(field, flt, limit if by == "volume" else MAX_FACET_VALUES, min_count)
        facets = [f for f in facets if f.count >= min_count]
        if by == "volume":
            facets.sort(key=lambda f: (-f.count, f.value))
        else:
            facets.sort(key=lambda f: (-f.negative / f.count, -f.count, f.value))
        return facets[:limit]

    def _facets(self, field: str, flt: Filter, size: int, min_count: int) -> list[Facet]:
        """Values of ``field`` with the story verdicts of their articles."""
        terms: dict[str, Any] = {"field": field, "min_doc_count": max(1, min_count), "shard_size": MAX_FACET_VALUES, "size": size}
        if size < MAX_FACET_VALUES:
            terms["order"] = [{"_count": "desc"}, {"_key": "asc"}]
        aggs = {
            "values": {
                "terms": terms,
                "aggs": {"negative": {"filter": {"term": {"label": "negative"}}}, "mean": {"avg": {"field": "score"}}},
            }
        }
        resp = self._read("facets", lambda: self._search(self.articles_read, query=self._filter(flt), size=0, aggs=aggs))
        return [
            Facet(value=b["key"], count=b["doc_count"], negative=b["negative"]["doc_count"], mean_score=float(b["mean"]["value"]))
            for b in resp.get("aggregations", {}).get("values", {}).get("buckets", [])
        ]

    def _ticker_facets(self, flt: Filter) -> list[Facet]:
        """Every ticker with its own verdicts: entity verdicts (one per ticker of a record
        scored with them) plus the story verdicts of records scored before them (no entities)."""
        def by_value(field: str, label: str, score: str) -> dict[str, Any]:
            return {
                "terms": {"field": field, "size": MAX_FACET_VALUES, "shard_size": MAX_FACET_VALUES},
                "aggs": {"negative": {"filter": {"term": {label: "negative"}}}, "sum": {"sum": {"field": score}}},
            }

        aggs = {
            "entity": {"nested": {"path": "entities"}, "aggs": {"values": by_value("entities.ticker", "entities.label", "entities.score")}},
            "story": {"filter": {"bool": {"must_not": [_HAS_ENTITIES]}}, "aggs": {"values": by_value("tickers", "label", "score")}},
        }
        resp = self._read("facets", lambda: self._search(self.articles_read, query=self._filter(flt), size=0, aggs=aggs))
        found = resp.get("aggregations", {})
        merged: dict[str, list[float]] = {}
        for part in ("entity", "story"):
            for b in found.get(part, {}).get("values", {}).get("buckets", []):
                row = merged.setdefault(b["key"], [0, 0, 0.0])
                row[0] += b["doc_count"]
                row[1] += b["negative"]["doc_count"]
                row[2] += float(b["sum"]["value"] or 0.0)
        return [Facet(value=v, count=int(n), negative=int(neg), mean_score=total / n) for v, (n, neg, total) in merged.items() if n]

    def iter_articles(self, flt: Filter, batch_size: int = 500) -> Iterator[list[ScoredArticle]]:
        sort = [{"published_at": "asc"}, {"id": "asc"}]
        for hits in self._pages("iter_articles", self.articles_read, sort, self._filter(flt), batch_size):
            yield [ScoredArticle.model_validate(h["_source"]) for h in hits]

    def _pages(self, what: str, index: str, sort: list[dict[str, Any]], query: dict[str, Any], size: int, source: Any = True) -> Iterator[list[dict[str, Any]]]:
        """Every hit of ``query`` in ``sort`` order, ``size`` at a time: ``search_after`` over a
        point in time. Each page reads the indices as they were when the read began, so
        documents written or moved meanwhile neither shift the pages nor appear twice, and there
        is no 10,000-hit window as with from/size. The point in time is closed at the end, also
        when the caller stops early."""
        from elasticsearch import NotFoundError

        try:
            pit = self._read(what, lambda: self.client.open_point_in_time(index=index, keep_alive=PIT_KEEP_ALIVE)["id"])
        except NotFoundError:  # no index matches yet
            return
        after: list[Any] | None = None
        try:
            while True:
                extra = {"search_after": after} if after is not None else {}
                body = {"query": query, "size": size, "sort": sort, "source": source, "pit": {"id": pit, "keep_alive": PIT_KEEP_ALIVE}, **extra}
                resp = self._read(what, lambda: self.client.search(**body).body)
                pit = resp.get("pit_id", pit)
                hits = resp["hits"]["hits"]
                if hits:
                    yield hits
                if len(hits) < size:
                    return
                after = hits[-1]["sort"]
        finally:
            with contextlib.suppress(Exception):  # it expires after PIT_KEEP_ALIVE anyway
                self.client.close_point_in_time(id=pit)

    def latest_published_at(self) -> datetime | None:
        return self._edge_published("desc")

    def _edge_published(self, order: str) -> datetime | None:
        resp = self._read(
            "latest_published_at",
            lambda: self._search(self.articles_read, size=1, sort=[{"published_at": order}], source=False),
        )
        hits = resp["hits"]["hits"]
        return from_epoch_ms(hits[0]["sort"][0]) if hits else None

    def list_alerts(self, status: str | None = None, limit: int = 200) -> list[Alert]:
        query = {"term": {"status": status}} if status else {"match_all": {}}
        sort = [{"started_at": "desc"}, {"id": "asc"}]
        resp = self._read("list_alerts", lambda: self._search(self.alerts_index, query=query, size=limit, sort=sort))
        return [Alert.model_validate(h["_source"]) for h in resp["hits"]["hits"]]

    def get_alert(self, alert_id: str) -> Alert | None:
        resp = self._read("get_alert", lambda: self._search(self.alerts_index, query={"ids": {"values": [alert_id]}}, size=1))
        hits = resp["hits"]["hits"]
        return Alert.model_validate(hits[0]["_source"]) if hits else None

    def list_feedback(self) -> list[Feedback]:
        sort = [{"created_at": "asc"}, {"article_id": "asc"}]
        pages = self._pages("list_feedback", self.feedback_index, sort, {"match_all": {}}, 1000)
        return [Feedback.model_validate(h["_source"]) for hits in pages for h in hits]

    def list_dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        resp = self._read("list_dead_letters", lambda: self._search(self.dead_letters_index, size=limit, sort=[{"seq": "desc"}]))
        return [
            DeadLetter(
                reason=s["reason"],
                payload=base64.b64decode(s["payload"]),
                origin=s["origin"],
                received_at=from_epoch_ms(s["received_at"]),
            )
            for s in (h["_source"] for h in resp["hits"]["hits"])
        ]

    def _count(self, index: str) -> int:
        """Documents in ``index`` by the count API (no hits, no scoring); 0 before it exists."""
        from elasticsearch import NotFoundError

        try:
            return int(self.client.count(index=index, ignore_unavailable=True, allow_no_indices=True)["count"])
        except NotFoundError:
            return 0

    def stats(self) -> dict:
        def run() -> dict:
            aggs = {
                "labels": {"terms": {"field": "label", "size": 10}},
                "versions": {"terms": {"field": "model_version", "size": 1000}},
                # fewer distinct ids than documents only if an id were stored twice (upserts route
                # by id and month, so it should never happen); exact up to EXACT_UNIQUE_IDS
                "unique_ids": {"cardinality": {"field": "id", "precision_threshold": EXACT_UNIQUE_IDS}},
            }
            arts = self._search(self.articles_read, size=0, track_total_hits=True, aggs=aggs)
            alerts = self._search(self.alerts_index, size=0, aggs={"status": {"terms": {"field": "status", "size": 10}}})
            return {"articles": arts, "alerts": alerts}

        resp = self._read("stats", run)
        arts, alert_resp = resp["articles"], resp["alerts"]
        aggs = arts.get("aggregations", {})
        n = int(arts["hits"]["total"]["value"])
        unique_ids = min(n, int(aggs.get("unique_ids", {}).get("value") or 0))
        by_label = {"negative": 0, "neutral": 0, "positive": 0}
        by_label.update({b["key"]: b["doc_count"] for b in aggs.get("labels", {}).get("buckets", [])})
        versions = {b["key"]: b["doc_count"] for b in sorted(aggs.get("versions", {}).get("buckets", []), key=lambda b: b["key"])}
        alerts_by_status = {
            b["key"]: b["doc_count"]
            for b in sorted(alert_resp.get("aggregations", {}).get("status", {}).get("buckets", []), key=lambda b: b["key"])
        }
        first, last = self._edge_published("asc"), self._edge_published("desc")
        return {
            "backend": self.backend,
            "articles": n,
            "unique_ids": unique_ids,
            "by_label": by_label,
            "alerts": sum(alerts_by_status.values()),
            "alerts_by_status": alerts_by_status,
            "feedback": self._read("stats", lambda: self._count(self.feedback_index)),
            "dead_letters": self._read("stats", lambda: self._count(self.dead_letters_index)),
            "first_published_at": first.isoformat() if first else None,
            "last_published_at": last.isoformat() if last else None,
            "model_versions": versions,
        }


#: Records scored with entity verdicts (schema version 2 onwards).
_HAS_ENTITIES = {"nested": {"path": "entities", "query": {"exists": {"field": "entities.ticker"}}}}
#: Label counts and the score sum of a set of articles' story verdicts.
_LABEL_SUM = {"labels": {"terms": {"field": "label", "size": 3}}, "sum": {"sum": {"field": "score"}}}


def _entity_of(ticker: str, *more: dict[str, Any]) -> dict[str, Any]:
    """Records whose entity verdict for ``ticker`` matches ``more`` (all of them)."""
    return {"nested": {"path": "entities", "query": {"bool": {"filter": [{"term": {"entities.ticker": ticker}}, *more]}}}}


def _verdict_aggs(ticker: str) -> dict[str, Any]:
    """Label counts and score sums of ``ticker``'s verdicts: its entity verdict where a record
    has one (``entity``), the story's where not (``story``); :func:`_label_counts` adds them."""
    return {
        "entity": {
            "nested": {"path": "entities"},
            "aggs": {
                "own": {
                    "filter": {"term": {"entities.ticker": ticker}},
                    "aggs": {"labels": {"terms": {"field": "entities.label", "size": 3}}, "sum": {"sum": {"field": "entities.score"}}},
                }
            },
        },
        "story": {"filter": {"bool": {"must_not": [_entity_of(ticker)]}}, "aggs": _LABEL_SUM},
    }


def _label_counts(bucket: dict[str, Any]) -> tuple[dict[str, int], float]:
    """Label counts and score sum of a bucket aggregated by :func:`_verdict_aggs`, or by
    :data:`_LABEL_SUM` alone (the story verdicts)."""
    labels: dict[str, int] = {}
    total = 0.0
    parts = [bucket.get("story", bucket), bucket.get("entity", {}).get("own", {})]
    for part in parts:
        for lb in part.get("labels", {}).get("buckets", []):
            labels[lb["key"]] = labels.get(lb["key"], 0) + lb["doc_count"]
        total += float((part.get("sum") or {}).get("value") or 0.0)
    return labels, total


def _transient_reason(err: BaseException) -> str | None:
    """Why an error is worth retrying (connection trouble, 429, 5xx), or None if it is not."""
    from elastic_transport import ConnectionError as TransportConnectionError
    from elastic_transport import ConnectionTimeout
    from elasticsearch import ApiError

    if isinstance(err, (TransportConnectionError, ConnectionTimeout)):
        return f"{type(err).__name__}: {err}"
    if isinstance(err, ApiError) and (err.meta.status in _RETRYABLE_STATUS or err.meta.status >= 500):
        return f"HTTP {err.meta.status}: {err.error}"
    return None
