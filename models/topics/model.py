"""The topic classifier at serve time: which Reuters-21578 categories a story is about.

A :class:`TopicModel` is a TF-IDF vectoriser and one linear scorer per category (one-vs-rest),
with one decision threshold per category tuned on held-out scores (``models/topics/train.py``).
A story gets every category whose score passes its threshold; when none does it gets the single
category that comes closest (score minus threshold), so every story has a topic. A story's text is
its headline on the first line and then its body (as the tagger and the ModApte files give it);
the headline can count ``title_repeat`` times, because a Reuters headline names the topic more
often than any body sentence does.

Why a linear model on TF-IDF and not a transformer head: measured on dev and on 5 folds over train + dev
(docs/model.md) it is as accurate as the alternatives tried here, it tags thousands of stories a
second on one core (tagging runs on every ingested and every replayed story), and the artifact is
small enough to commit, so a fresh clone tags topics without training anything.

The artifact is a folder: ``weights.npz`` (idf, coefficients, intercepts, thresholds),
``vocabulary.txt`` (one term per line, in column order) and ``model_card.json`` (version,
categories, vectoriser settings, training data with hashes and licence, metrics). No pickles:
loading runs no code from the artifact.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

#: The committed production topic model (trained by ``make topics-model``).
DEFAULT_TOPIC_MODEL = Path(__file__).resolve().parent / "bundled"
WEIGHTS = "weights.npz"
VOCABULARY = "vocabulary.txt"
CARD = "model_card.json"


class TopicModelError(RuntimeError):
    """The topic-model folder is missing or incomplete."""


@dataclass
class TopicModel:
    """Scores stories against ``categories`` and decides their topics."""

    categories: list[str]
    vocabulary: list[str]
    idf: np.ndarray  # (n_terms,)
    coef: np.ndarray  # (n_categories, n_terms)
    intercept: np.ndarray  # (n_categories,)
    thresholds: np.ndarray  # (n_categories,), in score space (sigmoid of the margin)
    vectorizer_params: dict[str, Any]
    card: dict[str, Any] = field(default_factory=dict)
    title_repeat: int = 1  # how many times the headline (the first line) counts

    def __post_init__(self) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        n = len(self.categories)
        if self.coef.shape != (n, len(self.vocabulary)) or self.intercept.shape != (n,) or self.thresholds.shape != (n,):
            raise TopicModelError(f"inconsistent topic model: {n} categories, coef {self.coef.shape}, {len(self.vocabulary)} terms")
        self._vectorizer = TfidfVectorizer(vocabulary={t: i for i, t in enumerate(self.vocabulary)}, dtype=np.float32, **self.vectorizer_params)
        self._vectorizer.idf_ = self.idf.astype(np.float64)
        self._coef_t = np.ascontiguousarray(self.coef.T, dtype=np.float32)

    @property
    def version(self) -> str:
        return str(self.card.get("version", "unversioned"))

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """(n_texts, n_categories) scores in 0..1 (the sigmoid of each category's margin)."""
        if not len(texts):
            return np.zeros((0, len(self.categories)), dtype=np.float32)
        x = self._vectorizer.transform(headline_weighted(texts, self.title_repeat))
        margin = np.asarray(x @ self._coef_t) + self.intercept
        return (1.0 / (1.0 + np.exp(-margin))).astype(np.float32)

    def decide(self, scores: np.ndarray) -> list[list[str]]:
        """Categories passing their threshold (best first); the closest one when none passes."""
        return decide(scores, self.thresholds, self.categories)

    def predict(self, texts: Sequence[str]) -> list[list[str]]:
        return self.decide(self.scores(texts))

    # --- persistence ------------------------------------------------------------------------
    def save(self, path: Path) -> Path:
        """Write the artifact folder (created if needed; files replaced)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path / WEIGHTS,
            idf=self.idf.astype(np.float32),
            coef=self.coef.astype(np.float16),
            intercept=self.intercept.astype(np.float32),
            thresholds=self.thresholds.astype(np.float32),
        )
        (path / VOCABULARY).write_text("\n".join(self.vocabulary) + "\n", encoding="utf-8")
        card = {**self.card, "categories": self.categories, "vectorizer": self.vectorizer_params,
                "title_repeat": self.title_repeat, "thresholds": {c: round(float(t), 6) for c, t in zip(self.categories, self.thresholds)}}
        (path / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: Path = DEFAULT_TOPIC_MODEL) -> "TopicModel":
        path = Path(path)
        missing = [name for name in (WEIGHTS, VOCABULARY, CARD) if not (path / name).is_file()]
        if missing:
            raise TopicModelError(f"{path}: not a topic model (missing {', '.join(missing)}); train one with `newspulse model train-topics`")
        card = json.loads((path / CARD).read_text(encoding="utf-8"))
        vocabulary = (path / VOCABULARY).read_text(encoding="utf-8").split("\n")[:-1]
        with np.load(path / WEIGHTS) as w:
            return cls(
                categories=list(card["categories"]),
                vocabulary=vocabulary,
                idf=w["idf"],
                coef=w["coef"].astype(np.float32),
                intercept=w["intercept"],
                thresholds=w["thresholds"],
                vectorizer_params=dict(card["vectorizer"]),
                card=card,
                title_repeat=int(card.get("title_repeat", 1)),
            )


def headline_weighted(texts: Sequence[str], times: int) -> list[str]:
    """Each text with its first line (the headline) repeated to count ``times`` times: with
    sublinear tf this raises the weight of headline terms without letting them swamp the body."""
    if times <= 1:
        return list(texts)
    out = []
    for text in texts:
        title, _, body = text.partition("\n")
        out.append("\n".join([title] * times + [body]))
    return out


def decide(scores: np.ndarray, thresholds: np.ndarray, categories: Sequence[str]) -> list[list[str]]:
    """Per row: the categories whose score reaches its threshold, highest margin first; when
    none does, the one category with the highest margin (score minus threshold)."""
    margins = np.asarray(scores) - np.asarray(thresholds)[None, :]
    out = []
    for row in margins:
        passed = np.flatnonzero(row >= 0)
        picked = passed[np.argsort(-row[passed])] if len(passed) else [int(np.argmax(row))]
        out.append([categories[j] for j in picked])
    return out


@lru_cache(maxsize=4)
def load_topic_model(path: Path = DEFAULT_TOPIC_MODEL) -> TopicModel:
    """The topic model at ``path``, loaded once per process (it is read-only after loading)."""
    return TopicModel.load(path)
