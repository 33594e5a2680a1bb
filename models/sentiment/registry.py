"""A folder of versioned sentiment models with a ``production`` pointer and a promotion gate.

Layout::

    <registry>/
      production                 # text file holding the fast tier's production version (replaced atomically)
      production-accurate        # the accurate tier's production version (the cascade's second opinion), if any
      <version>/
        model_card.json          # ModelCard: where the model came from and how good it is
        README.md                # the same card for Hugging Face tools (models/sentiment/card.py: Hub metadata + prose)
        config.json, model.safetensors, tokenizer files ...

A version folder is a plain Hugging Face model folder:
``AutoModelForSequenceClassification.from_pretrained(<registry>/<version>)`` loads it, and
``huggingface-cli upload`` publishes it with its card.

Why a pointer file and not a symlink: ``os.replace`` of a small file is atomic on every
platform and in every filesystem we deploy to (bind mounts included), so a reader sees either
the old or the new version, never a half-written one. Processors watch its mtime to hot-reload.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from newspulse.errors import BadInput, NewsPulseError, NotFound

log = logging.getLogger(__name__)

CARD_FILE = "model_card.json"
HF_CARD_FILE = "README.md"
POINTER_FILE = "production"
#: Serving tiers: ``fast`` scores every article; ``accurate`` (a larger encoder) is consulted by
#: the cascade (models/sentiment/predict.py) for the fast tier's least-confident rows. Each tier has its
#: own production pointer, so an accurate model never replaces the fast one.
TIERS = ("fast", "accurate")
#: A candidate below this macro-F1 on the evaluation split is never promoted, even into an
#: empty registry: a broken training run must not become the first production model.
DEFAULT_F1_FLOOR = 0.5


class NoProductionModel(NotFound, RuntimeError):
    """The registry has no production model yet (train one: ``newspulse model train``)."""


class BadVersionName(BadInput):
    """A version name that is not a plain folder name (``../../etc``, ``a/b``, ``.hidden``): the
    registry never reads outside its own folder."""


class MisnamedVersion(NewsPulseError, RuntimeError):
    """A version folder whose card names another version (a folder copied or renamed by hand):
    serving it would report, gate and hot-reload the wrong version, so it is refused."""


class CorruptModel(NewsPulseError, RuntimeError):
    """A version's weights, config or tokenizer differ from the sha256 its card recorded at
    registration (a disk error, a partial copy, an overwrite): serving it would give silently
    wrong scores, so it is refused."""


class DataFile(BaseModel):
    """One training or evaluation input, pinned by content hash so a card is reproducible."""

    path: str
    sha256: str
    rows: int

    @classmethod
    def pin(cls, paths: list[Path]) -> list[DataFile]:
        """The labelled CSVs ``paths`` with their hashes and row counts."""
        from newspulse.models.sentiment.data import read_labelled_csv

        return [cls(path=str(p), sha256=sha256_file(p), rows=len(read_labelled_csv(p))) for p in paths]


class GateDecision(BaseModel):
    """Why a candidate was (or was not) promoted."""

    promote: bool
    reason: str
    candidate_version: str
    candidate_macro_f1: float
    production_version: str | None = None
    production_macro_f1: float | None = None
    floor: float = DEFAULT_F1_FLOOR
    split: str = ""
    #: Entity-level dev macro-F1 of both (None: the candidate has no entity figures).
    candidate_entity_macro_f1: float | None = None
    production_entity_macro_f1: float | None = None


class ModelCard(BaseModel):
    """Everything an operator needs to trust (or reject) a model version."""

    version: str
    base_model: str
    created_at: datetime
    code_version: str
    data_files: list[DataFile] = Field(default_factory=list)
    dev_files: list[DataFile] = Field(default_factory=list)
    #: The fixed evaluation split the gate compares on (``metrics["eval"]``).
    eval_files: list[DataFile] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    #: ``{"dev": {...}, "<dev file stem>": {...}, "eval": {...}}``; each is the dict from
    #: :func:`newspulse.models.sentiment.evaluate.classification_metrics`.
    metrics: dict[str, Any] = Field(default_factory=dict)
    label_distribution: dict[str, dict[str, int]] = Field(default_factory=dict)
    #: ``{"agreement": share of fp32 dev predictions the int8 model keeps, "dev_macro_f1_int8",
    #: "dev_macro_f1_fp32", "recommended": bool}`` (see ``onnx_backend.int8_check``)
    quantization: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    gate: GateDecision | None = None
    eval_split: str = ""
    #: "student": a serving candidate; "teacher": trained only to make soft labels for
    #: distillation (``newspulse bench model`` times it too), never promoted.
    role: str = "student"
    #: Which serving tier the model is for (:data:`TIERS`); the gate compares it with, and
    #: promotion moves, that tier's production pointer only.
    tier: Literal["fast", "accurate"] = "fast"
    #: Knowledge distillation: teacher, soft-label artifact sha256, loss weights ({} = none).
    distillation: dict[str, Any] = Field(default_factory=dict)
    #: Licence of every data set the model learned from or was selected on, and whether all of
    #: them allow commercial use (``commercial_use``), so a bank can see what it may deploy.
    licences: dict[str, Any] = Field(default_factory=dict)
    #: sha256 of every file the version was saved with (weights, config, tokenizer), recorded at
    #: registration and checked at every load (:func:`verify_files`); {} on cards written before
    #: hashes were recorded (those load unverified, with a warning).
    files: dict[str, str] = Field(default_factory=dict)

    def macro_f1(self, split: str = "eval") -> float | None:
        m = self.metrics.get(split) or self.metrics.get("dev")
        return None if m is None else float(m["macro_f1"])

    def entity_macro_f1(self) -> float | None:
        """Entity-level dev macro-F1 (``metrics["entities"]``); None for a card without it."""
        m = self.metrics.get("entities")
        return None if m is None else float(m["macro_f1"])

    def entity_data(self) -> list[dict[str, str]]:
        """The entity dev files (path, sha256) the entity figures were measured on."""
        return list((self.metrics.get("entities") or {}).get("data", []))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of the files in a version folder that decide its predictions: everything
    ``save_pretrained`` wrote (weights, config, tokenizer), not the cards, which change after
    registration (evaluation, gate), nor derived folders (the ONNX cache)."""
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name not in (CARD_FILE, HF_CARD_FILE)}


def verify_files(folder: Path, card: ModelCard) -> None:
    """Refuse a version whose files differ from the hashes in its card (:class:`CorruptModel`).

    A card without hashes (registered before they were recorded) loads with a warning."""
    if not card.files:
        log.warning("model version %s has no file hashes in its card (registered before they were recorded); loading it unverified", card.version)
        return
    for name, expected in card.files.items():
        path = folder / name
        actual = sha256_file(path) if path.is_file() else None
        if actual != expected:
            found = "is missing" if actual is None else f"has sha256 {actual[:12]}…, its card says {expected[:12]}…"
            raise CorruptModel(f"model version {card.version} is corrupted: {name} {found}; restore {folder} from a backup or train a new version")


def code_version() -> str:
    """The git commit of the code that trained a model (``+dirty`` when uncommitted changes)."""
    root = Path(__file__).resolve().parents[2]  # the checkout: models/sentiment/ → models/ → root
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "models"], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from newspulse import __version__

        return f"newspulse-{__version__}"


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Registry:
    """Versioned model folders plus the atomically replaced ``production`` pointer."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    # --- reading ---------------------------------------------------------------------------
    @property
    def pointer(self) -> Path:
        return self.pointer_of("fast")

    def pointer_of(self, tier: str) -> Path:
        """The production pointer of ``tier``: ``production`` for the fast tier,
        ``production-<tier>`` for the others."""
        if tier not in TIERS:
            raise BadInput(f"unknown model tier {tier!r}; one of {', '.join(TIERS)}")
        return self.path / (POINTER_FILE if tier == "fast" else f"{POINTER_FILE}-{tier}")

    def pointer_mtime(self, tier: str = "fast") -> float | None:
        """Cheap change detection for hot reload (one ``stat``)."""
        try:
            return self.pointer_of(tier).stat().st_mtime_ns / 1e9
        except FileNotFoundError:
            return None

    def production_version(self, tier: str = "fast") -> str | None:
        pointer = self.pointer_of(tier)
        try:
            version = pointer.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        if version and not _plain_name(version):
            raise BadVersionName(f"the production pointer {pointer} holds {version!r}, not a version name; point it at a version with `newspulse model promote VERSION --force`")
        return version or None

    def version_dir(self, version: str) -> Path:
        if not _plain_name(version):
            raise BadVersionName(f"bad model version {version!r}: a version is a folder name in {self.path}")
        return self.path / version

    def card(self, version: str) -> ModelCard:
        """The card of ``version``; :class:`MisnamedVersion` when its folder holds another
        version's card, so that everything keyed by version (the pointer, ``model list``, the
        serving gauge, hot reload) agrees with the folder that is read."""
        card = self._card_in(version)
        if card.version != version:
            raise MisnamedVersion(
                f"model folder {self.version_dir(version)} holds the card of version {card.version!r} (copied or renamed?); "
                f"rename the folder back to {card.version!r} or retrain instead of copying"
            )
        return card

    def _card_in(self, folder: str) -> ModelCard:
        card_path = self.version_dir(folder) / CARD_FILE
        if not card_path.exists():
            raise NotFound(f"no model version {folder!r} in {self.path}")
        return ModelCard.model_validate_json(card_path.read_text(encoding="utf-8"))

    def production_card(self, tier: str = "fast") -> ModelCard:
        version = self.production_version(tier)
        if version is None:
            raise NoProductionModel(f"no production model in {self.path}; train one with `newspulse model train`")
        return self.card(version)

    def production_dir(self) -> Path:
        return self.version_dir(self.production_card().version)

    def list_versions(self) -> list[str]:
        """Versions with a model card, oldest first (versions sort by creation time)."""
        if not self.path.exists():
            return []
        return sorted(p.name for p in self.path.iterdir() if p.is_dir() and (p / CARD_FILE).exists())

    def cards(self) -> list[ModelCard]:
        """Cards of the well-named versions, oldest first; a misnamed folder is skipped with a
        warning (``model list`` shows it as a problem row)."""
        cards = []
        for version in self.list_versions():
            try:
                cards.append(self.card(version))
            except MisnamedVersion as err:
                log.warning("%s", err)
        return cards

    def teacher_card(self) -> ModelCard | None:
        """The newest version registered as a distillation teacher, if any."""
        teachers = [c for c in self.cards() if c.role == "teacher"]
        return teachers[-1] if teachers else None

    def gold_only_card(self) -> ModelCard | None:
        """The newest student trained without distillation, if any: what a distilled production
        model is timed against (issue 14: distillation must not slow serving)."""
        students = [c for c in self.cards() if c.role == "student" and not c.distillation]
        return students[-1] if students else None

    # --- writing ---------------------------------------------------------------------------
    def new_version(self, now: datetime | None = None) -> str:
        """``vYYYYMMDD-HHMMSS`` (UTC), with a suffix if that second is taken."""
        now = now or datetime.now(timezone.utc)
        base = "v" + now.strftime("%Y%m%d-%H%M%S")
        version, n = base, 1
        while (self.path / version).exists():
            n += 1
            version = f"{base}-{n}"
        return version

    def write_card(self, card: ModelCard) -> None:
        """Write both cards: ``model_card.json`` (ours, complete) and the Hugging Face README.md."""
        from newspulse.models.sentiment.card import hf_model_card

        _atomic_write(self.version_dir(card.version) / CARD_FILE, card.model_dump_json(indent=2))
        _atomic_write(self.version_dir(card.version) / HF_CARD_FILE, hf_model_card(card))

    def register(self, model, tokenizer, card: ModelCard) -> Path:
        """Save a model, its tokenizer and card as version ``card.version``. Written to a hidden
        staging folder first and renamed, so a version appears complete or not at all."""
        from newspulse.models.sentiment.card import hf_model_card

        final = self.version_dir(card.version)
        if final.exists():
            raise FileExistsError(f"model version {card.version} already exists in {self.path}")
        staging = self.path / f".{card.version}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        card.files = file_hashes(staging)
        (staging / CARD_FILE).write_text(card.model_dump_json(indent=2), encoding="utf-8")
        (staging / HF_CARD_FILE).write_text(hf_model_card(card), encoding="utf-8")
        staging.rename(final)
        return final

    def promote(self, version: str) -> None:
        """Point the production pointer of the version's tier at ``version`` (atomic): an
        accurate-tier model never becomes the fast tier's production. Raises NotFound for
        unknown versions."""
        card = self.card(version)  # must exist and be readable
        _atomic_write(self.pointer_of(card.tier), version + "\n")

    def gate(self, candidate: ModelCard, floor: float = DEFAULT_F1_FLOOR, split: str = "eval", production_macro_f1: float | None = None, production_entity_macro_f1: float | None = None) -> GateDecision:
        """Promote only if the candidate's macro-F1 on the fixed evaluation split is above the
        floor and at least production's on the same rows, and, when the candidate has
        entity-level dev figures, its entity macro-F1 is at least production's on the same
        rows too (a better story verdict must not buy a worse verdict per company).

        Production's scores come from its card when it was evaluated on the same split (same
        ``eval_split`` fingerprint, same entity dev hashes); otherwise the caller measures them
        and passes ``production_macro_f1`` / ``production_entity_macro_f1`` (see
        :func:`gate_candidate`).
        """
        cand_f1 = candidate.macro_f1(split)
        if candidate.role == "teacher":
            return GateDecision(promote=False, reason="a teacher model is never served", candidate_version=candidate.version, candidate_macro_f1=cand_f1 or 0.0, floor=floor, split=split)
        if cand_f1 is None:
            return GateDecision(promote=False, reason="candidate has no evaluation metrics", candidate_version=candidate.version, candidate_macro_f1=0.0, floor=floor, split=split)
        cand_entity = candidate.entity_macro_f1()
        base = dict(candidate_version=candidate.version, candidate_macro_f1=cand_f1, floor=floor, split=candidate.eval_split or split, candidate_entity_macro_f1=cand_entity)
        if cand_f1 < floor:
            return GateDecision(promote=False, reason=f"macro-F1 {cand_f1:.4f} is below the floor {floor:.4f}", **base)
        prod_version = self.production_version(candidate.tier)
        if prod_version is None or prod_version == candidate.version:
            return GateDecision(promote=True, reason="no production model yet" if prod_version is None else "already production", **base)
        prod = self.card(prod_version)
        prod_f1 = production_macro_f1 if production_macro_f1 is not None else prod.macro_f1(split)
        prod_entity = None
        if cand_entity is not None:
            same_rows = prod.entity_data() == candidate.entity_data()
            prod_entity = production_entity_macro_f1 if production_entity_macro_f1 is not None else prod.entity_macro_f1() if same_rows else None
        base.update(production_version=prod_version, production_macro_f1=prod_f1, production_entity_macro_f1=prod_entity)
        if prod_f1 is not None and cand_f1 < prod_f1:
            return GateDecision(promote=False, reason=f"macro-F1 {cand_f1:.4f} < production {prod_f1:.4f}", **base)
        if cand_entity is not None and prod_entity is not None and cand_entity < prod_entity:
            return GateDecision(promote=False, reason=f"entity macro-F1 {cand_entity:.4f} < production {prod_entity:.4f}", **base)
        reason = f"macro-F1 {cand_f1:.4f} >= production {prod_f1 if prod_f1 is not None else float('nan'):.4f}"
        if cand_entity is not None and prod_entity is not None:
            reason += f", entity macro-F1 {cand_entity:.4f} >= production {prod_entity:.4f}"
        return GateDecision(promote=True, reason=reason, **base)

    def describe(self) -> list[dict[str, Any]]:
        """One row per version folder for ``newspulse model list``; a misnamed folder is one row
        named by its folder, with its ``problem`` and never marked production."""
        prod = {tier: self.production_version(tier) for tier in TIERS}
        rows: list[dict[str, Any]] = []
        for folder in self.list_versions():
            try:
                card = self.card(folder)
            except MisnamedVersion as err:
                rows.append({"version": folder, "production": False, "problem": str(err), "metrics": {}, "created_at": ""})
                continue
            rows.append(
                {
                    "version": card.version,
                    "production": card.version == prod[card.tier],
                    "tier": card.tier,
                    "role": card.role,
                    "created_at": card.created_at.isoformat(),
                    "base_model": card.base_model,
                    "macro_f1": card.macro_f1(),
                    "metrics": {k: round(float(v["macro_f1"]), 4) for k, v in card.metrics.items() if isinstance(v, dict) and "macro_f1" in v},
                    "code_version": card.code_version,
                }
            )
        return rows

    def record_run(self, entry: dict[str, Any]) -> Path:
        """Append one retraining run's outcome to ``<registry>/_history.jsonl`` (the audit trail
        that the retraining DAG's ``notify`` writes and operators read)."""
        path = self.path / "_history.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"at": datetime.now(timezone.utc).isoformat(), **entry}
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, default=str) + "\n")
        return path


def _plain_name(version: str) -> bool:
    """A name that stays inside the registry folder: no separator, no leading dot, no NUL."""
    return bool(version) and not any(c in version for c in "/\\\0") and not version.startswith(".")


def gate_candidate(registry: Registry, version: str, floor: float = DEFAULT_F1_FLOOR) -> GateDecision:
    """Decide (without promoting) whether ``version`` may replace production, and keep the
    decision in its card. When production was evaluated on a different split (or has no
    entity figures on the candidate's entity dev rows), it is re-measured on the candidate's."""
    from newspulse.models.sentiment.evaluate import entity_macro_f1, split_macro_f1

    card = registry.card(version)
    prod_version = registry.production_version(card.tier)
    prod_f1 = prod_entity = None
    if prod_version and prod_version != version:
        prod = registry.card(prod_version)
        if prod.eval_split != card.eval_split:
            prod_f1 = split_macro_f1(registry, prod_version, [Path(d.path) for d in card.eval_files])
        if card.entity_data() and prod.entity_data() != card.entity_data():
            prod_entity = entity_macro_f1(registry, prod_version, [d["path"] for d in card.entity_data()])
    decision = registry.gate(card, floor=floor, production_macro_f1=prod_f1, production_entity_macro_f1=prod_entity)
    card.gate = decision
    registry.write_card(card)
    return decision


def gate_and_promote(registry: Registry, version: str, floor: float = DEFAULT_F1_FLOOR) -> GateDecision:
    """Gate, then move the production pointer only when the gate says so."""
    decision = gate_candidate(registry, version, floor)
    if decision.promote:
        registry.promote(version)
        log.info("promoted %s: %s", version, decision.reason)
    else:
        log.warning("kept production %s: %s", decision.production_version, decision.reason)
    return decision
