"""End to end, embedded: real Reuters stories through the real fine-tuned classifier, the
summariser, the tagger and the alerter into SQLite, driven through the CLI as a user would."""

import json
import os
import subprocess
import sys

import pytest

from newspulse.ingest.replay import DEFAULT_CORPUS, replay
from newspulse.pipeline import RawMessage, parse_message
from newspulse.store.base import Filter
from newspulse.store.sqlite import SQLiteStore

pytestmark = pytest.mark.slow

N = 600


def run_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "newspulse.cli", *args], env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture
def cli_env(np_env, trained_classifier_registry):
    env = dict(os.environ)
    env["NEWSPULSE_MODEL_REGISTRY"] = str(trained_classifier_registry)
    env["NEWSPULSE_STORE_URL"] = f"sqlite:///{np_env / 'e2e.db'}"
    return env


def test_replay_real_articles_through_the_embedded_pipeline(cli_env, tmp_path):
    expected_ids = {parse_message(RawMessage(m)).id for m in replay(DEFAULT_CORPUS, limit=N, progress=False)}
    assert len(expected_ids) >= 500

    done = run_cli("replay", "--file", str(DEFAULT_CORPUS), "--to", "embedded", "--speed", "0", "--limit", str(N), env=cli_env)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["stored"] == len(expected_ids) and summary["dead_lettered"] == 0 and summary["pending"] == 0

    stats = json.loads(run_cli("store", "stats", "--json", env=cli_env).stdout)
    assert stats["articles"] == stats["unique_ids"] == len(expected_ids)
    assert sum(stats["by_label"].values()) == len(expected_ids)
    assert set(stats["by_label"]) == {"negative", "neutral", "positive"}
    assert all(stats["by_label"][k] > 0 for k in ("negative", "neutral", "positive"))
    assert "alerts" in stats

    store = SQLiteStore(cli_env["NEWSPULSE_STORE_URL"].removeprefix("sqlite:///"))
    seen = set()
    for batch in store.iter_articles(Filter()):
        for art in batch:
            seen.add(art.id)
            assert art.label.value in ("negative", "neutral", "positive")
            assert sum(art.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
            assert -1.0 <= art.score <= 1.0
            assert art.model_version and art.summary
    assert seen == expected_ids

    # a second replay of the same stories is idempotent
    again = run_cli("replay", "--file", str(DEFAULT_CORPUS), "--speed", "0", "--limit", "50", env=cli_env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(run_cli("store", "stats", "--json", env=cli_env).stdout)["articles"] == len(expected_ids)

    alerts = run_cli("alerts", "list", "--json", env=cli_env)
    assert alerts.returncode == 0, alerts.stderr[-3000:]
    for alert in json.loads(alerts.stdout):
        assert {"scope", "status", "started_at", "magnitude"} <= set(alert)


def test_model_evaluate_prints_the_metrics_json(cli_env):
    done = run_cli("model", "evaluate", "--data", str(DEFAULT_CORPUS.parents[1] / "phrasebank" / "dev.csv"), "--json", env=cli_env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["n"] == 483
    for key in ("accuracy", "macro_f1", "weighted_f1", "per_class", "confusion", "model_version"):
        assert key in report
    assert sum(map(sum, report["confusion"])) == 483
    assert 0.6 < report["accuracy"] <= 1.0
