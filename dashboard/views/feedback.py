"""Feedback: correct an article's label. Corrections are stored with the article text, and the
retraining DAG adds them to the training data (the latest correction per article wins).

Deep links: ``/feedback?article=<id>``, ``/feedback?q=<words>``.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from newspulse.dashboard import data, widgets
from newspulse.schema import ScoredArticle
from newspulse.settings import Settings


HISTORY_ROWS = 500  # newest corrections shown (each looks its article up); the CSV has the same rows


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
    settings = widgets.page_settings()
    st.title("Feedback")
    st.caption("Analyst corrections train the next model version.")
    if widgets.has_articles(settings):
        article = widgets.find_article(settings, "fb")
        if article is not None:
            correction_panel(settings, article)
    history_panel(settings)


render()
