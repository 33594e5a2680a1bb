"""Metrics for the sentiment classifier, overall, per agreement level and beside a lexicon
baseline scored on the very same rows (so the comparison cannot flatter either side); and the
entity-level metrics (:func:`evaluate_entities`) beside the story-level baseline, the story
verdict copied to every entity of the headline, also scored on the very same rows.

:func:`evaluate_candidate` is the retraining pipeline's evaluation stage: it writes a new
version's metrics and int8 check into its card, which the gate
(:func:`newspulse.models.sentiment.registry.gate_candidate`) then reads.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from newspulse.models.sentiment.data import read_entity_csv, read_many
from newspulse.models.sentiment.registry import DataFile, ModelCard, Registry, sha256_file
from newspulse.schema import LABELS

log = logging.getLogger(__name__)

PredictFn = Callable[[Sequence[str]], list[str]]
#: ``quantize=auto`` serves int8 when, on every dev split and checked batch size, it keeps this
#: share of the fp32 predictions and ...
QUANT_MIN_AGREEMENT = 0.99
#: ... its macro-F1 is at most this much below fp32's (issue 16's CPU target).
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
        from newspulse.models.sentiment.lexicon import LexiconClassifier

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


def entity_predictions(classifier, frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """``(entity verdicts, story verdicts)`` for the rows of an entity-level frame
    (:func:`newspulse.models.sentiment.data.read_entity_csv`): each row's entity scored with its mentions
    marked (``score_mentions``; a row whose entity does not occur in its text gets the verdict
    of the unmarked text, as the pipeline's story fallback does), and the unmarked text's story
    verdict, scored once per distinct text."""
    entity_proba = classifier.score_mentions(list(zip(frame["text"], frame["spans"])))
    texts = list(dict.fromkeys(frame["text"]))
    story = dict(zip(texts, (LABELS[i] for i in classifier.predict_proba(texts).argmax(axis=1))))
    return [LABELS[i] for i in entity_proba.argmax(axis=1)], [story[t] for t in frame["text"]]


def entity_metrics(frame: pd.DataFrame, entity_pred: Sequence[str], story_pred: Sequence[str]) -> dict[str, Any]:
    """``n, accuracy, macro_f1, conflict_accuracy, conflict_n`` of the entity verdicts, and the
    same figures for the story-level baseline under ``story_baseline``. Conflict rows are the
    rows of headlines (``id``) whose gold entity labels disagree: there a story verdict copied
    to every entity is wrong for at least one of them, so they measure what marking buys."""
    gold = frame["label"].tolist()
    conflict = frame.groupby("id")["label"].transform("nunique").gt(1).to_numpy()

    def figures(pred: Sequence[str]) -> dict[str, Any]:
        m = classification_metrics(gold, pred)
        hits = np.asarray(pred, dtype=object) == np.asarray(gold, dtype=object)
        n_conflict = int(conflict.sum())
        return {
            "n": m["n"],
            "accuracy": round(m["accuracy"], 4),
            "macro_f1": round(m["macro_f1"], 4),
            "conflict_accuracy": round(float(hits[conflict].mean()), 4) if n_conflict else None,
            "conflict_n": n_conflict,
        }

    return {**figures(entity_pred), "unmatched_n": int((~frame["spans"].map(bool)).sum()), "story_baseline": figures(story_pred)}


def evaluate_entities(classifier, frame: pd.DataFrame) -> dict[str, Any]:
    """``newspulse model evaluate-entities``: entity-level metrics of a classifier on the rows
    of :func:`read_entity_frame`, with the story-level baseline measured in the same run."""
    return {**entity_metrics(frame, *entity_predictions(classifier, frame)), "model_version": classifier.version}


def read_entity_frame(paths: Sequence[Path | str]) -> pd.DataFrame:
    """The rows of several entity-level files; ids are prefixed by file so that two files'
    headline groups never merge."""
    frames = []
    for k, path in enumerate(paths):
        frame = read_entity_csv(path)
        frame["id"] = f"{k}:" + frame["id"]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def eval_fingerprint(files: list[Path]) -> str:
    """Identity of the fixed evaluation split: the hashes of its files."""
    return hashlib.sha256("".join(sorted(sha256_file(p) for p in files)).encode()).hexdigest()[:16]


def evaluate_candidate(registry: Registry, version: str, dev_files: list[Path], eval_files: list[Path], *, entity_dev_files: Sequence[Path] = (), quantize_check: bool = True) -> ModelCard:
    """Fill in a version's card: dev metrics (with lexicon baseline, per agreement level and per
    data set), metrics on the fixed evaluation split, entity-level dev metrics beside the story
    baseline (``metrics["entities"]``, when ``entity_dev_files`` are given) and the int8
    quantisation check, which covers the entity verdicts too."""
    from newspulse.models.backends.onnx import MentionCheck, OnnxUnavailable, int8_check, onnx_path
    from newspulse.models.sentiment.predict import SentimentModel

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
    mentions = None
    if entity_dev_files:
        entities = read_entity_frame(entity_dev_files)
        entity_pred, story_pred = entity_predictions(clf, entities)
        card.metrics["entities"] = {**entity_metrics(entities, entity_pred, story_pred), "data": entity_data(entity_dev_files)}
        mentions = MentionCheck(items=list(zip(entities["text"], entities["spans"])), labels=entities["label"].tolist(), reference=entity_pred)
    if quantize_check:
        card.quantization = int8_check(registry.version_dir(version), card, dev["text"].tolist(), dev["label"].tolist(), dev_pred, QUANT_MIN_AGREEMENT, QUANT_MAX_F1_DROP, mentions=mentions, sources=dev["source"].tolist())
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
    from newspulse.models.sentiment.predict import SentimentModel

    clf = SentimentModel.from_dir(registry.version_dir(version), device="cpu", quantize="off")
    return float(evaluate_frame(clf.predict, read_many(files), lexicon=False, by_source=False)["macro_f1"])


def entity_data(files: Sequence[Path | str]) -> list[dict[str, str]]:
    """The entity dev files pinned by hash: the gate compares two cards' entity figures only
    when they were measured on the same rows."""
    return [{"path": str(p), "sha256": sha256_file(Path(p))} for p in files]


def entity_macro_f1(registry: Registry, version: str, files: Sequence[Path | str]) -> float:
    """Entity-level macro-F1 of ``version`` on ``files``: the gate's measure of a production
    model whose card has no entity figures on the candidate's entity dev rows."""
    from newspulse.models.sentiment.predict import SentimentModel

    clf = SentimentModel.from_dir(registry.version_dir(version), device="cpu", quantize="off")
    frame = read_entity_frame(files)
    return float(entity_metrics(frame, *entity_predictions(clf, frame))["macro_f1"])
