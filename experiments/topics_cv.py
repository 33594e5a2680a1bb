"""Issue 26, Topics target: levers for the topic model, measured by 5-fold CV over all of ModApte
train (train + dev, 7,770 stories), each against the recipe with the headline counted three times
(``title3``, :data:`REFERENCE`) on the same folds.

Every arm is nested: each outer fold's training rows are cross-fitted in 4 inner folds (the
shipped ``tune_folds``), the per-category thresholds come from those inner out-of-fold scores
only, and the outer model (trained on all of the outer training rows) is scored on the held-out
fifth. To keep it affordable on the shared machine, each outer fold fits its TF-IDF vocabulary
and idf once on its training rows and the inner folds reuse it (no labels leak; every arm is
treated alike). Margins are cached under .cache/topics_cv/ per arm, so threshold variants
(floors per frequency band, micro-F1 tuning), per-band mixes of arms and late fusion cost
nothing extra:

    python experiments/topics_cv.py title3 title3+C2 title3+balanced+lt20   # ~150-300 s of CPU per arm
    python experiments/topics_cv.py --report                                # every cached arm, every variant
    python experiments/topics_cv.py --report title3+C2/title3+balanced+lt20@20 --variants floor-0.5

Arm parts, joined with ``+`` over ``before`` (word 1-2-grams, min_df 2, 60,000 terms, sublinear
tf, linear SVM C=1, headline once): ``titleN`` (the headline counted N times); ``C<x>``;
``balanced`` / ``sqrtbal`` (class weights n / (2 n_class), or their square root); ``ng<N>`` (word
1..N-grams); ``mindf<N>``; ``mf<K>`` (the K thousand most frequent terms, ``mf0`` all);
``nosub`` (raw tf); ``char`` (a second TF-IDF block of char_wb 3-5-grams, the one the shipped
recipe stacks beside the words: min_df 2, the same term cap, sublinear tf); ``lt<N>`` (fit only the
categories with fewer than N training stories, the others from the arm without its classifier
parts). Specs for ``--report``: an arm; ``A/B@N`` (arm B for the categories with fewer than N
training stories, A for the rest); ``A&B`` (mean of the two arms' margins). Results:
bench/results/topics_cv.json; docs/model.md (Topics).
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import time
from pathlib import Path

import numpy as np
from scipy import sparse
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


#: The arm every other one is compared with: the recipe before C and class weights per frequency
#: band (headline counted three times, C = 1 for every category).
REFERENCE = "title3"
#: The spec and threshold variant the bundled model is trained with (models/topics/train.py). Its
#: arms (the char block with the shipped C per frequency band) are not run here: the figures for
#: it are the ones `make topics-model` measures through the product's own training code, with the
#: vocabulary refitted in every inner fold (docs/model.md, Topics).
SHIPPED = "title3+char+C2/title3+char+balanced+lt20@20 | floor-0.5"


def arm_config(arm: str) -> dict:
    """Settings of ``arm``: ``+``-joined parts over the recipe with the headline once."""
    cfg = {"title": 1, "class_weight": None, "C": 1.0, "ngram": 2, "min_df": 2, "max_features": 60_000, "sublinear": True, "char": False, "band": None}
    for part in arm.split("+"):
        if part == "before":
            continue
        if part.startswith("title"):
            cfg["title"] = int(part[5:])
        elif part in ("balanced", "sqrtbal"):
            cfg["class_weight"] = part
        elif part.startswith("C"):
            cfg["C"] = float(part[1:])
        elif part.startswith("ng"):
            cfg["ngram"] = int(part[2:])
        elif part.startswith("mindf"):
            cfg["min_df"] = int(part[5:])
        elif part.startswith("mf"):
            cfg["max_features"] = int(part[2:]) * 1000 or None
        elif part == "nosub":
            cfg["sublinear"] = False
        elif part == "char":
            cfg["char"] = True
        elif part.startswith("lt"):
            cfg["band"] = int(part[2:])
        else:
            raise SystemExit(f"unknown arm part {part!r}")
    return cfg


def features(fit_texts: list[str], other: list[str], cfg: dict):
    """TF-IDF of word n-grams (and with ``char``, a second block of char_wb 3-5-grams, each block
    L2-normalised and the two scaled by 1/sqrt 2 so a row keeps unit norm)."""
    word = TfidfVectorizer(ngram_range=(1, cfg["ngram"]), sublinear_tf=cfg["sublinear"], strip_accents="unicode", min_df=cfg["min_df"],
                           max_features=cfg["max_features"], dtype=np.float32)
    blocks = [(word.fit_transform(fit_texts), word.transform(other))]
    if cfg["char"]:
        char = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, strip_accents="unicode", min_df=2,
                               max_features=cfg["max_features"], dtype=np.float32)
        blocks.append((char.fit_transform(fit_texts), char.transform(other)))
    if len(blocks) == 1:
        return blocks[0][0].tocsr(), blocks[0][1].tocsr()
    scale = np.float32(1 / np.sqrt(len(blocks)))
    return (sparse.hstack([a for a, _ in blocks]).tocsr() * scale, sparse.hstack([b for _, b in blocks]).tocsr() * scale)


def _class_weight(kind: str | None, y: np.ndarray) -> dict | str | None:
    """``sqrtbal``: the square root of sklearn's balanced weights (n / (2 n_class))."""
    if kind != "sqrtbal":
        return kind
    n, pos = len(y), int(y.sum())
    return {0: float(np.sqrt(n / (2 * (n - pos)))), 1: float(np.sqrt(n / (2 * pos)))}


def margins(x_fit, y_fit, x_score, cfg: dict, columns: np.ndarray) -> np.ndarray:
    """Margins of one SVM per category in ``columns`` (others NaN: a band arm fits only its band)."""
    out = np.full((x_score.shape[0], y_fit.shape[1]), np.nan, dtype=np.float32)
    out[:, columns] = -20.0
    for j in np.flatnonzero(columns):
        if 0 < y_fit[:, j].sum() < len(y_fit):
            clf = LinearSVC(C=cfg["C"], class_weight=_class_weight(cfg["class_weight"], y_fit[:, j]), max_iter=5000 if cfg["class_weight"] else 1000)
            out[:, j] = clf.fit(x_fit, y_fit[:, j]).decision_function(x_score)
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
        x_tr, x_te = features(headline_weighted(texts[tr], cfg["title"]), headline_weighted(texts[te], cfg["title"]), cfg)
        columns = np.ones(y.shape[1], dtype=bool) if cfg["band"] is None else y[tr].sum(0) < cfg["band"]
        oof = np.zeros((len(tr), y.shape[1]), dtype=np.float32)
        for a, b in KFold(INNER, shuffle=True, random_state=SEED).split(tr):
            oof[b] = margins(x_tr[a], y[tr][a], x_tr[b], cfg, columns)
            bar.update()
        store[f"oof{k}"], store[f"test{k}"] = oof, margins(x_tr, y[tr], x_te, cfg, columns)
        bar.update()
    bar.close()
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, cpu_seconds=time.process_time() - started, **store)


def sigmoid(m: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-m))


_CLASSIFIER_PARTS = ("C", "balanced", "sqrtbal", "lt")


def _outer_counts(y: np.ndarray) -> list[np.ndarray]:
    """Training stories per category in each outer fold (the frequency bands are defined on them)."""
    return [y[tr].sum(0) for tr, _ in KFold(OUTER, shuffle=True, random_state=SEED).split(y)]


def load_margins(spec: str, y: np.ndarray) -> dict[str, np.ndarray]:
    """Cached margins of ``spec``: an arm; ``A/B@n``, arm A's margins for the categories with at
    least n training stories and arm B's for the rest (one-vs-rest fits are independent, so this
    is exactly training each frequency band with its own settings); ``A&B``, the mean of two arms'
    margins (late fusion). A band arm (``...+lt20``) has its other categories from the same
    features' full arm (the arm without its classifier parts)."""
    if "/" in spec:
        freq, rest = spec.split("/")
        rare, below = rest.rsplit("@", 1)
        a, b = load_margins(freq, y), load_margins(rare, y)
        out = {"cpu_seconds": np.float64(float(a["cpu_seconds"]) + float(b["cpu_seconds"]))}
        for k, counts in enumerate(_outer_counts(y)):
            for key in (f"oof{k}", f"test{k}"):
                out[key] = np.where(counts < int(below), b[key], a[key])
        return out
    if "&" in spec:
        parts = [load_margins(p, y) for p in spec.split("&")]
        out = {key: np.mean([p[key] for p in parts], axis=0) for key in parts[0] if key != "cpu_seconds"}
        out["cpu_seconds"] = np.float64(sum(float(p["cpu_seconds"]) for p in parts))
        return out
    with np.load(CACHE / f"{spec}.npz") as z:
        store = dict(z)
    if arm_config(spec)["band"] is not None:
        base = "+".join(p for p in spec.split("+") if not p.startswith(_CLASSIFIER_PARTS)) or "before"
        full = load_margins(base, y)
        for key, value in store.items():
            if key != "cpu_seconds":
                store[key] = np.where(np.isnan(value), full[key], value)
        store["cpu_seconds"] = np.float64(float(store["cpu_seconds"]) + float(full["cpu_seconds"]))
    return store


def micro_thresholds(scores: np.ndarray, y: np.ndarray, start: np.ndarray, tune: np.ndarray, passes: int = 2) -> np.ndarray:
    """Coordinate ascent on micro-F1 over ``scores`` (the inner out-of-fold scores): each category
    in ``tune`` in turn gets the cut that maximises the micro-F1 of all categories together, the
    others held fixed, starting from ``start``. Per-category F1 is not what micro-F1 rewards: a
    frequent category's marginal story is worth accepting when its chance of being right exceeds
    half the micro-F1, not half its own F1."""
    t = start.astype(np.float64).copy()
    pred = scores >= t
    tp_k, fp_k = (pred & (y == 1)).sum(0), (pred & (y == 0)).sum(0)
    positives = int(y.sum())
    for _ in range(passes):
        for j in np.flatnonzero(tune):
            tp_o, fp_o = int(tp_k.sum() - tp_k[j]), int(fp_k.sum() - fp_k[j])
            order = np.argsort(-scores[:, j], kind="stable")
            s = scores[order, j]
            tp = np.concatenate([[0], np.cumsum(y[order, j])])
            fp = np.arange(len(s) + 1) - tp
            f1 = 2 * (tp_o + tp) / (tp_o + tp + fp_o + fp + positives)
            best = int(np.argmax(f1))
            t[j] = s[0] + 1e-6 if best == 0 else (s[best - 1] + (s[best] if best < len(s) else s[best - 1] / 2)) / 2
            tp_k[j], fp_k[j] = tp[best], fp[best]
    return t.astype(np.float32)


#: Threshold rules: the floor (a margin) below which no category's threshold goes; ``rare`` =
#: (n, f) gives categories with fewer than n training stories the floor f; ``micro`` = n retunes
#: the categories with at least n training stories for micro-F1 (:func:`micro_thresholds`).
VARIANTS: dict[str, dict] = {
    "floor-0.5": {"floor": -0.5},
    "floor-0.75": {"floor": -0.75},
    "floor-0.5,rare<20:-0.75": {"floor": -0.5, "rare": (20, -0.75)},
    "floor-0.5,rare<50:-0.75": {"floor": -0.5, "rare": (50, -0.75)},
    "floor-0.5,micro>=20": {"floor": -0.5, "micro": 20},
    "floor-0.5,micro>=2": {"floor": -0.5, "micro": 2},
    "floor-0.5,rare<20:-0.75,micro>=20": {"floor": -0.5, "rare": (20, -0.75), "micro": 20},
}


def evaluate(spec: str, labels: list[list[str]], y: np.ndarray, cats: list[str], floor: float, rare: tuple[int, float] | None = None,
             micro: int | None = None) -> dict:
    """Per-fold micro/macro-F1 with thresholds tuned on the inner out-of-fold scores (per-category
    F1, never below margin ``floor``; see :data:`VARIANTS` for ``rare`` and ``micro``)."""
    store = load_margins(spec, y)
    folds = []
    for k, (tr, te) in enumerate(KFold(OUTER, shuffle=True, random_state=SEED).split(y)):
        s_oof, s_te = sigmoid(store[f"oof{k}"]), sigmoid(store[f"test{k}"])
        counts = y[tr].sum(0)
        floors = np.full(y.shape[1], floor)
        if rare is not None:
            floors[counts < rare[0]] = rare[1]
        t = np.maximum(tune_thresholds(s_oof, y[tr], min_positives=2), sigmoid(floors))
        if micro is not None:
            t = np.maximum(micro_thresholds(s_oof, y[tr], t, counts >= micro), sigmoid(floors))
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


def report(labels, y, cats, specs: list[str], variants: list[str]) -> None:
    """Every spec under every threshold variant, each with its per-fold difference from the
    shipped recipe (:data:`REFERENCE`, floor -0.5); writes :data:`OUT`, keeping the rows of arms
    measured before against their own reference under ``earlier``."""
    ref = evaluate(REFERENCE, labels, y, cats, -0.5)
    results = {}
    for spec in specs:
        for name in variants:
            r = evaluate(spec, labels, y, cats, **VARIANTS[name])
            d_mi = [round(f["micro_f1"] - g["micro_f1"], 4) for f, g in zip(r["per_fold"], ref["per_fold"])]
            d_ma = [round(f["macro_f1"] - g["macro_f1"], 4) for f, g in zip(r["per_fold"], ref["per_fold"])]
            results[f"{spec} | {name}"] = {
                "micro_f1": [r["micro_f1_mean"], r["micro_f1_std"]], "macro_f1": [r["macro_f1_mean"], r["macro_f1_std"]],
                "rare_recall": r["macro_recall_rare_mean"], "per_fold_micro_f1": [f["micro_f1"] for f in r["per_fold"]],
                "per_fold_macro_f1": [f["macro_f1"] for f in r["per_fold"]], "cpu_seconds": r["cpu_seconds"],
                "delta_micro_f1_per_fold": d_mi, "delta_macro_f1_per_fold": d_ma}
            print(f"{spec:30s} {name:34s} micro {r['micro_f1_mean']:.4f} ± {r['micro_f1_std']:.4f}  macro {r['macro_f1_mean']:.4f} ± {r['macro_f1_std']:.4f}"
                  f"  rare-recall {r['macro_recall_rare_mean']:.3f}  Δmicro {np.mean(d_mi):+.4f} [{' '.join(f'{d:+.3f}' for d in d_mi)}]"
                  f"  Δmacro {np.mean(d_ma):+.4f} [{' '.join(f'{d:+.3f}' for d in d_ma)}]", flush=True)
    previous = json.loads(OUT.read_text()) if OUT.is_file() else {}
    earlier = previous.get("earlier") or {"what": previous.get("what"), "results": {
        k: v for k, v in previous.get("results", {}).items() if k.split(" | ")[0] not in specs}}
    text = json.dumps({
        "what": f"mean, std over folds; delta = arm minus the recipe before ({REFERENCE}, floor -0.5) per fold; nested 5-fold CV over ModApte train + dev "
                "(7,770 stories), KFold seed 13; thresholds from 4 inner folds of each outer training set",
        "machine": f"{platform.machine()}, 2 cores shared with other sessions and a model training (load average 2-8)", "script": "experiments/topics_cv.py",
        "shipped": SHIPPED, "results": results, "earlier": earlier}, indent=1)
    # number lists on one line each: a row per result stays readable in a diff
    OUT.write_text(re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text) + "\n")
    print(f"wrote {OUT}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("arms", nargs="*", help="arms to fit (cached ones are skipped)")
    ap.add_argument("--report", nargs="*", metavar="SPEC", help="tables for these specs (default: every cached arm)")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    args = ap.parse_args()
    cats = read_categories(CATEGORIES_TXT)
    both = read_topics_csv(TOPICS_TRAIN)
    import pandas as pd
    both = pd.concat([both, read_topics_csv(TOPICS_DEV)], ignore_index=True)
    texts, labels = both["text"].to_numpy(dtype=object), both["labels"].tolist()
    y = label_matrix(labels, cats)
    for arm in args.arms:
        run_arm(arm, texts, y)
    if args.report is not None:
        report(labels, y, cats, args.report or sorted(p.stem for p in CACHE.glob("*.npz")), args.variants)


if __name__ == "__main__":
    main()
