"""The topic classifier: thresholds, multi-label decisions, the artifact, the CLI, behaviour."""

from __future__ import annotations

import dataclasses
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from newspulse.models.sentiment.data import DataError
from newspulse.models.topics.model import CARD, CHAR_VOCABULARY, DEFAULT_TOPIC_MODEL, FORMAT, TopicModel, TopicModelError, decide, headline_weighted, load_topic_model
from newspulse.models.topics.evaluate import TOPICS_DEV, TOPICS_TRAIN, label_matrix, multilabel_metrics, read_categories, read_topics_csv
from newspulse.models.topics.train import TopicTrainConfig, fit_linear, fit_topic_model, rare_band, train_topics, tune_thresholds

runner = CliRunner()


def _invoke(*args: str):
    from newspulse.cli import app

    return runner.invoke(app, ["model", *args])


# --- threshold tuning and decisions -------------------------------------------------------------
def test_tune_thresholds_picks_the_f1_optimal_cut_per_category():
    scores = np.array([[0.9, 0.30], [0.8, 0.20], [0.6, 0.25], [0.4, 0.10], [0.2, 0.05]], dtype=np.float32)
    y = np.array([[1, 1], [1, 0], [0, 1], [1, 0], [0, 0]])
    t = tune_thresholds(scores, y, min_positives=2)
    # column 0: accepting the top 4 (3 positives) gives F1 6/7, the best: cut between 0.4 and 0.2
    assert t[0] == pytest.approx(0.3)
    # column 1: the top 2 (0.30, 0.25) are both positives (F1 1): cut between 0.25 and 0.2
    assert t[1] == pytest.approx(0.225)
    assert tune_thresholds(scores, y, min_positives=3)[1] == pytest.approx(0.5)  # too rare: the default


def test_tune_thresholds_keeps_the_default_when_no_cut_finds_a_positive():
    scores = np.array([[0.0], [0.0]], dtype=np.float32)
    assert tune_thresholds(scores, np.array([[0], [0]]), min_positives=1)[0] == pytest.approx(0.5)


def test_decide_is_multi_label_best_first_and_falls_back_to_the_top_category():
    cats = ["earn", "grain", "wheat"]
    thresholds = np.array([0.5, 0.4, 0.3])
    scores = np.array([[0.1, 0.9, 0.8], [0.6, 0.1, 0.1], [0.2, 0.35, 0.1]])
    assert decide(scores, thresholds, cats) == [["grain", "wheat"], ["earn"], ["grain"]]


def test_multilabel_metrics_micro_macro_and_per_class():
    gold = [["grain", "wheat"], ["earn"], ["acq"]]
    pred = [["grain"], ["earn"], ["earn"]]
    m = multilabel_metrics(gold, pred)
    assert m["micro_precision"] == pytest.approx(2 / 3) and m["micro_recall"] == pytest.approx(2 / 4)
    assert m["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    # earn 2/3, grain 1, wheat 0, acq 0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 + 0 + 0) / 4) and m["n_classes"] == 4
    assert m["per_class"]["earn"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}


# --- training on a toy corpus -----------------------------------------------------------------
TOY = {
    "grain": "wheat harvest grain farmers crop bushels",
    "crude": "oil barrels crude opec refinery output",
    "earn": "net profit shr quarter dividend revenue",
}


def _toy_frame(n: int = 20, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        for label, words in TOY.items():
            w = words.split()
            rows.append({"text": " ".join(rng.choice(w, 6)) + f" story {i}", "labels": label})
        rows.append({"text": "wheat crop grain and crude oil barrels " + f"story {i}", "labels": "grain;crude"})
    return pd.DataFrame(rows)


def test_fit_save_load_round_trip_and_multi_label_output(tmp_path):
    frame = _toy_frame()
    frame["labels"] = frame["labels"].str.split(";")
    model = fit_topic_model(frame["text"].tolist(), frame["labels"].tolist(), ["earn", "grain", "crude", "gold"], TopicTrainConfig(tune_folds=2, min_df=1))
    model.card = {"version": "toy"}
    loaded = TopicModel.load(model.save(tmp_path / "m"))
    texts = ["wheat harvest and grain crop", "crude oil barrels from opec", "wheat grain crop with crude oil barrels"]
    assert np.allclose(model.scores(texts), loaded.scores(texts), atol=1e-3)
    got = loaded.predict(texts)
    assert got[0][0] == "grain" and got[1][0] == "crude" and {"grain", "crude"} <= set(got[2])
    assert loaded.version == "toy" and loaded.thresholds.shape == (4,)
    assert loaded.intercept[3] < -10  # "gold" has no training story: it never passes


def test_headline_weighted_repeats_only_the_first_line():
    assert headline_weighted(["WHEAT UP\nbody text\nmore"], 3) == ["WHEAT UP\nWHEAT UP\nWHEAT UP\nbody text\nmore"]
    assert headline_weighted(["no body"], 2) == ["no body\nno body\n"]
    assert headline_weighted(["a\nb"], 1) == ["a\nb"]


def test_title_repeat_is_trained_saved_and_applied_at_serve_time(tmp_path):
    frame = _toy_frame()
    frame["labels"] = frame["labels"].str.split(";")
    model = fit_topic_model(frame["text"].tolist(), frame["labels"].tolist(), ["earn", "grain", "crude"], TopicTrainConfig(tune_folds=2, min_df=1, title_repeat=3))
    loaded = TopicModel.load(model.save(tmp_path / "m"))
    assert loaded.title_repeat == 3 and loaded.card["title_repeat"] == 3
    # the headline outweighs a body about something else only because it counts three times
    story = ["wheat harvest grain crop\ncrude oil barrels"]
    assert np.allclose(model.scores(story), loaded.scores(story), atol=1e-3)
    plain = dataclasses.replace(loaded, title_repeat=1)
    grain = loaded.categories.index("grain")
    assert loaded.scores(story)[0, grain] > plain.scores(story)[0, grain]


def test_a_rare_category_is_fitted_with_balanced_weights_and_scores_its_stories_higher():
    frame = _toy_frame()
    rng = np.random.default_rng(3)
    gold = [{"text": " ".join(rng.choice("gold ounces bullion mine net profit quarter".split(), 6)), "labels": "gold;earn"} for _ in range(4)]
    frame = pd.concat([frame, pd.DataFrame(gold)], ignore_index=True)
    y = label_matrix(frame["labels"].str.split(";").tolist(), ["earn", "grain", "crude", "gold"])
    weighted = TopicTrainConfig(min_df=1)
    assert rare_band(y, weighted).tolist() == [False, False, False, True]  # 4 gold stories, under rare_below
    unweighted = TopicTrainConfig(min_df=1, rare_class_weight=None)
    story = ["gold ounces from the mine lift quarter profit"]
    margins = []
    for cfg in (weighted, unweighted):
        vec, coef, intercept = fit_linear(frame["text"].tolist(), y, cfg)
        margins.append(np.asarray(vec.transform(story) @ coef.T)[0] + intercept)
    # the rare category reaches the unseen gold story further; the frequent ones are fitted alike
    assert margins[0][3] > margins[1][3] + 0.2
    assert np.allclose(margins[0][:3], margins[1][:3], atol=1e-3)


def test_train_topics_measures_baseline_and_model_then_writes_the_card(tmp_path):
    train, dev = _toy_frame(20, 1), _toy_frame(6, 2)
    train.to_csv(tmp_path / "train.csv", index=False)
    dev.to_csv(tmp_path / "dev.csv", index=False)
    (tmp_path / "categories.txt").write_text("earn\ngrain\ncrude\n")
    model = train_topics(TopicTrainConfig(tune_folds=2, min_df=1), out=tmp_path / "m", train_file=tmp_path / "train.csv",
                         dev_file=tmp_path / "dev.csv", categories_file=tmp_path / "categories.txt", folds=3)
    card = json.loads((tmp_path / "m" / "model_card.json").read_text())
    assert card["version"] == model.version and "research purposes only" in card["licence"]
    for name in ("svm_baseline", "model"):
        cv = card["metrics"][name]["cv"]
        assert len(cv["per_fold"]) == 3 and cv["micro_f1_mean"] > 0.9 and cv["micro_f1_std"] >= 0
        # CV runs over all of the labelled rows (train + dev), not train alone
        assert cv["rows"] == "train + dev" and sum(f["n"] for f in cv["per_fold"]) == len(train) + len(dev)
        assert card["metrics"][name]["dev"]["micro_f1"] > 0.9
    assert [d["rows"] for d in card["data"]["train"]] == [len(train), len(dev)] and len(card["data"]["train"][0]["sha256"]) == 64


def _toy_model(**cfg) -> TopicModel:
    frame = _toy_frame()
    frame["labels"] = frame["labels"].str.split(";")
    return fit_topic_model(frame["text"].tolist(), frame["labels"].tolist(), ["earn", "grain", "crude"], TopicTrainConfig(tune_folds=2, min_df=1, **cfg))


def test_char_block_is_stacked_after_the_words_and_saved_as_format_2(tmp_path):
    model = _toy_model()
    assert model.char_vocabulary and all(3 <= len(t) <= 5 for t in model.char_vocabulary)  # char_wb 3-5-grams
    assert model.coef.shape == (3, len(model.vocabulary) + len(model.char_vocabulary))
    # each block is L2-normalised and the pair scaled by 1/sqrt 2: a story's row has unit norm
    row = model._features.transform(["wheat harvest grain\ncrude oil"])
    assert np.linalg.norm(row.toarray()) == pytest.approx(1.0, abs=1e-5)
    path = model.save(tmp_path / "m")
    card = json.loads((path / CARD).read_text())
    assert card["format"] == FORMAT == 2 and card["char_vectorizer"]["analyzer"] == "char_wb" and card["char_vectorizer"]["ngram_range"] == [3, 5]
    loaded = TopicModel.load(path)
    assert loaded.char_vocabulary == model.char_vocabulary
    texts = ["wheat harvests and grains", "crude oils from opec"]
    assert np.allclose(model.scores(texts), loaded.scores(texts), atol=1e-3)


def test_char_block_scores_an_inflection_the_word_block_never_saw():
    """"harvests" and "bushel" are not word terms of the toy corpus (it says "harvest" and
    "bushels"); their character n-grams are, so only the char block ties them to grain."""
    words, both = _toy_model(char_block=False), _toy_model()
    assert "harvests" not in words.vocabulary and "bushel" not in words.vocabulary
    grain = words.categories.index("grain")
    story = ["harvests bushel"]
    assert both.scores(story)[0, grain] > words.scores(story)[0, grain] + 0.1
    assert both.predict(story)[0][0] == "grain"


def test_a_format_1_folder_without_the_char_block_still_loads(tmp_path):
    """A model folder written before the char block (no ``format`` in its card, no
    char_vocabulary.txt) keeps tagging as it did."""
    model = _toy_model(char_block=False)
    path = model.save(tmp_path / "m")
    card = json.loads((path / CARD).read_text())
    del card["format"]
    (path / CARD).write_text(json.dumps(card))
    assert not (path / CHAR_VOCABULARY).exists()
    loaded = TopicModel.load(path)
    assert loaded.char_vocabulary == [] and loaded.predict(["wheat grain crop"]) == model.predict(["wheat grain crop"])


def test_load_refuses_a_newer_format_and_a_missing_char_vocabulary(tmp_path):
    path = _toy_model().save(tmp_path / "m")
    (path / CHAR_VOCABULARY).unlink()
    with pytest.raises(TopicModelError, match="missing char_vocabulary.txt"):
        TopicModel.load(path)
    card = json.loads((path / CARD).read_text())
    (path / CARD).write_text(json.dumps({**card, "format": FORMAT + 1}))
    with pytest.raises(TopicModelError, match="newer than this NewsPulse reads"):
        TopicModel.load(path)


def test_training_twice_on_the_same_rows_writes_the_same_weights_and_vocabularies(tmp_path):
    """Seeded SVMs and a timestamp-free weights.npz: a retraining that changes nothing changes no
    bundled weights in git (only the card's version and dates)."""
    first, second = _toy_model().save(tmp_path / "a"), _toy_model().save(tmp_path / "b")
    for name in ("weights.npz", "vocabulary.txt", CHAR_VOCABULARY):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    with zipfile.ZipFile(first / "weights.npz") as archive:  # no save-time stamp that a later save would change
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


# --- data files and errors --------------------------------------------------------------------
def test_read_topics_csv_splits_labels_and_ignores_other_columns(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('text,labels,newid\n"Wheat up",grain;wheat,1\nOil,crude,2\n')
    frame = read_topics_csv(path)
    assert frame["labels"].tolist() == [["grain", "wheat"], ["crude"]] and list(frame.columns) == ["text", "labels"]
    assert label_matrix(frame["labels"], ["crude", "grain"]).tolist() == [[0, 1], [1, 0]]


@pytest.mark.parametrize("content, message", [("text,label\nhello,grain\n", "missing column"), ("text,labels\n,grain\n", "empty text")])
def test_read_topics_csv_rejects_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_topics_csv(path)


def test_load_reports_a_missing_artifact(tmp_path):
    with pytest.raises(TopicModelError, match="not a topic model"):
        TopicModel.load(tmp_path)


# --- the bundled artifact -----------------------------------------------------------------------
def test_bundled_model_has_the_modapte_categories_thresholds_and_card():
    model = load_topic_model()
    assert model.categories == read_categories() and len(model.categories) == 90
    assert model.thresholds.shape == (90,) and np.all((model.thresholds > 0) & (model.thresholds < 1))
    assert model.title_repeat == TopicTrainConfig().title_repeat  # trained with the recipe's headline weight
    card = model.card
    assert card["version"].startswith("topics-") and "research purposes only" in card["licence"]
    # format 2: the char_wb block beside the words, as the training recipe builds it
    assert card["format"] == FORMAT and card["params"]["char_block"] and card["char_vectorizer"] == TopicTrainConfig().char_vectorizer_params()
    assert len(model.char_vocabulary) == card["params"]["max_features"] and model.coef.shape[1] == len(model.vocabulary) + len(model.char_vocabulary)
    for name in ("svm_baseline", "model"):
        assert {"dev", "cv"} <= set(card["metrics"][name]) and card["metrics"][name]["cv"]["folds"] >= 3
    assert sum(f.stat().st_size for f in DEFAULT_TOPIC_MODEL.iterdir()) < 25_000_000


@pytest.mark.parametrize(
    "text, expected",
    [
        ("U.S. WHEAT HARVEST SEEN LARGER\nThe U.S. Agriculture Department said the winter wheat harvest will be larger than expected and grain exports should rise.", {"grain", "wheat"}),
        ("ACME CORP 1ST QTR NET\nShr 45 cts vs 38 cts\nNet 12.1 mln vs 10.2 mln\nRevs 150.3 mln vs 141.0 mln", {"earn"}),
        ("OPEC AGREES TO CUT CRUDE OUTPUT\nOPEC ministers agreed to cut crude oil production to support prices, delegates said.", {"crude"}),
        ("GENERAL WIDGET TO ACQUIRE SMITH INDUSTRIES\nGeneral Widget Corp said it agreed to acquire Smith Industries Inc for 25 dlrs a share in cash, or about 300 mln dlrs.", {"acq"}),
        ("BUNDESBANK LEAVES DISCOUNT RATE UNCHANGED\nThe Bundesbank left its discount and Lombard rates unchanged, and money market interest rates eased.", {"interest"}),
    ],
)
def test_bundled_model_tags_clear_reuters_style_stories(text, expected):
    assert expected <= set(load_topic_model().predict([text])[0])


@pytest.mark.parametrize(
    "category, text",
    [
        ("nickel", "INCO RAISES NICKEL PRICE\nInco Ltd said it raised its price for nickel cathodes by 10 cents a pound, citing tight supplies."),
        ("lumber", "U.S. SOFTWOOD LUMBER IMPORTS FROM CANADA RISE\nImports of Canadian softwood lumber rose in the first quarter, the Commerce Department said, and sawmill output eased."),
    ],
)
def test_bundled_model_tags_a_rare_category_through_its_weights_and_tuned_threshold(category, text):
    """Categories with fewer than 20 training stories are fitted with balanced class weights, and
    their thresholds, tuned on cross-fitted scores, sit below margin 0: together they tag these
    stories."""
    model = load_topic_model()
    j = model.categories.index(category)
    both = pd.concat([read_topics_csv(TOPICS_TRAIN), read_topics_csv(TOPICS_DEV)])
    assert label_matrix(both["labels"], [category]).sum() < model.card["params"]["rare_below"] == 20
    assert model.card["params"]["rare_class_weight"] == "balanced"
    assert model.thresholds[j] < 0.5 and model.thresholds[j] <= model.scores([text])[0, j]
    assert category in model.predict([text])[0]


def test_every_story_gets_at_least_one_topic():
    got = load_topic_model().predict(["", "The weather was pleasant today.", "x"])
    assert all(len(labels) >= 1 for labels in got)


# --- CLI ----------------------------------------------------------------------------------------
def test_evaluate_topics_json_has_the_interface_keys(tmp_path):
    data = tmp_path / "dev.csv"
    pd.read_csv(TOPICS_DEV, keep_default_na=False).head(40).to_csv(data, index=False)
    result = _invoke("evaluate-topics", "--data", str(data), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {"n", "micro_f1", "macro_f1", "per_class", "model_version"} <= set(out)
    assert out["n"] == 40 and out["model_version"] == load_topic_model().version and 0.5 < out["micro_f1"] <= 1
    assert all({"precision", "recall", "f1", "support"} <= set(m) for m in out["per_class"].values())


@pytest.mark.parametrize("content", ["text,label\nWheat up,grain\n", None])
def test_evaluate_topics_exits_2_on_a_missing_column_or_file(tmp_path, content):
    path = tmp_path / "bad.csv"
    if content is not None:
        path.write_text(content)
    result = _invoke("evaluate-topics", "--data", str(path), "--json")
    assert result.exit_code == 2 and ("missing column" in result.output or "no such file" in result.output)


# --- re-tagging the stored history (the rescore_history DAG) -------------------------------------
def test_retopic_store_replaces_stale_topics_and_keeps_everything_else(tmp_path):
    from datetime import datetime, timezone

    from newspulse.models.topics.rescore import retopic_store
    from newspulse.schema import Article, ScoredArticle
    from newspulse.store.sqlite import SQLiteStore

    stories = [
        ("OPEC AGREES TO CUT CRUDE OUTPUT", "OPEC ministers agreed to cut crude oil production to support prices, delegates said."),
        ("U.S. WHEAT HARVEST SEEN LARGER", "The Agriculture Department said the winter wheat harvest will be larger and grain exports should rise."),
    ]
    store = SQLiteStore(tmp_path / "s.db")
    try:
        old = [
            ScoredArticle.from_article(
                Article(published_at=datetime(1987, 3, 1, i, tzinfo=timezone.utc), source="Reuters", title=t, body=b, topics=["other"]),
                {"negative": 0.2, "neutral": 0.5, "positive": 0.3}, summary=f"summary {i}", model_version="v1",
            )
            for i, (t, b) in enumerate(stories)
        ]
        store.upsert_articles(old)
        counts = retopic_store(store, progress=False)
        assert counts["seen"] == 2 and counts["retagged"] == 2 and counts["unchanged"] == counts["failed"] == 0
        assert counts["topic_model_version"] == load_topic_model().version
        crude, wheat = (store.get_article(a.id) for a in old)
        assert "crude" in crude.topics and {"grain", "wheat"} <= set(wheat.topics) and "other" not in wheat.topics
        assert (wheat.summary, wheat.label, wheat.model_version, wheat.probabilities) == (old[1].summary, old[1].label, "v1", old[1].probabilities)
        again = retopic_store(store, progress=False)  # already current: nothing is rewritten
        assert again["unchanged"] == 2 and again["retagged"] == 0
    finally:
        store.close()
