"""Summary quality and cost on the bundled Reuters-21578 stories.

    python bench/summaries.py                 # CPU: ROUGE, cost ratio, faithfulness rate
    python bench/summaries.py --gpu           # also summaries/s of the abstractive path (GPU host)

Quality: ROUGE-1/2/L F1 of the extractive summary against the story's title, next to lead-1
and lead-3 baselines on the same stories. ROUGE is implemented here (lower-cased alphanumeric
tokens, no stemming, F1). The title is a weak reference (a headline, often in wire shorthand),
so compare the methods with each other, not with published ROUGE figures.

Cost: seconds of the extractive summariser over seconds of a MiniLM classifier-style forward
pass (title + body, 256 tokens) on the same articles, in one run (a ratio, not absolute time).

Faithfulness: the share of abstractive summaries that name a number, ticker or capitalised name
missing from the story. Without a real generator (none can be downloaded here) it is measured on
a tiny randomly initialised T5, which exercises the check, not a model's quality.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.summarize.sentences import split_sentences  # noqa: E402
from newspulse.schema import Article  # noqa: E402

_TOKEN = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _f1(overlap: int, n_candidate: int, n_reference: int) -> float:
    if not overlap:
        return 0.0
    p, r = overlap / n_candidate, overlap / n_reference
    return 2 * p * r / (p + r)


def rouge_n(candidate: Sequence[str], reference: Sequence[str], n: int) -> float:
    cand = Counter(tuple(candidate[i : i + n]) for i in range(len(candidate) - n + 1))
    ref = Counter(tuple(reference[i : i + n]) for i in range(len(reference) - n + 1))
    return _f1(sum((cand & ref).values()), sum(cand.values()), sum(ref.values()))


def rouge_l(candidate: Sequence[str], reference: Sequence[str]) -> float:
    if not candidate or not reference:
        return 0.0
    prev = [0] * (len(reference) + 1)
    for c in candidate:
        cur = [0]
        for j, r in enumerate(reference):
            cur.append(prev[j] + 1 if c == r else max(prev[j + 1], cur[j]))
        prev = cur
    return _f1(prev[-1], len(candidate), len(reference))


def rouge(summaries: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 over pairs."""
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for s, ref in zip(summaries, references):
        c, r = tokens(s), tokens(ref)
        totals["rouge1"] += rouge_n(c, r, 1)
        totals["rouge2"] += rouge_n(c, r, 2)
        totals["rougeL"] += rouge_l(c, r)
    return {k: round(v / max(1, len(summaries)), 4) for k, v in totals.items()}


def lead(k: int) -> Callable[[Article], str]:
    def first_sentences(article: Article) -> str:
        return " ".join(split_sentences(article.body)[:k])

    return first_sentences


def load_stories(n: int, seed: int, *, skip: int = 0) -> list[Article]:
    """``n`` Reuters stories with a body of at least two sentences, a fixed random sample.

    ``skip`` drops the first rows of the shuffled order, so a tuning slice (skip=0) and the
    evaluation slice (skip=tuning size) never share a story.
    """
    import pandas as pd

    frame = pd.read_csv(ROOT / "data/news/reuters21578.csv.gz")
    frame = frame.dropna(subset=["body", "title"])
    frame = frame[frame["body"].str.len() > 200].sample(frac=1.0, random_state=seed)
    rows = frame.iloc[skip : skip + n]
    return [
        Article(published_at=r.published_at, source=r.source, title=r.title, body=r.body, url=r.url if isinstance(r.url, str) else None)
        for r in rows.itertuples()
    ]
