"""The sentiment classifier's training recipe: :class:`TrainConfig` (one run's inputs and
hyper-parameters, validated), :meth:`TrainConfig.production` (the production run of each tier)
and :func:`config_from_params` (DAG params, CLI options → a run, through the one declaration of
the retraining options in :mod:`newspulse.models.sentiment.train_options`).

Kept apart from the training loop (:mod:`newspulse.models.sentiment.train`) so that the recipe a
run follows can be read, and built by the CLI and the DAG, without importing torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from newspulse.errors import BadInput
from newspulse.models.sentiment.data import DEFAULT_DEV_FILES, DEFAULT_ENTITY_DEV_FILES, DEFAULT_EVAL_FILES, DEFAULT_TRAIN_FILES, DataError, commercial_defaults
from newspulse.models.sentiment.registry import DEFAULT_F1_FLOOR
from newspulse.models.sentiment.soft_labels import SOFT_LABELS_DIR
from newspulse.models.sentiment.train_options import config_fields
from newspulse.schema import Feedback

log = logging.getLogger(__name__)

#: Optimiser steps of the default retraining: a fixed recipe, so the same command gives the same
#: model for a seed however busy the machine is (a wall-clock budget trained fewer steps on a
#: loaded machine, issue 26). Sized to ≤ 10 minutes end to end on 2 idle CPU cores.
DEFAULT_STEPS = 2200
#: The accurate tier's recipe (``newspulse model train --tier accurate``): all-mpnet-base-v2
#: fine-tuned on the gold rows, 3 epochs of the bundled train splits (22,776 rows) at 16 rows a
#: step, with the learning rate a 110M-parameter encoder takes (the MiniLM's 1e-4 makes it
#: diverge), in bf16 autocast where the CPU has it natively.
ACCURATE_STEPS = 4300
ACCURATE_LEARNING_RATE = 2e-5
#: The teacher soft labels the default run distils from: out-of-fold probabilities of three
#: all-mpnet-base-v2 fold teachers (the accurate tier's recipe) on every bundled training row,
#: SEntFiN included, each a second target of its gold row (no extra rows, so no extra steps).
#: Pinned: a swapped file fails the run.
#: docs/model.md ("Distillation on the training rows") has the measurement that chose it.
DEFAULT_SOFT_LABELS = SOFT_LABELS_DIR / "train-v5.csv.gz"
DEFAULT_SOFT_LABELS_SHA256 = "82d45a713471049ceb855c59c8e350d7fbdcf6558b58718a24a87ea3f960b850"


class TrainConfig(BaseModel):
    """One training run. Paths may be given as strings (DAG params are JSON); a value of the
    wrong type or out of range raises :class:`~newspulse.errors.BadInput` (exit 2 on the CLI)
    with one line naming the field."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    registry: Path
    base_model: str = ""
    train_files: list[Path] = Field(default_factory=lambda: list(DEFAULT_TRAIN_FILES))
    dev_files: list[Path] = Field(default_factory=lambda: list(DEFAULT_DEV_FILES))
    #: The fixed split the gate compares candidate and production on; None = dev_files.
    eval_files: list[Path] | None = None
    #: Entity-level dev files (``id,text,entity,label``): the card's entity figures, the gate's
    #: entity comparison and the int8 check of entity verdicts; empty = none.
    entity_dev_files: list[Path] = Field(default_factory=list)
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
    #: Which weights the run registers: "best" = the best dev checkpoint (early stopping on the
    #: dev files), "last" = the weights at the final step. Fixed-compute comparisons use "last":
    #: a small dev slice picking among checkpoints adds noise larger than the effect measured.
    keep: Literal["best", "last"] = "best"
    #: Freeze the 30k×d word-embedding matrix: ~half the parameters, little accuracy, much time.
    freeze_embeddings: bool = True
    #: Wall-clock budget of the fine-tuning loop: when spent, training stops and the best
    #: checkpoint so far is kept (CPU runs stay within their slot; a GPU finishes every epoch).
    time_budget_s: float | None = None
    #: Folder of the resumable checkpoint (models/sentiment/checkpoint.py): a retried run continues from its
    #: last dev evaluation instead of step 0. None = no checkpoint.
    checkpoint_dir: Path | None = None
    #: Teacher soft labels (models/sentiment/soft_labels.py artifact) to distil from; None = gold labels only.
    soft_labels: Path | None = None
    #: The sha256 the artifact must have ("" = the one in its manifest); a mismatch fails the run.
    soft_labels_sha256: str = ""
    #: Loss = class-weighted cross-entropy on gold rows + ``distill_alpha`` · T² · KL(teacher_T ‖
    #: student_T) on soft-labelled rows, T = ``distill_temperature``.
    distill_alpha: float = 0.5
    distill_temperature: float = 2.0
    #: Which soft labels the run uses. "unlabelled": rows the gold set lacks become extra soft rows,
    #: soft labels of gold texts are dropped (the gold label wins). "gold": a soft label of a gold
    #: row becomes that row's second target (cross-entropy + the distillation term: Hinton's
    #: distillation on the training set, no extra rows and so no extra steps), other texts are
    #: dropped. "both": the two together. "auto": "gold" for an artifact whose manifest says it
    #: labels training rows (``"kind": "training-rows"``), else "unlabelled".
    distill_rows: Literal["auto", "unlabelled", "gold", "both"] = "auto"
    #: Weight averaging (SWA over the end of the schedule): the registered weights are the mean
    #: of the weights after each of the last ``average_last`` share of the planned steps; 0 = the
    #: weights of the last step. Needs ``keep="last"``.
    average_last: float = Field(0.0, ge=0.0, lt=1.0)
    #: Agreement-aware targets: a gold row whose annotators agreed at ``a`` % (PhraseBank's 50, 66,
    #: 75 and 100) is label-smoothed by ``agreement_smoothing · (1 − a/100)``, so a sentence half
    #: the annotators disputed is a softer target than a unanimous one; rows without an agreement
    #: (Twitter, SEntFiN, feedback) keep their hard label. 0 = off.
    agreement_smoothing: float = Field(0.0, ge=0.0, le=1.0)
    #: Share of the entity-marked rows (SEntFiN headlines, ``[[company]]``) each epoch trains on:
    #: a fresh seeded subset per epoch, every story-level row every epoch. Below 1 the story rows
    #: get more passes within the same step count, the entity rows fewer. 1 = every row.
    entity_share: float = Field(1.0, gt=0.0, le=1.0)
    #: "teacher" registers a model that makes soft labels and is never promoted.
    role: Literal["student", "teacher"] = "student"
    #: The serving tier the model is for: "accurate" models get their own production pointer
    #: (``production-accurate``) and never replace the fast tier's (models/sentiment/registry.py).
    tier: Literal["fast", "accurate"] = "fast"
    #: Refuse inputs whose licence forbids commercial use (PhraseBank, the bundled soft labels).
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
    #: Precision of the forward passes of a CPU run (the weights, gradients and optimiser state
    #: stay fp32; dev evaluations run fp32, as the model is exported). "bf16" autocasts to
    #: bfloat16 and needs a CPU with native bf16 (AVX512-BF16 or AMX): about 1.9× faster per
    #: all-mpnet-base-v2 step there, and emulated (slower than fp32) elsewhere, so it is refused.
    #: "auto" = bf16 where native, else fp32. A CUDA run always autocasts (bf16, or fp16 with a
    #: loss scaler). The card records what ran (``training.precision``).
    cpu_precision: Literal["fp32", "bf16", "auto"] = "fp32"
    progress: bool = True

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise BadInput(f"training configuration: {_one_line(err)}") from None

    @model_validator(mode="after")
    def _in_range(self) -> "TrainConfig":
        if self.distill_alpha < 0 or self.distill_temperature <= 0:
            raise ValueError("distill_alpha must be ≥ 0 and distill_temperature > 0")
        if self.epochs < 1 or self.batch_size < 1 or self.max_length < 8:
            raise ValueError("epochs and batch_size must be ≥ 1 and max_length ≥ 8")
        if self.average_last > 0 and self.keep != "last":
            raise ValueError("average_last needs keep='last' (the average is of the last steps, not of the best checkpoint)")
        return self

    @property
    def gate_files(self) -> list[Path]:
        return list(self.eval_files) if self.eval_files else list(self.dev_files)

    def params(self) -> dict[str, Any]:
        skip = {"registry", "train_files", "dev_files", "eval_files", "entity_dev_files", "feedback", "progress", "checkpoint_dir"}
        return {k: str(v) if isinstance(v, Path) else v for k, v in self.model_dump(exclude=skip).items()}

    @classmethod
    def production(cls, settings, tier: str = "fast", *, distill: bool = True, **overrides: Any) -> "TrainConfig":
        """The production retraining run of ``tier``.

        ``fast``: the bundled train splits (story-level PhraseBank and Twitter, entity-level
        SEntFiN) + analyst feedback, distilled from the bundled teacher soft labels (``distill``;
        an explicit ``soft_labels`` replaces them), a fixed :data:`DEFAULT_STEPS` steps keeping
        the last weights, gated on the fixed evaluation split. Bundled files that a deployment
        removed (e.g. PhraseBank, for its non-commercial licence) are left out, and
        ``commercial_only=True`` leaves out every non-commercial one, the soft labels too (their
        teacher learned from PhraseBank).

        ``accurate``: the same data, feedback, gate and int8 check, but all-mpnet-base-v2
        (``NEWSPULSE_ACCURATE_BASE_MODEL``: the folder ``python -m
        newspulse.models.sentiment.teacher fetch`` wrote) fine-tuned on the gold labels with its
        own learning rate and :data:`ACCURATE_STEPS` steps, registered as tier ``accurate``. No
        distillation (``distill`` is ignored): the bundled soft labels come from this very encoder."""
        if tier == "accurate":
            base = overrides.pop("base_model", None) or settings.accurate_base_model
            if not base:
                raise BadInput(
                    "the accurate tier needs all-mpnet-base-v2: fetch it with `python -m newspulse.models.sentiment.teacher fetch --dest DIR` "
                    "and set NEWSPULSE_ACCURATE_BASE_MODEL=DIR/all-mpnet-base-v2 (or pass --base-model)"
                )
            overrides = {"base_model": base, "max_steps": ACCURATE_STEPS, "learning_rate": ACCURATE_LEARNING_RATE, "cpu_precision": "auto"} | overrides
            distill = False
        commercial = bool(overrides.get("commercial_only"))
        values: dict[str, Any] = dict(
            registry=settings.model_registry,
            base_model=settings.base_model,
            train_files=_bundled(DEFAULT_TRAIN_FILES, commercial),
            dev_files=_bundled(DEFAULT_DEV_FILES, commercial),
            eval_files=_bundled(DEFAULT_EVAL_FILES, commercial),
            entity_dev_files=[p for p in DEFAULT_ENTITY_DEV_FILES if p.exists()],
            include_feedback=True,
            device=settings.device,
            max_steps=DEFAULT_STEPS,
            keep="last",
            tier=tier,
        )
        if distill and not commercial and "soft_labels" not in overrides:
            if DEFAULT_SOFT_LABELS.exists():
                values.update(soft_labels=DEFAULT_SOFT_LABELS, soft_labels_sha256=DEFAULT_SOFT_LABELS_SHA256)
            else:
                log.warning("bundled soft labels %s are missing; training on the gold labels alone", DEFAULT_SOFT_LABELS)
        return cls(**(values | overrides))


def _one_line(err: ValidationError) -> str:
    """pydantic's multi-line report as one line: ``field: problem (got value)`` per error."""
    parts = []
    for e in err.errors():
        where = ".".join(str(x) for x in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg} (got {e['input']!r})" if where else msg)
    return "; ".join(parts)


def _bundled(files: tuple[Path, ...], commercial_only: bool) -> list[Path]:
    present = [p for p in files if p.exists()]
    for p in set(files) - set(present):
        log.warning("bundled data file %s is missing; training without it", p)
    if not present:
        raise DataError(f"none of the bundled data files {[str(p) for p in files]} exists; pass --train/--dev")
    return commercial_defaults(present) if commercial_only else present


def config_from_params(params: dict[str, Any], settings, feedback: Callable[[], Iterable[Feedback]] | None = None, *, progress: bool = False, promote: bool = True) -> TrainConfig:
    """A TrainConfig from the retraining options by their declared names (DAG params, ``--conf``
    JSON, and ``newspulse model train``'s options, which are generated from the same
    declaration): empty or missing values keep the defaults of :meth:`TrainConfig.production`;
    ``data_sources`` names the training CSVs; ``distill: false`` trains on the gold labels alone;
    ``tier: accurate`` starts from the accurate tier's recipe."""
    mapping = config_fields()  # declared once, with the DAG params and CLI options (train_options.py)
    overrides = {field_name: params[key] for key, field_name in mapping.items() if params.get(key) not in (None, "", [])}
    tier = overrides.pop("tier", "fast")
    return TrainConfig.production(settings, tier, distill=params.get("distill") is not False, progress=progress, promote=promote, feedback=feedback, **overrides)
