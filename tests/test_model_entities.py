"""Entity-level sentiment, model side: marking, SEntFiN rows, entity metrics beside the story
baseline, the evaluate-entities command, the card/gate/int8 entity figures, and a trained model
that tells two companies in one story apart."""

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from newspulse.models.sentiment.data import DEFAULT_TRAIN_FILES, SENTFIN_DEV, SENTFIN_TRAIN, DataError, licence_of, read_entity_csv, read_labelled_csv
from newspulse.models.sentiment.entities import CLOSE, OPEN, mark, mention_spans
from newspulse.models.sentiment.evaluate import entity_metrics, evaluate_candidate
from newspulse.models.sentiment.predict import SentimentModel
from newspulse.models.sentiment.registry import ModelCard, Registry, gate_candidate, sha256_file
from newspulse.schema import LABELS
from test_model_predict import register_random_model

ROOT = Path(__file__).resolve().parent.parent


def test_mark_wraps_each_mention_and_keeps_the_rest():
    text = "Intel slides as AMD wins; AMD gains"
    assert mark(text, [(16, 19), (26, 29)]) == f"Intel slides as {OPEN}AMD{CLOSE} wins; {OPEN}AMD{CLOSE} gains"


def test_mark_merges_overlapping_spans():
    assert mark("Advanced Micro Devices", [(0, 8), (0, 22)]) == f"{OPEN}Advanced Micro Devices{CLOSE}"


def test_mark_rejects_spans_outside_the_text():
    with pytest.raises(ValueError, match="outside"):
        mark("AMD", [(1, 9)])


# --- entity-level labelled data -----------------------------------------------------------------
ENTITY_ROWS = [
    ("1", "Gold shines on seasonal demand; Silver dull", "Gold", "positive"),
    ("1", "Gold shines on seasonal demand; Silver dull", "silver", "negative"),
    ("2", "Infosys to hire 20,000 freshers", "Infosys", "positive"),
    ("3", "Sensex flat; Tata Motors, HDFC Bank trade higher", "Sensex", "neutral"),
    ("3", "Sensex flat; Tata Motors, HDFC Bank trade higher", "HDFC Bank", "positive"),
    ("4", "L&T Finance Holdings explores various options", "L&T Finance neutralings", "neutral"),
]


def _entity_csv(path, rows=ENTITY_ROWS):
    pd.DataFrame(rows, columns=["id", "text", "entity", "label"]).to_csv(path, index=False)
    return path


def test_mention_spans_finds_every_case_insensitive_occurrence():
    text = "AMD beats; amd guides up, Intel slips"
    assert mention_spans(text, "AMD") == [(0, 3), (11, 14)]
    assert mention_spans(text, " Intel ") == [(26, 31)]
    assert mention_spans(text, "Nvidia") == [] and mention_spans(text, "") == []
    assert mention_spans("S&P 500 (SPX) up", "(SPX)") == [(8, 13)]  # regex characters are literal


def test_entity_rows_train_as_marked_text_and_rows_without_a_mention_are_left_out(tmp_path):
    (tmp_path / "sentfin").mkdir()
    frame = read_labelled_csv(_entity_csv(tmp_path / "sentfin" / "train.csv"))
    assert frame["text"].tolist()[:2] == [
        f"{OPEN}Gold{CLOSE} shines on seasonal demand; Silver dull",
        f"Gold shines on seasonal demand; {OPEN}Silver{CLOSE} dull",
    ]
    assert len(frame) == 5 and frame["label"].tolist()[:2] == ["positive", "negative"]  # the damaged entity row is dropped
    assert set(frame["source"]) == {"sentfin"} and licence_of(tmp_path / "sentfin" / "train.csv")["licence"] == "MIT"


def test_bundled_sentfin_rows_load_with_almost_every_entity_found():
    raw = pd.read_csv(SENTFIN_TRAIN, keep_default_na=False)
    marked = read_labelled_csv(SENTFIN_TRAIN)
    assert list(raw.columns) == ["id", "text", "entity", "label"]
    assert len(raw) - 20 <= len(marked) < len(raw) and marked["text"].str.contains(re.escape(OPEN)).all()
    assert SENTFIN_TRAIN in DEFAULT_TRAIN_FILES and len(read_entity_csv(SENTFIN_DEV)) == 1367


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("9,Some headline,Acme,great", "line 3: label 'great'"),
        ("9,Some headline,,neutral", "line 3: empty entity"),
        ("9,,Acme,neutral", "line 3: empty text"),
    ],
)
def test_a_bad_entity_row_is_one_error_naming_its_line(tmp_path, row, problem):
    path = tmp_path / "bad.csv"
    path.write_text("id,text,entity,label\n1,Acme wins,Acme,positive\n" + row + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(problem)):
        read_entity_csv(path)


def test_entity_metrics_count_conflicting_headlines_for_the_model_and_the_story_baseline(tmp_path):
    frame = read_entity_csv(_entity_csv(tmp_path / "e.csv"))
    # the model gets both entities of headline 1 right and HDFC Bank wrong; the story baseline
    # copies one verdict per headline, so it is wrong on one entity of each conflicting headline
    entity_pred = ["positive", "negative", "positive", "neutral", "neutral", "neutral"]
    story_pred = ["positive", "positive", "positive", "neutral", "neutral", "neutral"]
    m = entity_metrics(frame, entity_pred, story_pred)
    assert (m["n"], m["conflict_n"], m["unmatched_n"]) == (6, 4, 1)
    assert m["accuracy"] == round(5 / 6, 4) and m["conflict_accuracy"] == 0.75
    assert m["story_baseline"]["accuracy"] == round(4 / 6, 4) and m["story_baseline"]["conflict_accuracy"] == 0.5
    no_conflict = entity_metrics(frame.iloc[2:3], ["positive"], ["positive"])
    assert no_conflict["conflict_n"] == 0 and no_conflict["conflict_accuracy"] is None


# --- newspulse model evaluate-entities -----------------------------------------------------------
@pytest.fixture
def random_registry(np_env) -> Registry:
    reg = Registry(np_env / "registry")
    register_random_model(reg, "v1", seed=1)
    reg.promote("v1")
    return reg


def _evaluate_entities(*args: str):
    from newspulse.cli import app

    return CliRunner().invoke(app, ["model", "evaluate-entities", *args])


def test_evaluate_entities_json_is_one_document_with_model_and_story_baseline(random_registry, tmp_path):
    result = _evaluate_entities("--data", str(_entity_csv(tmp_path / "e.csv")), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)  # stdout is the JSON document and nothing else
    assert {"n", "accuracy", "macro_f1", "conflict_accuracy", "conflict_n", "story_baseline", "model_version"} <= set(out)
    assert (out["n"], out["conflict_n"], out["unmatched_n"], out["model_version"]) == (6, 4, 1, "v1")
    assert {"accuracy", "macro_f1", "conflict_accuracy", "conflict_n"} <= set(out["story_baseline"])
    # the story baseline copies one verdict per headline: on a two-entity conflicting headline it is right once at most
    assert out["story_baseline"]["conflict_accuracy"] <= 0.5
    text = _evaluate_entities("--data", str(tmp_path / "e.csv"))
    assert text.exit_code == 0 and "story baseline" in text.stdout and "conflict_accuracy" in text.stdout


def test_evaluate_entities_stops_at_a_bad_row_naming_its_line(random_registry, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,text,entity,label\n1,Acme wins,Acme,positive\n2,Beta slips,Beta,awful\n", encoding="utf-8")
    result = _evaluate_entities("--data", str(bad), "--json")
    assert result.exit_code == 2 and "line 3" in result.output and "awful" in result.output
    assert result.stdout == ""  # no half-written JSON on stdout
    missing = tmp_path / "story.csv"
    missing.write_text("text,label\nAcme wins,positive\n", encoding="utf-8")
    result = _evaluate_entities("--data", str(missing))
    assert result.exit_code == 2 and "entity" in result.output


# --- card, gate, int8 ------------------------------------------------------------------------------
def test_the_card_records_entity_dev_figures_and_int8_entity_agreement(random_registry, tmp_path):
    entity_dev = _entity_csv(tmp_path / "entity_dev.csv")
    dev = tmp_path / "dev.csv"
    pd.read_csv(ROOT / "data/phrasebank/dev.csv").head(20).to_csv(dev, index=False)
    card = evaluate_candidate(random_registry, "v1", [dev], [dev], entity_dev_files=[entity_dev])
    entities = card.metrics["entities"]
    assert (entities["n"], entities["conflict_n"]) == (6, 4) and "story_baseline" in entities
    assert entities["data"] == [{"path": str(entity_dev), "sha256": sha256_file(entity_dev)}]
    quant = card.quantization
    assert 0.0 <= quant["entity_agreement"] <= 1.0 and {"entity_macro_f1_int8", "entity_macro_f1_fp32"} <= set(quant)
    assert random_registry.card("v1").entity_macro_f1() == entities["macro_f1"]  # written into the card on disk


def _entity_card(version: str, f1: float, entity_f1: float | None, data: str = "abc") -> ModelCard:
    metrics = {"eval": {"macro_f1": f1}}
    if entity_f1 is not None:
        metrics["entities"] = {"macro_f1": entity_f1, "data": [{"path": "sentfin/dev.csv", "sha256": data}]}
    return ModelCard(version=version, base_model="test", created_at=datetime(2026, 1, 1, tzinfo=timezone.utc), code_version="test", metrics=metrics, eval_split="s1")


def _put(reg: Registry, card: ModelCard) -> None:
    reg.version_dir(card.version).mkdir(parents=True)
    reg.write_card(card)


def test_gate_refuses_a_candidate_with_better_story_but_worse_entity_figures(tmp_path):
    reg = Registry(tmp_path)
    _put(reg, _entity_card("v1", 0.80, 0.85))
    reg.promote("v1")
    worse_entities = reg.gate(_entity_card("v2", 0.82, 0.84), floor=0.5)
    assert not worse_entities.promote and "entity macro-F1 0.8400 < production 0.8500" in worse_entities.reason
    better = reg.gate(_entity_card("v3", 0.80, 0.86), floor=0.5)
    assert better.promote and "entity macro-F1 0.8600 >= production 0.8500" in better.reason
    assert (better.candidate_entity_macro_f1, better.production_entity_macro_f1) == (0.86, 0.85)
    # figures on other rows are not compared; the caller measures production on the candidate's rows
    other_rows = _entity_card("v4", 0.80, 0.10, data="other")
    assert reg.gate(other_rows, floor=0.5).promote
    assert not reg.gate(other_rows, floor=0.5, production_entity_macro_f1=0.5).promote
    # a candidate without entity figures is gated on the story split alone
    assert reg.gate(_entity_card("v5", 0.81, None), floor=0.5).promote


def test_gate_measures_a_production_model_without_entity_figures_on_the_candidates_rows(random_registry, tmp_path):
    entity_dev = _entity_csv(tmp_path / "entity_dev.csv")
    register_random_model(random_registry, "v2", seed=2, macro_f1=0.9)
    card = random_registry.card("v2")
    card.metrics["entities"] = {"macro_f1": 1.0, "data": [{"path": str(entity_dev), "sha256": sha256_file(entity_dev)}]}
    card.eval_split = random_registry.card("v1").eval_split
    random_registry.write_card(card)
    decision = gate_candidate(random_registry, "v2", floor=0.0)
    assert decision.promote and decision.production_entity_macro_f1 is not None and decision.production_entity_macro_f1 < 1.0


# --- the fixed recipe -----------------------------------------------------------------------------
def test_default_retraining_is_a_fixed_step_count_on_story_and_entity_rows(np_env):
    from newspulse.models.sentiment.config import DEFAULT_STEPS, TrainConfig, config_from_params
    from newspulse.settings import get_settings

    cfg = TrainConfig.production(get_settings())
    assert (cfg.max_steps, cfg.keep, cfg.time_budget_s) == (DEFAULT_STEPS, "last", None)  # no wall clock decides
    assert SENTFIN_TRAIN in cfg.train_files and cfg.entity_dev_files == [SENTFIN_DEV]
    assert config_from_params({"max_steps": 300}, get_settings()).max_steps == 300



# --- a trained model tells two companies apart ------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("text", "down", "up"),
    [("Intel shares slide as AMD wins a $2 billion order", "Intel", "AMD"), ("Tata Motors falls 3%, Maruti gains", "Tata Motors", "Maruti")],
)
def test_a_trained_model_gives_two_companies_in_one_story_different_verdicts(entity_classifier_registry, text, down, up):
    clf = SentimentModel.from_dir(Registry(entity_classifier_registry).production_dir(), device="cpu", quantize="off", backend="torch")
    loser, winner = clf.score_mentions([(text, mention_spans(text, down)), (text, mention_spans(text, up))])
    assert (LABELS[loser.argmax()], LABELS[winner.argmax()]) == ("negative", "positive")
