"""Observability: the metrics the processors, alerter, crawler and model export; the Grafana
dashboard and Prometheus configuration in docker/ against them; liveness health checks; JSON logs.

The dashboard test is the contract between docker/grafana/dashboards/*.json and the code: every
metric a panel queries must be registered by an importable NewsPulse module (read back from
prometheus_client's registry), or come from kafka-exporter / Prometheus itself (listed below).
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from test_alerts_delivery import T0, Clock, Receiver, free_port, make, spike_stream

ROOT = Path(__file__).resolve().parent.parent
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
DASHBOARDS = sorted((ROOT / "docker" / "grafana" / "dashboards").glob("*.json"))
PROMETHEUS = ROOT / "docker" / "prometheus" / "prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"

#: Modules that register NewsPulse metrics (importing them registers the collectors).
METRIC_MODULES = ("newspulse.pipeline", "newspulse.runner", "newspulse.kafka.metrics", "newspulse.alerts.metrics", "newspulse.ingest.metrics", "newspulse.models.sentiment.predict", "newspulse.models.summarize.faithfulness")
#: Series that exist without NewsPulse code: Prometheus's own and danielqsj/kafka-exporter's.
EXTERNAL_METRICS = {"up", "kafka_consumergroup_lag", "kafka_consumergroup_lag_sum", "kafka_consumergroup_members", "kafka_topic_partition_current_offset", "kafka_brokers",
                    "elasticsearch_cluster_health_status", "elasticsearch_cluster_health_up"}  # ...and prometheus-community/elasticsearch_exporter's
RULES = sorted((ROOT / "docker" / "prometheus" / "rules").glob("*.yml"))
RULES_TEST = ROOT / "tests" / "fixtures" / "prometheus" / "newspulse-rules.test.yml"
#: PromQL words that look like metric names but are functions, keywords or label names.
_PROMQL_WORDS = {"sum", "rate", "irate", "increase", "histogram_quantile", "by", "without", "max", "min", "avg", "count", "time", "le", "topk",
                 "clamp_min", "or", "and", "unless", "on", "ignoring", "group_left", "group_right", "delta", "deriv", "abs", "max_over_time", "label_replace", "vector",
                 "absent"}


def exported_metric_names() -> set[str]:
    """Every sample name the NewsPulse metric modules register (``_total``, ``_bucket``... included)."""
    for module in METRIC_MODULES:
        importlib.import_module(module)
    names = set()
    for collector in list(REGISTRY._collector_to_names):  # noqa: SLF001 - the registry's own index of names
        for family in collector.describe() if hasattr(collector, "describe") else collector.collect():
            names.add(family.name)
            names.update(sample.name for sample in family.samples)
            if family.type == "counter":
                names.add(family.name + "_total")
            elif family.type == "histogram":
                names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def queried_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label matchers, strings and ranges removed)."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    words = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", expr))
    return {w for w in words if w not in _PROMQL_WORDS and not w.startswith("$")}


def panel_queries(dashboard: dict) -> list[tuple[str, str]]:
    out = []
    for panel in dashboard["panels"]:
        for sub in [panel, *panel.get("panels", [])]:
            for target in sub.get("targets", []):
                out.append((sub["title"], target["expr"]))
    return out


# --- the dashboard and Prometheus configuration ---------------------------------------------
def test_grafana_dashboard_parses_and_shows_what_an_operator_needs():
    assert DASHBOARDS, "docker/grafana/dashboards/ holds the provisioned dashboard"
    dashboard = json.loads(DASHBOARDS[0].read_text())
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for needed in ("throughput", "consumer lag", "latency", "dead letter", "alert deliver", "crawler fetches", "crawler errors", "model version"):
        assert needed in titles, f"no panel about {needed!r} (panels: {titles})"
    queries = " ".join(expr for _, expr in panel_queries(dashboard))
    assert "histogram_quantile(0.5" in queries and "histogram_quantile(0.95" in queries, "p50 and p95 latency"
    assert "kafka_consumergroup_lag" in queries, "lag from kafka-exporter, which outlives the processors"
    assert dashboard["uid"] and dashboard["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_metric_the_dashboard_queries_is_exported_by_the_code(path):
    exported = exported_metric_names() | EXTERNAL_METRICS
    missing = {}
    for title, expr in panel_queries(json.loads(path.read_text())):
        unknown = queried_metric_names(expr) - exported
        if unknown:
            missing[title] = sorted(unknown)
    assert not missing, f"queried but exported by no code: {missing}"


def test_the_metric_name_check_is_live():
    assert queried_metric_names('sum by (outcome) (rate(newspulse_alert_deliveries_total{outcome!="delivered"}[5m]))') == {"newspulse_alert_deliveries_total"}
    assert "newspulse_no_such_metric_total" not in exported_metric_names()
    assert {"newspulse_kafka_arrival_to_indexed_seconds_bucket", "newspulse_alert_deliveries_total", "newspulse_model_info"} <= exported_metric_names()


def test_grafana_provisioning_points_at_the_dashboards_and_prometheus():
    datasources = yaml.safe_load((ROOT / "docker/grafana/provisioning/datasources/prometheus.yml").read_text())
    [source] = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((ROOT / "docker/grafana/provisioning/dashboards/newspulse.yml").read_text())
    compose = yaml.safe_load(COMPOSE.read_text())
    mounts = {m.split(":")[1]: m.split(":")[0] for m in compose["services"]["grafana"]["volumes"] if m.startswith("./")}
    [provider] = providers["providers"]
    assert (ROOT / mounts[provider["options"]["path"]]).resolve() == DASHBOARDS[0].parent.resolve()
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            ds = panel.get("datasource")
            assert ds is None or ds.get("uid") == source["uid"], panel["title"]


def test_prometheus_finds_every_replica_by_dns_and_scrapes_the_exporter():
    config = yaml.safe_load(PROMETHEUS.read_text())
    compose = yaml.safe_load(COMPOSE.read_text())["services"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for service in ("processor", "processor-gpu", "alerter", "crawler"):
        job = next(j for j in jobs.values() if any(service in sd["names"] for sd in j.get("dns_sd_configs", [])))
        [sd] = [sd for sd in job["dns_sd_configs"] if service in sd["names"]]
        assert sd["type"] == "A" and sd["port"] == 9100, service  # one A record per replica: --scale is followed
        env = compose[service]["environment"]
        assert str(env["NEWSPULSE_METRICS_PORT"]) == "9100", service
    exporter = compose["kafka-exporter"]
    [target] = [t for j in jobs.values() for sc in j.get("static_configs", []) for t in sc["targets"] if t.startswith("kafka-exporter:")]
    assert any(target.split(":")[1] in arg for arg in exporter["command"]), "scraped on the port it listens on"


# --- Prometheus alerting rules --------------------------------------------------------------
def alerting_rules() -> list[dict]:
    return [rule for path in RULES for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"] if "alert" in rule]


def test_28_alerting_rules_cover_what_an_operator_must_hear_about():
    exprs = {rule["alert"]: rule["expr"] for rule in alerting_rules()}
    needed = {
        "processor not polling": "newspulse_kafka_last_poll_timestamp_seconds",
        "consumer lag growing": "kafka_consumergroup_lag",
        "dead-letter rate": 'fate="dead_lettered"',
        "store write failures": "newspulse_kafka_records_failed_total",
        "crawler feeds failing": 'newspulse_crawler_fetches_total{outcome="error"}',
        "alert deliveries failing": "newspulse_alert_deliveries_total",
        "model reload failures": "newspulse_model_reload_failures_total",
    }
    for what, needle in needed.items():
        assert any(needle in expr for expr in exprs.values()), f"no alerting rule on {what} ({needle})"
    for rule in alerting_rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]


def test_28_every_metric_an_alerting_rule_reads_is_exported():
    exported = exported_metric_names() | EXTERNAL_METRICS
    unknown = {rule["alert"]: sorted(queried_metric_names(rule["expr"]) - exported) for rule in alerting_rules()}
    assert not {k: v for k, v in unknown.items() if v}, f"rules read metrics no code or exporter exports: {unknown}"


def test_28_every_runbook_link_points_at_a_section_that_exists():
    for rule in alerting_rules():
        page, _, anchor = rule["annotations"]["runbook"].partition("#")
        headings = re.findall(r"^#+ (.+)$", (ROOT / page).read_text(), flags=re.M)
        slugs = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
        assert not anchor or anchor in slugs, f"{rule['alert']}: {page} has no section #{anchor}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus; .ci/run installs it)")
def test_28_promtool_unit_tests_of_the_alerting_rules_pass():
    """Each rule fires on the series it is for, after its `for:`, and not on the healthy ones."""
    check = subprocess.run(["promtool", "check", "rules", *map(str, RULES)], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    done = subprocess.run(["promtool", "test", "rules", str(RULES_TEST)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULES_TEST.read_text()))
    assert tested == {rule["alert"] for rule in alerting_rules()}, "every alerting rule has a promtool case"


# --- alerter metrics ------------------------------------------------------------------------
def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_alerter_counts_deliveries_by_outcome_and_firing_alerts(tmp_path):
    from newspulse.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "alerts.db")
    port = free_port()
    clock = Clock(T0 + timedelta(days=30))
    before = {o: _sample("newspulse_alert_deliveries_total", receiver="hook", outcome=o) for o in ("failed", "delivered")}
    try:
        alerter = make(store, tmp_path, f"http://127.0.0.1:{port}/hook", clock=clock)
        alerter.observe(spike_stream())
        assert _sample("newspulse_alerts_firing", severity=store.list_alerts()[0].severity) >= 1
        assert alerter.deliver_pending() == 0  # receiver down
        assert _sample("newspulse_alert_deliveries_total", receiver="hook", outcome="failed") == before["failed"] + 1
        assert _sample("newspulse_alert_deliveries_outstanding") == 1
        rx = Receiver(port)
        try:
            clock.now += timedelta(seconds=5)
            assert alerter.deliver_pending() == 1
        finally:
            rx.stop()
        assert _sample("newspulse_alert_deliveries_total", receiver="hook", outcome="delivered") == before["delivered"] + 1
        assert _sample("newspulse_alert_deliveries_outstanding") == 0
        assert _sample("newspulse_alert_transitions_total", rule="acme", event="firing") >= 1
    finally:
        store.close()


def test_delivery_statuses_map_to_outcomes():
    from newspulse.alerts.metrics import outcome_of

    assert [outcome_of(s) for s in ("delivered", "failed (attempt 3): HTTP 503", "rejected: HTTP 400: no", "silenced: s-1", "disabled")] == [
        "delivered", "failed", "rejected", "silenced", "disabled"]


# --- health: "polled within the last N seconds" -------------------------------------------
def _healthcheck(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HEALTHCHECK), *args], capture_output=True, text=True, env={}, timeout=30)


def test_fresh_healthcheck_reads_the_last_poll_timestamp_from_metrics():
    from newspulse.kafka import metrics
    from newspulse.metrics import serve_metrics

    url = f"http://127.0.0.1:{serve_metrics(0)}/metrics"
    name = "newspulse_kafka_last_poll_timestamp_seconds"
    metrics.LAST_POLL.set(time.time() - 5)
    ok = _healthcheck("fresh", url, name, "60")
    assert ok.returncode == 0, ok.stderr
    metrics.LAST_POLL.set(time.time() - 600)  # the loop is stuck; the metrics thread still answers
    stale = _healthcheck("fresh", url, name, "60")
    assert stale.returncode == 1 and re.search(r"last poll 60\ds ago", stale.stderr), stale.stderr  # 600 s and the check's own start-up
    missing = _healthcheck("fresh", url, "newspulse_nothing_timestamp_seconds", "60")
    assert missing.returncode == 1 and "not reported yet" in missing.stderr


def test_a_processor_paused_past_its_limit_is_unhealthy_though_it_keeps_polling(tmp_path):
    """Issue 29 #1: a processor wedged in "paused" kept refreshing its last-poll time, so the
    container stayed healthy for 8 minutes while it stored nothing. A pipeline paused longer than
    NEWSPULSE_MAX_PAUSED_S fails ``fresh`` with "paused for N s", and passes again once resumed."""
    from newspulse.embedded import EmbeddedPipeline
    from newspulse.kafka import metrics
    from newspulse.metrics import serve_metrics
    from newspulse.pipeline import Processor
    from newspulse.retrying import Backoff
    from newspulse.settings import load_settings
    from newspulse.store.base import StoreUnavailable
    from newspulse.store.sink import StoreSink
    from newspulse.store.sqlite import SQLiteStore
    from test_pipeline import FirstSentence, KeywordClassifier, raw

    class DownSink(StoreSink):
        down = True

        def write(self, articles):
            if self.down:
                raise StoreUnavailable("store down")
            return super().write(articles)

    url = f"http://127.0.0.1:{serve_metrics(0)}/metrics"
    store = SQLiteStore(tmp_path / "paused.db")
    sink = DownSink(store)
    settings = load_settings(batch_max_wait_ms=5, max_paused_s=1)
    pipe = EmbeddedPipeline(settings, Processor(KeywordClassifier(), FirstSentence(), [sink], sink), backoff=Backoff(first_s=0.05, max_s=0.2))
    try:
        pipe.submit(json.dumps(raw(1)))
        deadline = time.monotonic() + 30
        while _sample("newspulse_pipeline_paused", source="embedded") != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)
        metrics.LAST_POLL.set_to_current_time()  # the paused loop is alive and polling
        wedged = _healthcheck("fresh", url, "newspulse_kafka_last_poll_timestamp_seconds", "60")
        assert wedged.returncode == 1 and re.search(r"paused for \d+s \(limit 1s\)", wedged.stderr), wedged.stderr
        sink.down = False
        pipe.close(timeout=30)
    finally:
        store.close()
    assert pipe.counters.stored == 1
    metrics.LAST_POLL.set_to_current_time()
    healthy = _healthcheck("fresh", url, "newspulse_kafka_last_poll_timestamp_seconds", "60")
    assert healthy.returncode == 0, healthy.stderr


def test_fresh_takes_the_newest_of_labelled_series():
    sys.path.insert(0, str(HEALTHCHECK.parent))
    try:
        from healthcheck import newest_sample
    finally:
        sys.path.remove(str(HEALTHCHECK.parent))
    text = ('# HELP m_ts x\n# TYPE m_ts gauge\nm_ts{feed="a"} 1.7e+09\nm_ts{feed="b}"} 1.8e+09\n'
            "m_ts_created 5e+09\nother 9e+09\n")
    assert newest_sample(text, "m_ts") == 1.8e9
    assert newest_sample("m 12.5\n", "m") == 12.5 and newest_sample("", "m") is None


@pytest.mark.kafka
def test_a_processor_exports_its_last_poll_and_arrival_to_indexed_latency(tmp_path):
    """Against a real Kafka-protocol broker: every stored record is observed once in the latency
    histogram, with a latency between its batch's processing time and the time since it was sent."""
    from peers import start_kafka
    from test_kafka_stream import ProcessorThread, articles, fake_factory, make_settings, store_count, wait_for

    from newspulse.kafka.producer import KafkaArticlePublisher
    from newspulse.store.sqlite import SQLiteStore

    def observed() -> tuple[float, float]:
        return (_sample("newspulse_kafka_arrival_to_indexed_seconds_count"), _sample("newspulse_kafka_arrival_to_indexed_seconds_sum"))

    count0, sum0 = observed()
    with start_kafka() as bootstrap:
        settings = make_settings(bootstrap, tmp_path)
        sent = time.time()
        with KafkaArticlePublisher(settings) as publisher:
            publisher.publish(articles(40, run="latency"))
        store = SQLiteStore(settings.sqlite_path)
        processor = ProcessorThread(settings, fake_factory(store, delay_s=0.3))  # each batch takes >= 0.3 s
        try:
            wait_for(lambda: store_count(settings) >= 40, 90, "40 stored")
            wait_for(lambda: observed()[0] - count0 >= 40, 10, "40 latencies observed")
            polled = _sample("newspulse_kafka_last_poll_timestamp_seconds")
            assert time.time() - 5 < polled <= time.time() + 0.1, "the idle loop keeps polling"
        finally:
            processor.close()
            store.close()
        elapsed = time.time() - sent
    count, total = observed()
    assert count - count0 == 40, "each record once: none was redelivered here"
    assert 0.3 <= (total - sum0) / 40 <= elapsed


# --- model version and logs -----------------------------------------------------------------
def _serving_v1_of_two(tmp_path):
    """A registry with two versions of a tiny random model, and a hot-reloading classifier serving v1."""
    from newspulse.models.sentiment.bench import random_bert_classifier
    from newspulse.models.sentiment.data import packaged_base_model
    from newspulse.models.sentiment.predict import HotReloadingClassifier
    from newspulse.models.sentiment.registry import ModelCard, Registry

    registry = Registry(tmp_path / "registry")
    model, tokenizer = random_bert_classifier(packaged_base_model(), hidden_size=32, num_layers=1, num_heads=2)
    for version in ("v1", "v2"):
        registry.register(model, tokenizer, ModelCard(version=version, base_model="tiny", created_at=datetime.now(timezone.utc), code_version="test"))
    registry.promote("v1")
    return registry, HotReloadingClassifier(registry, device="cpu", quantize="off", check_interval=0)


def test_the_served_model_version_is_exported_and_follows_a_promotion(tmp_path):
    """Two registry versions of a tiny random model: the gauge names the one served, also after a
    hot reload, and only that one."""
    registry, served = _serving_v1_of_two(tmp_path)
    assert _sample("newspulse_model_info", version="v1") == 1
    registry.promote("v2")
    assert served.maybe_reload(force=True)
    assert _sample("newspulse_model_info", version="v2") == 1
    assert REGISTRY.get_sample_value("newspulse_model_info", {"version": "v1"}) is None, "the old version's series is gone"


def test_28_a_promoted_version_that_cannot_load_is_counted_and_the_old_one_keeps_serving(tmp_path):
    """The counter behind the NewsPulseModelReloadFailed alert: v2's weights are corrupt."""
    registry, served = _serving_v1_of_two(tmp_path)
    before = _sample("newspulse_model_reload_failures_total")
    for weights in registry.version_dir("v2").glob("*.safetensors"):
        weights.write_bytes(b"not a tensor file")
    registry.promote("v2")
    assert served.maybe_reload(force=True) is False
    assert served.version == "v1" and _sample("newspulse_model_info", version="v1") == 1
    assert _sample("newspulse_model_reload_failures_total") == before + 1


def test_json_log_format_gives_one_parsable_object_per_line(tmp_path):
    code = ("import logging\nfrom newspulse.cli import settings_or_exit\nsettings_or_exit()\n"
            "log = logging.getLogger('newspulse.test')\nlog.warning('fetched %d', 3, extra={'feed': 'reuters'})\n"
            "try:\n    1 / 0\nexcept ZeroDivisionError:\n    log.exception('boom\\nsecond line')\n")
    env = {"PATH": "/usr/bin:/bin", "NEWSPULSE_LOG_FORMAT": "json", "NEWSPULSE_STORE_URL": f"sqlite:///{tmp_path / 'x.db'}", "HOME": str(tmp_path),
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert len(records) == len(proc.stderr.splitlines()) == 2, proc.stderr
    first, second = records
    assert first["level"] == "WARNING" and first["message"] == "fetched 3" and first["feed"] == "reuters" and first["logger"] == "newspulse.test"
    assert second["message"] == "boom\nsecond line" and "ZeroDivisionError" in second["exception"]
    text = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env, "NEWSPULSE_LOG_FORMAT": "text"}, cwd=tmp_path, timeout=120)
    assert " WARNING newspulse.test: fetched 3" in text.stderr


def test_kafka_metrics_do_not_count_message_fates_twice():
    """What became of a message is counted once, for both modes, by
    newspulse_pipeline_messages_total{source,fate}; the Kafka processor's own metrics count only
    what is Kafka's (records read, retried, lag), not stored or dead-lettered messages again."""
    from prometheus_client import REGISTRY

    import newspulse.kafka.metrics  # noqa: F401  (registers the processor's metrics)
    import newspulse.pipeline  # noqa: F401

    names = {metric.name for metric in REGISTRY.collect()}
    assert "newspulse_pipeline_messages" in names
    assert not names & {"newspulse_kafka_articles_processed", "newspulse_kafka_records_dead_lettered"}
