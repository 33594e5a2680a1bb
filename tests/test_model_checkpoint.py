"""Resumable fine-tuning (models/sentiment/checkpoint.py): a run killed after a checkpoint and started
again ends exactly where an uninterrupted run ends; a checkpoint of another run is ignored."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from newspulse.models.sentiment.checkpoint import STATE_FILE, TrainingCheckpoint
from newspulse.models.sentiment.registry import Registry
from newspulse.models.sentiment.config import TrainConfig
from newspulse.models.sentiment.train import fit_and_register, training_precision

ROOT = Path(__file__).resolve().parent.parent


class Killed(RuntimeError):
    """Stands in for the container dying (execution_timeout, OOM, lost host)."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    from newspulse.models.sentiment.bench import random_bert_classifier
    from newspulse.models.sentiment.data import packaged_base_model

    d = tmp_path_factory.mktemp("ckpt")
    pd.read_csv(ROOT / "data/phrasebank/train.csv").head(64)[["text", "label"]].to_csv(d / "train.csv", index=False)
    pd.read_csv(ROOT / "data/phrasebank/dev.csv").head(24).to_csv(d / "dev.csv", index=False)
    model, tokenizer = random_bert_classifier(packaged_base_model(), hidden_size=32, num_layers=2, num_heads=2)
    model.save_pretrained(d / "base")
    tokenizer.save_pretrained(d / "base")
    return d


def _cfg(tiny: Path, registry: Path, checkpoint_dir: Path | None, **extra) -> TrainConfig:
    return TrainConfig(
        registry=registry, base_model=str(tiny / "base"), train_files=[tiny / "train.csv"], dev_files=[tiny / "dev.csv"],
        epochs=2, batch_size=8, max_length=32, evals_per_epoch=2, patience=100, device="cpu", progress=False,
        checkpoint_dir=checkpoint_dir, **extra,
    )


def _weights(registry: Path, version: str) -> dict[str, torch.Tensor]:
    return load_file(Registry(registry).version_dir(version) / "model.safetensors")


NATIVE_BF16 = training_precision(TrainConfig(registry=Path("r"), cpu_precision="auto"), "cpu") == "bf16"


@pytest.mark.parametrize(
    "recipe",
    [
        {},
        {"keep": "last", "average_last": 0.5},
        pytest.param({"cpu_precision": "bf16"}, marks=pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16")),
    ],
    ids=["best", "averaged", "bf16"],
)
def test_a_killed_run_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(tiny, tmp_path, monkeypatch, recipe):
    """Also with weight averaging (the running mean travels in the checkpoint) and with bf16
    autocast (the accurate tier's recipe on a CPU that has it)."""
    whole = fit_and_register(_cfg(tiny, tmp_path / "a", tmp_path / "ckpt-a", **recipe))
    assert not (tmp_path / "ckpt-a").exists(), "a finished run removes its checkpoint"

    real_save = TrainingCheckpoint.save
    saves: list[int] = []

    def save_then_die(self, loop, **kw):
        real_save(self, loop, **kw)
        saves.append(loop.step)
        if len(saves) == 3:  # dies right after the third dev evaluation, mid-way through epoch 2
            raise Killed(f"killed after the checkpoint at step {loop.step}")

    monkeypatch.setattr(TrainingCheckpoint, "save", save_then_die)
    with pytest.raises(Killed):
        fit_and_register(_cfg(tiny, tmp_path / "b", tmp_path / "ckpt-b", **recipe))
    assert (tmp_path / "ckpt-b" / STATE_FILE).is_file() and Registry(tmp_path / "b").list_versions() == []
    killed_at = saves[-1]
    monkeypatch.setattr(TrainingCheckpoint, "save", real_save)

    resumed = fit_and_register(_cfg(tiny, tmp_path / "b", tmp_path / "ckpt-b", **recipe))
    history = resumed.training["history"]
    assert history == whole.training["history"], "same evaluations, same scores, in the same order"
    assert history[0]["step"] < killed_at < history[-1]["step"]
    assert resumed.training["steps"] == whole.training["steps"] and resumed.training["best_step"] == whole.training["best_step"]
    a, b = _weights(tmp_path / "a", whole.version), _weights(tmp_path / "b", resumed.version)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "bit-identical weights"
    assert not (tmp_path / "ckpt-b").exists()
    assert resumed.training["averaged_steps"] == (resumed.training["steps"] // 2 if "average_last" in recipe else 0)
    assert resumed.training["precision"] == ("bf16" if "cpu_precision" in recipe else "fp32")


def test_weight_averaging_registers_the_mean_of_the_last_steps(tiny, tmp_path):
    """average_last=0.5 registers other weights than the last step's, from the same run."""
    last = fit_and_register(_cfg(tiny, tmp_path / "last", None, keep="last"))
    mean = fit_and_register(_cfg(tiny, tmp_path / "mean", None, keep="last", average_last=0.5))
    assert last.training["history"] == mean.training["history"], "averaging does not change the run itself"
    assert mean.training["averaged_steps"] == mean.training["steps"] // 2 and mean.params["average_last"] == 0.5
    a, b = _weights(tmp_path / "last", last.version), _weights(tmp_path / "mean", mean.version)
    trained = [k for k in a if "classifier" in k]
    assert trained and any(not torch.equal(a[k], b[k]) for k in trained)


def test_weight_averaging_needs_the_last_weights_kept(tiny, tmp_path):
    from newspulse.errors import BadInput

    with pytest.raises(BadInput, match="average_last needs keep='last'"):
        _cfg(tiny, tmp_path, None, keep="best", average_last=0.2)


def test_a_checkpoint_of_another_run_is_ignored(tiny, tmp_path, monkeypatch):
    real_save = TrainingCheckpoint.save

    def save_then_die(self, loop, **kw):
        real_save(self, loop, **kw)
        raise Killed("after the first checkpoint")

    monkeypatch.setattr(TrainingCheckpoint, "save", save_then_die)
    with pytest.raises(Killed):
        fit_and_register(_cfg(tiny, tmp_path / "r", tmp_path / "ckpt", learning_rate=5e-4))
    monkeypatch.setattr(TrainingCheckpoint, "save", real_save)
    card = fit_and_register(_cfg(tiny, tmp_path / "r", tmp_path / "ckpt"))  # another learning rate: another run
    fresh = fit_and_register(_cfg(tiny, tmp_path / "fresh", None))
    assert card.training["history"] == fresh.training["history"], "started from step 0, not from the other run's state"
