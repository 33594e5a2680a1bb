"""Resumable fine-tuning: the training loop's state, written at every dev evaluation.

Why: the retraining DAG retries a ``train`` task that hit its ``execution_timeout``, lost its
container or its host. Without a checkpoint every retry starts again from step 0 and can time out
the same way forever; with one, a retry continues from the last dev evaluation with the same
weights, optimiser and scheduler state, batch order and best-so-far model.

A checkpoint belongs to one run: it records a fingerprint of the configuration and the training
rows, and a checkpoint with another fingerprint is ignored (with a warning), never resumed.
The folder is removed once the run has registered its model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATE_FILE = "loop.pt"


@dataclass
class LoopState:
    """Where the fine-tuning loop stands (everything but the tensors)."""

    step: int = 0
    epoch: int = 0
    #: Batches of ``epoch`` already trained; the epoch's batch order is rebuilt from ``epoch_rng``.
    batches_done: int = 0
    #: numpy bit-generator state at the start of ``epoch`` (it decides that epoch's batches).
    epoch_rng: dict | None = None
    best_f1: float = -1.0
    best_step: int = 0
    stale: int = 0
    history: list[dict] = field(default_factory=list)
    #: Steps whose weights the running average (``TrainConfig.average_last``) holds.
    averaged_steps: int = 0
    horizon_steps: int = 0
    #: Seconds already spent (run and fine-tuning loop): a time budget covers every attempt.
    elapsed_s: float = 0.0
    fit_elapsed_s: float = 0.0


def run_checkpoint_dir(registry: Path | str, run_id: str) -> Path:
    """Where one orchestrated run (an Airflow DAG run) keeps its checkpoint: retries of the run
    share it, a new run starts fresh."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    return Path(registry) / "_checkpoints" / safe


def fingerprint(params: dict[str, Any], rows: int, label_counts: dict[str, int]) -> str:
    """Identity of a run: its parameters and the size and labels of its training frame."""
    blob = json.dumps({"params": params, "rows": rows, "labels": label_counts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class TrainingCheckpoint:
    """Saves and restores the loop in ``folder``; ``folder=None`` turns checkpointing off."""

    def __init__(self, folder: Path | None, run_fingerprint: str) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.fingerprint = run_fingerprint

    def save(self, loop: LoopState, *, model, optim, sched, scaler, best_state: dict | None, averaged: dict | None = None) -> None:
        """Write the checkpoint atomically (a kill mid-write leaves the previous one intact)."""
        if self.folder is None:
            return
        import torch

        self.folder.mkdir(parents=True, exist_ok=True)
        blob = {
            "fingerprint": self.fingerprint,
            "loop": asdict(loop),
            "model": model.state_dict(),
            "best_state": best_state,
            "averaged": averaged,
            "optim": optim.state_dict(),
            "sched": sched.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "torch_rng": torch.get_rng_state(),
        }
        tmp = self.folder / (STATE_FILE + ".tmp")
        torch.save(blob, tmp)
        os.replace(tmp, self.folder / STATE_FILE)
        log.info("checkpoint at step %d written to %s", loop.step, self.folder)

    def restore(self, *, model, optim, sched, scaler) -> tuple[LoopState, dict | None, dict | None] | None:
        """Load the checkpoint into the given objects; returns the loop state, the best weights
        and the running weight average (``TrainConfig.average_last``), or None when there is
        none for this run."""
        if self.folder is None or not (self.folder / STATE_FILE).is_file():
            return None
        import torch

        blob = torch.load(self.folder / STATE_FILE, map_location="cpu", weights_only=False)
        if blob.get("fingerprint") != self.fingerprint:
            log.warning("ignoring the checkpoint in %s: it belongs to another run (configuration or data changed)", self.folder)
            return None
        model.load_state_dict(blob["model"])
        optim.load_state_dict(blob["optim"])
        sched.load_state_dict(blob["sched"])
        if scaler is not None and blob["scaler"] is not None:
            scaler.load_state_dict(blob["scaler"])
        torch.set_rng_state(blob["torch_rng"])
        loop = LoopState(**blob["loop"])
        log.info("resuming from the checkpoint at step %d (epoch %d, best dev macro-F1 %.4f)", loop.step, loop.epoch + 1, loop.best_f1)
        return loop, blob["best_state"], blob.get("averaged")

    def clear(self) -> None:
        """Remove the checkpoint once the run's model is registered."""
        if self.folder is not None and self.folder.exists():
            shutil.rmtree(self.folder, ignore_errors=True)
