"""The unlabelled text the soft-label artifacts in ``data/soft_labels/`` were made on, and the
class balancing tried on them (``distill_cv.py``): sentences and headlines sampled from the
bundled Reuters-21578 corpus. The product only reads finished artifacts
(:mod:`newspulse.models.sentiment.soft_labels`); making them is this experiment's job.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from newspulse.models.sentiment.data import DATA_DIR
from newspulse.models.sentiment.soft_labels import SoftLabelError
from newspulse.schema import LABELS

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
