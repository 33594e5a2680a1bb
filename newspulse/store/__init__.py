"""Stores behind one interface; :func:`open_store` picks the backend from the store URL."""

from __future__ import annotations

from newspulse.settings import Settings
from newspulse.store.base import Bucket, DeadLetter, Facet, Filter, SearchHit, Store, StoreError, StorePermanentError, StoreUnavailable, WriteResult

__all__ = ["Bucket", "DeadLetter", "Facet", "Filter", "SearchHit", "Store", "StoreError", "StorePermanentError", "StoreUnavailable", "WriteResult", "open_store"]


def open_store(settings: Settings) -> Store:
    """SQLite for ``sqlite:///path``, Elasticsearch for ``http(s)://host:port``."""
    if settings.sqlite_path is not None:
        from newspulse.store.sqlite import SQLiteStore

        return SQLiteStore(settings.sqlite_path)
    from newspulse.store.elastic import ElasticStore

    return ElasticStore(settings)
