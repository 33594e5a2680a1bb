"""Sentence scoring bound by the accelerator, not by the host (the GPU serving path).

The plain path (:meth:`newspulse.models.sentiment.predict.SentimentModel.predict_proba`) tokenises everything,
then per batch pads in Python, copies to the device and waits for the result (``.cpu()``): the
GPU idles while the host works and the host idles while the GPU works. On an H200 the
production MiniLM then scored fewer sentences per second than a model eight times its size
(issue 16). This path keeps the GPU fed:

- **Tokenise ahead, in parallel.** Input is cut into micro-batches (``micro_batch`` texts).
  Worker threads tokenise and pad micro-batch k+1, k+2 … (the Rust tokenizer releases the GIL,
  each thread has its own copy of it) while the device runs micro-batch k.
- **Fixed shapes.** Each micro-batch is sorted by length and cut into batches padded to a length
  bucket (``buckets``, clipped at ``max_length``) with a row count that fills a token budget
  (``batch_tokens``, at most ``max_rows``); a short last batch is padded to a power of two. The
  set of shapes is small and known (:meth:`BatchedScorer.shapes`), so each can be captured once
  as a CUDA graph and replayed (``cuda_graphs``: one launch per batch instead of ~100 kernel
  launches from Python), or compiled (``compile``).
- **Pinned memory, non-blocking copies.** Batches are built in page-locked host tensors and
  copied with ``non_blocking=True``.
- **No sync per batch.** Probabilities stay on the device until a micro-batch is done, then come
  back in one asynchronous copy, which is waited for only after the next micro-batch has been
  queued. The attention mask goes in as a prepared 4-D boolean mask for SDPA, which spares
  transformers' own ``mask.all()`` check (a device sync) on every forward.
- **bf16** autocast on CUDA.

What a forward pass returns is the ``head``'s choice: class probabilities for the sentiment
classifier (the default), mean-pooled sentence embeddings for the extractive summariser's
encoder (:func:`mean_pooled`).

On CPU the same code runs (threads, buckets, ordering) without pinning or autocast, which is how
the tests prove it predicts what the plain path predicts.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from newspulse.schema import LABELS

T = TypeVar("T")
R = TypeVar("R")

#: Padded lengths a batch can have (clipped at, and completed with, the caller's max_length).
BUCKETS = (16, 32, 64, 128, 256, 512)
#: Rows × padded length of one forward pass: big enough to fill an H200 with MiniLM.
BATCH_TOKENS = 64 * 1024
MAX_ROWS = 2048
#: Texts per micro-batch: the unit that is tokenised ahead and copied back in one piece.
MICRO_BATCH = 8192


@dataclass(frozen=True)
class Batch:
    """One forward pass: host tensors of a fixed shape, the first ``n`` rows real."""

    input_ids: Any  # torch.Tensor (rows, length), pinned on CUDA
    attention_mask: Any  # torch.Tensor (rows, length), bool
    n: int


@dataclass(frozen=True)
class MicroBatch:
    """Texts ``order`` (indices into the caller's input) in scoring order, and their batches."""

    order: np.ndarray
    batches: list[Batch]


def class_probabilities(model: Any, input_ids: Any, attention_mask: Any) -> Any:
    """Softmax of a sequence classifier's logits, float32: ``(rows, classes)``."""
    import torch

    return torch.softmax(model(input_ids=input_ids, attention_mask=attention_mask).logits.float(), dim=-1)


def load_encoder(path: Any, *, layers: int | None, attn_implementation: str) -> Any:
    """The bare encoder (``AutoModel``) of ``path`` with only its first ``layers`` transformer
    layers (None = all): the summariser's sentence encoder, on torch and in its ONNX export."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(path, attn_implementation=attn_implementation)
    if layers is not None and layers < model.config.num_hidden_layers:
        model.encoder.layer = model.encoder.layer[:layers]
        model.config.num_hidden_layers = layers
    return model


def mean_pooled(model: Any, input_ids: Any, attention_mask: Any) -> Any:
    """Mean-pooled, L2-normalised last hidden states, float32 (the sentence-transformers recipe)."""
    import torch

    hidden = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.float()
    # the mask may be the prepared (rows, 1, 1, length) one: its last axis is the tokens
    keep = attention_mask.reshape(hidden.shape[0], hidden.shape[1], 1).to(hidden.dtype)
    pooled = (hidden * keep).sum(1) / keep.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def bucket_lengths(max_length: int, buckets: Sequence[int] = BUCKETS) -> list[int]:
    """The padded lengths used for ``max_length``: the buckets below it, then max_length."""
    return [b for b in buckets if b < max_length] + [max_length]


def rows_for(length: int, batch_tokens: int = BATCH_TOKENS, max_rows: int = MAX_ROWS) -> int:
    """Rows of a full batch at ``length``: the token budget, a power of two, 8 to ``max_rows``."""
    rows = max(8, min(max_rows, batch_tokens // max(1, length)))
    return 1 << (rows.bit_length() - 1)


def padded_rows(n: int, full: int) -> int:
    """Rows a batch of ``n`` real rows is padded to: the next power of two (≥ 8, ≤ ``full``)."""
    return min(full, max(8, 1 << (max(1, n) - 1).bit_length()))


class BatchedScorer:
    """A model's output for many texts (class probabilities by default), with the host working
    ahead of the device."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        device: str = "cpu",
        max_length: int = 128,
        buckets: Sequence[int] = BUCKETS,
        batch_tokens: int = BATCH_TOKENS,
        max_rows: int = MAX_ROWS,
        micro_batch: int = MICRO_BATCH,
        workers: int | None = None,
        prefetch: int = 3,
        compile: bool = False,
        cuda_graphs: bool = False,
        head: Callable[[Any, Any, Any], Any] = class_probabilities,
        width: int = len(LABELS),
    ) -> None:
        """``compile`` wraps the forward pass in ``torch.compile``; ``cuda_graphs`` captures it
        once per shape and replays it (CUDA only). Both are off by default: a capture costs
        milliseconds, a compile seconds to minutes per shape. ``head(model, ids, mask)`` turns a
        batch into ``(rows, width)`` float32 outputs."""
        import torch

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = device
        self.max_length = max_length
        self.buckets = tuple(buckets)
        self.batch_tokens = batch_tokens
        self.max_rows = max_rows
        self.micro_batch = micro_batch
        self.head = head
        self.width = width
        self.workers = workers or max(1, min(8, (os.cpu_count() or 2) - 1))
        self.prefetch = max(1, prefetch)
        self.cuda = device.startswith("cuda")
        if cuda_graphs and not self.cuda:
            raise ValueError("cuda_graphs needs a CUDA device")
        self.pad_id = tokenizer.pad_token_id or 0
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        if getattr(model.config, "_attn_implementation", None) != "sdpa" and hasattr(model, "set_attn_implementation"):
            try:  # SDPA: fused attention, and it takes the prepared mask (no sync)
                model.set_attn_implementation("sdpa")
            except (ValueError, ImportError):  # an architecture without SDPA: the 2-D mask path
                pass
        self._sdpa = getattr(model.config, "_attn_implementation", None) == "sdpa"
        forward = self._forward
        if compile:
            forward = torch.compile(forward, dynamic=False)
        self._run = self._graphed if cuda_graphs else forward
        self._graphs: dict[tuple[int, ...], tuple[Any, Any, Any, Any]] = {}

    # --- host side (worker threads) --------------------------------------------------------
    @property
    def pool(self) -> ThreadPoolExecutor:
        """Worker threads for tokenisation and other host work (created on first use)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="batched-scoring")
        return self._pool

    def thread_tokenizer(self) -> Any:
        """This thread's own copy of the tokenizer: the Rust tokenizer must not be shared across
        threads, because a call that changes its truncation settings fails while another
        thread is encoding with it."""
        tok = getattr(self._local, "tokenizer", None)
        if tok is None:
            import copy

            tok = self._local.tokenizer = copy.deepcopy(self.tokenizer)
        return tok

    def _encoder(self, max_length: int) -> Any:
        """This thread's backend tokenizer, truncating at ``max_length`` and never padding."""
        cache = getattr(self._local, "encoders", None)
        if cache is None:
            cache = self._local.encoders = {}
        enc = cache.get(max_length)
        if enc is None:
            from tokenizers import Tokenizer

            enc = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
            enc.no_padding()
            enc.enable_truncation(max_length)
            cache[max_length] = enc
        return enc

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(x) for x in items]`` on the worker threads, in order (host work such as
        splitting articles into chunks; ``fn`` may call :meth:`thread_tokenizer`)."""
        if len(items) < 2 * self.workers:
            return [fn(x) for x in items]
        step = -(-len(items) // (4 * self.workers))
        parts = [items[i : i + step] for i in range(0, len(items), step)]
        return [r for part in self.pool.map(lambda p: [fn(x) for x in p], parts) for r in part]

    def prepare(self, texts: Sequence[str], offset: int, max_length: int) -> MicroBatch:
        """Tokenise, sort by length and pad ``texts`` into fixed-shape batches."""
        import torch

        enc = self._encoder(max_length)
        encode = getattr(enc, "encode_batch_fast", enc.encode_batch)
        ids = [e.ids for e in encode(list(texts))]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(lengths, kind="stable")
        lens = lengths[order]
        batches: list[Batch] = []
        lo = 0
        for length in bucket_lengths(max_length, self.buckets):
            hi = int(np.searchsorted(lens, length, side="right"))
            full = rows_for(length, self.batch_tokens, self.max_rows)
            for start in range(lo, hi, full):
                stop = min(hi, start + full)
                batches.append(self._pad([ids[i] for i in order[start:stop]], lens[start:stop], padded_rows(stop - start, full), length, torch))
            lo = hi
        return MicroBatch(order=order + offset, batches=batches)

    def _pad(self, rows: list[list[int]], lens: np.ndarray, n_rows: int, length: int, torch: Any) -> Batch:
        ids = torch.full((n_rows, length), self.pad_id, dtype=torch.int64, pin_memory=self.cuda)
        mask = torch.zeros((n_rows, length), dtype=torch.bool, pin_memory=self.cuda)
        keep = np.arange(length) < lens[:, None]
        n = len(rows)
        ids.numpy()[:n][keep] = np.fromiter((t for r in rows for t in r), dtype=np.int64, count=int(lens.sum()))
        mask.numpy()[:n] = keep
        mask.numpy()[n:, 0] = True  # padding rows attend to one token (no NaN); they are dropped
        return Batch(ids, mask, n)

    # --- device side ------------------------------------------------------------------------
    def _forward(self, input_ids: Any, attention_mask: Any) -> Any:
        # SDPA takes a prepared (rows, 1, 1, length) boolean mask as it is; a 2-D mask would
        # make transformers check ``mask.all()`` first, which waits for the device.
        mask = attention_mask[:, None, None, :] if self._sdpa else attention_mask.long()
        return self.head(self.model, input_ids, mask)

    def _graphed(self, input_ids: Any, attention_mask: Any) -> Any:
        """The forward pass as a replay of this shape's CUDA graph (captured on first use).

        The result lives in the graph's memory and is overwritten by its next replay; the
        caller copies it out first (in stream order)."""
        entry = self._graphs.get(tuple(input_ids.shape))
        if entry is None:
            entry = self._graphs[tuple(input_ids.shape)] = self._capture(tuple(input_ids.shape))
        static_ids, static_mask, graph, out = entry
        static_ids.copy_(input_ids, non_blocking=True)
        static_mask.copy_(attention_mask, non_blocking=True)
        graph.replay()
        return out

    def _capture(self, shape: tuple[int, ...]) -> tuple[Any, Any, Any, Any]:
        import torch

        static_ids = torch.full(shape, self.pad_id, dtype=torch.int64, device=self.device)
        static_mask = torch.ones(shape, dtype=torch.bool, device=self.device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the capture (workspace allocations)
            for _ in range(2):
                self._forward(static_ids, static_mask)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the worker threads keep allocating pinned batches during a capture
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            out = self._forward(static_ids, static_mask)
        return static_ids, static_mask, graph, out

    def _launch(self, micro: MicroBatch) -> tuple[Any, Any]:
        """Queue every batch of ``micro`` and the copy of its results to the host."""
        import torch

        probs = torch.empty((len(micro.order), self.width), dtype=torch.float32, device=self.device)
        pos = 0
        for batch in micro.batches:
            ids = batch.input_ids.to(self.device, non_blocking=True)
            mask = batch.attention_mask.to(self.device, non_blocking=True)
            probs[pos : pos + batch.n] = self._run(ids, mask)[: batch.n]
            pos += batch.n
        if not self.cuda:
            return probs, None
        host = torch.empty(probs.shape, dtype=probs.dtype, pin_memory=True)
        host.copy_(probs, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return host, done

    def micro_batches(self, texts: Sequence[str], max_length: int) -> Iterator[MicroBatch]:
        """Micro-batches in input order, each prepared on a worker thread ahead of use."""
        spans = iter(range(0, len(texts), self.micro_batch))
        ahead: deque[Future[MicroBatch]] = deque()

        def submit() -> None:
            lo = next(spans, None)
            if lo is not None:
                ahead.append(self.pool.submit(self.prepare, texts[lo : lo + self.micro_batch], lo, max_length))

        for _ in range(self.prefetch):
            submit()
        while ahead:
            micro = ahead.popleft().result()
            submit()
            yield micro

    def score(self, texts: Sequence[str], max_length: int | None = None, progress: bool = False) -> np.ndarray:
        """The head's output ``(n, width)`` per text, rows in input order (class probabilities
        in LABELS order by default)."""
        import torch

        out = np.zeros((len(texts), self.width), dtype=np.float32)
        if not len(texts):
            return out
        max_length = min(max_length or self.max_length, getattr(self.model.config, "max_position_embeddings", 512) or 512)
        micros: Iterator[MicroBatch] = self.micro_batches(texts, max_length)
        if progress:
            from tqdm.auto import tqdm

            micros = tqdm(micros, total=-(-len(texts) // self.micro_batch), desc="scoring", unit="micro-batch")
        # No autocast weight cache: it must not live across CUDA-graph captures.
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False) if self.cuda else torch.autocast("cpu", enabled=False)
        pending: tuple[MicroBatch, Any, Any] | None = None
        with torch.inference_mode(), autocast:
            for micro in micros:
                host, done = self._launch(micro)
                if pending is not None:  # the previous micro-batch's copy, waited for only now
                    self._collect(out, *pending)
                pending = (micro, host, done)
            if pending is not None:
                self._collect(out, *pending)
        return out

    @staticmethod
    def _collect(out: np.ndarray, micro: MicroBatch, host: Any, done: Any) -> None:
        if done is not None:
            done.synchronize()
        out[micro.order] = host.numpy()

    def shapes(self, max_length: int | None = None) -> list[tuple[int, int]]:
        """Every (rows, length) a forward pass can have: what compiling must cover."""
        max_length = max_length or self.max_length
        out = []
        for length in bucket_lengths(max_length, self.buckets):
            full = rows_for(length, self.batch_tokens, self.max_rows)
            rows = 8
            while rows < full:
                out.append((rows, length))
                rows *= 2
            out.append((full, length))
        return out

    @property
    def captured_shapes(self) -> list[tuple[int, ...]]:
        """The (rows, length) shapes captured as CUDA graphs so far."""
        return sorted(self._graphs)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
