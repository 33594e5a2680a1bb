"""End-to-end pipeline benchmark: throughput, latency, scale, article length and memory.

Every figure that is compared is measured in the same run on the same articles, and reported as
a ratio: the pipeline's articles/s against the classifier alone (measured right before each
pipeline run, so a shared machine's load weighs on both sides alike), 2 processors against 1, a
long story against a headline. Latency (arrival → indexed) is measured on both backends at half
of the capacity that backend just showed. Writes bench/results/pipeline.json.

    python bench/pipeline.py               # the full run (part of `make bench`)
    python bench/pipeline.py --quick       # smaller sizes, for a smoke check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, closing
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from newspulse.models.backends.onnx import cpu_count  # noqa: E402
from newspulse.ingest.replay import DEFAULT_CORPUS, replay  # noqa: E402
from newspulse.pipeline import RawMessage, parse_message  # noqa: E402
from newspulse.schema import Article  # noqa: E402
from newspulse.settings import Settings, load_settings  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def corpus(n: int, *, with_body: bool = True) -> list[Article]:
    """The first ``n`` Reuters stories (with a body, as a live feed would deliver them)."""
    out: list[Article] = []
    for msg in replay(DEFAULT_CORPUS, progress=False):
        art = parse_message(RawMessage(msg))
        if art.body or not with_body:
            out.append(art)
        if len(out) >= n:
            break
    return out


def fresh(articles: list[Article], tag: str) -> list[Article]:
    """Copies with new URLs, hence new ids, so one run's stories never dedupe against another's."""
    return [Article.model_validate({**a.model_dump(), "url": f"https://bench.invalid/{tag}/{i}", "id": ""}) for i, a in enumerate(articles)]


class ClassifierAlone:
    """The production classifier on its own, loaded once: the yardstick of every ratio. It
    scores what the Processor's classify step scores: whole stories, then each tagged ticker's
    mention sentences (entity verdicts); the articles are tagged beforehand, untimed, since
    tagging is the pipeline's own work."""

    def __init__(self, settings: Settings, batch: int) -> None:
        from newspulse.ingest.tagging import build_mention_finder, build_tagger
        from newspulse.models.sentiment.predict import load_classifier
        from newspulse.entities import EntityScorer

        self.clf, self.batch = load_classifier(settings), batch
        self.tagger, self.entities = build_tagger(), EntityScorer.from_settings(settings, build_mention_finder())

    def score(self, articles: list[Article]) -> None:
        """Story and entity scoring of one batch of tagged articles."""
        self.entities.verdicts(articles, self.clf.score_articles(articles), self.clf)

    def seconds(self, articles: list[Article]) -> float:
        tagged = self.tagger.tag_many(articles)
        self.score(tagged[:2])  # warm (threads, caches) after the pipeline's turn
        t0 = time.perf_counter()
        for i in range(0, len(tagged), self.batch):
            self.score(tagged[i : i + self.batch])
        return time.perf_counter() - t0


def interleaved(chunks: list[list[Article]], alone: ClassifierAlone, pipeline_seconds) -> dict:
    """Classifier alone, then the pipeline, on the same articles, chunk after chunk: on a shared
    machine both sides of each round meet about the same load. Rates are totals over rounds."""
    rounds = []
    for chunk in chunks:
        c, p = alone.seconds(chunk), pipeline_seconds(chunk)
        rounds.append({"n": len(chunk), "classifier_s": c, "pipeline_s": p, "ratio": c / p})
    n = sum(r["n"] for r in rounds)
    clf_rate, rate = n / sum(r["classifier_s"] for r in rounds), n / sum(r["pipeline_s"] for r in rounds)
    return {
        "articles_per_s": rate,
        "classifier_only_per_s": clf_rate,
        "ratio": rate / clf_rate,
        "ratio_median_of_rounds": statistics.median(r["ratio"] for r in rounds),
        "rounds": rounds,
    }


def timed_sqlite_store(path: Path):
    """A real SQLiteStore that notes when each article's write returned (= indexed)."""
    from newspulse.store.sqlite import SQLiteStore

    class TimedStore(SQLiteStore):
        def __init__(self, path: Path) -> None:
            super().__init__(path)
            self.indexed: dict[str, float] = {}

        def upsert_articles(self, articles):
            result = super().upsert_articles(articles)
            now = time.perf_counter()
            for art_id in result.written:
                self.indexed.setdefault(art_id, now)
            return result

    return TimedStore(path)


def embedded_throughput(settings: Settings, chunks: list[list[Article]], alone: ClassifierAlone, workdir: Path) -> dict:
    """The embedded pipeline (real classifier, summariser, tagger, SQLite, the in-process
    alerter) against the classifier alone, interleaved; each chunk is timed from its first
    submit until all of it is stored."""
    from newspulse.wiring import open_embedded

    store = timed_sqlite_store(workdir / "embedded.db")
    with open_embedded(settings, store) as pipe:  # model load happens here, outside the clock
        pipe.submit(fresh(chunks[0][:1], "emb-warm")[0])
        _wait(lambda: len(store.indexed) >= 1, 120)

        def seconds(chunk: list[Article]) -> float:
            chunk = fresh(chunk, f"emb{len(store.indexed)}")
            t0 = time.perf_counter()
            for art in chunk:
                pipe.submit(art)
            _wait(lambda: all(a.id in store.indexed for a in chunk), 900, 0.01)
            return time.perf_counter() - t0

        out = interleaved(chunks, alone, seconds)
    assert store.stats()["articles"] == 1 + sum(map(len, chunks)), store.stats()
    store.close()
    return out


def embedded_latency(settings: Settings, articles: list[Article], rate: float, seconds: float, workdir: Path) -> dict:
    """Offer ``rate`` articles/s to the embedded pipeline for ``seconds``; latency = submit →
    the store's write returned."""
    from newspulse.wiring import open_embedded

    store = timed_sqlite_store(workdir / "embedded-latency.db")
    with open_embedded(settings, store) as pipe:
        pipe.submit(articles[0])
        _wait(lambda: len(store.indexed) >= 1, 120)
        total = int(rate * seconds)
        pool = fresh((articles * (total // len(articles) + 1))[:total], "emb-lat")
        sent: dict[str, float] = {}
        t0 = time.perf_counter()
        for i, art in enumerate(pool):
            time.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
            sent[art.id] = time.perf_counter()
            pipe.submit(art)
        _wait(lambda: all(k in store.indexed for k in sent), 300, 0.05)
    store.close()
    return _quantiles(sorted(store.indexed[k] - sent[k] for k in sent), rate, seconds)


def _quantiles(lat: list[float], rate: float, seconds: float) -> dict:
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return {"p50": q[49], "p95": q[94], "p99": q[98], "max": max(lat), "offered_per_s": rate, "seconds": seconds, "n": len(lat)}


def stage_costs(settings: Settings, articles: list[Article], batch: int, workdir: Path) -> dict:
    """Seconds per article of each stage alone, on the same articles in batches of ``batch``:
    what the pipeline adds to the classifier, and why its ratio is what it is. ``entities`` is
    the entity-level half of classifying (finding each tagged ticker's mention sentences and
    scoring them); ``entity_share_of_classifier`` is its cost over the story-level scoring's."""
    from newspulse.ingest.tagging import build_mention_finder, build_tagger
    from newspulse.models.sentiment.predict import load_classifier
    from newspulse.models.summarize import build_summarizer
    from newspulse.schema import ScoredArticle
    from newspulse.entities import EntityScorer

    tagger, clf, summ = build_tagger(), load_classifier(settings), build_summarizer(settings)
    entities = EntityScorer.from_settings(settings, build_mention_finder())
    store = timed_sqlite_store(workdir / "stages.db")
    tagged = tagger.tag_many(articles)
    chunks = [tagged[i : i + batch] for i in range(0, len(tagged), batch)]
    story = {id(c): clf.score_articles(c) for c in chunks}
    tagger.tag_many(chunks[0][:2]), summ.summarize(chunks[0][:2])
    scored = [ScoredArticle.from_article(a, {"negative": 0.2, "neutral": 0.5, "positive": 0.3}, summary="s", model_version="bench") for a in articles]
    out: dict[str, float] = {}
    for name, run in (
        ("tag", lambda c: tagger.tag_many(c)),
        ("classify", lambda c: clf.score_articles(c)),
        ("entities", lambda c: entities.verdicts(c, story[id(c)], clf)),
        ("summarise", lambda c: summ.summarize(c)),
    ):
        t0 = time.perf_counter()
        for c in chunks:
            run(c)
        out[f"{name}_ms_per_article"] = 1000 * (time.perf_counter() - t0) / len(articles)
    t0 = time.perf_counter()
    for i in range(0, len(scored), batch):
        store.upsert_articles(scored[i : i + batch])
    out["sqlite_write_ms_per_article"] = 1000 * (time.perf_counter() - t0) / len(articles)
    store.close()
    plans = [entities.plan(a) for a in tagged]
    out["tickers_per_article"] = sum(len(a.tickers) for a in tagged) / len(tagged)
    out["entity_passages_per_article"] = sum(len(p) for plan in plans for p in plan.values()) / len(tagged)
    out["entity_share_of_classifier"] = out["entities_ms_per_article"] / out["classify_ms_per_article"]
    out["non_classifier_cpu_over_classifier"] = (out["tag_ms_per_article"] + out["summarise_ms_per_article"]) / (out["classify_ms_per_article"] + out["entities_ms_per_article"])
    return out


def _wait(predicate, timeout: float, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached in time")
        time.sleep(every)


def _es_count(store) -> int:
    """Articles stored and searchable (after a refresh: the processor's writes become visible at
    the index refresh interval). Used for the warm-up and the final exactly-once check; the
    timed waits watch news.scored instead (:class:`ScoredWatcher`)."""
    from elasticsearch import NotFoundError

    try:
        store.client.indices.refresh(index=store.articles_alias)
    except NotFoundError:  # nothing written yet
        return 0
    return store.stats()["articles"]


def peers_cpu_seconds() -> float:
    """CPU seconds used so far by the protocol peers this bench started (tansu, noida-db): on this
    one machine they run on the same two cores as the processor, which a deployment's brokers and
    cluster would not."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)
            name = fields[0].split("(", 1)[1]
        except (OSError, IndexError):
            continue
        if name.startswith(("tansu", "noida")):
            rest = fields[1].split()
            total += int(rest[11]) + int(rest[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


class ScoredWatcher:
    """When each article id appeared on news.scored, which the processor writes after the store
    accepted the article: "indexed", seen without querying the store. Polling the store instead
    cost the pipeline what it measured: the test server (noida-db) scans every document per
    query, and a count every 0.2 s over a growing index competed for the same two cores (and
    waited for the 1 s refresh interval)."""

    def __init__(self, settings: Settings) -> None:
        from kafka import KafkaConsumer

        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._consumer = KafkaConsumer(settings.kafka_topic_scored, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="latest", group_id=None)
        self._consumer.poll(timeout_ms=1000)  # assignment before the first send
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        try:
            while not self._stop.is_set():
                for records in self._consumer.poll(timeout_ms=200).values():
                    now = time.perf_counter()
                    for r in records:
                        self.seen.setdefault(r.key.decode(), now)
        finally:
            self._consumer.close()

    def wait_for(self, ids: list[str], timeout: float) -> None:
        _wait(lambda: all(i in self.seen for i in ids), timeout, 0.01)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _processor_proc(env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "newspulse.cli", "process", "--source", "kafka"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def kafka_es_runs(base: Settings, chunks: list[list[Article]], alone: ClassifierAlone, latency_share: float, latency_seconds: float, workdir: Path) -> dict:
    """Throughput with 1 processor (interleaved with the classifier alone), latency at
    ``latency_share`` of that throughput, then throughput with 2 processors."""
    articles = [a for chunk in chunks for a in chunk]
    from peers import start_elasticsearch, start_kafka

    from newspulse.kafka.producer import KafkaArticlePublisher
    from newspulse.store.elastic import ElasticStore

    out: dict = {}
    with ExitStack() as stack:
        bootstrap = stack.enter_context(start_kafka())
        es_url = stack.enter_context(start_elasticsearch())
        env = dict(os.environ)
        env.update(
            NEWSPULSE_KAFKA_BOOTSTRAP=bootstrap,
            NEWSPULSE_STORE_URL=es_url,
            NEWSPULSE_MODEL_REGISTRY=str(base.model_registry.resolve()),
            NEWSPULSE_KAFKA_PARTITIONS="4",
            NEWSPULSE_KAFKA_SESSION_TIMEOUT_MS="6000",
            NEWSPULSE_KAFKA_MAX_POLL_INTERVAL_MS="60000",
            NEWSPULSE_LOG_LEVEL="WARNING",
        )
        settings = load_settings(kafka_bootstrap=bootstrap, store_url=es_url, kafka_partitions=4, model_registry=base.model_registry)
        store = ElasticStore(settings)
        publisher = KafkaArticlePublisher(settings)
        stack.callback(publisher.close)
        watcher: ScoredWatcher | None = None
        peers_cpu: list[tuple[float, float]] = []  # (peers' CPU seconds, wall seconds) per timed round
        expected = 0

        def publish(batch: list[Article]) -> None:
            nonlocal expected
            publisher.publish(batch)
            publisher.flush()
            expected += len(batch)

        for n_proc in (1, 2):
            procs = [_processor_proc(env) for _ in range(n_proc)]
            try:
                publish(fresh(articles[:4], f"warm{n_proc}"))  # every processor loaded and joined
                _wait(lambda: _es_count(store) >= expected, 300, 0.2)
                if watcher is None:  # news.scored exists once a processor has run
                    watcher = stack.enter_context(closing(ScoredWatcher(settings)))
                time.sleep(3)  # let a second member's join settle before the clock starts
                def seconds(chunk: list[Article], tag: str) -> float:
                    batch = fresh(chunk, tag)
                    cpu0, t0 = peers_cpu_seconds(), time.perf_counter()
                    publish(batch)
                    watcher.wait_for([a.id for a in batch], 900)
                    wall = time.perf_counter() - t0
                    peers_cpu.append((peers_cpu_seconds() - cpu0, wall))
                    return wall

                if n_proc == 1:
                    out["throughput"] = interleaved(chunks, alone, lambda c: seconds(c, f"tp1-{expected}"))
                    cpu, wall = map(sum, zip(*peers_cpu))
                    out["throughput"]["peers_cpu"] = {"seconds": cpu, "share_of_the_cores": cpu / (cpu_count() * wall), "what": "tansu + noida-db CPU during the pipeline rounds, over cores × wall time"}
                    out["processors_1_articles_per_s"] = out["throughput"]["articles_per_s"]
                else:
                    out["processors_2_articles_per_s"] = len(articles) / seconds(articles, "tp2")
                out[f"processors_{n_proc}_peak_rss_mb"] = max(_peak_rss_mb(p.pid) for p in procs)
                if n_proc == 1:
                    capacity = out["processors_1_articles_per_s"]
                    before = store_lookup(store, articles)
                    out["latency_s"] = _latency(watcher, publish, articles, latency_share * capacity, latency_seconds) | {"capacity_per_s": capacity}
                    after = store_lookup(store, articles)
                    out["latency_s"]["store"] = {key: [before[key], after[key]] for key in before} | {"what": STORE_LOOKUP_NOTE}
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    p.wait(timeout=60)
        assert _es_count(store) == expected, "articles lost or duplicated"
        out["stored_equals_produced"] = True
        store.close()
    return out


STORE_LOOKUP_NOTE = (
    "documents stored and the seconds one id lookup took, at the start and the end of the latency run: each batch the "
    "processor writes first looks its ids up in every monthly index (a copy a published_at correction left in another "
    "month is deleted), and noida-db answers a search by reading every stored document, so on this peer that lookup, "
    "and with it the latency, grows with what the earlier rounds stored (Elasticsearch answers it from the _id index)"
)


def store_lookup(store, articles: list[Article]) -> dict:
    """The store's size and what one lookup of a batch's ids costs on it now (median of 3): the
    lookup every batch write starts with (:data:`STORE_LOOKUP_NOTE`), timed from outside."""
    ids = [a.id for a in fresh(articles[:8], "lookup")]
    documents = _es_count(store)  # refreshes first, so the lookups below read a settled index
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        store.stored_ids(ids)
        times.append(time.perf_counter() - t0)
    return {"documents": documents, "id_lookup_s": statistics.median(times)}


def _latency(watcher: ScoredWatcher, publish, articles: list[Article], rate: float, seconds: float) -> dict:
    """Offer ``rate`` articles/s for ``seconds``; latency = produced → seen on news.scored
    (the scored topic is written after the store accepted the article)."""
    sent: dict[str, float] = {}
    total = int(rate * seconds)
    pool = fresh((articles * (total // len(articles) + 1))[:total], "lat")
    t0 = time.perf_counter()
    for i, art in enumerate(pool):
        due = t0 + i / rate
        time.sleep(max(0.0, due - time.perf_counter()))
        sent[art.id] = time.perf_counter()
        publish([art])
    watcher.wait_for(list(sent), 300)
    return _quantiles(sorted(watcher.seen[k] - sent[k] for k in sent), rate, seconds)


def length_cost(settings: Settings, articles: list[Article]) -> dict:
    """Pipeline cost (classifier + summariser) of a headline against a ~2,000-word story."""
    from newspulse.models.sentiment.predict import load_classifier
    from newspulse.models.summarize import build_summarizer

    clf, summ = load_classifier(settings), build_summarizer(settings)
    headlines = [a.model_copy(update={"body": ""}) for a in articles[:64]]
    words = " ".join(a.body for a in articles).split()
    long_body = " ".join(words[:2000])
    stories = [a.model_copy(update={"body": long_body}) for a in articles[:16]]

    def rate(batch: list[Article]) -> float:
        clf.score_articles(batch[:2]), summ.summarize(batch[:2])
        t0 = time.perf_counter()
        clf.score_articles(batch)
        summ.summarize(batch)
        return len(batch) / (time.perf_counter() - t0)

    h, s = rate(headlines), rate(stories)
    return {"headline_per_s_over_story_per_s": h / s, "story_words": 2000}


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # 1800 (3 rounds of 600): on ONNX Runtime the classifier scores ~90 stories/s here, so a round
    # lasts ~7 s. Each round ends with a drain (the last batch's write and commit, ~0.4 s on
    # Kafka + ES) that is latency, not throughput: rounds of 100 and 300 counted it as a tenth to a
    # half of the work (Kafka + ES ratio 0.53 and 0.77 against 0.82 with rounds of 600).
    ap.add_argument("--n", type=int, default=1800, help="articles per throughput run (split over --rounds)")
    ap.add_argument("--rounds", type=int, default=3, help="classifier-alone / pipeline rounds the throughput runs alternate")
    ap.add_argument("--stage-n", type=int, default=100, help="articles for the stage costs")
    ap.add_argument("--latency-share", type=float, default=0.5, help="offered load of the latency runs, as a share of the capacity each backend just measured")
    ap.add_argument("--latency-seconds", type=float, default=60.0, help="length of each latency run")
    ap.add_argument("--skip-kafka", action="store_true", help="embedded only (no tansu/noida-db peers)")
    ap.add_argument("--quick", action="store_true", help="n=200, 20 s latency runs")
    ap.add_argument("--note", default="", help="free text stored with the result (e.g. how busy the machine was)")
    ap.add_argument("--out", type=Path, default=RESULTS / "pipeline.json")
    args = ap.parse_args()
    if args.quick:
        args.n, args.stage_n, args.latency_seconds = 90, 30, 20.0

    from newspulse.models.cli import ensure_model

    settings = load_settings(log_level="WARNING")
    ensure_model(settings)
    articles = corpus(args.n)
    started = datetime.now(timezone.utc)
    size = -(-len(articles) // args.rounds)
    chunks = [articles[i : i + size] for i in range(0, len(articles), size)]
    with tempfile.TemporaryDirectory() as tmp:
        stages = stage_costs(settings, articles[: args.stage_n], settings.batch_max_records, Path(tmp))
        alone = ClassifierAlone(settings, settings.batch_max_records)
        embedded = embedded_throughput(settings, chunks, alone, Path(tmp))
        emb_rate = embedded["articles_per_s"]
        embedded["latency_s"] = embedded_latency(settings, articles, args.latency_share * emb_rate, args.latency_seconds, Path(tmp)) | {"capacity_per_s": emb_rate}
        kafka = None if args.skip_kafka else kafka_es_runs(settings, chunks, alone, args.latency_share, args.latency_seconds, Path(tmp))
    result = {
        "started_at": started.isoformat(),
        "machine": machine() | {"shared": "a shared 2-core development machine: absolute rates vary with other jobs' load; ratios are measured side by side"},
        "note": args.note,
        "articles": args.n,
        "settings": {"batch_max_records": settings.batch_max_records, "batch_max_wait_ms": settings.batch_max_wait_ms, "summarizer": settings.summarizer},
        "embedded": embedded,
        "stage_costs": stages,
    }
    if kafka is not None:
        p1 = kafka["processors_1_articles_per_s"]
        result |= {
            "kafka_es": kafka["throughput"] | {"latency_s": kafka["latency_s"]},
            "scale": {
                "processors_2_over_1": kafka["processors_2_articles_per_s"] / p1,
                **length_cost(settings, articles),
            },
            "memory": {
                "processor_peak_rss_mb": kafka["processors_1_peak_rss_mb"],
                "two_processors_peak_rss_mb_each": kafka["processors_2_peak_rss_mb"],
                "bench_process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            },
            "exactly_once": kafka["stored_equals_produced"],
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
