"""Where the bundled data sets are, in a source checkout and in an installed wheel.

The repository keeps them in the top-level ``data/`` folder; the wheel ships the same folder as
``newspulse/data`` (pyproject.toml maps it), so ``pip install .`` (not editable) can still train
the classifier and replay the demo corpus.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir() -> Path:
    """``newspulse/data`` when installed from a wheel, else ``<checkout>/data``."""
    installed = _PACKAGE / "data"
    return installed if installed.is_dir() else _PACKAGE.parent / "data"
