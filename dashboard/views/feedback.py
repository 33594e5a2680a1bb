"""Feedback: correct an article's label. Corrections are stored with the article text, and the
retraining DAG adds them to the training data (the latest correction per article wins).

Deep links: ``/feedback?article=<id>``, ``/feedback?q=<words>``.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from newspulse.dashboard import data, widgets
from newspulse.schema import ScoredArticle
from newspulse.settings import Settings, load_settings


HISTORY_ROWS = 500  # newest corrections shown (each looks its article up); the CSV has the same rows


def find_article(settings: Settings) -> ScoredArticle | None:
    """An article by id (from the link) or by searching for it."""
    widgets.from_url("fb-id", "article", str.strip, "")
    by_id = st.text_input("Article id", key="fb-id").strip()
    widgets.to_url("article", by_id)
    if by_id:
        article = data.load_article(settings, by_id)
        if article is None:
            st.warning(f"No article with id {widgets.escape_md(by_id)}.")
        return article
    widgets.from_url("fb-q", "q", str, "")
    text = st.text_input("…or search for it", key="fb-q", placeholder="words from the headline").strip()
    widgets.to_url("q", text)
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
        format_func=lambda i: f"{widgets.one_line(by_key[i].title)[:120]} ({by_key[i].source}, {widgets.fmt_time(by_key[i].published_at)})",
        key="fb-pick",
    )
    return by_key[choice]


def correction_panel(settings: Settings, article: ScoredArticle) -> None:
    widgets.article_card(settings, article, key="fb-card", correctable=False)
    widgets.feedback_form(settings, article, key="fb-form")


def history_panel(settings: Settings) -> None:
    """Every stored correction, newest first, next to what the model said."""
    feedback = data.load_feedback(settings)
    st.subheader(f"Corrections ({len(feedback):,})")
    if not feedback:
        st.caption("No correction yet. Use “Correct the label” on any article card, or the form above.")
        return
    rows = []
    for fb in sorted(feedback, key=lambda f: f.created_at, reverse=True)[:HISTORY_ROWS]:
        article = data.load_article(settings, fb.article_id)
        rows.append(
            {
                "when": fb.created_at,
                "analyst": fb.analyst,
                "corrected to": fb.label.value,
                "model said": article.label.value if article else None,
                "title": widgets.one_line(article.title) if article else widgets.one_line(fb.text)[:200],
                "note": fb.note,
                "article id": fb.article_id,
            }
        )
    widgets.table(pd.DataFrame(rows), "feedback")


def render() -> None:
    settings = load_settings()
    st.title("Feedback")
    st.caption("Analyst corrections train the next model version.")
    if widgets.has_articles(settings):
        article = find_article(settings)
        if article is not None:
            correction_panel(settings, article)
    history_panel(settings)


render()
