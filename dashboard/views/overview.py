"""Overview: where is sentiment turning? Watchlist, index, negative share, volume, heat map, sectors, firing alerts.

The live part runs in a fragment that re-runs itself every ``dashboard_refresh_s`` seconds, so
the page follows the stream without reloading the sidebar or losing the analyst's place.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import streamlit as st

from newspulse.dashboard import auth, charts, data, watchlists, widgets
from newspulse.schema import Alert
from newspulse.settings import Settings

SEEN_ALERTS_KEY = "np_seen_firing"
WATCH_KEY = "np_watch"
WATCH_PARAM = "watch"


def alert_banner(firing: list[Alert]) -> None:
    """A red banner listing the firing alerts (acknowledged ones are named as such)."""
    if not firing:
        st.success("No alert is firing.", icon=":material/check_circle:")
        return
    open_ = [a for a in firing if not a.acknowledged]
    scopes = ", ".join(widgets.escape_md(a.scope) for a in firing[:8]) + (" …" if len(firing) > 8 else "")
    text = f"**{len(firing)} alert{'s' if len(firing) != 1 else ''} firing** ({len(open_)} unacknowledged): {scopes}"
    st.error(text, icon=":material/notifications_active:")
    st.page_link("views/alerts.py", label="Open the alerts page", icon=":material/arrow_forward:")


def toast_new_alerts(firing: list[Alert]) -> None:
    """A toast for each alert that started firing since this browser tab last looked.

    The first look only records what is firing (the banner shows it); toasts are for news.
    """
    ids = {a.id for a in firing}
    seen = st.session_state.get(SEEN_ALERTS_KEY)
    if seen is not None:
        for alert in firing:
            if alert.id not in seen:
                st.toast(f"New alert: {widgets.escape_md(alert.scope)} ({alert.severity}), negative share {alert.value:.0%}", icon=":material/warning:")
    st.session_state[SEEN_ALERTS_KEY] = ids | (seen or set())


def trend_panel(series: pd.DataFrame, window: data.Window) -> None:
    st.subheader("Market sentiment")
    widgets.window_caption(window)
    st.altair_chart(charts.sentiment_chart(series), width="stretch")
    st.altair_chart(charts.volume_chart(series), width="stretch")


def heatmap_panel(settings: Settings, window: data.Window) -> None:
    """Negativity by ticker and topic; by ticker and time when the articles carry no topics."""
    st.subheader("Where the news is negative")
    flt = window.filter()
    frame = data.load_heatmap(settings, flt)
    if not frame.empty:
        st.altair_chart(charts.heatmap(frame, x="topic"), width="stretch")
        return
    frame = data.load_ticker_heatmap(settings, flt, max(window.bucket, timedelta(days=1)))
    if frame.empty:
        st.caption("No article in this window is tagged with a ticker yet.")
        return
    st.caption("No topics tagged in this window: negativity by ticker over time.")
    st.altair_chart(charts.heatmap(frame, x="yearmonthdate(time)", x_type="O"), width="stretch")


def sector_panel(settings: Settings, window: data.Window) -> None:
    """Tone by sector: the window's tickers rolled up by their sector in the company list."""
    st.subheader("Sectors")
    facets = data.load_facets(settings, "tickers", window.filter(), limit=data.SECTOR_TICKERS)
    if not facets:
        st.caption("No article in this window is tagged with a ticker yet.")
        return
    widgets.table(
        data.sector_rollup(facets, data.company_sectors()),
        "sectors",
        column_config={
            "mentions": st.column_config.NumberColumn(help="Articles per ticker, summed: a story naming two companies of a sector counts twice."),
            "negative share": st.column_config.ProgressColumn(format="percent", min_value=0.0, max_value=1.0),
            "mean score": st.column_config.NumberColumn(format="%+.2f"),
        },
    )


def _watch_param(raw: str) -> list[str]:
    return watchlists.clean(raw.split(","))


def watchlist_panel(settings: Settings, window: data.Window) -> None:
    """The analyst's own tickers with their tone in the window and any alert firing on them:
    saved under the OIDC identity, else kept in the link (``?watch=``; see dashboard/watchlists.py)."""
    st.subheader("Watchlist")
    facets = {f.value: f for f in data.load_facets(settings, "tickers", window.filter(), limit=data.SECTOR_TICKERS)}
    user = auth.identity() if auth.oidc_providers() is not None else None
    if WATCH_KEY not in st.session_state:
        if user is not None:
            st.session_state[WATCH_KEY] = watchlists.watchlist_of(settings.dashboard_watchlists, user)
        else:
            widgets.from_url(WATCH_KEY, WATCH_PARAM, _watch_param, [])
    chosen = st.session_state[WATCH_KEY]
    options = list(dict.fromkeys([*chosen, *sorted(facets, key=lambda t: -facets[t].count)]))
    chosen = st.multiselect(
        "Tickers you follow", options, key=WATCH_KEY, accept_new_options=True, max_selections=watchlists.MAX_TICKERS,
        help=("Saved under your sign-in." if user is not None else "Kept in this page's link: bookmark it to keep the list."),
    )
    chosen = watchlists.clean(chosen)
    if user is not None:
        if chosen != watchlists.watchlist_of(settings.dashboard_watchlists, user):
            watchlists.save_watchlist(settings.dashboard_watchlists, user, chosen)
    else:
        widgets.to_url(WATCH_PARAM, ",".join(chosen) or None)
    if not chosen:
        st.caption("Pick tickers to follow their tone and alerts here.")
        return
    firing = {a.scope.removeprefix("ticker:") for a in data.load_alerts(settings, status="firing") if a.scope.startswith("ticker:")}
    rows = []
    for ticker in chosen:
        f = facets.get(ticker)
        rows.append({"ticker": ticker, "articles": f.count if f else 0, "negative share": f.negative_share if f else None,
                     "mean score": f.mean_score if f else None, "alert firing": ticker in firing})
    widgets.table(
        pd.DataFrame(rows),
        "watchlist",
        column_config={
            "negative share": st.column_config.ProgressColumn(format="percent", min_value=0.0, max_value=1.0),
            "mean score": st.column_config.NumberColumn(format="%+.2f"),
        },
    )


def movers_panel(settings: Settings, window: data.Window) -> None:
    """The most negative tickers (with enough volume to mean something) and stories."""
    left, right = st.columns(2)
    with left:
        st.subheader("Most negative tickers")
        facets = data.load_facets(settings, "tickers", window.filter(), limit=10, by="negativity", min_count=3)
        if facets:
            widgets.table(
                pd.DataFrame([{"ticker": f.value, "articles": f.count, "negative share": f.negative_share, "mean score": f.mean_score} for f in facets]),
                "negative-tickers",
                column_config={
                    "negative share": st.column_config.ProgressColumn(format="percent", min_value=0.0, max_value=1.0),
                    "mean score": st.column_config.NumberColumn(format="%+.2f"),
                },
            )
        else:
            st.caption("No ticker has 3 or more articles in this window.")
    with right:
        st.subheader("Most negative stories")
        for article in data.load_top_negative(settings, window.filter(), limit=5):
            st.markdown(
                f"{widgets.label_badge(article.label.value)} **{article.score:+.2f}** "
                f"{widgets.escape_md(widgets.one_line(article.title))} · {widgets.escape_md(article.source)} · {widgets.fmt_time(article.published_at)}"
            )


def live_panels(settings: Settings) -> None:
    with widgets.redacted_errors(settings):
        live_content(settings)


def live_content(settings: Settings) -> None:
    if not widgets.has_articles(settings):
        return
    window = widgets.current_window(settings)
    firing = data.load_alerts(settings, status="firing")
    toast_new_alerts(firing)
    alert_banner(firing)
    buckets = data.load_series(settings, window.filter(), window.bucket)
    previous = window.previous()
    before = data.totals(data.load_series(settings, previous.filter(), previous.bucket)) if previous else None
    widgets.headline_metrics(data.totals(buckets), before, firing)
    watchlist_panel(settings, window)
    trend_panel(data.series_frame(buckets), window)
    heatmap_panel(settings, window)
    movers_panel(settings, window)
    sector_panel(settings, window)


def render() -> None:
    settings = widgets.page_settings()
    st.title("Overview")
    every = settings.dashboard_refresh_s if st.session_state.get("np_autorefresh", True) else 0
    st.fragment(live_panels, run_every=every or None)(settings)


render()
