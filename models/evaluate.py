"""Metrics for the sentiment classifier, overall, per agreement level and beside a lexicon
baseline scored on the very same rows (so the comparison cannot flatter either side).

:func:`evaluate_candidate` is the retraining pipeline's evaluation stage: it writes a new
version's metrics and int8 check into its card, which the gate
(:func:`newspulse.models.registry.gate_candidate`) then reads.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from newspulse.models.data import read_many
from newspulse.models.registry import DataFile, ModelCard, Registry, sha256_file
from newspulse.schema import LABELS

log = logging.getLogger(__name__)

PredictFn = Callable[[Sequence[str]], list[str]]
#: ``quantize=auto`` serves int8 when it keeps this share of the fp32 dev predictions, or ...
QUANT_MIN_AGREEMENT = 0.99
#: ... when its dev macro-F1 is at most this much below fp32's (issue 16's CPU target).
QUANT_MAX_F1_DROP = 0.005


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


def eval_fingerprint(files: list[Path]) -> str:
    """Identity of the fixed evaluation split: the hashes of its files."""
    return hashlib.sha256("".join(sorted(sha256_file(p) for p in files)).encode()).hexdigest()[:16]


def evaluate_candidate(registry: Registry, version: str, dev_files: list[Path], eval_files: list[Path], *, quantize_check: bool = True) -> ModelCard:
    """Fill in a version's card: dev metrics (with lexicon baseline, per agreement level and per
    data set), metrics on the fixed evaluation split, and the int8 quantisation check."""
    from newspulse.models.onnx_backend import OnnxUnavailable, int8_check, onnx_path
    from newspulse.models.predict import SentimentModel

    card = registry.card(version)
    clf = SentimentModel.from_dir(registry.version_dir(version), device="cpu", quantize="off", backend="torch", card=card)
    dev = read_many(dev_files)
    dev_proba = clf.predict_proba(dev["text"].tolist())
    dev_pred = [LABELS[i] for i in dev_proba.argmax(axis=1)]
    card.metrics["dev"] = evaluate_frame(lambda _texts: dev_pred, dev)
    eval_files = [Path(p) for p in eval_files]
    if [Path(p) for p in dev_files] == eval_files:
        card.metrics["eval"] = {k: v for k, v in card.metrics["dev"].items() if k != "lexicon"}
    else:
        card.metrics["eval"] = evaluate_frame(clf.predict, read_many(eval_files), lexicon=False)
    card.eval_split = eval_fingerprint(eval_files)
    card.eval_files = DataFile.pin(eval_files)
    if quantize_check:
        card.quantization = int8_check(registry.version_dir(version), card, dev["text"].tolist(), dev["label"].tolist(), dev_pred, QUANT_MIN_AGREEMENT, QUANT_MAX_F1_DROP)
        # The check left the int8 export in the version folder; build the fp32 one too, so that
        # processes mounting the registry read-only (the compose processors) serve either
        # precision without building anything.
        try:
            onnx_path(registry.version_dir(version), "fp32")
        except OnnxUnavailable as exc:  # then fp32 falls back to torch; int8 still works
            log.warning("could not build the fp32 ONNX export of %s: %s", version, exc)
    registry.write_card(card)
    return card


def split_macro_f1(registry: Registry, version: str, files: list[Path]) -> float:
    """Macro-F1 of ``version`` on the labelled ``files``: the gate's measure of production on a
    candidate's evaluation split when production was evaluated on another one."""
    from newspulse.models.predict import SentimentModel

    clf = SentimentModel.from_dir(registry.version_dir(version), device="cpu", quantize="off")
    return float(evaluate_frame(clf.predict, read_many(files), lexicon=False, by_source=False)["macro_f1"])
