"""Alerts: is it real? Each alert with its window chart, the stories that drove it, and actions.

Deep links: ``/alerts?status=resolved``, ``/alerts?alert=<id>`` (opens the alert's list).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import streamlit as st

from newspulse.dashboard import auth, charts, data, widgets
from newspulse.alerts import ack_alert, expire_silence, list_silences, silence_scope
from newspulse.schema import Alert, AlertStatus
from newspulse.settings import Settings

STATUSES = data.ALERT_STATUSES
VIEWS = (*STATUSES, "silences")
VIEW_KEY = "alerts-view"
STATUS_PARAM = "status"
ALERT_PARAM = "alert"
_CONTEXT_WINDOWS = 8  # window lengths of history shown before an alert starts


def alert_table(alerts: list[Alert], status: str) -> None:
    widgets.table(
        pd.DataFrame(
            [
                {
                    "scope": a.scope,
                    "severity": a.severity,
                    "started": a.started_at,
                    "updated": a.updated_at,
                    "resolved": a.resolved_at,
                    "negative share": a.value,
                    "baseline": a.baseline,
                    "magnitude": a.magnitude,
                    "articles": a.volume,
                    "window (min)": a.window_minutes,
                    "acknowledged": a.acknowledged,
                    "rule": a.rule,
                    "id": a.id,
                }
                for a in alerts
            ]
        ),
        f"alerts-{status}",
        column_config={
            **{c: st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm") for c in ("started", "updated", "resolved")},
            "negative share": st.column_config.NumberColumn(format="percent"),
            "baseline": st.column_config.NumberColumn(format="percent"),
            "magnitude": st.column_config.NumberColumn(format="%.2f"),
        },
    )


def alert_summary(alert: Alert) -> None:
    cols = st.columns(4)
    cols[0].metric("Negative share", f"{alert.value:.0%}", f"{(alert.value - alert.baseline) * 100:+.0f} pts vs baseline", delta_color="inverse")
    cols[1].metric("Baseline", f"{alert.baseline:.0%}")
    cols[2].metric("Magnitude", f"{alert.magnitude:.2f}")
    cols[3].metric("Articles in window", alert.volume)
    end = alert.resolved_at or alert.updated_at
    st.caption(
        f"{alert.status.value} · {alert.severity} · rule {widgets.escape_md(alert.rule)} · window {alert.window_minutes} min · "
        f"started {widgets.fmt_time(alert.started_at)} · {'resolved' if alert.resolved_at else 'updated'} {widgets.fmt_time(end)}"
        + (" · acknowledged" + (f" by {widgets.escape_md(alert.acknowledged_by)}" if alert.acknowledged_by else "") if alert.acknowledged else "")
    )
    if alert.message:
        st.markdown(widgets.escape_md(alert.message))
    if alert.delivery:
        st.caption("Delivery: " + widgets.escape_md(" · ".join(f"{k}: {v}" for k, v in sorted(alert.delivery.items()))))


def window_chart(settings: Settings, alert: Alert) -> None:
    """The alert's scope over its window, with history before it for comparison."""
    window = timedelta(minutes=alert.window_minutes)
    end = data.shift(alert.resolved_at or alert.updated_at, window)
    start = data.shift(alert.started_at, -_CONTEXT_WINDOWS * window)
    flt = data.Filter(start=start, end=end, **data.parse_scope(alert.scope))
    frame = data.series_frame(data.load_series(settings, flt, window))
    if frame.empty:
        st.caption("No article of this scope around the alert is in the store.")
        return
    chart = charts.window_chart(frame, start=alert.started_at, end=alert.resolved_at or alert.updated_at, context=(start, end))
    st.altair_chart(chart, width="stretch")


def drivers_panel(settings: Settings, alert: Alert) -> None:
    """The stories behind the alert; full cards when the articles are in the store."""
    st.markdown("**Articles that drove it**")
    if not alert.drivers:
        st.caption("The alert lists no driving articles.")
    ticker = data.parse_scope(alert.scope).get("ticker")  # a company's alert: show its verdict in each story
    for driver in alert.drivers:
        article = data.load_article(settings, driver.id)
        if article is not None:
            widgets.article_card(settings, article, key=f"drv-{alert.id}-{driver.id}", ticker=ticker)
        else:
            st.markdown(f"**{driver.score:+.2f}** {widgets.escape_md(widgets.one_line(driver.title))} · {widgets.fmt_time(driver.published_at)}")


SILENCE_FOR = {"1 hour": timedelta(hours=1), "4 hours": timedelta(hours=4), "1 day": timedelta(days=1), "1 week": timedelta(days=7)}


def actions_panel(settings: Settings, alert: Alert) -> None:
    """Acknowledge (no more repeat notifications) and silence the scope (no notifications at all)."""
    ack_col, silence_col = st.columns(2)
    with ack_col:
        if alert.status == AlertStatus.resolved:
            st.caption("Resolved.")
        elif alert.acknowledged:
            st.caption("Acknowledged: no repeat notifications.")
        elif st.button("Acknowledge", key=f"ack-{alert.id}", icon=":material/done:", help="Keep the alert open but stop repeat notifications."):
            ack_alert(data.get_store(settings), alert.id, by=auth.identity())
            data.clear_caches()
            st.rerun()
    with silence_col, st.popover("Silence notifications", icon=":material/notifications_off:", key=f"silence-pop-{alert.id}"):
        with st.form(key=f"silence-{alert.id}", border=False):
            scope = st.text_input("Scope (glob)", value=alert.scope, help="e.g. ticker:XOM, topic:*, market")
            length = st.selectbox("For", list(SILENCE_FOR), index=1)
            comment = st.text_input("Why")
            st.caption(f"Recorded as {widgets.escape_md(auth.identity())}.")
            if st.form_submit_button("Silence"):
                until = datetime.now(timezone.utc) + SILENCE_FOR[length]
                silence = silence_scope(settings, scope, until, comment=comment, by=auth.identity())
                st.success(f"Silenced {silence.scope} until {widgets.fmt_time(silence.until)}.")


def silences_panel(settings: Settings) -> None:
    """Silences in force (wall-clock time), each with a button to end it."""
    silences = list_silences(settings)
    if not silences:
        st.caption("No silence in force. Silence a scope from an alert's actions.")
        return
    for silence in silences:
        cols = st.columns([4, 1])
        cols[0].markdown(
            f"**{widgets.escape_md(silence.scope)}** until {widgets.fmt_time(silence.until)} · by {widgets.escape_md(silence.created_by)}"
            + (f" · {widgets.escape_md(silence.comment)}" if silence.comment else "")
        )
        if cols[1].button("End", key=f"expire-{silence.id}"):
            expire_silence(settings, silence.id)
            st.rerun()


def alert_detail(settings: Settings, alerts: list[Alert], status: str) -> None:
    """The chosen alert (``?alert=<id>`` in a link) in full, with its actions."""
    by_id = {a.id: a for a in alerts}
    key = f"pick-{status}"
    widgets.from_url(key, ALERT_PARAM, widgets.one_of(list(by_id)), alerts[0].id)
    choice = st.selectbox(
        "Alert",
        list(by_id),
        format_func=lambda i: f"{by_id[i].scope} · {by_id[i].window_minutes} min · {by_id[i].severity} · {widgets.fmt_time(by_id[i].started_at)}",
        key=key,
    )
    widgets.to_url(ALERT_PARAM, choice)
    alert = by_id[choice]
    alert_summary(alert)
    actions_panel(settings, alert)
    window_chart(settings, alert)
    drivers_panel(settings, alert)


def view_picker(alerts: dict[str, list[Alert]]) -> str:
    """Firing, pending, resolved or silences (``?status=``); a link to one alert opens its list."""
    linked = st.query_params.get(ALERT_PARAM)
    default = next((s for s in STATUSES if any(a.id == linked for a in alerts[s])), STATUSES[0])
    widgets.from_url(VIEW_KEY, STATUS_PARAM, widgets.one_of(list(VIEWS)), default)
    view = st.segmented_control(
        "Show", VIEWS, key=VIEW_KEY, label_visibility="collapsed",
        format_func=lambda v: f"{v.capitalize()} ({len(alerts[v])})" if v in alerts else v.capitalize(),
    )
    view = view or default  # deselecting keeps a list on screen
    widgets.to_url(STATUS_PARAM, view)
    return view


def render() -> None:
    settings = widgets.page_settings()
    st.title("Alerts")
    alerts = {s: data.load_alerts(settings, status=s) for s in STATUSES}
    view = view_picker(alerts)
    if view == "silences":
        widgets.to_url(ALERT_PARAM, None)
        silences_panel(settings)
        return
    if not alerts[view]:
        widgets.to_url(ALERT_PARAM, None)
        st.caption(f"No {view} alert." + (" The alerter writes them here as it detects spikes (`newspulse alerts run`)." if view == "firing" else ""))
        return
    alert_table(alerts[view], view)
    alert_detail(settings, alerts[view], view)


render()
