"""The topic classifier's section: bench/topics.py's topics.json (ModApte micro- and macro-F1,
on test when the file has it, else the cross-validated figures `make topics-model` measured)."""

from __future__ import annotations

from .base import Row, at_least, dig, missing, number

TITLES = {"topics": "Topics: Reuters-21578 ModApte classifier (bench/topics.py, from `make topics-model`)"}


def topic_rows(topics: dict | None) -> list[Row]:
    """The topic targets on ModApte test when topics.json has it; otherwise issue 26's: 5-fold CV
    over all of ModApte train (train + dev), judged on the CV mean; dev is shown beside it, since
    its 777 stories hold too few rare-category stories to decide anything."""
    area, src = "Topics (#26)", "topics"
    rows = []
    for key, goal in (("micro_f1", 0.91), ("macro_f1", 0.60)):
        target = f"ModApte {key.replace('_f1', '-F1')} ≥ {goal:.2f} (CV over train + dev)"
        test = number(topics, f"test.{key}")
        if test is not None:
            rows.append(Row(area, target, f"test {test:.3f}", at_least(test, goal), (src,)))
            continue
        dev, cv, spread = number(topics, f"model.dev.{key}"), number(topics, f"model.cv.{key}_mean"), number(topics, f"model.cv.{key}_std")
        if cv is None:
            rows.append(missing(area, target, src, f"topics.json lacks model.cv.{key}_mean"))
            continue
        figure = f"{dig(topics, 'model.cv.folds')}-fold CV over {dig(topics, 'model.cv.rows') or 'train'} {cv:.3f}" + (f" ± {spread:.3f}" if spread is not None else "")
        rows.append(Row(area, target, figure + (f"; dev {dev:.3f}" if dev is not None else ""), at_least(cv, goal), (src,)))
    return rows
