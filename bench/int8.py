"""int8 fidelity of each quantisation recipe, per dev split and batch size (issue 26 item 4).

Dynamic int8 quantises each batch's activations with one scale per tensor, so a verdict can
depend on which other sentences share the batch: fidelity is measured on PhraseBank dev and
Twitter dev separately, at several batch sizes. Per recipe in ``models/backends/onnx.py``'s
``INT8_RECIPES`` (the MatMuls that stay fp32, per-channel or per-tensor weights) the script
reports the share of fp32 predictions the int8 graph keeps, the macro-F1 of both, and
sentences/s at the largest batch size; the reference is the fp32 ONNX export of the same model.
Results go to ``bench/results/int8.json``.

    python bench/int8.py                                 # the production model of the settings' registry
    python bench/int8.py --registry .cache/test-registry-... --note "quick test classifier"
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BATCH_SIZES = (4, 16, 64)
#: The gate's bars (models/sentiment/evaluate.py): agreement per split and batch size, macro-F1 drop.
MIN_AGREEMENT = 0.99
MAX_F1_DROP = 0.005


def measure(model_dir: Path, batch_sizes: tuple[int, ...], rows: int | None) -> dict:
    """Per recipe × split × batch size: agreement with fp32, both macro-F1s; plus speed."""
    from transformers import AutoConfig, AutoTokenizer

    from newspulse.models.sentiment.data import PHRASEBANK_DEV, TWITTER_DEV, read_labelled_csv
    from newspulse.models.sentiment.evaluate import classification_metrics
    from newspulse.models.backends.onnx import INT8_RECIPES, OnnxBackend, build_onnx, export_graph, onnxruntime_quiet, quantize_int8
    from newspulse.models.sentiment.predict import SentimentModel
    from newspulse.models.sentiment.registry import ModelCard

    card = ModelCard.model_validate_json((model_dir / "model_card.json").read_text(encoding="utf-8"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    limit = getattr(AutoConfig.from_pretrained(model_dir), "max_position_embeddings", 512) or 512
    max_length = int(card.params.get("max_length", 128))
    splits = {"phrasebank_dev": read_labelled_csv(PHRASEBANK_DEV).head(rows), "twitter_dev": read_labelled_csv(TWITTER_DEV).head(rows)}

    def classifier(path: Path, precision: str) -> SentimentModel:
        return SentimentModel(OnnxBackend(path, precision=precision, max_positions=limit), tokenizer, version=card.version, max_length=max_length)

    with tempfile.TemporaryDirectory(prefix="int8-bench-") as tmp, onnxruntime_quiet():
        work = Path(tmp)
        exported, _ = export_graph(model_dir, work)
        (work / "fp32").mkdir()
        fp32 = classifier(build_onnx(model_dir, work / "fp32", "fp32"), "fp32")
        reference = {name: fp32.predict(frame["text"].tolist(), batch_size=64) for name, frame in splits.items()}
        out: dict = {"reference": "fp32 ONNX export of the same model, 64 rows a batch", "recipes": {}}
        for recipe in INT8_RECIPES:
            int8 = classifier(quantize_int8(exported, work / f"{recipe.name}.onnx", recipe), "int8")
            per: dict = {}
            worst_agreement, worst_drop = 1.0, -1.0
            for name, frame in splits.items():
                labels = frame["label"].tolist()
                f1_fp32 = classification_metrics(labels, reference[name])["macro_f1"]
                per[name] = {"fp32_macro_f1": round(f1_fp32, 4)}
                for bs in batch_sizes:
                    start = time.perf_counter()
                    predicted = int8.predict(frame["text"].tolist(), batch_size=bs)
                    elapsed = time.perf_counter() - start
                    agreement = sum(a == b for a, b in zip(predicted, reference[name], strict=True)) / len(predicted)
                    f1 = classification_metrics(labels, predicted)["macro_f1"]
                    per[name][f"batch_{bs}"] = {"agreement": round(agreement, 4), "int8_macro_f1": round(f1, 4), "sentences_per_s": round(len(predicted) / elapsed, 1)}
                    worst_agreement = min(worst_agreement, agreement)
                    worst_drop = max(worst_drop, f1_fp32 - f1)
            out["recipes"][recipe.name] = {
                "keep_fp32": list(recipe.keep_fp32),
                "per_channel": recipe.per_channel,
                "splits": per,
                "worst_agreement": round(worst_agreement, 4),
                "worst_macro_f1_drop": round(worst_drop, 4),
                "passes_gate": worst_agreement >= MIN_AGREEMENT and worst_drop <= MAX_F1_DROP,
            }
            print(recipe.name, out["recipes"][recipe.name]["worst_agreement"], out["recipes"][recipe.name]["worst_macro_f1_drop"], file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    from newspulse.models.sentiment.registry import Registry
    from newspulse.settings import get_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, default=None, help="model registry (default: the settings' NEWSPULSE_MODEL_REGISTRY)")
    parser.add_argument("--rows", type=int, default=None, help="first N rows of each split (smoke runs only)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    parser.add_argument("--note", default="", help="what the run measured (machine state, which model)")
    parser.add_argument("--out", type=Path, default=RESULTS / "int8.json")
    args = parser.parse_args(argv)
    registry = Registry(args.registry or get_settings().model_registry)
    version = registry.production_version()
    if version is None:
        parser.error(f"no production model in {registry.path}")
    load_before = os.getloadavg()[0]
    result = measure(registry.version_dir(version), tuple(args.batch_sizes), args.rows)
    result.update(
        model_version=version,
        note=args.note,
        gate={"min_agreement": MIN_AGREEMENT, "max_macro_f1_drop": MAX_F1_DROP},
        load_average_1min=[round(load_before, 2), round(os.getloadavg()[0], 2)],
        cores=len(os.sched_getaffinity(0)),
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: {"worst_agreement": v["worst_agreement"], "worst_macro_f1_drop": v["worst_macro_f1_drop"], "passes_gate": v["passes_gate"]} for k, v in result["recipes"].items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
