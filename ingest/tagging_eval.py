"""Precision and recall of the tagger on the hand-labelled sample (``python -m newspulse.ingest.tagging_eval``).

The sample (``ingest/data/labelled_tagging.jsonl``, shipped with the package) holds headlines with ledes, each labelled
by hand with the tickers a story is *about* (not every company it names) and its topics. Scores are
micro-averaged over (story, label) pairs.

The samples are labelled with the product's coarse topics (:data:`SAMPLE_TOPICS`: earnings, M&A,
macro, the analyst-defined rule topics, ``other`` for none of them). The topic model's other
Reuters categories (crude, grain, money-fx, ...) are not labelled there, so they are left out of
this measurement (the model is measured on Reuters ModApte, docs/model.md); a story with none of
the coarse topics counts as ``other``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from newspulse.ingest.tagging import RULE_TOPICS, Tagger, build_tagger

SAMPLE = Path(__file__).resolve().parent / "data" / "labelled_tagging.jsonl"
SAMPLE_TOPICS = frozenset({"earnings", "mergers_acquisitions", "macro", *RULE_TOPICS, "other"})


def sample_topics(topics: list[str]) -> set[str]:
    """The coarse topics among ``topics``; ``{"other"}`` when there are none."""
    return (set(topics) & SAMPLE_TOPICS) or {"other"}


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, title: str, predicted: set[str], expected: set[str]) -> None:
        self.tp += len(predicted & expected)
        self.fp += len(predicted - expected)
        self.fn += len(expected - predicted)
        if predicted != expected:
            self.errors.append(f"{title[:70]!r}: extra {sorted(predicted - expected)}, missing {sorted(expected - predicted)}")

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def load_sample(path: Path = SAMPLE) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def evaluate(tagger: Tagger, rows: list[dict]) -> dict[str, Score]:
    """Ticker and topic scores of ``tagger`` on labelled rows (title, body, tickers, topics)."""
    scores = {"tickers": Score(), "topics": Score()}
    for row in rows:
        result = tagger.analyze(row["title"], row.get("body", ""))
        scores["tickers"].add(row["title"], {m.symbol for m in result.tickers}, set(row["tickers"]))
        scores["topics"].add(row["title"], sample_topics(result.topics), set(row["topics"]))
    return scores


def main() -> None:
    rows = load_sample()
    scores = evaluate(build_tagger(), rows)
    report = {
        name: {"precision": round(s.precision, 3), "recall": round(s.recall, 3), "f1": round(s.f1, 3), "tp": s.tp, "fp": s.fp, "fn": s.fn}
        for name, s in scores.items()
    }
    report["stories"] = len(rows)  # type: ignore[assignment]
    json.dump(report, sys.stdout, indent=2)
    print()
    if "-v" in sys.argv:
        for name, s in scores.items():
            for e in s.errors:
                print(f"{name}: {e}")


if __name__ == "__main__":
    main()
