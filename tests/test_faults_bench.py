"""The fault suite's harness itself (bench/faults.py), on a configuration small enough for pytest.

The full suite (10,000-article streams, 10-minute outages) runs with ``make faults``; this test
checks that the harness starts the real peers and processor, accounts for every message and
writes its results, by running R3 with two messages of each poison kind among 50 good ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.kafka
def test_fault_suite_accounts_for_every_message_of_a_small_poison_run(trained_classifier_registry, tmp_path):
    out = tmp_path / "faults.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSPULSE_")} | {"PYTHONPATH": str(ROOT)}
    argv = [sys.executable, str(ROOT / "bench" / "faults.py"), "--only", "R3", "--articles", "50", "--poison", "24",
            "--r3-kills", "0", "--registry", str(trained_classifier_registry), "--out", str(out)]
    done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1200)

    [line] = [ln for ln in done.stdout.splitlines() if ln.startswith("R3 poison")]
    [scenario] = json.loads(out.read_text())["scenarios"]
    figures = scenario["figures"]
    assert scenario["params"] == {"good": 50, "poison": 24, "kills": 0, "kinds": 12, "store": "sqlite"}
    assert scenario["machine"]["cores"] == os.cpu_count() and scenario["started_at"]
    assert "error" not in figures, figures.get("error")
    assert {kind: e["produced"] for kind, e in figures["kinds"].items()} == {kind: 2 for kind in figures["kinds"]} and len(figures["kinds"]) == 12
    assert figures["good_produced"] == 50 and figures["good_stored"] == 50 and figures["good_lost"] == 0
    assert figures["poison_produced"] == 24 and figures["poison_dead_lettered"] == 24, figures["kinds"]
    assert figures["good_dead_lettered"] == 0 and figures["dead_letters_without_origin_headers"] == 0
    assert all(e["reason"] for e in figures["kinds"].values())
    assert figures["final_lag"] == 0 and figures["exit_code"] == 0
    assert scenario["passed"] and "PASS" in line and f"poison_dead_lettered={figures['poison_dead_lettered']}" in line
    assert done.returncode == 0, done.stdout[-3000:]


def test_r7_poisoned_notification_runs_and_records_every_good_alert_delivered(tmp_path):
    """bench/faults_alerts.py's R7 end to end (the real `alerts run`, webhook and SMTP on
    loopback; no broker, no classifier): every good alert delivered, the poisoned ones not."""
    out = tmp_path / "faults.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSPULSE_")} | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "faults_alerts.py"), "--only", "R7", "--out", str(out)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    [scenario] = json.loads(out.read_text())["scenarios"]
    figures = scenario["figures"]
    assert "error" not in figures, (figures.get("error"), figures.get("alerter_log_tail"))
    assert figures["good_delivered"] == figures["good_posts"] == figures["good_mails"] == 10
    assert figures["poisoned"]["EVIL\r\nBcc: victim@example.com"]["mail:firing"].startswith("failed permanently: ValueError")
    assert figures["poisoned"]["REFUSED"]["hook:firing"].startswith("rejected: HTTP 400")
    assert not figures["injected_bcc_sent"] and figures["exit_code"] == 0
    assert scenario["passed"] and done.returncode == 0, done.stdout[-3000:]


def test_a_scenario_that_raised_keeps_its_figures_the_error_and_the_end_of_its_child_log(tmp_path, monkeypatch):
    """bench/fault_results.py's failed_outcome, shared by every scenario: what was measured
    before the error stays, and the log tail is named after the command (processor, alerter)."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    from fault_results import ChildProcess, failed_outcome

    class Alerter(ChildProcess):
        role = "alerter"
        tail_lines = 3

    log = tmp_path / "alerter.log"
    log.write_text("\n".join(f"line {i}" for i in range(10)) + "\n")
    outcome = failed_outcome("R6 alert store error", {"window_minutes": 1}, TimeoutError("R6a alerter paused: not reached in 150s"),
                             Alerter(["true"], {}, tmp_path, log), {"a_paused_after_close_s": 12.5}, 40.0)
    assert not outcome.passed and outcome.seconds == 40.0 and outcome.params == {"window_minutes": 1}
    assert outcome.figures == {"a_paused_after_close_s": 12.5, "error": "TimeoutError: R6a alerter paused: not reached in 150s",
                               "alerter_log_tail": "line 7\nline 8\nline 9"}
    assert failed_outcome("R1 kill-9", {}, ValueError("x"), None).figures == {"error": "ValueError: x"}
