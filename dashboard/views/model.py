"""Model: which classifier is in production, how good it was on dev, and whether live news drifts
away from what it was trained on."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import charts, data, widgets
from newspulse.schema import LABELS
from newspulse.settings import Settings, load_settings

NO_MODEL_HELP = (
    "No model is in production yet. Train and promote one with `newspulse model train` "
    "(or `make demo`, which does it for you); the registry is `{registry}`."
)


def card_panel(card: dict[str, Any]) -> None:
    dev = card.get("metrics", {}).get("dev", {})
    cols = st.columns(4)
    cols[0].metric("Production version", card.get("version", "?"))
    for col, key, name in ((cols[1], "accuracy", "Dev accuracy"), (cols[2], "macro_f1", "Dev macro F1"), (cols[3], "weighted_f1", "Dev weighted F1")):
        value = dev.get(key)
        col.metric(name, "—" if value is None else f"{value:.3f}")
    st.caption(
        f"Base model {widgets.escape_md(str(card.get('base_model') or 'packaged all-MiniLM-L6-v2'))} · "
        f"created {widgets.escape_md(str(card.get('created_at', '?')))} · code {widgets.escape_md(str(card.get('code_version', '?')))}"
    )
    files = card.get("data_files") or []
    if files:
        with st.expander("Training data and parameters"):
            st.dataframe(pd.DataFrame(files), hide_index=True)
            st.json(card.get("params", {}), expanded=False)


def class_metrics_panel(card: dict[str, Any]) -> None:
    per_class = card.get("metrics", {}).get("dev", {}).get("per_class", {})
    if not per_class:
        st.caption("The card has no per-class metrics.")
        return
    rows = [{"label": label, **{k: per_class[label].get(k) for k in ("precision", "recall", "f1", "support")}} for label in LABELS if label in per_class]
    st.dataframe(pd.DataFrame(rows), hide_index=True, column_config={k: st.column_config.NumberColumn(format="%.3f") for k in ("precision", "recall", "f1")})


def confusion_frame(matrix: list[list[int]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"true": t, "predicted": p, "count": int(matrix[i][j])} for i, t in enumerate(LABELS) for j, p in enumerate(LABELS)],
        columns=["true", "predicted", "count"],
    )


def confusion_panel(card: dict[str, Any]) -> None:
    matrix = card.get("metrics", {}).get("dev", {}).get("confusion")
    if not matrix:
        st.caption("The card has no confusion matrix.")
        return
    st.altair_chart(charts.confusion_chart(confusion_frame(matrix)), width="stretch")


def drift_panel(settings: Settings, card: dict[str, Any] | None) -> None:
    """Live label shares in the sidebar's window against the training distribution (PSI)."""
    st.subheader("Live vs training label distribution")
    window = widgets.current_window(settings)
    live = data.totals(data.load_series(settings, window.filter(), window.bucket)).by_label()
    train = (card or {}).get("label_distribution", {}).get("train", {})
    if not sum(live.values()):
        st.caption("No live article in this window.")
        return
    if not train:
        st.caption("The model card has no training label distribution; showing live shares only.")
        st.dataframe(pd.DataFrame([{"label": k, "articles": v} for k, v in live.items()]), hide_index=True)
        return
    frame = data.label_drift(train, live)
    psi = float(frame["psi"].sum())
    st.metric("Population stability index", f"{psi:.3f}", help="Σ (live − train) · ln(live / train) over the labels. < 0.1 stable, 0.1–0.25 moderate, > 0.25 significant.")
    st.caption(f"{data.drift_verdict(psi).capitalize()}: the live label mix {'matches' if psi < 0.1 else 'differs from'} the training data ({widgets.escape_md(window.label)}).")
    st.altair_chart(charts.distribution_chart(frame), width="stretch")
    st.dataframe(frame, hide_index=True, column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("train_share", "live_share", "psi")})


def versions_panel(settings: Settings) -> None:
    versions = data.load_stats(settings).get("model_versions") or {}
    if versions:
        st.subheader("Model versions in the store")
        st.dataframe(pd.DataFrame([{"model_version": v, "articles": n} for v, n in versions.items()]), hide_index=True)


def render() -> None:
    settings = load_settings()
    st.title("Model")
    card = data.load_production_card(str(settings.model_registry))
    if card is None:
        st.info(NO_MODEL_HELP.format(registry=settings.model_registry), icon=":material/model_training:")
    else:
        card_panel(card)
        left, right = st.columns(2)
        with left:
            st.subheader("Per class (dev)")
            class_metrics_panel(card)
        with right:
            st.subheader("Confusion matrix (dev)")
            confusion_panel(card)
    if data.load_latest(settings) is not None:
        drift_panel(settings, card)
        versions_panel(settings)


render()
