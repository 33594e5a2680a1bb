"""The news crawler: poll feeds, fetch full text, detect language, tag, dedup, emit Articles.

One poll of a feed: a conditional GET of the feed (304 → nothing to do), feedparser over the bytes
we fetched ourselves, then for every entry not seen before: fetch the linked page (guarded, see
:mod:`newspulse.ingest.fetch`), extract its text with trafilatura (the feed's summary when that fails or the
page is not HTML), detect the language, tag tickers and topics, and ask :class:`DedupState` for a
verdict. New stories and follow-ups are emitted with their novelty; duplicates are recorded only.

An entry's time is the feed's (published, updated or created); an entry without one takes the
linked page's own publication date (htmldate: the page's metadata and markup, not dates found in
its prose), and only a story with neither is stamped with the time it was crawled. Which one it got
is counted per feed (``newspulse_crawler_entry_dates_total{source=feed|page|crawl_time}``), in the
poll's report and, for the last two, in a log line: a crawl-time date puts an old story on today.

A bad feed never stops the crawler: every failure is logged as ``feed <name>: <reason>``, counted
in :mod:`newspulse.ingest.metrics`, and the next feed goes on. A bad entry (an unparsable link) is skipped
with its reason and the feed's later entries are still emitted. Each poll has a budget
(``crawler_poll_budget_s``, at most the feed's interval) that bounds every wait and download in
it; in service mode every feed keeps its own schedule and a bounded pool of threads
(``crawler_service_workers``) polls the feeds that are due, so a stuck or slow feed holds one
thread for at most its budget and thousands of feeds cost a few dozen threads, not one each.
"""

from __future__ import annotations

import heapq
import html
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urljoin

import feedparser
from pydantic import ValidationError

from newspulse.ingest import metrics
from newspulse.ingest.dedup import DedupState
from newspulse.ingest.feeds import FeedConfig
from newspulse.ingest.fetch import Fetcher, FetchError, parse_url
from newspulse.redact import get_logger
from newspulse.ingest.tagging import Tagger, build_tagger
from newspulse.schema import MAX_BODY_CHARS, Article, canonical_url
from newspulse.settings import Settings

log = get_logger(__name__)

MAX_ENTRIES_PER_POLL = 200
#: The metrics' ``feed`` label above the cardinality cap (``crawler_metrics_max_feeds``).
ALL_FEEDS = "_all"
#: Longest the service's scheduler sleeps without looking at ``stop``.
_IDLE_CHECK_S = 0.5
FEED_ACCEPT = "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.1"
PAGE_ACCEPT = "text/html, application/xhtml+xml;q=0.9"
HTML_TYPES = {"text/html", "application/xhtml+xml"}
_TAG_RE = re.compile(r"<[^>]+>")

Emit = Callable[[Sequence[Article]], None]


@dataclass
class FeedReport:
    """What one poll of one feed did (the `--once` summary and tests read these)."""

    feed: str
    status: str = "ok"  # ok | not_modified | error
    entries: int = 0
    emitted: int = 0
    duplicates: int = 0
    skipped: int = 0
    dated_by_page: int = 0  # entries without a feed date that took their page's own date
    dated_by_crawl_time: int = 0  # entries with neither: stamped with the time they were crawled
    errors: list[str] = field(default_factory=list)
    error_kinds: list[str] = field(default_factory=list)  # one per error, for the metrics

    def error(self, kind: str, reason: str) -> None:
        self.errors.append(reason)
        self.error_kinds.append(kind)


class DeliveryError(Exception):
    """The sink refused an article: the poll fails (infrastructure), the story stays unseen."""


def html_to_text(value: str) -> str:
    """Feed summaries are HTML fragments; keep their text only."""
    return " ".join(html.unescape(_TAG_RE.sub(" ", value or "")).split())


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of ``text`` or None when too short or undecidable (deterministic)."""
    if len(text) < 20:
        return None
    from langdetect import DetectorFactory, LangDetectException, detect

    DetectorFactory.seed = 0
    try:
        return detect(text[:2000])
    except LangDetectException:
        return None


def _feed_time(entry: dict) -> datetime | None:
    """The entry's own time in the feed (published, updated or created), or None."""
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        parsed = entry.get(key)
        if parsed:
            try:
                return datetime(*parsed[:6], tzinfo=timezone.utc)
            except (TypeError, ValueError):
                continue
    return None


def _entry_time(entry: dict) -> datetime:
    """Sort key of the feed's entries: undated ones count as now, so they come last."""
    return _feed_time(entry) or datetime.now(timezone.utc)


def page_date(html_bytes: bytes, url: str) -> datetime | None:
    """The page's own publication date (metadata and markup only; a date-only one is midnight
    UTC), or None. Dates in the prose are not searched: a story quoting "March 1987" is not from then."""
    from htmldate import find_date

    try:
        found = find_date(html_bytes, extensive_search=False, original_date=True, outputformat="%Y-%m-%dT%H:%M:%S%z", url=url)
    except Exception as err:  # htmldate on hostile HTML: no date, never a crash
        log.debug("page %s: date extraction failed: %s", url, err)
        return None
    if not found:
        return None
    when = datetime.fromisoformat(found)
    return when.astimezone(timezone.utc) if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _entry_label(entry: dict) -> str:
    return repr(str(entry.get("title") or entry.get("id") or "(untitled)")[:80])


def _entry_summary(entry: dict) -> str:
    content = entry.get("content") or []
    candidates = [c.get("value", "") for c in content if isinstance(c, dict)] + [entry.get("summary", ""), entry.get("description", "")]
    return max((html_to_text(c) for c in candidates if c), key=len, default="")


class Crawler:
    """Polls feeds once (:meth:`run_once`) or on their schedules (:meth:`run_forever`)."""

    def __init__(
        self,
        feeds: Sequence[FeedConfig],
        settings: Settings,
        emit: Emit,
        *,
        state: DedupState | None = None,
        fetcher: Fetcher | None = None,
        tagger: Tagger | None = None,
        acknowledged_by_sink: bool = False,
    ) -> None:
        """``acknowledged_by_sink``: ``emit`` only queues the stories and the sink calls
        ``state.confirm`` once the store has them (the embedded pipeline), so a story counts as
        seen across restarts only from then on; otherwise a story is seen once ``emit`` returns
        (Kafka: after the broker acknowledged it). ``state`` passed in stays open on :meth:`close`."""
        self.feeds = list(feeds)
        self.acknowledged_by_sink = acknowledged_by_sink
        self._owns_state = state is None
        self.settings = settings
        self._emit = emit
        self._emit_lock = threading.Lock()
        self._stopping = threading.Event()  # set by run_forever on stop: polls end after their current entry
        self.state = state or DedupState(settings.crawler_state)
        self.fetcher = fetcher or Fetcher(
            user_agent=settings.crawler_user_agent,
            timeout_s=settings.crawler_timeout_s,
            max_bytes=settings.crawler_max_body_bytes,
            host_delay_s=settings.crawler_host_delay_s,
            max_crawl_delay_s=settings.crawler_max_crawl_delay_s,
        )
        self.tagger = tagger or build_tagger()

    def close(self) -> None:
        self.fetcher.close()
        if self._owns_state:
            self.state.close()

    # --- scheduling -----------------------------------------------------------------------
    def run_once(self) -> list[FeedReport]:
        """Poll every feed once, ``crawler_concurrency`` at a time; never raises for a bad feed."""
        workers = min(self.settings.crawler_concurrency, max(1, len(self.feeds)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="crawl") as pool:
            return list(pool.map(self.poll, self.feeds))

    def run_forever(self, stop: threading.Event) -> None:
        """Poll each feed every ``poll_interval`` seconds until ``stop`` is set.

        Every feed keeps its own schedule; the feeds that are due go to a pool of
        ``crawler_service_workers`` daemon threads, earliest due first, so a slow or stuck feed
        holds one thread for at most its poll budget. A poll that overruns its feed's next
        scheduled start makes that start count as ``skipped``. On stop, running polls end after
        their current entry (at most one download's timeout); one still running after
        ``crawler_timeout_s`` is abandoned.
        """
        size = max(1, min(self.settings.crawler_service_workers, len(self.feeds)))
        jobs: queue.SimpleQueue[tuple[int, float] | None] = queue.SimpleQueue()
        finished: queue.SimpleQueue[tuple[int, float]] = queue.SimpleQueue()
        wake = threading.Event()

        def work() -> None:
            while (job := jobs.get()) is not None:
                index, scheduled = job
                try:
                    self._scheduled_poll(self.feeds[index], scheduled)
                finally:
                    finished.put(job)
                    wake.set()

        threads = [threading.Thread(target=work, name=f"crawl-{n}", daemon=True) for n in range(size)]
        for t in threads:
            t.start()
        now = time.monotonic()
        due = [(now, i) for i in range(len(self.feeds))]  # (next start, feed index): a heap
        busy = 0
        while not stop.is_set():
            while True:  # polls that ended: schedule their feeds' next start
                try:
                    index, scheduled = finished.get_nowait()
                except queue.Empty:
                    break
                busy -= 1
                heapq.heappush(due, (self._next_start(self.feeds[index], scheduled), index))
            now = time.monotonic()
            while due and due[0][0] <= now and busy < size:
                scheduled, index = heapq.heappop(due)
                jobs.put((index, scheduled))
                busy += 1
            next_due = due[0][0] - now if due and busy < size else _IDLE_CHECK_S
            wake.wait(min(max(0.0, next_due), _IDLE_CHECK_S))  # a poll ending, a feed falling due or stop
            wake.clear()
        self._stopping.set()
        for _ in threads:
            jobs.put(None)
        give_up = time.monotonic() + self.settings.crawler_timeout_s
        for t in threads:
            t.join(max(0.0, give_up - time.monotonic()))
            if t.is_alive():
                log.warning("%s: still polling at shutdown; abandoned", t.name)

    def _scheduled_poll(self, feed: FeedConfig, scheduled: float) -> None:
        report = self.poll(feed, delay=time.monotonic() - scheduled)
        log.info("feed %s: %s, %d entries, %d emitted, %d duplicates, %d skipped", report.feed, report.status, report.entries, report.emitted, report.duplicates, report.skipped)

    def _next_start(self, feed: FeedConfig, scheduled: float) -> float:
        """The feed's next scheduled start after the one at ``scheduled``; starts its last poll
        overran are counted as ``skipped`` and passed over."""
        scheduled += feed.poll_interval
        missed = max(0, int((time.monotonic() - scheduled) // feed.poll_interval))
        if missed:
            metrics.FETCHES.labels(self._label(feed.name), "skipped").inc(missed)
            log.warning("feed %s: poll overran its interval; %d scheduled poll(s) skipped", feed.name, missed)
            scheduled += missed * feed.poll_interval
        return scheduled

    def _label(self, feed: str) -> str:
        """The ``feed`` label of the metrics: the feed's name, or ``_all`` for every feed when there
        are more than ``crawler_metrics_max_feeds`` (10,000 feeds would be 50,000 series)."""
        return feed if len(self.feeds) <= self.settings.crawler_metrics_max_feeds else ALL_FEEDS

    # --- one feed -------------------------------------------------------------------------
    def budget_s(self, feed: FeedConfig) -> float:
        """How long one poll of ``feed`` may take: the setting, and never more than its interval."""
        return min(self.settings.crawler_poll_budget_s, float(feed.poll_interval))

    def poll(self, feed: FeedConfig, *, delay: float = 0.0) -> FeedReport:
        """Poll ``feed`` once within its budget; never raises. ``delay``: how late it started."""
        metrics.POLL_DELAY.labels(self._label(feed.name)).set(max(0.0, delay))
        report = FeedReport(feed.name)
        try:
            self._poll(feed, report, time.monotonic() + self.budget_s(feed))
        except FetchError as err:
            self._fail(feed, report, err.kind, err.reason)
        except DeliveryError as err:
            self._fail(feed, report, "sink", str(err))
        except Exception as err:  # a hostile feed must not take the crawler down
            log.exception("feed %s: unexpected error", feed.name)
            self._fail(feed, report, "internal", f"{type(err).__name__}: {err}")
        self._count(report)
        return report

    def _count(self, report: FeedReport) -> None:
        feed = self._label(report.feed)
        metrics.FETCHES.labels(feed, report.status).inc()
        for kind in report.error_kinds:
            metrics.ERRORS.labels(feed, kind).inc()
        metrics.ARTICLES.labels(feed).inc(report.emitted)
        metrics.LAST_POLL.labels(feed).set(time.time())

    def _fail(self, feed: FeedConfig, report: FeedReport, kind: str, reason: str) -> None:
        report.status = "error"
        report.error(kind, reason)
        log.warning("feed %s: skipped: %s", feed.name, reason)

    def _allow_private(self, feed: FeedConfig) -> bool:
        return feed.allow_private or self.settings.crawler_allow_private

    def _poll(self, feed: FeedConfig, report: FeedReport, deadline: float) -> None:
        etag, last_modified = self.state.feed_validators(feed.name)
        res = self.fetcher.fetch(feed.url, allow_private=self._allow_private(feed), etag=etag, last_modified=last_modified, accept=FEED_ACCEPT, deadline=deadline)
        if res.not_modified:
            report.status = "not_modified"
            log.info("feed %s: not modified since last poll", feed.name)
            return
        parsed = feedparser.parse(res.body, response_headers={"content-type": res.headers.get("content-type", "application/xml"), "content-location": res.url})
        if parsed.get("bozo") and not parsed.entries:
            raise FetchError(feed.url, f"malformed feed: {parsed.get('bozo_exception')}", kind="malformed")
        if parsed.get("bozo"):
            log.warning("feed %s: recovered from malformed XML (%s)", feed.name, parsed.get("bozo_exception"))
        entries = sorted(parsed.entries[:MAX_ENTRIES_PER_POLL], key=_entry_time)  # oldest first: it is the first story
        report.entries = len(entries)
        for done, entry in enumerate(entries):
            if self._stopping.is_set():  # shutting down: like a spent budget, the rest wait for the next run
                log.info("feed %s: stopping after %d of %d entries; the rest wait for the next run", feed.name, done, len(entries))
                return
            try:
                if time.monotonic() >= deadline:
                    raise FetchError(feed.url, "poll budget spent", kind="budget")
                self._entry(feed, res.url, entry, report, deadline)
            except DeliveryError:
                raise
            except Exception as err:  # one bad entry must not cost the feed's others
                if isinstance(err, FetchError) and err.kind == "budget":
                    # the rest are not marked seen and the validators not saved: the next poll resumes here
                    report.error("budget", f"poll budget of {self.budget_s(feed):.0f}s spent after {done} of {len(entries)} entries; the rest wait for the next poll")
                    log.warning("feed %s: %s", feed.name, report.errors[-1])
                    return
                report.skipped += 1
                report.error("entry", f"entry {_entry_label(entry)} skipped: {type(err).__name__}: {err}")
                log.warning("feed %s: %s", feed.name, report.errors[-1], exc_info=True)
        self.state.save_feed_validators(feed.name, res.headers.get("etag"), res.headers.get("last-modified"))

    def _entry(self, feed: FeedConfig, feed_url: str, entry: dict, report: FeedReport, deadline: float) -> None:
        raw = entry.get("link")
        try:
            link = canonical_url(urljoin(feed_url, raw.strip())) if isinstance(raw, str) and raw.strip() else None
            if link:
                parse_url(link)
        except (ValueError, FetchError) as err:
            report.skipped += 1
            report.error("bad_link", f"entry {_entry_label(entry)} skipped: unusable link {raw!r}: {getattr(err, 'reason', err)}")
            log.warning("feed %s: %s", feed.name, report.errors[-1])
            return
        if link and self.state.seen_url(link):
            report.duplicates += 1
            return
        title = html_to_text(entry.get("title", ""))[:2000]
        summary = _entry_summary(entry)
        feed_time = _feed_time(entry)
        body, on_page = self._full_text(feed, link, deadline, want_date=feed_time is None) if link and feed.fetch_articles else ("", None)
        if len(body) < len(summary):
            body = summary
        published_at = self._dated(feed, entry, report, feed_time, on_page)
        try:
            article = Article(
                published_at=published_at,
                source=feed.name,
                title=title,
                body=body[:MAX_BODY_CHARS],
                url=link,
                language=detect_language(f"{title}. {body}") or feed.language,
            )
        except ValidationError as err:
            report.skipped += 1
            report.error("invalid", f"entry {link or title[:80]!r} skipped: {err.errors()[0]['msg']}")
            log.warning("feed %s: %s", feed.name, report.errors[-1])
            return
        article = self.tagger.tag(article)
        verdict = self.state.check_and_record(article, delivered=not self.acknowledged_by_sink)
        if verdict.is_duplicate:
            report.duplicates += 1
            log.info("feed %s: %s is a duplicate (%s) of %s", feed.name, link or article.id, verdict.reason, verdict.duplicate_of)
            return
        try:
            with self._emit_lock:
                self._emit([article.model_copy(update={"novelty": verdict.novelty})])
        except Exception as err:
            self.state.forget(article.id)  # not delivered: offer it again next poll
            raise DeliveryError(f"sink refused {article.id}: {type(err).__name__}: {err}") from err
        report.emitted += 1

    def _dated(self, feed: FeedConfig, entry: dict, report: FeedReport, feed_time: datetime | None, on_page: datetime | None) -> datetime:
        """The entry's publication time: the feed's, else the page's own, else now; counted by source."""
        if feed_time is not None:
            metrics.ENTRY_DATES.labels(feed=self._label(feed.name), source="feed").inc()
            return feed_time
        if on_page is not None:
            report.dated_by_page += 1
            metrics.ENTRY_DATES.labels(feed=self._label(feed.name), source="page").inc()
            log.info("feed %s: entry %s has no date; using its page's own date %s", feed.name, _entry_label(entry), on_page.isoformat())
            return on_page
        report.dated_by_crawl_time += 1
        metrics.ENTRY_DATES.labels(feed=self._label(feed.name), source="crawl_time").inc()
        log.warning("feed %s: entry %s has no date in the feed or on its page; dated by the crawl time", feed.name, _entry_label(entry))
        return datetime.now(timezone.utc)

    def _full_text(self, feed: FeedConfig, link: str, deadline: float, *, want_date: bool = False) -> tuple[str, datetime | None]:
        """The article's main text via trafilatura, or "" (the caller falls back to the summary),
        and, when ``want_date``, the page's own publication date (or None).

        A spent poll budget is not the page's fault: it is raised, so the entry waits for the next
        poll instead of being stored with the summary only. A page the site's request delay keeps
        past the budget (``politeness``) falls back to the summary like any page failure: a site
        that asks for one request a minute would otherwise never get past its own feed."""
        try:
            page = self.fetcher.fetch(link, allow_private=self._allow_private(feed), accept=PAGE_ACCEPT, deadline=deadline)
        except FetchError as err:
            if err.kind == "budget":
                raise
            log.warning("feed %s: article %s not fetched: %s; using the feed summary", feed.name, link, err.reason)
            return "", None
        if page.content_type not in HTML_TYPES:
            log.warning("feed %s: article %s is %s, not HTML; using the feed summary", feed.name, link, page.content_type or "untyped")
            return "", None
        on_page = page_date(page.body, page.url) if want_date else None
        import trafilatura

        try:
            text = trafilatura.extract(page.body, url=page.url, include_comments=False, include_tables=False, favor_precision=True)
        except Exception as err:  # trafilatura on hostile HTML: fall back, never crash
            log.warning("feed %s: article %s: text extraction failed (%s); using the feed summary", feed.name, link, err)
            return "", on_page
        return text or "", on_page
