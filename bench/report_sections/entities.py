"""Entity-level sentiment's section (issue 25): the model targets from bench/entities.py's
entities.json, and the pipeline targets measured by other benchmarks (entity scoring's cost in
pipeline.json's stage costs, two-company bursts in alerts.json)."""

from __future__ import annotations

from .base import MET, NOT_MET, Row, at_least, at_most, dig, missing, not_measured, number

TITLES = {"entities": "Entity-level sentiment: SEntFiN dev, joint vs story-only training (bench/entities.py)"}


def _mean_sd(data: dict, path: str) -> str:
    mean, sd = number(data, f"{path}.mean"), number(data, f"{path}.std")
    return "—" if mean is None else f"{mean:.3f}" + (f" ± {sd:.3f}" if sd else "")


def entity_rows(entities: dict | None) -> list[Row]:
    """Issue 25's model targets from bench/entities.py: SEntFiN dev figures of the joint model
    (the story baseline of the same run beside them), the story-level cost of joint training,
    and int8 fidelity on entity verdicts. A run shorter than the default recipe is reported but
    not counted: the targets are about the model `make demo` trains."""
    area, src = "Entity sentiment (#25)", "entities"
    targets = [
        ("SEntFiN dev accuracy ≥ 0.92", "accuracy", 0.92),
        ("SEntFiN dev macro-F1 ≥ 0.91", "macro_f1", 0.91),
        ("SEntFiN dev conflicting-headline accuracy ≥ 0.88", "conflict_accuracy", 0.88),
    ]
    if entities is None:
        return [missing(area, t, src, "no entities.json (python bench/entities.py)") for t, _, _ in targets]
    steps, default = entities.get("steps"), entities.get("default_steps")
    seeds = len(entities.get("seeds", [])) or 1
    short = None if steps == default else not_measured(f"a {steps}-step run, not the default {default}-step recipe")
    rows = []
    for target, key, goal in targets:
        value = number(entities, f"joint.{key}.mean")
        measured = f"joint {_mean_sd(entities, f'joint.{key}')} vs story baseline {_mean_sd(entities, f'joint_story_baseline.{key}')} ({steps} steps, {seeds} seed(s))"
        rows.append(Row(area, target, measured, short or (not_measured("no figure") if value is None else at_least(value, goal)), (src,)))
    drops = {name: number(entities, f"story_level.{name}.joint_minus_story_only.mean") for name in ("phrasebank_dev_accuracy", "twitter_dev_weighted_f1")}
    measured = "; ".join(f"{name.replace('_', ' ')} {_mean_sd(entities, f'story_level.{name}.joint')} vs {_mean_sd(entities, f'story_level.{name}.story_only')} without SEntFiN" for name in drops)
    known = [d for d in drops.values() if d is not None]
    verdict = short or (not_measured("no figures") if len(known) < len(drops) else at_least(min(known), -0.005))
    rows.append(Row(area, "story level within 0.005 of the model trained without SEntFiN (PhraseBank accuracy, Twitter weighted-F1)", measured, verdict, (src,)))
    agreement = number(entities, "int8_entity_agreement.mean")
    rows.append(Row(area, "int8 keeps ≥ 99 % of fp32 entity verdicts on dev", f"{_mean_sd(entities, 'int8_entity_agreement')} ({steps} steps)",
                    short or (not_measured("no figure") if agreement is None else at_least(agreement, 0.99)), (src,)))
    return rows


def entity_pipeline_rows(pipeline: dict | None, alerts: dict | None) -> list[Row]:
    """Issue 25's pipeline targets: entity scoring's cost beside the story-level classifier on
    the Reuters replay (bench/pipeline.py's stage costs), and ticker alerts on two-company
    stories (bench/alerts.py's two-company case)."""
    area = "Entity sentiment (#25)"
    rows = []
    target = "entity scoring adds ≤ 30 % to the classifier's per-article time (Reuters replay)"
    share = number(pipeline, "stage_costs.entity_share_of_classifier")
    if share is None:
        rows.append(missing(area, target, "pipeline", "pipeline.json's stage_costs lack entity_share_of_classifier"))
    else:
        entity_ms, story_ms = number(pipeline, "stage_costs.entities_ms_per_article"), number(pipeline, "stage_costs.classify_ms_per_article")
        detail = f" ({entity_ms:.1f} vs {story_ms:.1f} ms/article)" if entity_ms is not None and story_ms is not None else ""
        rows.append(Row(area, target, f"{share:.0%}{detail}", at_most(share, 0.30), ("pipeline",)))
    target = "two-company bursts alert on the company they are bad for only (ticker-scope precision ≥ 0.9, recall ≥ 0.95)"
    own = dig(alerts, "two_company.entity_verdicts")
    precision, recall = number(own, "precision"), number(own, "recall")
    if precision is None or recall is None:
        rows.append(missing(area, target, "alerts", "alerts.json lacks two_company.entity_verdicts"))
    else:
        story = dig(alerts, "two_company.story_verdict_only")
        detail = f"; story verdict alone {number(story, 'precision'):.3f} / {number(story, 'recall'):.3f}" if number(story, "precision") is not None else ""
        verdict = MET if precision >= 0.9 and recall >= 0.95 else NOT_MET
        rows.append(Row(area, target, f"{precision:.3f} / {recall:.3f}, {number(own, 'good_company_alerts') or 0:.0f} alerts on the good-news company{detail}", verdict, ("alerts",)))
    return rows
