"""Store benchmark: bulk indexing rate and the latency of each dashboard/alerter query, for the
embedded SQLite store and for Elasticsearch, on the same synthetic corpus.

    python bench/store.py --n 100000                # SQLite + a noida-db peer it starts itself
    python bench/store.py --n 100000 --es-url URL   # against an existing cluster instead

Writes bench/results/store.json. Latencies are medians over ``--repeat`` runs after one warm-up
(the dashboard re-issues the same queries on every refresh). Compare the two stores as ratios
within one run; absolute numbers depend on the machine (and the noida-db peer is not a tuned
Elasticsearch).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # peers.py: the noida-db peer

from newspulse.schema import Article, ScoredArticle  # noqa: E402
from newspulse.settings import load_settings  # noqa: E402
from newspulse.store.base import Filter, Store, StoreError  # noqa: E402

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
TICKERS = [f"T{i:03d}" for i in range(300)]
TOPICS = ["earnings", "mergers", "guidance", "litigation", "macro", "rates", "layoffs", "ipo", "dividends", "regulation"]
SOURCES = ["reuters", "bloomberg", "wire", "ft", "wsj", "cnbc"]
WORDS = ("profit loss revenue guidance merger lawsuit recall rally slump outlook dividend bank chip "
         "oil rate inflation growth cut raise beat miss shares investors analysts quarter strong weak").split()


def vocabulary(size: int = 3000) -> tuple[list[str], list[float]]:
    """Zipf-distributed words, like news text: the finance words sit at ranks 5, 15, 25, ...
    so a two-word search matches a few percent of articles, not all of them."""
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "pe", "su", "da", "fo"]
    pseudo = [a + b + c for a in syllables for b in syllables for c in syllables][: size - len(WORDS)]
    vocab = list(pseudo)
    for i, word in enumerate(WORDS):
        vocab.insert(10 * i + 5, word)
    return vocab, [1 / (rank + 1) for rank in range(len(vocab))]


def synthetic(n: int, seed: int = 7) -> list[ScoredArticle]:
    """``n`` articles over 90 days with Zipf-like ticker popularity and mixed tone."""
    rng = random.Random(seed)
    weights = [1 / (i + 1) for i in range(len(TICKERS))]
    vocab, freq = vocabulary()
    out = []
    for i in range(n):
        neg = rng.random()
        pos = rng.random() * (1 - neg)
        probs = {"negative": neg, "positive": pos, "neutral": 1 - neg - pos}
        title = " ".join(rng.choices(vocab, freq, k=8)).capitalize()
        art = Article(
            published_at=T0 + timedelta(seconds=rng.randrange(90 * 86400)),
            source=rng.choice(SOURCES),
            title=f"{title} {i}",
            body=" ".join(rng.choices(vocab, freq, k=60)) + ".",
            url=f"https://bench.example/{i}",
            tickers=rng.choices(TICKERS, weights=weights, k=rng.randint(0, 3)),
            topics=rng.sample(TOPICS, k=rng.randint(0, 2)),
        )
        out.append(ScoredArticle.from_article(art, probs, summary=" ".join(rng.choices(vocab, freq, k=20)), model_version="bench"))
    return out


def queries(latest: datetime) -> dict[str, Callable[[Store], object]]:
    week = Filter(start=latest - timedelta(days=7), end=latest + timedelta(seconds=1))
    return {
        "timeseries_90d_1h": lambda s: s.timeseries(Filter(), timedelta(hours=1)),
        "timeseries_week_15m_ticker": lambda s: s.timeseries(Filter(start=week.start, ticker="T000"), timedelta(minutes=15)),
        "top_negative_week": lambda s: s.top_negative(week, limit=20),
        "top_negative_ticker": lambda s: s.top_negative(Filter(ticker="T010"), limit=20),
        "search_two_terms": lambda s: s.search("lawsuit recall", Filter(), limit=20),
        "search_filtered": lambda s: s.search("profit", Filter(topic="earnings", start=week.start), limit=20),
        "facets_tickers_volume": lambda s: s.facets("tickers", week, limit=10),
        "facets_tickers_negativity": lambda s: s.facets("tickers", week, limit=10, by="negativity", min_count=5),
        "facets_topics_volume_all": lambda s: s.facets("topics", Filter(), limit=10),
        "get_article": lambda s: s.get_article(BENCH_IDS[0]),
        "iter_articles_first_batch": lambda s: next(iter(s.iter_articles(Filter(ticker="T050"), batch_size=500))),
        "stats": lambda s: s.stats(),
    }


BENCH_IDS: list[str] = []


def run_store(name: str, store: Store, corpus: list[ScoredArticle], chunk: int, repeat: int) -> dict:
    t = time.perf_counter()
    failed = 0
    for i in tqdm(range(0, len(corpus), chunk), desc=f"{name}: indexing", unit="chunk"):
        failed += len(store.upsert_articles(corpus[i : i + chunk]).failed)
    store.stats()  # the first read makes everything searchable (ES: refresh), count it in
    seconds = time.perf_counter() - t
    latest = store.latest_published_at()
    assert latest is not None
    latencies = {}
    for qname, q in tqdm(queries(latest).items(), desc=f"{name}: queries"):
        samples = []
        try:
            q(store)  # warm-up
            for _ in range(repeat):
                t = time.perf_counter()
                q(store)
                samples.append((time.perf_counter() - t) * 1000)
        except StoreError as err:  # a query the server cannot answer in time is a result too
            latencies[qname] = {"error": str(err)}
            continue
        latencies[qname] = {"median_ms": round(statistics.median(samples), 2), "max_ms": round(max(samples), 2)}
    return {
        "articles": len(corpus),
        "failed": failed,
        "index_seconds": round(seconds, 2),
        "index_articles_per_s": round(len(corpus) / seconds, 1),
        "queries": latencies,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="synthetic articles")
    ap.add_argument("--chunk", type=int, default=1000, help="articles per upsert call")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per query")
    ap.add_argument("--es-url", default=None, help="existing Elasticsearch; default: start a noida-db peer")
    ap.add_argument("--skip", choices=["sqlite", "elasticsearch"], action="append", default=[])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "store.json")
    args = ap.parse_args()

    corpus = synthetic(args.n)
    BENCH_IDS.append(corpus[len(corpus) // 2].id)
    results: dict = {
        "benchmark": "store",
        "created_at": datetime.now(timezone.utc).isoformat(),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "params": {"n": args.n, "chunk": args.chunk, "repeat": args.repeat},
        "stores": {},
    }
    if args.out.exists():  # keep the other store's figures when one is skipped (same n only)
        previous = json.loads(args.out.read_text())
        if previous.get("params", {}).get("n") == args.n:
            results["stores"] = {k: v for k, v in previous.get("stores", {}).items() if k in args.skip}
    def save() -> None:
        """Write what is measured so far (a long Elasticsearch run must not lose the SQLite part)."""
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")

    if "sqlite" not in args.skip:
        from newspulse.store.sqlite import SQLiteStore

        with tempfile.TemporaryDirectory() as tmp:
            store = SQLiteStore(Path(tmp) / "bench.db")
            results["stores"]["sqlite"] = run_store("sqlite", store, corpus, args.chunk, args.repeat)
            store.close()
            save()
    if "elasticsearch" not in args.skip:
        from newspulse.store.elastic import ElasticStore

        def bench_es(url: str, server: str) -> None:
            settings = load_settings(store_url=url, es_index_prefix=f"bench{uuid.uuid4().hex[:8]}")
            store = ElasticStore(settings)
            results["stores"]["elasticsearch"] = run_store("elasticsearch", store, corpus, args.chunk, args.repeat)
            results["stores"]["elasticsearch"]["server"] = f"{server} {getattr(store, 'server_version', '?')}"
            store.close()
            save()

        if args.es_url:
            bench_es(args.es_url, "external")
        else:
            from peers import start_elasticsearch

            with start_elasticsearch() as url:
                bench_es(url, "noida-db peer")
    stores = results["stores"]
    if "sqlite" in stores and "elasticsearch" in stores:
        results["ratios_es_over_sqlite"] = {
            "index_articles_per_s": round(stores["elasticsearch"]["index_articles_per_s"] / stores["sqlite"]["index_articles_per_s"], 3),
            **{
                q: round(stores["elasticsearch"]["queries"][q]["median_ms"] / max(stores["sqlite"]["queries"][q]["median_ms"], 0.01), 3)
                for q in stores["sqlite"]["queries"]
                if "median_ms" in stores["elasticsearch"]["queries"].get(q, {}) and "median_ms" in stores["sqlite"]["queries"][q]
            },
        }
    save()
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
