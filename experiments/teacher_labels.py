"""Issue 26, item 2: the soft-label artifact from the accurate tier's models (the teachers
experiments/teacher_curve.py trains, one per seed), for the default retraining to distil from.

It labels every row the default retraining trains on (the bundled PhraseBank, Twitter and SEntFiN
train splits with dev and evaluation sentences removed, SEntFiN rows with their company marked:
:func:`~newspulse.models.sentiment.train.load_training_frame`), so each soft label is a second
target of its gold row (``"kind": "training-rows"``). Several ``--teacher`` folders make an
ensemble: the artifact holds their mean probabilities. Each teacher's probabilities are cached
under ``--cache`` (keyed by the weights' sha256), so adding a seed later scores only that seed.
``--with`` also averages in an existing artifact's members on the texts they share (texts only
the new teachers label keep their mean alone). The manifest pins every teacher's weights by
sha256 and states the licences of its training data and texts:

    python experiments/teacher_labels.py --teacher REG/vA --teacher REG/vB --version v4 \\
        [--with data/soft_labels/train-v3.csv.gz] [--cache .cache/teacher_labels]

Written to ``data/soft_labels/train-<version>.csv.gz`` with its ``.json`` manifest.
"""
from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from newspulse.models.sentiment.data import DEFAULT_DEV_FILES, DEFAULT_EVAL_FILES, DEFAULT_TRAIN_FILES, read_many
from newspulse.models.sentiment.predict import SentimentModel
from newspulse.models.sentiment.registry import ModelCard, sha256_file
from newspulse.models.sentiment.soft_labels import SOFT_LABELS_DIR, load_soft_labels, sha256_bytes, write_soft_labels
from newspulse.models.sentiment.train import load_training_frame, training_licences

ROOT = Path(__file__).resolve().parent.parent


def teacher_probs(teacher_dir: Path, texts: list[str], cache: Path, batch_size: int) -> tuple[np.ndarray, dict]:
    """One teacher's fp32 probabilities on ``texts`` (cached per weights and texts) and its
    provenance entry."""
    card = ModelCard.model_validate_json((teacher_dir / "model_card.json").read_text(encoding="utf-8"))
    weights = sha256_file(teacher_dir / "model.safetensors")
    key = sha256_bytes((weights + "\n" + "\n".join(texts)).encode())[:16]
    cached = cache / f"{card.version}-{key}.npy"
    if cached.exists():
        probs = np.load(cached)
    else:
        model = SentimentModel.from_dir(teacher_dir, device="cpu", card=card, quantize="off", backend="torch")
        probs = model.predict_proba(texts, batch_size=batch_size, progress=True).astype(np.float32)
        cache.mkdir(parents=True, exist_ok=True)
        np.save(cached, probs)
    dev = card.metrics.get("dev", {})
    member = {
        "version": card.version,
        "base_model": Path(card.base_model).name,  # the encoder's name, not this machine's folder
        "model_safetensors_sha256": weights,
        "seed": card.params.get("seed"),
        "steps": card.training.get("steps"),
        "dev_macro_f1": dev.get("macro_f1"),
        "dev_accuracy": dev.get("accuracy"),
    }
    return probs, member


def training_rows():
    """The rows the default retraining trains on, in its order (dev and evaluation texts removed,
    SEntFiN rows with their company marked)."""
    holdout = set(read_many(list(DEFAULT_DEV_FILES) + list(DEFAULT_EVAL_FILES))["text"])
    return load_training_frame(list(DEFAULT_TRAIN_FILES), holdout, None, 42)


def repo_path(path: Path | str) -> str:
    """``path`` relative to the repository when it lies inside it: results and manifests in git
    name the bundled files, not the folder of the machine that made them."""
    return str(Path(path).relative_to(ROOT)) if Path(path).is_relative_to(ROOT) else str(path)


def _relative_paths(value):
    """``value`` with every ``path`` entry written by :func:`repo_path`."""
    if isinstance(value, dict):
        return {k: (repo_path(v) if k == "path" else _relative_paths(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative_paths(v) for v in value]
    return value


def write_artifact(version: str, frame, probs: np.ndarray, members: list[dict], teacher: str, made_by: str, per_row: int = 1) -> dict:
    """``data/soft_labels/train-<version>.csv.gz`` with its manifest (``per_row``: how many
    teachers' probabilities each row's label averages; an artifact averaged in with ``--with``
    counts that many); returns the manifest."""
    texts = frame["text"].tolist()
    sources = frame["source"].tolist() if "source" in frame.columns else ["train"] * len(texts)
    manifest = {
        "version": version,
        "kind": "training-rows",
        "commercial": False,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "made_by": made_by,
        "teacher": teacher,
        "teacher_provenance": {"members": members},
        "teacher_dev": {"members": per_row},
        "licences": {"teacher training data": _relative_paths(training_licences(list(DEFAULT_TRAIN_FILES), [], [], None)), "texts": "the bundled train splits (data/README.md)"},
        "rows_by_source": {str(k): int(v) for k, v in frame["source"].value_counts().items()} if "source" in frame.columns else {},
        "texts": f"{len(texts)} rows the default retraining trains on (load_training_frame), SEntFiN rows with their company marked",
    }
    return write_soft_labels(SOFT_LABELS_DIR / f"train-{version}.csv.gz", texts, np.asarray(probs, dtype=np.float32), sources, manifest)


def label(teachers: list[Path], version: str, with_artifact: Path | None, cache: Path, batch_size: int) -> dict:
    """Score the training rows with every teacher and write the artifact; returns its manifest."""
    frame = training_rows()
    texts = frame["text"].tolist()
    scored = [teacher_probs(t, texts, cache, batch_size) for t in teachers]
    probs = np.mean([p for p, _ in scored], axis=0)
    members: list[dict] = [m for _, m in scored]
    previous = None
    if with_artifact is not None:
        previous = load_soft_labels(with_artifact)
        index = {text: i for i, text in enumerate(previous.texts)}
        shared = [(row, index[text]) for row, text in enumerate(texts) if text in index]
        old = int(previous.manifest.get("teacher_dev", {}).get("members", 1))
        for row, i in shared:  # a mean over every member: the old artifact counts as its members
            probs[row] = (len(teachers) * probs[row] + old * previous.probs[i]) / (len(teachers) + old)
        members.append({"artifact": previous.path.name, "sha256": previous.sha256, "members": old, "shared_rows": len(shared)})
    made_by = ["python experiments/teacher_labels.py"] + [f"--teacher {t.name}" for t in teachers] + ["--version", version] + ([f"--with {with_artifact.name}"] if with_artifact else [])
    teacher = f"mean probabilities of {len(teachers)} all-mpnet-base-v2 classifiers (the accurate tier's recipe, one seed each, trained on the bundled train splits)" + (f", averaged with {previous.path.name}'s members on the texts they share" if previous else "")
    per_row = len(teachers) + (int(previous.manifest.get("teacher_dev", {}).get("members", 1)) if previous else 0)
    return write_artifact(version, frame, probs, members, teacher, " ".join(made_by), per_row)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", type=Path, action="append", required=True, help="a teacher's registry version folder (repeat for an ensemble)")
    ap.add_argument("--version", required=True, help="artifact version, e.g. v4")
    ap.add_argument("--with", dest="with_artifact", type=Path, default=None, help="an existing artifact to average with")
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache" / "teacher_labels", help="where each teacher's probabilities are kept")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    manifest = label(args.teacher, args.version, args.with_artifact, args.cache, args.batch_size)
    print(json.dumps({k: manifest[k] for k in ("file", "rows", "sha256", "bytes")}, indent=2))


if __name__ == "__main__":
    main()
