"""The topic classifier at serve time: which Reuters-21578 categories a story is about.

A :class:`TopicModel` is TF-IDF features and one linear scorer per category (one-vs-rest), with
one decision threshold per category tuned on held-out scores (``models/topics/train.py``). The
features are a block of word n-grams and, in the current format, a second block of char_wb
3-5-grams (character n-grams inside word boundaries): they catch what word tokens split apart or
miss (inflections, numbers with units, tickers and names run together), and nested CV over all of
ModApte train put them ahead of every word-only lever (docs/model.md, Topics). Each block is
L2-normalised on its own and the stacked row is scaled by 1/sqrt(number of blocks), so a row keeps
unit norm and neither block drowns the other.
A story gets every category whose score passes its threshold; when none does it gets the single
category that comes closest (score minus threshold), so every story has a topic. A story's text is
its headline on the first line and then its body (as the tagger and the ModApte files give it);
the headline can count ``title_repeat`` times, because a Reuters headline names the topic more
often than any body sentence does.

Why a linear model on TF-IDF and not a transformer head: measured on dev and on 5 folds over train + dev
(docs/model.md) it is as accurate as the alternatives tried here, it tags thousands of stories a
second on one core (tagging runs on every ingested and every replayed story), and the artifact is
small enough to commit, so a fresh clone tags topics without training anything.

The artifact is a folder: ``weights.npz`` (idf per block, coefficients, intercepts, thresholds),
``vocabulary.txt`` (word terms, one per line, in column order), ``char_vocabulary.txt`` (the char
block's terms, which follow the word columns) and ``model_card.json`` (``format``, version,
categories, vectoriser settings, training data with hashes and licence, metrics). No pickles:
loading runs no code from the artifact. Format 1 (no ``format`` key: the word block alone) still
loads, so a model folder written before the char block keeps tagging.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

#: The committed production topic model (trained by ``make topics-model``).
DEFAULT_TOPIC_MODEL = Path(__file__).resolve().parent / "bundled"
WEIGHTS = "weights.npz"
VOCABULARY = "vocabulary.txt"
CHAR_VOCABULARY = "char_vocabulary.txt"
CARD = "model_card.json"
#: The artifact layout :meth:`TopicModel.save` writes: 2 adds the char block (``char_vocabulary.txt``,
#: ``char_idf``, the card's ``char_vectorizer``); 1 (a card without ``format``) is the word block alone.
FORMAT = 2


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
    # The char_wb block (empty: a word-only model); its columns follow the word columns in coef.
    char_vocabulary: list[str] = field(default_factory=list)
    char_idf: np.ndarray | None = None
    char_vectorizer_params: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        n = len(self.categories)
        n_terms = len(self.vocabulary) + len(self.char_vocabulary)
        if self.coef.shape != (n, n_terms) or self.intercept.shape != (n,) or self.thresholds.shape != (n,):
            raise TopicModelError(f"inconsistent topic model: {n} categories, coef {self.coef.shape}, {n_terms} terms")
        blocks = [(self.vocabulary, self.idf, self.vectorizer_params)]
        if self.char_vocabulary:
            if self.char_idf is None or self.char_vectorizer_params is None:
                raise TopicModelError("inconsistent topic model: a char vocabulary without its idf or vectoriser settings")
            blocks.append((self.char_vocabulary, self.char_idf, self.char_vectorizer_params))
        self._features = TopicFeatures([_fitted_vectorizer(*block) for block in blocks], self.title_repeat)
        self._coef_t = np.ascontiguousarray(self.coef.T, dtype=np.float32)

    @property
    def version(self) -> str:
        return str(self.card.get("version", "unversioned"))

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """(n_texts, n_categories) scores in 0..1 (the sigmoid of each category's margin)."""
        if not len(texts):
            return np.zeros((0, len(self.categories)), dtype=np.float32)
        x = self._features.transform(texts)
        margin = np.asarray(x @ self._coef_t) + self.intercept
        return (1.0 / (1.0 + np.exp(-margin))).astype(np.float32)

    def decide(self, scores: np.ndarray) -> list[list[str]]:
        """Categories passing their threshold (best first); the closest one when none passes."""
        return decide(scores, self.thresholds, self.categories)

    def predict(self, texts: Sequence[str]) -> list[list[str]]:
        return self.decide(self.scores(texts))

    # --- persistence ------------------------------------------------------------------------
    def save(self, path: Path) -> Path:
        """Write the artifact folder (created if needed; files replaced). The same model gives the
        same ``weights.npz`` and vocabulary files byte for byte (:func:`write_npz`), so a retraining
        that changes nothing changes no weights in git."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = {"idf": self.idf.astype(np.float32)}
        if self.char_vocabulary:
            arrays["char_idf"] = np.asarray(self.char_idf, dtype=np.float32)
        arrays |= {"coef": self.coef.astype(np.float16), "intercept": self.intercept.astype(np.float32), "thresholds": self.thresholds.astype(np.float32)}
        write_npz(path / WEIGHTS, arrays)
        (path / VOCABULARY).write_text("\n".join(self.vocabulary) + "\n", encoding="utf-8")
        (path / CHAR_VOCABULARY).unlink(missing_ok=True)
        card = {**self.card, "format": FORMAT, "categories": self.categories, "vectorizer": self.vectorizer_params, "title_repeat": self.title_repeat}
        if self.char_vocabulary:
            (path / CHAR_VOCABULARY).write_text("\n".join(self.char_vocabulary) + "\n", encoding="utf-8")
            card["char_vectorizer"] = self.char_vectorizer_params
        card["thresholds"] = {c: round(float(t), 6) for c, t in zip(self.categories, self.thresholds)}
        (path / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: Path = DEFAULT_TOPIC_MODEL) -> "TopicModel":
        path = Path(path)
        missing = [name for name in (WEIGHTS, VOCABULARY, CARD) if not (path / name).is_file()]
        if missing:
            raise TopicModelError(f"{path}: not a topic model (missing {', '.join(missing)}); train one with `newspulse model train-topics`")
        card = json.loads((path / CARD).read_text(encoding="utf-8"))
        fmt = int(card.get("format", 1))
        if fmt > FORMAT:
            raise TopicModelError(f"{path}: topic-model format {fmt} is newer than this NewsPulse reads ({FORMAT}); upgrade NewsPulse")
        has_char = "char_vectorizer" in card
        if has_char and not (path / CHAR_VOCABULARY).is_file():
            raise TopicModelError(f"{path}: not a topic model (missing {CHAR_VOCABULARY}); train one with `newspulse model train-topics`")
        with np.load(path / WEIGHTS) as w:
            return cls(
                categories=list(card["categories"]),
                vocabulary=_read_terms(path / VOCABULARY),
                idf=w["idf"],
                coef=w["coef"].astype(np.float32),
                intercept=w["intercept"],
                thresholds=w["thresholds"],
                vectorizer_params=dict(card["vectorizer"]),
                card=card,
                title_repeat=int(card.get("title_repeat", 1)),
                char_vocabulary=_read_terms(path / CHAR_VOCABULARY) if has_char else [],
                char_idf=w["char_idf"] if has_char else None,
                char_vectorizer_params=dict(card["char_vectorizer"]) if has_char else None,
            )


class TopicFeatures:
    """Fitted TF-IDF vectorisers, the word block first, applied to stories with their headline
    weighted: :meth:`transform` gives the rows the linear scorers read. Training and serving
    share it, so both build the features the same way."""

    def __init__(self, vectorizers: Sequence[Any], title_repeat: int) -> None:
        self.vectorizers = list(vectorizers)
        self.title_repeat = title_repeat

    def transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        weighted = headline_weighted(texts, self.title_repeat)
        return stack_blocks([v.transform(weighted) for v in self.vectorizers])


def stack_blocks(blocks: Sequence[sparse.spmatrix]) -> sparse.csr_matrix:
    """Feature blocks side by side, scaled by 1/sqrt(number of blocks): each block's rows are
    L2-normalised, so the stacked row keeps unit norm and the SVM's C means what it means for
    one block."""
    if len(blocks) == 1:
        return sparse.csr_matrix(blocks[0])
    return (sparse.hstack(blocks, format="csr") * np.float32(1 / np.sqrt(len(blocks)))).astype(np.float32)


def _fitted_vectorizer(vocabulary: list[str], idf: np.ndarray, params: dict[str, Any]):
    """A TfidfVectorizer over a saved vocabulary and idf (no refit: serving needs no corpus)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    p = dict(params)
    if "ngram_range" in p:
        p["ngram_range"] = tuple(p["ngram_range"])
    vec = TfidfVectorizer(vocabulary={t: i for i, t in enumerate(vocabulary)}, dtype=np.float32, **p)
    vec.idf_ = np.asarray(idf, dtype=np.float64)
    return vec


def _read_terms(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` without its timestamps: each member is stamped 1980-01-01, so the
    same arrays give the same bytes (np.load reads it as any .npz)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())


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
