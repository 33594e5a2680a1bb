"""The PyTorch backend: the fine-tuned ``*ForSequenceClassification`` module run eagerly (CPU
fp32, the fallback when ONNX Runtime cannot serve a model; CUDA bf16, which
:mod:`newspulse.models.backends.cuda_batched` then drives)."""

from __future__ import annotations

import numpy as np

from newspulse.models.backends.base import Backend


class TorchBackend(Backend):
    """A PyTorch ``*ForSequenceClassification`` module: fp32 on CPU, bf16 on CUDA."""

    name = "torch"

    def __init__(self, model, device: str = "cpu") -> None:
        import torch

        self.device = device
        self.model = model.to(device, dtype=torch.bfloat16).eval() if device == "cuda" else model.eval()
        self.precision = "bf16" if device == "cuda" else "fp32"
        self.max_positions = getattr(model.config, "max_position_embeddings", 512) or 512

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            batch = {"input_ids": torch.from_numpy(input_ids).to(self.device), "attention_mask": torch.from_numpy(attention_mask).to(self.device)}
            return self.model(**batch).logits.float().cpu().numpy()
