"""Story: one article in full, each company's verdict beside the story's, and the passages behind them.

A story about two companies is often good for one and bad for the other ("Intel slides as AMD
wins a $2 billion order"), so the page shows the story's verdict and every company's own one side
by side, and highlights the sentences each verdict rests on in the story text.

Deep link: ``/story?article=<id>&highlight=AMD`` (``highlight``: ``companies``, the default, one
ticker, or ``story`` for the passages behind the story's own verdict).
"""

from __future__ import annotations

import streamlit as st

from newspulse.dashboard import data, widgets
from newspulse.schema import LABELS, EntityVerdict, ScoredArticle

HIGHLIGHT_KEY = "story-highlight"
HIGHLIGHT_PARAM = "highlight"
COMPANIES = "companies"
STORY = "story"


def company_verdicts(article: ScoredArticle) -> list[EntityVerdict]:
    """One verdict per tagged ticker, in tagging order (the story's verdict stands in for a ticker
    the pipeline gave none), then any verdict about a ticker not among the tags."""
    tagged = [data.verdict_for(article, ticker) for ticker in article.tickers]
    return tagged + [v for v in article.entities if v.ticker not in article.tickers]


def probabilities_text(probabilities: dict) -> str:
    by_name = {getattr(k, "value", k): p for k, p in probabilities.items()}
    return " · ".join(f"{label} {by_name.get(label, 0.0):.0%}" for label in LABELS)


def verdicts_panel(article: ScoredArticle, verdicts: list[EntityVerdict]) -> None:
    """The story's verdict, then each company's with where it comes from and its evidence."""
    st.subheader("Verdicts")
    st.markdown(f"**Story**: {widgets.verdict_badge(article.label.value, article.score)} {probabilities_text(article.probabilities)}")
    if not verdicts:
        st.caption("The story is tagged with no company.")
        return
    if not article.entities:
        st.caption("Scored before company-level verdicts: the story's verdict stands in for every company "
                   "(`newspulse model rescore` gives them their own).")
    for verdict in verdicts:
        st.markdown(
            f"**{widgets.escape_md(verdict.ticker)}**: {widgets.verdict_badge(verdict.label.value, verdict.score)} "
            f"{widgets.escape_md(widgets.basis_text(article, verdict))} · {probabilities_text(verdict.probabilities)}"
        )
        for evidence in verdict.evidence:
            st.markdown(widgets.passage_md(evidence, weight=True))


def highlight_choice(verdicts: list[EntityVerdict]) -> str:
    """Whose passages to highlight: every company's, one company's, or the story verdict's (``?highlight=``)."""
    options = [COMPANIES, *(v.ticker for v in verdicts if v.evidence), STORY]
    widgets.from_url(HIGHLIGHT_KEY, HIGHLIGHT_PARAM, widgets.one_of(options), COMPANIES)
    if st.session_state[HIGHLIGHT_KEY] not in options:  # the previous story's ticker
        st.session_state[HIGHLIGHT_KEY] = COMPANIES
    names = {COMPANIES: "All companies", STORY: "Story verdict"}
    choice = st.segmented_control("Highlight", options, key=HIGHLIGHT_KEY, format_func=lambda o: names.get(o, o)) or COMPANIES
    widgets.to_url(HIGHLIGHT_PARAM, None if choice == COMPANIES else choice)
    return choice


def text_panel(article: ScoredArticle, verdicts: list[EntityVerdict]) -> None:
    """The story text with the chosen verdicts' passages highlighted at their stored offsets."""
    st.subheader("Story text")
    choice = highlight_choice(verdicts)
    if choice == STORY:
        marks = widgets.evidence_marks(article.explanation, "story")
    else:
        marks = [m for v in verdicts if choice in (COMPANIES, v.ticker) for m in widgets.evidence_marks(v.evidence, v.ticker)]
    good, bad = widgets.placed(article.text, marks)
    st.caption(widgets.highlight_legend())
    st.markdown(widgets.marked_markdown(article.text, good))
    if bad:
        st.caption(f"Not highlighted: {len(bad)} of these passages do not match the stored text at their offsets (they are listed with the verdicts).")


def explanation_panel(article: ScoredArticle) -> None:
    """The passages that drove the story's own verdict, heaviest first."""
    st.subheader("Why the story verdict")
    if not article.explanation:
        st.caption("No passages are stored for this story's verdict (it was scored before explanations were kept).")
        return
    for passage in sorted(article.explanation, key=lambda e: e.weight, reverse=True):
        st.markdown(widgets.passage_md(passage, weight=True))


def render() -> None:
    settings = widgets.page_settings()
    st.title("Story")
    if not widgets.has_articles(settings):
        return
    article = widgets.find_article(settings, "story")
    if article is None:
        st.caption("Open a story with **Story** on any article card, or find it here.")
        return
    widgets.article_card(settings, article, key="story-card", story_link=False)
    verdicts = company_verdicts(article)
    left, right = st.columns([3, 2])
    with right:
        verdicts_panel(article, verdicts)
        explanation_panel(article)
    with left:
        text_panel(article, verdicts)


render()
