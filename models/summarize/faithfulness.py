"""Does a generated summary name only numbers, tickers and names that the story contains?

A generator can invent a figure ("profit rose 12%") or a company. An analyst must never read a
number or ticker the story does not contain, so every abstractive summary is checked here and
replaced by the extractive one (copied from the story) when anything is unsupported.

What is checked, against title + body:
- numbers: digits compared without thousands separators, signs, currency or percent marks
  (``1,200`` matches ``1200``; ``12`` does not match ``12.5``);
- tickers / acronyms: all-capital tokens of 2 to 5 letters (with an optional ``.X`` exchange
  suffix), which must occur with the same case, or be one of the article's tickers;
- capitalised names: capitalised words, which must occur in any case; common function words
  that start a sentence ("The", "However") are not names and are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from prometheus_client import Counter
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

FAITHFULNESS_FALLBACKS = Counter(
    "newspulse_summary_faithfulness_fallbacks",
    "Abstractive summaries replaced by the extractive summary because they named a number, "
    "ticker or name missing from the story.",
)
GENERATED_SUMMARIES = Counter("newspulse_summary_generated", "Summaries written by the abstractive generator (before the faithfulness check).")

_NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?")
_TICKER = re.compile(r"(?<![\w.])[A-Z]{2,5}(?:\.[A-Z]{1,2})?(?![\w])")
_NAME = re.compile(r"(?<![\w])[A-Z][a-z][A-Za-z]*(?:-[A-Za-z]+)*")


def _numbers(text: str) -> set[str]:
    return {m.group(0).replace(",", "").rstrip(".") for m in _NUMBER.finditer(text)}


def _occurs(item: str, text: str, *, case_sensitive: bool) -> bool:
    pattern = r"(?<![A-Za-z])" + re.escape(item) + r"(?![A-Za-z])"
    return re.search(pattern, text, 0 if case_sensitive else re.IGNORECASE) is not None


def unsupported(summary: str, source: str, tickers: Iterable[str] = ()) -> list[str]:
    """Numbers, tickers and names in ``summary`` that ``source`` lacks (empty list = faithful)."""
    missing: list[str] = []
    source_numbers = _numbers(source)
    missing += sorted(n for n in _numbers(summary) if n not in source_numbers)
    known = {t.upper() for t in tickers}
    for t in dict.fromkeys(m.group(0) for m in _TICKER.finditer(summary)):
        if t not in known and not _occurs(t, source, case_sensitive=True):
            missing.append(t)
    for name in dict.fromkeys(m.group(0) for m in _NAME.finditer(summary)):
        if name.lower() in ENGLISH_STOP_WORDS:
            continue
        if not _occurs(name, source, case_sensitive=False):
            missing.append(name)
    return missing
