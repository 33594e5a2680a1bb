"""Building blocks shared by the pages: safe text, article cards, the feedback form, the window.

Article text comes from the open web, so it is never rendered as HTML or as live Markdown:
:func:`escape_md` backslash-escapes every ASCII punctuation character, which makes Markdown (and
the HTML that Markdown would pass through) print literally. Links are only drawn for http(s) URLs.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from urllib.parse import urlsplit

import pandas as pd
import streamlit as st
from pydantic import SecretStr
from streamlit.errors import FragmentHandledException

from newspulse.dashboard import auth, data
from newspulse.redact import MASK
from newspulse.redact import redact as redact_credentials
from newspulse.schema import LABELS, Alert, Feedback, ScoredArticle
from newspulse.settings import Settings

log = logging.getLogger("newspulse.dashboard")

#: Every ASCII punctuation character; CommonMark lets each be backslash-escaped.
_MD_PUNCT = re.compile(r"([!-/:-@\[-`{-~])")
_LABEL_COLOURS = {"negative": "red", "neutral": "gray", "positive": "green"}
_BAR_CELLS = 20

RANGE_KEY = "np_range"
RANGE_PARAM = "range"
#: Query parameters that only make sense within one time range (Explore's dates): a new range
#: in the sidebar drops them, as it resets those widgets.
RANGE_BOUND_PARAMS = ("from", "to")
EMPTY_STORE_HELP = (
    "The store has no articles yet. Fill it with one of:\n\n"
    "- `make demo`: trains the classifier if needed and replays the Reuters 1987 corpus\n"
    "- `newspulse replay --file data/news/reuters21578.csv.gz`: the same replay, into this store\n"
    "- `newspulse crawl`: live RSS/Atom feeds\n"
    "- `newspulse process --source kafka`: score what the crawler or replay put on Kafka\n\n"
    "The Overview refreshes itself once articles arrive."
)


def escape_md(text: str) -> str:
    """Text that Streamlit's Markdown shows exactly as written (no markup, no HTML, no emoji codes)."""
    return _MD_PUNCT.sub(r"\\\1", text)




def redact(text: str, settings: Settings | None = None) -> str:
    """The text with URL credentials (:func:`newspulse.redact.redact`) and every configured secret
    value replaced by ``***``.

    Error messages from a store client may quote the URL it was given, password included; every
    message the dashboard shows about the store or the settings passes through here first.
    """
    text = redact_credentials(text)
    if settings is not None:
        for name in type(settings).model_fields:
            value = getattr(settings, name)
            if isinstance(value, SecretStr) and len(value.get_secret_value()) >= 4:
                text = text.replace(value.get_secret_value(), MASK)
    return text


@contextmanager
def redacted_errors(settings: Settings) -> Iterator[None]:
    """Errors raised inside are logged and shown with their credentials redacted.

    Streamlit prints an uncaught exception's message in the browser, and a store client's
    exception can quote the URL it was given, password included. The error is raised again as a
    plain RuntimeError carrying only the redacted text, so it is still an error (and AppTest still
    sees it). Wrap each page and each fragment (a fragment shows its own errors).
    """
    try:
        yield
    except FragmentHandledException:
        raise  # a fragment inside already showed it, redacted
    except Exception as err:
        log.error("dashboard page failed: %s", redact("".join(traceback.format_exception(err)), settings))
        raise RuntimeError(redact(f"{type(err).__name__}: {err}", settings)) from None


def one_line(text: str) -> str:
    return " ".join(text.split())


def highlight_md(snippet: str) -> str:
    """A search snippet with ``**`` around matches: the matches bold, everything else escaped."""
    parts = one_line(snippet).split("**")
    out = []
    for i, part in enumerate(parts):
        escaped = escape_md(part)
        out.append(f"**{escaped}**" if i % 2 == 1 and escaped else escaped)
    return "".join(out)


def safe_url(url: str | None) -> str | None:
    """The URL if it is a plain web link; ``javascript:`` and other schemes are not linked."""
    if not url:
        return None
    parts = urlsplit(url)
    return url if parts.scheme in ("http", "https") and parts.netloc else None


def fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "—"


def sentiment_bar(article: ScoredArticle) -> str:
    """A Markdown bar of the three probabilities, red/grey/green, with the numbers beside it."""
    probs = {label.value: p for label, p in article.probabilities.items()}
    cells = {label: round(probs.get(label, 0.0) * _BAR_CELLS) for label in LABELS}
    # Rounding can leave the bar a cell short or long; the largest class absorbs the difference.
    top = max(LABELS, key=lambda label: probs.get(label, 0.0))
    cells[top] += _BAR_CELLS - sum(cells.values())
    bar = "".join(f":{_LABEL_COLOURS[label]}[{'█' * n}]" for label, n in cells.items() if n > 0)
    numbers = " · ".join(f"{label} {probs.get(label, 0.0):.0%}" for label in LABELS)
    return f"{bar} score {article.score:+.2f} ({numbers})"


def label_badge(label: str) -> str:
    return f":{_LABEL_COLOURS.get(label, 'gray')}-badge[{label}]"


def article_card(
    settings: Settings, article: ScoredArticle, *, key: str, highlights: list[str] | None = None, correctable: bool = True
) -> None:
    """Title, time/source/label, sentiment bar, summary, tickers, topics, link, label correction."""
    with st.container(border=True):
        st.markdown(f"**{escape_md(one_line(article.title))}**")
        st.markdown(
            f"{label_badge(article.label.value)} {escape_md(article.source)} · {fmt_time(article.published_at)}"
            f" · model {escape_md(article.model_version)}"
        )
        st.markdown(sentiment_bar(article))
        if highlights:
            st.markdown(" … ".join(highlight_md(h) for h in highlights))
        if article.summary:
            st.markdown(escape_md(one_line(article.summary)))
        tags = []
        if article.tickers:
            tags.append("Tickers: " + ", ".join(article.tickers))
        if article.topics:
            tags.append("Topics: " + ", ".join(article.topics))
        if tags:
            st.caption(escape_md(" · ".join(tags)))
        cols = st.columns([1, 3])
        url = safe_url(article.url)
        if url:
            cols[0].link_button("Source", url)
        if correctable:
            with cols[1].popover("Correct the label", key=f"{key}-pop"):
                feedback_form(settings, article, key=f"{key}-fb")


def feedback_form(settings: Settings, article: ScoredArticle, *, key: str) -> None:
    """An analyst's label correction, stored as Feedback for the next retraining."""
    with st.form(key=key, clear_on_submit=False, border=False):
        st.caption(f"Model says **{article.label.value}**. What is it really?")
        label = st.radio("Correct label", LABELS, index=LABELS.index(article.label.value), horizontal=True, key=f"{key}-label")
        note = st.text_input("Note (optional)", key=f"{key}-note")
        analyst = auth.identity()
        st.caption(f"Recorded as {escape_md(analyst)}.")
        if st.form_submit_button("Save correction"):
            save_feedback(settings, article, label=label, analyst=analyst, note=note)
            st.success(f"Saved: {label}. The next retraining will use it.")


def save_feedback(settings: Settings, article: ScoredArticle, *, label: str, analyst: str, note: str = "") -> Feedback:
    feedback = Feedback(article_id=article.id, label=label, text=article.text, analyst=analyst, note=note.strip())
    data.get_store(settings).add_feedback(feedback)
    data.clear_caches()
    return feedback


def empty_store_notice() -> None:
    st.info(EMPTY_STORE_HELP, icon="📭")


def has_articles(settings: Settings) -> bool:
    """Whether the store holds any article; if not, say how to get some."""
    if data.load_latest(settings) is None:
        empty_store_notice()
        return False
    return True


def range_selector() -> None:
    """The sidebar's time-range choice, shared by all pages through Session State and the URL."""
    from_url(RANGE_KEY, RANGE_PARAM, _range_from_slug, data.DEFAULT_RANGE)
    st.sidebar.selectbox(
        "Time range", list(data.RANGES), key=RANGE_KEY, on_change=_drop_range_bound_params,
        help="Anchored at the newest article in the store, not at the wall clock.",
    )
    to_url(RANGE_PARAM, data.RANGE_SLUGS[st.session_state[RANGE_KEY]])


def _range_from_slug(slug: str) -> str | None:
    return next((label for label, s in data.RANGE_SLUGS.items() if s == slug), None)


def _drop_range_bound_params() -> None:
    for param in RANGE_BOUND_PARAMS:
        st.query_params.pop(param, None)


# --- shareable views: widget state in the URL -------------------------------------------------


def from_url(key: str, param: str, parse: Callable[[str], object | None], default: object = None) -> None:
    """Give a widget its first value: from the link's ``?param=`` when it parses, else ``default``.

    Called before the widget is drawn, and only while the widget has no state, so the analyst's
    later changes win. Widgets seeded here must not also get ``value=``/``index=``. ``parse``
    returns None (or raises ValueError) for a value the widget cannot take: a stale or edited
    link then falls back to the default instead of failing.
    """
    if key in st.session_state:
        return
    value = None
    raw = st.query_params.get(param)
    if raw is not None:
        try:
            value = parse(raw)
        except ValueError:
            value = None
    st.session_state[key] = default if value is None else value


def to_url(param: str, value: str | None) -> None:
    """Write a widget's value into the link (None or empty: the parameter is dropped)."""
    if value is None or value == "":
        st.query_params.pop(param, None)
    elif st.query_params.get(param) != value:
        st.query_params[param] = value


def one_of(options: list) -> Callable[[str], object | None]:
    """A ``from_url`` parser that accepts only one of the widget's options."""
    by_text = {str(o): o for o in options}
    return by_text.get


def table(frame: pd.DataFrame, name: str, **dataframe_args) -> None:
    """A table, and a button that downloads exactly its rows as ``newspulse-<name>.csv``."""
    st.dataframe(frame, hide_index=True, **dataframe_args)
    csv_button(frame, name)


def csv_button(frame: pd.DataFrame, name: str, label: str = "Download CSV") -> None:
    """Download ``frame`` as ``newspulse-<name>.csv`` (no rerun: the page stays as it is)."""
    st.download_button(label, frame.to_csv(index=False), file_name=f"newspulse-{name}.csv", mime="text/csv",
                       key=f"csv-{name}", icon=":material/download:", on_click="ignore")


def current_window(settings: Settings) -> data.Window:
    """The window for the chosen range, recomputed on each run so refreshes follow new data."""
    choice = st.session_state.get(RANGE_KEY, data.DEFAULT_RANGE)
    span = data.load_span(settings)
    return data.make_window(choice, span.first, span.latest)


def window_caption(window: data.Window) -> None:
    st.caption(f"{window.label}: {fmt_time(window.start)} → {fmt_time(window.end)} · buckets of {data.bucket_label(window.bucket)}")


def headline_metrics(now: data.Totals, before: data.Totals | None, firing: list[Alert]) -> None:
    """Volume, sentiment index, negative share and firing alerts, with change vs the previous period."""
    cols = st.columns(4)

    def delta(cur: float | None, prev: float | None, scale: float = 1.0, fmt: str = "{:+.1f}") -> str | None:
        if cur is None or prev is None:
            return None
        return fmt.format((cur - prev) * scale)

    prev_articles = before.articles if before and before.articles else None
    cols[0].metric("Articles", f"{now.articles:,}", delta(now.articles, prev_articles, fmt="{:+,.0f}"))
    cols[1].metric(
        "Sentiment index",
        "—" if now.sentiment_index is None else f"{now.sentiment_index:+.1f}",
        delta(now.sentiment_index, before.sentiment_index if before else None),
        help="Mean of P(positive) − P(negative) over the window, × 100 (−100 … +100).",
    )
    cols[2].metric(
        "Negative share",
        "—" if now.negative_share is None else f"{now.negative_share:.1%}",
        delta(now.negative_share, before.negative_share if before else None, 100, "{:+.1f} pts"),
        delta_color="inverse",
    )
    cols[3].metric("Alerts firing", len(firing), help="Alerts whose scope is over its threshold right now.")
