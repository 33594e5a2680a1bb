"""Shared fixtures: isolated settings per test, and one real fine-tuned classifier per session.

The classifier fixture trains the real model (the packaged MiniLM, fine-tuned on a subsample of
the bundled train splits, entity-level SEntFiN rows included) once, caches it under .cache/ keyed by the training code and data, and
hands its registry to every test that needs real predictions.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/peers.py

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TRAIN_FILES = [ROOT / "data/phrasebank/train.csv", ROOT / "data/twitter_financial_news/train.csv", ROOT / "data/sentfin/train.csv"]
DEV_FILES = [ROOT / "data/phrasebank/dev.csv"]
#: The code that decides the quick model's weights; other models/ modules (CLI, registry, evaluation)
#: don't, so editing them reuses the cached model instead of training another.
TRAINING_CODE = [p for p in (ROOT / "models" / "sentiment" / f"{m}.py" for m in ("config", "train", "data", "soft_labels", "checkpoint", "entities")) if p.exists()]


@pytest.fixture
def np_env(tmp_path, monkeypatch):
    """Point every NEWSPULSE_* setting that holds state at a fresh temporary folder."""
    from newspulse.settings import get_settings

    monkeypatch.setenv("NEWSPULSE_STORE_URL", f"sqlite:///{tmp_path / 'newspulse.db'}")
    monkeypatch.setenv("NEWSPULSE_MODEL_REGISTRY", str(tmp_path / "registry"))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _training_key() -> str:
    digest = hashlib.sha256()
    for path in TRAINING_CODE + TRAIN_FILES + DEV_FILES:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def trained_classifier_registry() -> Path:
    """A model registry whose production model is the real classifier, quickly fine-tuned."""
    return quick_classifier_registry()


def quick_classifier_registry() -> Path:
    """The cached quick-trained registry, trained on first use (also used by bench/faults.py)."""
    return _cached_registry("test-registry", _train_quick)


@pytest.fixture(scope="session")
def entity_classifier_registry() -> Path:
    """A registry whose production model has learned the entity markers (see _train_entity)."""
    return _cached_registry("test-entity-registry", _train_entity)


def _cached_registry(name: str, train_into: Callable[[Path], None]) -> Path:
    """``.cache/<name>-<training key>``, trained by ``train_into`` on first use."""
    from newspulse.models.sentiment.registry import Registry

    cache = ROOT / ".cache" / f"{name}-{_training_key()}"
    cache.parent.mkdir(exist_ok=True)
    with open(cache.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent test runs train once, not once each
        if Registry(cache).production_version() is None:
            shutil.rmtree(cache, ignore_errors=True)  # a run that died before promoting
            train_into(cache)
    return cache


def _train_quick(registry: Path) -> None:
    """1 epoch on 2,500 rows of the bundled train splits (about half of them SEntFiN entity
    rows): a real, if modest, classifier of story and entity verdicts."""
    from newspulse.models.sentiment.config import TrainConfig
    from newspulse.models.sentiment.train import train

    train(TrainConfig(registry=registry, train_files=TRAIN_FILES, dev_files=DEV_FILES, epochs=1, max_train_rows=2500, max_length=64, promote=True))


def _train_entity(registry: Path) -> None:
    """3 epochs (468 steps) on 2,500 rows: 600 PhraseBank and 600 Twitter sentences, and the
    first 1,300 SEntFiN rows of headlines whose entities' labels disagree (the rows that teach
    what the markers mean). The quick classifier's single epoch (157 steps, conflicting rows
    or not) gives two companies in one story the same verdict; these 468 steps tell them apart."""
    import pandas as pd

    from newspulse.models.sentiment.config import TrainConfig
    from newspulse.models.sentiment.train import train

    data = registry.with_name(registry.name + "-data")
    (data / "sentfin").mkdir(parents=True, exist_ok=True)
    story = pd.concat([pd.read_csv(path).sample(600, random_state=0)[["text", "label"]] for path in TRAIN_FILES[:2]])
    story.to_csv(data / "story.csv", index=False)
    sentfin = pd.read_csv(TRAIN_FILES[2], keep_default_na=False)
    conflicting = sentfin.groupby("id")["label"].transform("nunique").gt(1)
    sentfin[conflicting].head(1300).to_csv(data / "sentfin" / "train.csv", index=False)
    train(TrainConfig(registry=registry, train_files=[data / "story.csv", data / "sentfin" / "train.csv"], dev_files=DEV_FILES, epochs=3, max_length=64, promote=True, quantize_check=False))
