"""Fault scenario R4: the real crawler against every hostile feed at once, next to healthy ones.

Local HTTP servers stand in for the internet: each "site" is its own server (own port) on
127.0.0.2, an address this scenario's SSRF policy treats as public, so every feed runs with the
guard *on*, as in production. A private "internal" server on 127.0.0.1 plays the metadata service
that redirects aim at; it must never see a request.

Hostile sites: a slow drip (one byte every 2 s), robots.txt with ``Crawl-delay: 100000``, a
redirect loop, redirects to private addresses (127.0.0.1 and 169.254.169.254), a 50 MB body, broken
XML, and a feed whose entries carry unparsable links (port 99999, a DEL character) between good
ones. Healthy sites: three news feeds that publish a new story (Reuters text) on every poll.

The crawler runs in service mode (``Crawler.run_forever``, production settings except a 30 s
poll interval) for ``duration_s``. Figures: each healthy feed's poll delay (max, p95: how late a
poll started against its schedule), polls completed, articles emitted; errors by kind; requests
that reached the private server; whether anything crashed.

    python bench/faults_crawler.py [--duration 150]   # one line; merged into bench/results/faults.json
"""

from __future__ import annotations

import argparse
import csv
import gzip
import ipaddress
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

from newspulse.ingest.crawler import Crawler, FeedReport  # noqa: E402
from newspulse.ingest.feeds import FeedConfig  # noqa: E402
from newspulse.ingest.fetch import Fetcher, IPAddress, is_blocked  # noqa: E402
from newspulse.settings import Settings, load_settings  # noqa: E402
from fault_results import Outcome, machine, write_results  # noqa: E402
from provenance import commit  # noqa: E402
from test_ingest_crawler import Route, text  # noqa: E402  (the crawler tests' response routes)

PUBLIC_STANDIN = ipaddress.ip_address("127.0.0.2")  # "the internet" of this scenario
INTERVAL_S = 30  # the shortest poll interval a feeds file allows
HEALTHY = ("Healthy wire 1", "Healthy wire 2", "Healthy wire 3")
HOSTILE_KINDS = {  # the error kind each hostile feed must produce
    "Slow drip": {"timeout", "budget"},
    "Huge Crawl-delay": {"politeness"},
    "Redirect loop": {"redirect"},
    "Redirect to private": {"ssrf"},
    "50 MB body": {"too_large"},
    "Broken XML": {"malformed"},
    "Bad links": {"bad_link"},
}


class Site:
    """One web site: a threaded HTTP server with routes; counts requests per path."""

    def __init__(self, host: str, routes: dict[str, Route] | None = None) -> None:
        self.routes: dict[str, Route] = {"/robots.txt": text(b"User-agent: *\nAllow: /\n", "text/plain"), **(routes or {})}
        self.hits: Counter[str] = Counter()
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                path = self.path.split("?")[0]
                site.hits[path] += 1
                route = site.routes.get(path)
                if route is None:
                    self.send_error(404)
                    return
                try:
                    route(self)
                except (BrokenPipeError, ConnectionResetError):  # the crawler hung up: expected here
                    self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def redirect(location: str) -> Route:
    return text(b"", "text/plain", 302, {"Location": location})


def drip(every_s: float) -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/rss+xml")
        h.end_headers()
        for _ in range(10_000):
            h.wfile.write(b" ")
            h.wfile.flush()
            time.sleep(every_s)

    return route


def huge(total: int) -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/rss+xml")  # no Content-Length: only streaming can tell
        h.end_headers()
        chunk = b"<" * 65536
        for _ in range(total // len(chunk)):
            h.wfile.write(chunk)

    return route


def rss(items: list[tuple[str, str, str, str]]) -> bytes:
    """An RSS 2.0 document of (title, link, description, RFC 822 date) items."""
    from xml.sax.saxutils import escape

    body = "".join(
        f"<item><title>{escape(t)}</title><link>{escape(link)}</link><description>{escape(d)}</description><pubDate>{date}</pubDate></item>"
        for t, link, d, date in items
    )
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>bench</title>{body}</channel></rss>'.encode()


def reuters_stories(n: int) -> list[tuple[str, str]]:
    """``n`` (title, body) pairs from the bundled Reuters corpus, long enough to be news and not
    duplicates to the crawler's own dedup (the corpus holds near-identical wire stories)."""
    from datetime import datetime, timezone

    from newspulse.ingest.dedup import DedupState
    from newspulse.schema import Article

    out: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="newspulse-r4-stories-") as tmp, DedupState(Path(tmp) / "pick.db") as state:
        with gzip.open(ROOT / "data" / "news" / "reuters21578.csv.gz", "rt", encoding="utf-8", newline="") as fh:
            for number, row in enumerate(csv.DictReader(fh)):
                title, body = row["title"].strip().title(), " ".join(row["body"].split())
                if len(body) <= 400:
                    continue
                article = Article(published_at=datetime.now(timezone.utc), source="pick", title=title, body=body, url=f"http://pick.test/{number}")
                if not state.check_and_record(article).is_duplicate:
                    out.append((title, body))
                    if len(out) == n:
                        break
    return out


class NewsSite(Site):
    """A healthy publisher: every poll of its feed publishes one more story (and keeps the last 10)."""

    def __init__(self, host: str, stories: Iterator[tuple[str, str]]) -> None:
        super().__init__(host)
        self.stories = stories
        self.published: list[tuple[str, str, str]] = []  # (title, path, date)
        self.lock = threading.Lock()
        self.routes["/feed.xml"] = self.feed

    def feed(self, h: BaseHTTPRequestHandler) -> None:
        with self.lock:
            title, body = next(self.stories)
            n = len(self.published)
            path = f"/story/{n}"
            date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() - 3600 + n))
            self.published.append((title, path, date))
            page = f"<html><head><title>{title}</title></head><body><article><h1>{title}</h1><p>{body}</p></article></body></html>"
            self.routes[path] = text(page.encode(), "text/html; charset=utf-8")
            items = [(t, self.base + p, t, d) for t, p, d in self.published[-10:]]
        text(rss(items))(h)


def bench_policy(ip: IPAddress) -> bool:
    """The SSRF policy of this scenario: production's, except that 127.0.0.2 is "the internet"."""
    return ip != PUBLIC_STANDIN and is_blocked(ip)


class RecordingCrawler(Crawler):
    """The production crawler, recording every poll's start delay and report while ``recording``.

    Polls still running when the run ends are cut off by shutdown; they are not counted."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.polls: list[tuple[str, float, FeedReport]] = []
        self.recording = True

    def poll(self, feed: FeedConfig, *, delay: float = 0.0) -> FeedReport:
        report = super().poll(feed, delay=delay)
        if self.recording:
            self.polls.append((feed.name, delay, report))
        return report


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else (values[0] if values else 0.0)


def hostile_sites(internal: Site) -> dict[str, tuple[Site, str]]:
    """Feed name → (site, feed path) for every hostile case."""
    host = str(PUBLIC_STANDIN)
    good = ("Good story", "/good/1", "A good story that carries a valid link and enough words to be news.", "Mon, 01 Jan 2024 08:00:00 GMT")
    polite = ("Slow site story", "/polite/1", "The only story of a site that asks for one request a day, summarised in its feed.", "Mon, 01 Jan 2024 07:00:00 GMT")
    bad_links = rss(
        [
            good,
            ("Port out of range", "http://news.example.com:99999/story", "A story whose link has port 99999, which no URL parser accepts.", "Mon, 01 Jan 2024 09:00:00 GMT"),
            ("DEL in link", "http://news.example.com/a\x7fb", "A story whose link carries a DEL control character in its path.", "Mon, 01 Jan 2024 09:30:00 GMT"),
            ("Good story after bad links", "/good/2", "A good story later in the same feed, which must still be emitted.", "Mon, 01 Jan 2024 11:00:00 GMT"),
        ]
    )
    sites = {
        "Slow drip": (Site(host, {"/feed.xml": drip(2.0)}), "/feed.xml"),
        "Huge Crawl-delay": (Site(host, {"/robots.txt": text(b"User-agent: *\nCrawl-delay: 100000\n", "text/plain"), "/feed.xml": text(rss([polite]))}), "/feed.xml"),
        "Redirect loop": (Site(host, {"/a.xml": redirect("/b.xml"), "/b.xml": redirect("/a.xml")}), "/a.xml"),
        "50 MB body": (Site(host, {"/feed.xml": huge(50 * 1024 * 1024)}), "/feed.xml"),
        "Broken XML": (Site(host, {"/feed.xml": text(b'<?xml version="1.0"?>\n<rss version="2.0"><channel><title>Broken <item><title>Unclosed & bad\n<<<< not xml at all >>>>\n')}), "/feed.xml"),
        "Bad links": (Site(host, {"/feed.xml": text(bad_links), "/good/1": text(b"<html><body><p>A good story.</p></body></html>", "text/html")}), "/feed.xml"),
    }
    private = Site(host, {"/feed.xml": redirect(internal.base + "/latest/meta-data/"), "/meta.xml": redirect("http://169.254.169.254/latest/meta-data/")})
    sites["Redirect to private"] = (private, "/feed.xml")
    sites["Redirect to metadata"] = (private, "/meta.xml")
    return sites


def r4_hostile_feeds(duration_s: float = 150.0, settings: Settings | None = None) -> dict:
    """Run the crawler for ``duration_s`` against all hostile feeds at once; return the figures."""
    internal = Site("127.0.0.1", {"/latest/meta-data/": text(b"iam-credentials", "text/plain")})
    stories = iter(reuters_stories(3 * (int(duration_s // INTERVAL_S) + 3)))
    healthy = {name: NewsSite(str(PUBLIC_STANDIN), stories) for name in HEALTHY}
    hostile = hostile_sites(internal)
    feeds = [FeedConfig(name=n, url=s.base + "/feed.xml", poll_interval=INTERVAL_S) for n, s in healthy.items()]
    feeds += [FeedConfig(name=n, url=s.base + path, poll_interval=INTERVAL_S) for n, (s, path) in hostile.items()]
    emitted: Counter[str] = Counter()
    crashes: list[str] = []
    previous_hook = threading.excepthook
    threading.excepthook = lambda a: crashes.append(f"{a.thread.name if a.thread else '?'}: {a.exc_type.__name__}: {a.exc_value}")
    with tempfile.TemporaryDirectory(prefix="newspulse-r4-") as tmp:
        cfg = settings or load_settings(crawler_state=Path(tmp) / "crawler.db")
        fetcher = Fetcher(
            user_agent=cfg.crawler_user_agent, timeout_s=cfg.crawler_timeout_s, max_bytes=cfg.crawler_max_body_bytes,
            host_delay_s=cfg.crawler_host_delay_s, max_crawl_delay_s=cfg.crawler_max_crawl_delay_s, blocked=bench_policy,
        )
        crawler = RecordingCrawler(feeds, cfg, lambda articles: emitted.update(a.source for a in articles), fetcher=fetcher)
        stop = threading.Event()
        runner = threading.Thread(target=crawler.run_forever, args=(stop,), name="run_forever")
        started = time.monotonic()
        runner.start()
        for _ in tqdm(range(int(duration_s)), desc="R4 hostile feeds", unit="s", file=sys.stderr):
            time.sleep(max(0.0, min(1.0, started + duration_s - time.monotonic())))
        crawler.recording = False
        stop.set()
        runner.join(cfg.crawler_timeout_s + 30)
        if runner.is_alive():
            crashes.append("run_forever did not return after stop")
        stopped_s = time.monotonic() - started - duration_s
        crawler.close()
    threading.excepthook = previous_hook
    for site in [internal, *healthy.values(), *{id(s): s for s, _ in hostile.values()}.values()]:
        site.close()

    errors: dict[str, Counter[str]] = defaultdict(Counter)
    for name, _, report in crawler.polls:
        errors[name].update(report.error_kinds)
    healthy_figures = {}
    for name in HEALTHY:
        delays = [d for n, d, _ in crawler.polls if n == name]
        reports = [r for n, _, r in crawler.polls if n == name]
        healthy_figures[name] = {
            "polls": len(reports),
            "polls_ok": sum(r.status == "ok" for r in reports),
            "articles": emitted[name],
            "poll_delay_max_s": round(max(delays, default=0.0), 3),
            "poll_delay_p95_s": round(p95(delays), 3),
        }
    return {
        "duration_s": duration_s,
        "poll_interval_s": INTERVAL_S,
        "healthy": healthy_figures,
        "hostile": {name: {"polls": sum(n == name for n, _, _ in crawler.polls), "articles": emitted[name], "errors": dict(errors[name])} for name in hostile},
        "errors_by_kind": dict(sum(errors.values(), Counter())),
        "private_requests": sum(internal.hits.values()),
        "stopped_after_s": round(stopped_s, 1),
        "crashed": bool(crashes),
        "crashes": crashes,
    }


def r4_verdict(figures: dict) -> tuple[bool, list[str]]:
    """Pass when nothing crashed, no byte reached a private address, every healthy feed kept its
    schedule (every scheduled poll made, ok, each under 5 s late, each poll's new story emitted)
    and every hostile case was recognised for what it is."""
    problems = []
    expected_polls = int(figures["duration_s"] // figures["poll_interval_s"])
    for name, h in figures["healthy"].items():
        if h["polls_ok"] < expected_polls or h["poll_delay_max_s"] >= 5.0 or h["articles"] != h["polls_ok"]:
            problems.append(f"{name}: {h}")
    for name, kinds in HOSTILE_KINDS.items():
        if not kinds & set(figures["hostile"][name]["errors"]):
            problems.append(f"{name}: expected {sorted(kinds)}, got {figures['hostile'][name]['errors']}")
    if "ssrf" not in figures["hostile"]["Redirect to metadata"]["errors"]:
        problems.append("Redirect to metadata: not refused")
    if figures["duration_s"] >= 90 and figures["hostile"]["Huge Crawl-delay"]["articles"] < 1:
        problems.append("Huge Crawl-delay: its story never came through at the capped pace")
    if figures["hostile"]["Bad links"]["articles"] < 2:
        problems.append("Bad links: the good entries were not emitted")
    if figures["private_requests"] or figures["crashed"]:
        problems.append(f"private_requests={figures['private_requests']}, crashes={figures['crashes']}")
    return not problems, problems


def r4_result(duration_s: float = 150.0) -> tuple[bool, dict, dict, float]:
    """``(passed, figures, params, seconds)``: the R4 outcome as bench/faults.py records one."""
    t0 = time.monotonic()
    figures = r4_hostile_feeds(duration_s)
    passed, problems = r4_verdict(figures)
    summary = {
        "healthy_poll_delay_max_s": max(h["poll_delay_max_s"] for h in figures["healthy"].values()),
        "healthy_poll_delay_p95_s": max(h["poll_delay_p95_s"] for h in figures["healthy"].values()),
        "healthy_polls": sum(h["polls"] for h in figures["healthy"].values()),
        "healthy_articles": sum(h["articles"] for h in figures["healthy"].values()),
        "private_requests": figures["private_requests"],
        "crashed": figures["crashed"],
    }
    return passed, {**summary, **figures, "problems": problems}, {"duration_s": duration_s, "poll_interval_s": INTERVAL_S}, time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=150.0, help="seconds the crawler runs (healthy feeds poll every 30 s)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "faults.json", help="results file (merged)")
    args = ap.parse_args(argv)
    from datetime import datetime, timezone

    run_info = {"started_at": datetime.now(timezone.utc).isoformat(), "machine": machine(), "commit": commit()}
    outcome = Outcome("R4 hostile feeds", *r4_result(args.duration))
    print(outcome.line(), flush=True)
    for problem in outcome.figures["problems"]:
        print(f"    {problem}", flush=True)
    write_results(args.out, [outcome], run_info)
    return 0 if outcome.passed else 1


if __name__ == "__main__":
    sys.exit(main())
