"""The `newspulse` command line. Heavy libraries are imported inside commands so `--help` is fast.

Each sub-app lives in one file (`model` in models/cli.py, `alerts` in newspulse/alerts/cli.py,
`crawl` and `replay` in ingest/cli.py); what they share (settings, errors as one line, signals) is
in newspulse/console.py, so no CLI module imports another's.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from enum import Enum
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NamedTuple, Optional

import typer

from newspulse.ingest.cli import crawl, replay
from newspulse.models.cli import app as model_app
from newspulse.models.cli import ensure_model
from newspulse import __version__
from newspulse.alerts.cli import app as alerts_app
from newspulse.dashboard_process import serve_dashboard, start_dashboard, stop_dashboard
from newspulse.console import command_app, echo_fields, echo_json, open_existing_store, quiet_libraries, settings_or_exit
from newspulse.signals import stop_on_signals
from newspulse.errors import BadInput, ExitCode, Unavailable
from newspulse.settings import Settings

if TYPE_CHECKING:
    from newspulse.wiring import RowPacer

log = logging.getLogger("newspulse")

app = command_app(
    "NewsPulse: financial-news sentiment monitoring. Settings come from NEWSPULSE_* variables or .env.\n\n"
    "Exit codes: 0 ok, 1 failure, 2 usage or bad input, 3 configuration, 4 not found, 130 interrupted (docs/cli.md)."
)
store_app = command_app("Inspect the store named by NEWSPULSE_STORE_URL.")
bench_app = command_app("Benchmarks (results as JSON).")
kafka_app = command_app("Kafka topics of the scaled mode.")
app.add_typer(model_app, name="model")
app.add_typer(alerts_app, name="alerts")
app.add_typer(store_app, name="store")
app.add_typer(bench_app, name="bench")
app.add_typer(kafka_app, name="kafka")
app.command("crawl")(crawl)
app.command("replay")(replay)

#: ``newspulse demo``'s pace: the first 2,500 Reuters stories (to 1987-03-03, where a market alert
#: fires) at full speed, then an hour of news a minute, waiting at most 30 s through a quiet spell.
DEMO_SPEED = 60.0
DEMO_WARM_ROWS = 2500
DEMO_MAX_GAP_S = 30.0


class Source(str, Enum):
    kafka = "kafka"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"newspulse {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show the log lines of the libraries underneath (Kafka, Elasticsearch, HTTP clients).")] = False,
) -> None:
    """Settings are read by each command when it runs, so `--help` works whatever the environment."""
    quiet_libraries(verbose)


@app.command()
def process(
    source: Annotated[Source, typer.Option("--source", help="Where raw articles come from.")] = Source.kafka,
) -> None:
    """Consume news.raw as one member of the processor group until SIGTERM/SIGINT.

    A store or broker outage pauses it until the peer is back; a permanent failure (a rejected
    credential, a bad mapping) ends it with exit code 1 and nothing committed for it."""
    from newspulse.errors import PermanentFailure
    from newspulse.wiring import run_kafka_processor

    try:
        run_kafka_processor(settings_or_exit())
    except PermanentFailure as err:
        typer.echo(f"newspulse process: error: {err} (the batch in hand was neither committed nor dead-lettered)", err=True)
        raise typer.Exit(ExitCode.failure) from None


@app.command()
def dashboard(port: Annotated[Optional[int], typer.Option(help="Port to serve on (default NEWSPULSE_DASHBOARD_PORT).")] = None) -> None:
    """Serve the analyst dashboard (Streamlit) on NEWSPULSE_DASHBOARD_ADDRESS (localhost by default)
    until SIGINT/SIGTERM, which also stop the Streamlit server."""
    settings = settings_or_exit()
    returncode = serve_dashboard(settings, port or settings.dashboard_port)
    if returncode:
        raise typer.Exit(returncode)


#: The help of every ``--json`` option: the promise scripts rely on.
JSON_HELP = "Print one JSON document on stdout and nothing else."


@app.command()
def summarize(as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False) -> None:
    """Read an article (plain text, or an Article as JSON) from stdin and print its summary.

    Nothing is written to the current folder: the sentence encoder's ONNX export is cached in
    NEWSPULSE_ONNX_CACHE (default: the user's cache folder)."""
    from newspulse.models.summarize import summarize_text

    text = sys.stdin.read()
    if not text.strip():
        raise BadInput("empty input on stdin: pipe an article's text or its JSON in")
    try:
        summary = summarize_text(text, settings_or_exit())
    except ValueError as err:  # JSON input that is not a valid Article
        raise BadInput(str(err)) from None
    if as_json:
        echo_json({"summary": summary})
    else:
        typer.echo(summary)


@store_app.command("stats")
def store_stats(as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False) -> None:
    """Counts of articles, labels, alerts, feedback and dead letters (a missing store: exit 4)."""
    store = open_existing_store(settings_or_exit())
    try:
        stats = store.stats()
    finally:
        store.close()
    if as_json:
        echo_json(stats)
    else:
        echo_fields(stats)


@store_app.command("init")
def store_init(
    timeout: Annotated[float, typer.Option(min=0, help="Seconds to keep retrying while the store comes up (a container started beside it).")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Create the store's tables (SQLite) or index templates and indices (Elasticsearch) if missing; idempotent.
    Store still unavailable after --timeout: one line, exit 1."""
    from newspulse.retrying import Backoff, retry_until
    from newspulse.store import StoreUnavailable
    from newspulse.wiring import open_store

    store = open_store(settings_or_exit())
    try:
        # the first request sets the store up; the store tries once, this command owns the wait
        latest = retry_until(
            store.latest_published_at,
            "setting up the store",
            timeout_s=timeout,
            transient=lambda err: isinstance(err, StoreUnavailable),
            backoff=Backoff(first_s=0.5, max_s=5.0),
        )
    finally:
        store.close()
    result = {"backend": store.backend, "latest_published_at": latest}
    if as_json:
        echo_json(result)
    else:
        echo_fields(result)


@kafka_app.command("init-topics")
def kafka_init_topics(
    timeout: Annotated[float, typer.Option(min=1, help="Seconds the whole command may take, retrying while the broker comes up.")] = 120.0,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Create news.raw, news.scored and news.dlq (NEWSPULSE_KAFKA_PARTITIONS partitions) if missing; idempotent.
    No broker within --timeout: one line, exit 1."""
    from newspulse.kafka.client import topic_specs

    settings = settings_or_exit()
    created = _ensure_topics_within(settings, timeout)
    result = {"created": created, "topics": sorted(topic_specs(settings)), "partitions": settings.kafka_partitions}
    if as_json:
        echo_json(result)
    else:
        echo_fields(result)


def _ensure_topics_within(settings: Settings, timeout_s: float) -> list[str]:
    """:func:`ensure_topics` bounded by a wall-clock deadline for the whole call.

    kafka-python's own timeouts bound single requests, not its connection set-up and metadata
    waits (a missing broker took 30 s on ``--timeout 1``), so the call runs on a daemon thread
    that is told to stop, and abandoned, when the deadline passes."""
    from newspulse.kafka.client import describe, ensure_topics, is_transient, until_reached

    outcome: dict[str, object] = {}
    stop = threading.Event()

    def work() -> None:
        try:
            # one attempt per call; this command's clock is --timeout
            outcome["created"] = until_reached(lambda: ensure_topics(settings, timeout_s=timeout_s), "creating topics", settings, timeout_s=timeout_s, stop=stop)
        except BaseException as err:  # handed to the caller's thread below
            outcome["error"] = err

    worker = threading.Thread(target=work, name="kafka-init-topics", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        stop.set()
        raise Unavailable(f"no Kafka broker at {describe(settings)} answered within {timeout_s:g} s")
    err = outcome.get("error")
    if isinstance(err, BaseException):
        if is_transient(err):
            raise Unavailable(f"no Kafka broker at {describe(settings)} answered within {timeout_s:g} s ({type(err).__name__})") from None
        raise err
    return outcome["created"]  # type: ignore[return-value]


@bench_app.command("model")
def bench_model(
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    out: Annotated[Optional[Path], typer.Option(help="Also write the JSON document to this file.")] = None,
    note: Annotated[str, typer.Option(help="A note stored with the results (which model was measured and why, the machine's state).")] = "",
) -> None:
    """Dev macro-F1 and throughput of the production model (fp32, int8) against BERT-base."""
    from newspulse.models.sentiment.bench import run_model_bench

    result = run_model_bench(settings_or_exit())
    if note:
        result["note"] = note
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    if as_json:
        echo_json(result)
    else:
        echo_fields(result)


@app.command()
def demo(
    port: Annotated[Optional[int], typer.Option(help="Dashboard port (default NEWSPULSE_DASHBOARD_PORT).")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", help="Corpus to replay (default: the bundled Reuters-21578).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Replay only the first N rows.")] = None,
    serve: Annotated[bool, typer.Option(help="Serve the dashboard and keep running after the replay.")] = True,
    speed: Annotated[float, typer.Option(min=0, help="After the first --warm-rows stories, replay at this multiple of real time (60: an hour of news a minute), so alerts fire and resolve while someone watches; 0 = the whole corpus at full speed.")] = DEMO_SPEED,
    warm_rows: Annotated[int, typer.Option(min=0, help="Stories replayed at full speed before pacing starts (at least the ones a previous run stored).")] = DEMO_WARM_ROWS,
    max_gap: Annotated[float, typer.Option(min=0, help="Longest wait, in seconds, between two paced stories (nights and weekends pass quickly).")] = DEMO_MAX_GAP_S,
) -> None:
    """Train the default classifier if none is in production, serve the dashboard, and replay
    the bundled corpus into the embedded store in the background: the first --warm-rows stories at
    full speed, the rest paced at --speed × real time, so alerts are live while someone watches
    (--speed 0 replays everything at full speed). Ctrl-C or SIGTERM stops everything."""
    from newspulse.ingest.replay import DEFAULT_CORPUS
    from newspulse.ingest.replay import replay as replay_rows
    from newspulse.wiring import replay_embedded

    settings = settings_or_exit()
    ensure_model(settings)
    dash = None
    with stop_on_signals() as stop:
        try:
            if serve:
                dash_port = port or settings.dashboard_port
                dash = start_dashboard(settings, dash_port, quiet=True)
                typer.echo(f"\nDashboard: http://localhost:{dash_port}  (Ctrl-C stops)\n", err=True)
            summary = replay_embedded(
                settings, replay_rows(file or DEFAULT_CORPUS, limit=limit), origin="demo", stop=stop, skip_stored=True,
                pace=demo_pacer(DemoPace(speed, warm_rows, max_gap), stop),
            )
            typer.echo(json.dumps(summary), err=True)
            if dash is not None and not stop.is_set():
                typer.echo(f"Replay done; dashboard still at http://localhost:{dash_port} (Ctrl-C stops)", err=True)
                while not stop.wait(1):
                    if dash.poll() is not None:
                        raise typer.Exit(dash.returncode)
            if stop.is_set():
                typer.echo("stopping…", err=True)
        finally:
            if dash is not None:
                stop_dashboard(dash, grace_s=15)


class DemoPace(NamedTuple):
    """How ``newspulse demo`` paces its replay (see :func:`pace_demo`)."""

    speed: float
    warm_rows: int
    max_gap_s: float


def pace_demo(messages: Iterable[dict], pace: DemoPace, *, wait: Callable[[float], bool], flush: Callable[[], None]) -> Iterator[dict]:
    """``messages`` (event-time order) with waits between them: none for the first
    ``pace.warm_rows`` (the dashboard has history at once), then the gap in event time divided by
    ``pace.speed``, at most ``pace.max_gap_s`` (a quiet night must not stall the demo). A replay at
    full speed fires and resolves every alert within seconds, before anyone opens the Alerts page.

    ``flush`` hands over what is held before each wait, so a paced story is stored when due;
    ``wait(seconds)`` returns True when the demo is stopping, which ends the stream."""
    previous: datetime | None = None
    for n, msg in enumerate(messages):
        when = _event_time(msg)
        if pace.speed > 0 and n >= pace.warm_rows and previous is not None and when is not None:
            delay = min(max((when - previous).total_seconds() / pace.speed, 0.0), pace.max_gap_s)
            if delay > 0:
                flush()
                if wait(delay):
                    return
        if when is not None:
            previous = when
        yield msg


def demo_pacer(pace: DemoPace, stop: threading.Event) -> "RowPacer":
    """:func:`pace_demo` for :func:`newspulse.wiring.replay_embedded`: the stories a previous run
    stored count as warm rows too, so a second run catches up at full speed."""

    def paced(rows: Iterable[dict], flush: Callable[[], None], stored: int) -> Iterable[dict]:
        return pace_demo(rows, pace._replace(warm_rows=max(pace.warm_rows, stored)), wait=stop.wait, flush=flush)

    return paced


def _event_time(msg: dict) -> datetime | None:
    try:
        return datetime.fromisoformat(str(msg.get("published_at")))
    except ValueError:
        return None  # an unreadable time is dead-lettered downstream; it paces nothing


def main() -> None:
    """Entry point: Ctrl-C outside a command's own signal handling exits 130 without a traceback."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
