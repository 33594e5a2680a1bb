"""The backend interface: what :class:`newspulse.models.sentiment.predict.SentimentModel` hands
its padded batches to. Everything around the forward pass (tokenising, batching, softmax,
chunking articles) stays with the model, so a backend is only the network.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np


class Backend:
    """What runs the network: padded token ids in, logits out (numpy on both sides).

    :class:`SentimentModel` owns everything around it (tokenising, length-sorted batching, softmax,
    chunking and aggregating articles), so a backend is only the forward pass. ``name`` is what
    ``newspulse bench model`` reports; ``precision`` is ``fp32``, ``bf16`` or ``int8``.
    """

    name: str = ""
    precision: str = "fp32"
    #: Longest input the model's position embeddings allow.
    max_positions: int = 512
    #: Batches it runs side by side (ONNX Runtime: one per core); callers split their work
    #: into at least this many batches so that every core gets one.
    parallel: int = 1
    #: Most padded tokens per batch it runs fastest with (None: the caller's batch size alone).
    batch_tokens: int | None = None

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def logits_many(self, batches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(indices, logits)`` per ``(indices, input_ids, attention_mask)`` batch, in order."""
        for idx, input_ids, attention_mask in batches:
            yield idx, self.logits(input_ids, attention_mask)
