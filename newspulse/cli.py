"""The `newspulse` command line. Heavy libraries are imported inside commands so `--help` is fast."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ingest.cli import crawl
from models.cli import app as model_app
from newspulse.alerts.cli import app as alerts_app
from newspulse.logs import configure_logging
from newspulse.settings import Settings, SettingsError, get_settings

log = logging.getLogger("newspulse")

app = typer.Typer(
    help="NewsPulse: financial-news sentiment monitoring. Settings come from NEWSPULSE_* variables or .env.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
store_app = typer.Typer(help="Inspect the store named by NEWSPULSE_STORE_URL.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks (results as JSON).", no_args_is_help=True)
kafka_app = typer.Typer(help="Kafka topics of the scaled mode.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(alerts_app, name="alerts")
app.add_typer(store_app, name="store")
app.add_typer(bench_app, name="bench")
app.add_typer(kafka_app, name="kafka")
app.command("crawl")(crawl)

DASHBOARD_APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"


class Destination(str, Enum):
    embedded = "embedded"
    kafka = "kafka"


class Source(str, Enum):
    kafka = "kafka"


def settings_or_exit() -> Settings:
    """Validate settings once at start-up; a bad one ends the command naming the variable."""
    try:
        settings = get_settings()
    except SettingsError as err:
        typer.echo(f"newspulse: {err}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.log_level, settings.log_format)
    return settings


@app.callback()
def _root() -> None:
    """Validate settings before any command runs."""
    settings_or_exit()


@app.command()
def replay(
    file: Annotated[Path, typer.Option("--file", "-f", help="CSV (or .csv.gz) with published_at,source,title,body,url,tickers.")],
    to: Annotated[Destination, typer.Option("--to", help="embedded: score into the store in-process; kafka: produce to news.raw.")] = Destination.embedded,
    speed: Annotated[float, typer.Option(help="Multiple of real time; 0 = as fast as possible.")] = 0.0,
    limit: Annotated[Optional[int], typer.Option(help="Replay only the first N rows of the file.")] = None,
    shift_to_now: Annotated[bool, typer.Option("--shift-to-now", help="Shift timestamps so the stream ends now.")] = False,
) -> None:
    """Stream a historical corpus through the pipeline in event-time order, then exit."""
    from ingest.replay import ReplayError, replay as replay_rows

    settings = settings_or_exit()
    try:
        rows = replay_rows(file, speed=speed, limit=limit, shift_to_now=shift_to_now)
        if to is Destination.kafka:
            summary = _replay_to_kafka(settings, rows)
        else:
            summary = _replay_embedded(settings, rows)
    except ReplayError as err:
        typer.echo(f"newspulse replay: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(summary))


def _replay_embedded(settings: Settings, rows) -> dict:
    from newspulse.embedded import open_embedded
    from newspulse.store import open_store

    store = open_store(settings)
    try:
        with open_embedded(settings, store, finite=True) as pipe:
            for msg in rows:
                pipe.submit(msg, origin="replay")
        return {**pipe.counters.summary(), "store": store.stats()}
    finally:
        store.close()


def _replay_to_kafka(settings: Settings, rows) -> dict:
    from newspulse.kafka.producer import KafkaArticlePublisher
    from newspulse.pipeline import RawMessage, parse_message

    publisher = KafkaArticlePublisher(settings)
    produced = rejected = 0
    try:
        batch = []
        for msg in rows:
            try:
                batch.append(parse_message(RawMessage(msg, origin="replay")))
            except ValueError as err:
                rejected += 1
                log.warning("replay row rejected: %s", err)
                continue
            if len(batch) >= 500:
                produced += publisher.publish(batch)
                batch = []
        produced += publisher.publish(batch)
        publisher.flush()
    finally:
        publisher.close()
    return {"produced": produced, "rejected": rejected, "topic": settings.kafka_topic_raw}


@app.command()
def process(
    source: Annotated[Source, typer.Option("--source", help="Where raw articles come from.")] = Source.kafka,
) -> None:
    """Consume news.raw as one member of the processor group until SIGTERM/SIGINT.

    A store or broker outage pauses it until the peer is back; a permanent failure (a rejected
    credential, a bad mapping) ends it with exit code 2 and nothing committed for it."""
    from newspulse.errors import PermanentFailure
    from newspulse.kafka.processor import run_processor

    try:
        run_processor(settings_or_exit())
    except PermanentFailure as err:
        typer.echo(f"newspulse process: error: {err} (the batch in hand was neither committed nor dead-lettered)", err=True)
        raise typer.Exit(2) from None


@app.command()
def dashboard(port: Annotated[Optional[int], typer.Option(help="Port to serve on (default NEWSPULSE_DASHBOARD_PORT).")] = None) -> None:
    """Serve the analyst dashboard (Streamlit) on localhost."""
    settings = settings_or_exit()
    proc = start_dashboard(port or settings.dashboard_port)
    try:
        raise typer.Exit(proc.wait())
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=10)


def start_dashboard(port: int, quiet: bool = False) -> subprocess.Popen:
    argv = [sys.executable, "-m", "streamlit", "run", str(DASHBOARD_APP), "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    out = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(argv, stdout=out, stderr=out, env=os.environ.copy())


@app.command()
def summarize() -> None:
    """Read an article (plain text, or an Article as JSON) from stdin and print its summary."""
    from models.summarize import summarize_text

    text = sys.stdin.read()
    if not text.strip():
        typer.echo("newspulse summarize: empty input on stdin", err=True)
        raise typer.Exit(2)
    try:
        summary = summarize_text(text, settings_or_exit())
    except ValueError as err:  # JSON input that is not a valid Article
        typer.echo(f"newspulse summarize: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(summary)


@store_app.command("stats")
def store_stats(as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False) -> None:
    """Counts of articles, labels, alerts, feedback and dead letters."""
    from newspulse.store import open_store

    store = open_store(settings_or_exit())
    try:
        stats = store.stats()
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps(stats, sort_keys=True))
    else:
        for key, value in stats.items():
            typer.echo(f"{key:20} {value}")


@store_app.command("init")
def store_init() -> None:
    """Create the store's tables (SQLite) or index templates and indices (Elasticsearch) if missing; idempotent."""
    from newspulse.store import open_store

    store = open_store(settings_or_exit())
    try:
        latest = store.latest_published_at()  # the first request sets the store up
    finally:
        store.close()
    typer.echo(json.dumps({"backend": store.backend, "latest_published_at": latest.isoformat() if latest else None}))


@kafka_app.command("init-topics")
def kafka_init_topics(timeout: Annotated[float, typer.Option(min=1, help="Seconds to keep retrying while the broker comes up.")] = 120.0) -> None:
    """Create news.raw, news.scored and news.dlq (NEWSPULSE_KAFKA_PARTITIONS partitions) if missing; idempotent."""
    from newspulse.kafka.client import ensure_topics, topic_specs

    settings = settings_or_exit()
    created = ensure_topics(settings, timeout_s=timeout)
    typer.echo(json.dumps({"created": created, "topics": sorted(topic_specs(settings)), "partitions": settings.kafka_partitions}))


@model_app.command("ensure")
def model_ensure() -> None:
    """Fine-tune and promote the default classifier unless the registry has a production model."""
    from models.registry import Registry

    settings = settings_or_exit()
    ensure_model(settings)
    if Registry(settings.model_registry).production_version() is None:
        typer.echo(f"newspulse model ensure: no model passed the promotion gate in {settings.model_registry}", err=True)
        raise typer.Exit(1)


@bench_app.command("model")
def bench_model(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Also write the JSON to this file.")] = None,
) -> None:
    """Dev macro-F1 and throughput of the production model (fp32, int8) against BERT-base."""
    from models.bench import run_model_bench

    result = run_model_bench(settings_or_exit())
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    typer.echo(json.dumps(result, indent=None if as_json else 2, sort_keys=True))


@app.command()
def demo(
    port: Annotated[Optional[int], typer.Option(help="Dashboard port (default NEWSPULSE_DASHBOARD_PORT).")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", help="Corpus to replay (default: the bundled Reuters-21578).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Replay only the first N rows.")] = None,
    serve: Annotated[bool, typer.Option(help="Serve the dashboard and keep running after the replay.")] = True,
) -> None:
    """Train the default classifier if none is in production, serve the dashboard, and replay
    the bundled corpus into the embedded store in the background. Ctrl-C stops everything."""
    from ingest.replay import DEFAULT_CORPUS

    settings = settings_or_exit()
    ensure_model(settings)
    dash = None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        if serve:
            dash_port = port or settings.dashboard_port
            dash = start_dashboard(dash_port, quiet=True)
            typer.echo(f"\nDashboard: http://localhost:{dash_port}  (Ctrl-C stops)\n", err=True)
        summary = _demo_replay(settings, file or DEFAULT_CORPUS, limit, stop)
        typer.echo(json.dumps(summary), err=True)
        if dash is not None:
            typer.echo(f"Replay done; dashboard still at http://localhost:{dash_port} (Ctrl-C stops)", err=True)
            while not stop.wait(1):
                if dash.poll() is not None:
                    raise typer.Exit(dash.returncode)
    except KeyboardInterrupt:
        typer.echo("\nstopping…", err=True)
    finally:
        if dash is not None and dash.poll() is None:
            dash.terminate()
            dash.wait(timeout=15)


def ensure_model(settings: Settings) -> None:
    """Fine-tune and promote the default classifier when the registry has no production model."""
    from models.registry import Registry

    registry = Registry(settings.model_registry)
    version = registry.production_version()
    if version:
        typer.echo(f"Using production model {version} from {settings.model_registry}", err=True)
        return
    from models.train import default_config, train

    typer.echo(f"No production model in {settings.model_registry}: fine-tuning the default classifier (a few minutes on CPU)…", err=True)
    card = train(default_config(settings))
    typer.echo(f"Trained {card.version}", err=True)


def _demo_replay(settings: Settings, file: Path, limit: int | None, stop: threading.Event) -> dict:
    """Replay into the embedded store, skipping stories a previous run already stored."""
    from ingest.replay import replay as replay_rows
    from newspulse.embedded import open_embedded
    from newspulse.pipeline import RawMessage, parse_message
    from newspulse.store import open_store

    store = open_store(settings)
    skipped = 0
    try:
        pipe = open_embedded(settings, store)
        try:
            for msg in replay_rows(file, limit=limit):
                if stop.is_set():
                    break
                try:
                    if store.get_article(parse_message(RawMessage(msg)).id) is not None:
                        skipped += 1
                        continue
                except ValueError:
                    pass  # invalid rows go through, to be dead-lettered with their reason
                pipe.submit(msg, origin="demo")
        finally:
            pipe.close(end_of_stream=not stop.is_set())  # a stopped replay leaves its windows open
        return {**pipe.counters.summary(), "already_stored": skipped, "store": store.stats()}
    finally:
        store.close()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
