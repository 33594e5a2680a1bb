"""The GPU serving path (models/backends/cuda_batched.py), run on CPU: same predictions as the plain path.

The quick-trained classifier fixture is scored both ways on the bundled dev sentences and Reuters
stories. Small micro-batches and token budgets force several micro-batches, every length bucket
and padded partial batches, all prepared on worker threads.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from newspulse.models.backends.cuda_batched import BatchedScorer, bucket_lengths, padded_rows, rows_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def clf(trained_classifier_registry):
    from newspulse.models.sentiment.predict import SentimentModel
    from newspulse.models.sentiment.registry import Registry

    return SentimentModel.from_dir(Registry(trained_classifier_registry).production_dir(), device="cpu", quantize="off", backend="torch")


def scorer_for(clf, **kw) -> BatchedScorer:
    params = dict(device="cpu", max_length=clf.max_length, micro_batch=96, batch_tokens=1024, max_rows=64, workers=2, prefetch=2)
    return BatchedScorer(clf.backend.model, clf.tokenizer, **(params | kw))


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    from newspulse.models.sentiment.data import PHRASEBANK_DEV, read_labelled_csv

    texts = read_labelled_csv(PHRASEBANK_DEV)["text"].tolist()[:300]
    return texts + ["", "Profit.", " ".join(texts[:6])]  # empty, one word, longer than max_length


@pytest.fixture(scope="module")
def stories():
    sys.path.insert(0, str(ROOT / "bench"))
    from pipeline import corpus

    return corpus(40)


def test_shapes_are_few_and_fixed():
    assert bucket_lengths(64) == [16, 32, 64]
    assert bucket_lengths(100) == [16, 32, 64, 100]
    assert rows_for(16, batch_tokens=65536, max_rows=2048) == 2048
    assert rows_for(512, batch_tokens=65536, max_rows=2048) == 128
    assert rows_for(100, batch_tokens=1000, max_rows=64) == 8  # power of two, at least 8
    assert [padded_rows(n, 64) for n in (1, 8, 9, 33, 64)] == [8, 8, 16, 64, 64]


def test_same_probabilities_as_the_plain_path(clf, sentences):
    plain = clf.predict_proba(sentences)
    scorer = scorer_for(clf)
    batched = scorer.score(sentences)
    assert batched.shape == plain.shape == (len(sentences), 3)
    np.testing.assert_allclose(batched, plain, atol=2e-5)
    assert (batched.argmax(axis=1) == plain.argmax(axis=1)).all()
    scorer.close()


def test_every_batch_has_a_precompilable_shape(clf, sentences):
    scorer = scorer_for(clf)
    allowed = set(scorer.shapes())
    micros = list(scorer.micro_batches(sentences, clf.max_length))
    assert len(micros) == -(-len(sentences) // 96)  # several micro-batches, prepared ahead
    seen = {tuple(b.input_ids.shape) for m in micros for b in m.batches}
    assert seen <= allowed
    assert len({length for _, length in seen}) >= 2  # more than one length bucket in use
    order = np.concatenate([m.order for m in micros])
    assert sorted(order.tolist()) == list(range(len(sentences)))  # every text exactly once
    for m in micros:
        assert sum(b.n for b in m.batches) == len(m.order)
        for b in m.batches:
            assert b.attention_mask[: b.n].sum(dim=1).min() >= 2  # [CLS] … [SEP] at least
            assert b.attention_mask[b.n :].sum(dim=1).tolist() == [1] * (len(b.attention_mask) - b.n)
    scorer.close()


def test_prepared_mask_matches_the_two_dimensional_mask(clf, sentences):
    """The 4-D boolean mask given to SDPA scores what the 2-D mask scores (eager attention)."""
    sdpa = scorer_for(clf)
    two_d = scorer_for(clf)
    two_d._sdpa = False
    np.testing.assert_allclose(sdpa.score(sentences[:50]), two_d.score(sentences[:50]), atol=2e-5)


def test_classifier_hook_scores_articles_like_the_plain_path(clf, stories, sentences):
    plain_articles = clf.score_articles(stories)
    plain_sentences = clf.predict_proba(sentences[:40])
    clf.batched = scorer_for(clf, micro_batch=32)
    try:
        assert clf.batched.map(len, sentences) == [len(s) for s in sentences]  # threads, in order
        np.testing.assert_allclose(clf.predict_proba(sentences[:40]), plain_sentences, atol=2e-5)
        np.testing.assert_allclose(clf.score_articles(stories), plain_articles, atol=2e-5)
    finally:
        clf.batched.close()
        clf.batched = None


def test_empty_input(clf):
    assert scorer_for(clf).score([]).shape == (0, 3)


def test_chunks_count_the_tokens_of_their_text(clf, stories):
    """Sentences are tokenised per article in one call; the counts are those of the text."""
    for story in stories[:10]:
        for text, n_tokens in clf.chunk(story.body):
            assert n_tokens == len(clf.tokenizer.tokenize(text))


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="torch.compile's CPU backend needs a C compiler")
def test_compiled_forward_scores_like_eager():
    """``compile=True`` (torch.compile of the fixed-shape forward pass) changes no output; one
    shape here, since each shape compiles once (tens of seconds on CPU)."""
    from newspulse.models.sentiment.bench import random_bert_classifier
    from newspulse.models.sentiment.data import packaged_base_model

    model, tok = random_bert_classifier(packaged_base_model(), hidden_size=32, num_layers=2, num_heads=2)
    texts = [f"Shares of company {i} rose after results" for i in range(8)]
    params = dict(device="cpu", max_length=16, max_rows=8, workers=1)
    compiled = BatchedScorer(model, tok, compile=True, **params)
    assert [tuple(b.input_ids.shape) for m in compiled.micro_batches(texts, 16) for b in m.batches] == [(8, 16)]
    np.testing.assert_allclose(compiled.score(texts), BatchedScorer(model, tok, **params).score(texts), atol=1e-5)
