"""The retraining's section: bench/retrain.py's retrain.json, the default `newspulse model
train` timed whole against issue 14's 10 minutes on 2 cores."""

from __future__ import annotations

from .base import Row, at_most, missing, not_measured


def retrain_rows(retrain: dict | None) -> list[Row]:
    """Issue 14: the default retraining (bench/retrain.py), timed whole, within 10 minutes on 2
    cores; only a run with the default command counts."""
    area, target, src = "Retraining (#14)", "default `newspulse model train` ≤ 10 min on 2 cores", "retrain"
    if retrain is None:
        return [missing(area, target, src, "no retrain.json (python bench/retrain.py)")]
    wall = float(retrain["wall_s"])
    measured = f"{wall / 60:.1f} min ({retrain['fine_tuning_s']:.0f} s fine-tuning, {retrain['steps']} steps; dev macro-F1 {retrain['dev_macro_f1']:.3f})"
    if retrain.get("command") != "newspulse model train" or retrain.get("setup", {}).get("cores") != 2:
        return [Row(area, target, measured, not_measured(f"`{retrain.get('command')}` on {retrain.get('setup', {}).get('cores')} cores, not the default on 2"), (src,))]
    return [Row(area, target, measured, at_most(wall, float(retrain.get("target_s", 600.0))), (src,))]
