"""Entity-level verdicts: what a story says about each company it is tagged with.

A story's one verdict is wrong for half its companies when it is good news for one and bad for
another ("Intel slides as AMD wins a $2 billion order"). So, per tagged ticker, the sentences
that name the company (:class:`Passage`, found by a :class:`MentionFinder` over the company
list) are scored *for that company* (``score_mentions``: the mentions marked in the input) and
combined into its :class:`~newspulse.schema.EntityVerdict`:

* each passage weighs ``(confidence + 0.1) × (TITLE_BOOST if it is the headline else 1)``, the
  story-level recipe (``models/sentiment/predict.py``: decisive passages count more than near-uniform
  ones; the headline states the news);
* the verdict is the weighted mean of the passages' probabilities (``basis="mentions"``);
* ``evidence`` is the one to three passages that pushed hardest towards the verdict's label
  (weight × P(label)), with their scores and offsets into :attr:`Article.text`;
* a ticker that was tagged (by the source, or an explicit symbol) but never named by a company
  alias gets the story verdict, marked ``basis="story"``, so every tagged ticker has a verdict
  and per-ticker queries never mix sources of truth within one record.

Cost is bounded whatever an article's length: only mention sentences are scored, at most
``max_sentences`` per ticker and ``max_tickers`` tickers per article (the rest fall back to the
story verdict), and each passage is clipped to :data:`MAX_PASSAGE_CHARS` around its mentions.
The kernel holds this because the Processor and the re-scoring job both need it and neither
knows the model or the company list: those come in as the two callables/Protocols below.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from newspulse.schema import LABELS, Article, EntityVerdict, Evidence, Label, verdict
from newspulse.settings import Settings

#: ``[start, end)`` character offsets.
Span = tuple[int, int]

#: Headline passages count this many times a body sentence (the title states the news).
TITLE_BOOST = 2.0
#: A passage longer than this is clipped to a window around its first mention (keeps one
#: passage within the encoder's input, with the mention inside it).
MAX_PASSAGE_CHARS = 600
#: Most passages shown as evidence for one verdict.
MAX_EVIDENCE = 3

DEFAULT_MAX_TICKERS = 8
DEFAULT_MAX_SENTENCES = 4


@dataclass(frozen=True)
class Passage:
    """A sentence of :attr:`Article.text` that names a company: its span and the mentions in it
    (all offsets into the whole text). ``title``: the sentence is (part of) the headline."""

    start: int
    end: int
    mentions: tuple[Span, ...]
    title: bool = False


class MentionFinder(Protocol):
    """Finds where an article names each of its tickers (``ingest/tagging.py`` implements it
    over the company list)."""

    def passages(self, article: Article, tickers: Sequence[str]) -> dict[str, list[Passage]]:
        """The sentences naming each ticker of ``tickers``, in text order; a ticker that is
        never named is absent (or maps to an empty list)."""


class MentionScorer(Protocol):
    """The classifier's entity-level half (``SentimentModel.score_mentions``)."""

    def score_mentions(self, items: Sequence[tuple[str, Sequence[Span]]]) -> np.ndarray:
        """``(n, 3)`` probabilities in LABELS order, per ``(text, spans)``: the verdict about
        the entity named at those spans of the text."""


def confidence(p: np.ndarray) -> float:
    """1 − normalised entropy: 0 for a uniform prediction, 1 for a certain one."""
    ent = -float(np.sum(p * np.log(np.clip(p, 1e-12, 1.0))))
    return 1.0 - ent / math.log(len(p))


def _verdict_fields(probs: np.ndarray) -> tuple[dict[Label, float], Label, float]:
    """:func:`newspulse.schema.verdict` of a probability row in LABELS order."""
    return verdict(dict(zip(LABELS, probs)))


def story_verdict(ticker: str, story_probs: np.ndarray) -> EntityVerdict:
    """The story's verdict standing in for a ticker the text never names (``basis="story"``)."""
    probs, label, score = _verdict_fields(story_probs)
    return EntityVerdict(ticker=ticker, label=label, probabilities=probs, score=score, basis="story")


def combine(ticker: str, text: str, passages: Sequence[Passage], probs: np.ndarray) -> EntityVerdict:
    """The ticker's verdict from its scored passages (row ``i`` of ``probs`` is passage ``i``):
    the confidence-weighted mean, with the passages that drove it as evidence."""
    weights = np.array([(confidence(p) + 0.1) * (TITLE_BOOST if psg.title else 1.0) for psg, p in zip(passages, probs)])
    mean = (weights[:, None] * probs).sum(axis=0) / weights.sum()
    probabilities, label, score = _verdict_fields(mean / mean.sum())
    evidence = drivers(text, [(psg.start, psg.end) for psg in passages], probs, weights, label)
    return EntityVerdict(ticker=ticker, label=label, probabilities=probabilities, score=score, basis="mentions", mentions=len(passages), evidence=evidence)


def drivers(text: str, spans: Sequence[Span], probs: np.ndarray, weights: np.ndarray, label: Label, limit: int = MAX_EVIDENCE) -> list[Evidence]:
    """The passages (``spans`` of ``text``, scored ``probs``, counted with ``weights``) that
    pushed hardest towards ``label`` (weight × P(label); ties: the earlier), at most ``limit``,
    in text order, each with its own verdict and its share of the weight. Entity verdicts and
    the story's explanation both show these."""
    k = LABELS.index(label.value)
    top = sorted(range(len(spans)), key=lambda i: (-weights[i] * probs[i][k], i))[:limit]
    share = weights / weights.sum()
    out = []
    for i in sorted(top):
        _, p_label, p_score = _verdict_fields(probs[i])
        start, end = spans[i]
        out.append(Evidence(start=start, end=end, text=text[start:end], label=p_label, score=p_score, weight=round(float(share[i]), 4)))
    return out


def clip(passage: Passage, limit: int = MAX_PASSAGE_CHARS) -> Passage:
    """The passage, or a window of at most ``limit`` characters around its first mention
    (mentions outside the window are dropped)."""
    if passage.end - passage.start <= limit:
        return passage
    first = passage.mentions[0]
    start = max(passage.start, min(first[0] - limit // 3, passage.end - limit))
    end = start + limit
    kept = tuple(m for m in passage.mentions if m[0] >= start and m[1] <= end)
    return Passage(start, end, kept, passage.title)


class EntityScorer:
    """Turns a batch of scored stories into entity verdicts with one ``score_mentions`` call."""

    def __init__(self, finder: MentionFinder | None, *, max_tickers: int = DEFAULT_MAX_TICKERS, max_sentences: int = DEFAULT_MAX_SENTENCES) -> None:
        self.finder = finder
        self.max_tickers = max_tickers
        self.max_sentences = max_sentences

    @classmethod
    def from_settings(cls, settings: Settings, finder: MentionFinder) -> "EntityScorer":
        """Within the settings' cost caps (``NEWSPULSE_ENTITY_MAX_TICKERS``/``_SENTENCES``):
        the pipeline and re-scoring make the same verdicts."""
        return cls(finder, max_tickers=settings.entity_max_tickers, max_sentences=settings.entity_max_sentences)

    def plan(self, article: Article) -> dict[str, list[Passage]]:
        """The passages to score per ticker, within the caps (the first tickers in tag order,
        which the tagger sorts by relevance; the first sentences, the headline and lead first)."""
        if self.finder is None or not article.tickers:
            return {}
        scored = article.tickers[: self.max_tickers]
        found = self.finder.passages(article, scored)
        return {t: [clip(p) for p in found[t][: self.max_sentences]] for t in scored if found.get(t)}

    def verdicts(self, articles: Sequence[Article], story_probs: np.ndarray, scorer: MentionScorer) -> list[list[EntityVerdict]]:
        """One verdict per ticker of each article, in ticker order."""
        plans = [self.plan(a) for a in articles]
        items: list[tuple[str, list[Span]]] = []
        for art, plan in zip(articles, plans):
            text = art.text
            for passages in plan.values():
                for psg in passages:
                    items.append((text[psg.start : psg.end], [(s - psg.start, e - psg.start) for s, e in psg.mentions]))
        probs = scorer.score_mentions(items) if items else np.zeros((0, len(LABELS)))
        out: list[list[EntityVerdict]] = []
        row = 0
        for art, plan, story in zip(articles, plans, story_probs):
            found: list[EntityVerdict] = []
            for ticker in art.tickers:
                passages = plan.get(ticker)
                if passages:
                    found.append(combine(ticker, art.text, passages, np.asarray(probs[row : row + len(passages)], dtype=np.float64)))
                    row += len(passages)
                else:
                    found.append(story_verdict(ticker, story))
            out.append(found)
        return out
