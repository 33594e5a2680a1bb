"""Explore: full-text search with filters, and a card per article.

Every filter is in the link: ``/explore?q=oil+prices&ticker=XOM&label=negative&from=1987-03-01&to=1987-03-31&limit=50``.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import pandas as pd
import streamlit as st

from newspulse.dashboard import data, widgets
from newspulse.schema import LABELS
from newspulse.settings import Settings
from newspulse.store import Filter

ANY = "Any"
_FACET_OPTIONS = 300
_LIMITS = (5, 200)
_DEFAULT_LIMIT = 20


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=timezone.utc)


def facet_choice(settings: Settings, field: str, label: str, column, param: str) -> str | None:
    """A selectbox of the field's values, busiest first; None when 'Any'. A linked value that is
    not among the busiest is offered too (it filters to what the store has for it)."""
    key = f"explore-{field}"
    options = [ANY, *(f.value for f in data.load_facets(settings, field, Filter(), limit=_FACET_OPTIONS))]
    widgets.from_url(key, param, str.strip, ANY)
    if st.session_state[key] not in options:
        options.insert(1, st.session_state[key])
    choice = column.selectbox(label, options, key=key)
    widgets.to_url(param, None if choice == ANY else choice)
    return None if choice == ANY else choice


def _limit(raw: str) -> int | None:
    value = int(raw)
    return value if _LIMITS[0] <= value <= _LIMITS[1] else None


def date_range(window: data.Window, span: data.TimeSpan, column) -> tuple[date, date] | tuple[date] | tuple[()]:
    """Published-between dates (``?from=&to=``); they default to the sidebar's window.

    The widget's key follows the window, so a new sidebar range resets the dates (and drops them
    from the link).
    """
    first = span.first.date() if span.first else None
    last = span.latest.date() if span.latest else None
    # The window may reach back before the oldest article; date_input refuses values out of range.
    start_day = max(window.start.date(), first) if window.start and first else first
    end_day = min(window.end.date(), last) if window.end and last else last
    default = (start_day, end_day)
    key = f"explore-days-{window.label}"
    if key not in st.session_state:
        st.session_state[key] = (_url_day("from", first, last) or start_day, _url_day("to", first, last) or end_day)
    days = tuple(column.date_input("Published between", min_value=first, max_value=last, key=key))
    widgets.to_url("from", days[0].isoformat() if days and days != default else None)
    widgets.to_url("to", days[1].isoformat() if len(days) == 2 and days != default else None)
    return days


def _url_day(param: str, first: date | None, last: date | None) -> date | None:
    """A date from the link, held inside the store's dates."""
    try:
        day = date.fromisoformat(st.query_params.get(param, ""))
    except ValueError:
        return None
    if first and day < first:
        return first
    return min(day, last) if last else day


def filters(settings: Settings, window: data.Window) -> tuple[str, Filter, int]:
    """The search box and filters; every one of them is in the page's link."""
    widgets.from_url("explore-q", "q", str, "")
    text = st.text_input("Search titles, bodies and summaries", key="explore-q", placeholder="e.g. oil prices cut")
    widgets.to_url("q", text.strip())
    cols = st.columns([2, 1, 1, 1, 1, 1])
    days = date_range(window, data.load_span(settings), cols[0])
    ticker = facet_choice(settings, "tickers", "Ticker", cols[1], "ticker")
    topic = facet_choice(settings, "topics", "Topic", cols[2], "topic")
    source = facet_choice(settings, "source", "Source", cols[3], "source")
    widgets.from_url("explore-label", "label", widgets.one_of(list(LABELS)), ANY)
    label = cols[4].selectbox("Label", [ANY, *LABELS], key="explore-label")
    widgets.to_url("label", None if label == ANY else label)
    widgets.from_url("explore-limit", "limit", _limit, _DEFAULT_LIMIT)
    limit = cols[5].number_input("Show", min_value=_LIMITS[0], max_value=_LIMITS[1], step=5, key="explore-limit")
    widgets.to_url("limit", None if limit == _DEFAULT_LIMIT else str(limit))
    start = end = None
    if len(days) == 2:
        start, end = _day_start(days[0]), data.shift(_day_start(days[1]), timedelta(days=1))
    elif len(days) == 1:
        start = _day_start(days[0])
    flt = Filter(start=start, end=end, ticker=ticker, topic=topic, source=source, label=None if label == ANY else label)
    return text.strip(), flt, int(limit)


def results_table(articles: list) -> None:
    """The results as CSV, one row per article (the cards above show the same ones)."""
    frame = pd.DataFrame(
        [
            {
                "published_at": a.published_at, "source": a.source, "title": widgets.one_line(a.title), "label": a.label.value,
                "score": round(a.score, 4), "tickers": " ".join(a.tickers), "topics": " ".join(a.topics), "url": a.url, "id": a.id,
            }
            for a in articles
        ],
        columns=["published_at", "source", "title", "label", "score", "tickers", "topics", "url", "id"],
    )
    widgets.csv_button(frame, "explore", "Download results as CSV")


def results(settings: Settings, text: str, flt: Filter, limit: int) -> None:
    """Search hits, best first; without search words, the most negative matching articles."""
    if text:
        hits = data.load_search(settings, text, flt, limit=limit)
        st.caption(f"{len(hits)} result{'s' if len(hits) != 1 else ''} for “{widgets.escape_md(text)}” (best first).")
        results_table([h.article for h in hits])
        for i, hit in enumerate(hits):
            widgets.article_card(settings, hit.article, key=f"hit-{i}-{hit.article.id}", highlights=hit.highlights, ticker=flt.ticker)
        return
    articles = data.load_top_negative(settings, flt, limit=limit)
    st.caption(f"No search words: the {len(articles)} most negative matching articles.")
    results_table(articles)
    for i, article in enumerate(articles):
        widgets.article_card(settings, article, key=f"neg-{i}-{article.id}", ticker=flt.ticker)


def render() -> None:
    settings = widgets.page_settings()
    st.title("Explore")
    if not widgets.has_articles(settings):
        return
    text, flt, limit = filters(settings, widgets.current_window(settings))
    results(settings, text, flt, limit)


render()
