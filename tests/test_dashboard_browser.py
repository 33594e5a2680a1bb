"""The dashboard in a real browser: served by ``streamlit run`` on a free port against a seeded
store, driven by headless Chromium over the DevTools protocol (``newspulse.dashboard.screenshots``).

Checks that the Overview really renders (a screenshot that is not blank), that a headline
carrying ``<script>``/``<img onerror>`` reaches the DOM as text (no such element, no dialog),
and that a shared link keeps its filters in the browser's address bar.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from newspulse.dashboard.screenshots import CHROMIUM, capture, chromium, open_page, serve_dashboard
from test_dashboard_app import IMG, SCRIPT, seed_store

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 1400, 1900


@pytest.fixture
def served(np_env):
    """``streamlit run dashboard/app.py`` against a seeded store; stopped by PID."""
    seed_store(np_env / "newspulse.db")
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
    assert browser.evaluate("document.querySelectorAll('img[src=\"x\"], img[onerror]').length") == 0
    assert browser.evaluate("[...document.scripts].filter(s => s.textContent.includes('alert(1)')).length") == 0
    assert not [e for e in browser.events if e.get("method") == "Page.javascriptDialogOpening"]
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


def test_a_shared_link_keeps_its_filters_in_the_address_bar(served, browser):
    state = open_page(browser, served + "ticker?ticker=GM&range=7d", ["What moved it"], min_charts=2)
    assert "GM" in state["text"] and "Last 7 days" in state["text"]
    assert parse_qs(urlsplit(state["url"]).query) == {"ticker": ["GM"], "range": ["7d"]}
    state = open_page(browser, served + "alerts?alert=alert-market", ["Resolved (1)", "Articles that drove it"])
    query = parse_qs(urlsplit(state["url"]).query)
    assert query["status"] == ["resolved"] and query["alert"] == ["alert-market"]  # the page completed the link
