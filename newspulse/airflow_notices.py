"""Failure notices for the retraining DAGs, through the alert rules' receivers.

It belongs to the DAG side (an application, like the CLIs): the alerter knows nothing of Airflow;
this module adapts an Airflow task context to the alerter's operator notices.

A retraining run that fails for good (retries spent) would otherwise only show red in the
Airflow UI, which nobody watches on a weekend. Airflow calls :func:`notify_task_failure` as the
tasks' ``on_failure_callback``; it sends one notice to every webhook and e-mail receiver of
``NEWSPULSE_ALERT_RULES`` (newspulse.alerts.delivery.notify_operators), so operators configure
delivery once.
"""

from __future__ import annotations

import logging
from typing import Any

from newspulse.alerts.delivery import notify_operators
from newspulse.alerts.rules import load_rules

log = logging.getLogger(__name__)


def failure_notice(dag_id: str, task_id: str, run_id: str, try_number: int, error: object, log_url: str | None) -> tuple[str, str, str]:
    """(subject, text, dedup key) of a failed task; the dedup key is stable across redeliveries."""
    subject = f"NewsPulse: Airflow task {dag_id}.{task_id} failed"
    lines = [f"DAG run {run_id}, attempt {try_number}: {type(error).__name__ if error is not None else 'failed'}: {error}"]
    if log_url:
        lines.append(f"Log: {log_url}")
    return subject, "\n".join(lines), f"airflow:{dag_id}:{run_id}:{task_id}"


def notify_task_failure(context: dict[str, Any]) -> dict[str, str]:
    """Airflow ``on_failure_callback``: tell every alert receiver that this task failed."""
    from newspulse.settings import load_settings

    ti = context["ti"]
    subject, text, key = failure_notice(ti.dag_id, ti.task_id, ti.run_id, ti.try_number, context.get("exception"), getattr(ti, "log_url", None))
    outcomes = notify_operators(load_rules(load_settings().alert_rules).receivers, subject, text, key)
    log.info("failure notice for %s.%s: %s", ti.dag_id, ti.task_id, outcomes)
    return outcomes
