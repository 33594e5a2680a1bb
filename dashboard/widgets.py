"""Building blocks shared by the pages: safe text, article cards, the feedback form, the window.

Article text comes from the open web, so it is never rendered as HTML or as live Markdown:
:func:`escape_md` backslash-escapes every ASCII punctuation character, which makes Markdown (and
the HTML that Markdown would pass through) print literally. Links are only drawn for http(s) URLs.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import streamlit as st
from pydantic import SecretStr
from streamlit.errors import FragmentHandledException

from newspulse.dashboard import auth, data
from newspulse.redact import redact as redact_credentials
from newspulse.schema import LABELS, Alert, EntityVerdict, Evidence, Feedback, ScoredArticle
from newspulse.settings import Settings
from newspulse.store import StoreError

log = logging.getLogger("newspulse.dashboard")

#: Every ASCII punctuation character; CommonMark lets each be backslash-escaped.
_MD_PUNCT = re.compile(r"([!-/:-@\[-`{-~])")
#: Label colours that colour-blind readers tell apart (orange vs blue, not red vs green); every
#: coloured label also carries its name in text.
_LABEL_COLOURS = {"negative": "orange", "neutral": "gray", "positive": "blue"}
#: Background of a passage that is evidence for verdicts with different labels (two companies
#: read differently off one sentence); the tags after it say which is which.
_MIXED_COLOUR = "violet"

RANGE_KEY = "np_range"
RANGE_PARAM = "range"
TZ_KEY = "np_tz"
TZ_PARAM = "tz"
#: The time zones the sidebar offers: UTC and the main markets' (a link may name any other).
TIME_ZONES = ("UTC", "America/New_York", "America/Chicago", "Europe/London", "Europe/Paris", "Europe/Zurich", "Asia/Tokyo", "Asia/Hong_Kong",
              "Asia/Singapore", "Australia/Sydney")
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
    fields = type(settings).model_fields if settings is not None else {}
    values = (getattr(settings, name) for name in fields)
    return redact_credentials(text, [v.get_secret_value() for v in values if isinstance(v, SecretStr)])


#: Where app.py leaves the settings it loaded for this run, for the page it runs.
_RUN_SETTINGS = "np_run_settings"


def hand_over_settings(settings: Settings) -> None:
    """Called by app.py on every run, before the page runs: the page then uses these settings
    (:func:`page_settings`) instead of reading and validating the environment a second time."""
    st.session_state[_RUN_SETTINGS] = settings


def page_settings() -> Settings:
    """The settings app.py loaded for this run. A page runs only through app.py's navigation,
    which hands them over first."""
    try:
        return st.session_state[_RUN_SETTINGS]
    except KeyError:
        raise RuntimeError("dashboard pages run through dashboard/app.py (`newspulse dashboard`), which loads the settings") from None


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
    """A time in the analyst's chosen zone (:func:`tz_selector`; UTC by default), its zone named."""
    if not value:
        return "—"
    if value.tzinfo is None:  # stored times are UTC
        value = value.replace(tzinfo=timezone.utc)
    zone = st.session_state.get(TZ_KEY) or "UTC"
    if zone == "UTC":
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return value.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")


def _zone_from_param(raw: str) -> str | None:
    """A ``?tz=`` value that names a real IANA zone (a stale or edited link falls back to UTC)."""
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return raw


def tz_selector() -> None:
    """The sidebar's time-zone choice for every time the pages print, remembered in the link
    (``?tz=America/New_York``) like the other filters. Any IANA zone works from a link; the list
    offers the main markets' zones."""
    from_url(TZ_KEY, TZ_PARAM, _zone_from_param, "UTC")
    options = list(dict.fromkeys([*TIME_ZONES, st.session_state[TZ_KEY]]))
    st.sidebar.selectbox("Time zone", options, key=TZ_KEY, help="Times on every page are shown in this zone; stored times stay UTC.")
    to_url(TZ_PARAM, None if st.session_state[TZ_KEY] == "UTC" else st.session_state[TZ_KEY])


def sentiment_bar(article: ScoredArticle) -> str:
    """The three probabilities as labelled badges, largest first, then the score.

    Each badge says its label and percentage in words, so neither a screen reader (which read a
    bar of 20 "█" characters as twenty "full block"s) nor a colour-blind reader depends on the
    colour; the colour only repeats the label."""
    probs = {label.value: p for label, p in article.probabilities.items()}
    ranked = sorted(LABELS, key=lambda label: -probs.get(label, 0.0))
    badges = " ".join(f":{_LABEL_COLOURS[label]}-badge[{label} {probs.get(label, 0.0):.0%}]" for label in ranked)
    return f"{badges} score {article.score:+.2f}"


def label_badge(label: str) -> str:
    return f":{_LABEL_COLOURS.get(label, 'gray')}-badge[{label}]"


def label_colour(label: str) -> str:
    """The Streamlit colour name of a label (badges, bars, highlights)."""
    return _LABEL_COLOURS.get(label, "gray")


def verdict_badge(label: str, score: float) -> str:
    """A label badge with the score written in it: the colour never carries the meaning alone."""
    return f":{label_colour(label)}-badge[{label} {score:+.2f}]"


def basis_text(article: ScoredArticle, verdict: EntityVerdict) -> str:
    """Where a company's verdict in ``article`` comes from, in words."""
    if verdict.basis == "mentions":
        return f"from {verdict.mentions} mention{'s' if verdict.mentions != 1 else ''}"
    if not article.entities:
        return "from the story (scored before company-level verdicts)"
    return "from the story (the company is not named in the text)"


def passage_md(evidence: Evidence, *, weight: bool = False) -> str:
    """One passage behind a verdict as a list item: the quote (escaped), its label and score, and
    with ``weight`` how much it counted in the verdict."""
    line = f"- “{escape_md(one_line(evidence.text))}” {verdict_badge(evidence.label.value, evidence.score)}"
    return f"{line} weight {evidence.weight:.2f}" if weight else line


@dataclass(frozen=True)
class Mark:
    """A passage to highlight in a story: character offsets into ``Article.text``, the passage as
    the verdict quotes it, the label that colours it and the tag written after it (``AMD positive +0.80``)."""

    start: int
    end: int
    quote: str
    label: str
    tag: str


def evidence_marks(evidence: Sequence[Evidence], owner: str) -> list[Mark]:
    """Marks for the passages behind one verdict; ``owner`` names it in each tag (a ticker, "story")."""
    return [Mark(e.start, e.end, e.text, e.label.value, f"{owner} {e.label.value} {e.score:+.2f}") for e in evidence]


def placed(text: str, marks: Sequence[Mark]) -> tuple[list[Mark], list[Mark]]:
    """The marks whose offsets point at the passage they quote (whitespace aside), and the others.

    Offsets are stored with the verdict; a record whose text changed since (or a faulty writer)
    would otherwise highlight the wrong words, so such marks are listed, not highlighted."""
    good, bad = [], []
    for mark in marks:
        inside = 0 <= mark.start < mark.end <= len(text)
        (good if inside and one_line(text[mark.start:mark.end]) == one_line(mark.quote) else bad).append(mark)
    return good, bad


def highlight_legend() -> str:
    """What the highlight colours mean, in words (the tags after each passage say it too)."""
    names = " · ".join(f"{label} ({label_colour(label)})" for label in LABELS)
    return f"Highlights: {names} · read differently by two companies ({_MIXED_COLOUR}). The tag after a passage names whose verdict it drove and how."


#: A line break starts a paragraph: the title ends with a blank line, and bodies (the Reuters
#: corpus, crawled pages) put each paragraph on one line.
_PARAGRAPH_BREAK = re.compile(r"\s*\n\s*")


def marked_markdown(text: str, marks: Sequence[Mark]) -> str:
    """The story as Markdown that shows every character literally, with the marked passages on a
    background of their label's colour and each mark's tag as a badge where it ends.

    Overlapping marks are expected: one sentence is often evidence for two companies, read
    differently ("Intel slides as AMD wins"). The text is cut at every mark boundary; a piece
    covered by marks of one label takes that label's colour, a piece covered by different labels
    the mixed colour, and the tags say which company read it which way. Line breaks become
    paragraph breaks, other runs of white space one space, and each piece is escaped on its own,
    so hostile text stays text inside and outside a highlight.
    """
    cuts = sorted({0, len(text), *(m.start for m in marks), *(m.end for m in marks)})
    out: list[str] = []
    for start, end in zip(cuts, cuts[1:]):
        covering = [m for m in marks if m.start <= start and end <= m.end]
        labels = {m.label for m in covering}
        colour = None if not covering else label_colour(labels.pop()) if len(labels) == 1 else _MIXED_COLOUR
        pieces = _PARAGRAPH_BREAK.split(text[start:end])
        for i, piece in enumerate(pieces):
            if i:
                out.append("\n\n")
            flat = re.sub(r"\s+", " ", piece)
            if colour and flat.strip():
                lead, core, trail = flat[: len(flat) - len(flat.lstrip())], flat.strip(), flat[len(flat.rstrip()):]
                out.append(f"{lead}:{colour}-background[{escape_md(core)}]{trail}")
            else:
                out.append(escape_md(flat))
        tags = [f":{label_colour(m.label)}-badge[{escape_md(m.tag)}]" for m in marks if m.end == end]
        if tags:
            out.append(" " + " ".join(tags) + " ")
    return re.sub(r" *\n\n *", "\n\n", "".join(out)).strip()


def article_card(
    settings: Settings, article: ScoredArticle, *, key: str, highlights: list[str] | None = None, correctable: bool = True,
    ticker: str | None = None, story_link: bool = True,
) -> None:
    """Title, time/source/label, sentiment bar, summary, tickers, topics, link, label correction.

    With ``ticker``, the card also shows that company's own verdict, which may differ from the
    story's (a page about one company ranks and colours stories by it)."""
    with st.container(border=True):
        st.markdown(f"**{escape_md(one_line(article.title))}**")
        st.markdown(
            f"{label_badge(article.label.value)} {escape_md(article.source)} · {fmt_time(article.published_at)}"
            f" · model {escape_md(article.model_version)}"
        )
        st.markdown(sentiment_bar(article))
        if ticker:
            verdict = data.verdict_for(article, ticker)
            st.markdown(f"**{escape_md(ticker)}**: {verdict_badge(verdict.label.value, verdict.score)} {escape_md(basis_text(article, verdict))}")
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
        cols = st.columns([1, 1, 3])
        url = safe_url(article.url)
        if url:
            cols[0].link_button("Source", url)
        if story_link:
            story_page_link(article, cols[1])
        if correctable:
            with cols[2].popover("Correct the label", key=f"{key}-pop"):
                feedback_form(settings, article, key=f"{key}-fb")


STORY_PAGE = "views/story.py"


def story_page_link(article: ScoredArticle, where=st) -> None:
    """A link to the story's drill-down (``/story?article=<id>``): every company's verdict, its evidence."""
    where.page_link(STORY_PAGE, label="Story", icon=":material/article:", query_params={"article": article.id},
                    help="Each company's verdict beside the story's, with the sentences behind them.")


def find_article(settings: Settings, key: str) -> ScoredArticle | None:
    """An article by id (``?article=<id>``) or by searching for it (``?q=``); ``key`` prefixes
    the widgets' keys, so each page keeps its own choice."""
    from_url(f"{key}-id", "article", str.strip, "")
    by_id = st.text_input("Article id", key=f"{key}-id").strip()
    to_url("article", by_id)
    if by_id:
        article = data.load_article(settings, by_id)
        if article is None:
            st.warning(f"No article with id {escape_md(by_id)}.")
        return article
    from_url(f"{key}-q", "q", str, "")
    text = st.text_input("…or search for it", key=f"{key}-q", placeholder="words from the headline").strip()
    to_url("q", text)
    if not text:
        return None
    hits = data.load_search(settings, text, data.Filter(), limit=20)
    if not hits:
        st.caption("No match.")
        return None
    by_key = {h.article.id: h.article for h in hits}
    choice = st.selectbox(
        "Article",
        list(by_key),
        format_func=lambda i: f"{one_line(by_key[i].title)[:120]} ({by_key[i].source}, {fmt_time(by_key[i].published_at)})",
        key=f"{key}-pick",
    )
    return by_key[choice]


def feedback_form(settings: Settings, article: ScoredArticle, *, key: str) -> None:
    """An analyst's label correction, stored as Feedback for the next retraining."""
    with st.form(key=key, clear_on_submit=False, border=False):
        st.caption(f"Model says **{article.label.value}**. What is it really?")
        label = st.radio("Correct label", LABELS, index=LABELS.index(article.label.value), horizontal=True, key=f"{key}-label")
        note = st.text_input("Note (optional)", key=f"{key}-note")
        analyst = auth.identity()
        st.caption(f"Recorded as {escape_md(analyst)}.")
        if st.form_submit_button("Save correction"):
            try:
                save_feedback(settings, article, label=label, analyst=analyst, note=note)
            except StoreError as err:  # locked, full, unreachable: the form keeps its values for a retry
                log.warning("saving a correction failed: %s", redact(str(err), settings))
                st.error("The correction was not saved: the store is unavailable right now (busy or unreachable). Try again in a moment.")
            else:
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
        help="Ends at the newest article in the store (a replay of old news ends at its last story), never later than now.",
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
    st.download_button(label, safe_csv(frame), file_name=f"newspulse-{name}.csv", mime="text/csv",
                       key=f"csv-{name}", icon=":material/download:", on_click="ignore")


#: First characters that make a spreadsheet read a cell as a formula (OWASP, CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_csv(frame: pd.DataFrame) -> str:
    """``frame`` as CSV with every text cell that a spreadsheet would run as a formula prefixed
    with ``'``, as OWASP's CSV-injection guidance says: titles, sources and tickers come from
    feeds anyone can publish, and ``=HYPERLINK(…)`` or ``+cmd|…`` in an analyst's Excel must
    stay text. Numbers (a negative sentiment) are left as they are."""
    out = frame.copy()
    for column, values in frame.items():
        if pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values):
            out[column] = values.map(_neutralised)
    return out.to_csv(index=False, lineterminator="\r\n")  # RFC 4180; a cell holding a bare \r is then quoted too


def _neutralised(cell: object) -> object:
    return "'" + cell if isinstance(cell, str) and cell.startswith(FORMULA_STARTS) else cell


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
