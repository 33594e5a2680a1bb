"""Re-tag the topics of stored articles with the current topic model (the ``rescore_history`` DAG).

Stored articles keep the topics they were tagged with at ingest; after the topic model (or the
analyst-defined rules) change, this brings the stored history, and with it the dashboard facets
and topic alerts over past windows, in line. Topics are replaced by what the tagger gives now;
everything else about an article (sentiment, summary, tickers) is kept. Articles whose topics
are already current are not rewritten, so a rerun after a failure continues cheaply.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from newspulse.store.base import Filter


def retopic_store(store, *, tagger=None, since: datetime | None = None, batch_size: int = 256, progress: bool = True) -> dict[str, Any]:
    """Re-tag every stored article (published at or after ``since``) a batch at a time; returns
    counts, with ``seen = unchanged + retagged + failed`` (``failed``: re-tagged articles the store refused)."""
    from tqdm.auto import tqdm

    from newspulse.ingest.tagging import build_tagger

    tagger = tagger or build_tagger()
    counts = {"topic_model_version": tagger.topic_model.version, "seen": 0, "retagged": 0, "unchanged": 0, "failed": 0}

    with tqdm(desc=f"re-tagging topics with {tagger.topic_model.version}", unit="article", disable=not progress) as bar:
        for batch in store.iter_articles(Filter(start=since), batch_size=batch_size):
            counts["seen"] += len(batch)
            changed = []
            for article in batch:
                topics = tagger.analyze(article.title, article.body).topics
                if topics != article.topics:
                    changed.append(article.model_copy(update={"topics": topics}))
            counts["unchanged"] += len(batch) - len(changed)
            if changed:
                result = store.upsert_articles(changed)
                counts["retagged"] += len(result.written)
                counts["failed"] += len(result.failed)
            bar.update(len(batch))
    return counts
