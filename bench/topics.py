"""Topic classifier figures for BENCHMARKS.md: writes bench/results/topics.json.

    python bench/topics.py                    # the bundled model's measured dev and CV figures
    python bench/topics.py --test test.csv    # plus a held-out file (e.g. ModApte test)

The honest figures come from training, not from here: the bundled model is trained on train +
dev, so scoring it on dev would measure memory. `make topics-model` measures a model trained on
train alone on dev, and k-fold CV over train + dev (all of ModApte train), and writes them into the model card's ``metrics``;
this copies them, with the model version and the date they were measured. ``--test`` scores the
bundled model on a file it never saw through `newspulse model evaluate-topics --json` (the
issue's ModApte test split, which this project does not have).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from newspulse.models.topics.model import DEFAULT_TOPIC_MODEL

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_TOPIC_MODEL, help="topic-model folder (default: the bundled one)")
    ap.add_argument("--test", type=Path, default=None, help="held-out CSV (text,labels) to score the model on")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "topics.json")
    args = ap.parse_args()

    card = json.loads((args.model / "model_card.json").read_text())
    result = {
        "model_version": card["version"],
        "created_at": card["created_at"],
        "measured_by": "make topics-model (newspulse model train-topics): dev = a model trained on train only; cv = k folds over train + dev",
        "model": card["metrics"]["model"],
        "svm_baseline": card["metrics"].get("svm_baseline"),
    }
    if args.test is not None:
        argv = [sys.executable, "-m", "newspulse.cli", "model", "evaluate-topics", "--data", str(args.test), "--model", str(args.model), "--json"]
        result["test"] = json.loads(subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=True).stdout)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
