"""The dashboard, page by page, with Streamlit's AppTest on a seeded SQLite store.

The store is seeded with 1987 articles (like the Reuters replay), so these tests also check that
the time range follows the data and not the wall clock. Expected numbers are computed here from
the seeded articles, independently of the dashboard's own code.
"""

from __future__ import annotations

import json

import io
import math
import random
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from newspulse.schema import Alert, AlertStatus, Article, DriverArticle, EntityVerdict, Evidence, Feedback, Label, ScoredArticle
from newspulse.settings import load_settings
from newspulse.store.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "dashboard" / "app.py"

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
XSS_TITLE = f"Crash fears {SCRIPT} and {IMG}"
LATEST = datetime(1987, 10, 20, 12, 0, tzinfo=timezone.utc)
TICKERS = ("XOM", "IBM", "GM", "TXN")
TOPIC_OF = {"XOM": "oil", "IBM": "computers", "GM": "autos", "TXN": "chips"}
SOURCES = ("reuters", "wire-b", "blog-c")
LABEL_NAMES = ("negative", "neutral", "positive")


def make_article(i: int, when: datetime, ticker: str, label: str, title: str | None = None, confidence: float = 0.8) -> ScoredArticle:
    article = Article(
        published_at=when,
        source=SOURCES[i % 3],
        title=title or f"{ticker} story {i} on {TOPIC_OF[ticker]}",
        body=f"Body of story {i}: {ticker} shares moved on the news.",
        url=f"https://news.example.com/{i}",
        tickers=[ticker],
        topics=[TOPIC_OF[ticker], "markets"],
    )
    rest = (1 - confidence) / 2
    probs = {name: confidence if name == label else rest for name in LABEL_NAMES}
    return ScoredArticle.from_article(article, probs, summary=f"Summary of story {i}.", model_version="v-test")


def seed_store(path: Path) -> dict:
    store = SQLiteStore(path)
    try:
        return seed(store)
    finally:
        store.close()


def seed(store) -> dict:
    """720 articles every 90 minutes back from LATEST (45 days; XOM turning negative in the last
    week), one article with an HTML/script headline, one firing alert on XOM (driven by it) and one
    resolved market alert. Deterministic: labels and confidences come from a seeded generator."""
    rng = random.Random(1987)
    articles = []
    for i in range(720):
        ticker = TICKERS[i % 4]
        p_neg = 0.2 + 0.1 * math.sin(i / 40) + (0.5 if ticker == "XOM" and i < 120 else 0.0)
        label = rng.choices(LABEL_NAMES, weights=(p_neg, (1 - p_neg) * 0.5, (1 - p_neg) * 0.5))[0]
        articles.append(make_article(i, LATEST - timedelta(minutes=90 * i), ticker, label, confidence=rng.uniform(0.5, 0.95)))
    xss = make_article(999, LATEST - timedelta(minutes=45), "XOM", "negative", title=XSS_TITLE, confidence=0.97)
    articles.append(xss)
    assert store.upsert_articles(articles).ok
    firing = Alert(
        id="alert-xom", rule="ticker-negative", scope="ticker:XOM", status=AlertStatus.firing, severity="critical",
        window_minutes=60, started_at=LATEST - timedelta(hours=2), updated_at=LATEST, magnitude=6.5, baseline=0.2,
        value=0.9, volume=6, message="XOM negative share 90% vs 20% baseline",
        drivers=[DriverArticle(id=xss.id, title=xss.title, score=xss.score, published_at=xss.published_at)],
    )
    resolved = Alert(
        id="alert-market", rule="market-negative", scope="market", status=AlertStatus.resolved, window_minutes=60,
        started_at=LATEST - timedelta(days=5), updated_at=LATEST - timedelta(days=4), resolved_at=LATEST - timedelta(days=4),
        magnitude=3.2, baseline=0.3, value=0.55, volume=25,
    )
    store.upsert_alerts([firing, resolved])
    return {"articles": articles, "xss": xss, "firing": firing, "resolved": resolved}


TWO_COMPANY_TITLE = "Exxon shares slide as GM wins a $2 billion fleet order"
GOOD_FOR_GM = "General Motors won a $2 billion fleet order from the army on Tuesday."
HOSTILE_FOR_XOM = f"Exxon warned of {SCRIPT} losses {IMG} after it lost the fuel deal."


def evidence(text: str, passage: str, label: str, score: float, weight: float) -> Evidence:
    start = text.index(passage)
    return Evidence(start=start, end=start + len(passage), text=passage, label=label, score=score, weight=weight)


def two_company_story(when: datetime = LATEST - timedelta(minutes=10)) -> ScoredArticle:
    """A story bad for XOM and good for GM whose story-level verdict is negative, tagged with TXN
    too (never named: its verdict stands in from the story). XOM's evidence carries hostile HTML."""
    article = Article(
        published_at=when, source="reuters", title=TWO_COMPANY_TITLE,
        body=f"{GOOD_FOR_GM}\n{HOSTILE_FOR_XOM}\n\nAnalysts were split on the sector.",
        url="https://news.example.com/two-company", tickers=["XOM", "GM", "TXN"], topics=["oil", "autos"],
    )
    scored = ScoredArticle.from_article(article, {"negative": 0.7, "neutral": 0.2, "positive": 0.1}, summary="Exxon slides, GM wins.", model_version="v-test")
    text = scored.text
    xom = EntityVerdict(ticker="XOM", label="negative", probabilities={"negative": 0.9, "neutral": 0.06, "positive": 0.04}, score=-0.86,
                        basis="mentions", mentions=2, evidence=[evidence(text, HOSTILE_FOR_XOM, "negative", -0.9, 0.6),
                                                              evidence(text, TWO_COMPANY_TITLE, "negative", -0.8, 0.4)])
    gm = EntityVerdict(ticker="GM", label="positive", probabilities={"negative": 0.05, "neutral": 0.1, "positive": 0.85}, score=0.8,
                       basis="mentions", mentions=2, evidence=[evidence(text, GOOD_FOR_GM, "positive", 0.85, 0.55),
                                                             evidence(text, TWO_COMPANY_TITLE, "positive", 0.75, 0.45)])
    txn = EntityVerdict(ticker="TXN", label="negative", probabilities=scored.probabilities, score=scored.score, basis="story")
    explanation = [evidence(text, TWO_COMPANY_TITLE, "negative", -0.7, 0.7), evidence(text, HOSTILE_FOR_XOM, "negative", -0.9, 0.3)]
    return scored.model_copy(update={"entities": [xom, gm, txn], "explanation": explanation})


def in_window(articles: list[ScoredArticle], days: int, ticker: str | None = None) -> list[ScoredArticle]:
    end = LATEST + timedelta(seconds=1)
    return [a for a in articles if end - timedelta(days=days) <= a.published_at < end and (ticker is None or ticker in a.tickers)]


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def dash_env(np_env, monkeypatch):
    """Fresh settings and empty Streamlit caches (they are process-wide) for each test."""
    import streamlit as st

    monkeypatch.setenv("NEWSPULSE_ALERT_SILENCES", str(np_env / "silences.json"))
    monkeypatch.setenv("NEWSPULSE_DASHBOARD_REFRESH_S", "0")
    st.cache_data.clear()
    st.cache_resource.clear()
    yield np_env
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def seeded(dash_env):
    return seed_store(dash_env / "newspulse.db")


def run_app(page: str | None = None, *, link: dict | None = None, **state):
    """A fresh session on ``page`` (the Overview by default), opened on a link's query parameters."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=90)
    at.query_params.update(link or {})
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    if page:
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def chart_frames(at) -> list[pd.DataFrame]:
    """The data of every chart on the page, decoded from what Streamlit sends to the browser."""
    frames = []
    for chart in at.get("vega_lite_chart"):
        for dataset in chart.proto.datasets:
            frames.append(pa.ipc.open_stream(io.BytesIO(dataset.data.data)).read_all().to_pandas())
    return frames


def markdown_text(at) -> str:
    return "\n".join(m.value for m in at.markdown)


def unescape(text: str) -> str:
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", text)


# --- overview ------------------------------------------------------------------------------


def test_overview_shows_the_window_of_the_data_with_metrics_charts_and_banner(seeded):
    check_overview(run_app(), seeded)


def check_overview(at, seeded: dict) -> None:
    arts = in_window(seeded["articles"], 30)
    neg = sum(a.label.value == "negative" for a in arts)
    shown = metrics(at)
    assert shown["Articles"] == f"{len(arts):,}"
    assert shown["Negative share"] == f"{neg / len(arts):.1%}"
    assert shown["Sentiment index"] == f"{sum(a.score for a in arts) / len(arts) * 100:+.1f}"
    assert shown["Alerts firing"] == "1"
    # the window is anchored at the newest article (1987), not at today
    assert any("1987-09-20 12:00 UTC → 1987-10-20 12:00 UTC" in c.value for c in at.caption)

    banner = [e.value for e in at.error]
    assert len(banner) == 1 and "1 alert firing" in banner[0] and "XOM" in banner[0]

    frames = chart_frames(at)
    series = next(f for f in frames if "sentiment_index" in f.columns)
    assert series["articles"].sum() == len(arts)
    assert series["negative"].sum() == neg
    heat = next(f for f in frames if {"ticker", "topic"} <= set(f.columns))
    xom_oil = heat[(heat.ticker == "XOM") & (heat.topic == "oil")].iloc[0]
    xom = [a for a in arts if "XOM" in a.tickers]
    assert xom_oil["articles"] == len(xom)
    assert xom_oil["negative_share"] == pytest.approx(sum(a.label.value == "negative" for a in xom) / len(xom))

    table = at.dataframe[0].value
    assert table.iloc[0]["ticker"] == "XOM"  # the most negative ticker comes first


def test_overview_range_choice_changes_the_window(seeded):
    at = run_app(np_range="Last 7 days")
    assert metrics(at)["Articles"] == str(len(in_window(seeded["articles"], 7)))
    at.sidebar.selectbox(key="np_range").set_value("All time").run()
    assert metrics(at)["Articles"] == str(len(seeded["articles"]))


def test_auto_refresh_follows_the_setting(seeded, monkeypatch):
    at = run_app()  # the fixture sets NEWSPULSE_DASHBOARD_REFRESH_S=0
    assert not at.sidebar.toggle and any("Auto-refresh is off" in c.value for c in at.sidebar.caption)
    monkeypatch.setenv("NEWSPULSE_DASHBOARD_REFRESH_S", "15")
    at = run_app()
    assert at.sidebar.toggle(key="np_autorefresh").value is True
    at.sidebar.toggle(key="np_autorefresh").set_value(False).run()
    assert not at.exception and metrics(at)["Alerts firing"] == "1"


def test_overview_toasts_an_alert_that_fires_after_the_page_loaded(seeded, dash_env):
    import streamlit as st

    at = run_app()
    assert not at.toast  # what already fires is in the banner, not a toast
    new = seeded["firing"].model_copy(update={"id": "alert-gm", "scope": "ticker:GM", "started_at": LATEST})
    SQLiteStore(dash_env / "newspulse.db").upsert_alerts([new])
    st.cache_data.clear()  # what the TTL does after a few seconds
    at.run()
    assert [t.value for t in at.toast] and "GM" in at.toast[0].value
    assert metrics(at)["Alerts firing"] == "2"


def test_every_page_on_an_empty_store_says_what_to_do_next(dash_env):
    for page in (None, "explore", "ticker", "story", "feedback"):
        at = run_app(page)
        assert any("make demo" in i.value for i in at.info), page
    at = run_app("alerts")
    assert any("No firing alert" in c.value for c in at.caption)
    at = run_app("model")
    assert any("No model is in production yet" in i.value for i in at.info)


@pytest.mark.es
def test_the_same_pages_on_elasticsearch(dash_env, monkeypatch):
    """The dashboard only speaks the Store interface: on Elasticsearch it shows the same numbers."""
    import streamlit as st
    from peers import start_elasticsearch

    from newspulse.store.elastic import ElasticStore

    with start_elasticsearch() as url:
        monkeypatch.setenv("NEWSPULSE_STORE_URL", url)
        store = ElasticStore(load_settings())
        try:
            seeded = seed(store)
        finally:
            store.close()
        reader = ElasticStore(load_settings())  # another client sees the writes after a refresh (~1 s)
        deadline = time.monotonic() + 30
        while reader.stats()["articles"] < len(seeded["articles"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        reader.close()
        check_overview(run_app(), seeded)
        at = run_app("explore", **{"explore-q": "crash fears"})
        assert any(SCRIPT in unescape(m.value) for m in at.markdown)
        at = run_app("alerts")
        assert at.segmented_control(key="alerts-view").options[:3] == ["Firing (1)", "Pending (0)", "Resolved (1)"]

        store = ElasticStore(load_settings())  # a two-company story: its verdicts and evidence round-trip
        story = two_company_story()
        assert store.upsert_articles([story]).ok
        deadline = time.monotonic() + 30
        while store.stats()["articles"] <= len(seeded["articles"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        store.close()
        st.cache_data.clear()  # the store changed under the 10 s cache
        at = run_app("story", link={"article": story.id})
        assert line_of(at, "**XOM**").startswith("**XOM**: :orange-badge[negative -0.86] from 2 mentions")
        assert line_of(at, "**GM**").startswith("**GM**: :blue-badge[positive +0.80] from 2 mentions")
        assert r":orange-badge[XOM negative \-0\.90]" in story_text(at) and ":violet-background[" in story_text(at)
        at = open_link("ticker", {"ticker": "GM"})  # the store counts GM's own verdict
        gm = in_window(seeded["articles"], 30, "GM")
        series = next(f for f in chart_frames(at) if "sentiment_index" in f.columns)
        assert series["positive"].sum() == sum(a.label.value == "positive" for a in gm) + 1
        assert series["negative"].sum() == sum(a.label.value == "negative" for a in gm)


def test_an_unreachable_store_is_named_not_a_traceback(dash_env, monkeypatch):
    blocker = dash_env / "not-a-dir"
    blocker.write_text("a file where the store's folder should be")
    monkeypatch.setenv("NEWSPULSE_STORE_URL", f"sqlite:///{blocker / 'store.db'}")
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=90).run()
    assert not at.exception
    assert any("Cannot read the store" in e.value and "not-a-dir" in e.value for e in at.error)


# --- safety --------------------------------------------------------------------------------


def test_html_in_a_headline_is_shown_as_literal_text(seeded):
    for page, state in ((None, {}), ("explore", {"explore-q": "crash fears"}), ("alerts", {})):
        at = run_app(page, **state)
        texts = [m.value for m in at.markdown]
        carrying = [t for t in texts if "alert(1)" in unescape(t)]
        assert carrying, page
        for text in carrying:
            assert not re.search(r"(?<!\\)[<>]", text)  # every angle bracket escaped: Markdown prints it
            assert SCRIPT in unescape(text) and IMG in unescape(text)
        assert not any(m.allow_html for m in at.markdown)


def test_escape_md_neutralises_markdown_and_links():
    from newspulse.dashboard.widgets import escape_md, highlight_md, safe_url

    assert escape_md("**bold** [x](javascript:alert(1)) :red[hi] $x$") == (
        r"\*\*bold\*\* \[x\]\(javascript\:alert\(1\)\) \:red\[hi\] \$x\$"
    )
    assert highlight_md("oil **prices** <b>") == r"oil **prices** \<b\>"
    assert safe_url("javascript:alert(1)") is None
    assert safe_url("https://example.com/a") == "https://example.com/a"


# --- alerts --------------------------------------------------------------------------------


def test_alerts_page_lists_alerts_with_window_chart_drivers_and_actions(seeded, dash_env):
    from newspulse.alerts import list_silences

    at = run_app("alerts")
    view = at.segmented_control(key="alerts-view")
    assert view.options == ["Firing (1)", "Pending (0)", "Resolved (1)", "Silences"] and view.value == "firing"
    assert list(at.dataframe[0].value["scope"]) == ["ticker:XOM"]
    shown = metrics(at)
    assert shown["Negative share"] == "90%" and "Articles in window" in shown
    window = [f for f in chart_frames(at) if "articles" in f.columns]
    assert window and window[0]["articles"].sum() > 0
    assert any(seeded["xss"].id in r.key for r in at.radio if r.key)  # driver card of the XSS story

    at.button(key="ack-alert-xom").click().run()
    assert SQLiteStore(dash_env / "newspulse.db").get_alert("alert-xom").acknowledged

    form = [t for t in at.text_input if t.label == "Scope (glob)"][0]
    form.set_value("ticker:XO*")
    [b for b in at.button if b.label == "Silence"][0].click().run()
    assert [s.scope for s in list_silences(load_settings())] == ["ticker:XO*"]
    at.segmented_control(key="alerts-view").set_value("silences").run()
    assert any("ticker\\:XO\\*" in m.value for m in at.markdown)  # listed under Silences

    at.segmented_control(key="alerts-view").set_value("resolved").run()
    assert list(at.dataframe[0].value["scope"]) == ["market"] and metrics(at)["Negative share"] == "55%"


# --- explore -------------------------------------------------------------------------------


def test_explore_searches_with_filters_and_shows_cards(seeded):
    at = run_app("explore", **{"explore-q": "story on oil"})
    titles = [unescape(m.value) for m in at.markdown if m.value.startswith("**XOM story")]
    expected = [a for a in in_window(seeded["articles"], 30, "XOM") if a.title.startswith("XOM story")]
    assert len(titles) == min(20, len(expected))
    assert any("Tickers: XOM" in unescape(c.value) for c in at.caption)
    assert any(b.proto.url.startswith("https://news.example.com/") for b in at.get("link_button"))

    at.sidebar.selectbox(key="np_range").set_value("Last 90 days").run()  # reaches before the oldest article
    assert not at.exception
    assert at.date_input(key="explore-days-Last 90 days").value == (seeded["articles"][-2].published_at.date(), LATEST.date())

    at.selectbox(key="explore-label").set_value("positive").run()
    cards = [m.value for m in at.markdown if m.value.startswith("**XOM story")]
    xom_pos = [a for a in in_window(seeded["articles"], 90, "XOM") if a.title.startswith("XOM story") and a.label.value == "positive"]
    assert len(cards) == min(20, len(xom_pos))
    assert all(":blue-badge[positive]" in m.value for m in at.markdown if "-badge[" in m.value and "model" in m.value)

    at.text_input(key="explore-q").set_value("").run()  # no words: the most negative first
    at.selectbox(key="explore-label").set_value("Any").run()
    at.selectbox(key="explore-tickers").set_value("GM").run()
    first = [m.value for m in at.markdown if m.value.startswith("**")][0]
    assert unescape(first).startswith("**GM story")


# --- ticker --------------------------------------------------------------------------------


def test_ticker_page_shows_one_ticker_timeline_and_its_movers(seeded):
    at = run_app("ticker")
    at.selectbox(key="ticker-pick").set_value("XOM").run()
    xom = in_window(seeded["articles"], 30, "XOM")
    assert metrics(at)["Articles"] == str(len(xom))
    series = next(f for f in chart_frames(at) if "sentiment_index" in f.columns)
    assert series["articles"].sum() == len(xom)
    assert any("index down" in m.value or "index up" in m.value for m in at.markdown)
    assert at.query_params["ticker"] == "XOM"


# --- story drill-down (issue 25 item 6) ------------------------------------------------------


@pytest.fixture
def two_company(seeded, dash_env) -> ScoredArticle:
    story = two_company_story()
    store = SQLiteStore(dash_env / "newspulse.db")
    assert store.upsert_articles([story]).ok
    store.close()
    return story


def line_of(at, start: str) -> str:
    """The one Markdown element that starts with ``start`` (escaped form)."""
    [line] = [m.value for m in at.markdown if m.value.startswith(start)]
    return line


def story_text(at) -> str:
    """The highlighted story text: the Markdown element that carries the title's highlight."""
    return next(m.value for m in at.markdown if "-background[" in m.value)


def test_story_drill_down_shows_each_company_verdict_beside_the_story_with_its_evidence(two_company):
    from newspulse.dashboard.widgets import escape_md as escape

    at = run_app("story", link={"article": two_company.id})
    assert line_of(at, "**Story**").startswith("**Story**: :orange-badge[negative -0.60]")
    assert line_of(at, "**XOM**").startswith(r"**XOM**: :orange-badge[negative -0.86] from 2 mentions")
    assert line_of(at, "**GM**").startswith(r"**GM**: :blue-badge[positive +0.80] from 2 mentions")
    assert "from the story (the company is not named in the text)" in unescape(line_of(at, "**TXN**"))
    items = [unescape(m.value) for m in at.markdown if m.value.startswith("- “")]
    assert f"- “{GOOD_FOR_GM}” :blue-badge[positive +0.85] weight 0.55" in items
    assert f"- “{HOSTILE_FOR_XOM}” :orange-badge[negative -0.90] weight 0.60" in items  # XOM's evidence
    assert any(i.startswith(f"- “{TWO_COMPANY_TITLE}” :orange-badge[negative -0.70] weight 0.70") for i in items)  # the story's

    text = story_text(at)  # every company's passages, at their offsets
    assert text.startswith(f":violet-background[{escape(TWO_COMPANY_TITLE)}]")  # read differently by XOM and GM
    assert r":orange-badge[XOM negative \-0\.80] :blue-badge[GM positive \+0\.75]" in text
    assert f":blue-background[{escape(GOOD_FOR_GM)}] :blue-badge[GM positive \+0\.85]" in text
    assert f":orange-background[{escape(HOSTILE_FOR_XOM)}] :orange-badge[XOM negative \-0\.90]" in text
    assert "Analysts were split on the sector\." in text and "-background[Analysts" not in text

    at.segmented_control(key="story-highlight").set_value("GM").run()  # one company's passages
    text = story_text(at)
    assert "orange" not in text and "violet" not in text and text.count(":blue-background[") == 2
    assert at.query_params["highlight"] == "GM" and at.query_params["article"] == two_company.id
    at.segmented_control(key="story-highlight").set_value("story").run()  # the story verdict's explanation
    text = story_text(at)
    assert text.startswith(f":orange-background[{escape(TWO_COMPANY_TITLE)}] :orange-badge[story negative \-0\.70]")
    assert "blue" not in text


def test_story_drill_down_keeps_hostile_evidence_text_inert(two_company):
    at = run_app("story", link={"article": two_company.id})
    carrying = [m.value for m in at.markdown if "alert(1)" in unescape(m.value)]
    assert len(carrying) >= 3  # the verdict's evidence, the story's explanation, the highlighted text
    for text in carrying:
        assert not re.search(r"(?<!\\)[<>]", text)  # every angle bracket escaped: Markdown prints it
        assert SCRIPT in unescape(text) and IMG in unescape(text)
    assert not any(m.allow_html for m in at.markdown)


def test_story_drill_down_of_a_record_scored_before_company_verdicts(seeded):
    old = seeded["articles"][3]
    at = run_app("story", link={"article": old.id})
    assert any("Scored before company-level verdicts" in c.value for c in at.caption)
    assert f"**{old.tickers[0]}**: :{'orange' if old.label.value == 'negative' else 'gray' if old.label.value == 'neutral' else 'blue'}-badge" in line_of(at, f"**{old.tickers[0]}**")
    assert "from the story" in line_of(at, f"**{old.tickers[0]}**")
    assert any("No passages are stored" in c.value for c in at.caption)
    assert "-background[" not in markdown_text(at)  # nothing to highlight
    assert any(unescape(m.value) == old.text for m in at.markdown)  # the text is shown as it is


def test_story_evidence_whose_offsets_miss_the_text_is_listed_not_highlighted(two_company, dash_env):
    moved = two_company.model_copy(update={"id": "moved-offsets", "url": "https://news.example.com/moved",
                                           "title": "Shorter headline"})  # the offsets now point elsewhere
    store = SQLiteStore(dash_env / "newspulse.db")
    assert store.upsert_articles([moved]).ok
    store.close()
    at = run_app("story", link={"article": "moved-offsets"})
    assert any("do not match the stored text" in c.value for c in at.caption)
    assert "-background[" not in markdown_text(at)
    assert any(GOOD_FOR_GM in unescape(m.value) for m in at.markdown if m.value.startswith("- “"))


def test_ticker_page_follows_the_company_verdict_and_explains_why_negative(two_company):
    at = open_link("ticker", {"ticker": "XOM"})
    why = [unescape(m.value) for m in at.markdown]
    first = next(i for i, m in enumerate(why) if m.startswith(":orange-badge[negative"))
    assert why[first].startswith(f":orange-badge[negative -0.86] **{TWO_COMPANY_TITLE}**")  # the newest negative about XOM
    assert why[first + 1] == f"- “{HOSTILE_FOR_XOM}” :orange-badge[negative -0.90]"
    links = [p.proto for p in at.get("page_link")]
    assert any(p.page == "story" and p.query_string == f"article={two_company.id}" for p in links), [(p.page, p.query_string) for p in links]

    at = open_link("ticker", {"ticker": "GM"})  # the same story is good news for GM: not among GM's negatives
    texts = [unescape(m.value) for m in at.markdown]
    assert not any(TWO_COMPANY_TITLE in t for t in texts if t.startswith(":orange-badge[negative"))
    negative_cards = [r.key for r in at.radio if r.key and r.key.startswith("tneg-")]
    assert negative_cards and f"tneg-{two_company.id}-fb-label" not in negative_cards  # nor among its most negative stories

    at = open_link("ticker", {"ticker": "TXN"})  # tagged, never named: the story's verdict and its passages
    texts = [unescape(m.value) for m in at.markdown]
    assert texts[texts.index(next(t for t in texts if TWO_COMPANY_TITLE in t and t.startswith(":orange-badge")))+ 1] == \
        f"- “{TWO_COMPANY_TITLE}” :orange-badge[negative -0.70]"


def test_ticker_timeline_counts_the_company_verdict_not_the_story_verdict(two_company, seeded):
    gm = in_window(seeded["articles"], 30, "GM")
    at = open_link("ticker", {"ticker": "GM"})
    series = next(f for f in chart_frames(at) if "sentiment_index" in f.columns)
    assert series["articles"].sum() == len(gm) + 1
    assert series["negative"].sum() == sum(a.label.value == "negative" for a in gm)  # the story is positive for GM
    assert series["positive"].sum() == sum(a.label.value == "positive" for a in gm) + 1


def test_cards_on_a_company_alert_or_search_show_that_company_verdict(two_company, dash_env):
    alert = Alert(id="alert-gm-order", rule="ticker-negative", scope="ticker:GM", status=AlertStatus.firing, window_minutes=60,
                  started_at=LATEST - timedelta(hours=1), updated_at=LATEST, magnitude=3.0, baseline=0.2, value=0.6, volume=5,
                  drivers=[DriverArticle(id=two_company.id, title=two_company.title, score=two_company.score)])
    store = SQLiteStore(dash_env / "newspulse.db")
    store.upsert_alerts([alert])
    store.close()
    at = open_link("alerts", {"alert": "alert-gm-order"})
    assert line_of(at, "**GM**").startswith("**GM**: :blue-badge[positive +0.80] from 2 mentions")
    at = open_link("explore", {"q": "fleet order", "ticker": "XOM"})
    assert line_of(at, "**XOM**").startswith("**XOM**: :orange-badge[negative -0.86] from 2 mentions")


def test_screenshot_story_is_the_one_whose_companies_are_read_most_differently(two_company, dash_env):
    from newspulse.dashboard.screenshots import pick_story

    url = f"sqlite:///{dash_env / 'newspulse.db'}"
    agreeing = two_company.model_copy(update={"id": "agreeing", "entities": [
        v.model_copy(update={"label": Label.negative}) for v in two_company.entities]})
    store = SQLiteStore(dash_env / "newspulse.db")
    assert store.upsert_articles([agreeing]).ok
    store.close()
    assert pick_story(url) == two_company.id  # XOM negative, GM positive beats two negatives
    assert pick_story(f"sqlite:///{dash_env / 'empty.db'}") is None


def test_marked_markdown_cuts_overlapping_marks_and_escapes_each_piece():
    from newspulse.dashboard.widgets import Mark, marked_markdown, placed

    text = "A *slides* as B wins\n\nB won.\nA [fell](javascript:x).\n\n   Last."
    fell = "A [fell](javascript:x)."
    at = text.index(fell)
    marks = [Mark(0, 20, text[:20], "negative", "A negative -0.70"), Mark(0, 20, text[:20], "positive", "B positive +0.80"),
             Mark(at, at + len(fell), fell, "negative", "A negative -0.90"), Mark(3, 400, "x", "neutral", "off")]
    good, bad = placed(text, marks)
    assert [m.tag for m in bad] == ["off"]
    assert marked_markdown(text, good) == (
        r":violet-background[A \*slides\* as B wins] :orange-badge[A negative \-0\.70] :blue-badge[B positive \+0\.80]"
        "\n\n" r"B won\." "\n\n" r":orange-background[A \[fell\]\(javascript\:x\)\.] :orange-badge[A negative \-0\.90]"
        "\n\n" r"Last\."
    )


# --- model ---------------------------------------------------------------------------------


def test_model_page_without_a_model_still_shows_live_distribution(seeded):
    at = run_app("model")
    assert any("No model is in production yet" in i.value for i in at.info)
    live = at.dataframe[0].value
    arts = in_window(seeded["articles"], 30)
    assert dict(zip(live["label"], live["articles"])) == {
        label: sum(a.label.value == label for a in arts) for label in ("negative", "neutral", "positive")
    }


def promote_card(registry: Path) -> dict:
    """A production model card in a real registry (no weights: the dashboard only reads cards)."""
    from newspulse.models.sentiment.registry import ModelCard, Registry

    def split_metrics(acc: float, f1: float, confusion: list[list[int]]) -> dict:
        per_class = {l: {"precision": 0.8, "recall": 0.7, "f1": 0.75, "support": 100} for l in ("negative", "neutral", "positive")}
        return {"n": 300, "accuracy": acc, "macro_f1": f1, "weighted_f1": f1 + 0.01, "per_class": per_class, "confusion": confusion,
                "lexicon": {"macro_f1": 0.55}}

    card = ModelCard(
        version="v20260101-000000", base_model="all-MiniLM-L6-v2", created_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        code_version="abc123", params={"epochs": 2},
        metrics={"eval": split_metrics(0.8512, 0.8123, [[80, 15, 5], [10, 85, 5], [3, 12, 85]]),
                 "dev": split_metrics(0.9001, 0.8802, [[90, 8, 2], [5, 92, 3], [1, 9, 90]])},
        label_distribution={"train": {"negative": 600, "neutral": 1800, "positive": 600}},
    )
    reg = Registry(registry)
    reg.write_card(card)
    reg.promote(card.version)
    return card.model_dump(mode="json")


def test_model_page_shows_card_metrics_confusion_and_drift(seeded, dash_env):
    promote_card(dash_env / "registry")
    at = run_app("model")
    shown = metrics(at)
    assert shown["Production version"] == "v20260101-000000"
    assert shown["Accuracy"] == "0.851" and shown["Macro F1"] == "0.812"  # the gate's eval split first
    assert shown["Lexicon macro F1"] == "0.550"
    confusion = next(f for f in chart_frames(at) if {"true", "predicted"} <= set(f.columns))
    assert confusion.set_index(["true", "predicted"])["count"][("negative", "negative")] == 80
    assert confusion["count"].sum() == 300

    drift = next(d.value for d in at.dataframe if "psi" in d.value.columns)
    arts = in_window(seeded["articles"], 30)
    live_neg = sum(a.label.value == "negative" for a in arts) / len(arts)
    assert drift.set_index("label")["live_share"]["negative"] == pytest.approx(live_neg)
    assert drift.set_index("label")["train_share"]["neutral"] == pytest.approx(0.6)
    assert shown["Population stability index"] == f"{drift['psi'].sum():.3f}"
    versions = next(d.value for d in at.dataframe if "production" in d.value.columns)
    assert list(versions["version"]) == ["v20260101-000000"] and bool(versions["production"][0])

    at.segmented_control(key="model-split").set_value("dev").run()
    assert metrics(at)["Accuracy"] == "0.900"
    confusion = next(f for f in chart_frames(at) if {"true", "predicted"} <= set(f.columns))
    assert confusion.set_index(["true", "predicted"])["count"][("negative", "negative")] == 90


# --- feedback ------------------------------------------------------------------------------


def test_feedback_stores_the_correction_with_the_article_text(seeded, dash_env):
    target = seeded["articles"][5]
    at = run_app("feedback")
    at.text_input(key="fb-id").set_value(target.id).run()
    at.radio(key="fb-form-label").set_value("negative")
    at.text_input(key="fb-form-note").set_value("profit warning")
    [b for b in at.button if b.label == "Save correction"][0].click().run()
    assert not at.exception
    stored = SQLiteStore(dash_env / "newspulse.db").list_feedback()
    assert len(stored) == 1
    fb = stored[0]
    # no sign-in configured: recorded as anonymous, not as a name typed per correction
    assert (fb.article_id, fb.label.value, fb.analyst, fb.note, fb.text) == (target.id, "negative", "anonymous", "profit warning", target.text)
    history = at.dataframe[0].value
    assert list(history["corrected to"]) == ["negative"] and list(history["model said"]) == [target.label.value]


def test_feedback_from_an_explore_card(seeded, dash_env):
    at = run_app("explore", **{"explore-q": "crash fears"})
    key = next(r.key for r in at.radio if r.key and r.key.endswith("-fb-label"))
    at.radio(key=key).set_value("neutral")
    [b for b in at.button if b.label == "Save correction"][0].click().run()
    stored = SQLiteStore(dash_env / "newspulse.db").list_feedback()
    assert [(f.article_id, f.label.value) for f in stored] == [(seeded["xss"].id, "neutral")]


# --- sign-in -------------------------------------------------------------------------------


def sign_in_with_password(at, name: str, password: str):
    at.text_input[0].set_value(name)
    at.text_input[1].set_value(password)
    at.button[0].click().run()
    return at


def test_password_protects_every_page(seeded, monkeypatch):
    monkeypatch.setenv("NEWSPULSE_DASHBOARD_PASSWORD", "s3cret")
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=90).run()
    assert not at.metric and [t.label for t in at.text_input] == ["Your name", "Password"]
    sign_in_with_password(at, "Jane Doe", "wrong")
    assert "Wrong password." in [e.value for e in at.error] and not at.metric
    sign_in_with_password(at, "  ", "s3cret")
    assert any("Enter your name" in e.value for e in at.error) and not at.metric
    sign_in_with_password(at, "Jane  Doe", "s3cret")
    assert metrics(at)["Alerts firing"] == "1"
    assert any(c.value == "Signed in as Jane Doe (shared password)" for c in at.sidebar.caption)
    at.sidebar.button(key="np-logout").click().run()
    assert not at.metric and len(at.text_input) == 2


def act_on_everything(at, dash_env, seeded) -> tuple[str, str, str]:
    """Acknowledge the XOM alert, silence its scope, correct an article; return who each names
    (the ack's author is ``acknowledged_by``: the alerter rewrites ``message`` every window)."""
    from newspulse.alerts import list_silences

    at.switch_page("views/alerts.py").run()
    at.button(key="ack-alert-xom").click().run()
    [b for b in at.button if b.label == "Silence"][0].click().run()
    at.switch_page("views/feedback.py").run()
    at.text_input(key="fb-id").set_value(seeded["articles"][3].id).run()
    [b for b in at.button if b.label == "Save correction"][0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    store = SQLiteStore(dash_env / "newspulse.db")
    ack = store.get_alert("alert-xom")
    assert ack.acknowledged
    [silence] = list_silences(load_settings())
    [feedback] = store.list_feedback()
    store.close()
    return ack.acknowledged_by, silence.created_by, feedback.analyst


def test_password_mode_records_every_action_under_the_name_given_at_sign_in(seeded, dash_env, monkeypatch):
    monkeypatch.setenv("NEWSPULSE_DASHBOARD_PASSWORD", "s3cret")
    from streamlit.testing.v1 import AppTest

    at = sign_in_with_password(AppTest.from_file(str(APP), default_timeout=90).run(), "Jane Doe", "s3cret")
    assert not any(t.label == "Analyst" for t in at.text_input)  # no free-text name per action
    acked_by, silenced_by, corrected_by = act_on_everything(at, dash_env, seeded)
    assert (acked_by, silenced_by, corrected_by) == ("Jane Doe", "Jane Doe", "Jane Doe")


OIDC_SECRETS = {
    "redirect_uri": "http://localhost:8501/oauth2callback",
    "cookie_secret": "a-long-random-cookie-secret",
    "client_id": "newspulse",
    "client_secret": "client-secret",
    "server_metadata_url": "https://idp.example/.well-known/openid-configuration",
}


def oidc_app(user: dict, auth: dict | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=90)
    at.secrets["auth"] = auth or OIDC_SECRETS
    at.user = user
    return at.run()


def test_oidc_asks_to_sign_in_and_shows_nothing_before(seeded, monkeypatch):
    monkeypatch.setenv("NEWSPULSE_DASHBOARD_PASSWORD", "s3cret")  # OIDC wins over the shared password
    at = oidc_app({"is_logged_in": False})
    assert not at.exception and not at.metric and not at.text_input
    assert [b.label for b in at.button] == ["Sign in"]
    named = {"redirect_uri": OIDC_SECRETS["redirect_uri"], "cookie_secret": "x" * 32,
             "google": {"client_id": "a", "client_secret": "b", "server_metadata_url": "https://accounts.google.com/.well-known/openid-configuration"},
             "okta": {"client_id": "c", "client_secret": "d", "server_metadata_url": "https://okta.example/.well-known/openid-configuration"}}
    at = oidc_app({"is_logged_in": False}, named)
    assert [b.label for b in at.button] == ["Sign in with google", "Sign in with okta"] and not at.metric


def test_oidc_records_every_action_under_the_signed_in_email(seeded, dash_env):
    at = oidc_app({"is_logged_in": True, "email": "jane.doe@bank.example", "name": "Jane Doe", "sub": "00u1"})
    assert metrics(at)["Alerts firing"] == "1"
    assert any(c.value == r"Signed in as jane\.doe\@bank\.example" for c in at.sidebar.caption)
    acked_by, silenced_by, corrected_by = act_on_everything(at, dash_env, seeded)
    assert (acked_by, silenced_by, corrected_by) == ("jane.doe@bank.example",) * 3
    at.sidebar.button(key="np-logout").click().run()  # st.logout(): back to the sign-in page
    assert not at.metric and [b.label for b in at.button] == ["Sign in"]


# --- pure helpers --------------------------------------------------------------------------


def test_window_follows_the_data_and_buckets_stay_readable():
    from newspulse.dashboard.data import make_window

    first = LATEST - timedelta(days=200)
    w = make_window("Last 7 days", first, LATEST)
    assert w.end == LATEST + timedelta(seconds=1) and w.end - w.start == timedelta(days=7)
    assert w.bucket == timedelta(hours=6)
    assert make_window("Last 24 hours", first, LATEST).bucket == timedelta(minutes=15)
    everything = make_window("All time", first, LATEST)
    assert everything.start == first and everything.bucket == timedelta(days=7)
    assert make_window("Last 7 days", None, None).start is None
    assert w.previous().end == w.start


def test_cache_keys_name_the_store_not_its_credentials(monkeypatch):
    from newspulse.dashboard.data import _settings_key

    monkeypatch.setenv("NEWSPULSE_STORE_URL", "https://reader:hunter2@es.example:9200")
    monkeypatch.setenv("NEWSPULSE_ES_PASSWORD", "hunter3")
    key = _settings_key(load_settings())
    assert key[0] == "https://es.example:9200" and "hunter" not in repr(key)


def test_biggest_moves_weigh_volume_and_pick_drivers_in_their_direction():
    from newspulse.dashboard.data import biggest_moves, drivers_of
    from newspulse.store import Bucket

    hour = timedelta(hours=1)
    t0 = LATEST - 10 * hour
    buckets = [
        Bucket(t0, 20, 2, 10, 8, 0.3),
        Bucket(t0 + hour, 20, 12, 6, 2, -0.4),  # big drop on volume
        Bucket(t0 + 2 * hour, 1, 0, 0, 1, 0.6),  # bigger jump, but one article
    ]
    moves = biggest_moves(buckets, hour, limit=1)
    assert len(moves) == 1 and moves[0].start == t0 + hour and moves[0].change == pytest.approx(-70)
    arts = [make_article(i, t0 + hour, "XOM", label) for i, label in enumerate(("positive", "negative", "neutral"))]
    assert [a.label.value for a in drivers_of(moves[0], arts, limit=2)] == ["negative", "neutral"]


def test_label_drift_psi():
    from newspulse.dashboard.data import drift_verdict, label_drift

    same = label_drift({"negative": 1, "neutral": 2, "positive": 1}, {"negative": 10, "neutral": 20, "positive": 10})
    assert same["psi"].sum() == pytest.approx(0.0)
    shifted = label_drift({"negative": 1, "neutral": 1, "positive": 1}, {"negative": 8, "neutral": 1, "positive": 1})
    assert drift_verdict(shifted["psi"].sum()) == "significant shift"


# --- bad data and leaks (issue #18) ---------------------------------------------------------


def test_published_at_year_9999_neither_crashes_the_dashboard_nor_moves_its_window(seeded, dash_env):
    """#18.6: a stored story dated 9999-12-31 once overflowed the window (OverflowError) and
    anchored every range in the future. The ranges stay anchored at the newest real article and
    the sidebar says what was left out."""
    bad = make_article(5000, LATEST, "XOM", "negative", title="Dated in the far future")
    bad = bad.model_copy(update={"published_at": datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc), "id": "year-9999"})
    store = SQLiteStore(dash_env / "newspulse.db")
    assert store.upsert_articles([bad]).ok
    assert store.latest_published_at().year == 9999
    store.close()
    for page in (None, "alerts", "explore", "ticker", "story", "model", "feedback"):
        at = run_app(page)  # asserts no exception
        assert any("1 article is dated after" in w.value for w in at.sidebar.warning), page
    at = run_app()
    assert any("1987-09-20 12:00 UTC → 1987-10-20 12:00 UTC" in c.value for c in at.caption)
    assert metrics(at)["Articles"] == f"{len(in_window(seeded['articles'], 30)):,}"
    at.sidebar.selectbox(key="np_range").set_value("All time").run()
    assert not at.exception and metrics(at)["Articles"] == f"{len(seeded['articles']):,}"
    at = run_app("explore")
    assert at.date_input(key="explore-days-Last 30 days").value[1] == LATEST.date()


def test_store_error_shows_the_store_url_without_its_credentials(dash_env, monkeypatch):
    """#18.12: the error for an unreachable store printed the raw URL, password included."""
    from newspulse.dashboard.screenshots import free_port

    monkeypatch.setenv("NEWSPULSE_STORE_URL", f"http://elastic:hunter2-url@127.0.0.1:{free_port()}")
    monkeypatch.setenv("NEWSPULSE_ES_PASSWORD", "hunter3-setting")
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=90).run()
    assert not at.exception
    shown = "\n".join(e.value for e in at.error)
    assert "Cannot read the store at `http://***@127.0.0.1:" in shown
    everything = shown + "\n".join(str(el.value) for el in at.main if hasattr(el, "value"))
    assert "hunter2" not in everything and "hunter3" not in everything


def test_a_page_error_quoting_a_credential_is_shown_redacted(seeded, monkeypatch):
    """#18.12: an exception raised while a page runs reaches the browser only redacted."""
    monkeypatch.setenv("NEWSPULSE_ES_API_KEY", "api-key-secret-value")

    def failing(self, flt, bucket):
        raise ConnectionError("POST https://reader:hunter2@es.example:9200/_search failed; key api-key-secret-value")

    monkeypatch.setattr(SQLiteStore, "timeseries", failing)
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=90).run()
    [shown] = [e.value for e in at.exception]
    assert "ConnectionError: POST https://***@es.example:9200/_search failed; key ***" in shown
    assert "hunter2" not in shown and "api-key-secret-value" not in shown


# --- shareable links: every page's filters in the URL ----------------------------------------


def open_link(page: str | None, params: dict):
    """A fresh session opened on a link: ``/<page>?<params>``."""
    return run_app(page, link=params)


def link_of(at) -> dict:
    return dict(at.query_params)


def test_link_round_trip_overview_time_range(seeded):
    at = open_link(None, {"range": "7d"})
    assert at.sidebar.selectbox(key="np_range").value == "Last 7 days"
    assert metrics(at)["Articles"] == str(len(in_window(seeded["articles"], 7)))
    at.sidebar.selectbox(key="np_range").set_value("Last 90 days").run()
    assert link_of(at) == {"range": "90d"}
    again = open_link(None, link_of(at))
    assert metrics(again)["Articles"] == metrics(at)["Articles"] == f"{len(in_window(seeded['articles'], 90)):,}"
    bad = open_link(None, {"range": "forever"})  # an edited link falls back to the default
    assert bad.sidebar.selectbox(key="np_range").value == "Last 30 days" and link_of(bad) == {"range": "30d"}


def test_link_round_trip_alerts_status_and_alert(seeded):
    at = open_link("alerts", {"alert": "alert-market"})  # a link to one alert opens its list
    assert at.segmented_control(key="alerts-view").value == "resolved"
    assert at.selectbox(key="pick-resolved").value == "alert-market" and metrics(at)["Negative share"] == "55%"
    assert link_of(at) == {"range": "30d", "status": "resolved", "alert": "alert-market"}
    at.segmented_control(key="alerts-view").set_value("firing").run()
    assert link_of(at) == {"range": "30d", "status": "firing", "alert": "alert-xom"}
    again = open_link("alerts", link_of(at))
    assert again.segmented_control(key="alerts-view").value == "firing" and metrics(again)["Negative share"] == "90%"
    silences = open_link("alerts", {"status": "silences", "alert": "alert-xom"})
    assert silences.segmented_control(key="alerts-view").value == "silences" and "alert" not in link_of(silences)


def test_link_round_trip_explore_filters(seeded):
    link = {"range": "90d", "q": "story on oil", "ticker": "XOM", "label": "positive", "from": "1987-09-10", "to": "1987-10-10", "limit": "5"}
    at = open_link("explore", link)
    days = at.date_input(key="explore-days-Last 90 days").value
    assert days == (datetime(1987, 9, 10).date(), datetime(1987, 10, 10).date())
    assert (at.text_input(key="explore-q").value, at.selectbox(key="explore-tickers").value, at.selectbox(key="explore-label").value,
            at.number_input(key="explore-limit").value) == ("story on oil", "XOM", "positive", 5)
    expected = [a for a in seeded["articles"] if "XOM" in a.tickers and a.label.value == "positive" and a.title.startswith("XOM story")
                and datetime(1987, 9, 10, tzinfo=timezone.utc) <= a.published_at < datetime(1987, 10, 11, tzinfo=timezone.utc)]
    cards = [m.value for m in at.markdown if m.value.startswith("**XOM story")]
    assert len(cards) == min(5, len(expected)) and len(expected) > 5
    assert link_of(at) == link

    at.selectbox(key="explore-label").set_value("negative").run()
    at.selectbox(key="explore-source").set_value("wire-b").run()
    assert link_of(at) == {**link, "label": "negative", "source": "wire-b"}
    again = open_link("explore", link_of(at))
    assert [m.value for m in again.markdown if m.value.startswith("**")] == [m.value for m in at.markdown if m.value.startswith("**")]

    at.sidebar.selectbox(key="np_range").set_value("Last 7 days").run()  # a new range resets the dates
    assert "from" not in link_of(at) and "to" not in link_of(at) and link_of(at)["range"] == "7d"
    at.selectbox(key="explore-label").set_value("Any").run()
    at.text_input(key="explore-q").set_value("").run()
    assert link_of(at) == {"range": "7d", "ticker": "XOM", "source": "wire-b", "limit": "5"}


def test_link_round_trip_ticker(seeded):
    at = open_link("ticker", {"ticker": "GM", "range": "7d"})
    assert at.selectbox(key="ticker-pick").value == "GM"
    assert metrics(at)["Articles"] == str(len(in_window(seeded["articles"], 7, "GM")))
    at.selectbox(key="ticker-pick").set_value("IBM").run()
    assert link_of(at) == {"ticker": "IBM", "range": "7d"}
    unknown = open_link("ticker", {"ticker": "NOPE"})  # a ticker with no article is still the one shown
    assert unknown.selectbox(key="ticker-pick").value == "NOPE" and metrics(unknown)["Articles"] == "0"


def test_link_round_trip_model_split(seeded, dash_env):
    promote_card(dash_env / "registry")
    at = open_link("model", {"split": "dev"})
    assert at.segmented_control(key="model-split").value == "dev" and metrics(at)["Accuracy"] == "0.900"
    at.segmented_control(key="model-split").set_value("eval").run()
    assert link_of(at) == {"range": "30d", "split": "eval"} and metrics(at)["Accuracy"] == "0.851"


def test_link_round_trip_feedback_article_and_search(seeded):
    target = seeded["articles"][7]
    at = open_link("feedback", {"article": target.id})
    assert at.text_input(key="fb-id").value == target.id
    assert any(unescape(m.value) == f"**{target.title}**" for m in at.markdown)
    at.text_input(key="fb-id").set_value("").run()
    at.text_input(key="fb-q").set_value("crash fears").run()
    assert link_of(at) == {"range": "30d", "q": "crash fears"}
    again = open_link("feedback", link_of(at))
    assert again.selectbox(key="fb-pick").value == seeded["xss"].id


def test_link_round_trip_story_article_and_highlight(two_company):
    at = open_link("story", {"article": two_company.id, "highlight": "GM"})
    assert at.text_input(key="story-id").value == two_company.id and at.segmented_control(key="story-highlight").value == "GM"
    assert link_of(at) == {"article": two_company.id, "highlight": "GM", "range": "30d"}
    at.segmented_control(key="story-highlight").set_value("companies").run()  # the default leaves the link
    assert link_of(at) == {"article": two_company.id, "range": "30d"}
    again = open_link("story", link_of(at))
    assert story_text(again) == story_text(at)
    stale = open_link("story", {"article": two_company.id, "highlight": "NOPE"})  # an edited link falls back
    assert stale.segmented_control(key="story-highlight").value == "companies" and "highlight" not in link_of(stale)


# --- CSV export ------------------------------------------------------------------------------


@pytest.fixture
def downloads(monkeypatch):
    """Reads what a download button serves: AppTest's in-memory media files, kept after the run."""
    import streamlit.testing.v1.app_test as app_test
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    storages = []

    class Kept(MemoryMediaFileStorage):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            storages.append(self)

    monkeypatch.setattr(app_test, "MemoryMediaFileStorage", Kept)

    def read(at) -> dict[str, pd.DataFrame]:
        """Every download button of the page: file name -> the CSV it serves, parsed."""
        out = {}
        for button in at.get("download_button"):
            file_id = button.proto.url.rsplit("/", 1)[-1].split(".")[0]
            file = next(s._files_by_id[file_id] for s in reversed(storages) if file_id in s._files_by_id)
            out[file.filename] = pd.read_csv(io.BytesIO(file.content))
        return out

    return read


def test_every_table_downloads_as_csv_with_the_rows_shown(seeded, dash_env, downloads):
    promote_card(dash_env / "registry")
    SQLiteStore(dash_env / "newspulse.db").add_feedback(
        Feedback(article_id=seeded["xss"].id, label="neutral", text=seeded["xss"].text, analyst="jane")
    )
    pages = {None: {"newspulse-negative-tickers.csv", "newspulse-sectors.csv"}, "alerts": {"newspulse-alerts-firing.csv"},
             "model": {"newspulse-model-per-class.csv", "newspulse-label-drift.csv", "newspulse-model-versions.csv", "newspulse-articles-per-model-version.csv"},
             "feedback": {"newspulse-feedback.csv"}, "explore": {"newspulse-explore.csv"}}
    for page, names in pages.items():
        at = run_app(page)
        files = downloads(at)
        assert set(files) == names, page
        tables = [d.value for d in at.dataframe]
        assert len(tables) == len(names) - (page == "explore"), page  # Explore's results are cards
        for frame in tables:  # each table's CSV has the table's rows and columns
            csv = next(f for f in files.values() if list(f.columns) == [str(c) for c in frame.columns])
            assert len(csv) == len(frame), page
    files = downloads(run_app("explore", **{"explore-q": "crash fears"}))
    assert list(files["newspulse-explore.csv"]["id"]) == [seeded["xss"].id]
    assert files["newspulse-explore.csv"]["title"][0] == XSS_TITLE  # the CSV has the text as stored


# --- issue 29: CSV injection, clock skew, a locked store, sign-in backoff ----------------------


def test_csv_export_neutralises_cells_a_spreadsheet_would_run_as_formulas(seeded, dash_env, downloads):
    """Issue 29 #5: titles ``=HYPERLINK(…)``, ``+cmd|…``, a source ``@SUM(…)`` and a ticker ``-2+3``
    were written verbatim; each such cell now starts with ``'`` (OWASP), numbers stay numbers."""
    from newspulse.dashboard.widgets import safe_csv

    frame = pd.DataFrame({"title": ['=HYPERLINK("http://evil","x")', "+cmd|' /C calc'!A0", "\tTab", "\rCR", "plain - text", None],
                          "source": ["@SUM(1+1)", "reuters", "-2+3", "", "=1", "b"], "score": [-0.5, 0.25, -1.0, 0.0, 1.0, 0.5]})
    parsed = pd.read_csv(io.StringIO(safe_csv(frame)), keep_default_na=False)
    assert list(parsed["title"]) == ['\'=HYPERLINK("http://evil","x")', "'+cmd|' /C calc'!A0", "'\tTab", "'\rCR", "plain - text", ""]
    assert list(parsed["source"]) == ["'@SUM(1+1)", "reuters", "'-2+3", "", "'=1", "b"]
    assert list(parsed["score"]) == [-0.5, 0.25, -1.0, 0.0, 1.0, 0.5]

    evil = make_article(7001, LATEST - timedelta(minutes=10), "XOM", "negative", title='=HYPERLINK("http://evil.example","Crash fears")')
    evil = evil.model_copy(update={"source": "@SUM(1+1)"})
    SQLiteStore(dash_env / "newspulse.db").upsert_articles([evil])
    files = downloads(run_app("explore", **{"explore-q": "evil example crash"}))
    row = files["newspulse-explore.csv"].set_index("id").loc[evil.id]
    assert (row["title"], row["source"]) == ('\'=HYPERLINK("http://evil.example","Crash fears")', "'@SUM(1+1)")


def test_clock_skew_one_story_dated_23_hours_ahead_does_not_move_the_windows(dash_env):
    """Issue 29 #6: with one story stamped now + 23 h, "Last 24 hours" ran from now − 1 h to
    now + 23 h and showed 4 of ~50 stories. Windows end at the wall clock."""
    from newspulse.dashboard.data import make_window

    now = datetime.now(timezone.utc).replace(microsecond=0)
    w = make_window("Last 24 hours", now - timedelta(days=3), now + timedelta(hours=23), now=now)
    assert (w.start, w.end) == (now - timedelta(days=1) + timedelta(seconds=1), now + timedelta(seconds=1))
    assert make_window("Last 7 days", LATEST - timedelta(days=30), LATEST, now=now).end == LATEST + timedelta(seconds=1), "a replay keeps its own end"

    today = [make_article(i, now - timedelta(minutes=25 * i + 5), TICKERS[i % 4], "neutral") for i in range(50)]
    skewed = make_article(50, now + timedelta(hours=23), "XOM", "negative", title="Stamped in a feed's wrong time zone")
    store = SQLiteStore(dash_env / "newspulse.db")
    assert store.upsert_articles([*today, skewed]).ok
    store.close()
    at = run_app(**{"np_range": "Last 24 hours"})
    assert metrics(at)["Articles"] == f"{sum(a.published_at > now - timedelta(days=1) for a in today):,}"


def test_a_locked_store_while_saving_a_correction_shows_a_clean_message(seeded, dash_env, monkeypatch):
    """Issue 29 #19: add_feedback on a locked SQLite store showed the raw sqlite3 error."""
    import sqlite3

    monkeypatch.setitem(SQLiteStore.__init__.__kwdefaults__, "busy_timeout_s", 0.05)  # wait 50 ms for the lock, not 30 s
    locker = sqlite3.connect(dash_env / "newspulse.db", isolation_level=None)
    try:
        target = seeded["articles"][5]
        at = run_app("feedback")
        at.text_input(key="fb-id").set_value(target.id).run()
        locker.execute("BEGIN EXCLUSIVE")
        [b for b in at.button if b.label == "Save correction"][0].click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert [e.value for e in at.error] == ["The correction was not saved: the store is unavailable right now (busy or unreachable). Try again in a moment."]
        locker.execute("ROLLBACK")
        [b for b in at.button if b.label == "Save correction"][0].click().run()  # the form kept its values
        assert any(s.value.startswith("Saved:") for s in at.success)
    finally:
        locker.close()
    assert [f.article_id for f in SQLiteStore(dash_env / "newspulse.db").list_feedback()] == [target.id]


def test_shared_password_sign_in_backs_off_per_client(seeded, monkeypatch):
    """Issue 29 #20: unlimited guesses at the shared password. After 3 wrong tries each try
    waits twice as long as the last; the right password is not even checked meanwhile."""
    from newspulse.dashboard.auth import SignInBackoff

    clock = [100.0]
    backoff = SignInBackoff(free_tries=3, base_s=1.0, max_s=8.0, max_clients=2, clock=lambda: clock[0])
    for _ in range(2):
        backoff.failed("a")
    assert backoff.wait_s("a") == 0.0, "two typos cost nothing"
    waits = []
    for _ in range(5):
        backoff.failed("a")
        waits.append(backoff.wait_s("a"))
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0] and backoff.wait_s("b") == 0.0, "capped, and per client"
    backoff.succeeded("a")
    assert backoff.wait_s("a") == 0.0
    for client in ("x", "y", "z"):
        backoff.failed(client)
    assert len(backoff._failures) == 2, "bounded memory"

    monkeypatch.setenv("NEWSPULSE_DASHBOARD_PASSWORD", "s3cret")
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=90).run()
    for _ in range(3):
        sign_in_with_password(at, "Jane Doe", "guess")
        assert [e.value for e in at.error] == ["Wrong password."]
    sign_in_with_password(at, "Jane Doe", "s3cret")
    assert [e.value for e in at.error] == ["Too many wrong passwords from here: try again in 1 s."] and not at.metric
    time.sleep(1.1)
    sign_in_with_password(at, "Jane Doe", "s3cret")
    assert metrics(at)["Alerts firing"] == "1"


# --- analysts' rough edges (issue 28) --------------------------------------------------------
def _specs(at) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("vega_lite_chart")]


def test_28_the_sidebar_counts_alerts_as_the_alerts_page_lists_them(seeded, dash_env):
    """An alert resolved after the store's stats were cached: the sidebar said "2 alerts" while
    the Resolved tab listed 2 of its own. Both now read the same cached alert lists."""
    from newspulse.dashboard import data

    at = run_app("alerts", link={"status": "resolved"})
    late = seeded["resolved"].model_copy(update={"id": "alert-late", "rule": "late-rule"})
    store = SQLiteStore(dash_env / "newspulse.db")
    store.upsert_alerts([late])
    store.close()
    data.load_alerts.clear()  # the lists expire before the stats do
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    listed = len(at.dataframe[0].value)
    caption = " ".join(c.value for c in at.sidebar.caption)
    assert listed == 2 and "1 firing, 0 pending, 2 resolved" in caption, caption


def test_28_probabilities_are_words_not_twenty_block_characters(seeded):
    from newspulse.dashboard.widgets import sentiment_bar

    article = seeded["articles"][0]
    bar = sentiment_bar(article)
    assert "█" not in bar
    for label, p in article.probabilities.items():
        assert f"{label.value} {p:.0%}" in bar  # a screen reader says the label and its share
    at = run_app("explore")
    assert not any("█" in m.value for m in at.markdown)


def test_28_the_sentiment_chart_puts_negative_share_on_the_left_as_its_docstring_says():
    import pandas as pd

    from newspulse.dashboard import charts

    frame = pd.DataFrame({"time": pd.to_datetime(["2026-01-01", "2026-01-02"]), "sentiment_index": [10.0, -20.0], "negative_share": [0.2, 0.5],
                          "articles": [3, 4], "negative": [1, 2]})
    spec = charts.sentiment_chart(frame).to_dict()
    first, second = spec["layer"]
    assert first["encoding"]["y"]["field"] == "negative_share" and second["encoding"]["y"]["field"] == "sentiment_index"
    doc = " ".join(charts.sentiment_chart.__doc__.split())
    assert "Negative share (left axis" in doc and "sentiment index (right axis" in doc


def test_28_the_ticker_pages_volume_chart_has_room_for_its_bars_and_axis_title(seeded):
    at = run_app("ticker")
    at.selectbox(key="ticker-pick").set_value("XOM").run()
    [volume] = [s for s in _specs(at) if "Articles" in json.dumps(s) and "sentiment_index" not in json.dumps(s)]
    assert volume["height"] >= 180
    assert volume["encoding"]["color"]["legend"]["orient"] == "right", "a legend under the bars ate their height"


def test_28_a_time_zone_chosen_in_the_sidebar_is_used_everywhere_and_kept_in_the_link(seeded):
    at = run_app(link={"tz": "America/New_York"})  # the Overview: its story lists print times
    assert at.query_params["tz"] == "America/New_York" and at.sidebar.selectbox(key="np_tz").value == "America/New_York"
    text = " ".join([markdown_text(at), *(c.value for c in at.caption)])
    assert ("EST" in text or "EDT" in text) and " UTC" not in text.replace("stay UTC", "")
    at.sidebar.selectbox(key="np_tz").set_value("UTC").run()
    assert "tz" not in at.query_params, "UTC is the default: the link stays short"
    assert " UTC" in " ".join([markdown_text(at), *(c.value for c in at.caption)])
    bad = run_app(link={"tz": "Mars/Olympus_Mons"})
    assert bad.sidebar.selectbox(key="np_tz").value == "UTC"


def test_28_the_overview_rolls_tickers_up_by_sector(seeded):
    """XOM (Energy) turns negative in the last week; IBM and TXN are both Information Technology."""
    at = run_app()
    frame = next(df.value for df in at.dataframe if "sector" in df.value.columns)
    rows = frame.set_index("sector")
    window = in_window(seeded["articles"], 30)  # the default range
    tech = [a for a in window if a.tickers and a.tickers[0] in ("IBM", "TXN")]
    assert rows.loc["Information Technology", "tickers"] == 2 and rows.loc["Information Technology", "mentions"] == len(tech)
    assert rows.loc["Information Technology", "negative share"] == pytest.approx(sum(a.label.value == "negative" for a in tech) / len(tech))
    assert frame["sector"].iloc[0] == "Energy", "most negative first"


def test_28_sector_rollup_weights_by_volume_and_keeps_unknown_tickers():
    from newspulse.dashboard.data import UNLISTED_SECTOR, sector_rollup
    from newspulse.store import Facet

    frame = sector_rollup([Facet("A", 3, 3, -0.9), Facet("B", 1, 0, 0.5), Facet("ZZZ", 2, 1, 0.0)], {"A": "Energy", "B": "Energy"})
    rows = frame.set_index("sector")
    assert rows.loc["Energy", "mentions"] == 4 and rows.loc["Energy", "negative share"] == 0.75
    assert rows.loc["Energy", "mean score"] == pytest.approx((-0.9 * 3 + 0.5) / 4)
    assert rows.loc[UNLISTED_SECTOR, "tickers"] == 1


def test_28_a_watchlist_without_oidc_lives_in_the_link(seeded):
    at = run_app(link={"watch": "xom,GM,XOM"})
    assert at.multiselect(key="np_watch").value == ["XOM", "GM"]
    frame = next(df.value for df in at.dataframe if "alert firing" in df.value.columns).set_index("ticker")
    window = in_window(seeded["articles"], 30)
    assert frame.loc["XOM", "articles"] == len([a for a in window if "XOM" in a.tickers]) and frame.loc["XOM", "alert firing"]
    assert not frame.loc["GM", "alert firing"]
    at.multiselect(key="np_watch").unselect("GM").run()
    assert at.query_params["watch"] == "XOM"


def test_28_a_watchlist_is_saved_under_the_oidc_identity(seeded, dash_env, monkeypatch):
    from newspulse.dashboard import auth, watchlists

    path = dash_env / "watchlists.json"
    monkeypatch.setenv("NEWSPULSE_DASHBOARD_WATCHLISTS", str(path))
    watchlists.save_watchlist(path, "ana@bank.test", ["IBM"])
    watchlists.save_watchlist(path, "bo@bank.test", ["GM"])
    monkeypatch.setattr(auth, "oidc_providers", lambda: [])
    monkeypatch.setattr(auth, "is_signed_in_with_oidc", lambda: True)
    monkeypatch.setattr(auth, "identity", lambda: "ana@bank.test")
    at = run_app(link={"watch": "TXN"})  # a link's list does not override a signed-in analyst's own
    assert at.multiselect(key="np_watch").value == ["IBM"]
    at.multiselect(key="np_watch").select("XOM").run()
    assert watchlists.read_watchlists(path) == {"ana@bank.test": ["IBM", "XOM"], "bo@bank.test": ["GM"]}
    assert run_app().multiselect(key="np_watch").value == ["IBM", "XOM"], "a new session finds the list again"


def test_28_a_damaged_watchlists_file_reads_as_empty_and_is_rewritten(tmp_path):
    from newspulse.dashboard import watchlists

    path = tmp_path / "w.json"
    path.write_text("{not json")
    assert watchlists.read_watchlists(path) == {}
    watchlists.save_watchlist(path, "ana", [" ibm", "IBM", ""])
    assert watchlists.read_watchlists(path) == {"ana": ["IBM"]}


@pytest.mark.parametrize("page", ["overview", "alerts", "explore", "ticker", "story", "model", "feedback"])
def test_pages_use_the_settings_app_loaded_once_per_run(seeded, monkeypatch, page):
    """app.py reads and validates the settings once per run and hands them to the page; no page
    loads them again on its rerun."""
    import newspulse.settings as settings_module

    loads: list[int] = []
    real = settings_module.load_settings
    monkeypatch.setattr(settings_module, "load_settings", lambda *a, **kw: loads.append(1) or real(*a, **kw))
    at = run_app(page)
    runs = 2  # the first run on the Overview, then the switch to the page
    assert len(loads) == runs, f"{page}: {len(loads)} settings loads in {runs} runs"
    assert at.session_state["np_run_settings"].store_url == load_settings().store_url


def test_a_loader_waits_out_a_short_store_outage_on_its_own_clock(monkeypatch, tmp_path):
    """Issue 27: the store tries each read once now, so a page read that met a restarting
    node would fail at once. A loader retries an unavailable store for READ_DEADLINE_S, on
    the dashboard's own clock, and only then lets the page show the error."""
    from newspulse.dashboard import data
    from newspulse.store import StoreUnavailable

    attempts: list[float] = []

    class Restarting:
        def __init__(self, fails: int) -> None:
            self.fails = fails

        def stats(self) -> dict:
            attempts.append(time.monotonic())
            if len(attempts) <= self.fails:
                raise StoreUnavailable("Elasticsearch at http://es:9200 unavailable for stats: ConnectionError")
            return {"articles": 7}

    settings = load_settings(store_url=f"sqlite:///{tmp_path / 'unused.db'}")
    monkeypatch.setattr(data, "get_store", lambda _settings: Restarting(fails=2))
    data.load_stats.clear()
    assert data.load_stats(settings) == {"articles": 7} and len(attempts) == 3

    attempts.clear()
    data.load_stats.clear()
    monkeypatch.setattr(data, "get_store", lambda _settings: Restarting(fails=1000))
    with pytest.raises(StoreUnavailable):
        data.load_stats(settings)
    assert 3 <= attempts[-1] - attempts[0] <= data.READ_DEADLINE_S
