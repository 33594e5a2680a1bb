"""The cascade's accuracy-vs-throughput curve over thresholds (issue 26 item 3).

The fast tier (the registry's ``production``) scores every sentence; at threshold ``t`` the
sentences whose fast-tier confidence (largest class probability) is below ``t`` take the
accurate tier's (``production-accurate``) verdict, as ``models/sentiment/predict.py``'s
``CascadeClassifier`` does. Per threshold, on PhraseBank dev and Twitter dev: the share routed
to the accurate tier, PhraseBank accuracy / macro-F1 / accuracy on 100 %-agreement sentences,
Twitter weighted-F1, and sentences/s, as a ratio to FinBERT-sized BERT-base fp32 timed in the
same run. Both tiers score every dev row once (so each threshold's verdicts are exact), and the
cascade's speed at ``t`` is computed from the two tiers' measured speeds on the PhraseBank dev
mix: ``n / (n / fast + routed / accurate)``. ``default_threshold`` records the threshold production
uses (``NEWSPULSE_CASCADE_THRESHOLD``), the point BENCHMARKS.md reads the targets at. Both tiers serve at the precision their cards'
int8 gate allows (``NEWSPULSE_QUANTIZE=auto``). Results go to ``bench/results/cascade.json``.

    python bench/cascade.py                        # the settings' registry
    python bench/cascade.py --registry var/registry --note "idle machine"

Without an accurate model promoted it measures nothing and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
THRESHOLDS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.01)


def curve(registry, thresholds: tuple[float, ...], rows: int | None, rounds: int) -> dict:
    """The curve's rows, the two tiers' versions and speeds, and BERT-base's speed."""
    import numpy as np

    from newspulse.models.sentiment.bench import interleaved_throughput, random_bert_classifier
    from newspulse.models.sentiment.data import PHRASEBANK_DEV, TWITTER_DEV, read_labelled_csv
    from newspulse.models.sentiment.evaluate import classification_metrics
    from newspulse.models.sentiment.predict import SentimentModel, confidence_of
    from newspulse.schema import LABELS

    tiers = {tier: registry.production_card(tier) for tier in ("fast", "accurate")}
    models = {tier: SentimentModel.from_dir(registry.version_dir(card.version), device="cpu", card=card) for tier, card in tiers.items()}
    bert_model, bert_tok = random_bert_classifier(str(registry.version_dir(tiers["fast"].version)))
    bert = SentimentModel(bert_model, bert_tok, version="bert-base-random", max_length=models["fast"].max_length)
    phrasebank, twitter = read_labelled_csv(PHRASEBANK_DEV).head(rows), read_labelled_csv(TWITTER_DEV).head(rows)
    probs = {name: {tier: m.predict_proba(frame["text"].tolist()) for tier, m in models.items()} for name, frame in (("phrasebank", phrasebank), ("twitter", twitter))}
    speeds = interleaved_throughput({"fast": models["fast"], "accurate": models["accurate"], "bert_base_fp32": bert}, phrasebank["text"].tolist(), rounds=rounds)
    full = (phrasebank["agreement"] == 100).to_numpy()  # annotator agreement in percent
    points = []
    for t in thresholds:
        point: dict = {"threshold": t}
        for name, frame in (("phrasebank", phrasebank), ("twitter", twitter)):
            routed = confidence_of(probs[name]["fast"]) < t
            chosen = np.where(routed[:, None], probs[name]["accurate"], probs[name]["fast"])
            predicted = [LABELS[i] for i in chosen.argmax(axis=1)]
            m = classification_metrics(frame["label"].tolist(), predicted)
            point[f"{name}_routed"] = round(float(routed.mean()), 4)
            if name == "phrasebank":
                agreed = classification_metrics(frame["label"][full].tolist(), [p for p, keep in zip(predicted, full) if keep])
                point.update(phrasebank_accuracy=round(m["accuracy"], 4), phrasebank_macro_f1=round(m["macro_f1"], 4), phrasebank_100_accuracy=round(agreed["accuracy"], 4))
                n = len(predicted)
                speed = n / (n / speeds["fast"] + routed.sum() / speeds["accurate"])
                point.update(sentences_per_s=round(speed, 1), ratio_vs_bert_base=round(speed / speeds["bert_base_fp32"], 2))
            else:
                point["twitter_weighted_f1"] = round(m["weighted_f1"], 4)
        points.append(point)
    return {
        "tiers": {tier: {"version": card.version, "base_model": card.base_model, "precision": models[tier].backend.precision} for tier, card in tiers.items()},
        "throughput": {k: round(v, 1) for k, v in speeds.items()},
        "curve": points,
        "rows": {"phrasebank_dev": len(phrasebank), "twitter_dev": len(twitter)},
    }


def main(argv: list[str] | None = None) -> int:
    from newspulse.models.sentiment.registry import Registry
    from newspulse.settings import get_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, default=None, help="model registry (default: NEWSPULSE_MODEL_REGISTRY)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS))
    parser.add_argument("--rows", type=int, default=None, help="first N rows of each dev split (smoke runs only)")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (best of)")
    parser.add_argument("--note", default="", help="what the run measured (machine state)")
    parser.add_argument("--out", type=Path, default=RESULTS / "cascade.json")
    args = parser.parse_args(argv)
    settings = get_settings()
    registry = Registry(args.registry or settings.model_registry)
    for tier in ("fast", "accurate"):
        if registry.production_version(tier) is None:
            print(f"no {tier}-tier model promoted in {registry.path}: nothing to measure (train one with `newspulse model train --tier {tier}`)", file=sys.stderr)
            return 2
    load_before = os.getloadavg()[0]
    result = curve(registry, tuple(args.thresholds), args.rows, args.rounds)
    result.update(
        default_threshold=settings.cascade_threshold,
        note=args.note,
        load_average_1min=[round(load_before, 2), round(os.getloadavg()[0], 2)],
        cores=len(os.sched_getaffinity(0)),
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result["curve"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
