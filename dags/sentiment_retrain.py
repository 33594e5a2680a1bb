"""Weekly (or on-demand) retraining of the sentiment classifier, gated before rollout.

prepare_data → train → evaluate → gate → promote → notify. Every step is one call into
``newspulse.models`` (``train``, ``evaluate``, ``registry``); this file only wires them. A candidate that is worse than production, or below
the floor, is registered (for inspection) but ``promote`` is skipped and production never moves.
A successful promotion emits the ``newspulse-production-model`` asset, which triggers
``rescore_history``.

Operations: ``train`` runs in the one-slot ``newspulse_training`` pool (one fine-tuning run at a
time, whatever else the scheduler runs) under an ``execution_timeout``; a retry resumes from the
run's last checkpoint (``<registry>/_checkpoints/<run id>``, models/sentiment/checkpoint.py), not from step
0. A task that fails for good notifies the alert rules' webhook and e-mail receivers
(newspulse.airflow_notices). Trigger manually with params, e.g.::

    airflow dags trigger sentiment_retrain --conf '{"epochs": 3, "base_model": "ProsusAI/finbert"}'
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Asset, Param, TriggerRule, get_current_context, task

from newspulse.airflow_notices import notify_task_failure
from newspulse.models.sentiment.train_options import dag_param_specs

PRODUCTION_MODEL = Asset("newspulse-production-model")
#: Created by docker-compose.yml's airflow-init with one slot.
TRAINING_POOL = "newspulse_training"

default_args = {
    "owner": "ml-platform",
    "retries": 1,
    "retry_delay": timedelta(minutes=5),
    "execution_timeout": timedelta(minutes=30),
    "on_failure_callback": notify_task_failure,
}


def _config():
    """The run's TrainConfig from its params (defaults: newspulse.models.sentiment.config.TrainConfig.production)."""
    from newspulse.models.sentiment.config import config_from_params
    from newspulse.settings import load_settings
    from newspulse.wiring import feedback_source

    settings = load_settings()
    return config_from_params(dict(get_current_context()["params"]), settings, feedback_source(settings))


with DAG(
    dag_id="sentiment_retrain",
    description="Fine-tune the sentiment classifier on bundled data + analyst feedback; promote only if not worse.",
    schedule="@weekly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    tags=["newspulse", "ml", "sentiment"],
    # generated from the one declaration of the retraining options (newspulse.models.sentiment.train_options)
    params={name: Param(**spec) for name, spec in dag_param_specs().items()},
    doc_md=__doc__,
) as dag:

    @task
    def prepare_data() -> list[str]:
        """Validate the inputs; snapshot analyst feedback to a CSV pinned in the model card."""
        from newspulse.models.sentiment.train import prepare_data as prepare

        return [str(p) for p in prepare(_config())]

    # CPU runs stop themselves at their time budget (7 min by default); 3 h covers a full GPU
    # run or a slow host. A retry (timeout, lost worker) resumes from the last checkpoint.
    @task(pool=TRAINING_POOL, pool_slots=1, execution_timeout=timedelta(hours=3), retries=2, retry_delay=timedelta(minutes=2))
    def train(train_files: list[str]) -> str:
        """Fine-tune and register a candidate version (not promoted); resumable."""
        from pathlib import Path

        from newspulse.models.sentiment.checkpoint import run_checkpoint_dir
        from newspulse.models.sentiment.train import fit_and_register

        cfg = _config()
        cfg.checkpoint_dir = run_checkpoint_dir(cfg.registry, get_current_context()["run_id"])
        return fit_and_register(cfg, [Path(p) for p in train_files]).version

    @task
    def evaluate(version: str) -> dict:
        """Dev + fixed-split metrics, lexicon baseline, entity-level dev figures, int8 check, written into the card."""
        from newspulse.models.sentiment.evaluate import evaluate_candidate
        from newspulse.models.sentiment.registry import Registry

        cfg = _config()
        card = evaluate_candidate(Registry(cfg.registry), version, cfg.dev_files, cfg.gate_files, entity_dev_files=cfg.entity_dev_files, quantize_check=cfg.quantize_check)
        return {"version": version, "macro_f1": card.metrics["eval"]["macro_f1"], "accuracy": card.metrics["eval"]["accuracy"]}

    @task
    def gate(evaluation: dict) -> dict:
        """Compare with production on the fixed split; record the decision in the card."""
        from newspulse.models.sentiment.registry import Registry, gate_candidate

        cfg = _config()
        return gate_candidate(Registry(cfg.registry), evaluation["version"], cfg.f1_floor).model_dump()

    @task(outlets=[PRODUCTION_MODEL])
    def promote(decision: dict) -> str:
        """Move the production pointer (atomic) — skipped when the gate said no."""
        from airflow.sdk.exceptions import AirflowSkipException

        from newspulse.models.sentiment.registry import Registry

        if not decision["promote"]:
            raise AirflowSkipException(f"not promoted: {decision['reason']}")
        Registry(_config().registry).promote(decision["candidate_version"])
        return decision["candidate_version"]

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def notify(decision: dict) -> None:
        """Log the outcome and append it to the registry's audit trail."""
        import logging

        from newspulse.models.sentiment.registry import Registry

        registry = Registry(_config().registry)
        production = registry.production_version(_config().tier)
        outcome = "promoted" if decision["promote"] else "rejected"
        logging.getLogger("airflow.task").info("sentiment_retrain: candidate %s %s (%s); production is %s", decision["candidate_version"], outcome, decision["reason"], production)
        registry.record_run({"dag": "sentiment_retrain", "outcome": outcome, "production": production, **decision})

    decision = gate(evaluate(train(prepare_data())))
    promote(decision) >> notify(decision)
