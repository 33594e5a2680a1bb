"""GPU benchmark (under 5 minutes on one GPU): classifier and summariser throughput on CUDA.

    python bench/gpu.py        # writes bench/results/gpu.json; needs a CUDA device

- classifier: sentences/s of the production model and of a FinBERT-sized BERT-base in bf16 at
  batch 256 on the PhraseBank and Twitter dev sentences (`newspulse.models.bench.run_model_bench`, which
  measures the CPU figures in the same run), plus whole Reuters articles/s;
- summariser: abstractive summaries/s in bf16 (`bench/summaries.py`'s GPU measurement; a
  t5-small-sized random generator unless --model names real weights).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="generator id/path for the summariser (default: random t5-small-sized)")
    ap.add_argument("--summary-seconds", type=float, default=90.0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/gpu.json")
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py needs a CUDA device")
    from pipeline import corpus
    from summaries import gpu_throughput, load_stories

    from newspulse.models.bench import run_model_bench
    from newspulse.models.predict import load_classifier
    from newspulse.models.summarize import build_extractive
    from newspulse.models.cli import ensure_model
    from newspulse.settings import load_settings

    settings = load_settings(device="cuda")
    ensure_model(settings)
    started = time.time()
    model = run_model_bench(settings)
    clf = load_classifier(settings)
    articles = corpus(2048)
    clf.score_articles(articles[:256])
    t0 = time.perf_counter()
    for i in range(0, len(articles), 256):
        clf.score_articles(articles[i : i + 256])
    torch.cuda.synchronize()
    articles_per_s = len(articles) / (time.perf_counter() - t0)
    summaries = gpu_throughput(load_stories(1024, 0, skip=0), build_extractive(load_settings()), args.model, seconds=args.summary_seconds)
    result = {
        "device": torch.cuda.get_device_name(0),
        "classifier": model,
        "whole_articles_per_s_bf16_batch256": articles_per_s,
        "summarizer": summaries,
        "seconds": time.time() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
