"""Summaries: extractive (default) and abstractive with the faithfulness fallback.

The abstractive tests build a tiny randomly initialised T5 with the packaged MiniLM WordPiece
tokenizer, so they run offline in seconds; they prove batching, truncation and the fallback,
not summary quality (that is bench/summaries.py).
"""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timezone

import pandas as pd
import pytest
from prometheus_client import REGISTRY

from newspulse.models.summarize import article_from_text, build_summarizer, summarize_text
from newspulse.models.summarize.abstractive import AbstractiveSummarizer, GenerationSettings, check_prompt
from newspulse.models.summarize.extractive import ExtractiveConfig, ExtractiveSummarizer, SentenceEncoder, packaged_encoder_path
from newspulse.models.summarize.faithfulness import unsupported
from newspulse.models.sentences import split_sentences
from newspulse.schema import Article
from newspulse.settings import SettingsError, load_settings
from tiny_seq2seq import random_seq2seq

NOW = datetime(2024, 3, 1, tzinfo=timezone.utc)


def _article(body: str, title: str = "Headline", tickers: tuple[str, ...] = ()) -> Article:
    return Article(published_at=NOW, source="test", title=title, body=body, tickers=list(tickers))


def _squash(text: str) -> str:
    return " ".join(text.split())


def _source_sentences(summary: str, body: str) -> list[str]:
    """The source sentences, in order, that joined by spaces make ``summary`` (else fail)."""
    rest, used = summary, []
    for sentence in split_sentences(body):
        if rest == sentence or rest.startswith(sentence + " "):
            used.append(sentence)
            rest = rest[len(sentence) :].lstrip()
    assert rest == "", f"not made of source sentences: {rest!r}"
    return used


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder(layers=1)  # the production depth (torch: the reference backend)


@pytest.fixture(scope="module")
def extractive(encoder: SentenceEncoder) -> ExtractiveSummarizer:
    return ExtractiveSummarizer(encoder, ExtractiveConfig(max_sentences=2, max_chars=320))


@pytest.fixture(scope="module")
def reuters() -> list[Article]:
    with gzip.open("data/news/reuters21578.csv.gz", "rt") as fh:
        frame = pd.read_csv(fh, nrows=400).dropna(subset=["body"])
    frame = frame[frame["body"].str.len() > 600].head(8)
    return [Article(published_at=r.published_at, source=r.source, title=r.title, body=r.body) for r in frame.itertuples()]


# --- sentences -----------------------------------------------------------------------------


def test_splitter_keeps_abbreviations_decimals_and_exact_text() -> None:
    text = 'Apple Inc. said on Jan. 5 that U.S. sales rose 5.5% to $1,200 mln. Shares of AAPL fell.\n"We are happy," Mr. J. Smith said.'
    sentences = split_sentences(text)
    assert sentences == [
        "Apple Inc. said on Jan. 5 that U.S. sales rose 5.5% to $1,200 mln.",
        "Shares of AAPL fell.",
        '"We are happy," Mr. J. Smith said.',
    ]
    assert all(s in text for s in sentences)


def test_splitter_joins_hard_wrapped_lines() -> None:
    assert split_sentences("The company said profit\nrose sharply. Sales fell.") == ["The company said profit rose sharply.", "Sales fell."]


# --- extractive ----------------------------------------------------------------------------


def test_extractive_is_deterministic_bounded_and_copied_from_source(extractive: ExtractiveSummarizer, reuters: list[Article]) -> None:
    first = extractive.summarize(reuters)
    assert first == extractive.summarize(reuters)
    assert len(first) == len(reuters)
    for article, summary in zip(reuters, first):
        assert summary
        assert len(summary) <= 320 + 2
        if summary.endswith(" …"):  # one overlong sentence, cut at a word
            assert _squash(summary.removesuffix(" …")) in _squash(article.body)
        else:
            assert 1 <= len(_source_sentences(summary, article.body)) <= 2
        assert unsupported(summary, article.text) == []  # numbers and tickers verbatim


def test_extractive_batch_gives_the_same_summaries_as_one_by_one(extractive: ExtractiveSummarizer, reuters: list[Article]) -> None:
    assert extractive.summarize(reuters[:4]) == [extractive.summarize([a])[0] for a in reuters[:4]]


def test_extractive_respects_sentence_count(encoder: SentenceEncoder, reuters: list[Article]) -> None:
    one = ExtractiveSummarizer(encoder, ExtractiveConfig(max_sentences=1, max_chars=2000))
    three = ExtractiveSummarizer(encoder, ExtractiveConfig(max_sentences=3, max_chars=2000))
    counts = [
        (len(_source_sentences(s1, a.body)), len(_source_sentences(s3, a.body)))
        for a, s1, s3 in zip(reuters, one.summarize(reuters), three.summarize(reuters))
    ]
    assert all(n1 == 1 and 1 <= n3 <= 3 for n1, n3 in counts)
    assert sum(n3 for _, n3 in counts) >= 2 * len(counts)


def test_short_article_is_returned_as_is_and_empty_body_gives_title(extractive: ExtractiveSummarizer) -> None:
    short = _article("Acme Corp <ACME> raised its dividend to 12 cts a share.\nIt will be paid on April 1.")
    empty = _article("", title="ACME RAISES DIVIDEND")
    assert extractive.summarize([short, empty]) == [
        "Acme Corp <ACME> raised its dividend to 12 cts a share. It will be paid on April 1.",
        "ACME RAISES DIVIDEND",
    ]


def test_overlong_single_sentence_is_cut_at_a_word(extractive: ExtractiveSummarizer) -> None:
    body = "Shr 1.01 dlrs vs 1.08 dlrs " * 30 + "and the company said nothing else of note today."
    (summary,) = extractive.summarize([_article(body)])
    assert len(summary) <= 322 and summary.endswith("…")
    assert _squash(summary.removesuffix(" …")) in _squash(body)


def test_empty_batch(extractive: ExtractiveSummarizer) -> None:
    assert extractive.summarize([]) == []


# --- faithfulness --------------------------------------------------------------------------


SOURCE = "Apple Inc <AAPL> said quarterly revenue rose 5.5% to 1,200 mln dlrs, Tim Cook said in Cupertino."


@pytest.mark.parametrize(
    ("summary", "missing"),
    [
        ("The revenue of Apple rose 5.5% to 1200 mln dlrs.", []),
        ("However, Cook said revenue rose.", []),
        ("Revenue rose 7% at Apple.", ["7"]),
        ("Revenue rose 5.5% at Apple, MSFT said.", ["MSFT"]),
        ("Revenue rose at Microsoft.", ["Microsoft"]),
        ("AAPL revenue rose 12 pct.", ["12"]),
    ],
)
def test_faithfulness_flags_what_the_source_lacks(summary: str, missing: list[str]) -> None:
    assert unsupported(summary, SOURCE) == missing


def test_known_tickers_count_as_support() -> None:
    assert unsupported("AAPL rose.", "Apple shares rose.", tickers=["AAPL"]) == []


# --- abstractive (tiny random T5) ----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_t5():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(packaged_encoder_path()))
    return random_seq2seq(tokenizer, d_model=64), tokenizer


def _abstractive(tiny_t5, extractive, **generation) -> AbstractiveSummarizer:
    model, tokenizer = tiny_t5
    params = {"batch_size": 2, "max_input_tokens": 48, "max_new_tokens": 8, "num_beams": 1} | generation
    return AbstractiveSummarizer(model, tokenizer, fallback=extractive, generation=GenerationSettings(**params))


def _fallbacks() -> float:
    return REGISTRY.get_sample_value("newspulse_summary_faithfulness_fallbacks_total") or 0.0


def test_abstractive_batches_by_length_truncates_and_keeps_order(tiny_t5, extractive, reuters, monkeypatch) -> None:
    """A generator that echoes the first input tokens: each summary must come from its own article."""
    summarizer = _abstractive(tiny_t5, extractive)
    model, _ = tiny_t5
    calls = []

    def echo(input_ids, attention_mask, **kwargs):
        calls.append((tuple(input_ids.shape), kwargs))
        return input_ids[:, :6]

    monkeypatch.setattr(model, "generate", echo)
    articles = reuters[:5]
    before = _fallbacks()
    summaries = summarizer.summarize(articles)
    assert [shape[0] for shape, _ in calls] == [2, 2, 1]
    assert all(shape[1] <= 48 for shape, _ in calls)
    assert calls[0][1]["max_new_tokens"] == 8
    for article, summary in zip(articles, summaries):
        assert summary and "".join(summary.split()) in "".join(article.text.split()).lower()  # WordPiece decode spacing
    assert _fallbacks() == before and summarizer.fallbacks == 0


def test_abstractive_input_keeps_the_prompt_and_clips_the_body_verbatim(tiny_t5, extractive, reuters) -> None:
    model, tokenizer = tiny_t5
    summarizer = AbstractiveSummarizer(
        model, tokenizer, fallback=extractive, generation=GenerationSettings(max_input_tokens=40), prompt="summarize: {body} || {title}"
    )
    article = reuters[0]
    text = summarizer.build_input(article)
    assert text.startswith("summarize: ") and text.endswith(" || " + article.title)
    clipped = text.removeprefix("summarize: ").removesuffix(" || " + article.title)
    assert article.body.startswith(clipped) and len(clipped) < len(article.body)
    assert len(tokenizer(text)["input_ids"]) <= 40


def test_invented_number_falls_back_to_extractive_and_counts(tiny_t5, extractive, reuters, monkeypatch) -> None:
    model, tokenizer = tiny_t5
    summarizer = _abstractive(tiny_t5, extractive)
    invented = tokenizer("profits rose 987654 percent", return_tensors="pt", return_token_type_ids=False)["input_ids"]

    def hallucinate(input_ids, attention_mask, **kwargs):
        return invented.repeat(input_ids.shape[0], 1)

    monkeypatch.setattr(model, "generate", hallucinate)
    articles = reuters[:3]
    before = _fallbacks()
    assert summarizer.summarize(articles) == extractive.summarize(articles)
    assert _fallbacks() == before + 3
    assert summarizer.fallbacks == 3 and summarizer.generated == 3


def test_generator_failure_still_gives_extractive_summaries(tiny_t5, extractive, reuters, monkeypatch) -> None:
    model, _ = tiny_t5
    summarizer = _abstractive(tiny_t5, extractive)

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(model, "generate", out_of_memory)
    assert summarizer.summarize(reuters[:2]) == extractive.summarize(reuters[:2])


def test_real_generate_on_random_weights_yields_one_checked_summary_each(tiny_t5, extractive, reuters) -> None:
    summarizer = _abstractive(tiny_t5, extractive, num_beams=2)
    articles = reuters[:3]
    summaries = summarizer.summarize(articles)
    assert len(summaries) == 3
    fallback = extractive.summarize(articles)
    for article, summary, extracted in zip(articles, summaries, fallback):
        assert summary == extracted or unsupported(summary, article.text) == []


def test_build_summarizer_loads_a_saved_generator(tiny_t5, tmp_path) -> None:
    model, tokenizer = tiny_t5
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    settings = load_settings(summarizer="abstractive", summarizer_model=str(tmp_path), summarizer_max_new_tokens=4, summarizer_num_beams=1, device="cpu")
    summarizer = build_summarizer(settings)
    assert isinstance(summarizer, AbstractiveSummarizer) and summarizer.seq2seq
    assert len(summarizer.summarize([_article("Profit rose. " * 40)])) == 1


def test_abstractive_settings_errors_name_the_variable() -> None:
    with pytest.raises(SettingsError, match="NEWSPULSE_SUMMARIZER_MODEL"):
        build_summarizer(load_settings(summarizer="abstractive", summarizer_model=""))
    with pytest.raises(SettingsError, match="NEWSPULSE_SUMMARIZER_PROMPT"):
        check_prompt("Summarise {article}")


# --- CLI helper ----------------------------------------------------------------------------


def test_cli_text_accepts_plain_text_and_json(extractive) -> None:
    settings = load_settings()
    plain = "ACME RAISES DIVIDEND\nAcme Corp raised its dividend to 12 cts a share. It will be paid on April 1."
    assert summarize_text(plain, settings, extractive) == "Acme Corp raised its dividend to 12 cts a share. It will be paid on April 1."
    payload = json.dumps({"published_at": "2024-03-01T00:00:00Z", "source": "x", "title": "T", "body": "Short body here."})
    assert summarize_text(payload, settings, extractive) == "Short body here."
    assert article_from_text("only one line").body == "only one line"
    with pytest.raises(ValueError, match="no article"):
        article_from_text("  \n")
    with pytest.raises(ValueError, match="not a valid Article"):
        article_from_text('{"title": ""}')


# --- the GPU discipline, checked on CPU ----------------------------------------------------


def test_batched_generation_equals_one_by_one(tiny_t5, extractive, reuters, monkeypatch) -> None:
    """Greedy generation with the KV cache, batched by length in groups prepared on a worker
    thread (8 stories, batch 3, 2 batches a group: groups of 6 and 2), gives each story what it gets alone."""
    from newspulse.models.summarize import abstractive

    monkeypatch.setattr(abstractive, "GROUP_BATCHES", 2)
    params = {"max_input_tokens": 256, "max_new_tokens": 6}
    grouped = _abstractive(tiny_t5, extractive, batch_size=3, **params)
    lengths = [len(x["input_ids"]) for x in grouped._inputs(reuters)]
    assert len(set(lengths)) >= 3  # batches of 3 from 6 stories of ≥ 3 lengths: some carry padding
    batched = grouped.generate(reuters)
    single = _abstractive(tiny_t5, extractive, batch_size=1, **params).generate(reuters)
    assert len(batched) == len(reuters) and all(batched)
    assert batched == single


def test_encoder_gpu_path_embeds_like_the_plain_loop(encoder, reuters) -> None:
    """The encoder's CUDA path (models/backends/cuda_batched.py with mean pooling), run on CPU, embeds
    a batch of stories' sentences like the plain loop."""
    import numpy as np

    from newspulse.models.backends.cuda_batched import BatchedScorer, mean_pooled

    sentences = [s for a in reuters for s in split_sentences(a.body)]
    plain = encoder.encode(sentences)
    encoder.batched = BatchedScorer(
        encoder.model, encoder.tokenizer, device="cpu", max_length=encoder.max_tokens, head=mean_pooled, width=plain.shape[1], micro_batch=24, batch_tokens=256, workers=2
    )
    try:
        np.testing.assert_allclose(encoder.encode(sentences), plain, atol=1e-5)
    finally:
        encoder.batched.close()
        encoder.batched = None


# --- the encoder on ONNX Runtime (the CPU default) ------------------------------------------


def test_onnxruntime_encoder_embeds_like_torch_and_keeps_the_summaries(encoder, extractive, reuters, tmp_path) -> None:
    """fp32 equals torch; int8 stays within a small cosine distance. The export is built once in
    ``cache_dir`` (the packaged encoder's folder may be read-only) and reused."""
    import numpy as np

    from newspulse.models.backends import onnx as onnx_backend

    sentences = [s for a in reuters for s in split_sentences(a.body)]
    reference = encoder.encode(sentences)
    fp32 = SentenceEncoder(layers=1, backend="onnxruntime", precision="fp32", cache_dir=tmp_path)
    int8 = SentenceEncoder(layers=1, backend="onnxruntime", precision="int8", cache_dir=tmp_path)
    assert (fp32.backend, int8.backend, encoder.backend) == ("onnxruntime", "onnxruntime", "torch") and fp32.model is None
    np.testing.assert_allclose(fp32.encode(sentences), reference, atol=1e-5)
    cosine = (int8.encode(sentences) * reference).sum(axis=1)
    assert cosine.min() > 0.98, cosine.min()
    assert ExtractiveSummarizer(fp32, extractive.config).summarize(reuters) == extractive.summarize(reuters)
    built = sorted(p.name for p in tmp_path.glob("*.onnx"))
    assert len(built) == 2 and all(name.startswith("sentence-embedding-1-") for name in built)
    again = SentenceEncoder(layers=1, backend="onnxruntime", precision="fp32", cache_dir=tmp_path)
    assert again.runner.path == fp32.runner.path
    # a different depth is another graph, never the cached one
    assert onnx_backend.cache_key(packaged_encoder_path(), onnx_backend.Graph("sentence-embedding", 2)) != onnx_backend.cache_key(
        packaged_encoder_path(), onnx_backend.Graph("sentence-embedding", 1)
    )


def test_encoder_falls_back_to_torch_without_onnxruntime(reuters, tmp_path, monkeypatch, caplog) -> None:
    import logging
    import sys

    from newspulse.models.backends.onnx import OnnxUnavailable

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    with caplog.at_level(logging.WARNING):
        fallback = SentenceEncoder(layers=2, backend="auto", cache_dir=tmp_path)
    assert fallback.backend == "torch" and fallback.encode(["Profit rose."]).shape == (1, 384)
    assert any("sentence encoder" in r.getMessage() and "not installed" in r.getMessage() for r in caplog.records)
    with pytest.raises(OnnxUnavailable):  # asked for explicitly: an error, no fallback
        SentenceEncoder(layers=2, backend="onnxruntime", cache_dir=tmp_path)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [({}, ("onnxruntime", "int8")), ({"quantize": "off"}, ("onnxruntime", "fp32")), ({"inference_backend": "torch"}, ("torch", "fp32"))],
)
def test_build_summarizer_runs_the_encoder_as_the_settings_say(overrides, expected, tmp_path) -> None:
    summarizer = build_summarizer(load_settings(device="cpu", onnx_cache=tmp_path, **overrides))
    assert (summarizer.encoder.backend, summarizer.encoder.precision) == expected
    if expected[0] == "onnxruntime":
        assert summarizer.encoder.runner.path.parent == tmp_path
