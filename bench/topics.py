"""Topic classifier figures for BENCHMARKS.md: writes bench/results/topics.json.

    python bench/topics.py                    # the bundled model's measured dev and CV figures, scoring speed
    python bench/topics.py --test test.csv    # plus a held-out file (e.g. ModApte test)
    python bench/topics.py --speed-also FOLDER   # and the scoring speed of another model (a candidate, or the one before), same run

The honest figures come from training, not from here: the bundled model is trained on train +
dev, so scoring it on dev would measure memory. `make topics-model` measures a model trained on
train alone on dev, and k-fold CV over train + dev (all of ModApte train), and writes them into the model card's ``metrics``;
this copies them, with the model version and the date they were measured. ``--test`` scores the
bundled model on a file it never saw through `newspulse model evaluate-topics --json` (the
issue's ModApte test split, which this project does not have).

Scoring speed is measured here, on this machine: CPU time per dev story (process time, so other
processes' load counts less than in wall time), one story per call (``Tagger.analyze``) and all
of them in one call (``Tagger.tag_many``), best of three rounds. ``--speed-also`` times a
second model in the same rounds, interleaved, for a ratio that one run's load cannot skew.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from newspulse.models.topics.evaluate import TOPICS_DEV, read_topics_csv
from newspulse.models.topics.model import DEFAULT_TOPIC_MODEL, TopicModel

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 3


def _cpu_ms_per_story(model: TopicModel, texts: list[str], one_by_one: bool) -> float:
    started = time.process_time()
    if one_by_one:
        for text in texts:
            model.scores([text])
    else:
        model.scores(texts)
    return (time.process_time() - started) * 1000 / len(texts)


def scoring_speed(models: dict[str, TopicModel], texts: list[str]) -> dict[str, dict[str, float]]:
    """CPU ms per story for each model, one story per call and all in one call: the best of
    :data:`ROUNDS` rounds, the models interleaved within each round so that load changes hit
    them alike."""
    best: dict[str, dict[str, float]] = {name: {"one_by_one": float("inf"), "batch": float("inf")} for name in models}
    for model in models.values():
        model.scores(texts[:8])  # warm: first-call imports and allocations
    for _ in range(ROUNDS):
        for name, model in models.items():
            for mode in ("one_by_one", "batch"):
                best[name][mode] = min(best[name][mode], _cpu_ms_per_story(model, texts, mode == "one_by_one"))
    return {name: {mode: round(v, 4) for mode, v in modes.items()} for name, modes in best.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_TOPIC_MODEL, help="topic-model folder (default: the bundled one)")
    ap.add_argument("--test", type=Path, default=None, help="held-out CSV (text,labels) to score the model on")
    ap.add_argument("--speed-also", type=Path, default=None, metavar="FOLDER", help="another topic-model folder to time in the same rounds")
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
    models = {"model": TopicModel.load(args.model)}
    if args.speed_also is not None:
        models["also"] = TopicModel.load(args.speed_also)
    texts = read_topics_csv(TOPICS_DEV)["text"].tolist()
    speed = scoring_speed(models, texts)
    result["scoring"] = {
        "what": f"CPU ms per story (process time), best of {ROUNDS} interleaved rounds over the {len(texts)} dev stories; "
                "one_by_one = one story per call (Tagger.analyze), batch = all in one call (Tagger.tag_many)",
        "load_average": round(os.getloadavg()[0], 1),
    }
    result["scoring"]["model"] = {"model_version": models["model"].version, **speed["model"]}
    if "also" in speed:
        result["scoring"]["also"] = {"model_version": models["also"].version, **speed["also"]}
        result["scoring"]["also_over_model"] = {mode: round(speed["also"][mode] / speed["model"][mode], 2) for mode in ("one_by_one", "batch")}
    print(f"scoring: {json.dumps(result['scoring'])}")
    if args.test is not None:
        argv = [sys.executable, "-m", "newspulse.cli", "model", "evaluate-topics", "--data", str(args.test), "--model", str(args.model), "--json"]
        result["test"] = json.loads(subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=True).stdout)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
