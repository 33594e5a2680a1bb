"""Scoring with the production sentiment model: sentences, whole articles, hot reload.

Whole-article scoring (:meth:`SentimentModel.score_articles`), because the model was fine-tuned on
single sentences and headlines while articles run to thousands of tokens:

1. The title is scored on its own.
2. The body is split into sentences, which are packed greedily into chunks of at most
   ``chunk_tokens`` word pieces (an over-long sentence is cut into windows); at most
   ``max_chunks`` chunks per article are scored, from the top, since the lede carries the news.
3. Body chunks are averaged with weights ``tokens × (confidence + 0.1)`` where confidence is
   ``1 − entropy / ln 3`` of the chunk's probabilities: long, decisive passages count more than
   boiler-plate whose prediction is close to uniform.
4. Article = ``TITLE_WEIGHT × title + (1 − TITLE_WEIGHT) × body`` (title or body alone when the
   other is missing). Headlines state the news, so the title gets a fixed large share.

Inference sorts texts by token length before batching (little padding) and hands each batch to a
:class:`~newspulse.models.backends.base.Backend` that :func:`~newspulse.models.backends.factory.load_backend`
picks. On CUDA, torch in bf16 through
:class:`newspulse.models.backends.cuda_batched.BatchedScorer` (tokenisation ahead on worker threads,
fixed-shape length buckets, no device sync per batch). On CPU, ONNX Runtime (fused attention, see
``models/backends/onnx.py``; one batch per core, side by side) in int8 when the model card says
that keeps ≥ 99 % of the fp32 predictions and a macro-F1 at most 0.005 below fp32's on both dev
splits at every checked batch size (``NEWSPULSE_QUANTIZE=auto``; ``on``/``off`` force it), else in fp32. Without ONNX Runtime
(``NEWSPULSE_INFERENCE_BACKEND=torch``, not installed, or a model it cannot export) the CPU runs
torch fp32.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge

from newspulse.errors import NewsPulseError
from newspulse.entities import confidence, drivers
from newspulse.models.backends.base import Backend
from newspulse.models.backends.cuda_batched import BatchedScorer
from newspulse.models.backends.factory import load_backend, pick_device
from newspulse.models.backends.torch import TorchBackend
from newspulse.models.sentiment.entities import Span, mark
from newspulse.models.sentiment.registry import ModelCard, NoProductionModel, Registry, verify_files
from newspulse.models.sentences import sentence_spans
from newspulse.schema import LABELS, Article, Evidence, Label

log = logging.getLogger(__name__)

SERVING = Gauge("newspulse_model_info", "The sentiment model version this process serves: 1, with the version as label.", ["version"])
RELOAD_FAILURES = Counter(
    "newspulse_model_reload_failures", "Promoted models this process could not load (it keeps serving the previous one; Prometheus alerts on it)."
)

TITLE_WEIGHT = 0.4
MAX_CHUNKS = 24
DEFAULT_BATCH_SIZE = 64


class SentimentModel:
    """One loaded model version. ``predict_proba`` for sentences, ``score_articles`` for news.

    ``model`` is a :class:`Backend`, or a torch module that is run by :class:`TorchBackend`
    on ``device``.
    """

    def __init__(self, model, tokenizer, *, version: str, max_length: int = 128, device: str = "cpu", chunk_tokens: int | None = None, max_chunks: int = MAX_CHUNKS) -> None:
        self.backend = model if isinstance(model, Backend) else TorchBackend(model, device)
        self.tokenizer = tokenizer
        self.version = version
        self.max_length = max_length
        self.device = device
        self.chunk_tokens = min(chunk_tokens or max(max_length, 128), self.backend.max_positions) - 2
        self.max_chunks = max_chunks
        #: The GPU serving path; None = the plain batching loop below (CPU backends).
        self.batched: BatchedScorer | None = BatchedScorer(self.backend.model, tokenizer, device=device, max_length=max_length) if device == "cuda" and isinstance(self.backend, TorchBackend) else None

    @property
    def quantized(self) -> bool:
        return self.backend.precision == "int8"

    @classmethod
    def from_dir(cls, path: Path, *, device: str = "auto", quantize: str = "auto", backend: str = "auto", card: ModelCard | None = None) -> "SentimentModel":
        """Load a registry version folder. On CUDA: torch bf16. On CPU: ONNX Runtime (unless
        ``backend`` is ``torch``), int8 when ``quantize`` is ``on``, or ``auto`` and the card
        recommends it (its int8 check kept ≥ 99 % of the fp32 predictions and the macro-F1
        within 0.005 on both dev splits and every checked batch size), else fp32."""
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer

        card = card or ModelCard.model_validate_json((path / "model_card.json").read_text(encoding="utf-8"))
        verify_files(path, card)  # before anything reads the weights or exports them to ONNX
        dev = pick_device(device)
        tokenizer = AutoTokenizer.from_pretrained(path)
        engine = load_backend(path, card, device=dev, quantize=quantize, engine=backend)
        return cls(engine, tokenizer, version=card.version, max_length=int(card.params.get("max_length", 128)), device=dev)

    # --- sentences -------------------------------------------------------------------------
    def predict_proba(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE, max_length: int | None = None, progress: bool = False) -> np.ndarray:
        """Class probabilities ``(n, 3)`` in LABELS order. Texts are batched by length (on
        CUDA the batched path picks its own fixed-shape batches; ``batch_size`` is ignored)."""
        if self.batched is not None:
            return self.batched.score(texts, max_length=max_length or self.max_length, progress=progress)
        n = len(texts)
        out = np.zeros((n, len(LABELS)), dtype=np.float32)
        if n == 0:
            return out
        backend = self.backend
        batches = length_sorted_batches(self.tokenizer, texts, max_length or self.max_length, batch_size, backend.batch_tokens, backend.parallel)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc=f"scoring ({self.version})", unit="batch")
        for idx, logits in backend.logits_many(batches):
            out[idx] = softmax(logits)
        return out

    def predict(self, texts: Sequence[str], **kw: Any) -> list[str]:
        return [LABELS[i] for i in self.predict_proba(texts, **kw).argmax(axis=1)]

    # --- articles --------------------------------------------------------------------------
    def chunk(self, text: str, tokenizer: Any = None) -> list[tuple[str, int]]:
        """Pack sentences into chunks of ≤ ``chunk_tokens`` word pieces: ``[(text, n_tokens)]``
        (see :meth:`chunk_spans`)."""
        return [(chunk_text, n_tok) for chunk_text, n_tok, _, _ in self.chunk_spans(text, tokenizer)]

    def chunk_spans(self, text: str, tokenizer: Any = None) -> list[tuple[str, int, int, int]]:
        """Pack sentences into chunks of ≤ ``chunk_tokens`` word pieces: ``[(text, n_tokens,
        start, end)]``, ``[start, end)`` being where the chunk lies in ``text`` (the story's
        explanation points there).

        The article's sentences are tokenised in one call. ``tokenizer``: a copy of this
        model's tokenizer owned by the calling thread (worker threads of the GPU path)."""
        tokenizer = tokenizer or self.tokenizer
        chunks: list[tuple[str, int, int, int]] = []
        cur: list[tuple[int, int]] = []
        cur_len = 0

        def packed() -> tuple[str, int, int, int]:
            return " ".join(text[s:e] for s, e in cur), cur_len, cur[0][0], cur[-1][1]

        spans = sentence_spans(text)
        encoded = tokenizer([text[s:e] for s, e in spans], add_special_tokens=False, return_offsets_mapping=True) if spans else None
        for k, (start, end) in enumerate(spans):
            toks = encoded.tokens(k)
            if len(toks) > self.chunk_tokens:  # one over-long sentence: cut into windows
                if cur:
                    chunks.append(packed())
                    cur, cur_len = [], 0
                offsets = encoded["offset_mapping"][k]
                for s in range(0, len(toks), self.chunk_tokens):
                    window = toks[s : s + self.chunk_tokens]
                    chunks.append((tokenizer.convert_tokens_to_string(window), len(window), start + offsets[s][0], start + offsets[s + len(window) - 1][1]))
            elif cur_len + len(toks) > self.chunk_tokens:
                chunks.append(packed())
                cur, cur_len = [(start, end)], len(toks)
            else:
                cur.append((start, end))
                cur_len += len(toks)
            if len(chunks) >= self.max_chunks:
                return chunks[: self.max_chunks]
        if cur:
            chunks.append(packed())
        return chunks[: self.max_chunks]

    def score_mentions(self, items: Sequence[tuple[str, Sequence[Span]]]) -> np.ndarray:
        """``(n, 3)`` entity-level probabilities in LABELS order: for each ``(text, spans)``,
        the verdict about the entity whose mentions are those character spans of the text
        (see :mod:`newspulse.models.sentiment.entities`)."""
        if not items:
            return np.zeros((0, len(LABELS)), dtype=np.float32)
        return self.predict_proba([mark(text, spans) for text, spans in items], max_length=self.chunk_tokens + 2)

    def score_articles(self, articles: Sequence[Article]) -> np.ndarray:
        """``(n, 3)`` article-level probabilities in LABELS order (see module docstring)."""
        return self.explain_articles(articles)[0]

    def explain_articles(self, articles: Sequence[Article]) -> tuple[np.ndarray, list[list[Evidence]]]:
        """:meth:`score_articles` and, per article, the passages that drove its verdict (title,
        body chunks; :func:`explanation`), from the same forward pass."""
        texts: list[str] = []
        owners: list[tuple[int, str, int]] = []  # (article index, "title"|"body", tokens)
        spans: list[tuple[int, int]] = []  # where each text lies in its Article.text
        bodies = [art.body for art in articles]
        if self.batched is not None:  # chunking is host work too: on the worker threads
            chunked = self.batched.map(lambda body: self.chunk_spans(body, self.batched.thread_tokenizer()) if body else [], bodies)
        else:
            chunked = [self.chunk_spans(body) if body else [] for body in bodies]
        for i, (art, chunks) in enumerate(zip(articles, chunked)):
            if art.title:
                texts.append(art.title)
                owners.append((i, "title", 1))
                spans.append((0, len(art.title)))
            if art.body:
                offset = len(art.title) + 2 if art.title else 0  # Article.text: title, a blank line, body
                for chunk_text, n_tok, start, end in chunks:
                    texts.append(chunk_text)
                    owners.append((i, "body", max(n_tok, 1)))
                    spans.append((offset + start, offset + end))
        probs = self.predict_proba(texts, max_length=self.chunk_tokens + 2)
        weights = part_weights(owners, probs)
        verdicts = aggregate(len(articles), owners, probs, weights)
        return verdicts, explanation(articles, owners, spans, probs, verdicts, weights)


def length_sorted_batches(
    tokenizer, texts: Sequence[str], max_length: int, batch_size: int, batch_tokens: int | None = None, min_batches: int = 1
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(indices, input_ids, attention_mask)`` per batch, texts sorted by token count so each
    batch is padded only to its own longest text. One fast-tokenizer call for all texts; batches
    are padded in numpy, the input every backend takes (torch wraps it without a copy).

    A batch holds at most ``batch_size`` texts and, with ``batch_tokens``, at most that many
    padded tokens (always at least one text): short sentences then go many to a batch, long
    article chunks few (a backend's preferred size, see ``Backend.batch_tokens``). With
    ``min_batches`` (a backend's ``parallel``), a small request is still cut into that many
    batches, so that every core gets one."""
    batch_size = max(1, min(batch_size, math.ceil(len(texts) / min_batches)))
    ids = tokenizer(list(texts), truncation=True, max_length=max_length, return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    order = np.argsort(lengths, kind="stable")
    pad_id = tokenizer.pad_token_id or 0
    left = tokenizer.padding_side == "left"
    start = 0
    while start < len(ids):
        stop = min(start + batch_size, len(ids))
        if batch_tokens is not None:  # ascending lengths: a batch is as wide as its last text
            rows = 1
            while start + rows < stop and (rows + 1) * lengths[order[start + rows]] <= batch_tokens:
                rows += 1
            stop = start + rows
        idx = order[start:stop]
        start = stop
        width = int(lengths[idx].max())
        input_ids = np.full((len(idx), width), pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(idx), width), dtype=np.int64)
        for row, i in enumerate(idx):
            span = slice(width - lengths[i], width) if left else slice(0, lengths[i])
            input_ids[row, span] = ids[i]
            attention_mask[row, span] = 1
        yield idx, input_ids, attention_mask


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def part_weights(owners: Sequence[tuple[int, str, int]], probs: np.ndarray) -> np.ndarray:
    """Each part's share of its article's verdict, as :func:`aggregate` weighs it: the title
    :data:`TITLE_WEIGHT` (all of it without a body), body chunks the rest by tokens ×
    (confidence + 0.1)."""
    raw = np.array([1.0 if part == "title" else n_tok * (confidence(p) + 0.1) for (_, part, n_tok), p in zip(owners, probs)])
    has_title = {i for i, part, _ in owners if part == "title"}
    has_body = {i for i, part, _ in owners if part == "body"}
    body_total: dict[int, float] = {}
    for (i, part, _), w in zip(owners, raw):
        if part == "body":
            body_total[i] = body_total.get(i, 0.0) + w
    out = np.zeros(len(owners))
    for j, (i, part, _) in enumerate(owners):
        if part == "title":
            out[j] = TITLE_WEIGHT if i in has_body else 1.0
        else:
            out[j] = (1 - TITLE_WEIGHT if i in has_title else 1.0) * raw[j] / body_total[i]
    return out


def explanation(
    articles: Sequence[Article], owners: Sequence[tuple[int, str, int]], spans: Sequence[tuple[int, int]], probs: np.ndarray, verdicts: np.ndarray, weights: np.ndarray
) -> list[list[Evidence]]:
    """Per article, the one to three parts (title, body chunks) that pushed hardest towards its
    label, with their own verdicts, ``weights`` (:func:`part_weights`) and offsets into
    :attr:`Article.text`."""
    rows: list[list[int]] = [[] for _ in articles]
    for j, (i, _, _) in enumerate(owners):
        rows[i].append(j)
    out: list[list[Evidence]] = []
    for art, idx, verdict in zip(articles, rows, verdicts):
        if not idx:
            out.append([])
            continue
        label = Label(LABELS[int(np.argmax(verdict))])
        out.append(drivers(art.text, [spans[j] for j in idx], probs[idx], weights[idx], label))
    return out


def aggregate(n: int, owners: Sequence[tuple[int, str, int]], probs: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Combine title and chunk probabilities per article: the mean weighted by
    :func:`part_weights` (pass ``weights`` when they are already computed); an article with no
    part gets the uniform distribution."""
    weights = part_weights(owners, probs) if weights is None else weights
    out = np.zeros((n, len(LABELS)))
    for (i, _, _), w, p in zip(owners, weights, probs):
        out[i] += w * p
    out[out.sum(axis=1) == 0] = 1.0 / len(LABELS)
    return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)


class HotReloadingClassifier:
    """The production model, swapped for a newly promoted one without a restart.

    Each call stats the registry's ``production`` pointer at most every ``check_interval``
    seconds (one ``stat``; cheap). When it changed, the new version is loaded *beside* the old
    one and swapped in atomically; a version that fails to load is logged and the old model
    keeps serving.
    """

    def __init__(self, registry: Registry, *, device: str = "auto", quantize: str = "auto", backend: str = "auto", check_interval: float = 5.0, tier: str = "fast") -> None:
        self.registry = registry
        self.tier = tier
        self.device = device
        self.quantize = quantize
        self.backend = backend
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._mtime = registry.pointer_mtime(tier)
        self._checked = time.monotonic()
        self._current = self._load(registry.production_card(tier))
        self._export_version()

    def _load(self, card: ModelCard) -> SentimentModel:
        log.info("loading sentiment model %s", card.version)
        return SentimentModel.from_dir(self.registry.version_dir(card.version), device=self.device, quantize=self.quantize, backend=self.backend, card=card)

    @property
    def version(self) -> str:
        return self._current.version

    @property
    def current(self) -> SentimentModel:
        self.maybe_reload()
        return self._current

    def maybe_reload(self, force: bool = False) -> bool:
        """Swap in the production model if the pointer moved. Returns True when swapped."""
        now = time.monotonic()
        if not force and now - self._checked < self.check_interval:
            return False
        with self._lock:
            self._checked = now
            mtime = self.registry.pointer_mtime(self.tier)
            if not force and mtime == self._mtime:
                return False
            self._mtime = mtime
            version = self.registry.production_version(self.tier)
            if version is None or version == self._current.version:
                return False
            try:
                self._current = self._load(self.registry.card(version))
            except NewsPulseError as err:  # a corrupted or misnamed version: its message says it all
                RELOAD_FAILURES.inc()
                log.error("could not load promoted model %s; still serving %s: %s", version, self._current.version, err)
                return False
            except Exception:  # keep serving the old model; the operator sees the log and the alert
                RELOAD_FAILURES.inc()
                log.exception("could not load promoted model %s; still serving %s", version, self._current.version)
                return False
            log.info("now serving sentiment model %s", version)
            self._export_version()
            return True

    def _export_version(self) -> None:
        if self.tier == "fast":  # the gauge names the model every article is scored by
            SERVING.clear()
            SERVING.labels(self._current.version).set(1)

    def score_articles(self, articles: Sequence[Article]) -> np.ndarray:
        return self.current.score_articles(articles)

    def explain_articles(self, articles: Sequence[Article]) -> tuple[np.ndarray, list[list[Evidence]]]:
        return self.current.explain_articles(articles)

    def score_mentions(self, items: Sequence[tuple[str, Sequence[Span]]]) -> np.ndarray:
        return self.current.score_mentions(items)

    def predict_proba(self, texts: Sequence[str], **kw: Any) -> np.ndarray:
        return self.current.predict_proba(texts, **kw)

    def predict(self, texts: Sequence[str], **kw: Any) -> list[str]:
        return self.current.predict(texts, **kw)


def confidence_of(probs: np.ndarray) -> np.ndarray:
    """The cascade's confidence of each row: its largest class probability."""
    return probs.max(axis=1) if len(probs) else np.zeros(0, dtype=np.float32)


class CascadeClassifier:
    """The fast tier for every article, the accurate tier for the fast tier's least confident.

    Why: the accurate tier (a larger encoder, ``newspulse model train --tier accurate``) is
    several times slower; most articles are clear enough for the fast tier, and the rows it is
    unsure of are where its mistakes concentrate. Stories whose fast-tier confidence (largest
    class probability) is below ``threshold`` are scored again by the accurate tier, whose
    verdict and explanation replace the fast one; :meth:`explain_articles_tiered` says which
    tier decided each row, and the stored record keeps it (``ScoredArticle.decided_by``).

    Without an accurate model promoted (``production-accurate``), every row is the fast tier's
    and nothing else changes. The accurate pointer is checked every ``check_interval`` seconds,
    so a first accurate promotion reaches a running processor without a restart. Entity
    verdicts stay with the fast tier (they are scored per mention, from the same fast pass).
    """

    def __init__(self, fast: HotReloadingClassifier, *, threshold: float, check_interval: float = 5.0, accurate: HotReloadingClassifier | None = None) -> None:
        self.fast = fast
        self.threshold = threshold
        self.check_interval = check_interval
        self._accurate = accurate
        self._checked = time.monotonic()

    @property
    def version(self) -> str:
        """The fast tier's version: the one every record is scored by first."""
        return self.fast.version

    @property
    def current(self) -> SentimentModel:
        """The fast tier's loaded model (after a reload check)."""
        return self.fast.current

    @property
    def accurate(self) -> HotReloadingClassifier | None:
        """The accurate tier, loaded once its pointer appears (None: no accurate model)."""
        if self._accurate is None and time.monotonic() - self._checked >= self.check_interval:
            self._checked = time.monotonic()
            if self.fast.registry.production_version("accurate") is not None:
                try:
                    self._accurate = self.fast.__class__(
                        self.fast.registry, device=self.fast.device, quantize=self.fast.quantize, backend=self.fast.backend, check_interval=self.fast.check_interval, tier="accurate"
                    )
                except Exception:  # keep serving the fast tier alone; the log says why
                    RELOAD_FAILURES.inc()
                    log.exception("could not load the accurate-tier model; the cascade stays on the fast tier")
        return self._accurate

    def explain_articles_tiered(self, articles: Sequence[Article]) -> tuple[np.ndarray, list[list[Evidence]], list[str]]:
        """Story probabilities, explanations and the deciding tier (``fast``/``accurate``) per article."""
        probs, explanations = self.fast.explain_articles(articles)
        tiers = ["fast"] * len(articles)
        accurate = self.accurate
        unsure = np.flatnonzero(confidence_of(probs) < self.threshold)
        if accurate is not None and len(unsure):
            second, why = accurate.explain_articles([articles[i] for i in unsure])
            for k, i in enumerate(unsure):
                probs[i], explanations[i], tiers[i] = second[k], why[k], "accurate"
        return probs, explanations, tiers

    def explain_articles(self, articles: Sequence[Article]) -> tuple[np.ndarray, list[list[Evidence]]]:
        probs, explanations, _ = self.explain_articles_tiered(articles)
        return probs, explanations

    def score_articles(self, articles: Sequence[Article]) -> np.ndarray:
        return self.explain_articles_tiered(articles)[0]

    def score_mentions(self, items: Sequence[tuple[str, Sequence[Span]]]) -> np.ndarray:
        return self.fast.score_mentions(items)

    def predict_proba(self, texts: Sequence[str], **kw: Any) -> np.ndarray:
        """Sentence probabilities through the cascade (bench/cascade.py measures this path)."""
        probs = self.fast.predict_proba(texts, **kw)
        accurate = self.accurate
        unsure = np.flatnonzero(confidence_of(probs) < self.threshold)
        if accurate is not None and len(unsure):
            probs[unsure] = accurate.predict_proba([texts[i] for i in unsure], **kw)
        return probs

    def predict(self, texts: Sequence[str], **kw: Any) -> list[str]:
        return [LABELS[i] for i in self.predict_proba(texts, **kw).argmax(axis=1)]


def load_classifier(settings, *, check_interval: float = 5.0) -> CascadeClassifier:
    """The production classifier from ``settings.model_registry``: the fast tier, cascading to
    the accurate tier when one is promoted (``NEWSPULSE_CASCADE_THRESHOLD``); follows promotions.

    Raises :class:`newspulse.models.sentiment.registry.NoProductionModel` when nothing is promoted yet.
    """
    registry = Registry(settings.model_registry)
    if registry.production_version() is None:
        raise NoProductionModel(f"no production model in {registry.path}; train one with `newspulse model train`")
    kw = dict(device=settings.device, quantize=settings.quantize, backend=settings.inference_backend, check_interval=check_interval)
    fast = HotReloadingClassifier(registry, **kw)
    accurate = HotReloadingClassifier(registry, **kw, tier="accurate") if registry.production_version("accurate") is not None else None
    return CascadeClassifier(fast, threshold=settings.cascade_threshold, check_interval=check_interval, accurate=accurate)


def rescore_store(settings, store, *, since=None, batch_size: int = 256, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Re-score stored articles with the production model, a batch at a time, and fill the
    entity verdicts of history scored before entity-level scoring.

    An article scored by another version (or any, with ``force``) is scored again whole: story
    verdict, entity verdicts; one scored by the production version but without entity verdicts
    keeps its story verdict (no second forward pass over the story) and gets its entities;
    the rest are skipped, so a rerun after a failure continues where it stopped. The summary
    and tags are kept. Returns counts: ``rescored`` (whole), ``entities_filled`` (entities
    only), ``skipped``, ``failed`` (refused by the store)."""
    from newspulse.entities import EntityScorer
    from newspulse.ingest.tagging import build_mention_finder
    from newspulse.schema import SCHEMA_VERSION, ScoredArticle
    from newspulse.store.base import Filter

    clf = load_classifier(settings).current
    entities = EntityScorer.from_settings(settings, build_mention_finder())
    counts = {"model_version": clf.version, "seen": 0, "rescored": 0, "entities_filled": 0, "skipped": 0, "failed": 0}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc=f"re-scoring with {clf.version}", unit="article")
    for batch in store.iter_articles(Filter(start=since), batch_size=batch_size):
        counts["seen"] += len(batch)
        stale = [a for a in batch if force or a.model_version != clf.version]
        unfilled = [a for a in batch if not (force or a.model_version != clf.version) and a.tickers and not a.entities]
        counts["skipped"] += len(batch) - len(stale) - len(unfilled)
        scored: list[ScoredArticle] = []
        if stale:
            plain = [Article(**a.model_dump(include=set(Article.model_fields))) for a in stale]
            probs = clf.score_articles(plain)
            verdicts = entities.verdicts(plain, probs, clf)
            scored += [
                ScoredArticle.from_article(art, dict(zip(LABELS, map(float, p))), summary=old.summary, model_version=clf.version, entities=v)
                for art, old, p, v in zip(plain, stale, probs, verdicts)
            ]
        if unfilled:
            story = np.array([[a.probabilities[label] for label in LABELS] for a in unfilled])
            verdicts = entities.verdicts(unfilled, story, clf)
            scored += [a.model_copy(update={"entities": v, "schema_version": SCHEMA_VERSION}) for a, v in zip(unfilled, verdicts)]
        if scored:
            result = store.upsert_articles(scored)
            failed = set(result.failed)
            counts["rescored"] += sum(1 for a in stale if a.id not in failed)
            counts["entities_filled"] += sum(1 for a in unfilled if a.id not in failed)
            counts["failed"] += len(failed)
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    return counts
