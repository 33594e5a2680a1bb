"""`newspulse crawl` and `newspulse replay`: the ingest commands (registered by newspulse/cli.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from newspulse.ingest.feeds import DEFAULT_FEEDS
from newspulse.redact import get_logger
from newspulse.console import settings_or_exit
from newspulse.signals import stop_on_signals
from newspulse.settings import Settings

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
    from newspulse.errors import ExitCode
    from newspulse.ingest.crawler import Crawler
    from newspulse.ingest.dedup import DedupState
    from newspulse.ingest.feeds import FeedsFileError, load_feeds

    settings = settings_or_exit()
    try:
        feed_list = load_feeds(feeds)
    except FeedsFileError as err:  # said here too: the command also runs outside the newspulse group
        typer.echo(f"newspulse crawl: {err}", err=True)
        raise typer.Exit(err.exit_code) from None
    if state is not None:
        settings = settings.model_copy(update={"crawler_state": state})
    if settings.metrics_port is not None:
        from newspulse.metrics import serve_metrics

        serve_metrics(settings.metrics_port)  # newspulse.ingest.metrics: fetches, errors, articles, poll delay
    seen = DedupState(settings.crawler_state)
    try:
        with _sink(to, settings, seen) as (emit, finish):
            crawler = Crawler(feed_list, settings, emit, state=seen, acknowledged_by_sink=to is CrawlSink.embedded)
            try:
                if once:
                    reports = crawler.run_once()
                else:
                    with stop_on_signals() as stop:
                        crawler.run_forever(stop)
                    reports = []
            finally:
                crawler.close()
            extra = finish()  # the queued stories are stored and confirmed as seen before the state closes
    finally:
        seen.close()
    if once:
        failed = sum(r.status == "error" for r in reports)
        summary = {
            "feeds": len(reports),
            "failed": failed,
            "not_modified": sum(r.status == "not_modified" for r in reports),
            "entries": sum(r.entries for r in reports),
            "emitted": sum(r.emitted for r in reports),
            "duplicates": sum(r.duplicates for r in reports),
            "dated_by_page": sum(r.dated_by_page for r in reports),
            "dated_by_crawl_time": sum(r.dated_by_crawl_time for r in reports),
            "errors": {r.feed: r.errors for r in reports if r.errors},
            **extra,
        }
        typer.echo(json.dumps(summary, default=str), err=to is CrawlSink.stdout)  # stdout carries the Articles
        if reports and failed == len(reports):
            raise typer.Exit(ExitCode.failure)


@contextmanager
def _sink(to: CrawlSink, settings, seen) -> Iterator[tuple[Callable[[Sequence], None], Callable[[], dict]]]:
    """``(emit, finish)`` for the chosen destination; ``finish`` flushes and returns counters.
    The embedded pipeline confirms each story in ``seen`` (the crawler's DedupState) once the
    store has it, so a story queued when the process is killed is offered again at the next start."""
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
        from newspulse.wiring import open_embedded, open_store

        store = open_store(settings)
        try:
            def stored(outcomes: Sequence) -> None:
                seen.confirm([o.message.article.id for o in outcomes if o.message.article is not None])

            with open_embedded(settings, store, on_settled=stored) as pipe:

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


class Destination(str, Enum):
    embedded = "embedded"
    kafka = "kafka"


def replay(
    file: Annotated[Path, typer.Option("--file", "-f", help="CSV (or .csv.gz) with published_at,source,title,body,url,tickers.")],
    to: Annotated[Destination, typer.Option("--to", help="embedded: score into the store in-process; kafka: produce to news.raw.")] = Destination.embedded,
    speed: Annotated[float, typer.Option(help="Multiple of real time; 0 = as fast as possible.")] = 0.0,
    limit: Annotated[Optional[int], typer.Option(help="Replay only the first N rows of the file.")] = None,
    shift_to_now: Annotated[bool, typer.Option("--shift-to-now", help="Shift timestamps so the stream ends now.")] = False,
) -> None:
    """Stream a historical corpus through the pipeline in event-time order, then exit."""
    from newspulse.ingest.replay import replay as replay_rows

    settings = settings_or_exit()
    rows = replay_rows(file, speed=speed, limit=limit, shift_to_now=shift_to_now)  # a bad file: ReplayError, before the model loads
    try:
        if to is Destination.kafka:
            summary = _replay_to_kafka(settings, rows)
        else:
            from newspulse.wiring import replay_embedded

            summary = replay_embedded(settings, rows, origin="replay")
    finally:
        rows.close()  # ends the progress bar's line before any error is printed
    typer.echo(json.dumps(summary))


def _replay_to_kafka(settings: Settings, rows: Iterator[dict]) -> dict:
    from newspulse.kafka.producer import KafkaArticlePublisher
    from newspulse.pipeline import RawMessage, parse_message

    publisher = KafkaArticlePublisher(settings)
    produced = rejected = 0
    try:
        batch = []
        for msg in rows:
            try:
                batch.append(parse_message(RawMessage(msg, origin="replay")))
            except ValueError as err:
                rejected += 1
                log.warning("replay row rejected: %s", err)
                continue
            if len(batch) >= 500:
                produced += publisher.publish(batch)
                batch = []
        produced += publisher.publish(batch)
        publisher.flush()
    finally:
        publisher.close()
    return {"produced": produced, "rejected": rejected, "topic": settings.kafka_topic_raw}
