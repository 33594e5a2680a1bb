"""`newspulse alerts ...` commands: run the alerter service, list, acknowledge and silence alerts.

Silences are one noun with three verbs (`alerts silence add|list|remove`), as in kubectl and gh."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import Enum
from typing import Annotated, Optional

import typer

from newspulse.console import command_app, echo_fields, echo_json, open_existing_store
from newspulse.signals import stop_on_signals
from newspulse.console import settings_or_exit as _settings
from newspulse.errors import BadInput, NotFound
from newspulse.schema import AlertStatus

app = command_app("Run the alerter and inspect alerts.")
silence_app = command_app("Hold back an alert scope's notifications for a while (alerts are still recorded).")
app.add_typer(silence_app, name="silence")

#: The help of every ``--json`` option: the promise scripts rely on.
JSON_HELP = "Print one JSON document on stdout and nothing else."

_DURATION = re.compile(r"^(\d+)\s*([mhd])$")


class Source(str, Enum):
    store = "store"
    kafka = "kafka"


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
        raise BadInput(f"--until {text!r} is neither a duration (30m, 2h, 1d) nor an ISO-8601 time") from None


@app.command("list")
def list_alerts(
    status: Annotated[Optional[AlertStatus], typer.Option(help="Only alerts in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP + " A JSON array of full alert records.")] = False,
) -> None:
    """Alerts in the store, newest started first."""
    store = open_existing_store(_settings())
    try:
        alerts = store.list_alerts(status=status.value if status else None, limit=limit)
    finally:
        store.close()
    if as_json:
        echo_json([a.model_dump(mode="json") for a in alerts])
        return
    if not alerts:
        typer.echo("no alerts")
        return
    for a in alerts:
        ack = " ack" if a.acknowledged else ""
        flap = " flapping" if a.flapping else ""
        typer.echo(f"{a.id}  {a.status.value:8} {a.severity:8} {a.started_at:%Y-%m-%d %H:%M}  {a.scope:24} z={a.magnitude:5.1f}{ack}{flap}  {a.message}")


@app.command("show")
def show(
    alert_id: Annotated[str, typer.Argument(help="Alert id.")],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """One alert with its driving articles and delivery status (a missing alert: exit 4)."""
    store = open_existing_store(_settings())
    try:
        alert = store.get_alert(alert_id)
    finally:
        store.close()
    if alert is None:
        raise NotFound(f"no alert with id {alert_id!r}")
    doc = alert.model_dump(mode="json")
    if as_json:
        echo_json(doc)
        return
    drivers = doc.pop("drivers")
    echo_fields(doc)
    for d in drivers:
        typer.echo(f"driver  {d['score']:+.2f}  {d['published_at'] or '-'}  {d['id']}  {d['title']}")


@app.command("run")
def run(
    source: Annotated[Source, typer.Option(help="store: follow new articles in the store; kafka: consume news.scored.")] = Source.store,
    poll_seconds: Annotated[float, typer.Option(min=0.1, help="How often to poll for new articles.")] = 2.0,
) -> None:
    """Run the alerter as a service until SIGINT/SIGTERM. From the store: one alerter per store;
    from Kafka: start two for a hot standby (the group keeps one active)."""
    from newspulse.wiring import build_alerter, open_store

    settings = _settings()
    store = open_store(settings)
    try:
        if settings.metrics_port is not None:
            from newspulse.metrics import serve_metrics

            serve_metrics(settings.metrics_port)
        alerter = build_alerter(settings, store, recover=False)  # bad rules: RulesError, one line, exit 3
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
    """Acknowledge an alert: no more repeat notifications for it (a missing alert: exit 4)."""
    from newspulse.alerts import ack_alert

    store = open_existing_store(_settings())
    try:
        alert = ack_alert(store, alert_id, by=by)  # NotFound: one line, exit 4
    finally:
        store.close()
    typer.echo(f"acknowledged {alert.id} ({alert.scope})")


@silence_app.command("add")
def silence_add(
    scope: Annotated[str, typer.Argument(help="Scope or glob: market, ticker:AAPL, topic:*, source:Reuters.")],
    until: Annotated[str, typer.Option(help="Duration (30m, 2h, 1d) or ISO-8601 end time.")] = "2h",
    comment: Annotated[str, typer.Option(help="Why (shown to colleagues).")] = "",
    by: Annotated[str, typer.Option(help="Who silences.")] = "analyst",
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Hold back notifications for a scope until a time (alerts are still recorded)."""
    from newspulse.alerts import silence_scope

    end = parse_until(until)
    try:
        s = silence_scope(_settings(), scope, end, comment=comment, by=by)
    except ValueError as err:
        raise BadInput(str(err)) from None
    if as_json:
        echo_json(s.model_dump(mode="json"))
    else:
        typer.echo(f"silenced {s.scope} until {s.until.isoformat()} (id {s.id}; `newspulse alerts silence remove {s.id}` ends it)")


@silence_app.command("list")
def silence_list(as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP + " A JSON array.")] = False) -> None:
    """Silences in force now."""
    from newspulse.alerts import list_silences

    silences = list_silences(_settings())
    if as_json:
        echo_json([s.model_dump(mode="json") for s in silences])
        return
    if not silences:
        typer.echo("no silences in force")
    for s in silences:
        typer.echo(f"{s.id}  {s.scope:24} until {s.until:%Y-%m-%d %H:%M}Z  by {s.created_by}  {s.comment}")


@silence_app.command("remove")
def silence_remove(silence_id: Annotated[str, typer.Argument(help="Silence id (from `alerts silence list`).")]) -> None:
    """End a silence now (a silence not in force: exit 4)."""
    from newspulse.alerts import expire_silence

    if not expire_silence(_settings(), silence_id):
        raise NotFound(f"no active silence {silence_id!r}")
    typer.echo(f"silence {silence_id} ended")


@app.command("rules")
def rules(as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False) -> None:
    """Validate the alert rules in force (NEWSPULSE_ALERT_RULES or built-in) and print them
    (an invalid rules file: exit 3). Webhook URLs and headers are masked."""
    from newspulse.alerts import load_rules

    ruleset = load_rules(_settings().alert_rules)  # bad rules: RulesError, one line, exit 3
    doc = ruleset.model_dump(mode="json")
    for receiver in doc["receivers"].values():  # webhook URLs and headers carry tokens
        receiver["url"] = "***" if receiver.get("url") else receiver.get("url")
        receiver["headers"] = {k: "***" for k in receiver.get("headers", {})}
    if as_json:
        echo_json(doc)
        return
    for name, receiver in doc["receivers"].items():
        typer.echo(f"receiver {name}: {receiver['type']}" + (f" {receiver['url']}" if receiver.get("url") else ""))
    for rule in ruleset.rules:
        windows = ",".join(str(w) for w in rule.windows)
        typer.echo(
            f"rule {rule.name}: {rule.scope} {rule.direction}, windows {windows} min, z >= {rule.z_threshold:g}, "
            f"volume >= {rule.min_volume}, to {', '.join(rule.receivers) or '-'}"
        )
