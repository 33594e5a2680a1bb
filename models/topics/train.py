"""Training and honest measurement of the topic classifier (``newspulse model train-topics``).

Recipe: TF-IDF over word 1-2-grams and, stacked beside it, over char_wb 3-5-grams (both sublinear
tf, the headline counted three times), one linear SVM per category (one-vs-rest, C = 2; categories with fewer than 20 stories C = 1 with balanced
class weights), then one threshold per category. Thresholds are tuned on
*held-out* scores: the training rows are cross-fitted (``tune_folds`` folds), each row scored by a
model that did not see it, and each category's threshold is the one that maximises its F1 on those
scores, but never below margin ``min_margin``. A category with fewer than ``min_positives``
stories keeps the default threshold (margin 0, score 0.5).

Why out-of-fold scores and not dev alone: ModApte dev has 777 stories and only 29 of the 90
categories have 5 or more of them, 27 have none; thresholds tuned on those few positives fit noise.
Out-of-fold scores over train (and, for the shipped model, dev too) give every category all of its
stories while keeping every score held out.

Measurement (:func:`measure`): the model is trained on train and scored on dev, and k-fold
cross-validated over train + dev, all of ModApte train (trained on k-1 folds with thresholds from
their own cross-fit, scored on the last). The TF-IDF + linear SVM baseline (threshold 0, no
fallback: the textbook setup) is measured on the same rows and folds. The shipped model is then
trained on train + dev.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from newspulse.models.sentiment.registry import code_version, sha256_file
from newspulse.models.topics.model import DEFAULT_TOPIC_MODEL, TopicFeatures, TopicModel, headline_weighted, stack_blocks
from newspulse.models.topics.evaluate import CATEGORIES_TXT, TOPICS_DEV, TOPICS_TRAIN, label_matrix, multilabel_metrics, read_categories, read_topics_csv

log = logging.getLogger(__name__)

#: Licence of the training data, copied into the model card (see data/README.md).
REUTERS_LICENCE = (
    "Reuters-21578, Distribution 1.0 (D. D. Lewis, 1997): copyright Reuters Ltd.; free distribution "
    "for research purposes only (the collection's README). Treat the model as research-only."
)
#: Margin given to a category no training story has: it never passes and never wins a fallback.
_ABSENT_MARGIN = -20.0


@dataclass
class TopicTrainConfig:
    classifier: str = "svm"  # "svm" (linear SVM, 17x faster to fit here) or "logreg" (L2 logistic regression)
    # SVM regularisation. 2 measured best of 0.5, 1, 2 and 4 in nested 5-fold CV over train + dev
    # (micro-F1 +0.0014, macro-F1 +0.004 over 1; docs/model.md, Topics): the L2-normalised TF-IDF
    # rows separate better with a little less regularisation, and 4 overfits again.
    C: float = 2.0
    class_weight: str | None = None  # None or "balanced", for every category not in the rare band
    # Categories with fewer than ``rare_below`` training stories are fitted with
    # ``rare_class_weight``. With "balanced" their positives weigh n / (2 n_pos), so an SVM that
    # sees 5 positives among 6,000 stories no longer buys its margin by calling all of them
    # negative: nested 5-fold CV over train + dev lifts the recall of these categories from 0.39
    # to 0.47 and macro-F1 by +0.010 at the same micro-F1 (docs/model.md, Topics). Balanced
    # weights on every category converge slowly and were not better.
    rare_below: int = 20
    rare_class_weight: str | None = "balanced"
    rare_C: float = 1.0  # C of the rare band's SVMs: the balanced weights already scale their positives' loss up
    ngram_max: int = 2
    min_df: int = 2
    # A second TF-IDF block of char_wb 3-5-grams (min_df 2, the ``max_features`` most frequent,
    # sublinear tf), stacked beside the words: nested 5-fold CV over train + dev measured it at
    # micro-F1 +0.0044 (ahead on four folds, level on the fifth) and macro-F1 +0.019 for about
    # three times the CPU per fit (experiments/topics_cv.py, arm "char"; docs/model.md, Topics).
    char_block: bool = True
    # Times the headline (the first line) counts; models/topics/model.py, headline_weighted. 3 measured
    # better than 1 on every fold of 5-fold CV over train + dev (docs/model.md, Topics).
    title_repeat: int = 3
    max_features: int | None = 60_000
    tune_thresholds: bool = True
    tune_folds: int = 4
    min_positives: int = 2
    # Lowest threshold, as a margin. A linear SVM pushes training negatives to margins <= -1, and a
    # rare category's cross-fit (folds without a single positive) can suggest cuts below that, which
    # accept the bulk of them. -0.5 measured best on 3-fold CV of train (docs/model.md).
    min_margin: float = -0.5
    seed: int = 13

    def vectorizer_params(self) -> dict[str, Any]:
        return {"ngram_range": [1, self.ngram_max], "sublinear_tf": True, "lowercase": True, "strip_accents": "unicode"}

    def char_vectorizer_params(self) -> dict[str, Any] | None:
        """Settings of the char block's vectoriser (None without one); what the card records and
        serving rebuilds it from."""
        if not self.char_block:
            return None
        return {"analyzer": "char_wb", "ngram_range": [3, 5], "sublinear_tf": True, "lowercase": True, "strip_accents": "unicode"}


#: The TF-IDF + linear SVM baseline the issue compares against (threshold 0, no tuning).
BASELINE = TopicTrainConfig(classifier="svm", C=1.0, max_features=None, tune_thresholds=False, title_repeat=1, rare_class_weight=None,
                            char_block=False)


def _vectorizers(cfg: TopicTrainConfig) -> list:
    """Unfitted vectorisers, word block first; both keep terms in >= ``min_df`` stories, the
    ``max_features`` most frequent."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    out = []
    for params in (cfg.vectorizer_params(), cfg.char_vectorizer_params()):
        if params is not None:
            p = {**params, "ngram_range": tuple(params["ngram_range"])}
            out.append(TfidfVectorizer(min_df=cfg.min_df, max_features=cfg.max_features, dtype=np.float32, **p))
    return out


def fit_features(texts: Sequence[str], cfg: TopicTrainConfig):
    """The fitted :class:`TopicFeatures` of ``texts`` and their rows."""
    vectorizers = _vectorizers(cfg)
    weighted = headline_weighted(texts, cfg.title_repeat)
    x = stack_blocks([v.fit_transform(weighted) for v in vectorizers])
    return TopicFeatures(vectorizers, cfg.title_repeat), x


def _linear(cfg: TopicTrainConfig, rare: bool = False):
    """One binary classifier; ``rare`` ones get ``cfg.rare_class_weight`` (weighted hinge losses
    take liblinear more iterations to converge, so they get 5,000 instead of 1,000). The SVM's
    coordinate descent visits rows in a random order: seeded, the same rows give the same model."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    class_weight, c = (cfg.rare_class_weight, cfg.rare_C) if rare else (cfg.class_weight, cfg.C)
    if cfg.classifier == "svm":
        return LinearSVC(C=c, class_weight=class_weight, max_iter=5000 if class_weight else 1000, random_state=cfg.seed)
    if cfg.classifier == "logreg":
        return LogisticRegression(C=c, class_weight=class_weight, solver="liblinear", max_iter=1000)
    raise ValueError(f"unknown classifier {cfg.classifier!r}; expected logreg or svm")


def rare_band(y: np.ndarray, cfg: TopicTrainConfig) -> np.ndarray:
    """Which categories (columns of ``y``) have fewer than ``cfg.rare_below`` training stories."""
    return np.asarray(y).sum(0) < cfg.rare_below


def fit_linear(texts: Sequence[str], y: np.ndarray, cfg: TopicTrainConfig, rare: np.ndarray | None = None):
    """Features plus (coef, intercept) of one binary classifier per column of ``y``. ``rare``
    (default: :func:`rare_band` of ``y``) says which categories are fitted as rare; the cross-fit
    passes the band of all training rows, so a category sits in the same band in every fold as in
    the final model."""
    features, x = fit_features(texts, cfg)
    rare = rare_band(y, cfg) if rare is None else rare
    coef = np.zeros((y.shape[1], x.shape[1]), dtype=np.float32)
    intercept = np.full(y.shape[1], _ABSENT_MARGIN, dtype=np.float32)
    for j in range(y.shape[1]):
        if 0 < y[:, j].sum() < len(y):
            clf = _linear(cfg, bool(rare[j])).fit(x, y[:, j])
            coef[j], intercept[j] = clf.coef_.ravel(), float(np.ravel(clf.intercept_)[0])
    return features, coef, intercept


def _scores(features: TopicFeatures, coef: np.ndarray, intercept: np.ndarray, texts: Sequence[str]) -> np.ndarray:
    margin = np.asarray(features.transform(texts) @ coef.T) + intercept
    return (1.0 / (1.0 + np.exp(-margin))).astype(np.float32)


def out_of_fold_scores(texts: Sequence[str], y: np.ndarray, cfg: TopicTrainConfig, folds: int) -> np.ndarray:
    """Each row's scores from a model trained on the other ``folds - 1`` folds."""
    from sklearn.model_selection import KFold

    texts = np.asarray(texts, dtype=object)
    out = np.zeros(y.shape, dtype=np.float32)
    for a, b in KFold(folds, shuffle=True, random_state=cfg.seed).split(texts):
        features, coef, intercept = fit_linear(texts[a], y[a], cfg, rare_band(y, cfg))
        out[b] = _scores(features, coef, intercept, texts[b])
    return out


def tune_thresholds(scores: np.ndarray, y: np.ndarray, *, min_positives: int = 2, default: float = 0.5) -> np.ndarray:
    """Per column, the threshold that maximises F1 of ``scores >= t`` against ``y`` (midway between
    the last accepted and the first rejected score); ``default`` where ``y`` has fewer than
    ``min_positives`` positives."""
    thresholds = np.full(scores.shape[1], default, dtype=np.float32)
    for j in range(scores.shape[1]):
        positives = int(y[:, j].sum())
        if positives < max(1, min_positives):
            continue
        order = np.argsort(-scores[:, j], kind="stable")
        s = scores[order, j]
        tp = np.cumsum(y[order, j])
        f1 = 2 * tp / (np.arange(1, len(s) + 1) + positives)
        best = int(np.argmax(f1))
        if f1[best] == 0:
            continue  # no threshold separates any positive: keep the default
        below = s[best + 1] if best + 1 < len(s) else s[best] / 2
        thresholds[j] = (s[best] + below) / 2
    return thresholds


def fit_topic_model(texts: Sequence[str], labels: Sequence[Sequence[str]], categories: Sequence[str], cfg: TopicTrainConfig) -> TopicModel:
    """Train the vectorisers and the per-category classifiers on all rows; thresholds from their
    cross-fit (or the default when ``cfg.tune_thresholds`` is off)."""
    y = label_matrix(labels, categories)
    features, coef, intercept = fit_linear(texts, y, cfg)
    if cfg.tune_thresholds:
        thresholds = tune_thresholds(out_of_fold_scores(texts, y, cfg, cfg.tune_folds), y, min_positives=cfg.min_positives)
        thresholds = np.maximum(thresholds, 1.0 / (1.0 + np.exp(-cfg.min_margin))).astype(np.float32)
    else:
        thresholds = np.full(len(categories), 0.5, dtype=np.float32)
    word, *char = features.vectorizers
    return TopicModel(list(categories), _terms(word), word.idf_.astype(np.float32), coef, intercept, thresholds, cfg.vectorizer_params(),
                      title_repeat=cfg.title_repeat, char_vocabulary=_terms(char[0]) if char else [],
                      char_idf=char[0].idf_.astype(np.float32) if char else None, char_vectorizer_params=cfg.char_vectorizer_params())


def _terms(vectorizer) -> list[str]:
    """A fitted vectoriser's terms in column order."""
    return [t for t, _ in sorted(vectorizer.vocabulary_.items(), key=lambda kv: kv[1])]


def _predict(model: TopicModel, texts: Sequence[str], fallback: bool) -> list[list[str]]:
    if fallback:
        return model.predict(texts)
    passed = model.scores(texts) >= model.thresholds
    return [[model.categories[j] for j in np.flatnonzero(row)] for row in passed]


def measure(cfg: TopicTrainConfig, train: pd.DataFrame, dev: pd.DataFrame, categories: Sequence[str], *, folds: int = 5,
            fallback: bool = True, progress: Callable[[str], None] = log.info) -> dict[str, Any]:
    """Dev metrics (trained on train) and ``folds``-fold CV over train + dev (all of ModApte
    train): per fold and mean ± std. CV is the figure choices rest on: dev's 777 stories hold
    too few of the rare categories to say much about them."""
    from sklearn.model_selection import KFold

    result: dict[str, Any] = {}
    started = time.monotonic()
    model = fit_topic_model(train["text"].tolist(), train["labels"].tolist(), categories, cfg)
    m = multilabel_metrics(dev["labels"].tolist(), _predict(model, dev["text"].tolist(), fallback))
    result["dev"] = {k: m[k] for k in ("n", "micro_f1", "macro_f1", "micro_precision", "micro_recall", "n_classes")}
    progress(f"dev micro-F1 {m['micro_f1']:.4f} macro-F1 {m['macro_f1']:.4f} ({time.monotonic() - started:.0f} s)")
    both = pd.concat([train, dev], ignore_index=True)
    texts = both["text"].to_numpy(dtype=object)
    labels = both["labels"].tolist()
    per_fold = []
    for k, (a, b) in enumerate(KFold(folds, shuffle=True, random_state=cfg.seed).split(texts)):
        model = fit_topic_model(texts[a], [labels[i] for i in a], categories, cfg)
        m = multilabel_metrics([labels[i] for i in b], _predict(model, texts[b].tolist(), fallback))
        per_fold.append({"micro_f1": m["micro_f1"], "macro_f1": m["macro_f1"], "n": m["n"]})
        progress(f"fold {k + 1}/{folds} of train + dev: micro-F1 {m['micro_f1']:.4f} macro-F1 {m['macro_f1']:.4f}")
    result["cv"] = {
        "folds": folds,
        "rows": "train + dev",
        "per_fold": per_fold,
        **{f"{key}_{stat}": float(fn([f[key] for f in per_fold])) for key in ("micro_f1", "macro_f1") for stat, fn in (("mean", np.mean), ("std", np.std))},
    }
    return result


def _file_record(path: Path, rows: int) -> dict[str, Any]:
    return {"path": str(path.relative_to(TOPICS_TRAIN.parents[2])) if path.is_relative_to(TOPICS_TRAIN.parents[2]) else str(path),
            "sha256": sha256_file(path), "rows": rows}


def train_topics(cfg: TopicTrainConfig, *, out: Path = DEFAULT_TOPIC_MODEL, train_file: Path = TOPICS_TRAIN, dev_file: Path = TOPICS_DEV,
                 categories_file: Path = CATEGORIES_TXT, folds: int = 5, baseline: bool = True,
                 progress: Callable[[str], None] = log.info) -> TopicModel:
    """Measure the recipe (and the SVM baseline) on dev and CV, then train on train + dev and save
    the model with its card to ``out``."""
    started = time.monotonic()
    categories = read_categories(categories_file)
    train, dev = read_topics_csv(train_file), read_topics_csv(dev_file)
    metrics: dict[str, Any] = {}
    if baseline:
        progress("TF-IDF + linear SVM baseline (threshold 0, no fallback)")
        metrics["svm_baseline"] = measure(BASELINE, train, dev, categories, folds=folds, fallback=False, progress=progress)
    if folds:
        progress(f"model: {cfg.classifier}, C={cfg.C}, per-category thresholds")
        metrics["model"] = measure(cfg, train, dev, categories, folds=folds, progress=progress)
    both = pd.concat([train, dev], ignore_index=True)
    progress(f"final fit on train + dev ({len(both)} stories)")
    model = fit_topic_model(both["text"].tolist(), both["labels"].tolist(), categories, cfg)
    stamp = datetime.now(timezone.utc)
    model.card = {
        "version": "topics-" + stamp.strftime("%Y%m%d-%H%M%S"),
        "created_at": stamp.isoformat(),
        "code_version": code_version(),
        "task": "multi-label topic classification (Reuters-21578 ModApte, 90 categories)",
        "recipe": f"TF-IDF word 1-2-grams{' + char_wb 3-5-grams (stacked, each block L2-normalised, scaled by 1/sqrt 2)' if cfg.char_block else ''} "
                  f"(sublinear tf, headline counted {cfg.title_repeat} times) + one-vs-rest linear classifier (C={cfg.C}; under {cfg.rare_below} stories C={cfg.rare_C}, class weight {cfg.rare_class_weight}); per-category thresholds "
                  "tuned on out-of-fold scores; top-category fallback",
        "params": asdict(cfg),
        "data": {
            "train": [_file_record(train_file, len(train)), _file_record(dev_file, len(dev))],
            "categories": _file_record(categories_file, len(categories)),
            "trained_on": "train + dev (dev metrics below come from a model trained on train only)",
        },
        "licence": REUTERS_LICENCE,
        "metrics": metrics,
        "seconds": round(time.monotonic() - started, 1),
    }
    model.save(out)
    return model

