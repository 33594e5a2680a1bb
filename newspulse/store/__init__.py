"""Stores behind one interface (:mod:`newspulse.store.base`); the backends are
:mod:`newspulse.store.sqlite` and :mod:`newspulse.store.elastic`, and
:func:`newspulse.wiring.open_store` picks one from the store URL."""

from __future__ import annotations

from newspulse.store.base import Bucket, DeadLetter, Facet, Filter, SearchHit, Store, StoreError, StorePermanentError, StoreUnavailable, WriteResult

__all__ = ["Bucket", "DeadLetter", "Facet", "Filter", "SearchHit", "Store", "StoreError", "StorePermanentError", "StoreUnavailable", "WriteResult"]
