"""Altair chart builders. Each takes a frame from :mod:`newspulse.dashboard.data` and returns a chart, so
the pages stay short and the tests can read a chart's data back from what Streamlit sent."""

from __future__ import annotations

import altair as alt
import pandas as pd

from newspulse.schema import LABELS

#: Orange / grey / blue (Okabe-Ito): negative and positive stay apart for colour-blind readers.
LABEL_SCALE = alt.Scale(domain=list(LABELS), range=["#e69f00", "#9e9e9e", "#0072b2"])
_NEG_SCALE = alt.Scale(scheme="oranges", domain=[0, 1])  # one hue, the negative label's: darker = more negative
#: Height of the volume chart: bars, time axis and axis title all fit.
VOLUME_HEIGHT = 200


def sentiment_chart(frame: pd.DataFrame, *, height: int = 260, domain: tuple | None = None) -> alt.Chart:
    """Negative share (left axis, 0…100 %, the shaded area) and sentiment index (right axis,
    −100…100, the line) over time: with independent scales the first layer, the area, takes the
    left axis."""
    x_scale = alt.Scale(domain=[pd.Timestamp(d).isoformat() for d in domain]) if domain else alt.Undefined
    base = alt.Chart(frame).encode(x=alt.X("time:T", title=None, scale=x_scale))
    index = base.mark_line(point=True, color="#1f77b4").encode(
        y=alt.Y("sentiment_index:Q", title="Sentiment index", scale=alt.Scale(domain=[-100, 100])),
        tooltip=[alt.Tooltip("time:T"), alt.Tooltip("sentiment_index:Q", format="+.1f"), alt.Tooltip("articles:Q")],
    )
    negative = base.mark_area(opacity=0.25, color="#e69f00").encode(
        y=alt.Y("negative_share:Q", title="Negative share", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
        tooltip=[alt.Tooltip("time:T"), alt.Tooltip("negative_share:Q", format=".0%"), alt.Tooltip("negative:Q")],
    )
    return alt.layer(negative, index).resolve_scale(y="independent").properties(height=height)


def volume_chart(frame: pd.DataFrame, *, height: int = VOLUME_HEIGHT) -> alt.Chart:
    """Articles per bucket, stacked by label; the legend on the right, so the height goes to the bars.

    Streamlit fits a chart to its height with the axes and legend inside it: 140 px with a legend
    under the bars left the Ticker page's bars about 10 px high and its axis title cut ("Articl")."""
    long = frame.melt(id_vars=["time"], value_vars=list(LABELS), var_name="label", value_name="count")
    return (
        alt.Chart(long)
        .mark_bar()
        .encode(
            x=alt.X("time:T", title=None),
            y=alt.Y("count:Q", title="Articles", stack=True),
            color=alt.Color("label:N", scale=LABEL_SCALE, legend=alt.Legend(orient="right", title=None)),
            order=alt.Order("label:N"),
            tooltip=["time:T", "label:N", "count:Q"],
        )
        .properties(height=height)
    )


def heatmap(frame: pd.DataFrame, *, x: str, y: str = "ticker", x_type: str = "N", height: int | None = None) -> alt.Chart:
    """Negative share per cell, darker = more negative; cell size hints at nothing, tooltip gives volume."""
    rows = max(frame[y].nunique(), 1)
    # Most negative rows first: the order is computed here because Vega-Lite's sort-by-colour
    # aggregates per row differently from the article-weighted share an analyst expects.
    totals = frame.groupby(y)[["negative", "articles"]].sum()
    order = (totals["negative"] / totals["articles"]).sort_values(ascending=False).index.tolist()
    return (
        alt.Chart(frame)
        .mark_rect()
        .encode(
            x=alt.X(f"{x}:{x_type}", title=None, axis=alt.Axis(orient="top", labelAngle=-30, labelOverlap=False, labelLimit=160)),
            y=alt.Y(f"{y}:N", title=None, sort=order, axis=alt.Axis(labelOverlap=False)),
            color=alt.Color("negative_share:Q", scale=_NEG_SCALE, title="Negative share", legend=alt.Legend(format="%", orient="bottom", gradientLength=200)),
            tooltip=[f"{y}:N", alt.Tooltip(f"{x}:{x_type}"), alt.Tooltip("negative_share:Q", format=".0%"), "articles:Q", alt.Tooltip("mean_score:Q", format="+.2f")],
        )
        .properties(height=height or min(36 * rows + 170, 700))  # rows + rotated labels + legend
    )


def confusion_chart(frame: pd.DataFrame) -> alt.Chart:
    """Confusion matrix cells (true × predicted) with their counts written in."""
    base = alt.Chart(frame).encode(
        x=alt.X("predicted:N", sort=list(LABELS), title="Predicted"),
        y=alt.Y("true:N", sort=list(LABELS), title="True"),
    )
    cells = base.mark_rect().encode(color=alt.Color("count:Q", scale=alt.Scale(scheme="blues"), legend=None), tooltip=["true:N", "predicted:N", "count:Q"])
    text = base.mark_text(fontSize=14).encode(text="count:Q")
    return (cells + text).properties(height=240)


def distribution_chart(frame: pd.DataFrame) -> alt.Chart:
    """Training vs live label shares as grouped bars."""
    long = frame.melt(id_vars=["label"], value_vars=["train_share", "live_share"], var_name="where", value_name="share")
    long["where"] = long["where"].str.replace("_share", "", regex=False)
    return (
        alt.Chart(long)
        .mark_bar()
        .encode(
            x=alt.X("label:N", sort=list(LABELS), title=None),
            xOffset="where:N",
            y=alt.Y("share:Q", axis=alt.Axis(format="%"), title="Share"),
            color=alt.Color("where:N", title=None),
            tooltip=["label:N", "where:N", alt.Tooltip("share:Q", format=".1%")],
        )
        .properties(height=240)
    )


def window_chart(frame: pd.DataFrame, *, start, end, context: tuple, height: int = 220) -> alt.Chart:
    """An alert's series over ``context`` (from, to), with the alert's own span shaded."""
    lines = sentiment_chart(frame, height=height, domain=context)
    band = alt.Chart(pd.DataFrame({"start": [start], "end": [end]})).mark_rect(opacity=0.12, color="#ff7f0e").encode(x="start:T", x2="end:T")
    return alt.layer(band, lines).properties(height=height)
