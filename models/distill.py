"""Knowledge distillation for the sentiment student: teacher soft labels on unlabelled news
sentences, stored as a hashed artifact, and the loss that trains on them.

Why: fine-tuning MiniLM on the gold labels alone is saturated (more epochs do not help), while
the bundled Reuters bodies are thousands of in-domain sentences nobody labelled. A teacher's
class probabilities on them are extra training signal that costs the CPU retraining nothing but
reading a small file, so ``make demo`` and the retraining DAG can distil without a GPU.

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
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from newspulse.models.data import DATA_DIR, DataError
from newspulse.schema import LABELS

SOFT_LABELS_DIR = DATA_DIR / "soft_labels"
REUTERS_CSV = DATA_DIR / "news" / "reuters21578.csv.gz"
REUTERS_LICENSE = "Reuters-21578 Distribution 1.0: free distribution for research purposes only (Reuters Ltd., Carnegie Group)"

#: Sentences shorter or longer than this (in words) carry little sentiment or get truncated.
MIN_WORDS, MAX_WORDS = 6, 60
#: Headlines are short by nature; below this they are table captions ("COCOA REVIEW").
MIN_HEADLINE_WORDS, MAX_HEADLINE_WORDS = 4, 20
_TICKER_TAG = re.compile(r"<[^<>]*>")
#: Share of alphabetic words a sentence needs: drops statistics tables ("Soybean May 20.0, ...").
MIN_WORDY = 0.7
_WORD = re.compile(r"^[A-Za-z][A-Za-z'-]*[.,;:]?$")


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


def reuters_sentences(path: Path = REUTERS_CSV, n: int = 4000, seed: int = 0, exclude: set[str] | None = None) -> list[str]:
    """``n`` distinct sentences sampled from the Reuters bodies, split by the summariser's
    abbreviation-aware splitter; headline-style all-caps lines and very short/long ones are
    dropped, as are any texts in ``exclude`` (the labelled splits)."""
    from newspulse.models.sentences import split_sentences

    bodies = pd.read_csv(path, usecols=["body"], keep_default_na=False)["body"]
    exclude = exclude or set()
    seen: set[str] = set()
    pool: list[str] = []
    for body in bodies:
        for sent in split_sentences(body):
            sent = " ".join(sent.split())
            words = len(sent.split())
            if not (MIN_WORDS <= words <= MAX_WORDS) or sent.isupper() or _wordy(sent) < MIN_WORDY:
                continue
            if sent in seen or sent in exclude:
                continue
            seen.add(sent)
            pool.append(sent)
    return _sample(pool, n, seed, f"{path}: only {len(pool)} usable sentences, {n} asked for")


def reuters_headlines(path: Path = REUTERS_CSV, n: int = 2000, seed: int = 0, exclude: set[str] | None = None) -> list[str]:
    """``n`` distinct Reuters headlines, the ``<TICKER>`` tags taken out.

    Why a second pool: the body sentences are long newswire prose, while Twitter Financial News
    (half of the gold rows, and what analysts' feeds look like) is short headlines; soft labels
    on headlines keep the distilled student in that register. Both encoders are uncased, so the
    wire's all-caps titles need no recasing. Filtered like :func:`reuters_sentences`."""
    titles = pd.read_csv(path, usecols=["title"], keep_default_na=False)["title"]
    exclude = {t.lower() for t in exclude or set()}
    seen: set[str] = set()
    pool: list[str] = []
    for title in titles:
        text = " ".join(_TICKER_TAG.sub(" ", title).split())
        words = len(text.split())
        if not (MIN_HEADLINE_WORDS <= words <= MAX_HEADLINE_WORDS) or _wordy(text) < MIN_WORDY:
            continue
        if text.lower() in seen or text.lower() in exclude:
            continue
        seen.add(text.lower())
        pool.append(text)
    return _sample(pool, n, seed, f"{path}: only {len(pool)} usable headlines, {n} asked for")


def _sample(pool: list[str], n: int, seed: int, too_few: str) -> list[str]:
    """``n`` of ``pool`` drawn with ``seed``, in pool order; ``too_few`` is the error otherwise."""
    if len(pool) < n:
        raise SoftLabelError(too_few)
    rng = np.random.default_rng(seed)
    return [pool[i] for i in sorted(rng.choice(len(pool), size=n, replace=False))]


def _wordy(sentence: str) -> float:
    words = sentence.split()
    return sum(1 for w in words if _WORD.match(w)) / len(words)


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
        raise SoftLabelError(f"{path}: sha256 {actual} does not match the pinned {expected}; the artifact was changed or replaced — regenerate it with `python -m newspulse.models.distill` or pin the new hash")
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


def balanced_rows(probs: np.ndarray, seed: int = 0) -> np.ndarray:
    """Row indices of soft labels balanced by the teacher's argmax class: every row of the
    non-neutral classes, and neutral rows subsampled to the larger non-neutral class's count.

    Why: on Reuters sentences the teachers call ~69 % neutral, so distilling from every row pulls
    the student towards neutral (macro-F1 fell more than accuracy, docs/model.md); balancing keeps
    the polar signal and drops the surplus of the class the gold rows already teach best."""
    top = probs.argmax(axis=1)
    neutral = LABELS.index("neutral")
    polar = np.flatnonzero(top != neutral)
    keep_neutral = max((int((top == c).sum()) for c in range(len(LABELS)) if c != neutral), default=0)
    neutral_rows = np.flatnonzero(top == neutral)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(neutral_rows, size=min(keep_neutral, len(neutral_rows)), replace=False)
    return np.sort(np.concatenate([polar, chosen]).astype(int))
