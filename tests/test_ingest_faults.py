"""Issue #18, ingest side: each hostile case that once stalled, leaked or broke the crawler.

Real local HTTP servers (the FixtureServer of test_ingest_crawler). Every case is bounded by the
crawler's own deadlines; the time limits asserted here are many times the configured deadline,
so they prove "cut off" rather than measure speed.
"""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler

import httpx
import pytest
from prometheus_client import REGISTRY

from newspulse.ingest.crawler import Crawler
from newspulse.ingest.fetch import Fetcher, FetchError
from newspulse.redact import redact
from newspulse.settings import load_settings
from test_ingest_crawler import FIXTURES, Collector, FixtureServer, crawl_once_to_stdout, feed, fixture, serve_wire_fixtures, text


@pytest.fixture
def server():
    srv = FixtureServer()
    yield srv
    srv.close()


@pytest.fixture
def settings(tmp_path):
    return load_settings(crawler_state=tmp_path / "crawler.db", crawler_host_delay_s=0, crawler_timeout_s=1, crawler_max_body_bytes=1_000_000)


def drip(server: FixtureServer, path: str, *, every_s: float, in_headers: bool = False):
    """A route that sends one byte every ``every_s`` seconds for as long as the client listens."""
    server.sent[path] = 0

    def route(h: BaseHTTPRequestHandler) -> None:
        try:
            if in_headers:
                h.wfile.write(b"HTTP/1.1 200 OK\r\n")
            else:
                h.send_response(200)
                h.send_header("Content-Type", "application/rss+xml")
                h.end_headers()
            h.wfile.flush()
            while True:
                h.wfile.write(b"X" if in_headers else b" ")  # a header line that never ends, or body
                h.wfile.flush()
                server.sent[path] += 1
                time.sleep(every_s)
        except (BrokenPipeError, ConnectionResetError):
            pass

    server.routes[path] = route


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- #18.1 slow drip --------------------------------------------------------------------------

@pytest.mark.parametrize("in_headers", [False, True], ids=["body", "headers"])
def test_18_1_slow_drip_server_is_cut_off_at_the_download_deadline(server, in_headers):
    drip(server, "/drip", every_s=0.1, in_headers=in_headers)  # each read well inside the 0.5 s read timeout
    fetcher = Fetcher(user_agent="NewsPulseBot/test", timeout_s=0.5, host_delay_s=0)  # deadline 2 s
    t0 = time.monotonic()
    with pytest.raises(FetchError) as err:
        fetcher.fetch(server.base + "/drip", allow_private=True)
    elapsed = time.monotonic() - t0
    fetcher.close()
    assert err.value.kind == "timeout" and "deadline" in err.value.reason
    assert server.sent["/drip"] >= 5  # it did trickle, and was cut off anyway
    assert elapsed < 10  # not 64 KiB x 0.1 s = 1.8 hours


def test_18_1_a_stuck_feed_does_not_delay_another_feeds_schedule(server, settings):
    """Service mode, one feed dripping for its whole 10 s poll budget: the healthy feed is polled
    at once and its articles arrive while the stuck poll is still running."""
    serve_wire_fixtures(server)
    stuck_site = FixtureServer()  # another site: one site's requests are serialised by politeness
    drip(stuck_site, "/stuck.xml", every_s=0.2)
    out = Collector()
    cfg = load_settings(**{**settings.model_dump(), "crawler_concurrency": 1, "crawler_timeout_s": 10, "crawler_poll_budget_s": 10})
    crawler = Crawler([feed(stuck_site, "Stuck", "/stuck.xml", poll_interval=30), feed(server, "Healthy", "/a.xml", poll_interval=30)], cfg, out)
    stuck_polls_before = metric("newspulse_crawler_fetches_total", feed="Stuck", outcome="error")
    budget_cuts_before = metric("newspulse_crawler_errors_total", feed="Stuck", kind="budget")
    stop = threading.Event()
    worker = threading.Thread(target=crawler.run_forever, args=(stop,))
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while len(out.articles) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        stuck_polls_done_when_healthy_arrived = metric("newspulse_crawler_fetches_total", feed="Stuck", outcome="error") - stuck_polls_before
        while metric("newspulse_crawler_fetches_total", feed="Stuck", outcome="error") == stuck_polls_before and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        worker.join(15)
        crawler.close()
        stuck_site.close()
    assert not worker.is_alive()
    assert len(out.articles) == 2 and all(a.source == "Healthy" for a in out.articles)
    assert stuck_polls_done_when_healthy_arrived == 0 and stuck_site.sent["/stuck.xml"] >= 10  # it was dripping all along
    assert metric("newspulse_crawler_errors_total", feed="Stuck", kind="budget") - budget_cuts_before == 1  # the budget ended it
    assert metric("newspulse_crawler_poll_delay_seconds", feed="Healthy") < 5  # started on schedule, not after Stuck


def test_18_1_poll_budget_ends_a_poll_and_the_rest_waits_for_the_next(server, settings):
    """Budget 5 s, article pages that take 3 s each: the second page's download is cut at the
    budget. That story is neither emitted with the summary only nor lost: the next poll takes it."""
    serve_wire_fixtures(server)
    for path in ("/articles/msft-activision.html", "/articles/fed-holds.html"):
        page = server.routes[path]
        server.routes[path] = lambda h, page=page: (time.sleep(3), page(h))
    slow = load_settings(**{**settings.model_dump(), "crawler_timeout_s": 10, "crawler_poll_budget_s": 5})
    out = Collector()
    crawler = Crawler([feed(server, "Wire A", "/a.xml")], slow, out)
    try:
        reports = [crawler.poll(crawler.feeds[0])]
        while len(out.articles) < 2 and len(reports) < 4:
            reports.append(crawler.poll(crawler.feeds[0]))
    finally:
        crawler.close()
    first = reports[0]
    assert first.status == "ok" and first.emitted < 2 and first.error_kinds == ["budget"] and "wait for the next poll" in first.errors[-1]
    assert sum(r.emitted for r in reports) == 2  # nothing lost, nothing twice
    assert {a.title[:9] for a in out.articles} == {"Microsoft", "Fed holds"}
    assert all("Federal Reserve" in a.body and len(a.body) > 300 for a in out.articles if a.title.startswith("Fed"))  # full text


# --- #18.2 Crawl-delay --------------------------------------------------------------------------

def test_18_2_huge_crawl_delay_is_capped(server, settings, caplog):
    serve_wire_fixtures(server)
    server.routes["/robots.txt"] = text("User-agent: *\nCrawl-delay: 100000\n", "text/plain")
    capped = load_settings(**{**settings.model_dump(), "crawler_max_crawl_delay_s": 0.5})
    out = Collector()
    crawler = Crawler([feed(server, "Wire A", "/a.xml")], capped, out)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="newspulse.ingest"):
        report = crawler.poll(crawler.feeds[0])
    elapsed = time.monotonic() - t0
    crawler.close()
    assert report.emitted == 2 and "third-largest gaming company" in out.articles[0].body + out.articles[1].body
    assert 1.5 <= elapsed < 30  # robots, feed, two pages: three capped 0.5 s gaps, not 100,000 s
    assert any("Crawl-delay 100000s; capped at 0.5s" in r.getMessage() for r in caplog.records)


def test_18_2_a_crawl_delay_longer_than_the_poll_budget_fails_fast_without_sleeping(server, settings):
    serve_wire_fixtures(server)
    server.routes["/robots.txt"] = text("User-agent: *\nCrawl-delay: 100000\n", "text/plain")
    cfg = load_settings(**{**settings.model_dump(), "crawler_poll_budget_s": 5})  # the cap stays 60 s
    crawler = Crawler([feed(server, "Wire A", "/a.xml")], cfg, Collector())
    t0 = time.monotonic()
    report = crawler.poll(crawler.feeds[0])
    elapsed = time.monotonic() - t0
    crawler.close()
    assert report.status == "error" and report.error_kinds == ["politeness"] and "poll budget" in report.errors[0]
    assert elapsed < 4  # refused at once, not after sleeping up to the budget
    assert server.hits("/a.xml") == 0


def test_18_2_a_page_the_sites_delay_keeps_past_the_budget_falls_back_to_the_summary(server, settings, caplog):
    """3 s between requests, budget 5 s: robots.txt, then the feed at 3 s; a page at 6 s would
    pass the budget. The story is emitted with the feed's summary rather than never."""
    serve_wire_fixtures(server)
    cfg = load_settings(**{**settings.model_dump(), "crawler_host_delay_s": 3, "crawler_poll_budget_s": 5})
    out = Collector()
    crawler = Crawler([feed(server, "Wire A", "/a.xml")], cfg, out)
    with caplog.at_level(logging.WARNING, logger="newspulse.ingest"):
        report = crawler.poll(crawler.feeds[0])
    crawler.close()
    assert report.status == "ok" and report.emitted == 2 and server.hits("/articles/msft-activision.html") == 0
    assert any("would pass the poll budget; using the feed summary" in r.getMessage() for r in caplog.records)


# --- #18.4 one bad link -------------------------------------------------------------------------

def test_18_4_a_bad_link_skips_only_its_entry(server, settings, caplog):
    wire = (FIXTURES / "feed_wire.xml").read_text()
    bad_items = "".join(
        f"<item><title>Bad {i}</title><link>{link}</link><description>Bad link story {i} with enough words to be an article body.</description>"
        f"<pubDate>Mon, 0{i + 1} Jan 2024 10:00:00 GMT</pubDate></item>"
        for i, link in enumerate(["http://bad.example.com:99999/story", "http://bad.example.com/a\x7fb", "http://bad.example.com:8o/story"])
    )
    server.routes["/a.xml"] = text(wire.replace("<item>", bad_items + "<item>", 1))  # the bad ones come first (oldest)
    server.routes["/articles/msft-activision.html"] = fixture("article_msft.html", "text/html")
    server.routes["/articles/fed-holds.html"] = fixture("article_fed.html", "text/html")
    out = Collector()
    crawler = Crawler([feed(server, "Wire A", "/a.xml")], settings, out)
    with caplog.at_level(logging.WARNING, logger="newspulse.ingest"):
        report = crawler.poll(crawler.feeds[0])
        again = crawler.poll(crawler.feeds[0])
    crawler.close()
    assert report.status == "ok" and report.entries == 5 and report.emitted == 2 and report.skipped == 3
    assert report.error_kinds == ["bad_link"] * 3
    assert {a.title[:9] for a in out.articles} == {"Microsoft", "Fed holds"}
    assert again.skipped == 3 and again.duplicates == 2  # skipped each poll, logged each time, never blocking
    assert sum("unusable link" in r.getMessage() and "Wire A" in r.getMessage() for r in caplog.records) == 6


# --- #18.9 DNS rebinding --------------------------------------------------------------------------

def test_18_9_dns_rebinding_is_refused_before_any_byte_is_sent(server):
    """The name answers a public address to the check and a private one to the connect: the
    connect-time answer is checked too, and the connection goes only to a checked address."""
    serve_wire_fixtures(server)
    port = server.base.rsplit(":", 1)[1]
    answers = iter([["93.184.216.34"]] + [["127.0.0.1"]] * 10)
    fetcher = Fetcher(user_agent="NewsPulseBot/test", host_delay_s=0, resolve=lambda host, p: next(answers))
    with pytest.raises(FetchError) as err:
        fetcher.fetch(f"http://rebind.example:{port}/a.xml")
    fetcher.close()
    assert err.value.kind == "ssrf" and "non-public address 127.0.0.1" in err.value.reason
    assert server.requests == []  # not even robots.txt


def test_18_9_the_connection_goes_to_the_resolved_address_with_the_name_as_host(server):
    serve_wire_fixtures(server)
    port = server.base.rsplit(":", 1)[1]
    asked: list[str] = []

    def resolve(host: str, p: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]

    fetcher = Fetcher(user_agent="NewsPulseBot/test", host_delay_s=0, resolve=resolve)
    result = fetcher.fetch(f"http://wire.example:{port}/a.xml", allow_private=True)  # no real DNS knows this name
    fetcher.close()
    assert result.status == 200 and b"Microsoft" in result.body
    assert set(asked) == {"wire.example"}
    assert server.requests[-1][1]["Host"] == f"wire.example:{port}"


# --- #18.12 credentials in logs --------------------------------------------------------------------

def test_18_12_feed_credentials_never_reach_a_log_line(server, settings, caplog):
    serve_wire_fixtures(server)
    url = server.base.replace("http://", "http://reader:s3cr3t-pw@") + "/a.xml?api_key=K3Y-123&lang=en"
    broken = server.base.replace("http://", "http://reader:s3cr3t-pw@") + "/missing.xml?token=T0K-456"
    crawler = Crawler([feed(server, "Wire A", "/a.xml").model_copy(update={"url": url}), feed(server, "Broken", "/x").model_copy(update={"url": broken})], settings, Collector())
    with caplog.at_level(logging.DEBUG):
        reports = crawler.run_once()
    crawler.close()
    messages = [caplog.handler.format(r) for r in caplog.records]
    assert reports[0].emitted == 2 and reports[1].status == "error"
    assert not any(secret in m for m in messages for secret in ("s3cr3t-pw", "K3Y-123", "T0K-456"))
    assert not any(secret in e for r in reports for e in r.errors for secret in ("s3cr3t-pw", "T0K-456"))
    assert any("GET http://***@127.0.0.1" in m and "api_key=***" in m for m in messages)  # logged, redacted
    assert not any(r.name.startswith("httpx") and r.levelno < logging.WARNING for r in caplog.records)


def test_redact_masks_userinfo_and_credential_parameters_only():
    assert redact("GET https://u:p@h.test/rss?token=abc&page=2 failed") == "GET https://***@h.test/rss?token=***&page=2 failed"
    assert redact("http://h.test/a?x=1&API_KEY=z#f") == "http://h.test/a?x=1&API_KEY=***#f"
    assert redact("no url here, key=value") == "no url here, key=value"


# --- #17.2 metrics -----------------------------------------------------------------------------

def test_crawler_metrics_count_fetches_errors_articles_and_are_served(server, tmp_path, monkeypatch):
    serve_wire_fixtures(server)
    server.routes["/bad.xml"] = fixture("malformed.xml")
    result = crawl_once_to_stdout(server, tmp_path, monkeypatch, {"Metrics A": "/a.xml", "Metrics Bad": "/bad.xml"}, NEWSPULSE_METRICS_PORT="0")
    assert result.exit_code == 0, result.output

    from newspulse.metrics import serve_metrics

    page = httpx.get(f"http://127.0.0.1:{serve_metrics(0)}/metrics").text  # the endpoint crawl started
    assert 'newspulse_crawler_fetches_total{feed="Metrics A",outcome="ok"} 1.0' in page
    assert 'newspulse_crawler_fetches_total{feed="Metrics Bad",outcome="error"} 1.0' in page
    assert 'newspulse_crawler_errors_total{feed="Metrics Bad",kind="malformed"} 1.0' in page
    assert 'newspulse_crawler_articles_total{feed="Metrics A"} 2.0' in page
    assert 'newspulse_crawler_poll_delay_seconds{feed="Metrics A"}' in page
    assert metric("newspulse_crawler_last_poll_timestamp_seconds", feed="Metrics A") > time.time() - 600


def test_a_poll_that_overruns_its_interval_counts_the_missed_starts_as_skipped(server, settings):
    """The sink takes 2.5 s per article, the feed's interval is 1 s (below what a feeds file
    allows, hence model_construct): the missed starts are counted, not queued up."""
    serve_wire_fixtures(server)
    fast = feed(server, "Overrun", "/a.xml").model_copy(update={"poll_interval": 1, "fetch_articles": False})
    out = Collector()

    def slow_sink(articles) -> None:
        time.sleep(2.5)
        out(articles)

    crawler = Crawler([fast], settings, slow_sink)
    stop = threading.Event()
    worker = threading.Thread(target=crawler.run_forever, args=(stop,))
    before = metric("newspulse_crawler_fetches_total", feed="Overrun", outcome="skipped")
    worker.start()
    deadline = time.monotonic() + 30
    while len(out.articles) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    worker.join(10)
    crawler.close()
    assert len(out.articles) == 2
    assert metric("newspulse_crawler_fetches_total", feed="Overrun", outcome="skipped") - before >= 3  # about 4 starts missed in ~5 s


def test_stop_ends_a_running_poll_after_its_current_entry(server, settings):
    """Pages take 2 s each: stopping mid-poll leaves the later entries unseen for the next run."""
    serve_wire_fixtures(server)
    for path in ("/articles/msft-activision.html", "/articles/fed-holds.html"):
        page = server.routes[path]
        server.routes[path] = lambda h, page=page: (time.sleep(2), page(h))
    out = Collector()
    crawler = Crawler([feed(server, "Stopping", "/a.xml")], settings, out)
    stop = threading.Event()
    worker = threading.Thread(target=crawler.run_forever, args=(stop,))
    worker.start()
    deadline = time.monotonic() + 20
    while not any(p.startswith("/articles/") for p, _ in server.requests) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    worker.join(15)
    counts = crawler.state.counts()
    crawler.close()
    assert not worker.is_alive()
    assert len(out.articles) == 1 and counts == {"new": 1}  # the entry in flight finished, the other waits


def test_a_space_in_a_link_path_is_encoded_not_a_bad_link(server, settings):
    wire = (FIXTURES / "feed_wire.xml").read_text().replace("/articles/fed-holds.html", "/articles/fed holds.html")
    server.routes["/a.xml"] = text(wire)
    server.routes["/articles/msft-activision.html"] = fixture("article_msft.html", "text/html")
    server.routes["/articles/fed%20holds.html"] = fixture("article_fed.html", "text/html")
    crawler = Crawler([feed(server, "Wire A", "/a.xml")], settings, Collector())
    report = crawler.poll(crawler.feeds[0])
    crawler.close()
    assert report.emitted == 2 and report.skipped == 0 and server.hits("/articles/fed%20holds.html") == 1


# --- issue 29 #12: 10,000 feeds ----------------------------------------------------------------


def test_29_12_many_feeds_share_a_bounded_pool_of_threads_and_one_metrics_series(server, settings):
    """10,000 feeds once meant 10,005 threads and 52,668 metric series. In service mode the due
    feeds go to ``crawler_service_workers`` threads; above ``crawler_metrics_max_feeds`` feeds the
    metrics carry feed="_all"."""
    server.routes["/empty.xml"] = text(b'<?xml version="1.0"?><rss version="2.0"><channel><title>Quiet</title></channel></rss>')
    cfg = load_settings(**{**settings.model_dump(), "crawler_service_workers": 4, "crawler_metrics_max_feeds": 50})
    feeds = [feed(server, f"Feed {i}", f"/empty.xml?n={i}", poll_interval=600) for i in range(200)]
    crawler = Crawler(feeds, cfg, Collector())
    before = metric("newspulse_crawler_fetches_total", feed="_all", outcome="ok")
    stop = threading.Event()
    worker = threading.Thread(target=crawler.run_forever, args=(stop,))
    worker.start()
    most_threads = 0
    try:
        deadline = time.monotonic() + 60
        while metric("newspulse_crawler_fetches_total", feed="_all", outcome="ok") - before < 200 and time.monotonic() < deadline:
            most_threads = max(most_threads, sum(t.name.startswith("crawl-") for t in threading.enumerate()))
            time.sleep(0.02)
    finally:
        stop.set()
        worker.join(15)
        crawler.close()
    assert not worker.is_alive()
    assert metric("newspulse_crawler_fetches_total", feed="_all", outcome="ok") - before == 200, "every feed polled once"
    assert 1 <= most_threads <= 4
    assert REGISTRY.get_sample_value("newspulse_crawler_fetches_total", {"feed": "Feed 7", "outcome": "ok"}) is None


def test_29_12_ten_thousand_feeds_load_in_one_pass_also_with_yaml_escaped_names(tmp_path, monkeypatch):
    """``load_feeds`` took 8.3 s for 10,000 feeds and 32.8 s with YAML-escaped names: the
    duplicate-name check was quadratic and each feed's line was searched for in the file from the
    previous one (an escaped name is never found literally, so each search ran to the end). Now
    YAML lines come from the parser's marks, TOML's are searched only for an error, and
    duplicates are counted once (bench note in docs/ingest.md). An error's line stays exact."""
    from newspulse.ingest import feeds as feeds_module

    def no_search(*args, **kwargs):
        raise AssertionError("a YAML file is not searched line by line")

    monkeypatch.setattr(feeds_module, "_line_of", no_search)
    rows = [f'  - name: "Caf\\u00e9 wire \\u2116{i}"\n    url: https://feeds{i % 50}.example.com/rss/{i}\n' for i in range(10_000)]
    path = tmp_path / "feeds.yaml"
    path.write_text("feeds:\n" + "".join(rows))
    loaded = feeds_module.load_feeds(path)
    assert len(loaded) == 10_000 and loaded[-1].name == "Café wire №9999"
    path.write_text("feeds:\n" + "".join(rows) + '  - name: "Caf\\u00e9 bad"\n    url: ftp://x\n')
    with pytest.raises(feeds_module.FeedsFileError, match=rf"feeds\.yaml:{2 + 2 * 10_000 + 1}: feed 'Café bad': url"):
        feeds_module.load_feeds(path)
    path.write_text("feeds:\n" + "".join(rows) + rows[3])
    with pytest.raises(feeds_module.FeedsFileError, match="repeated: Café wire №3$"):
        feeds_module.load_feeds(path)
