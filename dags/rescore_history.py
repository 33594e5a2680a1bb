"""Re-score stored articles with the current production model after a promotion, fill the
entity verdicts of history scored before entity-level scoring, then re-tag their topics with the
current topic model.

Runs whenever ``sentiment_retrain`` promotes a model (the ``newspulse-production-model``
asset) or by hand (e.g. after deploying a new topic model, or once after upgrading to entity
verdicts: articles the production version scored without them get them, their story verdict
kept). Articles already scored by the production version with entity verdicts are skipped, and
so are articles whose topics are already current, so a rerun after a failure continues where it
stopped. ``newspulse model rescore`` runs the first task by hand. The work is ``newspulse.models.sentiment.predict.rescore_store`` and
``newspulse.models.topics.rescore.retopic_store``; the two run one after the other because both rewrite
whole articles.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Asset, Param, get_current_context, task

from newspulse.airflow_notices import notify_task_failure

default_args = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    # a full re-score of a large index on CPU; a retry continues where it stopped
    "execution_timeout": timedelta(hours=6),
    "on_failure_callback": notify_task_failure,
}

with DAG(
    dag_id="rescore_history",
    description="Re-score stored articles with the production sentiment model (story and entity verdicts) and re-tag their topics, in batches.",
    schedule=[Asset("newspulse-production-model")],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    tags=["newspulse", "ml", "sentiment", "topics"],
    params={
        "since": Param(None, type=["null", "string"], format="date-time", description="Only articles published at or after this time (ISO-8601)."),
        "batch_size": Param(256, type="integer", minimum=1, maximum=10_000, description="Articles per scoring/upsert batch."),
        "force": Param(False, type="boolean", description="Also re-score articles already scored by the production version."),
    },
    doc_md=__doc__,
) as dag:

    @task
    def rescore() -> dict:
        """Stream the store in batches, score (story and entity verdicts, or the missing entity
        verdicts alone), upsert; returns counts for the log."""
        from newspulse.schema import to_utc
        from newspulse.settings import load_settings
        from newspulse.wiring import open_store

        from newspulse.models.sentiment.predict import rescore_store

        params = get_current_context()["params"]
        since = to_utc(datetime.fromisoformat(params["since"])) if params.get("since") else None
        settings = load_settings()
        store = open_store(settings)
        try:
            return rescore_store(settings, store, since=since, batch_size=int(params["batch_size"]), force=bool(params["force"]), progress=False)
        finally:
            store.close()

    @task
    def retopic() -> dict:
        """Stream the store in batches, re-tag topics with the topic model, upsert the changed ones."""
        from newspulse.schema import to_utc
        from newspulse.settings import load_settings
        from newspulse.wiring import open_store

        from newspulse.models.topics.rescore import retopic_store

        params = get_current_context()["params"]
        since = to_utc(datetime.fromisoformat(params["since"])) if params.get("since") else None
        store = open_store(load_settings())
        try:
            return retopic_store(store, since=since, batch_size=int(params["batch_size"]), progress=False)
        finally:
            store.close()

    rescore() >> retopic()
