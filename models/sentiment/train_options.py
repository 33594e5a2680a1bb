"""The retraining options a run may be given, declared once.

The ``sentiment_retrain`` DAG's params are generated from :data:`TRAIN_OPTIONS`
(:func:`dag_param_specs`), :func:`newspulse.models.sentiment.config.config_from_params` maps params to
:class:`~newspulse.models.sentiment.config.TrainConfig` fields through it, and ``tests/test_train_options.py``
checks that every ``newspulse model train`` option that sets a TrainConfig field is declared here
under its CLI name, so the three surfaces cannot drift apart silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrainOption:
    """One retraining option.

    ``param`` is its name in DAG params (and ``--conf`` JSON), ``field`` the TrainConfig field it
    sets (None: an argument of :func:`~newspulse.models.sentiment.config.default_config`), ``cli`` the
    parameter of ``newspulse model train`` that sets it (None: DAG only). ``in_form``: shown in
    the DAG's trigger form; otherwise accepted from ``--conf`` JSON only."""

    param: str
    field: str | None
    json_type: str | list[str]
    default: Any
    description: str = ""
    cli: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    in_form: bool = True


TRAIN_OPTIONS: tuple[TrainOption, ...] = (
    TrainOption("tier", "tier", "string", "fast", "fast: the MiniLM every article is scored by; accurate: all-mpnet-base-v2 (NEWSPULSE_ACCURATE_BASE_MODEL, its own learning rate and steps), gated against and promoted to the accurate tier's pointer (production-accurate).", cli="tier"),
    TrainOption("base_model", "base_model", "string", "", "HF id or local path; empty = NEWSPULSE_BASE_MODEL or the packaged MiniLM.", cli="base_model"),
    TrainOption("epochs", "epochs", ["null", "integer"], None, "Training epochs; empty = default.", cli="epochs", minimum=1),
    TrainOption("data_sources", "train_files", "array", [], "Training CSVs (text,label, or entity-level id,text,entity,label); empty = bundled PhraseBank + Twitter + SEntFiN train.", cli="train_file"),
    TrainOption("include_feedback", "include_feedback", "boolean", True, "Add analyst feedback labels from the store.", cli="feedback"),
    TrainOption("dev_files", "dev_files", "array", [], "Dev CSVs of the training history (and early stopping, when the best checkpoint is kept); empty = bundled dev splits.", cli="dev_file"),
    TrainOption("entity_dev_files", "entity_dev_files", "array", [], "Entity-level dev CSVs (id,text,entity,label) for the card's entity figures, the gate and the int8 check; empty = bundled SEntFiN dev."),
    TrainOption("eval_files", "eval_files", "array", [], "Fixed evaluation split of the gate; empty = bundled dev splits.", cli="eval_file"),
    TrainOption("max_train_rows", "max_train_rows", ["null", "integer"], None, "Subsample the training rows.", cli="max_train_rows", minimum=10),
    TrainOption("max_length", "max_length", ["null", "integer"], None, "Token window while training.", cli="max_length", minimum=8),
    TrainOption("learning_rate", "learning_rate", ["null", "number"], None, "Peak learning rate.", cli="learning_rate"),
    TrainOption("max_steps", "max_steps", ["null", "integer"], None, "Optimiser steps of the fixed recipe; empty = default (newspulse.models.sentiment.config.DEFAULT_STEPS).", cli="steps", minimum=1),
    TrainOption("time_budget_s", "time_budget_s", ["null", "number"], None, "Also stop fine-tuning after this many seconds; empty = none (the fixed step count alone).", cli="time_budget", minimum=1),
    TrainOption("f1_floor", "f1_floor", ["null", "number"], None, "Lowest macro-F1 a model may be promoted with.", minimum=0, maximum=1),
    TrainOption("registry", "registry", "string", "", "Registry folder; empty = NEWSPULSE_MODEL_REGISTRY."),
    TrainOption("commercial_only", "commercial_only", "boolean", False, "Refuse inputs not licensed for commercial use (PhraseBank, the bundled soft labels); defaults become the commercially usable bundled sets, without distillation.", cli="commercial_only"),
    TrainOption("distill", None, "boolean", True, "Distil from the bundled teacher soft labels on the training rows (data/soft_labels/train-v3.csv.gz); false = gold labels only. Off for commercial_only.", cli="distill"),
    TrainOption("soft_labels", "soft_labels", "string", "", "Another teacher soft-label artifact to distil from (data/soft_labels/*.csv.gz); empty = the bundled one (see distill).", cli="soft_labels"),
    TrainOption("soft_labels_sha256", "soft_labels_sha256", "string", "", "The sha256 the soft-label artifact must have; empty = the one in its manifest."),
    # accepted from --conf JSON, not shown in the trigger form
    TrainOption("batch_size", "batch_size", ["null", "integer"], None, cli="batch_size", in_form=False),
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
