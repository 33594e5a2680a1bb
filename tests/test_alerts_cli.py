"""Rules validation, the `newspulse alerts ...` commands, and the alerter in the `alerts run`
service loop following the store."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from newspulse.alerts import build_alerter, list_silences, silence_scope
from newspulse.alerts.cli import app, parse_until
from newspulse.alerts.rules import DEFAULT_RULES_FILE, RulesError, load_rules, parse_rules
from alert_streams import windowed
from newspulse.schema import Alert, AlertStatus
from newspulse.settings import get_settings
from newspulse.store.sqlite import SQLiteStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def test_builtin_rules_load_and_cover_every_scope_kind():
    rs = load_rules(None)
    assert {r.scope for r in rs.rules} == {"market", "ticker", "topic", "source"}
    assert all(r.windows and r.direction == "negative" for r in rs.rules)
    assert DEFAULT_RULES_FILE.name == "default_rules.yaml"


def test_webhook_without_url_is_configured_but_off(monkeypatch):
    monkeypatch.delenv("NEWSPULSE_ALERT_WEBHOOK_URL", raising=False)
    assert not load_rules(None).receivers["webhook"].enabled
    monkeypatch.setenv("NEWSPULSE_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    assert load_rules(None).receivers["webhook"].url == "http://127.0.0.1:9/hook"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rules: [{name: a, scope: ticker, windowz: [15]}]", "rules.0.windowz"),
        ("rules: [{name: a, scope: planet}]", "rules.0.scope"),
        ("rules: [{name: a, scope: ticker, receivers: [pager]}]", "unknown receivers ['pager']"),
        ("rules: [{name: a, scope: ticker, windows: [10], hop_minutes: 3}]", "not multiples of hop_minutes"),
        ("rules: [{name: a, scope: ticker}, {name: a, scope: topic}]", "duplicate rule names"),
        ("rules: [unclosed", "not valid YAML"),
    ],
)
def test_bad_rules_fail_naming_the_problem(text, expected):
    with pytest.raises(RulesError, match=None) as err:
        parse_rules(text, "my_rules.yaml")
    assert "my_rules.yaml" in str(err.value) and expected in str(err.value)


def test_parse_until_accepts_durations_and_iso_times():
    now = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
    assert parse_until("30m", now) == now + timedelta(minutes=30)
    assert parse_until("2h", now) == now + timedelta(hours=2)
    assert parse_until("2026-03-03T08:00", now) == datetime(2026, 3, 3, 8, 0, tzinfo=timezone.utc)


@pytest.fixture
def alert_env(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSPULSE_STORE_URL", f"sqlite:///{tmp_path / 'np.db'}")
    monkeypatch.setenv("NEWSPULSE_ALERT_SILENCES", str(tmp_path / "silences.json"))
    get_settings.cache_clear()
    store = SQLiteStore(tmp_path / "np.db")
    store.upsert_alerts([
        Alert(id="a1", rule="ticker-negative", scope="ticker:ACME", status=AlertStatus.firing, window_minutes=15,
              started_at=T0, updated_at=T0, fired_at=T0, magnitude=6.2, baseline=0.2, value=0.9, volume=10, message="ticker:ACME: 90% negative"),
    ])
    store.close()
    yield tmp_path
    get_settings.cache_clear()


def test_list_json_ack_and_silence(alert_env):
    runner = CliRunner()
    out = runner.invoke(app, ["list", "--json"])
    assert out.exit_code == 0, out.output
    (alert,) = json.loads(out.output)
    assert {"scope", "status", "started_at", "magnitude", "drivers", "delivery"} <= set(alert)
    assert alert["scope"] == "ticker:ACME" and alert["status"] == "firing" and alert["magnitude"] == 6.2

    out = runner.invoke(app, ["ack", "a1", "--by", "desk"])
    assert out.exit_code == 0 and "acknowledged a1" in out.output
    assert json.loads(runner.invoke(app, ["list", "--json", "--status", "firing"]).output)[0]["acknowledged"] is True
    assert runner.invoke(app, ["ack", "nope"]).exit_code == 4  # not found

    out = runner.invoke(app, ["silence", "add", "ticker:ACME", "--until", "1h", "--comment", "known story", "--json"])
    assert out.exit_code == 0, out.output
    sid = json.loads(out.output)["id"]
    assert [s["id"] for s in json.loads(runner.invoke(app, ["silence", "list", "--json"]).output)] == [sid]
    assert sid in runner.invoke(app, ["silence", "list"]).output
    assert runner.invoke(app, ["silence", "remove", sid]).exit_code == 0
    assert json.loads(runner.invoke(app, ["silence", "list", "--json"]).output) == []
    assert runner.invoke(app, ["silence", "remove", sid]).exit_code == 4
    assert runner.invoke(app, ["silence", "add", "ticker:ACME", "--until", "yesterday"]).exit_code == 2


def test_rules_command_hides_webhook_url(alert_env, monkeypatch):
    monkeypatch.setenv("NEWSPULSE_ALERT_WEBHOOK_URL", "https://hooks.slack.test/T000/SECRET")
    out = CliRunner().invoke(app, ["rules", "--json"])
    assert out.exit_code == 0 and "SECRET" not in out.output
    assert json.loads(out.output)["receivers"]["webhook"]["url"] == "***"
    human = CliRunner().invoke(app, ["rules"])
    assert human.exit_code == 0 and "SECRET" not in human.output and "receiver webhook: webhook ***" in human.output


def test_python_silence_api_for_the_dashboard(alert_env):
    settings = get_settings()
    s = silence_scope(settings, "topic:*", datetime.now(timezone.utc) + timedelta(hours=1), comment="earnings season")
    assert [x.id for x in list_silences(settings)] == [s.id]
    with pytest.raises(ValueError):
        silence_scope(settings, "market", datetime.now(timezone.utc) - timedelta(minutes=1))


def test_service_follows_the_store_and_raises_a_live_alert(tmp_path, monkeypatch):
    """`alerts run --source store`: articles written by the pipeline become alerts, no dashboard."""
    monkeypatch.setenv("NEWSPULSE_STORE_URL", f"sqlite:///{tmp_path / 'np.db'}")
    monkeypatch.setenv("NEWSPULSE_ALERT_SILENCES", str(tmp_path / "silences.json"))
    rules = tmp_path / "rules.yaml"
    rules.write_text("""
allowed_lateness_minutes: 1
receivers: {log: {type: log}}
rules:
  - {name: t, scope: ticker, windows: [15], hop_minutes: 15, min_volume: 4, min_count: 3, z_threshold: 3,
     min_share_delta: 0.25, receivers: [log], baseline: {lookback_windows: 16, min_history: 4, seasonality: false}}
""")
    monkeypatch.setenv("NEWSPULSE_ALERT_RULES", str(rules))
    get_settings.cache_clear()
    settings = get_settings()
    current = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    clock = [current + timedelta(minutes=1)]
    store = SQLiteStore(tmp_path / "np.db")
    store.upsert_articles(windowed(current - timedelta(minutes=15 * 8), 15, [(4, 1)] * 8))
    alerter = build_alerter(settings, store, recover=False)
    alerter.clock = lambda: clock[0]
    stop = threading.Event()
    worker = threading.Thread(target=alerter.run_forever, kwargs={"source": "store", "stop": stop, "poll_seconds": 0.2})
    worker.start()
    try:
        time.sleep(0.5)
        store.upsert_articles(windowed(current, 15, [(6, 6)]))  # the pipeline stores a burst, live
        time.sleep(0.5)
        clock[0] = current + timedelta(minutes=17)  # the window's end + lateness passes: it closes
        deadline = time.monotonic() + 20
        while not store.list_alerts() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        worker.join(20)
        store.close()
        get_settings.cache_clear()
    assert not worker.is_alive()
    store = SQLiteStore(tmp_path / "np.db")
    (alert,) = store.list_alerts()
    store.close()
    assert alert.scope == "ticker:ACME" and alert.status == AlertStatus.firing
    assert alert.delivery == {"log:firing": "delivered"}
