"""Scale-out cost: what a second processor joining does to the first, eager vs cooperative.

One tansu broker (tests/peers.py). For each assignment strategy, in alternation, a fresh
4-partition news.raw gets a steady stream (``--rate`` articles/s); processor A runs alone,
processor B joins after ``--warm`` seconds, the stream goes on for ``--after`` seconds more, and
the run ends once every article is stored (SQLite). Per run:

* ``second_assigned_after_s``: from B's start until B owns partitions (two rounds when
  cooperative: A first gives up the partitions that move, then B gets them);
* ``first_max_gap_on_kept_s``: the longest stretch in which A processed nothing from the
  partitions it kept, from B's start until the stream stops (input arrives on them throughout);
* ``first_revocations_of_kept``: how many of A's kept partitions its rebalance listener saw
  revoked;
* ``reprocessed``: records processed more than once (work redone after a revocation);
* ``not_stored``: records produced but never stored (summed over the runs; anything but 0 is
  a loss).

Both strategies run in the same invocation, so their figures compare like with like. Scoring is
the streaming tests' hash of the text (FakeClassifier), so a batch takes milliseconds and the
gaps measure the group protocol and the client, not the model. Writes bench/results/rebalance.json.

    python bench/rebalance.py            # 2 runs per strategy (part of `make bench`)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from kafka.coordinator.assignors.range import RangePartitionAssignor  # noqa: E402

from newspulse.kafka.client import ensure_topics  # noqa: E402
from newspulse.kafka.processor import KafkaSource  # noqa: E402
from newspulse.kafka.producer import KafkaArticlePublisher, RenewingProducer  # noqa: E402
from newspulse.kafka.sinks import DeadLetterTopicSink, ScoredTopicSink, parse_origin  # noqa: E402
from newspulse.pipeline import Processor  # noqa: E402
from newspulse.store.sink import StoreSink  # noqa: E402
from newspulse.schema import Article  # noqa: E402
from newspulse.settings import Settings, load_settings  # noqa: E402
from newspulse.store.sqlite import SQLiteStore  # noqa: E402
from test_kafka_stream import FakeClassifier, FakeSummarizer, wait_for  # noqa: E402  (the streaming tests' model stand-ins)

RESULTS = ROOT / "bench" / "results"
STRATEGIES = {"eager_range": (RangePartitionAssignor,), "cooperative_sticky": None}


class Member:
    """One processor in a thread; records when it processed which partitions, and revocations."""

    def __init__(self, settings: Settings, producer, store: SQLiteStore, overrides: dict) -> None:
        self.batches: list[tuple[float, set[int]]] = []
        self.processed: Counter[str] = Counter()
        self.revoked: list[set[int]] = []
        dlq = DeadLetterTopicSink(settings, producer)
        core = Processor(FakeClassifier(), FakeSummarizer(), sinks=[StoreSink(store), ScoredTopicSink(settings, producer)], dead_letters=dlq)
        process = core.process

        def recording(messages):
            self.batches.append((time.monotonic(), {parse_origin(m.origin)[1] for m in messages}))
            result = process(messages)
            self.processed.update(a.id for a in result.stored)
            return result

        core.process = recording
        self.proc = KafkaSource(settings, core, **overrides)
        note = self.proc._note_revoked

        def noting(partitions):
            self.revoked.append({tp.partition for tp in partitions})
            note(partitions)

        self.proc._note_revoked = noting
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.proc.run, args=(self.stop,), daemon=True)

    def owned(self) -> set[int]:
        return {tp.partition for tp in self.proc.assigned}


def _settle(count, expected: int, quiet_s: float = 15.0) -> None:
    """Wait until ``count()`` reaches ``expected``, or has not moved for ``quiet_s`` (records
    that were skipped never arrive: the run reports them as not stored)."""
    last, since = -1, time.monotonic()
    while (n := count()) < expected:
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > quiet_s:
            return
        time.sleep(0.2)


def one_run(bootstrap: str, strategy: str, rate: float, warm: float, after: float, workdir: Path) -> dict:
    tag = f"{strategy}-{time.monotonic_ns()}"
    settings = load_settings(
        kafka_bootstrap=bootstrap, kafka_topic_raw=f"raw-{tag}", kafka_topic_scored=f"scored-{tag}", kafka_topic_dlq=f"dlq-{tag}",
        kafka_group_id=f"group-{tag}", kafka_partitions=4, kafka_session_timeout_ms=6000, kafka_max_poll_interval_ms=8000,
        batch_max_records=20, batch_max_wait_ms=100, store_url=f"sqlite:///{workdir / f'{tag}.db'}", log_level="WARNING",
    )
    ensure_topics(settings)
    producer = RenewingProducer(settings)
    store = SQLiteStore(settings.sqlite_path)
    overrides = {"partition_assignment_strategy": STRATEGIES[strategy]} if STRATEGIES[strategy] else {}
    first, second = Member(settings, producer, store, overrides), Member(settings, producer, store, overrides)
    published, stop_stream = [0], threading.Event()

    def stream() -> None:
        t0 = datetime(2024, 3, 1, tzinfo=timezone.utc)
        with KafkaArticlePublisher(settings) as pub:
            while not stop_stream.is_set():
                i = published[0]
                pub.publish([Article(published_at=t0 + timedelta(seconds=i), source="wire", title=f"Company {i} {tag} reports results")])
                published[0] += 1
                time.sleep(1 / rate)

    try:
        first.thread.start()
        wait_for(lambda: len(first.owned()) == 4, 60, "the first processor's assignment")
        streamer = threading.Thread(target=stream, daemon=True)
        streamer.start()
        time.sleep(warm)
        joined = time.monotonic()
        second.thread.start()
        wait_for(lambda: second.owned(), 120, "the second processor's assignment")
        assigned_after = time.monotonic() - joined
        time.sleep(after)
        stop_stream.set()
        streamer.join(30)
        stream_ended = time.monotonic()
        _settle(lambda: store.stats()["articles"], published[0])
        kept = first.owned()
        times = [t for t, parts in first.batches if joined <= t <= stream_ended and parts & kept]
        gaps = [b - a for a, b in zip([joined, *times], [*times, stream_ended])]
        revoked_kept = sum(len(r & kept) for r in first.revoked)
        processed = first.processed + second.processed
        stats = store.stats()
    finally:
        for m in (first, second):
            m.stop.set()
        for m in (first, second):
            m.thread.join(60)
        producer.close()
        store.close()
    return {
        "second_assigned_after_s": round(assigned_after, 2),
        "first_max_gap_on_kept_s": round(max(gaps), 2),
        "first_revocations_of_kept": revoked_kept,
        "reprocessed": sum(n - 1 for n in processed.values()),
        "not_stored": published[0] - stats["unique_ids"],
        "produced": published[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2, help="runs per strategy (alternating)")
    ap.add_argument("--rate", type=float, default=50.0, help="offered articles/s")
    ap.add_argument("--warm", type=float, default=4.0, help="seconds the first processor runs alone")
    ap.add_argument("--after", type=float, default=4.0, help="seconds the stream goes on after the second has partitions")
    ap.add_argument("--out", type=Path, default=RESULTS / "rebalance.json")
    args = ap.parse_args()

    from peers import start_kafka

    started = datetime.now(timezone.utc)
    runs: dict[str, list[dict]] = {name: [] for name in STRATEGIES}
    with start_kafka() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.runs):
            for name in STRATEGIES:
                runs[name].append(one_run(bootstrap, name, args.rate, args.warm, args.after, Path(tmp)))
                print(name, runs[name][-1], flush=True)
    result = {
        "started_at": started.isoformat(),
        "machine": {"cpu": platform.machine(), "python": platform.python_version()},
        "settings": {"runs_per_strategy": args.runs, "offered_per_s": args.rate, "partitions": 4, "batch_max_records": 20},
        **{
            name: {
                **{key: statistics.median(r[key] for r in rs) for key in rs[0] if key not in ("produced", "not_stored")},
                "produced": sum(r["produced"] for r in rs),
                "not_stored": sum(r["not_stored"] for r in rs),
            }
            for name, rs in runs.items()
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
