"""int8 fidelity and speed of each quantisation arm, per dev split and batch size (issue 26 item 4).

Dynamic int8 quantises each batch's activations with one scale per tensor, so a verdict can
depend on which other sentences share the batch: fidelity is measured on PhraseBank dev,
Twitter dev and the SEntFiN entity verdicts separately, at several batch sizes. The arms:

- the dynamic recipes of ``models/backends/onnx.py``'s ``INT8_RECIPES`` (MatMuls left fp32,
  per-channel or per-tensor weights, the outlier channels of each MatMul input in fp32: the
  served one), plus the FFN output MatMuls left fp32;
- static QDQ quantisation (``quantize_static``, per-channel weights, the weight MatMuls and
  Gemms) calibrated on the same training rows as the served recipe (never dev) with MinMax,
  Percentile or Entropy, uint8 or int8 activations, with and without ``reduce_range``.

Per arm: the share of fp32 predictions kept and both macro-F1s per split and batch size, and
PhraseBank dev sentences/s against the fp32 ONNX export timed in the same run (interleaved,
best of 3; ratios only on a shared machine). The reference is the fp32 ONNX export of the same
model. Results go to ``bench/results/int8.json``; ``--arms`` measures some arms and keeps the
others' earlier entries (each entry carries its own load and time).

    python bench/int8.py --registry /path/to/registry --note "make demo model, loaded machine"
    python bench/int8.py --arms outlier-channels-fp32 all-matmuls
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BATCH_SIZES = (4, 16, 64)
#: The gate's bars (models/sentiment/evaluate.py): agreement per split and batch size, macro-F1 drop.
MIN_AGREEMENT = 0.99
MAX_F1_DROP = 0.005
#: Static calibration pads every row to this many tokens: ONNX Runtime's histogram calibrators
#: (Percentile, Entropy) need equally shaped batches. PhraseBank and Twitter rows fit in it.
STATIC_PAD_TOKENS = 64
SPEED_ROUNDS = 3


def static_arm(method: str, activations: str, reduce_range: bool = False) -> Callable[[Path, Path, Path], Path]:
    """A builder of a static QDQ int8 graph: per-channel int8 weights on the weight MatMuls and
    Gemms (the attention score and context MatMuls stay fp32, as in the dynamic recipes),
    activation scales fixed by ``method`` on the served recipe's calibration rows."""

    def build(exported: Path, target: Path, model_dir: Path) -> Path:
        import onnx
        from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
        from transformers import AutoTokenizer

        from newspulse.models.backends.int8_outliers import calibration_texts

        prepared = target.with_name(f"{target.stem}-prepared.onnx")
        quant_pre_process(str(exported), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared), load_external_data=False).graph
        inputs = [i.name for i in graph.input]
        attention = [n.name for n in graph.node if n.op_type == "MatMul" and n.name.endswith(("/self/MatMul", "/self/MatMul_1"))]
        tokenizer = AutoTokenizer.from_pretrained(model_dir)

        class Rows(CalibrationDataReader):
            def __init__(self) -> None:
                self.rows = iter(calibration_texts())

            def get_next(self) -> dict | None:
                text = next(self.rows, None)
                if text is None:
                    return None
                enc = tokenizer([text], padding="max_length", truncation=True, max_length=STATIC_PAD_TOKENS, return_tensors="np")
                feed = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
                feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
                return {n: feed[n] for n in inputs}

        extra = {"CalibPercentile": 99.999} if method == "Percentile" else {}
        quantize_static(
            str(prepared), str(target), Rows(), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=reduce_range,
            activation_type=QuantType.QUInt8 if activations == "u8" else QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, method), op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=attention, extra_options=extra,
        )
        return target

    return build


def arms() -> dict[str, tuple[str, Callable[[Path, Path, Path], Path]]]:
    """Arm name → (what it is, builder of its int8 graph from the exported fp32 one)."""
    from newspulse.models.backends.onnx import INT8_RECIPE, INT8_RECIPES, Int8Recipe, quantize_int8

    def dynamic(recipe: Int8Recipe) -> Callable[[Path, Path, Path], Path]:
        return lambda exported, target, model_dir: quantize_int8(exported, target, recipe, model_dir=model_dir)

    def describe(recipe: Int8Recipe) -> str:
        parts = ["dynamic", "per-channel" if recipe.per_channel else "per-tensor"]
        parts += [f"fp32: {', '.join(recipe.keep_fp32)}"] if recipe.keep_fp32 else []
        parts += [f"{recipe.outlier_channels} outlier channels per MatMul input in fp32"] if recipe.outlier_channels else []
        return "; ".join(parts) + ("; served" if recipe == INT8_RECIPE else "")

    ffn_output = Int8Recipe("ffn-output-fp32", keep_fp32=tuple(f"/layer.{i}/output/dense/" for i in range(24)))
    out = {r.name: (describe(r), dynamic(r)) for r in (*INT8_RECIPES, ffn_output)}
    for method, acts, reduce in (("MinMax", "u8", False), ("Percentile", "u8", False), ("Entropy", "u8", False), ("MinMax", "s8", False), ("MinMax", "u8", True)):
        name = f"static-{method.lower()}-{acts}" + ("-reduce-range" if reduce else "")
        what = f"static QDQ, {method} calibration, {acts} activations, per-channel s8 weights" + (", reduce_range" if reduce else "")
        out[name] = (what, static_arm(method, acts, reduce))
    return out


def measure(model_dir: Path, names: list[str], batch_sizes: tuple[int, ...], rows: int | None) -> dict:
    """Per arm × split × batch size: agreement with fp32, both macro-F1s; plus speed against fp32."""
    from transformers import AutoConfig, AutoTokenizer

    from newspulse.models.backends.onnx import OnnxBackend, build_onnx, export_graph, onnxruntime_quiet
    from newspulse.models.sentiment.data import PHRASEBANK_DEV, SENTFIN_DEV, TWITTER_DEV, read_entity_csv, read_labelled_csv
    from newspulse.models.sentiment.entities import mark
    from newspulse.models.sentiment.evaluate import classification_metrics
    from newspulse.models.sentiment.predict import SentimentModel
    from newspulse.models.sentiment.registry import ModelCard
    from newspulse.schema import LABELS

    card = ModelCard.model_validate_json((model_dir / "model_card.json").read_text(encoding="utf-8"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    limit = getattr(AutoConfig.from_pretrained(model_dir), "max_position_embeddings", 512) or 512
    max_length = int(card.params.get("max_length", 128))
    entities = read_entity_csv(SENTFIN_DEV).head(rows)
    splits = {
        "phrasebank_dev": (read_labelled_csv(PHRASEBANK_DEV).head(rows), max_length),
        "twitter_dev": (read_labelled_csv(TWITTER_DEV).head(rows), max_length),
    }

    def classifier(path: Path) -> SentimentModel:
        return SentimentModel(OnnxBackend(path, precision="int8", max_positions=limit), tokenizer, version=card.version, max_length=max_length)

    def verdicts(model: SentimentModel, texts: list[str], length: int, bs: int) -> list[str]:
        return [LABELS[i] for i in model.predict_proba(texts, batch_size=bs, max_length=length).argmax(axis=1)]

    def sentences_per_s(model: SentimentModel, texts: list[str]) -> float:
        start = time.perf_counter()
        model.predict_proba(texts, batch_size=64)
        return len(texts) / (time.perf_counter() - start)

    catalogue = arms()
    with tempfile.TemporaryDirectory(prefix="int8-bench-") as tmp, onnxruntime_quiet():
        work = Path(tmp)
        exported, _ = export_graph(model_dir, work)
        (work / "fp32").mkdir()
        fp32 = classifier(build_onnx(model_dir, work / "fp32", "fp32"))
        # The entity verdicts' input is the headline with the entity marked, scored as score_mentions does.
        splits["sentfin_entities"] = (entities.assign(text=[mark(t, s) for t, s in zip(entities["text"], entities["spans"])]), fp32.chunk_tokens + 2)
        reference = {name: verdicts(fp32, frame["text"].tolist(), length, 64) for name, (frame, length) in splits.items()}
        timing_texts = splits["phrasebank_dev"][0]["text"].tolist()
        out: dict = {}
        for name in names:
            what, build = catalogue[name]
            load_before = os.getloadavg()[0]
            start = time.perf_counter()
            int8 = classifier(build(exported, work / f"{name}.onnx", model_dir))
            entry: dict = {"what": what, "build_s": round(time.perf_counter() - start, 1), "splits": {}}
            worst_agreement, worst_drop = 1.0, -1.0
            for split, (frame, length) in splits.items():
                labels, texts = frame["label"].tolist(), frame["text"].tolist()
                f1_fp32 = classification_metrics(labels, reference[split])["macro_f1"]
                per: dict = {"rows": len(texts), "fp32_macro_f1": round(f1_fp32, 4)}
                for bs in batch_sizes:
                    predicted = verdicts(int8, texts, length, bs)
                    agreement = float(np.mean([a == b for a, b in zip(predicted, reference[split], strict=True)]))
                    f1 = classification_metrics(labels, predicted)["macro_f1"]
                    per[f"batch_{bs}"] = {"agreement": round(agreement, 4), "int8_macro_f1": round(f1, 4)}
                    worst_agreement, worst_drop = min(worst_agreement, agreement), max(worst_drop, f1_fp32 - f1)
                entry["splits"][split] = per
            best = {"fp32": 0.0, "int8": 0.0}
            for _ in range(SPEED_ROUNDS):  # interleaved, so both see the same load
                best["fp32"] = max(best["fp32"], sentences_per_s(fp32, timing_texts))
                best["int8"] = max(best["int8"], sentences_per_s(int8, timing_texts))
            entry.update(
                worst_agreement=round(worst_agreement, 4),
                worst_macro_f1_drop=round(worst_drop, 4),
                passes_gate=worst_agreement >= MIN_AGREEMENT and worst_drop <= MAX_F1_DROP,
                speed={"fp32_sentences_per_s": round(best["fp32"], 1), "int8_sentences_per_s": round(best["int8"], 1), "int8_vs_fp32": round(best["int8"] / best["fp32"], 3)},
                load_average_1min=[round(load_before, 2), round(os.getloadavg()[0], 2)],
                finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            )
            out[name] = entry
            print(name, entry["worst_agreement"], entry["worst_macro_f1_drop"], entry["speed"]["int8_vs_fp32"], file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    from newspulse.models.backends.onnx import INT8_METHOD, INT8_RECIPE
    from newspulse.models.sentiment.registry import Registry
    from newspulse.settings import get_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, default=None, help="model registry (default: the settings' NEWSPULSE_MODEL_REGISTRY); its production model is measured")
    parser.add_argument("--arms", nargs="+", default=None, help="arms to measure (default: all); the results file keeps the others' earlier entries")
    parser.add_argument("--rows", type=int, default=None, help="first N rows of each split (smoke runs only)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    parser.add_argument("--note", default="", help="what the run measured (machine state, which model)")
    parser.add_argument("--out", type=Path, default=RESULTS / "int8.json")
    args = parser.parse_args(argv)
    names = args.arms or list(arms())
    unknown = sorted(set(names) - set(arms()))
    if unknown:
        parser.error(f"unknown arm(s) {unknown}; known: {list(arms())}")
    registry = Registry(args.registry or get_settings().model_registry)
    version = registry.production_version()
    if version is None:
        parser.error(f"no production model in {registry.path}")
    measured = measure(registry.version_dir(version), names, tuple(args.batch_sizes), args.rows)
    previous = json.loads(args.out.read_text(encoding="utf-8")) if args.out.exists() else {}
    kept = previous.get("arms", {}) if previous.get("model_version") == version and args.rows is None else {}
    result = {
        "model_version": version,
        "note": args.note or previous.get("note", ""),
        "reference": "fp32 ONNX export of the same model, 64 rows a batch",
        "gate": {"min_agreement": MIN_AGREEMENT, "max_macro_f1_drop": MAX_F1_DROP},
        "served": {"recipe": INT8_RECIPE.name, "method": INT8_METHOD},
        "speed": f"PhraseBank dev, 64 rows a batch, interleaved with fp32, best of {SPEED_ROUNDS}",
        "cores": len(os.sched_getaffinity(0)),
        "arms": {**kept, **measured},
    }
    result["measured_at"] = max(arm["finished"] for arm in result["arms"].values())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: {"worst_agreement": v["worst_agreement"], "worst_macro_f1_drop": v["worst_macro_f1_drop"], "passes_gate": v["passes_gate"], "int8_vs_fp32": v["speed"]["int8_vs_fp32"]} for k, v in measured.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
