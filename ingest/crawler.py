"""The news crawler: poll feeds, fetch full text, detect language, tag, dedup, emit Articles.

One poll of a feed: a conditional GET of the feed (304 → nothing to do), feedparser over the bytes
we fetched ourselves, then for every entry not seen before: fetch the linked page (guarded, see
:mod:`ingest.fetch`), extract its text with trafilatura (the feed's summary when that fails or the
page is not HTML), detect the language, tag tickers and topics, and ask :class:`DedupState` for a
verdict. New stories and follow-ups are emitted with their novelty; duplicates are recorded only.

A bad feed never stops the crawler: every failure is logged as ``feed <name>: <reason>`` and the
next feed goes on.
"""

from __future__ import annotations

import html
import logging
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

from ingest.dedup import DedupState
from ingest.feeds import FeedConfig
from ingest.fetch import Fetcher, FetchError
from ingest.tagging import Tagger, build_tagger
from newspulse.schema import MAX_BODY_CHARS, Article, canonical_url
from newspulse.settings import Settings

log = logging.getLogger(__name__)

MAX_ENTRIES_PER_POLL = 200
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
    errors: list[str] = field(default_factory=list)


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


def _entry_time(entry: dict) -> datetime:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        parsed = entry.get(key)
        if parsed:
            try:
                return datetime(*parsed[:6], tzinfo=timezone.utc)
            except (TypeError, ValueError):
                continue
    return datetime.now(timezone.utc)


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
    ) -> None:
        self.feeds = list(feeds)
        self.settings = settings
        self._emit = emit
        self._emit_lock = threading.Lock()
        self.state = state or DedupState(settings.crawler_state)
        self.fetcher = fetcher or Fetcher(
            user_agent=settings.crawler_user_agent,
            timeout_s=settings.crawler_timeout_s,
            max_bytes=settings.crawler_max_body_bytes,
            host_delay_s=settings.crawler_host_delay_s,
        )
        self.tagger = tagger or build_tagger()

    def close(self) -> None:
        self.fetcher.close()
        self.state.close()

    # --- scheduling -----------------------------------------------------------------------
    def run_once(self) -> list[FeedReport]:
        """Poll every feed once, ``crawler_concurrency`` at a time; never raises for a bad feed."""
        workers = min(self.settings.crawler_concurrency, max(1, len(self.feeds)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="crawl") as pool:
            return list(pool.map(self.poll, self.feeds))

    def run_forever(self, stop: threading.Event) -> None:
        """Poll each feed every ``poll_interval`` seconds until ``stop`` is set."""
        due = {f.name: 0.0 for f in self.feeds}
        by_name = {f.name: f for f in self.feeds}
        workers = min(self.settings.crawler_concurrency, max(1, len(self.feeds)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="crawl") as pool:
            while not stop.is_set():
                now = time.monotonic()
                ready = [by_name[n] for n, t in due.items() if t <= now]
                for feed in ready:
                    due[feed.name] = now + feed.poll_interval
                for report in pool.map(self.poll, ready):
                    log.info("feed %s: %s, %d entries, %d emitted, %d duplicates", report.feed, report.status, report.entries, report.emitted, report.duplicates)
                stop.wait(max(0.5, min(due.values()) - time.monotonic()))

    # --- one feed -------------------------------------------------------------------------
    def poll(self, feed: FeedConfig) -> FeedReport:
        report = FeedReport(feed.name)
        try:
            self._poll(feed, report)
        except FetchError as err:
            self._fail(feed, report, err.reason)
        except Exception as err:  # a hostile feed must not take the crawler down
            log.exception("feed %s: unexpected error", feed.name)
            self._fail(feed, report, f"{type(err).__name__}: {err}")
        return report

    def _fail(self, feed: FeedConfig, report: FeedReport, reason: str) -> None:
        report.status = "error"
        report.errors.append(reason)
        log.warning("feed %s: skipped: %s", feed.name, reason)

    def _allow_private(self, feed: FeedConfig) -> bool:
        return feed.allow_private or self.settings.crawler_allow_private

    def _poll(self, feed: FeedConfig, report: FeedReport) -> None:
        etag, last_modified = self.state.feed_validators(feed.name)
        res = self.fetcher.fetch(feed.url, allow_private=self._allow_private(feed), etag=etag, last_modified=last_modified, accept=FEED_ACCEPT)
        if res.not_modified:
            report.status = "not_modified"
            log.info("feed %s: not modified since last poll", feed.name)
            return
        parsed = feedparser.parse(res.body, response_headers={"content-type": res.headers.get("content-type", "application/xml"), "content-location": res.url})
        if parsed.get("bozo") and not parsed.entries:
            raise FetchError(feed.url, f"malformed feed: {parsed.get('bozo_exception')}")
        if parsed.get("bozo"):
            log.warning("feed %s: recovered from malformed XML (%s)", feed.name, parsed.get("bozo_exception"))
        entries = sorted(parsed.entries[:MAX_ENTRIES_PER_POLL], key=_entry_time)  # oldest first: it is the first story
        report.entries = len(entries)
        for entry in entries:
            self._entry(feed, res.url, entry, report)
        self.state.save_feed_validators(feed.name, res.headers.get("etag"), res.headers.get("last-modified"))

    def _entry(self, feed: FeedConfig, feed_url: str, entry: dict, report: FeedReport) -> None:
        link = entry.get("link")
        link = canonical_url(urljoin(feed_url, link.strip())) if isinstance(link, str) and link.strip() else None
        if link and self.state.seen_url(link):
            report.duplicates += 1
            return
        title = html_to_text(entry.get("title", ""))[:2000]
        summary = _entry_summary(entry)
        body = self._full_text(feed, link) if link and feed.fetch_articles else ""
        if len(body) < len(summary):
            body = summary
        try:
            article = Article(
                published_at=_entry_time(entry),
                source=feed.name,
                title=title,
                body=body[:MAX_BODY_CHARS],
                url=link,
                language=detect_language(f"{title}. {body}") or feed.language,
            )
        except ValidationError as err:
            report.skipped += 1
            log.warning("feed %s: entry %r skipped: %s", feed.name, link or title[:80], err.errors()[0]["msg"])
            return
        article = self.tagger.tag(article)
        verdict = self.state.check_and_record(article)
        if verdict.is_duplicate:
            report.duplicates += 1
            log.info("feed %s: %s is a duplicate (%s) of %s", feed.name, link or article.id, verdict.reason, verdict.duplicate_of)
            return
        try:
            with self._emit_lock:
                self._emit([article.model_copy(update={"novelty": verdict.novelty})])
        except Exception:
            self.state.forget(article.id)  # not delivered: offer it again next poll
            raise
        report.emitted += 1

    def _full_text(self, feed: FeedConfig, link: str) -> str:
        """The article's main text via trafilatura, or "" (the caller falls back to the summary)."""
        try:
            page = self.fetcher.fetch(link, allow_private=self._allow_private(feed), accept=PAGE_ACCEPT)
        except FetchError as err:
            log.warning("feed %s: article %s not fetched: %s; using the feed summary", feed.name, link, err.reason)
            return ""
        if page.content_type not in HTML_TYPES:
            log.warning("feed %s: article %s is %s, not HTML; using the feed summary", feed.name, link, page.content_type or "untyped")
            return ""
        import trafilatura

        try:
            text = trafilatura.extract(page.body, url=page.url, include_comments=False, include_tables=False, favor_precision=True)
        except Exception as err:  # trafilatura on hostile HTML: fall back, never crash
            log.warning("feed %s: article %s: text extraction failed (%s); using the feed summary", feed.name, link, err)
            return ""
        return text or ""
