"""The one place that picks a backend: the device (``NEWSPULSE_DEVICE``), the CPU engine
(``NEWSPULSE_INFERENCE_BACKEND``) and int8 or fp32 (``NEWSPULSE_QUANTIZE`` and the model card's
int8 check) decide which of the backends a model folder is served by.
"""

from __future__ import annotations

import logging
from pathlib import Path

from newspulse.models.backends.base import Backend
from newspulse.models.backends.torch import TorchBackend
from newspulse.models.sentiment.registry import ModelCard

log = logging.getLogger(__name__)


def pick_device(setting: str = "auto") -> str:
    """``cuda`` when asked for or (``auto``) available, else ``cpu``; an installation without
    torch (the serving one) has no CUDA path, so ``auto`` means the CPU there."""
    try:
        import torch
    except ImportError:
        if setting == "cuda":
            from newspulse.models.backends.onnx import require_torch

            require_torch("NEWSPULSE_DEVICE=cuda")
        return "cpu"
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def cpu_backend(path: Path, *, precision: str, engine: str = "auto") -> Backend:
    """The CPU backend for a model folder: ONNX Runtime (``precision`` fp32 or int8) unless
    ``engine`` is ``torch``. With ``auto``, torch fp32 when ONNX Runtime is missing or cannot
    export the model (one warning); with ``onnxruntime`` that raises
    :class:`newspulse.models.backends.onnx.OnnxUnavailable`. Without torch (the serving install)
    the fallback is :class:`~newspulse.models.backends.onnx.TorchMissing`, naming the reason."""
    from transformers import AutoModelForSequenceClassification

    from newspulse.models.backends.onnx import OnnxBackend, OnnxUnavailable, require_torch

    if engine != "torch":
        try:
            return OnnxBackend.for_model(path, precision)
        except OnnxUnavailable as exc:
            if engine == "onnxruntime":
                raise
            require_torch(f"serving model {path.name} without ONNX Runtime ({exc})")
            log.warning("ONNX Runtime backend unavailable, serving %s with torch fp32 instead: %s", path.name, exc)
    else:
        require_torch("NEWSPULSE_INFERENCE_BACKEND=torch")
    return TorchBackend(AutoModelForSequenceClassification.from_pretrained(path))


def load_backend(path: Path, card: ModelCard, *, device: str, quantize: str = "auto", engine: str = "auto") -> Backend:
    """The backend serving the registry version folder ``path`` on ``device`` (a
    :func:`pick_device` answer). On CUDA: torch bf16. On CPU: ONNX Runtime (unless ``engine`` is
    ``torch``), int8 when ``quantize`` is ``on``, or ``auto`` and the card recommends it (its
    int8 check kept ≥ 99 % of the fp32 predictions and the macro-F1 within 0.005 on both dev
    splits and every checked batch size), else fp32."""
    if device == "cuda":
        from transformers import AutoModelForSequenceClassification

        return TorchBackend(AutoModelForSequenceClassification.from_pretrained(path), device)
    int8 = quantize == "on" or (quantize == "auto" and bool(card.quantization.get("recommended")))
    return cpu_backend(path, precision="int8" if int8 else "fp32", engine=engine)
