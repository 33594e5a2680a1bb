"""The crawler against a local HTTP server serving fixture feeds and pages, good and hostile."""

from __future__ import annotations

import email.utils
import json
import re
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from newspulse.ingest.crawler import Crawler
from newspulse.ingest.dedup import DedupState
from newspulse.ingest.feeds import FeedConfig
from newspulse.ingest.fetch import CHUNK_BYTES, Fetcher, FetchError, check_public, retry_after_seconds
from newspulse.schema import Article
from newspulse.settings import load_settings

FIXTURES = Path(__file__).parent / "fixtures" / "ingest"

Route = Callable[[BaseHTTPRequestHandler], None]


class FixtureServer:
    """http.server in a thread; ``routes`` maps a path to a handler; every request is recorded."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {"/robots.txt": text("User-agent: *\nDisallow: /private/\n", "text/plain")}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.sent: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                path = self.path.split("?")[0]
                server.requests.append((path, dict(self.headers)))
                route = server.routes.get(path)
                if route is None:
                    self.send_error(404)
                    return
                route(self)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def hits(self, path: str) -> int:
        return sum(p == path for p, _ in self.requests)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def text(body: str | bytes, content_type: str = "application/rss+xml", status: int = 200, headers: dict[str, str] | None = None) -> Route:
    data = body.encode() if isinstance(body, str) else body

    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    return route


def fixture(name: str, content_type: str = "application/rss+xml") -> Route:
    return text((FIXTURES / name).read_bytes(), content_type)


def streamed(body: bytes, content_type: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """A MockTransport response read as a network stream would be (the fetcher reads raw bytes)."""
    return httpx.Response(200, stream=httpx.ByteStream(body), headers={"Content-Type": content_type, **(headers or {})})


@pytest.fixture
def server() -> Iterator[FixtureServer]:
    srv = FixtureServer()
    yield srv
    srv.close()


@pytest.fixture
def settings(tmp_path: Path):
    return load_settings(
        crawler_state=tmp_path / "crawler.db",
        crawler_host_delay_s=0,
        crawler_timeout_s=2,
        crawler_max_body_bytes=1_000_000,
    )


class Collector:
    def __init__(self) -> None:
        self.articles: list[Article] = []

    def __call__(self, articles) -> None:
        self.articles.extend(articles)


def feed(server: FixtureServer, name: str, path: str, **kw) -> FeedConfig:
    return FeedConfig(name=name, url=server.base + path, allow_private=kw.pop("allow_private", True), **kw)


def serve_wire_fixtures(server: FixtureServer) -> None:
    server.routes.update(
        {
            "/a.xml": fixture("feed_wire.xml"),
            "/b.atom": fixture("feed_syndicated.xml", "application/atom+xml"),
            "/articles/msft-activision.html": fixture("article_msft.html", "text/html; charset=utf-8"),
            "/articles/fed-holds.html": fixture("article_fed.html", "text/html; charset=utf-8"),
            "/b/2022/01/18/microsoft-activision-deal": fixture("article_msft.html", "text/html"),
            "/b/2024/03/18/nvidia-blackwell": text(b"%PDF-1.4 not a web page", "application/pdf"),
        }
    )


# --- the happy path, dedup and novelty ---------------------------------------------------------

def test_same_story_in_two_feeds_is_emitted_once_and_the_second_recorded_as_duplicate(server, settings, caplog):
    serve_wire_fixtures(server)
    out = Collector()
    crawler = Crawler([feed(server, "Wire A", "/a.xml"), feed(server, "Wire B", "/b.atom")], settings, out)
    try:
        first = crawler.poll(crawler.feeds[0])
        with caplog.at_level(logging.INFO, logger="newspulse.ingest"):
            second = crawler.poll(crawler.feeds[1])
        counts = crawler.state.counts()
    finally:
        crawler.close()

    assert (first.emitted, second.emitted, second.duplicates) == (2, 1, 1)
    by_title = {a.title: a for a in out.articles}
    msft = by_title["Microsoft to buy Activision Blizzard in $69 billion deal"]
    assert msft.url == server.base + "/articles/msft-activision.html"  # tracking parameter dropped
    assert "third-largest gaming company" in msft.body  # full text from the page, not the summary
    assert "Copyright" not in msft.body and "Home" not in msft.body.split()[0]
    assert msft.tickers[0] == "MSFT" and "mergers_acquisitions" in msft.topics
    assert msft.language == "en" and msft.novelty == 100.0 and msft.source == "Wire A"
    assert "macro" in by_title["Fed holds rates steady, signals cuts later this year"].topics
    # the syndicated copy is recorded, not emitted, with lower novelty
    assert not any(a.source == "Wire B" and "Activision" in a.title for a in out.articles)
    assert counts == {"new": 3, "duplicate": 1}
    assert any("duplicate (content)" in r.getMessage() and "Wire B" in r.getMessage() for r in caplog.records)
    # a non-HTML article page falls back to the feed summary, logged with feed and reason
    nvda = by_title["Nvidia unveils new AI chips at developer conference"]
    assert nvda.body.startswith("Nvidia Corp unveiled its Blackwell chips") and nvda.tickers == ["NVDA"]
    assert any("Wire B" in r.getMessage() and "application/pdf, not HTML" in r.getMessage() for r in caplog.records)


def test_restart_keeps_dedup_state_and_skips_known_links(server, settings, tmp_path):
    serve_wire_fixtures(server)
    first = Collector()
    crawler = Crawler([feed(server, "Wire A", "/a.xml")], settings, first)
    crawler.run_once()
    crawler.close()
    assert len(first.articles) == 2
    page_hits = server.hits("/articles/msft-activision.html")

    # a new process: same state file, the same feed plus a third feed carrying the same story
    server.routes["/c.xml"] = text(
        (FIXTURES / "feed_wire.xml").read_text().replace("/articles/msft-activision.html?utm_source=rss", "/c/msft.html").replace("/articles/fed-holds.html", "/c/fed.html")
    )
    server.routes["/c/msft.html"] = fixture("article_msft.html", "text/html")
    server.routes["/c/fed.html"] = fixture("article_fed.html", "text/html")
    again = Collector()
    crawler = Crawler([feed(server, "Wire A", "/a.xml"), feed(server, "Wire C", "/c.xml")], load_settings(**{**settings.model_dump(), "crawler_concurrency": 1}), again)
    try:
        reports = crawler.run_once()
        state = crawler.state.counts()
    finally:
        crawler.close()
    assert again.articles == []
    assert [r.duplicates for r in reports] == [2, 2]
    assert server.hits("/articles/msft-activision.html") == page_hits  # known link: page not refetched
    assert state == {"new": 2, "duplicate": 2}


def test_a_story_the_sink_refuses_is_offered_again_next_poll(server, settings, caplog):
    serve_wire_fixtures(server)
    delivered: list[Article] = []
    broken = {"on": True}

    def flaky(articles) -> None:
        if broken["on"]:
            raise ConnectionError("broker unavailable")
        delivered.extend(articles)

    crawler = Crawler([feed(server, "Wire A", "/a.xml")], settings, flaky)
    try:
        with caplog.at_level(logging.WARNING, logger="newspulse.ingest"):
            first = crawler.run_once()[0]
        broken["on"] = False
        second = crawler.run_once()[0]
    finally:
        crawler.close()
    assert first.status == "error" and any("Wire A" in r.getMessage() and "broker unavailable" in r.getMessage() for r in caplog.records)
    assert second.emitted == 2 and {a.novelty for a in delivered} == {100.0}


def test_near_duplicate_rewrite_is_a_follow_up_with_lower_novelty(tmp_path):
    base = dict(published_at="2024-03-20T18:00:00Z", source="Wire A")
    body = (
        "The Federal Reserve kept its benchmark interest rate unchanged in the 5.25%-5.50% range on Wednesday, and "
        "policymakers still projected three quarter-point rate cuts by the end of the year as inflation continues to ease. "
        "Fed Chair Jerome Powell said the economy has been growing at a solid pace with strong job gains."
    )
    rewrite = body.replace("on Wednesday, and", "on Wednesday, while").replace("Fed Chair Jerome Powell said", "Chair Jerome Powell told reporters")
    other = "Nvidia unveiled its Blackwell chips on Monday at its developer conference in San Jose, saying they are much faster."
    with DedupState(tmp_path / "d.db") as state:
        v1 = state.check_and_record(Article(**base, title="Fed holds rates", body=body, url="http://a.test/1"))
        v2 = state.check_and_record(Article(**{**base, "source": "Wire B"}, title="Fed keeps rates unchanged", body=rewrite, url="http://b.test/9"))
        v3 = state.check_and_record(Article(**base, title="Nvidia chips", body=other, url="http://a.test/2"))
        v4 = state.check_and_record(Article(**base, title="Fed holds rates", body=body, url="http://a.test/1?utm_campaign=x"))
    assert v1.status == "new" and v1.novelty == 100.0
    assert v2.status in ("follow_up", "duplicate") and v2.novelty < 60 and v2.similarity >= 0.5
    assert v3.status == "new" and v3.novelty == 100.0
    assert v4.is_duplicate and v4.reason == "url"


def test_service_mode_polls_on_schedule_and_stops_promptly(server, settings):
    serve_wire_fixtures(server)
    out = Collector()
    crawler = Crawler([feed(server, "Wire A", "/a.xml", poll_interval=30)], settings, out)
    stop = threading.Event()
    worker = threading.Thread(target=crawler.run_forever, args=(stop,))
    worker.start()
    deadline = time.monotonic() + 20
    while len(out.articles) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    worker.join(5)
    crawler.close()
    assert not worker.is_alive() and len(out.articles) == 2
    assert server.hits("/a.xml") == 1  # the next poll is not due for 30 s


def test_28_an_undated_entry_takes_its_pages_own_date_before_the_crawl_time(server, settings, caplog):
    """No pubDate in the feed: the Fed page says it was published 2024-03-20 14:05 UTC in its
    metadata; the Microsoft page names no date anywhere, so only it is dated by the crawl."""
    undated = re.sub(r"\s*<pubDate>[^<]*</pubDate>", "", (FIXTURES / "feed_wire.xml").read_text())
    fed_page = (FIXTURES / "article_fed.html").read_text().replace(
        "<head>", '<head><meta property="article:published_time" content="2024-03-20T14:05:00+00:00">', 1
    )
    server.routes["/a.xml"] = text(undated)
    server.routes["/articles/fed-holds.html"] = text(fed_page, "text/html")
    server.routes["/articles/msft-activision.html"] = fixture("article_msft.html", "text/html")
    out = Collector()
    crawler = Crawler([feed(server, "Wire A", "/a.xml")], settings, out)
    before = datetime.now(timezone.utc)
    try:
        with caplog.at_level(logging.INFO, logger="newspulse.ingest"):
            report = crawler.run_once()[0]
    finally:
        crawler.close()
    fed = next(a for a in out.articles if a.title.startswith("Fed"))
    msft = next(a for a in out.articles if a.title.startswith("Microsoft"))
    assert fed.published_at == datetime(2024, 3, 20, 14, 5, tzinfo=timezone.utc)
    assert msft.published_at >= before  # neither feed nor page has a date
    assert report.dated_by_page == 1 and report.dated_by_crawl_time == 1
    assert any("using its page's own date 2024-03-20T14:05:00+00:00" in r.getMessage() for r in caplog.records)
    assert any("Microsoft" in r.getMessage() and "dated by the crawl time" in r.getMessage() for r in caplog.records)


def test_28_a_feed_date_wins_over_the_pages(server, settings):
    serve_wire_fixtures(server)
    server.routes["/articles/fed-holds.html"] = text(
        (FIXTURES / "article_fed.html").read_text().replace("<head>", '<head><meta property="article:published_time" content="2020-01-01T00:00:00Z">', 1), "text/html"
    )
    out = Collector()
    crawler = Crawler([feed(server, "Wire A", "/a.xml")], settings, out)
    try:
        report = crawler.run_once()[0]
    finally:
        crawler.close()
    fed = next(a for a in out.articles if a.title.startswith("Fed"))
    assert fed.published_at == datetime(2024, 3, 20, 18, 0, tzinfo=timezone.utc)
    assert report.dated_by_page == 0 and report.dated_by_crawl_time == 0


# --- politeness: conditional GET, robots.txt, User-Agent ----------------------------------------

def wire_feed_with_etag(**headers: str) -> Route:
    """The wire fixture feed with ETag "v1": a request that sends it back gets a 304."""
    body = (FIXTURES / "feed_wire.xml").read_bytes()

    def feed_route(h: BaseHTTPRequestHandler) -> None:
        if h.headers.get("If-None-Match") == '"v1"':
            h.send_response(304)
            h.end_headers()
            return
        text(body, headers={"ETag": '"v1"', **headers})(h)

    return feed_route


def test_conditional_get_sends_validators_and_a_304_costs_nothing(server, settings, caplog):
    server.routes["/a.xml"] = wire_feed_with_etag(**{"Last-Modified": "Wed, 20 Mar 2024 18:00:00 GMT"})
    server.routes["/articles/msft-activision.html"] = fixture("article_msft.html", "text/html")
    server.routes["/articles/fed-holds.html"] = fixture("article_fed.html", "text/html")
    crawler = Crawler([feed(server, "Wire A", "/a.xml")], settings, Collector())
    try:
        assert crawler.run_once()[0].emitted == 2
        with caplog.at_level(logging.INFO, logger="newspulse.ingest"):
            report = crawler.run_once()[0]
    finally:
        crawler.close()
    assert report.status == "not_modified" and report.entries == 0
    feed_requests = [h for p, h in server.requests if p == "/a.xml"]
    assert feed_requests[1]["If-None-Match"] == '"v1"'
    assert feed_requests[1]["If-Modified-Since"] == "Wed, 20 Mar 2024 18:00:00 GMT"
    assert feed_requests[0]["User-Agent"].startswith("NewsPulseBot/")
    assert any("Wire A" in r.getMessage() and "not modified" in r.getMessage() for r in caplog.records)


def test_robots_txt_disallowed_pages_are_not_fetched(server, settings, caplog):
    server.routes["/a.xml"] = text((FIXTURES / "feed_wire.xml").read_text().replace("/articles/fed-holds.html", "/private/fed.html"))
    server.routes["/articles/msft-activision.html"] = fixture("article_msft.html", "text/html")
    server.routes["/private/fed.html"] = fixture("article_fed.html", "text/html")
    out = Collector()
    crawler = Crawler([feed(server, "Wire A", "/a.xml")], settings, out)
    with caplog.at_level(logging.WARNING, logger="newspulse.ingest"):
        crawler.run_once()
    crawler.close()
    assert server.hits("/private/fed.html") == 0 and server.hits("/robots.txt") == 1
    fed = next(a for a in out.articles if a.title.startswith("Fed"))
    assert fed.body.startswith("The Federal Reserve kept its benchmark interest rate unchanged on Wednesday.")  # summary
    assert any("Wire A" in r.getMessage() and "robots.txt" in r.getMessage() for r in caplog.records)


def _robots_fetcher(server: FixtureServer, robots: str, **kw) -> Fetcher:
    server.routes["/robots.txt"] = text(robots, "text/plain")
    for path in ("/a", "/news/x", "/other", "/busy", "/ok"):
        server.routes.setdefault(path, text("fine", "text/plain"))
    return Fetcher(user_agent="NewsPulseBot/test", host_delay_s=0, **kw)


def test_28_robots_wildcard_disallow_blocks_the_query_url(server):
    """RFC 9309 wildcards: the stdlib parser let /a?session=1 through this rule."""
    fetcher = _robots_fetcher(server, "User-agent: *\nDisallow: /*?session=\n")
    try:
        with pytest.raises(FetchError) as refused:
            fetcher.fetch(server.base + "/a?session=1", allow_private=True)
        assert refused.value.kind == "robots"
        assert fetcher.fetch(server.base + "/a", allow_private=True).body == b"fine"
    finally:
        fetcher.close()
    assert server.hits("/a") == 1  # only the URL without the session parameter


def test_28_robots_longer_allow_after_disallow_all_wins(server):
    """RFC 9309 longest match: the stdlib parser took the first rule and refused /news/x."""
    fetcher = _robots_fetcher(server, "User-agent: NewsPulseBot\nDisallow: /\nAllow: /news/\n")
    try:
        assert fetcher.fetch(server.base + "/news/x", allow_private=True).body == b"fine"
        with pytest.raises(FetchError) as refused:
            fetcher.fetch(server.base + "/other", allow_private=True)
        assert refused.value.kind == "robots"
    finally:
        fetcher.close()


def test_28_retry_after_on_429_holds_the_site_until_then(server):
    server.routes["/busy"] = text("slow down", "text/plain", status=429, headers={"Retry-After": "1"})
    fetcher = _robots_fetcher(server, "User-agent: *\nAllow: /\n")
    try:
        with pytest.raises(FetchError) as busy:
            fetcher.fetch(server.base + "/busy", allow_private=True)
        t0 = time.monotonic()
        with pytest.raises(FetchError) as refused:  # a caller whose budget ends before the site's turn
            fetcher.fetch(server.base + "/ok", allow_private=True, deadline=t0 + 0.3)
        assert time.monotonic() - t0 < 0.25  # refused at once, not after a sleep
        fetcher.fetch(server.base + "/ok", allow_private=True)
        waited = time.monotonic() - t0
    finally:
        fetcher.close()
    assert busy.value.kind == "http" and "HTTP 429, retry after 1s" in busy.value.reason
    assert refused.value.kind == "politeness" and "Retry-After" in refused.value.reason
    assert 0.8 <= waited < 5 and server.hits("/ok") == 1


def test_28_retry_after_on_503_is_capped_like_crawl_delay(server, caplog):
    server.routes["/busy"] = text("down", "text/plain", status=503, headers={"Retry-After": "86400"})
    fetcher = _robots_fetcher(server, "User-agent: *\nAllow: /\n", max_crawl_delay_s=0.5)
    try:
        with caplog.at_level(logging.WARNING, logger="newspulse.ingest"), pytest.raises(FetchError):
            fetcher.fetch(server.base + "/busy", allow_private=True)
        t0 = time.monotonic()
        fetcher.fetch(server.base + "/ok", allow_private=True)
        waited = time.monotonic() - t0
    finally:
        fetcher.close()
    assert 0.4 <= waited < 5  # half a second, not a day
    assert any("retry after 86400s; capped at 0.5s" in r.getMessage() for r in caplog.records)


def test_28_retry_after_reads_seconds_and_http_dates():
    now = 1_700_000_000.0
    assert retry_after_seconds("120", now=now) == 120
    assert retry_after_seconds(email.utils.formatdate(now + 30, usegmt=True), now=now) == 30
    assert retry_after_seconds(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0  # already past
    assert retry_after_seconds("soon", now=now) is None and retry_after_seconds(None) is None


def test_one_request_in_flight_per_host_with_delay():
    fetcher = Fetcher(user_agent="NewsPulseBot/test", host_delay_s=0.2)
    times: list[float] = []

    def hit() -> None:
        with fetcher.throttle.slot("example.test"):
            times.append(time.monotonic())

    threads = [threading.Thread(target=hit) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fetcher.close()
    gaps = [b - a for a, b in zip(sorted(times), sorted(times)[1:])]
    assert all(g >= 0.19 for g in gaps)


# --- hostile and broken feeds: logged with feed and reason, never a crash -----------------------

def _poll_one(server: FixtureServer, settings, path: str, caplog, **feed_kw):
    out = Collector()
    crawler = Crawler([feed(server, "Hostile", path, **feed_kw)], settings, out)
    try:
        with caplog.at_level(logging.WARNING, logger="newspulse.ingest"):
            report = crawler.run_once()[0]
    finally:
        crawler.close()
    return report, out


def _logged(caplog, *needles: str) -> bool:
    return any(all(n in r.getMessage() for n in ("Hostile", *needles)) for r in caplog.records)


def test_server_error_is_logged_and_skipped(server, settings, caplog):
    server.routes["/feed"] = text("oops", "text/plain", status=500)
    report, out = _poll_one(server, settings, "/feed", caplog)
    assert report.status == "error" and out.articles == []
    assert _logged(caplog, "HTTP 500")


def test_timeout_is_logged_and_skipped(server, settings, caplog):
    def slow(h: BaseHTTPRequestHandler) -> None:
        time.sleep(3)
        text("late")(h)

    server.routes["/slow"] = slow
    t0 = time.monotonic()
    report, _ = _poll_one(server, load_settings(**{**settings.model_dump(), "crawler_timeout_s": 0.5}), "/slow", caplog)
    assert time.monotonic() - t0 < 2.5
    assert report.status == "error" and _logged(caplog, "timed out")


def test_malformed_xml_is_logged_and_skipped(server, settings, caplog):
    server.routes["/bad.xml"] = fixture("malformed.xml")
    report, out = _poll_one(server, settings, "/bad.xml", caplog)
    assert report.status == "error" and out.articles == []
    assert _logged(caplog, "malformed feed")


def test_a_50_mb_body_is_capped_not_read(server, settings, caplog):
    total = 50 * 1024 * 1024
    chunk = b"<" * CHUNK_BYTES

    def huge(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/rss+xml")  # no Content-Length: only streaming can tell
        h.end_headers()
        sent = 0
        try:
            while sent < total:
                h.wfile.write(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            server.sent["/huge"] = sent

    server.routes["/huge"] = huge
    cap = settings.crawler_max_body_bytes
    fetcher = Fetcher(user_agent="NewsPulseBot/test", max_bytes=cap, host_delay_s=0, timeout_s=5)
    with pytest.raises(FetchError) as err:
        fetcher.fetch(server.base + "/huge", allow_private=True)
    fetcher.close()
    assert "cap" in err.value.reason
    assert err.value.bytes_read < cap + CHUNK_BYTES
    deadline = time.monotonic() + 5
    while "/huge" not in server.sent and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.sent["/huge"] < total  # the server was cut off, not drained

    report, _ = _poll_one(server, settings, "/huge", caplog)
    assert report.status == "error" and _logged(caplog, "cap")


def test_a_gzip_bomb_is_inflated_only_up_to_the_cap():
    import gzip

    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024), compresslevel=9)  # ~50 KB on the wire

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/robots.txt":
            return httpx.Response(404)
        return streamed(bomb, "application/rss+xml", {"Content-Encoding": "gzip"})

    fetcher = Fetcher(user_agent="NewsPulseBot/test", max_bytes=1_000_000, host_delay_s=0, transport=httpx.MockTransport(handler))
    with pytest.raises(FetchError) as err:
        fetcher.fetch("http://93.184.216.34/feed.xml")
    fetcher.close()
    assert "cap" in err.value.reason and err.value.bytes_read <= 1_000_001
    assert len(bomb) < 200_000


def test_gzip_body_is_decoded(server):
    import gzip

    server.routes["/gz.xml"] = text(gzip.compress((FIXTURES / "feed_wire.xml").read_bytes()), headers={"Content-Encoding": "gzip"})
    fetcher = Fetcher(user_agent="NewsPulseBot/test", host_delay_s=0)
    result = fetcher.fetch(server.base + "/gz.xml", allow_private=True)
    fetcher.close()
    assert result.body == (FIXTURES / "feed_wire.xml").read_bytes()


def test_declared_oversize_body_is_refused_before_reading(server, settings, caplog):
    server.routes["/big"] = text(b"x" * 2_000_000)
    report, _ = _poll_one(server, settings, "/big", caplog)
    assert _logged(caplog, "2000000 bytes exceeds")


def test_redirect_loop_is_logged_and_skipped(server, settings, caplog):
    def redirect(to: str) -> Route:
        def route(h: BaseHTTPRequestHandler) -> None:
            h.send_response(302)
            h.send_header("Location", to)
            h.send_header("Content-Length", "0")
            h.end_headers()

        return route

    server.routes["/loop1"] = redirect("/loop2")
    server.routes["/loop2"] = redirect("/loop1")
    report, _ = _poll_one(server, settings, "/loop1", caplog)
    assert report.status == "error" and _logged(caplog, "redirect loop")
    assert server.hits("/loop1") == 1 and server.hits("/loop2") == 1

    chain = {f"/r{i}": redirect(f"/r{i + 1}") for i in range(10)}
    server.routes.update(chain)
    report, _ = _poll_one(server, settings, "/r0", caplog)
    assert _logged(caplog, "more than 5 redirects")


def test_feed_at_a_private_address_is_refused_unless_allowed(server, settings, caplog):
    server.routes["/a.xml"] = fixture("feed_wire.xml")
    report, _ = _poll_one(server, settings, "/a.xml", caplog, allow_private=False)
    assert report.status == "error" and _logged(caplog, "non-public address 127.0.0.1")
    assert server.hits("/a.xml") == 0 and server.hits("/robots.txt") == 0  # refused before connecting


def test_article_links_to_private_addresses_are_not_fetched(settings, caplog):
    """A public feed whose item points at the cloud metadata service: the link is never fetched."""
    feed_xml = (FIXTURES / "feed_wire.xml").read_text().replace("/articles/fed-holds.html", "http://169.254.169.254/latest/meta-data/")
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.path == "/feed.xml":
            return streamed(feed_xml.encode(), "application/rss+xml")
        if request.url.path == "/articles/msft-activision.html":
            return streamed((FIXTURES / "article_msft.html").read_bytes(), "text/html")
        return httpx.Response(404)

    out = Collector()
    fetcher = Fetcher(user_agent="NewsPulseBot/test", host_delay_s=0, transport=httpx.MockTransport(handler))
    crawler = Crawler([FeedConfig(name="Hostile", url="http://93.184.216.34/feed.xml")], settings, out, fetcher=fetcher)
    with caplog.at_level(logging.WARNING, logger="newspulse.ingest"):
        report = crawler.run_once()[0]
    crawler.close()
    assert report.status == "ok" and report.emitted == 2
    assert not any("169.254" in u for u in seen)
    fed = next(a for a in out.articles if a.title.startswith("Fed"))
    assert fed.body.startswith("The Federal Reserve kept")  # the feed summary stands in
    assert _logged(caplog, "169.254.169.254", "non-public address")


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/", "http://localhost:8080/x", "http://10.1.2.3/", "http://192.168.0.1/", "http://169.254.169.254/latest/",
     "http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/", "ftp://8.8.8.8/", "file:///etc/passwd"],
)
def test_ssrf_guard_refuses_non_public_targets(url):
    with pytest.raises(FetchError):
        check_public(url, allow_private=False)


def test_every_redirect_hop_is_checked():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/robots.txt":
            return httpx.Response(404)
        return httpx.Response(302, headers={"Location": "http://127.0.0.1/admin"})

    fetcher = Fetcher(user_agent="NewsPulseBot/test", host_delay_s=0, transport=httpx.MockTransport(handler))
    with pytest.raises(FetchError) as err:
        fetcher.fetch("http://93.184.216.34/feed.xml")  # a public address literal: no DNS needed
    fetcher.close()
    assert "non-public address 127.0.0.1" in err.value.reason


# --- the command ----------------------------------------------------------------------------

def crawl_once_to_stdout(server: FixtureServer, tmp_path: Path, monkeypatch, feeds: dict[str, str], **env: str):
    """`crawl --once --to stdout` over local feeds ({name: path on ``server``}); the CliRunner result."""
    import typer
    from typer.testing import CliRunner

    from newspulse.ingest.cli import crawl
    from newspulse.settings import get_settings

    feeds_file = tmp_path / "feeds.toml"
    feeds_file.write_text("\n".join(f'[[feeds]]\nname = "{name}"\nurl = "{server.base}{path}"\nallow_private = true\n' for name, path in feeds.items()))
    for key, value in {"NEWSPULSE_CRAWLER_STATE": str(tmp_path / "state.db"), "NEWSPULSE_CRAWLER_HOST_DELAY_S": "0", **env}.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    app = typer.Typer()
    app.command()(crawl)
    try:
        return CliRunner().invoke(app, ["--feeds", str(feeds_file), "--once", "--to", "stdout"])
    finally:
        get_settings.cache_clear()


def test_crawl_command_once_to_stdout(server, tmp_path, monkeypatch):
    serve_wire_fixtures(server)
    result = crawl_once_to_stdout(server, tmp_path, monkeypatch, {"Wire A": "/a.xml", "Broken": "/missing.xml"})
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{") and '"title"' in line]
    assert {a["title"][:9] for a in lines} == {"Microsoft", "Fed holds"}
    assert all(a["novelty"] == 100.0 and a["topics"] for a in lines)
    summary = json.loads([line for line in result.stderr.splitlines() if line.startswith('{"feeds"')][-1])
    assert summary["feeds"] == 2 and summary["failed"] == 1 and summary["emitted"] == 2
    assert "HTTP 404" in summary["errors"]["Broken"][0]


def test_bad_feeds_file_exits_2_naming_the_feed(tmp_path):
    import typer
    from typer.testing import CliRunner

    from newspulse.ingest.cli import crawl

    bad = tmp_path / "feeds.yaml"
    bad.write_text("feeds:\n  - name: Oops\n    url: ftp://x\n")
    app = typer.Typer()
    app.command()(crawl)
    result = CliRunner().invoke(app, ["--feeds", str(bad), "--once"])
    assert result.exit_code == 2 and "Oops" in result.stderr and "http(s)" in result.stderr


def test_a_story_queued_but_never_acknowledged_is_offered_again_after_a_restart(server, settings):
    """Issue 29 #18 (crawler side): with a sink that acknowledges later (the embedded queue), a
    story counts as seen in this process at once (no double emit), but across a restart only
    once the sink confirmed it; an unconfirmed one is forgotten and its feed fetched in full even
    when the feed answers 304 to the saved validators."""
    server.routes.update({"/a.xml": wire_feed_with_etag(), "/articles/msft-activision.html": fixture("article_msft.html", "text/html"),
                          "/articles/fed-holds.html": fixture("article_fed.html", "text/html")})
    queued = Collector()
    crawler = Crawler([feed(server, "Wire A", "/a.xml")], settings, queued, acknowledged_by_sink=True)
    try:
        assert crawler.run_once()[0].emitted == 2 and crawler.run_once()[0].status == "not_modified"
        crawler.state.confirm([queued.articles[0].id])  # the store acknowledged the first only
    finally:
        crawler.close()  # like a kill -9: the second was still queued

    again = Collector()
    crawler = Crawler([feed(server, "Wire A", "/a.xml")], settings, again, acknowledged_by_sink=True)
    try:
        report = crawler.run_once()[0]
    finally:
        crawler.close()
    assert report.status == "ok" and (report.emitted, report.duplicates) == (1, 1)
    assert [a.id for a in again.articles] == [queued.articles[1].id]
