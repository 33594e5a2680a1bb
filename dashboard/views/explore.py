"""Explore: full-text search with filters, and a card per article."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import streamlit as st

from dashboard import data, widgets
from newspulse.schema import LABELS
from newspulse.settings import Settings, load_settings
from newspulse.store import Filter

ANY = "Any"
_FACET_OPTIONS = 300


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=timezone.utc)


def facet_choice(settings: Settings, field: str, label: str, column) -> str | None:
    """A selectbox of the field's values, busiest first; None when 'Any'."""
    values = [f.value for f in data.load_facets(settings, field, Filter(), limit=_FACET_OPTIONS)]
    choice = column.selectbox(label, [ANY, *values], key=f"explore-{field}")
    return None if choice == ANY else choice


def filters(settings: Settings, window: data.Window) -> tuple[str, Filter, int]:
    """The search box and filters; dates default to the sidebar's window."""
    text = st.text_input("Search titles, bodies and summaries", key="explore-q", placeholder="e.g. oil prices cut")
    cols = st.columns([2, 1, 1, 1, 1, 1])
    span = data.load_span(settings)
    first = span.first.date() if span.first else None
    last = span.latest.date() if span.latest else None
    # The window may reach back before the oldest article; date_input refuses defaults out of range.
    start_day = max(window.start.date(), first) if window.start and first else first
    end_day = min(window.end.date(), last) if window.end and last else last
    default = (start_day, end_day)
    days = cols[0].date_input("Published between", value=default, min_value=first, max_value=last, key=f"explore-days-{window.label}")  # a new sidebar range resets the dates
    ticker = facet_choice(settings, "tickers", "Ticker", cols[1])
    topic = facet_choice(settings, "topics", "Topic", cols[2])
    source = facet_choice(settings, "source", "Source", cols[3])
    label = cols[4].selectbox("Label", [ANY, *LABELS], key="explore-label")
    limit = cols[5].number_input("Show", min_value=5, max_value=200, value=20, step=5, key="explore-limit")
    start = end = None
    if isinstance(days, (tuple, list)) and len(days) == 2:
        start, end = _day_start(days[0]), data.shift(_day_start(days[1]), timedelta(days=1))
    elif isinstance(days, (tuple, list)) and len(days) == 1:
        start = _day_start(days[0])
    flt = Filter(start=start, end=end, ticker=ticker, topic=topic, source=source, label=None if label == ANY else label)
    return text.strip(), flt, int(limit)


def results(settings: Settings, text: str, flt: Filter, limit: int) -> None:
    """Search hits, best first; without search words, the most negative matching articles."""
    if text:
        hits = data.load_search(settings, text, flt, limit=limit)
        st.caption(f"{len(hits)} result{'s' if len(hits) != 1 else ''} for “{widgets.escape_md(text)}” (best first).")
        for i, hit in enumerate(hits):
            widgets.article_card(settings, hit.article, key=f"hit-{i}-{hit.article.id}", highlights=hit.highlights)
        return
    articles = data.load_top_negative(settings, flt, limit=limit)
    st.caption(f"No search words: the {len(articles)} most negative matching articles.")
    for i, article in enumerate(articles):
        widgets.article_card(settings, article, key=f"neg-{i}-{article.id}")


def render() -> None:
    settings = load_settings()
    st.title("Explore")
    if not widgets.has_articles(settings):
        return
    text, flt, limit = filters(settings, widgets.current_window(settings))
    results(settings, text, flt, limit)


render()
