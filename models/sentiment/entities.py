"""Entity-level (target-dependent) sentiment: one network, the target marked in its input.

The story-level classifier reads a sentence as it is; for the verdict about one company in it,
the same network reads the sentence with that company's mentions wrapped in marker characters,
so "Intel shares slide as [[AMD]] wins a $2 billion order" asks "how is this news for AMD?".
Training marks SEntFiN's entities the same way (``mark``), so the markers carry meaning the
encoder learns; serving, the ONNX export and int8 need nothing else, because a marked sentence
is still a sentence.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

OPEN = "[["
CLOSE = "]]"

Span = tuple[int, int]


def mark(text: str, spans: Sequence[Span]) -> str:
    """``text`` with each ``[start, end)`` character span wrapped in the entity markers.

    Overlapping or touching spans are merged first, so nested markers never appear; spans
    outside the text raise ``ValueError`` (a caller's offsets are wrong, not the text)."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if not 0 <= start < end <= len(text):
            raise ValueError(f"mention span {start}:{end} is outside a text of {len(text)} characters")
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out: list[str] = []
    cursor = 0
    for start, end in merged:
        out += [text[cursor:start], OPEN, text[start:end], CLOSE]
        cursor = end
    out.append(text[cursor:])
    return "".join(out)


def mention_spans(text: str, name: str) -> list[Span]:
    """The ``[start, end)`` spans of every case-insensitive occurrence of ``name`` in ``text``,
    left to right and non-overlapping: how a labelled (headline, entity) row becomes the spans
    that :func:`mark` wraps. An empty list when the name does not occur (SEntFiN has a few
    entity strings damaged at the source, e.g. "L&T Finance neutralings")."""
    name = name.strip()
    if not name:
        return []
    return [(m.start(), m.end()) for m in re.finditer(re.escape(name), text, flags=re.IGNORECASE)]
