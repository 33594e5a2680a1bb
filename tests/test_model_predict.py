"""Sentence and whole-article scoring, quantisation, hot reload and re-scoring, on tiny
randomly initialised BERT models (real transformers code, seconds to build)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from newspulse.models.sentiment.predict import TITLE_WEIGHT, SentimentModel, aggregate, load_classifier
from newspulse.models.sentences import split_sentences
from newspulse.models.sentiment.registry import ModelCard, NoProductionModel, Registry
from newspulse.schema import Article


def register_random_model(registry: Registry, version: str, *, seed: int = 0, macro_f1: float = 0.6, max_length: int = 32, tier: str = "fast") -> Path:
    """Register a tiny random BERT classifier (hidden 32, 2 layers) with the MiniLM tokenizer."""
    from newspulse.models.sentiment.bench import random_bert_classifier
    from newspulse.models.sentiment.data import packaged_base_model

    model, tokenizer = random_bert_classifier(packaged_base_model(), hidden_size=32, num_layers=2, num_heads=2, seed=seed)
    card = ModelCard(
        version=version,
        base_model="random-tiny-bert",
        created_at=datetime.now(timezone.utc),
        code_version="test",
        params={"max_length": max_length},
        metrics={"eval": {"macro_f1": macro_f1}},
        quantization={"recommended": False},
        tier=tier,
    )
    return registry.register(model, tokenizer, card)


@pytest.fixture(scope="module")
def tiny_registry(tmp_path_factory) -> Registry:
    reg = Registry(tmp_path_factory.mktemp("registry"))
    register_random_model(reg, "v1", seed=1)
    register_random_model(reg, "v2", seed=2)
    reg.promote("v1")
    return reg


@pytest.fixture(scope="module")
def clf(tiny_registry) -> SentimentModel:
    return SentimentModel.from_dir(tiny_registry.version_dir("v1"), device="cpu", quantize="off")


def _article(title: str, body: str = "") -> Article:
    return Article(published_at=datetime(2026, 1, 1, tzinfo=timezone.utc), source="test", title=title, body=body)


def test_split_sentences():
    text = "Revenue rose 5% to $3.2 bn. Margins fell! Is it over? \"Yes,\" he said.\nNew paragraph"
    assert split_sentences(text) == ["Revenue rose 5% to $3.2 bn.", "Margins fell!", "Is it over?", "\"Yes,\" he said.", "New paragraph"]
    assert split_sentences("The U.S. economy grew 3.5 percent, e.g. in services.") == ["The U.S. economy grew 3.5 percent, e.g. in services."]


def test_length_sorted_batches_keep_the_input_order(clf):
    texts = ["Short.", "A much longer sentence about quarterly earnings and guidance for the year.", "Mid length one here.", "x"]
    batched = clf.predict_proba(texts, batch_size=2)
    one_by_one = np.vstack([clf.predict_proba([t]) for t in texts])
    assert batched.shape == (4, 3)
    np.testing.assert_allclose(batched.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-4)


def test_batches_respect_the_token_budget_and_cover_every_text_once(clf):
    from newspulse.models.sentiment.predict import length_sorted_batches

    texts = [("word " * n).strip() for n in (40, 1, 3, 25, 2, 60, 8, 5, 12, 90)]
    batches = list(length_sorted_batches(clf.tokenizer, texts, 128, batch_size=4, batch_tokens=64))
    assert sorted(i for idx, _, _ in batches for i in idx) == list(range(len(texts)))
    for idx, input_ids, mask in batches:
        assert len(idx) <= 4 and (len(idx) == 1 or input_ids.size <= 64)  # one over-long text goes alone
        assert input_ids.shape == mask.shape and mask.sum(axis=1).max() == input_ids.shape[1]
    assert [len(idx) for idx, _, _ in batches][0] == 4  # the shortest texts share a batch
    unbounded = list(length_sorted_batches(clf.tokenizer, texts, 128, batch_size=4))
    assert [len(idx) for idx, _, _ in unbounded] == [4, 4, 2]


def test_long_bodies_are_chunked_within_the_window(clf):
    body = " ".join(f"Sentence number {i} talks about the quarterly results of the company." for i in range(200))
    chunks = clf.chunk(body)
    assert 1 < len(chunks) <= clf.max_chunks
    assert all(n <= clf.chunk_tokens for _, n in chunks)
    giant = "word " * 2000  # one sentence longer than the window is cut into windows
    assert all(n <= clf.chunk_tokens for _, n in clf.chunk(giant))


def test_explanation_points_at_the_passages_that_drove_the_verdict(clf):
    """The story's explanation comes from the scoring pass itself: the title and body chunks
    with their own verdicts and weights, at offsets into Article.text (a hard-wrapped line
    included)."""
    body = "Revenue fell 20% in the quarter.\nThe company warned\n  of further losses. " + " ".join(f"Filler sentence {i} about the weather and nothing else." for i in range(60))
    long, short = _article("Profits collapse at the bank", body), _article("Only a headline here")
    probs, why = clf.explain_articles([long, short])
    np.testing.assert_allclose(probs, clf.score_articles([long, short]), atol=1e-6)
    assert 1 <= len(why[0]) <= 3 and [e.start for e in why[0]] == sorted(e.start for e in why[0])
    for ev in why[0]:
        assert long.text[ev.start : ev.end] == ev.text and 0 < ev.weight <= 1
    chunks = clf.chunk_spans(body)
    assert chunks[0][2] == 0 and "warned\n  of further" in body[chunks[0][2] : chunks[0][3]]
    assert all(end > start for _, _, start, end in chunks) and len(chunks) > 1
    (title_only,) = why[1]
    assert (title_only.start, title_only.end, title_only.text, title_only.weight) == (0, len(short.title), short.title, 1.0)


def test_aggregate_weights_title_and_confident_long_chunks():
    sure_neg, unsure_pos, title_pos = [0.98, 0.01, 0.01], [0.3, 0.3, 0.4], [0.0, 0.0, 1.0]
    owners = [(0, "title", 1), (0, "body", 10), (0, "body", 10), (1, "title", 1), (2, "body", 5)]
    probs = np.array([title_pos, sure_neg, unsure_pos, title_pos, sure_neg])
    out = aggregate(3, owners, probs)
    assert out[0, 0] > 0.5  # the decisive negative chunk outweighs the near-uniform one
    body = out[0] - TITLE_WEIGHT * np.array(title_pos)
    assert body.sum() == pytest.approx(1 - TITLE_WEIGHT, abs=1e-5)
    np.testing.assert_allclose(out[1], title_pos, atol=1e-6)  # title only
    np.testing.assert_allclose(out[2], sure_neg, atol=1e-6)  # body only


def test_score_articles_title_only_equals_the_sentence_score(clf):
    arts = [_article("Profits collapse at the bank"), _article("Shares rise", "The company beat estimates. " * 40)]
    out = clf.score_articles(arts)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out[0], clf.predict_proba(["Profits collapse at the bank"])[0], atol=1e-4)
    assert clf.score_articles([]).shape == (0, 3)


def test_int8_quantisation_on_cpu(tiny_registry, clf):
    q = SentimentModel.from_dir(tiny_registry.version_dir("v1"), device="cpu", quantize="on")
    assert q.quantized and not clf.quantized
    texts = ["Profit rose.", "Loss widened sharply.", "Meeting on Tuesday."]
    np.testing.assert_allclose(q.predict_proba(texts), clf.predict_proba(texts), atol=0.05)


def test_no_production_model_is_a_clear_error(tmp_path):
    from newspulse.settings import load_settings

    with pytest.raises(NoProductionModel):
        load_classifier(load_settings(model_registry=tmp_path / "empty"))


def test_hot_reload_follows_promotion_and_survives_a_broken_version(tmp_path):
    from newspulse.settings import load_settings

    reg = Registry(tmp_path / "reg")
    for v, seed in (("v1", 1), ("v2", 2), ("v3", 3)):
        register_random_model(reg, v, seed=seed)
    reg.promote("v1")
    live = load_classifier(load_settings(model_registry=reg.path, quantize="off"), check_interval=0)
    arts = [_article("Earnings beat estimates")]
    before = live.score_articles(arts)
    assert live.version == "v1"
    reg.promote("v2")
    after = live.score_articles(arts)  # next batch: picked up without a restart
    assert live.version == "v2" and not np.allclose(before, after)
    (reg.version_dir("v3") / "model.safetensors").unlink()  # a corrupt version
    reg.promote("v3")
    live.score_articles(arts)
    assert live.version == "v2"  # keeps serving the model it has


def test_the_cascade_sends_the_fast_tiers_least_confident_story_to_the_accurate_tier_and_the_record_names_it(tmp_path):
    """Issue 26 #3: with an accurate model promoted, a story whose fast-tier confidence is below
    NEWSPULSE_CASCADE_THRESHOLD gets the accurate tier's verdict, a confident one keeps the fast
    verdict, and the stored record says which tier decided."""
    from newspulse.pipeline import Processor, RawMessage
    from newspulse.settings import load_settings
    from newspulse.store.sink import StoreSink
    from newspulse.store.sqlite import SQLiteStore

    reg = Registry(tmp_path / "reg")
    register_random_model(reg, "fast1", seed=1)
    register_random_model(reg, "acc1", seed=7, tier="accurate")
    reg.promote("fast1")
    reg.promote("acc1")
    arts = [_article(f"Quarterly results {w}", "The company reported its numbers.") for w in ("beat every estimate", "were filed on Tuesday", "missed badly", "came in")]
    fast = SentimentModel.from_dir(reg.version_dir("fast1"), device="cpu", quantize="off").score_articles(arts)
    accurate = SentimentModel.from_dir(reg.version_dir("acc1"), device="cpu", quantize="off").score_articles(arts)
    confidence = fast.max(axis=1)
    order = np.argsort(confidence)
    low, high = int(order[0]), int(order[-1])
    assert confidence[low] < confidence[high], "the random model must rank its rows"
    threshold = float((confidence[order[0]] + confidence[order[1]]) / 2)  # only the least confident row is below it
    cascade = load_classifier(load_settings(model_registry=reg.path, quantize="off", cascade_threshold=threshold), check_interval=0)
    probs, _, tiers = cascade.explain_articles_tiered(arts)
    assert tiers[low] == "accurate" and tiers.count("accurate") == 1
    np.testing.assert_allclose(probs[low], accurate[low], atol=1e-5)
    np.testing.assert_allclose(probs[high], fast[high], atol=1e-5)
    assert cascade.version == "fast1"

    store = SQLiteStore(tmp_path / "cascade.db")
    sink = StoreSink(store)
    messages = [RawMessage(json.dumps({"published_at": "2026-01-01T00:00:00Z", "source": "wire", "title": a.title, "body": a.body, "url": f"https://x.test/{i}"})) for i, a in enumerate(arts)]
    result = Processor(cascade, _FirstSentence(), [sink], sink).process(messages)
    stored = {a.title: store.get_article(a.id) for a in result.stored}
    assert stored[arts[low].title].decided_by == "accurate" and stored[arts[high].title].decided_by == "fast"
    assert stored[arts[low].title].model_version == "fast1"


def test_without_an_accurate_model_the_cascade_leaves_every_verdict_to_the_fast_tier(tiny_registry):
    from newspulse.settings import load_settings

    arts = [_article("Earnings beat estimates"), _article("The meeting is on Tuesday")]
    served = load_classifier(load_settings(model_registry=tiny_registry.path, quantize="off", cascade_threshold=1.0), check_interval=0)
    probs, _, tiers = served.explain_articles_tiered(arts)
    assert served.accurate is None and tiers == ["fast", "fast"]
    np.testing.assert_allclose(probs, SentimentModel.from_dir(tiny_registry.version_dir("v1"), device="cpu", quantize="off").score_articles(arts), atol=1e-5)


class _FirstSentence:
    def summarize(self, articles):
        return [a.text.split(".")[0] for a in articles]


def test_rescore_store_replaces_old_scores_and_skips_current_ones(tmp_path, tiny_registry):
    from newspulse.models.sentiment.predict import rescore_store
    from newspulse.schema import ScoredArticle
    from newspulse.settings import load_settings
    from newspulse.wiring import open_store

    settings = load_settings(model_registry=tiny_registry.path, store_url=f"sqlite:///{tmp_path / 'db.sqlite'}", quantize="off")
    store = open_store(settings)
    try:
        old = [
            ScoredArticle.from_article(_article(f"Story {i}", "Body text. More text."), {"negative": 0.1, "neutral": 0.8, "positive": 0.1}, summary=f"summary {i}", model_version="v0")
            for i in range(5)
        ]
        assert store.upsert_articles(old).ok
        counts = rescore_store(settings, store, batch_size=2, progress=False)
        assert counts == {"model_version": "v1", "seen": 5, "rescored": 5, "entities_filled": 0, "skipped": 0, "failed": 0}
        again = store.get_article(old[0].id)
        assert again.model_version == "v1" and again.summary == "summary 0"
        assert rescore_store(settings, store, progress=False)["skipped"] == 5
    finally:
        store.close()


def test_rescore_fills_entities_of_history_scored_before_them(tmp_path, tiny_registry):
    """A record the production version scored before entity verdicts keeps its story verdict
    and gets one verdict per ticker; a record of an older version is scored again whole."""
    from newspulse.models.sentiment.predict import rescore_store
    from newspulse.schema import ScoredArticle
    from newspulse.settings import load_settings
    from newspulse.wiring import open_store

    settings = load_settings(model_registry=tiny_registry.path, store_url=f"sqlite:///{tmp_path / 'db.sqlite'}", quantize="off")
    store = open_store(settings)
    probs = {"negative": 0.6, "neutral": 0.3, "positive": 0.1}
    two = _article("Intel shares slide as AMD wins a $2 billion order", "Analysts expect Intel to cut prices. Advanced Micro Devices declined to comment.")
    two = two.model_copy(update={"tickers": ["INTC", "AMD", "JPM"]})
    current = ScoredArticle.from_article(two, probs, summary="s", model_version="v1").model_copy(update={"schema_version": 1})
    older = ScoredArticle.from_article(_article("Apple rallies", "Apple rose."), probs, summary="t", model_version="v0").model_copy(update={"tickers": ["AAPL"], "schema_version": 1})
    try:
        assert store.upsert_articles([current, older]).ok
        counts = rescore_store(settings, store, progress=False)
        assert (counts["rescored"], counts["entities_filled"], counts["failed"]) == (1, 1, 0)
        got = store.get_article(current.id)
        assert got.schema_version == 2 and got.model_version == "v1" and got.label == current.label and got.score == pytest.approx(current.score)
        assert [(e.ticker, e.basis, e.mentions) for e in got.entities] == [("INTC", "mentions", 2), ("AMD", "mentions", 2), ("JPM", "story", 0)]
        assert all(got.text[ev.start : ev.end] == ev.text for e in got.entities for ev in e.evidence)
        rescored = store.get_article(older.id)
        assert rescored.model_version == "v1" and [e.ticker for e in rescored.entities] == ["AAPL"]
        assert rescore_store(settings, store, progress=False)["skipped"] == 2
    finally:
        store.close()


def test_model_rescore_command_fills_entities_and_reports_counts(tmp_path, tiny_registry, monkeypatch):

    from typer.testing import CliRunner

    from newspulse.cli import app
    from newspulse.schema import ScoredArticle
    from newspulse.settings import get_settings
    from newspulse.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "db.sqlite")
    art = _article("Intel slides as AMD wins", "Intel fell.").model_copy(update={"tickers": ["INTC", "AMD"]})
    assert store.upsert_articles([ScoredArticle.from_article(art, {"negative": 0.6, "neutral": 0.3, "positive": 0.1}, summary="", model_version="v1")]).ok
    store.close()
    monkeypatch.setenv("NEWSPULSE_STORE_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    monkeypatch.setenv("NEWSPULSE_MODEL_REGISTRY", str(tiny_registry.path))
    monkeypatch.setenv("NEWSPULSE_QUANTIZE", "off")
    get_settings.cache_clear()
    try:
        done = CliRunner().invoke(app, ["model", "rescore", "--json"])
        assert done.exit_code == 0, done.output
        assert json.loads(done.stdout) | {"model_version": "v1"} == {"model_version": "v1", "seen": 1, "rescored": 0, "entities_filled": 1, "skipped": 0, "failed": 0}
        bad = CliRunner().invoke(app, ["model", "rescore", "--since", "yesterday"])
        assert bad.exit_code == 2 and "--since" in bad.stderr
    finally:
        get_settings.cache_clear()


def test_model_bench_reports_quality_throughput_and_speedup(tiny_registry):
    from newspulse.models.backends import onnx as onnx_backend
    from newspulse.models.sentiment.bench import run_model_bench
    from newspulse.settings import load_settings

    result = run_model_bench(load_settings(model_registry=tiny_registry.path), sentences=16, rounds=2)
    assert result["model_version"] == "v1" and 0.0 <= result["dev_macro_f1"] <= 1.0
    assert set(result["throughput"]) == {"production_fp32", "production_int8", "production_torch_fp32", "bert_base_fp32"}
    assert result["backend"] == "onnxruntime" and result["backends"]["production_int8"] == "onnxruntime" and result["backends"]["bert_base_fp32"] == "torch"
    assert all(v > 0 for v in result["throughput"].values())
    # the headline ratio is the precision production serves (the card's int8 gate decides)
    served = result["served_precision"]
    assert result["speedup_precision"] == served
    assert result["speedup_vs_bert_base"] == pytest.approx(result["throughput"][f"production_{served}"] / result["throughput"]["bert_base_fp32"], rel=0.01)
    assert result["speedup_int8_vs_bert_base"] == pytest.approx(result["throughput"]["production_int8"] / result["throughput"]["bert_base_fp32"], rel=0.01)
    assert result["setup"]["batch_size"] == 32 and result["setup"]["sentences"] == 16
    assert result["setup"]["onnxruntime_calls"] == {"batch_tokens": 384, "side_by_side": onnx_backend.cpu_count()}


def test_the_accurate_tiers_encoder_loads_on_the_torch_backend(tmp_path):
    """all-mpnet-base-v2 (the accurate tier) has no SDPA attention in transformers: the torch
    backend (the gate's evaluation, CUDA serving) must load it with the attention it supports
    instead of failing after hours of training."""
    from transformers import MPNetConfig, MPNetForSequenceClassification

    from newspulse.models.backends.factory import cpu_backend

    config = MPNetConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_labels=3)
    MPNetForSequenceClassification(config).save_pretrained(tmp_path)
    backend = cpu_backend(tmp_path, precision="fp32", engine="torch")
    logits = backend.logits(np.array([[0, 5, 6, 2]]), np.array([[1, 1, 1, 1]]))
    assert logits.shape == (1, 3) and np.isfinite(logits).all()
