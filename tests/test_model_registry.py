"""Model registry: versions, atomic production pointer, promotion gate."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from models.registry import ModelCard, NoProductionModel, Registry
from newspulse.errors import NotFound


def _card(version: str, f1: float, split: str = "s1") -> ModelCard:
    return ModelCard(
        version=version,
        base_model="test",
        created_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        code_version="test",
        metrics={"eval": {"macro_f1": f1, "accuracy": f1}},
        eval_split=split,
    )


def _add(reg: Registry, version: str, f1: float) -> ModelCard:
    card = _card(version, f1)
    reg.version_dir(version).mkdir(parents=True)
    reg.write_card(card)
    return card


def test_empty_registry_has_no_production(tmp_path):
    reg = Registry(tmp_path / "reg")
    assert reg.production_version() is None and reg.list_versions() == []
    with pytest.raises(NoProductionModel):
        reg.production_card()


def test_promote_writes_the_pointer_atomically_and_only_for_known_versions(tmp_path):
    reg = Registry(tmp_path)
    _add(reg, "v1", 0.8)
    with pytest.raises(NotFound):
        reg.promote("v9")
    assert reg.production_version() is None
    reg.promote("v1")
    assert reg.production_version() == "v1" and reg.production_card().version == "v1"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp file left
    with pytest.raises(ValueError):
        reg.version_dir("../etc")


def test_versions_are_unique_and_sorted_oldest_first(tmp_path):
    reg = Registry(tmp_path)
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
    first = reg.new_version(now)
    reg.version_dir(first).mkdir()
    second = reg.new_version(now)
    assert first == "v20260301-120000" and second == "v20260301-120000-2"
    for v in ("v20260301-120000", "v20250101-000000"):
        reg.write_card(_card(v, 0.7))
    assert reg.list_versions() == ["v20250101-000000", "v20260301-120000"]


def test_gate_floor_then_production_comparison(tmp_path):
    reg = Registry(tmp_path)
    low = _add(reg, "v1", 0.40)
    assert not reg.gate(low, floor=0.5).promote  # below the floor even with no production
    good = _add(reg, "v2", 0.80)
    decision = reg.gate(good, floor=0.5)
    assert decision.promote and decision.reason == "no production model yet"
    reg.promote("v2")
    worse = _add(reg, "v3", 0.79)
    decision = reg.gate(worse, floor=0.5)
    assert not decision.promote and decision.production_version == "v2" and decision.production_macro_f1 == pytest.approx(0.80)
    equal = _add(reg, "v4", 0.80)
    assert reg.gate(equal, floor=0.5).promote  # "at least production's"
    # production measured again on the candidate's split overrides its card
    assert reg.gate(worse, floor=0.5, production_macro_f1=0.70).promote
    assert reg.production_version() == "v2"  # gating never moves the pointer by itself


def test_describe_marks_production(tmp_path):
    reg = Registry(tmp_path)
    _add(reg, "v1", 0.8)
    _add(reg, "v2", 0.9)
    reg.promote("v2")
    rows = reg.describe()
    assert [(r["version"], r["production"]) for r in rows] == [("v1", False), ("v2", True)]
    assert rows[1]["metrics"] == {"eval": 0.9}
