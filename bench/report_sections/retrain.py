"""The retraining's section: bench/retrain.py's retrain.json, the default `newspulse model
train` timed whole against issue 14's 10 minutes on 2 cores, and issue 26's fixed recipe (a step
count, no wall clock) within 10 minutes on an idle 2-core machine."""

from __future__ import annotations

from .base import MET, NOT_MET, Row, at_most, missing, not_measured

#: A 1-minute load average at or below this (half of 2 cores) before the run counts as idle.
IDLE_LOAD = 1.0


def retrain_rows(retrain: dict | None) -> list[Row]:
    """Issue 14: the default retraining (bench/retrain.py), timed whole, within 10 minutes on 2
    cores; only a run with the default command counts."""
    area, target, src = "Retraining (#14)", "default `newspulse model train` ≤ 10 min on 2 cores", "retrain"
    if retrain is None:
        return [missing(area, target, src, "no retrain.json (python bench/retrain.py)")]
    wall = float(retrain["wall_s"])
    measured = f"{wall / 60:.1f} min ({retrain['fine_tuning_s']:.0f} s fine-tuning, {retrain['steps']} steps; dev macro-F1 {retrain['dev_macro_f1']:.3f})"
    if why := _not_the_default(retrain):
        return [Row(area, target, measured, not_measured(why), (src,))]
    return [Row(area, target, measured, at_most(wall, float(retrain.get("target_s", 600.0))), (src,))]


def _not_the_default(retrain: dict) -> str:
    """Why the run is not the default command on 2 cores ("" when it is)."""
    if retrain.get("command") != "newspulse model train" or retrain.get("setup", {}).get("cores") != 2:
        return f"`{retrain.get('command')}` on {retrain.get('setup', {}).get('cores')} cores, not the default on 2"
    return ""


def fixed_recipe_rows(retrain: dict | None) -> list[Row]:
    """Issue 26: the default retraining runs its planned step count whatever the machine's
    load (no time budget), and on an idle 2-core machine the whole command takes ≤ 10 minutes.
    A run before the machine was idle, or a file without the planned step count, measures
    neither."""
    area, target, src = "Retraining (#26)", "default retraining is a fixed step count (no wall clock), ≤ 10 min on an idle 2-core machine", "retrain"
    if retrain is None:
        return [missing(area, target, src, "no retrain.json (python bench/retrain.py)")]
    setup = retrain.get("setup", {})
    load = (setup.get("load_average_1min") or [None])[0]
    planned = retrain.get("planned_steps")
    if why := ("no planned step count in retrain.json" if planned is None else _not_the_default(retrain)):
        return [missing(area, target, src, why)]
    budget = retrain.get("time_budget_s")
    measured = (f"{retrain['steps']} of {planned} planned steps, {'no time budget' if budget is None else f'time budget {budget:.0f} s'}, "
                f"{float(retrain['wall_s']) / 60:.1f} min whole (1-min load {load} before)")
    if load is None or load > IDLE_LOAD:
        return [Row(area, target, measured, not_measured(f"the machine was not idle (load {load} > {IDLE_LOAD})"), (src,))]
    fixed = budget is None and retrain["steps"] == planned
    return [Row(area, target, measured, MET if fixed and float(retrain["wall_s"]) <= float(retrain.get("target_s", 600.0)) else NOT_MET, (src,))]
