"""The int8 section: bench/int8.py's int8.json (per quantisation arm, the share of fp32 verdicts
kept on each dev split at each batch size, the macro-F1 drop, and the speed against fp32 ONNX
timed in the same run), with the served recipe's summary row."""

from __future__ import annotations

from .base import MET, NOT_MET, Row, dig, missing, number

TITLES = {"int8": "int8: quantisation arms per dev split and batch size (bench/int8.py)"}
PLAIN_DYNAMIC = "all-matmuls"


def int8_rows(int8: dict | None) -> list[Row]:
    """The served recipe against the gate's bars, on every split and batch size measured."""
    area, src = "int8 (#26)", "int8"
    target = "served int8 keeps ≥ 99 % of fp32 verdicts on PhraseBank dev, Twitter dev and SEntFiN entities at every batch size, macro-F1 within 0.005"
    recipe = dig(int8, "served.recipe")
    arm = dig(int8, f"arms.{recipe}") if recipe else None
    if not isinstance(arm, dict):
        return [missing(area, target, src, "int8.json lacks the served recipe's arm")]
    agreement, drop = number(arm, "worst_agreement"), number(arm, "worst_macro_f1_drop")
    if agreement is None or drop is None:
        return [missing(area, target, src, "int8.json lacks the served arm's worst agreement or macro-F1 drop")]
    speed = number(arm, "speed.int8_vs_fp32")
    plain = number(int8, f"arms.{PLAIN_DYNAMIC}.speed.int8_vs_fp32")
    pace = f", {speed:.2f}× fp32 ONNX" if speed else ""
    pace += f" ({speed / plain:.2f}× plain dynamic int8's)" if speed and plain and recipe != PLAIN_DYNAMIC else ""
    measured = f"{recipe}: worst {agreement:.2%}, macro-F1 drop {drop:+.4f}{pace}"
    return [Row(area, target, measured, MET if agreement >= 0.99 and drop <= 0.005 else NOT_MET, (src,))]


def int8_table(int8: dict) -> list[str]:
    """One row per arm: share kept per split at each batch size, worst macro-F1 drop, speed."""
    arms = dig(int8, "arms") or {}
    splits = ("phrasebank_dev", "twitter_dev", "sentfin_entities")
    lines = [
        f"Model {int8.get('model_version', '?')}; served recipe: {dig(int8, 'served.recipe')}; speed: {int8.get('speed', '?')}. Share of fp32 verdicts kept per batch size.",
        "",
        "| arm | what | " + " | ".join(splits) + " | worst macro-F1 drop | × fp32 ONNX speed | passes the gate | load (1 min) |",
        "| --- | --- | " + " | ".join("---" for _ in splits) + " | --- | --- | --- | --- |",
    ]
    for name, arm in arms.items():
        kept = []
        for split in splits:
            per = dig(arm, f"splits.{split}") or {}
            kept.append(" / ".join(f"{v['agreement']:.2%}" for k, v in per.items() if k.startswith("batch_") and isinstance(v, dict)) or "—")
        speed = number(arm, "speed.int8_vs_fp32")
        load = dig(arm, "load_average_1min") or []
        lines.append(
            f"| {name} | {arm.get('what', '')} | " + " | ".join(kept)
            + f" | {number(arm, 'worst_macro_f1_drop') or 0:+.4f} | {f'{speed:.2f}×' if speed else '—'} | {'yes' if arm.get('passes_gate') else 'no'} | {'–'.join(f'{x:.1f}' for x in load)} |"
        )
    return lines
