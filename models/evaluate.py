"""Metrics for the sentiment classifier, overall, per agreement level and beside a lexicon
baseline scored on the very same rows (so the comparison cannot flatter either side)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from newspulse.models.data import read_many
from newspulse.schema import LABELS

PredictFn = Callable[[Sequence[str]], list[str]]


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, Any]:
    """accuracy, macro/weighted F1, per-class P/R/F1/support and the confusion matrix
    (rows = true, columns = predicted, LABELS order). Classes absent from both sides get 0s
    and are still averaged into macro-F1 only when they have support or predictions."""
    k = len(LABELS)
    index = {label: i for i, label in enumerate(LABELS)}
    conf = np.zeros((k, k), dtype=int)
    for t, p in zip(y_true, y_pred, strict=True):
        conf[index[t], index[p]] += 1
    n = int(conf.sum())
    per_class: dict[str, dict[str, float]] = {}
    f1s, supports, present = [], [], []
    for i, label in enumerate(LABELS):
        tp = conf[i, i]
        pred_pos = conf[:, i].sum()
        support = conf[i, :].sum()
        precision = tp / pred_pos if pred_pos else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": float(precision), "recall": float(recall), "f1": float(f1), "support": int(support)}
        f1s.append(f1)
        supports.append(support)
        present.append(bool(support or pred_pos))
    f1_arr = np.array(f1s)
    sup_arr = np.array(supports)
    return {
        "n": n,
        "accuracy": float(np.trace(conf) / n) if n else 0.0,
        "macro_f1": float(f1_arr[present].mean()) if any(present) else 0.0,
        "weighted_f1": float((f1_arr * sup_arr).sum() / sup_arr.sum()) if sup_arr.sum() else 0.0,
        "per_class": per_class,
        "confusion": conf.tolist(),
    }


def evaluate_frame(predict: PredictFn, df: pd.DataFrame, *, lexicon: bool = True, by_source: bool = True) -> dict[str, Any]:
    """Metrics of ``predict`` on a labelled frame, with breakdowns:

    - ``by_agreement``: per annotator-agreement level (PhraseBank 100/75/66/50) when present;
    - ``by_source``: per data set when the frame mixes several;
    - ``lexicon``: the Loughran-McDonald baseline on the same rows (same breakdowns).
    """
    texts = df["text"].tolist()
    preds = list(predict(texts))
    result = _with_breakdowns(df, preds, by_source)
    if lexicon:
        from newspulse.models.lexicon import LexiconClassifier

        result["lexicon"] = _with_breakdowns(df, LexiconClassifier().predict(texts), by_source)
    return result


def _with_breakdowns(df: pd.DataFrame, preds: Sequence[str], by_source: bool) -> dict[str, Any]:
    y = df["label"].tolist()
    result = classification_metrics(y, preds)
    pred_arr = np.asarray(preds, dtype=object)
    if "agreement" in df and df["agreement"].notna().any():
        levels: dict[str, Any] = {}
        for level in sorted(df["agreement"].dropna().unique(), reverse=True):
            mask = (df["agreement"] == level).to_numpy()
            m = classification_metrics(df["label"][mask].tolist(), pred_arr[mask].tolist())
            levels[str(int(level))] = {k: m[k] for k in ("n", "accuracy", "macro_f1", "weighted_f1")}
        result["by_agreement"] = levels
    if by_source and "source" in df and df["source"].nunique() > 1:
        result["by_source"] = {
            src: {k: v for k, v in classification_metrics(df["label"][mask].tolist(), pred_arr[mask].tolist()).items() if k != "per_class"}
            for src, mask in ((s, (df["source"] == s).to_numpy()) for s in sorted(df["source"].unique()))
        }
    return result


def evaluate_files(classifier, paths: Sequence[Path | str], *, lexicon: bool = True) -> dict[str, Any]:
    """``newspulse model evaluate``: metrics of a (production) classifier on labelled CSVs."""
    df = read_many(paths)
    result = evaluate_frame(lambda t: classifier.predict(t), df, lexicon=lexicon)
    result["model_version"] = classifier.version
    result["data"] = [str(p) for p in paths]
    return result
