"""Prometheus metrics of the crawler, served on ``NEWSPULSE_METRICS_PORT`` by ``newspulse crawl``.

One label per feed (its name from the feeds file) so a dashboard shows which feed is failing or
late. ``outcome`` of a poll: ``ok``, ``not_modified``, ``error`` (nothing usable this poll), or
``skipped`` (a scheduled poll not made because the feed's previous poll overran it). ``kind`` of an
error: the :class:`~newspulse.ingest.fetch.FetchError` kind (timeout, http, ssrf, ...), or ``malformed``,
``bad_link``, ``invalid`` (an entry that is no valid Article), ``budget`` (the poll's time ran out), ``entry``,
``sink``, ``internal`` from the crawler itself.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

FETCHES = Counter("newspulse_crawler_fetches", "Feed polls by outcome (ok, not_modified, error, skipped).", ["feed", "outcome"])
ERRORS = Counter("newspulse_crawler_errors", "Crawler errors by kind (one poll can count several).", ["feed", "kind"])
ENTRY_DATES = Counter("newspulse_crawler_entry_dates", "Where an entry's publication time came from: feed, page (its own date) or crawl_time (neither).", ["feed", "source"])
ARTICLES = Counter("newspulse_crawler_articles", "Articles emitted to the sink (new stories and follow-ups).", ["feed"])
POLL_DELAY = Gauge("newspulse_crawler_poll_delay_seconds", "How late the feed's last poll started against its schedule.", ["feed"])
LAST_POLL = Gauge("newspulse_crawler_last_poll_timestamp_seconds", "Unix time the feed's last poll finished.", ["feed"])
