"""Airflow DAGs: integrity of every file in dags/ (tags, owner, retries, timeouts, the training
pool, failure notifications), sentiment_retrain run end to end with ``dag.test()`` on tiny
settings, and a task that fails for good notifying a real webhook. Airflow runs in a subprocess
with its own AIRFLOW_HOME and SQLite metadata DB, so it never touches a real deployment or other
tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from newspulse.models.sentiment.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
DAGS = ROOT / "dags"

DAGBAG_SCRIPT = """
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=%r)
print("RESULT " + json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dags": {d.dag_id: {"tags": sorted(d.tags), "owner": d.default_args.get("owner"), "retries": d.default_args.get("retries"),
                        "tasks": [t.task_id for t in d.tasks], "task_retries": [t.retries for t in d.tasks],
                        "timeouts": {t.task_id: t.execution_timeout.total_seconds() if t.execution_timeout else None for t in d.tasks},
                        "pools": {t.task_id: [t.pool, t.pool_slots] for t in d.tasks},
                        "failure_callbacks": {t.task_id: [getattr(c, "__module__", "") + "." + getattr(c, "__name__", repr(c)) for c in
                                                          (t.on_failure_callback if isinstance(t.on_failure_callback, list) else [t.on_failure_callback] if t.on_failure_callback else [])]
                                              for t in d.tasks},
                        "params": {name: d.params.get_param(name).dump() for name in d.params}} for d in bag.dags.values()},
}))
"""

DAG_TEST_SCRIPT = """
import json, sys
from dags.sentiment_retrain import dag
if len(sys.argv) > 2:  # a failure test: no retries (their delay would only slow it down)
    for t in dag.tasks:
        t.retries = 0
run = dag.test(run_conf=json.loads(sys.argv[1]))
print("RESULT " + json.dumps({"state": str(run.state), "tasks": {ti.task_id: str(ti.state) for ti in run.get_task_instances()}}))
"""


def _airflow_env(home: Path, registry: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
        NEWSPULSE_STORE_URL=f"sqlite:///{home / 'newspulse.db'}",
        HF_HUB_OFFLINE="1",
    )
    if registry is not None:
        env["NEWSPULSE_MODEL_REGISTRY"] = str(registry)
    return env


def _run(code: str, env: dict[str, str], *args: str, timeout: int = 600) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def test_every_dag_imports_with_tags_owner_and_retries(tmp_path):
    result = _run(DAGBAG_SCRIPT % str(DAGS), _airflow_env(tmp_path))
    assert result["errors"] == {}
    assert set(result["dags"]) >= {"sentiment_retrain", "rescore_history"}
    for dag_id, dag in result["dags"].items():
        assert dag["tags"], dag_id
        assert dag["owner"] and dag["owner"] != "airflow", dag_id
        assert dag["retries"] >= 1 and all(r >= 1 for r in dag["task_retries"]), dag_id
    assert result["dags"]["sentiment_retrain"]["tasks"] == ["prepare_data", "train", "evaluate", "gate", "promote", "notify"]
    for dag_id, dag in result["dags"].items():
        assert all(t and t > 0 for t in dag["timeouts"].values()), f"{dag_id}: every task needs an execution_timeout ({dag['timeouts']})"
        for task_id, callbacks in dag["failure_callbacks"].items():
            assert "newspulse.airflow_notices.notify_task_failure" in callbacks, f"{dag_id}.{task_id} fails silently"
    retrain = result["dags"]["sentiment_retrain"]
    from newspulse.models.sentiment.train_options import dag_param_specs

    params = {name: {"default": p["value"], **p["schema"], "description": p["description"]} for name, p in retrain["params"].items()}
    assert params == dag_param_specs(), "the retraining form is generated from newspulse.models.sentiment.train_options"
    assert retrain["pools"]["train"] == ["newspulse_training", 1], "one fine-tuning run at a time"
    assert retrain["task_retries"][retrain["tasks"].index("train")] >= 2, "retries resume from the checkpoint, so they are cheap"
    assert retrain["timeouts"]["train"] > retrain["timeouts"]["evaluate"]
    compose = (ROOT / "docker-compose.yml").read_text()
    assert "airflow pools set newspulse_training 1" in compose, "airflow-init creates the pool the train task uses"


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("airflow")
    proc = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=_airflow_env(home), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pool = subprocess.run([sys.executable, "-m", "airflow", "pools", "set", "newspulse_training", "1", "training"], env=_airflow_env(home), capture_output=True, text=True, timeout=300)
    assert pool.returncode == 0, pool.stderr[-3000:]  # as docker-compose.yml's airflow-init does
    return home


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory) -> dict[str, str]:
    """A few dozen PhraseBank rows and a tiny random BERT as the base model (fast to train)."""
    from newspulse.models.sentiment.bench import random_bert_classifier
    from newspulse.models.sentiment.data import packaged_base_model

    d = tmp_path_factory.mktemp("tiny")
    pd.read_csv(ROOT / "data/phrasebank/train.csv").head(48)[["text", "label"]].to_csv(d / "train.csv", index=False)
    pd.read_csv(ROOT / "data/phrasebank/dev.csv").head(40).to_csv(d / "dev.csv", index=False)
    model, tokenizer = random_bert_classifier(packaged_base_model(), hidden_size=32, num_layers=2, num_heads=2)
    model.save_pretrained(d / "base")
    tokenizer.save_pretrained(d / "base")
    return {"train": str(d / "train.csv"), "dev": str(d / "dev.csv"), "base": str(d / "base")}


def _conf(registry: Path, tiny: dict[str, str], **extra) -> str:
    conf = {
        "registry": str(registry),
        "base_model": tiny["base"],
        "data_sources": [tiny["train"]],
        "dev_files": [tiny["dev"]],
        "eval_files": [tiny["dev"]],
        "epochs": 1,
        "max_length": 32,
        "include_feedback": False,
        **extra,
    }
    return json.dumps(conf)


def _history(registry: Path) -> list[dict]:
    return [json.loads(line) for line in (registry / "_history.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_retrain_registers_and_promotes_into_an_empty_registry(tmp_path, airflow_home, tiny_inputs):
    registry = tmp_path / "registry"
    result = _run(DAG_TEST_SCRIPT, _airflow_env(airflow_home, registry), _conf(registry, tiny_inputs, f1_floor=0.0))
    assert result["state"] == "success"
    reg = Registry(registry)
    [version] = reg.list_versions()
    card = reg.card(version)
    assert card.gate is not None and card.gate.promote and card.gate.reason == "no production model yet"
    assert reg.production_version() == version
    assert result["tasks"]["promote"] == "success" and result["tasks"]["notify"] == "success"
    assert _history(registry)[-1]["outcome"] == "promoted"
    assert (registry / version / "README.md").is_file(), "the Hugging Face card"
    assert not any((registry / "_checkpoints").iterdir()), "a finished run removes its checkpoint"


@pytest.mark.slow
def test_a_worse_candidate_is_rejected_and_production_unchanged(tmp_path, airflow_home, tiny_inputs, trained_classifier_registry):
    registry = tmp_path / "registry"
    shutil.copytree(trained_classifier_registry, registry)
    reg = Registry(registry)
    production = reg.production_version()
    before = set(reg.list_versions())
    result = _run(DAG_TEST_SCRIPT, _airflow_env(airflow_home, registry), _conf(registry, tiny_inputs, f1_floor=0.0))
    assert result["state"] == "success"
    [candidate] = set(reg.list_versions()) - before  # registered for inspection ...
    decision = reg.card(candidate).gate
    assert decision is not None and not decision.promote
    assert decision.production_version == production and decision.production_macro_f1 > decision.candidate_macro_f1
    assert reg.production_version() == production  # ... but production never moved
    assert result["tasks"]["promote"] == "skipped" and result["tasks"]["notify"] == "success"
    assert _history(registry)[-1]["outcome"] == "rejected"


def test_a_task_that_fails_for_good_notifies_the_alert_receivers(tmp_path, airflow_home):
    """prepare_data fails on a missing training file: the alert rules' webhook gets one notice
    naming the DAG, the task and the error, and nothing downstream runs."""
    from test_alerts_delivery import Receiver, free_port

    rx = Receiver(free_port())
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"""
receivers:
  ops: {{type: webhook, url: "http://127.0.0.1:{rx.port}/hook", timeout_seconds: 5}}
rules:
  - name: any
    scope: ticker
    receivers: [ops]
""")
    env = {**_airflow_env(airflow_home, tmp_path / "registry"), "NEWSPULSE_ALERT_RULES": str(rules)}
    conf = json.dumps({"registry": str(tmp_path / "registry"), "data_sources": [str(tmp_path / "missing.csv")], "include_feedback": False})
    try:
        result = _run(DAG_TEST_SCRIPT, env, conf, "no-retries")
    finally:
        rx.stop()
    assert result["state"] == "failed" and result["tasks"]["prepare_data"] == "failed"
    assert result["tasks"]["train"] in ("upstream_failed", "None")
    [(headers, body)] = rx.requests
    assert body["newspulse"]["event"] == "operator_notice"
    assert "sentiment_retrain.prepare_data failed" in body["text"] and "missing.csv" in body["text"]
    assert headers["Idempotency-Key"].startswith("airflow:sentiment_retrain:") and headers["Idempotency-Key"].endswith(":prepare_data")
