"""The store as the pipeline's article and dead-letter sink, in both modes."""

from __future__ import annotations

from collections.abc import Sequence

from newspulse.schema import ScoredArticle
from newspulse.store.base import DeadLetter, Store, WriteResult


class StoreSink:
    """Adapts a Store to the pipeline's article and dead-letter sinks (embedded mode writes both
    here; Kafka mode writes articles here and dead letters to ``news.dlq``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def write(self, articles: Sequence[ScoredArticle]) -> WriteResult:
        return self.store.upsert_articles(articles)

    def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        self.store.add_dead_letters(letters)
