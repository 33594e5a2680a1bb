"""The dashboard in a real browser: served by ``streamlit run`` on a free port against a seeded
store, driven by headless Chromium over the DevTools protocol (``newspulse.dashboard.screenshots``).

Checks that the Overview really renders (a screenshot that is not blank), that a headline
carrying ``<script>``/``<img onerror>`` reaches the DOM as text (no such element, no dialog),
that a shared link keeps its filters in the browser's address bar, and that the story drill-down
shows each company's verdict with its evidence highlighted in the text, hostile evidence inert.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from newspulse.dashboard.screenshots import CHROMIUM, capture, chromium, open_page, serve_dashboard, wait_until
from newspulse.store.sqlite import SQLiteStore
from test_dashboard_app import GOOD_FOR_GM, HOSTILE_FOR_XOM, IMG, SCRIPT, TWO_COMPANY_TITLE, seed_store, two_company_story

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 1400, 1900


@pytest.fixture
def served(np_env):
    """``streamlit run dashboard/app.py`` against a seeded store; stopped by PID."""
    seed_store(np_env / "newspulse.db")
    store = SQLiteStore(np_env / "newspulse.db")
    assert store.upsert_articles([two_company_story()]).ok
    store.close()
    env = {
        "NEWSPULSE_STORE_URL": f"sqlite:///{np_env / 'newspulse.db'}",
        "NEWSPULSE_MODEL_REGISTRY": str(np_env / "registry"),
        "NEWSPULSE_ALERT_SILENCES": str(np_env / "silences.json"),
        "NEWSPULSE_DASHBOARD_REFRESH_S": "3600",  # on (as shipped), but no refresh while the test looks
        "NEWSPULSE_DASHBOARD_PASSWORD": None,
    }
    with serve_dashboard(env, np_env / "streamlit.log") as url:
        yield url


@pytest.fixture
def browser(tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("needs /usr/bin/chromium (apt-get install -y chromium)")
    with chromium(tmp_path / "chromium", WIDTH, HEIGHT) as client:
        yield client


def test_overview_renders_in_chromium_and_shows_html_headlines_as_text(served, browser, tmp_path):
    from PIL import Image

    state = open_page(browser, served, ["Most negative stories", "Market sentiment"], min_charts=3)
    path = capture(browser, tmp_path / "overview.png")

    # the hostile headline is in the page as text, and did nothing
    text = browser.evaluate("document.body.innerText")
    assert SCRIPT in text and IMG in text
    assert_inert(browser)
    assert "1 alert firing" in state["text"]

    # the screenshot is a rendered dashboard, not a blank page
    image = Image.open(path).convert("RGB")
    assert image.size == (WIDTH, HEIGHT)
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 500, f"only {len(colours)} colours"
    main = image.crop((WIDTH // 4, 0, WIDTH, HEIGHT))  # right of the sidebar
    counts = main.getcolors(maxcolors=1 << 20)
    background = max(counts)[0] / (main.width * main.height)
    assert background < 0.9, f"{background:.0%} of the main area is one colour"


def assert_inert(browser) -> None:
    """No element, script or dialog came out of the hostile text on the page."""
    assert browser.evaluate("document.querySelectorAll('img[src=\"x\"], img[onerror]').length") == 0
    assert browser.evaluate("[...document.scripts].filter(s => s.textContent.includes('alert(1)')).length") == 0
    assert not [e for e in browser.events if e.get("method") == "Page.javascriptDialogOpening"]


_HIGHLIGHTS = """[...document.querySelectorAll('[data-testid="stMarkdownContainer"] span')]
  .filter(s => s.className.includes('ColoredBackground'))
  .map(s => [s.textContent, getComputedStyle(s).backgroundColor])"""


def test_story_drill_down_shows_company_verdicts_and_highlighted_evidence_in_chromium(served, browser):
    story = two_company_story()
    open_page(browser, served + "ticker?ticker=XOM", ["Why negative"], min_charts=2)
    # the newest story negative about XOM is the two-company one; its Story link opens the drill-down
    browser.evaluate("""document.querySelector('[data-testid="stMain"] [data-testid="stPageLink-NavLink"]').click()""")
    wait_until(lambda: "Why the story verdict" in browser.evaluate("document.body.innerText"), 60, "the story page")
    state = open_page(browser, browser.evaluate("location.href"), ["GM positive +0.85", "XOM negative -0.90", "Why the story verdict"])
    assert parse_qs(urlsplit(state["url"]).query)["article"] == [story.id]
    text = state["text"]
    assert "Story: negative -0.60" in text
    assert "XOM: negative -0.86 from 2 mentions" in text and "GM: positive +0.80 from 2 mentions" in text
    assert "TXN: negative -0.60 from the story (the company is not named in the text)" in text
    highlights = dict(browser.evaluate(_HIGHLIGHTS))  # passage -> background colour, at the stored offsets
    assert set(highlights) == {TWO_COMPANY_TITLE, GOOD_FOR_GM, HOSTILE_FOR_XOM}
    assert len({highlights[TWO_COMPANY_TITLE], highlights[GOOD_FOR_GM], highlights[HOSTILE_FOR_XOM]}) == 3  # mixed, positive, negative
    assert HOSTILE_FOR_XOM in text and SCRIPT in text and IMG in text  # shown as text
    assert_inert(browser)

    state = open_page(browser, served + f"story?article={story.id}&highlight=story", ["story negative -0.70"])
    assert set(dict(browser.evaluate(_HIGHLIGHTS))) == {TWO_COMPANY_TITLE, HOSTILE_FOR_XOM}  # the story verdict's passages
    assert parse_qs(urlsplit(state["url"]).query)["highlight"] == ["story"]


def test_a_shared_link_keeps_its_filters_in_the_address_bar(served, browser):
    state = open_page(browser, served + "ticker?ticker=GM&range=7d", ["What moved it"], min_charts=2)
    assert "GM" in state["text"] and "Last 7 days" in state["text"]
    assert parse_qs(urlsplit(state["url"]).query) == {"ticker": ["GM"], "range": ["7d"]}
    state = open_page(browser, served + "alerts?alert=alert-market", ["Resolved (1)", "Articles that drove it"])
    query = parse_qs(urlsplit(state["url"]).query)
    assert query["status"] == ["resolved"] and query["alert"] == ["alert-market"]  # the page completed the link
