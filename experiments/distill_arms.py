"""Issue 26, item 2: the default retraining's recipe with another soft-label artifact and the
cheap levers (weight averaging, agreement-aware targets, temperature), one arm per run, each
the full fixed recipe (``TrainConfig.production(settings, "fast")``: 2,200 steps, seed 42,
keep the last weights) so an arm's figures are the model ``make demo`` would train with it.

Arms are ``name=key:value,key:value`` over TrainConfig fields (``soft_labels``,
``average_last``, ``agreement_smoothing``, ``distill_temperature``, ``distill_alpha``,
``entity_share``, ``seed``); each registers into ``--workdir``'s registry (never promoted) and appends the
card's dev figures to ``bench/results/distill_arms.json``:

    python experiments/distill_arms.py --workdir /scratch/arms \\
        v4=soft_labels:data/soft_labels/train-v4.csv.gz \\
        v4+swa=soft_labels:data/soft_labels/train-v4.csv.gz,average_last:0.2
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from newspulse.models.sentiment.config import TrainConfig
from newspulse.models.sentiment.registry import ModelCard
from newspulse.models.sentiment.train import train
from newspulse.settings import load_settings
from teacher_curve import final_figures  # the sibling scripts (experiments/ is on sys.path when run)
from teacher_labels import repo_path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "distill_arms.json"
FLOATS = {"average_last", "agreement_smoothing", "distill_temperature", "distill_alpha", "entity_share"}


def parse_arm(spec: str) -> tuple[str, dict]:
    """``name=key:value,...`` → (name, TrainConfig overrides); a ``soft_labels`` path is relative
    to the repository (an absolute one stays as it is)."""
    name, _, body = spec.partition("=")
    overrides: dict = {}
    for part in filter(None, body.split(",")):
        key, _, value = part.partition(":")
        overrides[key] = float(value) if key in FLOATS else int(value) if key == "seed" else ROOT / value if key == "soft_labels" else value
    return name, overrides


def figures(card) -> dict:
    """The dev figures the issue's targets name (:func:`teacher_curve.final_figures`), the
    entity ones flattened into the arm's row."""
    final = final_figures(card.metrics)
    entity = final.pop("entity")
    return final | {"entity_accuracy": entity["accuracy"], "entity_conflict_accuracy": entity["conflict_accuracy"]}


def record(entry: dict) -> None:
    """Put ``entry`` into distill_arms.json in place of an arm of its name, reading the file
    afresh so that arms run side by side (one process per core) keep each other's rows."""
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"what": __doc__.split("\n\n")[0], "arms": []}
    results["arms"] = [a for a in results["arms"] if a["arm"] != entry["arm"]] + [entry]
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, required=True, help="scratch folder outside git: the arms' registry")
    ap.add_argument("--int8-check", action="store_true", help="also run the card's int8 check (minutes more per arm)")
    ap.add_argument("--baseline", type=Path, default=None, help="also record this registry version (a model of the same recipe trained earlier) as arm 'baseline'")
    ap.add_argument("arms", nargs="*", help="name=key:value,key:value")
    args = ap.parse_args()
    settings = load_settings(model_registry=args.workdir / "registry")
    if args.baseline is not None:
        card = ModelCard.model_validate_json((args.baseline / "model_card.json").read_text(encoding="utf-8"))
        record({"arm": "baseline", "overrides": {}, "version": card.version, "soft_labels": card.distillation.get("artifact_version"), "steps": card.training["steps"], "seconds": card.training["seconds"], **figures(card)})
    for spec in args.arms:
        name, overrides = parse_arm(spec)
        cfg = TrainConfig.production(settings, "fast", include_feedback=False, promote=False, quantize_check=args.int8_check, **overrides)
        card = train(cfg)
        entry = {
            "arm": name,
            "overrides": {k: repo_path(v) if isinstance(v, Path) else str(v) for k, v in overrides.items()},
            "version": card.version,
            "soft_labels": card.distillation.get("artifact_version") if card.distillation else None,
            "steps": card.training["steps"],
            "seconds": card.training["seconds"],
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores shared with other work, torch threads {card.training.get('torch_threads')}",
            **figures(card),
        }
        record(entry)
        print(json.dumps(entry, indent=2), flush=True)


if __name__ == "__main__":
    main()
