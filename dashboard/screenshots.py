"""Screenshots of the served dashboard, taken in headless Chromium over the DevTools protocol.

The browser test uses this to check that pages really render; the README's screenshots are
made with it from the product on real news::

    newspulse replay --file data/news/reuters21578.csv.gz --limit 2500   # the real pipeline and model
    python -m newspulse.dashboard.screenshots --source sqlite:///var/newspulse.db --until 1987-03-03T10:40:00Z
    python -m newspulse.dashboard.screenshots ... --pages story            # only the story drill-down

``--until`` stops the stream at an event time, as Ctrl-C stops ``make demo``: the stored,
scored articles up to then are copied into a fresh store and the alerter is run over them in
event-time order without closing its last windows, so an alert that fires at that moment is
still firing on the Alerts page. Pages are captured once their text is on screen, their charts
are drawn and Streamlit has finished running (waited for in real time, never a fixed sleep).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = Path(__file__).resolve().parent / "app.py"
CHROMIUM = Path("/usr/bin/chromium")
MAX_PNG_BYTES = 400_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], object], timeout: float, what: str):
    """Poll ``check`` in real time until it returns something truthy; TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.25)
    raise TimeoutError(f"gave up waiting for {what}")


def http_get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.read().decode()
    except OSError:
        return None


def stop(proc: subprocess.Popen) -> None:
    """End a process we started, by its PID: politely, then for sure."""
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


@contextmanager
def serve_dashboard(env: dict[str, str | None], log_path: Path) -> Iterator[str]:
    """``streamlit run dashboard/app.py`` on a free loopback port with ``env`` over this process's
    environment (None removes a variable); yields its URL, stops it by PID."""
    port = free_port()
    merged = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port), "--server.address", "127.0.0.1",
           "--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
           "--client.toolbarMode", "viewer"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=merged, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: http_get(f"http://127.0.0.1:{port}/_stcore/health") == "ok", 60, "streamlit to serve")
            yield f"http://127.0.0.1:{port}/"
        finally:
            stop(proc)


@contextmanager
def chromium(profile: Path, width: int, height: int) -> Iterator[DevTools]:
    """Headless Chromium with a DevTools port; a client attached to its first tab."""
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--hide-scrollbars",
           "--no-first-run", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1", f"--user-data-dir={profile}",
           f"--window-size={width},{height}", "about:blank"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        port = wait_until(lambda: port_file.exists() and port_file.read_text().split("\n")[0].strip(), 30, "chromium's DevTools port")
        tabs = wait_until(lambda: http_get(f"http://127.0.0.1:{port}/json/list"), 10, "chromium's tab list")
        page = next(t for t in json.loads(tabs) if t["type"] == "page")
        client = DevTools(page["webSocketDebuggerUrl"])
        client.call("Page.enable")
        client.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        try:
            yield client
        finally:
            client.close()
    finally:
        stop(proc)


_PAGE_STATE = """((texts, minCharts) => {
  const text = document.body ? document.body.innerText : "";
  const charts = document.querySelectorAll('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg.marks').length;
  const stale = document.querySelectorAll('[data-stale="true"]').length;
  const running = !!document.querySelector('[data-testid="stStatusWidgetRunningIcon"]');
  // widgets whose code is still loading show a grey placeholder in their place
  const loading = document.querySelectorAll('[data-testid="stSkeleton"], [data-testid="stSkeletonElement"]').length;
  return {ready: texts.every(t => text.includes(t)) && charts >= minCharts && stale === 0 && !running && loading === 0,
          charts: charts, text: text, url: location.href};
})"""


def open_page(browser: DevTools, url: str, texts: list[str], min_charts: int = 0, timeout: float = 120) -> dict:
    """Navigate and wait until the page shows ``texts`` and ``min_charts`` drawn charts, no widget
    is a loading placeholder and Streamlit is idle; returns the page's text, chart count and URL
    at that moment."""
    browser.call("Page.navigate", url=url)
    expression = f"{_PAGE_STATE}({json.dumps(texts)}, {min_charts})"
    state = wait_until(lambda: (s := browser.evaluate(expression)) and s["ready"] and s, timeout, f"{url} to render")
    # Vega draws a frame after the element exists; wait for two animation frames to pass.
    browser.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    return state


def capture(browser: DevTools, path: Path, *, compact: bool = False) -> Path:
    """A PNG of the viewport. ``compact`` reduces it to a 256-colour palette (the dashboard is
    flat colour, so this is visually lossless) to keep a committed screenshot small."""
    path.write_bytes(base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"]))
    if compact:
        from PIL import Image

        with Image.open(path) as image:
            palette = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        palette.save(path, optimize=True)
    return path


def stop_stream_at(source_url: str, target: Path, until: datetime) -> dict:
    """Copy the scored articles before ``until`` into a fresh SQLite store and run the alerter over
    them in event-time order without closing its last windows (a stream stopped at ``until``)."""
    from newspulse.wiring import build_alerter
    from newspulse.settings import load_settings
    from newspulse.store import Filter
    from newspulse.wiring import open_store

    source = open_store(load_settings().model_copy(update={"store_url": source_url}))
    settings = load_settings().model_copy(update={"store_url": f"sqlite:///{target}", "alert_silences": target.with_suffix(".silences.json")})
    store = open_store(settings)
    alerter = build_alerter(settings, store, recover=False)
    copied = 0
    try:
        for batch in source.iter_articles(Filter(end=until), batch_size=200):
            store.upsert_articles(batch)
            alerter.observe(batch)
            copied += len(batch)
        alerter.close()
        return {"articles": copied, "alerts": {a.scope: a.status.value for a in store.list_alerts()}}
    finally:
        source.close()
        store.close()


def pick_story(store_url: str) -> str | None:
    """The id of the story that shows company verdicts best: most companies read differently
    (distinct labels among verdicts from mentions), then most evidence, then the shortest text
    (it fits the screenshot). None when no story has two companies with their own verdicts."""
    from newspulse.settings import load_settings
    from newspulse.store import Filter
    from newspulse.wiring import open_store

    store = open_store(load_settings().model_copy(update={"store_url": store_url}))
    best: tuple | None = None
    try:
        for batch in store.iter_articles(Filter(), batch_size=500):
            for article in batch:
                own = [v for v in article.entities if v.basis == "mentions"]
                if len(own) < 2:
                    continue
                rank = (len({v.label for v in own}), sum(len(v.evidence) for v in own), -len(article.text))
                if best is None or rank > best[0]:
                    best = (rank, article.id)
    finally:
        store.close()
    return best[1] if best else None


PAGES = ("overview", "alerts", "story")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m newspulse.dashboard.screenshots", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="Store URL of a replay scored by the real pipeline.")
    parser.add_argument("--until", required=True, type=datetime.fromisoformat, help="Event time the stream stops at (ISO 8601, UTC).")
    parser.add_argument("--range", default="7d", help="Time range of the pages (24h, 7d, 30d, 90d, all).")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="Folder for the screenshot-<page>.png files.")
    parser.add_argument("--pages", default=",".join(PAGES), help=f"Comma-separated pages to capture, of {', '.join(PAGES)}.")
    parser.add_argument("--story", help="Article id of the Story page's screenshot; default: the story up to --until whose "
                        "companies are read most differently (see pick_story).")
    args = parser.parse_args(argv)
    pages = [p.strip() for p in args.pages.split(",") if p.strip()]
    unknown = sorted(set(pages) - set(PAGES))
    if unknown:
        parser.error(f"--pages: unknown {', '.join(unknown)} (choose from {', '.join(PAGES)})")
    with tempfile.TemporaryDirectory(prefix="newspulse-shots-") as tmp:
        work = Path(tmp)
        store_url = f"sqlite:///{work / 'newspulse.db'}"
        summary = stop_stream_at(args.source, work / "newspulse.db", args.until)
        print(json.dumps(summary))
        if "alerts" in pages and "firing" not in summary["alerts"].values():
            sys.exit(f"no alert is firing at {args.until.isoformat()}; pick a moment inside an alert's span")
        story = args.story or ("story" in pages and pick_story(store_url))
        if "story" in pages and not story:
            sys.exit("no story up to --until has two companies with verdicts of their own; score the replay with the "
                     "entity-level pipeline (or `newspulse model rescore`) first")
        env = {"NEWSPULSE_STORE_URL": store_url, "NEWSPULSE_ALERT_SILENCES": str(work / "newspulse.silences.json"),
               "NEWSPULSE_DASHBOARD_REFRESH_S": "3600", "NEWSPULSE_DASHBOARD_PASSWORD": None}
        shots = {
            "overview": (f"?range={args.range}", ["Most negative stories", "Market sentiment", "firing"], 3, 1900),
            "alerts": (f"alerts?range={args.range}&status=firing", ["Articles that drove it", "Firing (1"], 1, 1500),
            "story": (f"story?range={args.range}&article={story}", ["Verdicts", "Why the story verdict"], 0, 1900),
        }
        with serve_dashboard(env, work / "streamlit.log") as url:
            for page in pages:
                path, texts, charts, height = shots[page]
                name = f"screenshot-{page}.png"
                with chromium(work / f"chromium-{name}", 1400, height) as browser:
                    open_page(browser, url + path, texts, charts)
                    shot = capture(browser, args.out / name, compact=True)
                size = shot.stat().st_size
                print(f"{shot}: {size:,} bytes")
                if size > MAX_PNG_BYTES:
                    sys.exit(f"{shot} is {size:,} bytes, over {MAX_PNG_BYTES:,}")


if __name__ == "__main__":
    main()
