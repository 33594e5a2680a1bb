"""Labelled topic data (Reuters-21578 ModApte CSVs) and multi-label metrics.

A topic file has the columns ``text,labels`` (``labels`` ``;``-separated category ids); other
columns are ignored. Bad files fail loudly naming the file, because a silently empty label column
would make every story "unlabelled" and every metric meaningless.

Macro-F1 averages the per-category F1 over every category that is in the gold labels *or* was
predicted (a category predicted but never true counts with F1 0; one neither true nor predicted
has no defined F1 and is left out). On the ModApte test split all 90 categories have test stories,
so this is the usual 90-category macro-F1 there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from newspulse.models.sentiment.data import DATA_DIR, DataError

TOPICS_DIR = DATA_DIR / "topics"
TOPICS_TRAIN = TOPICS_DIR / "train.csv"
TOPICS_DEV = TOPICS_DIR / "dev.csv"
CATEGORIES_TXT = TOPICS_DIR / "categories.txt"


def read_categories(path: Path = CATEGORIES_TXT) -> list[str]:
    """The ModApte categories, most frequent first (one per line)."""
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def split_labels(value: object) -> list[str]:
    """``"grain;wheat"`` → ``["grain", "wheat"]`` (blanks dropped, order kept)."""
    return [part.strip() for part in str(value).split(";") if part.strip()]


def read_topics_csv(path: Path | str) -> pd.DataFrame:
    """``text, labels`` (labels as lists) from a topic CSV; :class:`DataError` on a missing file or
    column or a row without text."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV ({err})") from err
    missing = {"text", "labels"} - set(df.columns)
    if missing:
        raise DataError(f"{path}: missing column(s) {sorted(missing)}; expected text,labels (labels ;-separated)")
    empty = df.index[df["text"].str.strip() == ""]
    if len(empty):
        raise DataError(f"{path}: empty text on line(s) {[int(i) + 2 for i in empty[:10]]}")
    return pd.DataFrame({"text": df["text"], "labels": df["labels"].map(split_labels)})


def label_matrix(labels: Sequence[Sequence[str]], categories: Sequence[str]) -> np.ndarray:
    """0/1 matrix (rows = stories, columns = ``categories``); labels outside ``categories`` are
    ignored here (:func:`multilabel_metrics` still counts them as missed)."""
    index = {c: j for j, c in enumerate(categories)}
    y = np.zeros((len(labels), len(categories)), dtype=np.int8)
    for i, row in enumerate(labels):
        for label in row:
            j = index.get(label)
            if j is not None:
                y[i, j] = 1
    return y


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def multilabel_metrics(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Micro/macro P, R, F1 and per-category P/R/F1/support over two lists of label sets."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold rows but {len(predicted)} predicted rows")
    counts: dict[str, list[int]] = {}  # category → [tp, fp, fn]
    exact = 0
    for g, p in zip(gold, predicted):
        g, p = set(g), set(p)
        exact += g == p
        for c in g | p:
            row = counts.setdefault(c, [0, 0, 0])
            row[0] += c in g and c in p
            row[1] += c in p and c not in g
            row[2] += c in g and c not in p
    tp, fp, fn = (sum(row[k] for row in counts.values()) for k in range(3))
    per_class = {
        c: {
            "precision": t / (t + f_p) if t + f_p else 0.0,
            "recall": t / (t + f_n) if t + f_n else 0.0,
            "f1": _f1(t, f_p, f_n),
            "support": t + f_n,
        }
        for c, (t, f_p, f_n) in sorted(counts.items(), key=lambda kv: (-(kv[1][0] + kv[1][2]), kv[0]))
    }
    return {
        "n": len(gold),
        "micro_precision": tp / (tp + fp) if tp + fp else 0.0,
        "micro_recall": tp / (tp + fn) if tp + fn else 0.0,
        "micro_f1": _f1(tp, fp, fn),
        "macro_f1": float(np.mean([m["f1"] for m in per_class.values()])) if per_class else 0.0,
        "n_classes": len(per_class),
        "exact_match": exact / len(gold) if len(gold) else 0.0,
        "per_class": per_class,
    }
