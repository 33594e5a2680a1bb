"""Issue 26, Topics target: levers for the topic model, measured by 5-fold CV over all of ModApte
train (train + dev, 7,770 stories), each against the recipe shipped before it (``before``: the
headline counted once) on the same folds.

Every arm is nested: each outer fold's training rows are cross-fitted in 4 inner folds (the
shipped ``tune_folds``), the per-category thresholds come from those inner out-of-fold scores
only, and the outer model (trained on all of the outer training rows) is scored on the held-out
fifth. To keep it affordable on the shared machine, each outer fold fits its TF-IDF vocabulary
and idf once on its training rows and the inner folds reuse it (no labels leak; every arm is
treated alike). Margins are cached under .cache/topics_cv/ per arm, so the threshold variants
(floors, rare-category rules) cost nothing extra:

    python experiments/topics_cv.py before title3 title5 title3+balanced   # ~150 s of CPU per arm
    python experiments/topics_cv.py --report                               # tables from the cache

Arms: ``before`` (word 1-2-grams, min_df 2, 60,000 terms, linear SVM C=1, headline once);
``titleN`` (the first line, the headline, counted N times); ``balanced`` (class_weight="balanced"
per SVM); ``C<x>``; combinations joined with ``+`` (``title3+balanced``). Results:
bench/results/topics_cv.json; docs/model.md (Topics).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import KFold
from sklearn.svm import LinearSVC
from tqdm import tqdm

from newspulse.models.topics.model import decide, headline_weighted
from newspulse.models.topics.evaluate import CATEGORIES_TXT, TOPICS_DEV, TOPICS_TRAIN, label_matrix, multilabel_metrics, read_categories, read_topics_csv
from newspulse.models.topics.train import tune_thresholds

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "topics_cv"
OUT = ROOT / "bench" / "results" / "topics_cv.json"
SEED, OUTER, INNER = 13, 5, 4


def arm_config(arm: str) -> dict:
    cfg = {"title": 1, "class_weight": None, "C": 1.0}
    for part in arm.split("+"):
        if part == "before":
            continue
        if part.startswith("title"):
            cfg["title"] = int(part[5:])
        elif part == "balanced":
            cfg["class_weight"] = "balanced"
        elif part.startswith("C"):
            cfg["C"] = float(part[1:])
        else:
            raise SystemExit(f"unknown arm part {part!r}")
    return cfg


def features(fit_texts: list[str], other: list[str]):
    word = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, strip_accents="unicode", min_df=2, max_features=60_000, dtype=np.float32)
    return word.fit_transform(fit_texts).tocsr(), word.transform(other).tocsr()


def margins(x_fit, y_fit, x_score, cfg: dict) -> np.ndarray:
    out = np.full((x_score.shape[0], y_fit.shape[1]), -20.0, dtype=np.float32)
    for j in range(y_fit.shape[1]):
        if 0 < y_fit[:, j].sum() < len(y_fit):
            clf = LinearSVC(C=cfg["C"], class_weight=cfg["class_weight"]).fit(x_fit, y_fit[:, j])
            out[:, j] = clf.decision_function(x_score)
    return out


def run_arm(arm: str, texts: np.ndarray, y: np.ndarray) -> None:
    cfg = arm_config(arm)
    path = CACHE / f"{arm}.npz"
    if path.exists():
        print(f"{arm}: cached")
        return
    started = time.process_time()
    store = {}
    outer = list(KFold(OUTER, shuffle=True, random_state=SEED).split(texts))
    bar = tqdm(total=OUTER * (INNER + 1), desc=arm, unit="fit")
    for k, (tr, te) in enumerate(outer):
        x_tr, x_te = features(headline_weighted(texts[tr], cfg["title"]), headline_weighted(texts[te], cfg["title"]))
        oof = np.zeros((len(tr), y.shape[1]), dtype=np.float32)
        for a, b in KFold(INNER, shuffle=True, random_state=SEED).split(tr):
            oof[b] = margins(x_tr[a], y[tr][a], x_tr[b], cfg)
            bar.update()
        store[f"oof{k}"], store[f"test{k}"] = oof, margins(x_tr, y[tr], x_te, cfg)
        bar.update()
    bar.close()
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, cpu_seconds=time.process_time() - started, **store)


def sigmoid(m: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-m))


def evaluate(arm: str, labels: list[list[str]], y: np.ndarray, cats: list[str], floor: float, rare: tuple[int, float] | None = None) -> dict:
    """Per-fold micro/macro-F1 with thresholds tuned on the inner out-of-fold scores, never below
    margin ``floor``; ``rare = (n, f)`` gives categories with fewer than n training positives the
    floor f instead."""
    with np.load(CACHE / f"{arm}.npz") as z:
        store = dict(z)
    folds = []
    for k, (tr, te) in enumerate(KFold(OUTER, shuffle=True, random_state=SEED).split(y)):
        s_oof, s_te = sigmoid(store[f"oof{k}"]), sigmoid(store[f"test{k}"])
        t = tune_thresholds(s_oof, y[tr], min_positives=2)
        floors = np.full(y.shape[1], floor)
        if rare is not None:
            floors[y[tr].sum(0) < rare[0]] = rare[1]
        t = np.maximum(t, sigmoid(floors))
        m = multilabel_metrics([labels[i] for i in te], decide(s_te, t, cats))
        folds.append({"micro_f1": round(m["micro_f1"], 4), "macro_f1": round(m["macro_f1"], 4), "micro_recall": round(m["micro_recall"], 4),
                      "macro_recall_rare": _rare_recall(m, y[tr], cats)})
    out = {"per_fold": folds}
    for key in ("micro_f1", "macro_f1", "macro_recall_rare"):
        vals = [f[key] for f in folds]
        out[f"{key}_mean"], out[f"{key}_std"] = round(float(np.mean(vals)), 4), round(float(np.std(vals)), 4)
    out["cpu_seconds"] = round(float(store["cpu_seconds"]), 1)
    return out


def _rare_recall(m: dict, y_tr: np.ndarray, cats: list[str], below: int = 20) -> float:
    """Mean recall over the categories with fewer than ``below`` training stories in this fold
    (and at least one held-out one)."""
    counts = dict(zip(cats, y_tr.sum(0)))
    vals = [v["recall"] for c, v in m["per_class"].items() if counts.get(c, 0) < below and v["support"] > 0]
    return round(float(np.mean(vals)), 4) if vals else 0.0


def report(labels, y, cats) -> None:
    arms = sorted(p.stem for p in CACHE.glob("*.npz"))
    variants = {"floor-0.5": (-0.5, None), "floor-0.25": (-0.25, None), "floor-0.75": (-0.75, None), "floor-1.0": (-1.0, None),
                "floor-0.5,rare<20:-0.75": (-0.5, (20, -0.75))}
    results = {}
    ref = evaluate("before", labels, y, cats, -0.5) if "before" in arms else None
    for arm in arms:
        for name, (floor, rare) in variants.items():
            r = evaluate(arm, labels, y, cats, floor, rare)
            if ref is not None:
                d_mi = [f["micro_f1"] - g["micro_f1"] for f, g in zip(r["per_fold"], ref["per_fold"])]
                d_ma = [f["macro_f1"] - g["macro_f1"] for f, g in zip(r["per_fold"], ref["per_fold"])]
                r["vs_before_per_fold"] = {"micro_f1": [round(d, 4) for d in d_mi], "macro_f1": [round(d, 4) for d in d_ma]}
            results[f"{arm} | {name}"] = {
                "micro_f1": [r["micro_f1_mean"], r["micro_f1_std"]], "macro_f1": [r["macro_f1_mean"], r["macro_f1_std"]],
                "rare_recall": r["macro_recall_rare_mean"], "per_fold_micro_f1": [f["micro_f1"] for f in r["per_fold"]],
                "per_fold_macro_f1": [f["macro_f1"] for f in r["per_fold"]], "cpu_seconds": r["cpu_seconds"],
                **({"delta_micro_f1_per_fold": r["vs_before_per_fold"]["micro_f1"], "delta_macro_f1_per_fold": r["vs_before_per_fold"]["macro_f1"]} if ref else {})}
            print(f"{arm:28s} {name:26s} micro {r['micro_f1_mean']:.4f} ± {r['micro_f1_std']:.4f}  macro {r['macro_f1_mean']:.4f} ± {r['macro_f1_std']:.4f}"
                  f"  rare-recall {r['macro_recall_rare_mean']:.3f}"
                  + (f"  Δmicro/fold {' '.join(f'{d:+.3f}' for d in r['vs_before_per_fold']['micro_f1'])}"
                     f"  Δmacro/fold {' '.join(f'{d:+.3f}' for d in r['vs_before_per_fold']['macro_f1'])}" if ref else ""))
    OUT.write_text(json.dumps({
        "what": "mean, std over folds; delta = arm minus before (headline once, floor -0.5) per fold; nested 5-fold CV over ModApte train + dev (7,770 stories), KFold seed 13; thresholds from 4 inner folds of each outer training set",
        "machine": f"{platform.machine()}, 2 cores shared by 8 jobs (load average 15-20)", "script": "experiments/topics_cv.py",
        "results": results}, indent=1) + "\n")
    print(f"wrote {OUT}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("arms", nargs="*")
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    cats = read_categories(CATEGORIES_TXT)
    both = read_topics_csv(TOPICS_TRAIN)
    import pandas as pd
    both = pd.concat([both, read_topics_csv(TOPICS_DEV)], ignore_index=True)
    texts, labels = both["text"].to_numpy(dtype=object), both["labels"].tolist()
    y = label_matrix(labels, cats)
    for arm in args.arms:
        run_arm(arm, texts, y)
    if args.report:
        report(labels, y, cats)


if __name__ == "__main__":
    main()
