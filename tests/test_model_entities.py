"""Entity marking: the text transform shared by training and serving of entity verdicts."""

import pytest

from newspulse.models.entities import CLOSE, OPEN, mark


def test_mark_wraps_each_mention_and_keeps_the_rest():
    text = "Intel slides as AMD wins; AMD gains"
    assert mark(text, [(16, 19), (26, 29)]) == f"Intel slides as {OPEN}AMD{CLOSE} wins; {OPEN}AMD{CLOSE} gains"


def test_mark_merges_overlapping_spans():
    assert mark("Advanced Micro Devices", [(0, 8), (0, 22)]) == f"{OPEN}Advanced Micro Devices{CLOSE}"


def test_mark_rejects_spans_outside_the_text():
    with pytest.raises(ValueError, match="outside"):
        mark("AMD", [(1, 9)])
