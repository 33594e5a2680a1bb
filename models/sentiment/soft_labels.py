"""Knowledge distillation for the sentiment student: the hashed soft-label artifact (teacher
probabilities on news text) and the loss that trains on it.

Why: fine-tuning MiniLM on the gold labels alone is saturated (more epochs do not help). A
teacher's class probabilities are extra training signal that costs the CPU retraining nothing but
reading a small file, so ``make demo`` and the retraining DAG can distil without a GPU. The
artifacts are made outside the product (``experiments/distill_cv.py``); this module writes and
reads their format.

The artifact is a gzip CSV ``text,negative,neutral,positive,source`` next to a JSON manifest
(teacher, licences, date, sha256). Training refuses an artifact whose sha256 differs from the
one it was told to expect: soft labels silently swapped for another teacher's would change the
model with nothing in the card to show it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from newspulse.models.sentiment.data import DATA_DIR, DataError
from newspulse.schema import LABELS

SOFT_LABELS_DIR = DATA_DIR / "soft_labels"


class SoftLabelError(DataError):
    """A soft-label artifact is missing, malformed, or not the one whose hash was pinned."""


@dataclass(frozen=True)
class SoftLabels:
    """Loaded soft labels: texts, probabilities ``(n, 3)`` in LABELS order, and the manifest."""

    path: Path
    sha256: str
    texts: list[str]
    probs: np.ndarray
    manifest: dict[str, Any]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_soft_labels(out: Path, texts: list[str], probs: np.ndarray, sources: list[str], manifest: dict[str, Any]) -> dict[str, Any]:
    """Write ``out`` (gzip CSV, byte-for-byte reproducible: gzip mtime 0) and ``out``'s
    manifest ``<stem>.json`` with its sha256; returns the manifest."""
    if probs.shape != (len(texts), len(LABELS)) or len(sources) != len(texts):
        raise ValueError("texts, probs and sources must have matching lengths")
    frame = pd.DataFrame({"text": texts, **{label: np.round(probs[:, i], 5) for i, label in enumerate(LABELS)}, "source": sources})
    raw = frame.to_csv(index=False, lineterminator="\n").encode("utf-8")
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9) as gz:
        gz.write(raw)
    data = buf.getvalue()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    manifest = {**manifest, "file": out.name, "rows": len(texts), "sha256": sha256_bytes(data), "bytes": len(data)}
    manifest_path(out).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def manifest_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name.split(".")[0] + ".json")


def load_soft_labels(path: Path | str, expected_sha256: str = "") -> SoftLabels:
    """Read an artifact after checking its sha256 against ``expected_sha256`` (or, when empty,
    against its manifest). Raises :class:`SoftLabelError` on any mismatch or bad row."""
    path = Path(path)
    if not path.exists():
        raise SoftLabelError(f"{path}: no such soft-label artifact")
    mpath = manifest_path(path)
    manifest = json.loads(mpath.read_text(encoding="utf-8")) if mpath.exists() else {}
    expected = expected_sha256 or manifest.get("sha256", "")
    if not expected:
        raise SoftLabelError(f"{path}: no sha256 to check it against (no manifest {mpath.name} and none given)")
    data = path.read_bytes()
    actual = sha256_bytes(data)
    if actual != expected:
        raise SoftLabelError(f"{path}: sha256 {actual} does not match the pinned {expected}; the artifact was changed or replaced — regenerate it with `experiments/distill_cv.py report --artifact` or pin the new hash")
    try:
        frame = pd.read_csv(io.BytesIO(gzip.decompress(data)), keep_default_na=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise SoftLabelError(f"{path}: not a readable gzip CSV ({err})") from err
    missing = {"text", *LABELS} - set(frame.columns)
    if missing:
        raise SoftLabelError(f"{path}: missing column(s) {sorted(missing)}")
    probs = frame[list(LABELS)].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(probs)) or (probs < 0).any() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise SoftLabelError(f"{path}: probabilities must be non-negative and sum to 1 per row")
    probs = (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)
    return SoftLabels(path=path, sha256=actual, texts=frame["text"].astype(str).tolist(), probs=probs, manifest=manifest)


def soften(probs, temperature: float):
    """Teacher probabilities at temperature ``T``: ``p^(1/T)`` renormalised, which equals
    ``softmax(logits / T)`` for a single teacher (the artifact stores T = 1 probabilities)."""
    import torch

    logp = torch.log(probs.clamp_min(1e-8)) / temperature
    return torch.softmax(logp, dim=-1)


def kd_loss(student_logits, teacher_probs, temperature: float):
    """Hinton et al.'s distillation term: ``T² · KL(teacher_T ‖ student_T)``, batch mean. The
    T² keeps its gradient scale comparable to the cross-entropy's as T changes."""
    import torch

    target = soften(teacher_probs, temperature)
    log_student = torch.log_softmax(student_logits / temperature, dim=-1)
    kl = torch.sum(target * (torch.log(target.clamp_min(1e-8)) - log_student), dim=-1)
    return kl.mean() * temperature**2
