"""`newspulse model evaluate/list/promote` on a registry of tiny random models."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from newspulse.models.registry import Registry
from test_model_predict import register_random_model

runner = CliRunner()


@pytest.fixture
def registry(np_env) -> Registry:
    reg = Registry(np_env / "registry")
    register_random_model(reg, "v1", seed=1, macro_f1=0.70)
    register_random_model(reg, "v2", seed=2, macro_f1=0.60)
    reg.promote("v1")
    return reg


def _invoke(*args: str):
    from newspulse.cli import app

    return runner.invoke(app, ["model", *args])


def test_evaluate_json_is_one_object_with_the_metrics(registry, tmp_path):
    data = tmp_path / "eval.csv"
    pd.read_csv("data/phrasebank/dev.csv").head(12).to_csv(data, index=False)
    result = _invoke("evaluate", "--data", str(data), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {"n", "accuracy", "macro_f1", "weighted_f1", "per_class", "confusion", "model_version", "lexicon", "by_agreement"} <= set(out)
    assert out["n"] == 12 and out["model_version"] == "v1" and sum(map(sum, out["confusion"])) == 12


def test_evaluate_reports_bad_input_clearly(registry, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nhello,great\n")
    result = _invoke("evaluate", "--data", str(bad), "--json")
    assert result.exit_code == 2 and "outside" in result.output


def test_list_and_gated_promote(registry):
    result = _invoke("list", "--json")
    assert result.exit_code == 0
    assert [(r["version"], r["production"]) for r in json.loads(result.stdout)] == [("v1", True), ("v2", False)]
    refused = _invoke("promote", "v2")  # worse than production on the same split
    assert refused.exit_code == 1 and "refused" in refused.output and registry.production_version() == "v1"
    forced = _invoke("promote", "v2", "--force")
    assert forced.exit_code == 0 and registry.production_version() == "v2"
    assert _invoke("promote", "v9").exit_code == 2
