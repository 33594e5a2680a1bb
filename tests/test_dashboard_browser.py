"""The dashboard in a real browser: served by ``streamlit run`` on a free port against a seeded
store, driven by headless Chromium over the DevTools protocol.

Checks that the Overview really renders (a screenshot that is not blank), and that a headline
carrying ``<script>``/``<img onerror>`` reaches the DOM as text: no such element, no dialog.
``NEWSPULSE_UPDATE_SCREENSHOT=1`` also copies the screenshot to docs/screenshot-overview.png.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_dashboard_app import APP, IMG, ROOT, SCRIPT, seed_store

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "docs" / "screenshot-overview.png"
WIDTH, HEIGHT = 1400, 1900


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.25)
    raise TimeoutError(f"gave up waiting for {what}")


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.read().decode()
    except OSError:
        return None


def stop(proc: subprocess.Popen) -> None:
    """End a process this test started, by its PID: politely, then for sure."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class DevTools:
    """A minimal Chrome DevTools Protocol client: commands by id, events kept for inspection."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=None, open_timeout=10)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, timeout: float = 30, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
            self.events.append(msg)

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def served(np_env, monkeypatch):
    """``streamlit run dashboard/app.py`` on a free port against a seeded store; stopped by PID."""
    seed_store(np_env / "newspulse.db")
    port = free_port()
    env = {
        **os.environ,
        "NEWSPULSE_STORE_URL": f"sqlite:///{np_env / 'newspulse.db'}",
        "NEWSPULSE_MODEL_REGISTRY": str(np_env / "registry"),
        "NEWSPULSE_ALERT_SILENCES": str(np_env / "silences.json"),
        "NEWSPULSE_DASHBOARD_REFRESH_S": "3600",  # on (as shipped), but no refresh while the test looks
    }
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port), "--server.address", "127.0.0.1",
           "--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    log = open(np_env / "streamlit.log", "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _get(f"http://127.0.0.1:{port}/_stcore/health") == "ok", 60, "streamlit to serve")
        yield f"http://127.0.0.1:{port}/"
    finally:
        stop(proc)
        log.close()


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium with a DevTools port; a client attached to its first tab."""
    if not CHROMIUM.exists():
        pytest.skip("needs /usr/bin/chromium (apt-get install -y chromium)")
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--hide-scrollbars",
           "--no-first-run", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1", f"--user-data-dir={tmp_path / 'chromium'}",
           f"--window-size={WIDTH},{HEIGHT}", "about:blank"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = tmp_path / "chromium" / "DevToolsActivePort"
        port = wait_until(lambda: port_file.exists() and port_file.read_text().split("\n")[0].strip(), 30, "chromium's DevTools port")
        tabs = wait_until(lambda: _get(f"http://127.0.0.1:{port}/json/list"), 10, "chromium's tab list")
        page = next(t for t in json.loads(tabs) if t["type"] == "page")
        client = DevTools(page["webSocketDebuggerUrl"])
        yield client
        client.close()
    finally:
        stop(proc)


_READY = """(() => {
  const text = document.body ? document.body.innerText : "";
  const charts = document.querySelectorAll('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg.marks').length;
  const stale = document.querySelectorAll('[data-stale="true"]').length;
  const running = !!document.querySelector('[data-testid="stStatusWidgetRunningIcon"]');
  return {ready: text.includes("Most negative stories") && text.includes("Market sentiment") && charts >= 3 && stale === 0 && !running,
          charts: charts, text: text};
})()"""


def test_overview_renders_in_chromium_and_shows_html_headlines_as_text(served, browser, tmp_path):
    from PIL import Image

    browser.call("Page.enable")
    browser.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)
    browser.call("Page.navigate", url=served)
    state = wait_until(lambda: (s := browser.evaluate(_READY)) and s["ready"] and s, 120, "the overview to render")
    time.sleep(1.5)  # let the charts finish painting
    shot = browser.call("Page.captureScreenshot", format="png")
    path = tmp_path / "overview.png"
    path.write_bytes(base64.b64decode(shot["data"]))

    # the hostile headline is in the page as text, and did nothing
    text = browser.evaluate("document.body.innerText")
    assert SCRIPT in text and IMG in text
    assert browser.evaluate("document.querySelectorAll('img[src=\"x\"], img[onerror]').length") == 0
    assert browser.evaluate("[...document.scripts].filter(s => s.textContent.includes('alert(1)')).length") == 0
    assert not [e for e in browser.events if e.get("method") == "Page.javascriptDialogOpening"]
    assert re.search(r"1 alert firing", state["text"])

    # the screenshot is a rendered dashboard, not a blank page
    image = Image.open(path).convert("RGB")
    assert image.size == (WIDTH, HEIGHT)
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 500, f"only {len(colours)} colours"
    main = image.crop((WIDTH // 4, 0, WIDTH, HEIGHT))  # right of the sidebar
    counts = main.getcolors(maxcolors=1 << 20)
    background = max(counts)[0] / (main.width * main.height)
    assert background < 0.9, f"{background:.0%} of the main area is one colour"
    if os.environ.get("NEWSPULSE_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(path, SCREENSHOT)
