"""The classifier's section: `newspulse bench model`'s model.json (CPU speed against BERT-base,
int8 fidelity, a distilled student's speed against the gold-only model) and the sentiment
quality targets, on the production model's dev figures and on the cross-validated recipe
(experiments/distill_cv.py's distill_cv.json)."""

from __future__ import annotations

from pathlib import Path

from .base import MET, NOT_MET, Row, at_least, dig, missing, not_measured, number, speeds, throughput_bars

TITLES = {
    "model": "Classifier: quality and throughput against BERT-base (`newspulse bench model`)",
    "distill_cv": "Distillation: k-fold CV of the sentiment recipe (experiments/distill_cv.py)",
}
#: distill_cv.json arm of the strongest teacher measured (all-mpnet-base-v2; docs/model.md).
TEACHER_ARM = "mpnet"
#: distill_cv.json arm that is the shipped sentiment recipe (docs/model.md: distillation on the
#: training rows from the mpnet fold teachers, final weights; the default of the retraining).
SHIPPED_SENTIMENT_ARM = "dgold-last"
#: A same-architecture speed ratio this close to 1 is timing noise of the interleaved bench.
SPEED_NOISE = 0.95


def backend_of(model: dict, variant: str) -> str | None:
    """The inference backend (torch, onnxruntime, …) model.json's ``backends`` names for a variant."""
    value = dig(model, f"backends.{variant}")
    return value if isinstance(value, str) else None


def fastest_production(model: dict) -> tuple[str, float] | None:
    production = {k: v for k, v in speeds(model.get("throughput")).items() if k.startswith("production_")}
    return max(production.items(), key=lambda kv: kv[1]) if production else None


def cpu_rows(model: dict | None) -> list[Row]:
    area, src = "CPU classifier (#16)", "model"
    targets = ("≥ 20× BERT-base fp32 sentences/s, same run, 2 cores", "dev macro-F1 of that model within 0.005 of fp32", "≥ 99 % of fp32 dev predictions kept")
    if model is None:
        return [missing(area, t, src, "no model.json") for t in targets]
    rows = []
    best = fastest_production(model)
    bert = speeds(model.get("throughput")).get("bert_base_fp32")
    if best is None or bert is None:
        rows.append(missing(area, targets[0], src, "model.json lacks production or BERT-base throughput"))
    else:
        name, speed = best
        backend = backend_of(model, name)
        label = name.removeprefix("production_") + (f", {backend}" if backend else "")
        rows.append(Row(area, targets[0], f"{speed / bert:.1f}× ({label} {speed:,.0f}/s vs {bert:,.1f}/s)", at_least(speed / bert, 20), (src,)))
    fp32 = number(model, "dev_macro_f1")
    variant = best[0].removeprefix("production_") if best else None
    is_fp32 = bool(variant) and variant.endswith("fp32")  # fp32 on any backend: fp32's predictions
    served = fp32 if is_fp32 else number(model, f"dev_{variant}.macro_f1") if variant else None
    if fp32 is None or served is None:
        rows.append(missing(area, targets[1], src, f"model.json lacks dev macro-F1 of fp32 or {variant}"))
    else:
        rows.append(Row(area, targets[1], f"{served:.3f} vs fp32 {fp32:.3f} ({served - fp32:+.3f})", MET if fp32 - served <= 0.005 else NOT_MET, (src,)))
    agreement = 1.0 if is_fp32 else number(model, f"{variant}_agreement_on_dev")
    if agreement is None:
        rows.append(missing(area, targets[2], src, "model.json lacks the agreement with fp32"))
    else:
        rows.append(Row(area, targets[2], f"{agreement:.2%}", at_least(agreement, 0.99), (src,)))
    return rows


def speed_rows(model: dict | None) -> list[Row]:
    """Issue 14: a distilled student must serve no slower than the model before it, timed in one
    run: `newspulse bench model` times the newest gold-only student beside a distilled production
    model (``distillation.speed_vs_gold_only``). The two have the same architecture, so a ratio
    within the interleaved timing's noise (``SPEED_NOISE``) counts as no slower."""
    area, target, src = "Sentiment speed (#14)", f"distilled student's CPU sentences/s no lower than the gold-only model's, same run (≥ {SPEED_NOISE:.2f}×: timing noise)", "model"
    if model is None:
        return [missing(area, target, src, "no model.json")]
    speed = dig(model, "distillation.speed_vs_gold_only")
    if speed is None:
        best = fastest_production(model)
        measured = f"production {best[0].removeprefix('production_')} {best[1]:,.0f}/s" if best else "—"
        why = "model.json times no gold-only model beside the student" if model.get("distillation") else "production is not a distilled student (model.json has no distillation)"
        return [Row(area, target, measured, not_measured(why), (src,))]
    measured = f"int8 {speed['production_int8']:,.0f}/s distilled ({model.get('model_version')}) vs {speed['gold_only_int8']:,.0f}/s gold-only ({speed['gold_only_version']}): {speed['ratio']:.2f}×"
    return [Row(area, target, measured, at_least(speed["ratio"], SPEED_NOISE), (src,))]


def sentiment_rows(model: dict | None, distill: dict | None) -> list[Row]:
    """Issue 14's sentiment targets, on the production model's dev figures (model.json) and on
    held-out CV folds of the shipped recipe (distill_cv.json: its ``full_length`` section, the
    production recipe's step count, when there is one); met only when every one is."""
    area = "Sentiment (#14)"
    distill = (distill or {}).get("full_length") or distill
    arm = dig(distill, f"arms.{SHIPPED_SENTIMENT_ARM}")
    steps = dig(distill, "steps")
    figures = [
        ("PhraseBank accuracy ≥ 0.88", 0.88, "dev_accuracy", "held_phrasebank_accuracy"),
        ("PhraseBank macro-F1 ≥ 0.86", 0.86, "dev_macro_f1", "held_phrasebank_macro_f1"),
        ("PhraseBank, 100 % agreement: accuracy ≥ 0.97", 0.97, None, "held_phrasebank_100_accuracy"),
        ("Twitter Financial News weighted-F1 ≥ 0.88", 0.88, None, "held_twitter_weighted_f1"),
    ]
    rows = []
    for target, goal, dev_key, cv_key in figures:
        parts, values, sources = [], [], []
        dev = number(model, dev_key) if dev_key else None
        if dev is not None:
            parts.append(f"dev {dev:.3f} ({model.get('model_version', 'production')})")
            values.append(dev)
            sources.append("model")
        cv = number(arm, f"{cv_key}.mean")
        if cv is not None:
            spread = number(arm, f"{cv_key}.std")
            parts.append(f"{distill.get('k', '?')}-fold CV {cv:.3f}" + (f" ± {spread:.3f}" if spread is not None else "") + (f" ({steps}-step recipe)" if steps else ""))
            values.append(cv)
            sources.append("distill_cv")
        teacher = dig(distill, f"arms.{TEACHER_ARM}")
        if number(teacher, f"{cv_key}.mean") is not None:
            # context, not the verdict: the teacher is not what serves
            parts.append(f"teacher all-mpnet-base-v2 (not served) {number(teacher, f'{cv_key}.mean'):.3f} ± {number(teacher, f'{cv_key}.std'):.3f}")
        if not values:
            rows.append(missing(area, target, "model", f"neither model.json nor distill_cv.json ({SHIPPED_SENTIMENT_ARM} arm) has it"))
        else:
            rows.append(Row(area, target, "; ".join(parts), MET if all(v >= goal for v in values) else NOT_MET, tuple(sources)))
    return rows


def plot_cpu_throughput(model: dict | None, path: Path) -> Path | None:
    """Sentences/s per model variant on CPU, with BERT-base and the 20× BERT-base target line."""
    measured = speeds((model or {}).get("throughput"))
    bert = measured.get("bert_base_fp32")
    if bert is None:
        return None
    labels = [n + (f" ({b})" if (b := backend_of(model, n)) and n.startswith("production_") else "") for n in measured]
    xlabel = f"sentences/s (CPU, {dig(model, 'setup.torch_threads') or '?'} threads, batch {dig(model, 'setup.batch_size') or '?'})"
    return throughput_bars(measured, labels, [(20 * bert, f"target: 20× BERT-base = {20 * bert:,.0f}/s")], xlabel, "Classifier throughput, CPU, one run", path)
