"""Issue 26, item 2: out-of-fold soft labels from the accurate tier's recipe.

A teacher that scores the rows it was trained on agrees with their gold label almost everywhere
(``train-v4``: 94-95 %, mean top probability 0.95), so its targets teach the student little. Here
the default retraining's rows (:func:`teacher_labels.training_rows`) are cut into ``--folds``
folds (stratified by source and label; the SEntFiN rows of one headline stay in one fold, so no
teacher sees a headline it labels under another company's mark), one all-mpnet-base-v2 teacher
per fold is trained with the accurate tier's recipe (3 epochs, bf16 where the CPU has it) on the
other folds, and each row is labelled by the teacher that did not see it.

Each fold is its own resumable run (``--fold K``; run two folds side by side on two cores), its
checkpoint under ``--workdir``; ``--label VERSION`` writes the artifact once every fold's teacher
is registered:

    NEWSPULSE_ACCURATE_BASE_MODEL=DIR/all-mpnet-base-v2 \\
        python experiments/teacher_folds.py --workdir /scratch/folds --fold 0
    python experiments/teacher_folds.py --workdir /scratch/folds --label v5

Written to ``data/soft_labels/train-<version>.csv.gz`` with its manifest (``"kind":
"training-rows"``, every fold teacher pinned by sha256).
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from newspulse.models.sentiment.config import TrainConfig
from newspulse.models.sentiment.registry import Registry
from newspulse.models.sentiment.train import train
from newspulse.settings import load_settings
from teacher_labels import ROOT, teacher_probs, training_rows, write_artifact  # the sibling script

_MARK = re.compile(r"\[\[(.*?)\]\]")


def assign_folds(frame: pd.DataFrame, folds: int, seed: int) -> np.ndarray:
    """Each row's fold: groups (a headline, whichever company it marks; any other text alone)
    dealt round-robin in a seeded order within each (source, label), so every fold gets the same
    mix of sources and labels."""
    groups = frame["text"].map(lambda t: _MARK.sub(r"\1", t))
    first = frame.groupby(groups, sort=False).head(1)
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    for _, stratum in first.groupby(["source", "label"], sort=True):
        for rank, row in enumerate(rng.permutation(stratum.index.to_numpy())):
            fold_of[groups[row]] = rank % folds
    return groups.map(fold_of).to_numpy()


def fold_files(frame: pd.DataFrame, fold_ids: np.ndarray, fold: int, workdir: Path) -> list[Path]:
    """The rows outside ``fold`` as one ``text,label,agreement`` CSV per source, in a folder named
    after it (the trainer reads a file's source, and its licence, from that folder's name)."""
    out = []
    keep = frame[fold_ids != fold]
    for source, rows in keep.groupby("source", sort=True):
        path = workdir / f"fold{fold}" / str(source) / "train.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows[["text", "label", "agreement"]].to_csv(path, index=False)
        out.append(path)
    return out


def train_fold(workdir: Path, fold: int, folds: int, seed: int, fold_seed: int) -> str:
    """Train (or resume) the teacher of ``fold`` into ``workdir/registry-fold{fold}``; its version."""
    frame = training_rows()
    files = fold_files(frame, assign_folds(frame, folds, fold_seed), fold, workdir)
    settings = load_settings(model_registry=workdir / f"registry-fold{fold}")
    cfg = TrainConfig.production(
        settings, "accurate", seed=seed, train_files=files, checkpoint_dir=workdir / f"checkpoint-fold{fold}",
        include_feedback=False, role="teacher", promote=False, quantize_check=False,
    )
    return train(cfg).version


def label(workdir: Path, folds: int, fold_seed: int, version: str, cache: Path, batch_size: int) -> dict:
    """Each row's probabilities from the fold teacher that did not train on it; the artifact's manifest."""
    frame = training_rows()
    fold_ids = assign_folds(frame, folds, fold_seed)
    texts = frame["text"].tolist()
    probs = np.zeros((len(texts), 3), dtype=np.float32)
    members = []
    for fold in range(folds):
        registry = Registry(workdir / f"registry-fold{fold}")
        versions = registry.list_versions()
        if not versions:
            raise SystemExit(f"fold {fold} has no teacher yet: run --fold {fold} first")
        rows = np.flatnonzero(fold_ids == fold)
        fold_probs, member = teacher_probs(registry.version_dir(versions[-1]), [texts[i] for i in rows], cache, batch_size)
        probs[rows] = fold_probs
        members.append(member | {"fold": fold, "labelled_rows": int(len(rows))})
    teacher = (
        f"out-of-fold probabilities of {folds} all-mpnet-base-v2 classifiers (the accurate tier's recipe), "
        f"each trained on the other {folds - 1} folds of the bundled train splits and labelling only its own fold (fold seed {fold_seed})"
    )
    made_by = f"python experiments/teacher_folds.py --workdir DIR --folds {folds} --fold-seed {fold_seed} --label {version}"
    return write_artifact(version, frame, probs, members, teacher, made_by)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, required=True, help="scratch folder outside git: fold files, registries, checkpoints")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--fold-seed", type=int, default=0, help="seed of the fold assignment")
    ap.add_argument("--seed", type=int, default=42, help="training seed of every fold teacher")
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--fold", type=int, help="train (or resume) this fold's teacher")
    what.add_argument("--label", metavar="VERSION", help="write data/soft_labels/train-VERSION.csv.gz from every fold's teacher")
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache" / "teacher_labels", help="where each teacher's probabilities are kept")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    if args.fold is not None:
        if not 0 <= args.fold < args.folds:
            raise SystemExit(f"--fold must be in 0..{args.folds - 1}")
        print(train_fold(args.workdir, args.fold, args.folds, args.seed, args.fold_seed))
    else:
        manifest = label(args.workdir, args.folds, args.fold_seed, args.label, args.cache, args.batch_size)
        print(json.dumps({k: manifest[k] for k in ("file", "rows", "sha256", "bytes")}, indent=2))


if __name__ == "__main__":
    main()
