"""`make bench`: every benchmark in one go, then BENCHMARKS.md. Aimed at ≤ 15 minutes on 2 cores.

Each step is its own process (so one's memory and threads do not skew the next) and writes
JSON under bench/results/. A step that fails is reported and the others still run; the exit
status says whether all passed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PY = sys.executable

STEPS: list[tuple[str, list[str]]] = [
    ("classifier", [PY, "-m", "newspulse.cli", "bench", "model", "--json", "--out", str(RESULTS / "model.json")]),
    ("pipeline", [PY, "bench/pipeline.py"]),
    ("rebalance", [PY, "bench/rebalance.py"]),
    ("store 10k", [PY, "bench/store.py", "--n", "10000", "--out", str(RESULTS / "store_10k.json")]),
    # noida-db, the Elasticsearch-compatible test server, scans every document per query and
    # needs ~12 minutes at 100k: that size runs on SQLite here (use --es-url for a real cluster).
    ("store 100k", [PY, "bench/store.py", "--n", "100000", "--skip", "elasticsearch", "--out", str(RESULTS / "store.json")]),
    ("summaries", [PY, "bench/summaries.py"]),
    ("alerts", [PY, "bench/alerts.py"]),
    ("topics", [PY, "bench/topics.py"]),  # the topic model's measured figures, from its card
]


def main() -> int:
    failed = []
    for name, argv in STEPS:
        started = time.monotonic()
        print(f"== {name}: {' '.join(argv[1:])}", flush=True)
        if subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL).returncode != 0:
            failed.append(name)
        print(f"== {name}: {time.monotonic() - started:.0f} s", flush=True)
    subprocess.run([PY, "bench/report.py"], cwd=ROOT, check=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
