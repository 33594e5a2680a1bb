"""Entity-level sentiment of the joint model (issue 25's model targets) and what joint training
costs the story-level verdicts, measured in one run on this machine.

Per seed, two models are trained with the same recipe and the same step count (the default
retraining's fixed recipe, ``--steps`` of it): the **joint** model on PhraseBank + Twitter +
SEntFiN train (entities marked), and the **story-only** model on PhraseBank + Twitter train
alone. Both are evaluated as the retraining evaluates a candidate (models/sentiment/evaluate.py):

- SEntFiN dev: accuracy, macro-F1 and accuracy on conflicting headlines of the entity
  verdicts, beside the story-level baseline (the unmarked headline's verdict copied to every
  entity) scored by the same model in the same run;
- story level: PhraseBank dev accuracy and Twitter dev weighted-F1 of both models (target:
  the joint model within 0.005 of the story-only one);
- int8: the share of fp32 entity verdicts the int8 export keeps (target ≥ 0.99).

Several seeds give the spread (mean ± standard deviation over seeds) that a claimed
difference must exceed. The runs go into temporary registries; nothing is promoted.

    python bench/entities.py                       # the default recipe, one seed
    python bench/entities.py --steps 600 --seeds 1 2 3 --note "exploration, 600 steps"
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from provenance import cpu_model  # bench/ is this script's folder, first on sys.path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
#: Issue 25's targets on SEntFiN dev, and the story-level tolerance and int8 fidelity.
TARGETS = {"accuracy": 0.92, "macro_f1": 0.91, "conflict_accuracy": 0.88, "story_drop": 0.005, "int8_entity_agreement": 0.99}
VARIANTS = ("joint", "story-only")


def train_variant(variant: str, seed: int, steps: int) -> dict:
    """Train and evaluate one model (in this process); the figures of its card."""
    from newspulse.models.sentiment.data import SENTFIN_TRAIN
    from newspulse.models.sentiment.config import TrainConfig
    from newspulse.models.sentiment.train import train
    from newspulse.settings import get_settings

    with tempfile.TemporaryDirectory(prefix=f"newspulse-entities-{variant}-") as tmp:
        cfg = TrainConfig.production(get_settings(), registry=Path(tmp) / "registry", max_steps=steps, seed=seed, include_feedback=False, promote=False, progress=False)
        if variant == "story-only":
            cfg.train_files = [p for p in cfg.train_files if p != SENTFIN_TRAIN]
        started = time.perf_counter()
        card = train(cfg)
        wall = time.perf_counter() - started
    by_source = card.metrics["eval"].get("by_source", {})
    quant = card.quantization
    return {
        "variant": variant,
        "seed": seed,
        "steps": card.training["steps"],
        "rows": card.training["rows"],
        "wall_s": round(wall, 1),
        "fine_tuning_s": card.training["seconds"],
        "entities": card.metrics.get("entities"),
        "phrasebank_dev_accuracy": round(by_source["phrasebank"]["accuracy"], 4),
        "twitter_dev_weighted_f1": round(by_source["twitter_financial_news"]["weighted_f1"], 4),
        "int8": {k: quant.get(k) for k in ("method", "agreement", "entity_agreement", "entity_macro_f1_int8", "entity_macro_f1_fp32", "recommended")},
    }


def run_all(seeds: list[int], steps: int, parallel: int) -> list[dict]:
    """Every (variant, seed), ``parallel`` at a time, each in its own process with one torch
    thread: on a shared 2-core machine two single-threaded trainings finish sooner than two
    that each spin two threads."""

    def one(job: tuple[str, int]) -> dict:
        variant, seed = job
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
            cmd = [sys.executable, str(Path(__file__).resolve()), "--one", variant, "--seed", str(seed), "--steps", str(steps), "--out", out.name]
            done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{variant} seed {seed} failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
            return json.loads(Path(out.name).read_text())

    jobs = [(variant, seed) for seed in seeds for variant in VARIANTS]
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(one, jobs))


def spread(values: list[float]) -> dict:
    """Mean, standard deviation over seeds (0 for one seed) and the values themselves."""
    return {"mean": round(statistics.fmean(values), 4), "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0, "values": values}


def summarise(runs: list[dict]) -> dict:
    """The per-seed runs reduced to the figures the targets name (mean ± std over seeds)."""
    joint = [r for r in runs if r["variant"] == "joint"]
    story = [r for r in runs if r["variant"] == "story-only"]
    out: dict = {"joint": {}, "joint_story_baseline": {}, "story_only_model": {}}
    for key in ("accuracy", "macro_f1", "conflict_accuracy"):
        out["joint"][key] = spread([r["entities"][key] for r in joint])
        out["joint_story_baseline"][key] = spread([r["entities"]["story_baseline"][key] for r in joint])
        out["story_only_model"][key] = spread([r["entities"][key] for r in story])
    out["conflict_n"] = joint[0]["entities"]["conflict_n"]
    out["n"] = joint[0]["entities"]["n"]
    out["story_level"] = {
        name: {"joint": spread([r[key] for r in joint]), "story_only": spread([r[key] for r in story]),
               "joint_minus_story_only": spread([round(a[key] - b[key], 4) for a, b in zip(joint, story)])}
        for name, key in (("phrasebank_dev_accuracy", "phrasebank_dev_accuracy"), ("twitter_dev_weighted_f1", "twitter_dev_weighted_f1"))
    }
    out["int8_entity_agreement"] = spread([r["int8"]["entity_agreement"] for r in joint])
    return out


def setup() -> dict:
    from newspulse.models.backends.onnx import cpu_count

    return {"cores": cpu_count(), "cpu": cpu_model(), "device": "cpu", "torch_threads_per_training": 1, "load_average_1min": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> int:
    from newspulse.models.sentiment.config import DEFAULT_STEPS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"optimiser steps of every training (default: the default retraining's {DEFAULT_STEPS})")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42], help="training seeds (the spread over them is reported)")
    ap.add_argument("--parallel", type=int, default=2, help="trainings at a time")
    ap.add_argument("--out", type=Path, default=RESULTS / "entities.json", help="where the JSON result goes")
    ap.add_argument("--note", default="", help="free text stored with the result (conditions, e.g. a reduced step count)")
    ap.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)  # a worker: one training
    ap.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        args.out.write_text(json.dumps(train_variant(args.one, args.seed, args.steps)))
        return 0
    machine = setup()  # before the runs: nothing imported after an hour of training can fail then
    started = time.perf_counter()
    runs = run_all(args.seeds, args.steps, args.parallel)
    result = {
        "created_at": datetime.now(timezone.utc).isoformat(),
        "steps": args.steps,
        "default_steps": DEFAULT_STEPS,
        "seeds": args.seeds,
        "targets": TARGETS,
        **summarise(runs),
        "runs": runs,
        "setup": {**machine, "load_average_1min_after": round(os.getloadavg()[0], 2), "wall_s": round(time.perf_counter() - started, 1)},
        "note": args.note,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("joint", "joint_story_baseline", "story_level", "int8_entity_agreement")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
