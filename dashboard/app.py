"""NewsPulse analyst dashboard: ``streamlit run dashboard/app.py`` (or ``newspulse dashboard``).

The entry script sets the page up, signs the analyst in when sign-in is configured (OIDC or the
shared password, see ``dashboard/auth.py``), draws the
shared sidebar (time range, store, auto-refresh) and hands over to the page the analyst picked.
Each page lives in ``dashboard/views/`` with one function per panel.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

# `streamlit run dashboard/app.py` runs this file as a script: its imports go through the
# installed package (editable in a checkout), where dashboard/ is newspulse.dashboard.
from newspulse.dashboard import auth
from newspulse.settings import Settings, SettingsError, load_settings

_PAGES = Path(__file__).resolve().parent / "views"


def settings_or_stop() -> Settings:
    """Settings, or a readable error naming the bad ``NEWSPULSE_*`` variable."""
    try:
        return load_settings()
    except SettingsError as err:
        from newspulse.dashboard.widgets import redact

        st.error(f"The dashboard cannot start: {redact(str(err))}")
        st.stop()
        raise  # unreachable: st.stop() ends the run


def store_or_stop(settings: Settings) -> dict:
    """The store's stats, or a clear error when the store cannot be reached."""
    from newspulse.dashboard import data

    try:
        return data.load_stats(settings)
    except Exception as err:  # any backend failure: show it instead of a traceback
        from newspulse.dashboard.widgets import redact

        st.error(redact(f"Cannot read the store at `{settings.store_url}`: {type(err).__name__}: {err}", settings))
        st.caption("Check NEWSPULSE_STORE_URL, and that Elasticsearch is up when the URL is http(s)://.")
        st.stop()
        raise


def sidebar(settings: Settings, stats: dict) -> None:
    from newspulse.dashboard import data, widgets

    widgets.range_selector()
    widgets.tz_selector()
    if settings.dashboard_refresh_s:
        st.sidebar.toggle("Auto-refresh", value=True, key="np_autorefresh", help=f"Reload the Overview every {settings.dashboard_refresh_s} s.")
    else:
        st.sidebar.caption("Auto-refresh is off (NEWSPULSE_DASHBOARD_REFRESH_S=0).")
    span = data.load_span(settings)
    if span.future:
        st.sidebar.warning(
            f"{span.future:,} article{'s are' if span.future != 1 else ' is'} dated after {widgets.fmt_time(span.cutoff)} "
            "(a bad timestamp) and left out of the time ranges.",
            icon=":material/schedule:",
        )
    backend = stats.get("backend", "?")
    alerts = data.alert_counts(settings)
    st.sidebar.caption(
        f"Store: {backend} · {stats.get('articles', 0):,} articles · alerts: {alerts['firing']} firing, {alerts['pending']} pending, {alerts['resolved']} resolved"
    )
    if st.sidebar.button("Reload data", help="Forget cached query answers now."):
        data.clear_caches()
    auth.identity_sidebar(settings)


def navigation() -> st.navigation:
    pages = [
        st.Page(_PAGES / "overview.py", title="Overview", icon=":material/monitoring:", default=True),
        st.Page(_PAGES / "alerts.py", title="Alerts", icon=":material/notifications_active:"),
        st.Page(_PAGES / "explore.py", title="Explore", icon=":material/search:"),
        st.Page(_PAGES / "ticker.py", title="Ticker", icon=":material/show_chart:"),
        st.Page(_PAGES / "story.py", title="Story", icon=":material/article:"),
        st.Page(_PAGES / "model.py", title="Model", icon=":material/model_training:"),
        st.Page(_PAGES / "feedback.py", title="Feedback", icon=":material/rate_review:"),
    ]
    return st.navigation(pages)


def main() -> None:
    st.set_page_config(page_title="NewsPulse", page_icon=":material/monitoring:", layout="wide")
    settings = settings_or_stop()
    if not auth.sign_in_gate(settings):
        return
    stats = store_or_stop(settings)
    page = navigation()
    sidebar(settings, stats)
    run_redacted(page, settings)


def run_redacted(page, settings: Settings) -> None:
    """Run the page with this run's settings and its errors redacted (see
    :func:`newspulse.dashboard.widgets.page_settings` and :func:`~newspulse.dashboard.widgets.redacted_errors`)."""
    from newspulse.dashboard.widgets import hand_over_settings, redacted_errors

    hand_over_settings(settings)
    with redacted_errors(settings):
        page.run()


if __name__ == "__main__":
    main()
