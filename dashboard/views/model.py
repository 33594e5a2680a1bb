"""Model: which classifier is in production, how good it is on held-out data, and whether live
news drifts away from what it was trained on."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from newspulse.dashboard import charts, data, widgets
from newspulse.schema import LABELS
from newspulse.settings import Settings

NO_MODEL_HELP = (
    "No model is in production yet. Train and promote one with `newspulse model train` "
    "(or `make demo`, which does it for you); the registry is `{registry}`."
)


def metric_splits(card: dict[str, Any]) -> list[str]:
    """Splits the card has full metrics for; ``eval`` (what the gate compares on) first."""
    splits = [k for k, v in card.get("metrics", {}).items() if isinstance(v, dict) and "accuracy" in v]
    return sorted(splits, key=lambda k: (k != "eval", k != "dev", k))


def card_panel(card: dict[str, Any], metrics: dict[str, Any]) -> None:
    cols = st.columns(5)
    cols[0].metric("Production version", card.get("version", "?"))
    for col, key, name in ((cols[1], "accuracy", "Accuracy"), (cols[2], "macro_f1", "Macro F1"), (cols[3], "weighted_f1", "Weighted F1")):
        value = metrics.get(key)
        col.metric(name, "—" if value is None else f"{value:.3f}")
    baseline = (metrics.get("lexicon") or {}).get("macro_f1")
    cols[4].metric(
        "Lexicon macro F1",
        "—" if baseline is None else f"{baseline:.3f}",
        None if baseline is None or metrics.get("macro_f1") is None else f"model {metrics['macro_f1'] - baseline:+.3f}",
        help="Loughran-McDonald word-list baseline on the same rows.",
    )
    gate = card.get("gate") or {}
    st.caption(
        f"Base model {widgets.escape_md(str(card.get('base_model') or 'packaged all-MiniLM-L6-v2'))} · "
        f"created {widgets.escape_md(str(card.get('created_at', '?')))} · code {widgets.escape_md(str(card.get('code_version', '?')))}"
        + (f" · gate: {widgets.escape_md(str(gate.get('reason', '')))}" if gate else "")
    )
    files = card.get("data_files") or []
    if files:
        with st.expander("Training data and parameters"):
            widgets.table(pd.DataFrame(files), "model-training-data")
            st.json(card.get("params", {}), expanded=False)


def class_metrics_panel(metrics: dict[str, Any]) -> None:
    per_class = metrics.get("per_class", {})
    if not per_class:
        st.caption("The card has no per-class metrics.")
        return
    rows = [{"label": label, **{k: per_class[label].get(k) for k in ("precision", "recall", "f1", "support")}} for label in LABELS if label in per_class]
    widgets.table(pd.DataFrame(rows), "model-per-class", column_config={k: st.column_config.NumberColumn(format="%.3f") for k in ("precision", "recall", "f1")})


def confusion_frame(matrix: list[list[int]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"true": t, "predicted": p, "count": int(matrix[i][j])} for i, t in enumerate(LABELS) for j, p in enumerate(LABELS)],
        columns=["true", "predicted", "count"],
    )


def confusion_panel(metrics: dict[str, Any]) -> None:
    matrix = metrics.get("confusion")
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
        st.caption("No training label distribution to compare with" + (" in the model card" if card else "") + ": live counts only.")
        widgets.table(pd.DataFrame([{"label": k, "articles": v} for k, v in live.items()]), "live-labels")
        return
    frame = data.label_drift(train, live)
    psi = float(frame["psi"].sum())
    st.metric("Population stability index", f"{psi:.3f}", help="Σ (live − train) · ln(live / train) over the labels. < 0.1 stable, 0.1–0.25 moderate, > 0.25 significant.")
    st.caption(f"{data.drift_verdict(psi).capitalize()}: the live label mix {'matches' if psi < 0.1 else 'differs from'} the training data ({widgets.escape_md(window.label)}).")
    st.altair_chart(charts.distribution_chart(frame), width="stretch")
    widgets.table(frame, "label-drift", column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("train_share", "live_share", "psi")})


def versions_panel(settings: Settings) -> None:
    """Registry versions (production marked) and how many stored articles each version scored."""
    versions = data.load_model_versions(str(settings.model_registry))
    if versions:
        st.subheader("Model versions")
        widgets.table(
            pd.DataFrame([{k: v[k] for k in ("version", "production", "created_at", "macro_f1", "base_model")} for v in reversed(versions)]),
            "model-versions",
            column_config={"macro_f1": st.column_config.NumberColumn(format="%.3f")},
        )
    scored = data.load_stats(settings).get("model_versions") or {}
    if scored:
        st.caption("Articles in the store by the model version that scored them")
        widgets.table(pd.DataFrame([{"model_version": v, "articles": n} for v, n in scored.items()]), "articles-per-model-version")


def render() -> None:
    settings = widgets.page_settings()
    st.title("Model")
    card = data.load_production_card(str(settings.model_registry))
    if card is None:
        st.info(NO_MODEL_HELP.format(registry=settings.model_registry), icon=":material/model_training:")
    else:
        splits = metric_splits(card)
        split = None
        if splits:
            widgets.from_url("model-split", "split", widgets.one_of(splits), splits[0])
            split = st.segmented_control("Evaluation split", splits, key="model-split")
        split = split or (splits[0] if splits else "")  # deselecting the control keeps the first split
        widgets.to_url("split", split or None)
        metrics = card["metrics"].get(split, {})
        card_panel(card, metrics)
        left, right = st.columns(2)
        with left:
            st.subheader(f"Per class ({split})")
            class_metrics_panel(metrics)
        with right:
            st.subheader(f"Confusion matrix ({split})")
            confusion_panel(metrics)
    if data.load_latest(settings) is not None:
        drift_panel(settings, card)
    versions_panel(settings)


render()
