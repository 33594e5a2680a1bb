"""`newspulse alerts ...` commands: run the alerter service, list, acknowledge and silence alerts."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from enum import Enum
from typing import Annotated, Optional

import typer

from newspulse.console import command_app
from newspulse.signals import stop_on_signals
from newspulse.console import settings_or_exit as _settings
from newspulse.errors import NotFound
from newspulse.schema import AlertStatus

app = command_app("Run the alerter and inspect alerts.")

_DURATION = re.compile(r"^(\d+)\s*([mhd])$")


class Source(str, Enum):
    store = "store"
    kafka = "kafka"


def _store(settings):
    from newspulse.wiring import open_store

    return open_store(settings)


def parse_until(text: str, now: datetime | None = None) -> datetime:
    """``30m``, ``2h``, ``1d`` from now, or an ISO-8601 time (naive = UTC)."""
    from newspulse.schema import to_utc, utcnow

    now = now or utcnow()
    m = _DURATION.match(text.strip())
    if m:
        unit = {"m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        return now + timedelta(**{unit: int(m.group(1))})
    try:
        return to_utc(datetime.fromisoformat(text.strip()))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is neither a duration (30m, 2h, 1d) nor an ISO-8601 time") from None


@app.command("list")
def list_alerts(
    status: Annotated[Optional[AlertStatus], typer.Option(help="Only alerts in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array of full alert records.")] = False,
) -> None:
    """Alerts in the store, newest started first."""
    store = _store(_settings())
    try:
        alerts = store.list_alerts(status=status.value if status else None, limit=limit)
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps([json.loads(a.model_dump_json()) for a in alerts], indent=2))
        return
    if not alerts:
        typer.echo("no alerts")
        return
    for a in alerts:
        ack = " ack" if a.acknowledged else ""
        flap = " flapping" if a.flapping else ""
        typer.echo(f"{a.id}  {a.status.value:8} {a.severity:8} {a.started_at:%Y-%m-%d %H:%M}  {a.scope:24} z={a.magnitude:5.1f}{ack}{flap}  {a.message}")


@app.command("show")
def show(alert_id: Annotated[str, typer.Argument(help="Alert id.")]) -> None:
    """One alert as JSON, with its driving articles and delivery status."""
    store = _store(_settings())
    try:
        alert = store.get_alert(alert_id)
    finally:
        store.close()
    if alert is None:
        typer.echo(f"no alert with id {alert_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(alert.model_dump_json(indent=2))


@app.command("run")
def run(
    source: Annotated[Source, typer.Option(help="store: follow new articles in the store; kafka: consume news.scored.")] = Source.store,
    poll_seconds: Annotated[float, typer.Option(min=0.1, help="How often to poll for new articles.")] = 2.0,
) -> None:
    """Run the alerter as a service until SIGINT/SIGTERM. From the store: one alerter per store;
    from Kafka: start two for a hot standby (the group keeps one active)."""
    from newspulse.wiring import build_alerter

    settings = _settings()
    store = _store(settings)
    try:
        if settings.metrics_port is not None:
            from newspulse.metrics import serve_metrics

            serve_metrics(settings.metrics_port)
        alerter = build_alerter(settings, store, recover=False)  # bad rules: RulesError, one line, exit 2
        typer.echo(f"alerter: {len(alerter.rules.rules)} rules, following {source.value}; Ctrl-C stops", err=True)
        with stop_on_signals() as stop:
            alerter.run_forever(source.value, stop=stop, poll_seconds=poll_seconds, kafka_settings=settings)
    finally:
        store.close()


@app.command("ack")
def ack(
    alert_id: Annotated[str, typer.Argument(help="Alert id.")],
    by: Annotated[str, typer.Option(help="Who acknowledges.")] = "analyst",
) -> None:
    """Acknowledge an alert: no more repeat notifications for it."""
    from newspulse.alerts import ack_alert

    store = _store(_settings())
    try:
        alert = ack_alert(store, alert_id, by=by)
    except NotFound as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(1) from None
    finally:
        store.close()
    typer.echo(f"acknowledged {alert.id} ({alert.scope})")


@app.command("silence")
def silence(
    scope: Annotated[str, typer.Argument(help="Scope or glob: market, ticker:AAPL, topic:*, source:Reuters.")],
    until: Annotated[str, typer.Option(help="Duration (30m, 2h, 1d) or ISO-8601 end time.")] = "2h",
    comment: Annotated[str, typer.Option(help="Why (shown to colleagues).")] = "",
    by: Annotated[str, typer.Option(help="Who silences.")] = "analyst",
) -> None:
    """Hold back notifications for a scope until a time (alerts are still recorded)."""
    from newspulse.alerts import silence_scope

    try:
        s = silence_scope(_settings(), scope, parse_until(until), comment=comment, by=by)
    except ValueError as err:
        typer.echo(f"newspulse alerts silence: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(json.loads(s.model_dump_json())))


@app.command("silences")
def silences() -> None:
    """Silences in force now, as JSON."""
    from newspulse.alerts import list_silences

    typer.echo(json.dumps([json.loads(s.model_dump_json()) for s in list_silences(_settings())], indent=2))


@app.command("unsilence")
def unsilence(silence_id: Annotated[str, typer.Argument(help="Silence id.")]) -> None:
    """End a silence now."""
    from newspulse.alerts import expire_silence

    if not expire_silence(_settings(), silence_id):
        typer.echo(f"no active silence {silence_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"silence {silence_id} ended")


@app.command("rules")
def rules() -> None:
    """Validate the alert rules in force (NEWSPULSE_ALERT_RULES or built-in) and print them."""
    from newspulse.alerts import load_rules

    ruleset = load_rules(_settings().alert_rules)  # bad rules: RulesError, one line, exit 2
    doc = json.loads(ruleset.model_dump_json())
    for receiver in doc["receivers"].values():  # webhook URLs and headers carry tokens
        receiver["url"] = "***" if receiver.get("url") else receiver.get("url")
        receiver["headers"] = {k: "***" for k in receiver.get("headers", {})}
    typer.echo(json.dumps(doc, indent=2))
