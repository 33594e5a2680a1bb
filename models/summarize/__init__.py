"""Article summaries: extractive by default, abstractive (a generator) when configured.

``build_summarizer(settings)`` is what the pipeline calls; every summariser has
``summarize(articles) -> list[str]`` (one summary per article, same order). The abstractive one
checks each generated summary for faithfulness and falls back to the extractive summary when it
names a number, ticker or name the story does not contain.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from newspulse.pipeline import Summarizer
from newspulse.schema import Article
from newspulse.settings import Settings

from newspulse.models.backends.factory import pick_device
from newspulse.models.summarize.extractive import ExtractiveConfig, ExtractiveSummarizer, SentenceEncoder

__all__ = ["build_summarizer", "build_extractive", "summarize_text", "summarize_cli_text", "article_from_text"]


def build_extractive(settings: Settings) -> ExtractiveSummarizer:
    """The default summariser: packaged MiniLM, no generator weights. On CPU its encoder runs on
    the inference backend the settings select, in int8 unless ``quantize`` is ``off`` (int8 left
    299 of 300 Reuters summaries unchanged: docs/summaries.md)."""
    config = ExtractiveConfig(
        max_sentences=settings.summary_max_sentences,
        max_chars=settings.summary_max_chars,
        max_candidates=settings.summary_max_candidates,
    )
    encoder = SentenceEncoder(
        layers=settings.summary_encoder_layers,
        device=pick_device(settings.device),
        backend=settings.inference_backend,
        precision="fp32" if settings.quantize == "off" else "int8",
        cache_dir=settings.onnx_cache_dir,
    )
    return ExtractiveSummarizer(encoder, config)


def build_summarizer(settings: Settings) -> Summarizer:
    """The summariser ``settings.summarizer`` names, with its models loaded once."""
    extractive = build_extractive(settings)
    if settings.summarizer == "extractive":
        return extractive
    from newspulse.models.summarize.abstractive import build_abstractive

    return build_abstractive(settings, fallback=extractive)


def article_from_text(text: str) -> Article:
    """Operator input: a JSON Article, or plain text (first line = title when there is a body)."""
    stripped = text.strip()
    if not stripped:
        raise ValueError("no article text on standard input")
    if stripped.startswith("{"):
        try:
            return Article.model_validate(json.loads(stripped))
        except (json.JSONDecodeError, ValueError) as err:
            raise ValueError(f"input looks like JSON but is not a valid Article: {err}") from None
    title, _, body = stripped.partition("\n")
    if not body.strip():
        title, body = "", title
    return Article(published_at=datetime.now(timezone.utc), source="stdin", title=title.strip(), body=body.strip())


def summarize_text(text: str, settings: Settings, summarizer: Summarizer | None = None) -> str:
    """What ``newspulse summarize`` prints for the article read from stdin.

    Raises ValueError (with the reason) when the input is empty or is JSON but not an Article.
    """
    article = article_from_text(text)
    return (summarizer or build_summarizer(settings)).summarize([article])[0]


summarize_cli_text = summarize_text  # the name in the issue-7 brief
