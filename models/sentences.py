"""Sentence splitting that returns exact substrings of the source: one splitter for scoring
(:mod:`newspulse.models.sentiment.predict` packs sentences into chunks), summaries and distillation data.

The extractive summary promises that every number and ticker is copied verbatim, so the splitter
never rewrites text: it only finds boundaries. It is rule-based (no NLTK data to download) and
tuned for wire copy: abbreviations such as ``Inc.`` or ``U.S.``, decimals (``5.93``), one
paragraph per line, and hard-wrapped lines (a line that continues in lower case is joined).
"""

from __future__ import annotations

import re

#: Tokens that end in a period without ending a sentence (compared lower-cased, no final dot).
_ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof sr jr st mt no nos vs v etc approx est fig inc corp co cos ltd plc llc
    bros dept gov gen sen rep rev jan feb mar apr jun jul aug sep sept oct nov dec
    e.g i.e u.s u.k u.n u.s.a e.u a.m p.m""".split()
)

# A boundary candidate: terminal punctuation (or an ellipsis), optional closing quotes/brackets,
# whitespace, then something that can start a sentence (capital, digit, dollar amount, opening
# quote/bracket).
_BOUNDARY = re.compile(r"[.!?…]+[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9$])")
_LAST_TOKEN = re.compile(r"(\S+)$")
_WRAPPED = re.compile(r"\n[ \t]*(?=[a-z(,;])")


def _is_abbreviation(text_before: str) -> bool:
    """True when the word ending at a period is an abbreviation or an initial (``J.``)."""
    m = _LAST_TOKEN.search(text_before)
    if not m:
        return False
    token = m.group(1).lstrip("\"'“‘([").rstrip(".").lower()
    return token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha())


def paragraphs(text: str) -> list[str]:
    """Lines of the text, with hard-wrapped continuation lines joined back by one space."""
    joined = _WRAPPED.sub(" ", text)
    return [line.strip() for line in joined.splitlines() if line.strip()]


def _sentence_bounds(para: str) -> list[tuple[int, int]]:
    """``[start, end)`` of each sentence of one paragraph, stripped of surrounding whitespace."""
    out: list[tuple[int, int]] = []
    start = 0
    for m in _BOUNDARY.finditer(para):
        end = m.start() + len(m.group(0).rstrip())
        if para[m.start()] == "." and _is_abbreviation(para[start : m.start()]):
            continue
        out.append((start, end))
        start = m.end()
    out.append((start, len(para)))
    return [_strip(para, s, e) for s, e in out if para[s:e].strip()]


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` narrowed to leave out the piece's leading and trailing whitespace."""
    piece = text[start:end]
    return start + len(piece) - len(piece.lstrip()), end - len(piece) + len(piece.rstrip())


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` in order; each is an exact substring of a paragraph of it."""
    return [para[s:e] for para in paragraphs(text) for s, e in _sentence_bounds(para)]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``[start, end)`` character offsets of the sentences of ``text`` itself, in order: the
    same boundaries as :func:`split_sentences`, for callers that must point back into the text
    (entity evidence is highlighted in the stored story). A hard-wrapped sentence keeps its line
    break inside its span."""
    # the wrap is blanked with as many spaces as it has characters, so offsets stay the text's
    joined = _WRAPPED.sub(lambda m: " " * len(m.group(0)), text)
    spans: list[tuple[int, int]] = []
    offset = 0
    for line in joined.splitlines(keepends=True):
        spans += [(offset + s, offset + e) for s, e in _sentence_bounds(line.rstrip("\r\n"))]
        offset += len(line)
    return spans
