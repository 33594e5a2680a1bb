"""Ticker view: one ticker's sentiment timeline, why it is negative, and the articles that moved it.

Everything here follows the company's own verdict in each story (its entity verdict; the story's
for records scored before those existed): the store's per-ticker timeline counts it, and the
stories are ranked and shown by it, so a story that is bad for a rival does not count against
this company.

Deep link: ``/ticker?ticker=XOM``.
"""

from __future__ import annotations

import streamlit as st

from newspulse.dashboard import charts, data, widgets
from newspulse.settings import Settings

_OPTIONS = 500
_WHY_STORIES = 5
_STORY_PASSAGES = 2
TICKER_KEY = "ticker-pick"


def ticker_picker(settings: Settings, window: data.Window) -> str | None:
    """Tickers of the window, busiest first; ``?ticker=`` preselects one (even one not in it)."""
    tickers = [f.value for f in data.load_facets(settings, "tickers", window.filter(), limit=_OPTIONS)]
    if not tickers and "ticker" not in st.query_params:
        st.info("No article in this window is tagged with a ticker. Widen the time range in the sidebar.")
        return None
    widgets.from_url(TICKER_KEY, "ticker", str.strip, tickers[0] if tickers else None)
    if st.session_state[TICKER_KEY] not in tickers:
        tickers.insert(0, st.session_state[TICKER_KEY])
    choice = st.selectbox("Ticker", tickers, key=TICKER_KEY)
    widgets.to_url("ticker", choice)
    return choice


def timeline(settings: Settings, ticker: str, window: data.Window) -> list[data.Bucket]:
    buckets = data.load_series(settings, window.filter(ticker=ticker), window.bucket)
    firing = [a for a in data.load_alerts(settings, status="firing") if a.scope == f"ticker:{ticker}"]
    widgets.headline_metrics(data.totals(buckets), _previous_totals(settings, ticker, window), firing)
    widgets.window_caption(window)
    if not buckets:
        st.caption(f"No {widgets.escape_md(ticker)} article in this window.")
        return buckets
    frame = data.series_frame(buckets)
    st.altair_chart(charts.sentiment_chart(frame), width="stretch")
    st.altair_chart(charts.volume_chart(frame), width="stretch")
    return buckets


def _previous_totals(settings: Settings, ticker: str, window: data.Window) -> data.Totals | None:
    previous = window.previous()
    if previous is None:
        return None
    return data.totals(data.load_series(settings, previous.filter(ticker=ticker), previous.bucket))


def moves_panel(settings: Settings, ticker: str, buckets: list[data.Bucket], window: data.Window) -> None:
    """The biggest jumps of the index and, for each, the stories pushing in its direction."""
    st.subheader("What moved it")
    moves = data.biggest_moves(buckets, window.bucket)
    if not moves:
        st.caption("Not enough history in this window to see a move.")
        return
    for i, move in enumerate(moves):
        direction = "up" if move.change > 0 else "down"
        st.markdown(f"**{widgets.fmt_time(move.start)}**: index {direction} {abs(move.change):.0f} points on {move.articles} article{'s' if move.articles != 1 else ''}")
        articles = data.load_articles(settings, data.Filter(start=move.start, end=move.end, ticker=ticker))
        for article in data.drivers_of(move, articles, ticker=ticker):
            widgets.article_card(settings, article, key=f"move-{i}-{article.id}", ticker=ticker)


def why_panel(settings: Settings, ticker: str, buckets: list[data.Bucket], window: data.Window) -> None:
    """The evidence behind the newest stories that are negative about the company."""
    st.subheader("Why negative")
    found = data.latest_negative(settings, ticker, buckets, window.bucket, limit=_WHY_STORIES)
    if not found:
        st.caption(f"No story in this window is negative about {widgets.escape_md(ticker)}.")
        return
    st.caption(f"The newest {len(found)} stories negative about {widgets.escape_md(ticker)}, with the sentences behind each verdict.")
    for article, verdict in found:
        with st.container(border=True):
            st.markdown(
                f"{widgets.verdict_badge(verdict.label.value, verdict.score)} **{widgets.escape_md(widgets.one_line(article.title))}** · "
                f"{widgets.escape_md(article.source)} · {widgets.fmt_time(article.published_at)}"
            )
            if verdict.evidence:
                for evidence in verdict.evidence:
                    st.markdown(widgets.passage_md(evidence))
            else:
                passages = sorted(article.explanation, key=lambda e: e.weight, reverse=True)[:_STORY_PASSAGES]
                st.caption(f"{widgets.escape_md(ticker)}: {widgets.escape_md(widgets.basis_text(article, verdict))}"
                           + (", driven by:" if passages else "."))
                for passage in passages:
                    st.markdown(widgets.passage_md(passage))
            widgets.story_page_link(article)


def negative_panel(settings: Settings, ticker: str, window: data.Window) -> None:
    """The stories most negative about the company (the store ranks a ticker's stories by the
    company's own score, so a story bad only for a rival is not among them)."""
    st.subheader("Most negative stories")
    for article in data.load_top_negative(settings, window.filter(ticker=ticker), limit=5):
        widgets.article_card(settings, article, key=f"tneg-{article.id}", ticker=ticker)


def render() -> None:
    settings = widgets.page_settings()
    st.title("Ticker")
    if not widgets.has_articles(settings):
        return
    window = widgets.current_window(settings)
    ticker = ticker_picker(settings, window)
    if ticker is None:
        return
    buckets = timeline(settings, ticker, window)
    why_panel(settings, ticker, buckets, window)
    left, right = st.columns(2)
    with left:
        moves_panel(settings, ticker, buckets, window)
    with right:
        negative_panel(settings, ticker, window)


render()
