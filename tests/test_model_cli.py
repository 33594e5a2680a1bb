"""`newspulse model evaluate/list/promote` on a registry of tiny random models."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from newspulse.models.sentiment.registry import Registry
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
    assert _invoke("promote", "v9").exit_code == 4  # not found


def _one_line_error(result, needle: str, code: int) -> None:
    """The CLI's promise for expected errors: one line naming the problem, no traceback, the exit
    code of its kind (docs/cli.md: 1 a failure such as a corrupted model, 2 a bad name)."""
    assert result.exit_code == code, result.output
    assert needle in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_a_corrupted_model_safetensors_is_refused_with_one_line_exit_1(registry, tmp_path):
    """Issue 29 #9: bytes overwritten in the weights (same size) must not be served."""
    weights = registry.version_dir("v1") / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-4096:] = bytes(4096)
    weights.write_bytes(bytes(blob))
    data = tmp_path / "eval.csv"
    pd.read_csv("data/phrasebank/dev.csv").head(4).to_csv(data, index=False)
    _one_line_error(_invoke("evaluate", "--data", str(data), "--json"), "model version v1 is corrupted: model.safetensors has sha256", 1)
    assert not (registry.version_dir("v1") / "onnx").exists(), "refused before anything was exported"


def test_the_card_pins_weights_and_tokenizer_and_a_card_without_hashes_loads_with_a_warning(registry, caplog):
    from newspulse.models.sentiment.predict import SentimentModel

    card = registry.card("v1")
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"} <= set(card.files)
    card.files = {}  # a card written before hashes were recorded
    registry.write_card(card)
    with caplog.at_level("WARNING", logger="newspulse.models.sentiment.registry"):
        model = SentimentModel.from_dir(registry.version_dir("v1"), device="cpu", quantize="off", backend="torch")
    assert model.version == "v1"
    assert [r.getMessage() for r in caplog.records] == ["model version v1 has no file hashes in its card (registered before they were recorded); loading it unverified"]


def test_a_production_pointer_outside_the_registry_is_one_line_exit_2(registry, tmp_path):
    """Issue 29 #15: ``../../etc`` in the pointer file."""
    registry.pointer.write_text("../../etc\n")
    data = tmp_path / "eval.csv"
    pd.read_csv("data/phrasebank/dev.csv").head(4).to_csv(data, index=False)
    _one_line_error(_invoke("evaluate", "--data", str(data)), "holds '../../etc', not a version name", 2)
    _one_line_error(_invoke("list"), "holds '../../etc', not a version name", 2)


def test_a_version_folder_copied_under_a_new_name_is_one_row_and_never_served(registry, tmp_path):
    """Issue 29 #11: ``cp -r v1 v1-copy`` gave two rows named v1 and none marked production."""
    import shutil

    shutil.copytree(registry.version_dir("v1"), registry.version_dir("v1-copy"))
    rows = json.loads(_invoke("list", "--json").stdout)
    assert [(r["version"], r["production"], bool(r.get("problem"))) for r in rows] == [("v1", True, False), ("v1-copy", False, True), ("v2", False, False)]
    listing = _invoke("list")
    assert listing.exit_code == 0 and "! v1-copy  not servable: model folder" in listing.output
    _one_line_error(_invoke("promote", "v1-copy", "--force"), "holds the card of version 'v1' (copied or renamed?)", 1)
    registry.pointer.write_text("v1-copy\n")  # pointed there by hand
    data = tmp_path / "eval.csv"
    pd.read_csv("data/phrasebank/dev.csv").head(4).to_csv(data, index=False)
    _one_line_error(_invoke("evaluate", "--data", str(data)), "holds the card of version 'v1'", 1)
