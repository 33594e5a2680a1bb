"""`newspulse crawl` command (registered by newspulse/cli.py as ``app.command("crawl")(crawl)``)."""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ingest.feeds import DEFAULT_FEEDS
from ingest.redact import get_logger

log = get_logger(__name__)


class CrawlSink(str, Enum):
    embedded = "embedded"
    kafka = "kafka"
    stdout = "stdout"


def crawl(
    feeds: Annotated[Path, typer.Option("--feeds", help="Feeds file (YAML or TOML); see docs/ingest.md.")] = DEFAULT_FEEDS,
    once: Annotated[bool, typer.Option("--once", help="Poll every feed once, print a JSON summary, exit.")] = False,
    to: Annotated[CrawlSink, typer.Option("--to", help="embedded: score into the store in-process; kafka: produce to news.raw; stdout: print Articles as JSON lines.")] = CrawlSink.embedded,
    state: Annotated[Optional[Path], typer.Option("--state", help="Dedup/feed state database (default: NEWSPULSE_CRAWLER_STATE).")] = None,
) -> None:
    """Crawl RSS/Atom feeds: full text, language, tickers, topics, dedup with novelty.

    Without --once it runs until SIGTERM/SIGINT, polling each feed on its own interval and
    thread. With NEWSPULSE_METRICS_PORT set it serves Prometheus metrics (newspulse_crawler_*).
    """
    from ingest.crawler import Crawler
    from ingest.feeds import FeedsFileError, load_feeds
    from newspulse.settings import SettingsError, get_settings

    try:
        settings = get_settings()
        feed_list = load_feeds(feeds)
    except (SettingsError, FeedsFileError) as err:
        typer.echo(f"newspulse crawl: {err}", err=True)
        raise typer.Exit(2) from None
    if state is not None:
        settings = settings.model_copy(update={"crawler_state": state})
    if settings.metrics_port is not None:
        from newspulse.metrics import serve_metrics

        serve_metrics(settings.metrics_port)  # ingest.metrics: fetches, errors, articles, poll delay
    with _sink(to, settings) as (emit, finish):
        crawler = Crawler(feed_list, settings, emit)
        try:
            if once:
                reports = crawler.run_once()
            else:
                _run_until_signalled(crawler)
                reports = []
        finally:
            crawler.close()
        extra = finish()
    if once:
        failed = sum(r.status == "error" for r in reports)
        summary = {
            "feeds": len(reports),
            "failed": failed,
            "not_modified": sum(r.status == "not_modified" for r in reports),
            "entries": sum(r.entries for r in reports),
            "emitted": sum(r.emitted for r in reports),
            "duplicates": sum(r.duplicates for r in reports),
            "errors": {r.feed: r.errors for r in reports if r.errors},
            **extra,
        }
        typer.echo(json.dumps(summary, default=str), err=to is CrawlSink.stdout)  # stdout carries the Articles
        if reports and failed == len(reports):
            raise typer.Exit(1)


def _run_until_signalled(crawler) -> None:
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        crawler.run_forever(stop)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def _sink(to: CrawlSink, settings) -> Iterator[tuple[Callable[[Sequence], None], Callable[[], dict]]]:
    """``(emit, finish)`` for the chosen destination; ``finish`` flushes and returns counters."""
    if to is CrawlSink.kafka:
        from newspulse.kafka.producer import KafkaArticlePublisher

        publisher = KafkaArticlePublisher(settings)

        def publish(articles: Sequence) -> None:
            publisher.publish(articles)
            publisher.flush()  # acknowledged before the crawler marks the story as seen

        try:
            yield publish, lambda: {"topic": settings.kafka_topic_raw, "produced": publisher.sent}
        finally:
            publisher.close()
    elif to is CrawlSink.embedded:
        from newspulse.embedded import open_embedded
        from newspulse.store import open_store

        store = open_store(settings)
        try:
            with open_embedded(settings, store) as pipe:

                def emit(articles: Sequence) -> None:
                    for article in articles:
                        pipe.submit(article, origin="crawl")

                def finish() -> dict:
                    pipe.close()
                    return pipe.counters.summary()

                yield emit, finish
        finally:
            store.close()
    else:

        def emit_stdout(articles: Sequence) -> None:
            for article in articles:
                sys.stdout.write(article.model_dump_json() + "\n")
            sys.stdout.flush()

        yield emit_stdout, dict
