"""Issue 26, item 1: the all-mpnet-base-v2 classifier (the accurate tier and the distillation
teacher) trained with the accurate tier's fixed recipe, with its learning curve.

It runs exactly what ``newspulse model train --tier accurate`` runs (``TrainConfig.production(settings, "accurate")``: the
bundled train splits, gold labels, :data:`ACCURATE_STEPS` steps at 16 rows, learning rate
:data:`ACCURATE_LEARNING_RATE`), plus a resumable checkpoint under ``--workdir`` so an
interrupted run (a killed process, a machine that goes away) continues from its last dev
evaluation with bit-identical results. Dev macro-F1 (PhraseBank + Twitter dev) is evaluated
``--evals-per-epoch`` times per epoch; that history is the learning curve. The registered model
is gated and promoted to ``production-accurate`` in the ``--workdir`` registry, so
``bench/cascade.py`` can measure the cascade with it.

    NEWSPULSE_ACCURATE_BASE_MODEL=DIR/all-mpnet-base-v2 \\
        python experiments/teacher_curve.py --workdir /scratch/teacher --seed 42

Results: ``bench/results/teacher.json`` (one entry per seed: the curve, the card's dev figures,
steps, seconds and the machine); BENCHMARKS.md plots the curve.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from newspulse.models.sentiment.config import ACCURATE_STEPS, TrainConfig
from newspulse.models.sentiment.train import train
from newspulse.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "teacher.json"


def final_figures(metrics: dict) -> dict:
    """The card's dev figures the issue's targets name: PhraseBank accuracy, macro-F1 and
    100 %-agreement accuracy, Twitter weighted-F1, and the SEntFiN entity figures."""
    dev = metrics["dev"]
    return {
        "dev_accuracy": round(dev["accuracy"], 4),
        "dev_macro_f1": round(dev["macro_f1"], 4),
        "phrasebank_accuracy": round(dev["by_source"]["phrasebank"]["accuracy"], 4),
        "phrasebank_macro_f1": round(dev["by_source"]["phrasebank"]["macro_f1"], 4),
        "phrasebank_100_accuracy": round(dev["by_agreement"]["100"]["accuracy"], 4),
        "twitter_weighted_f1": round(dev["by_source"]["twitter_financial_news"]["weighted_f1"], 4),
        "entity": {k: metrics["entities"][k] for k in ("n", "accuracy", "macro_f1", "conflict_accuracy", "conflict_n")},
    }


def run(workdir: Path, seed: int, evals_per_epoch: int, steps: int) -> dict:
    """Train (or resume) one seed and return its results entry."""
    settings = load_settings(model_registry=workdir / "registry")
    cfg = TrainConfig.production(settings, "accurate", seed=seed, evals_per_epoch=evals_per_epoch, max_steps=steps, checkpoint_dir=workdir / f"checkpoint-seed{seed}", include_feedback=False)
    card = train(cfg)
    return {
        "seed": seed,
        "version": card.version,
        "steps": card.training["steps"],
        "evals_per_epoch": evals_per_epoch,
        "training_seconds": card.training["seconds"],
        "precision": card.training["precision"],
        "history": card.training["history"],
        "final": final_figures(card.metrics),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, required=True, help="scratch folder outside git: registry and checkpoints")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--evals-per-epoch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=ACCURATE_STEPS)
    args = ap.parse_args()
    entry = run(args.workdir, args.seed, args.evals_per_epoch, args.steps)
    entry["machine"] = f"{platform.machine()}, {os.cpu_count()} CPU cores, torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}, shared with other work"
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": []}
    # A seed's run of another recipe (another step count or precision) moves to ``earlier_runs``:
    # BENCHMARKS.md draws its curve beside the current recipe's, the target row reads "runs" only.
    replaced = [r for r in results["runs"] if r["seed"] == args.seed]
    earlier = [r for r in replaced if (r["steps"], r.get("precision", "fp32")) != (entry["steps"], entry["precision"])]
    results["earlier_runs"] = [r for r in results.get("earlier_runs", []) if r not in earlier] + earlier
    results["runs"] = [r for r in results["runs"] if r["seed"] != args.seed] + [entry]
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print(json.dumps({k: entry[k] for k in ("seed", "version", "final")}, indent=2))


if __name__ == "__main__":
    main()
