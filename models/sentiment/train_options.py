"""The retraining options a run may be given, declared once.

The ``sentiment_retrain`` DAG's params (:func:`dag_param_specs`) and the options of ``newspulse
model train`` (built by ``models/cli.py`` from :data:`TRAIN_OPTIONS`) are generated from this
declaration, and :func:`newspulse.models.sentiment.config.config_from_params` maps either to
:class:`~newspulse.models.sentiment.config.TrainConfig` fields through it: a new option is one
line here, and the surfaces cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainOption:
    """One retraining option.

    ``param`` is its name in DAG params (and ``--conf`` JSON), ``field`` the TrainConfig field it
    sets (None: an argument of :meth:`~newspulse.models.sentiment.config.TrainConfig.production`),
    ``description`` the DAG form's text. ``in_form``: shown in the DAG's trigger form; otherwise
    accepted from ``--conf`` JSON only. ``minimum``/``maximum`` bound it on both surfaces.

    On ``newspulse model train`` (None ``cli``: DAG only): ``cli`` is the command's parameter
    name, ``flag`` its option name(s) when not ``--<cli>`` (``--x/--no-x`` for a switch),
    ``cli_type`` the value's type (a tuple: the choices), ``cli_help`` its help text. An option
    that is not given keeps the run's default, as an empty DAG param does."""

    param: str
    field: str | None
    json_type: str | list[str]
    default: Any
    description: str = ""
    cli: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    in_form: bool = True
    flag: str | None = None
    cli_type: Any = None
    cli_help: str = ""


TRAIN_OPTIONS: tuple[TrainOption, ...] = (
    TrainOption(
        "tier", "tier", "string", "fast",
        "fast: the MiniLM every article is scored by; accurate: all-mpnet-base-v2 (NEWSPULSE_ACCURATE_BASE_MODEL, its own learning rate and steps), gated against and promoted to the accurate tier's pointer (production-accurate).",
        cli="tier", cli_type=("fast", "accurate"),
        cli_help="fast: the MiniLM every article is scored by. accurate: all-mpnet-base-v2 (NEWSPULSE_ACCURATE_BASE_MODEL) with its own learning rate and steps (3 epochs), gated against and promoted to the accurate tier's own pointer; the processor consults it for the fast tier's least-confident stories (NEWSPULSE_CASCADE_THRESHOLD).",
    ),
    TrainOption(
        "base_model", "base_model", "string", "", "HF id or local path; empty = NEWSPULSE_BASE_MODEL or the packaged MiniLM.",
        cli="base_model", cli_type=str, cli_help="HF id or local path (default NEWSPULSE_BASE_MODEL / packaged MiniLM).",
    ),
    TrainOption("epochs", "epochs", ["null", "integer"], None, "Training epochs; empty = default.", cli="epochs", minimum=1, cli_type=int, cli_help="Training epochs (default from the default config)."),
    TrainOption(
        "data_sources", "train_files", "array", [], "Training CSVs (text,label, or entity-level id,text,entity,label); empty = bundled PhraseBank + Twitter + SEntFiN train.",
        cli="train_file", flag="--train", cli_type=list[Path],
        cli_help="Labelled CSV (text,label, or entity-level id,text,entity,label); repeat for several. Default: bundled PhraseBank + Twitter + SEntFiN train (those present).",
    ),
    TrainOption("include_feedback", "include_feedback", "boolean", True, "Add analyst feedback labels from the store.", cli="feedback", cli_type=bool),
    TrainOption(
        "dev_files", "dev_files", "array", [], "Dev CSVs of the training history (and early stopping, when the best checkpoint is kept); empty = bundled dev splits.",
        cli="dev_file", flag="--dev", cli_type=list[Path], cli_help="Dev CSV of the training history; repeatable.",
    ),
    TrainOption("entity_dev_files", "entity_dev_files", "array", [], "Entity-level dev CSVs (id,text,entity,label) for the card's entity figures, the gate and the int8 check; empty = bundled SEntFiN dev."),
    TrainOption(
        "eval_files", "eval_files", "array", [], "Fixed evaluation split of the gate; empty = bundled dev splits.",
        cli="eval_file", flag="--eval", cli_type=list[Path], cli_help="Fixed evaluation CSV the gate compares on; repeatable.",
    ),
    TrainOption("max_train_rows", "max_train_rows", ["null", "integer"], None, "Subsample the training rows.", cli="max_train_rows", minimum=10, cli_type=int, cli_help="Subsample training rows (stratified)."),
    TrainOption("max_length", "max_length", ["null", "integer"], None, "Token window while training.", cli="max_length", minimum=8, cli_type=int),
    TrainOption("learning_rate", "learning_rate", ["null", "number"], None, "Peak learning rate.", cli="learning_rate", cli_type=float),
    TrainOption(
        "max_steps", "max_steps", ["null", "integer"], None, "Optimiser steps of the fixed recipe; empty = default (newspulse.models.sentiment.config.DEFAULT_STEPS).",
        cli="steps", minimum=1, cli_type=int,
        cli_help="Optimiser steps of the fixed recipe (default 2200: the same model for a seed on a busy or an idle machine, about 7 minutes of fine-tuning on 2 idle CPU cores).",
    ),
    TrainOption(
        "time_budget_s", "time_budget_s", ["null", "number"], None, "Also stop fine-tuning after this many seconds; empty = none (the fixed step count alone).",
        cli="time_budget", minimum=1, cli_type=float, cli_help="Also stop fine-tuning after this many seconds (default: none; the step count alone decides).",
    ),
    TrainOption("f1_floor", "f1_floor", ["null", "number"], None, "Lowest macro-F1 a model may be promoted with.", minimum=0, maximum=1),
    TrainOption("registry", "registry", "string", "", "Registry folder; empty = NEWSPULSE_MODEL_REGISTRY."),
    TrainOption(
        "commercial_only", "commercial_only", "boolean", False,
        "Refuse inputs not licensed for commercial use (PhraseBank, the bundled soft labels); defaults become the commercially usable bundled sets, without distillation.",
        cli="commercial_only", flag="--commercial-only", cli_type=bool,
        cli_help="Refuse inputs not licensed for commercial use (PhraseBank is CC BY-NC-SA; every bundled soft-label file is non-commercial); defaults become the commercially usable bundled sets, without distillation.",
    ),
    TrainOption(
        "distill", None, "boolean", True,
        "Distil from the bundled teacher soft labels on the training rows (data/soft_labels/train-v5.csv.gz); false = gold labels only. Off for commercial_only.",
        cli="distill", flag="--distill/--no-distill", cli_type=bool,
        cli_help="Distil from the bundled teacher soft labels on the training rows (data/soft_labels/train-v5.csv.gz, sha256 pinned); --no-distill trains on the gold labels alone. Off with --commercial-only.",
    ),
    TrainOption(
        "soft_labels", "soft_labels", "string", "", "Another teacher soft-label artifact to distil from (data/soft_labels/*.csv.gz); empty = the bundled one (see distill).",
        cli="soft_labels", flag="--soft-labels", cli_type=Path,
        cli_help="Distil from this teacher soft-label artifact instead (data/soft_labels/*.csv.gz; its sha256 is checked against its manifest).",
    ),
    TrainOption("soft_labels_sha256", "soft_labels_sha256", "string", "", "The sha256 the soft-label artifact must have; empty = the one in its manifest."),
    TrainOption(
        "average_last", "average_last", ["null", "number"], None, "Share of the last steps whose weights are averaged (SWA); 0 = the last step's weights; empty = the recipe's.",
        cli="average_last", minimum=0, cli_type=float,
        cli_help="Register the mean of the weights of this share of the last steps (SWA; 0 = the last step's weights; default: the recipe's).",
    ),
    TrainOption(
        "entity_share", "entity_share", ["null", "number"], None, "Share (above 0, at most 1) of the entity-marked (SEntFiN) rows each epoch draws afresh; the story rows train every epoch; empty = the recipe's.",
        cli="entity_share", minimum=0, cli_type=float,
        cli_help="Train each epoch on this share of the entity-marked (SEntFiN) rows, drawn afresh per epoch, and on every story-level row (default: the recipe's).",
    ),
    TrainOption(
        "agreement_smoothing", "agreement_smoothing", ["null", "number"], None, "Label smoothing by annotator agreement: a gold row agreed at a % is smoothed by this × (1 − a/100); empty = the recipe's.",
        cli="agreement_smoothing", flag="--label-smoothing", minimum=0, cli_type=float,
        cli_help="Label-smooth gold rows by their annotators' agreement: this × (1 − agreement/100) (PhraseBank; default: the recipe's).",
    ),
    TrainOption(
        "cpu_precision", "cpu_precision", ["null", "string"], None,
        "Forward passes of a CPU run: fp32, bf16 (needs native bf16: AVX512-BF16 or AMX) or auto (bf16 where native); empty = the tier's recipe (fast fp32, accurate auto).",
        cli="cpu_precision", flag="--cpu-precision", cli_type=("fp32", "bf16", "auto"),
        cli_help="Precision of a CPU run's forward passes (weights and optimiser stay fp32): bf16 needs native bf16 (AVX512-BF16 or AMX) and is about 1.9x faster for all-mpnet-base-v2; auto = bf16 where native. Default: the tier's recipe (fast fp32, accurate auto).",
    ),
    # accepted from --conf JSON, not shown in the trigger form
    TrainOption("batch_size", "batch_size", ["null", "integer"], None, cli="batch_size", in_form=False, cli_type=int, cli_help="Training batch size."),
    TrainOption("seed", "seed", ["null", "integer"], None, in_form=False),
    TrainOption("checkpoint_dir", "checkpoint_dir", "string", "", in_form=False),
)


def dag_param_specs() -> dict[str, dict[str, Any]]:
    """Keyword arguments of Airflow's ``Param`` for each option of the DAG's trigger form (this
    module does not import Airflow: the DAG builds the Params)."""
    specs: dict[str, dict[str, Any]] = {}
    for option in TRAIN_OPTIONS:
        if not option.in_form:
            continue
        spec: dict[str, Any] = {"default": option.default, "type": option.json_type}
        if option.minimum is not None:
            spec["minimum"] = option.minimum
        if option.maximum is not None:
            spec["maximum"] = option.maximum
        specs[option.param] = {**spec, "description": option.description}
    return specs


def config_fields() -> dict[str, str]:
    """DAG param name → TrainConfig field, for every option that sets a field."""
    return {option.param: option.field for option in TRAIN_OPTIONS if option.field is not None}
