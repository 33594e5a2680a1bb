"""`newspulse model ...` commands (training, evaluation, registry).

Heavy libraries (torch, transformers) are imported inside the commands so `--help` stays fast.
Expected errors are raised, not printed: :class:`~newspulse.console.CommandGroup` turns them into
one line and the exit code of their kind (docs/cli.md).
"""

from __future__ import annotations

import inspect
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from newspulse.console import command_app, echo_json
from newspulse.console import settings_or_exit as _settings
from newspulse.errors import BadInput
from newspulse.models.sentiment.train_options import TRAIN_OPTIONS, TrainOption
from newspulse.settings import Settings

app = command_app("Train, evaluate and manage the sentiment and topic models.")

#: The help of every ``--json`` option: the promise scripts rely on.
JSON_HELP = "Print one JSON document on stdout and nothing else."


def train(**options: Any) -> None:
    """Fine-tune a classifier, register it as a new version and (gate permitting) promote it."""
    from newspulse.models.backends.onnx import require_torch
    from newspulse.models.sentiment.config import config_from_params
    from newspulse.models.sentiment.train import train as run_training
    from newspulse.wiring import feedback_source

    settings = _settings()
    require_torch("training")  # one line instead of an import error deep in the training loop
    promote, as_json = options.pop("promote"), options.pop("as_json")
    params = {option.param: _plain(options[option.cli]) for option in TRAIN_OPTIONS if option.cli is not None}
    # a bad option combination, value or data file raises BadInput (DataError), which the group reports
    cfg = config_from_params(params, settings, feedback_source(settings), progress=True, promote=promote)
    card = run_training(cfg)
    if as_json:
        echo_json(card.model_dump(mode="json"))
        return
    ev = card.metrics.get("eval", {})
    typer.echo(f"registered {card.version}: eval macro-F1 {ev.get('macro_f1', float('nan')):.4f}, accuracy {ev.get('accuracy', float('nan')):.4f}")
    for source, m in (ev.get("by_source") or {}).items():
        typer.echo(f"  {source:28} macro-F1 {m['macro_f1']:.4f}  accuracy {m['accuracy']:.4f}  n={m['n']}")
    if "entities" in card.metrics:
        ent = card.metrics["entities"]
        typer.echo(f"  {'entities (dev)':28} macro-F1 {ent['macro_f1']:.4f}  accuracy {ent['accuracy']:.4f}  conflict accuracy {ent['conflict_accuracy']}  n={ent['n']}")
    if card.gate is not None:
        typer.echo(f"gate: {'PROMOTED' if card.gate.promote else 'kept production'} ({card.gate.reason})")
    use = {True: "all inputs allow commercial use", False: "NOT for commercial use (see licences in the card)", None: "an input's licence is unknown"}
    typer.echo(f"licences: {use[card.licences.get('commercial_use')]}")


def _plain(value: Any) -> Any:
    """A choice option's value as the string the declaration names."""
    return value.value if isinstance(value, Enum) else value


def _train_option(option: TrainOption) -> inspect.Parameter:
    """``newspulse model train``'s parameter for a declared retraining option (train_options.py).
    Not given, it is None (an empty list for a repeatable one): the run's default applies, as
    for an empty DAG param. Switches, and choices that declare a default, default to it."""
    limits = {key: value for key, value in (("min", option.minimum), ("max", option.maximum)) if value is not None}
    decls = [option.flag] if option.flag else []
    kind = option.cli_type
    if isinstance(kind, tuple):
        choices = Enum(option.cli.title(), {choice: choice for choice in kind}, type=str)  # type: ignore[misc]
        annotation, default = (choices, choices(option.default)) if option.default is not None else (Optional[choices], None)
    elif kind is bool:
        annotation, default = bool, option.default
    else:
        annotation, default = Optional[kind], None
    help_text = option.cli_help or option.description
    return inspect.Parameter(option.cli, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[annotation, typer.Option(*decls, help=help_text, **limits)])


def _build_train_command() -> None:
    """Register ``train`` with one option per declared retraining option, then the options that
    are not training options: the gate and the output format."""
    parameters = [_train_option(option) for option in TRAIN_OPTIONS if option.cli is not None] + [
        inspect.Parameter("promote", inspect.Parameter.KEYWORD_ONLY, default=True, annotation=Annotated[bool, typer.Option(help="Apply the promotion gate (production moves only if not worse).")]),
        inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[bool, typer.Option("--json", help=JSON_HELP + " The model card.")]),
    ]
    train.__signature__ = inspect.Signature(parameters, return_annotation=None)  # type: ignore[attr-defined]
    train.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": None}
    app.command()(train)


_build_train_command()


@app.command()
def evaluate(
    data: Annotated[Optional[list[Path]], typer.Option("--data", help="Labelled CSV (text,label[,agreement]); repeatable. Default: the fixed evaluation split.")] = None,
    version: Annotated[Optional[str], typer.Option("--model-version", help="Registry version (default: production).")] = None,
    lexicon: Annotated[bool, typer.Option(help="Also score the Loughran-McDonald lexicon baseline on the same rows.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Accuracy, macro/weighted F1, per-class P/R/F1, confusion matrix (rows = true), per
    agreement level, beside the lexicon baseline."""
    from newspulse.models.sentiment.data import DEFAULT_EVAL_FILES
    from newspulse.models.sentiment.evaluate import evaluate_files

    clf = _served_model(_settings(), version)
    result = evaluate_files(clf, data or list(DEFAULT_EVAL_FILES), lexicon=lexicon)  # DataError: exit 2
    result["quantized"] = clf.quantized
    result["backend"] = clf.backend.name
    if as_json:
        echo_json(result)
        return
    typer.echo(f"model {result['model_version']} on {', '.join(result['data'])} (n={result['n']})")
    rows = [("model", result)] + ([("lexicon (LM)", result["lexicon"])] if "lexicon" in result else [])
    for name, m in rows:
        typer.echo(f"  {name:14} accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  weighted-F1 {m['weighted_f1']:.4f}")
    for label, m in result["per_class"].items():
        typer.echo(f"  {label:9} P {m['precision']:.3f}  R {m['recall']:.3f}  F1 {m['f1']:.3f}  n={m['support']}")
    typer.echo(f"  confusion (rows true, cols predicted; negative/neutral/positive): {result['confusion']}")
    for level, m in (result.get("by_agreement") or {}).items():
        typer.echo(f"  agreement {level:>3}%: accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  n={m['n']}")


def _served_model(settings: Settings, version: str | None):
    """Registry ``version`` (default: production) as the settings serve it (device, precision,
    backend): the evaluation commands measure what the processors would run. A missing version
    or production model raises NotFound / NoProductionModel (one line, exit 4)."""
    from newspulse.models.sentiment.predict import SentimentModel
    from newspulse.models.sentiment.registry import Registry

    registry = Registry(settings.model_registry)
    card = registry.card(version) if version else registry.production_card()
    return SentimentModel.from_dir(registry.version_dir(card.version), device=settings.device, quantize=settings.quantize, backend=settings.inference_backend, card=card)


@app.command("evaluate-entities")
def evaluate_entities(
    data: Annotated[list[Path], typer.Option("--data", help="Entity-level CSV with columns id,text,entity,label (id groups one headline's rows); repeatable.")],
    version: Annotated[Optional[str], typer.Option("--model-version", help="Registry version (default: production).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Entity-level accuracy, macro-F1 and accuracy on conflicting headlines (whose entities'
    gold labels disagree), beside the story-level baseline (the unmarked headline's verdict
    copied to every entity) measured in the same run. An entity that does not occur in its
    headline is scored on the unmarked headline. A bad row stops with its line, exit 2."""
    from newspulse.models.sentiment.evaluate import evaluate_entities as run_evaluation
    from newspulse.models.sentiment.evaluate import read_entity_frame

    settings = _settings()
    frame = read_entity_frame(data)  # DataError: exit 2; a bad row stops here, before a model is loaded
    clf = _served_model(settings, version)
    result = run_evaluation(clf, frame)
    result["data"] = [str(p) for p in data]
    result["quantized"] = clf.quantized
    result["backend"] = clf.backend.name
    if as_json:
        echo_json(result)
        return
    typer.echo(f"model {result['model_version']} on {', '.join(result['data'])} (n={result['n']}, conflict_n={result['conflict_n']}, entity not in text: {result['unmatched_n']})")
    for name, m in (("entity", result), ("story baseline", result["story_baseline"])):
        conflict = "n/a" if m["conflict_accuracy"] is None else f"{m['conflict_accuracy']:.4f}"
        typer.echo(f"  {name:15} accuracy {m['accuracy']:.4f}  macro_f1 {m['macro_f1']:.4f}  conflict_accuracy {conflict}")


@app.command("list")
def list_versions(as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP + " A JSON array.")] = False) -> None:
    """Registered versions, oldest first; `*` marks production, `!` a folder that cannot be served."""
    from newspulse.models.sentiment.registry import Registry

    rows = Registry(_settings().model_registry).describe()
    if as_json:
        echo_json(rows)
        return
    if not rows:
        typer.echo("no models registered; train one with `newspulse model train`")
    for r in rows:
        if r.get("problem"):
            typer.echo(f"! {r['version']}  not servable: {r['problem']}")
            continue
        f1 = "  ".join(f"{k}={v:.4f}" for k, v in r["metrics"].items())
        typer.echo(f"{'*' if r['production'] else ' '} {r['version']}  {r['created_at'][:19]}  {f1}")


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="Registry version to make production.")],
    force: Annotated[bool, typer.Option(help="Skip the gate (e.g. to roll back to an older version).")] = False,
) -> None:
    """Make VERSION production if the gate allows it (or unconditionally with --force).
    Running processors pick it up without a restart."""
    from newspulse.models.sentiment.registry import Registry, gate_and_promote

    registry = Registry(_settings().model_registry)
    if force:  # a malformed version name raises BadVersionName (BadInput), an unknown one NotFound
        registry.promote(version)
        typer.echo(f"production is now {version} (forced)")
        return
    decision = gate_and_promote(registry, version)
    if not decision.promote:
        typer.echo(f"refused: {decision.reason} (use --force to override)", err=True)
        raise typer.Exit(1)
    typer.echo(f"production is now {version}: {decision.reason}")


@app.command()
def rescore(
    since: Annotated[Optional[str], typer.Option(help="Only articles published at or after this ISO-8601 time (naive = UTC).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Articles per scoring and upsert batch.")] = 256,
    force: Annotated[bool, typer.Option(help="Also re-score articles the production version scored already.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP + " The counts.")] = False,
) -> None:
    """Re-score the stored history with the production model and fill the entity verdicts of
    articles scored before them (what the rescore_history DAG runs). Reruns continue where
    a stopped run left off."""
    from datetime import datetime

    from newspulse.models.sentiment.predict import rescore_store
    from newspulse.schema import to_utc
    from newspulse.wiring import open_store

    try:
        start = to_utc(datetime.fromisoformat(since)) if since else None
    except ValueError as err:
        raise BadInput(f"--since: {err}") from None
    settings = _settings()
    store = open_store(settings)
    try:
        counts = rescore_store(settings, store, since=start, batch_size=batch_size, force=force, progress=not as_json)
    finally:
        store.close()
    if as_json:
        echo_json(counts)
    else:
        typer.echo(
            f"{counts['model_version']}: {counts['rescored']} re-scored, {counts['entities_filled']} given entity verdicts, "
            f"{counts['skipped']} already current, {counts['failed']} refused by the store, of {counts['seen']} articles"
        )
    if counts["failed"]:
        raise typer.Exit(1)


@app.command("ensure")
def ensure() -> None:
    """Fine-tune and promote the default classifier unless the registry has a production model."""
    from newspulse.models.sentiment.registry import Registry

    settings = _settings()
    ensure_model(settings)
    if Registry(settings.model_registry).production_version() is None:
        typer.echo(f"newspulse model ensure: no model passed the promotion gate in {settings.model_registry}", err=True)
        raise typer.Exit(1)


def ensure_model(settings: Settings) -> None:
    """Fine-tune and promote the default classifier when the registry has no production model."""
    from newspulse.models.sentiment.registry import Registry

    registry = Registry(settings.model_registry)
    version = registry.production_version()
    if version:
        typer.echo(f"Using production model {version} from {settings.model_registry}", err=True)
        return
    from newspulse.models.backends.onnx import require_torch
    from newspulse.models.sentiment.config import TrainConfig
    from newspulse.models.sentiment.train import train
    from newspulse.wiring import feedback_source

    require_torch(f"training the default classifier (no production model in {settings.model_registry})")
    typer.echo(f"No production model in {settings.model_registry}: fine-tuning the default classifier (a few minutes on CPU)…", err=True)
    card = train(TrainConfig.production(settings, feedback=feedback_source(settings)))
    typer.echo(f"Trained {card.version}", err=True)


@app.command("evaluate-topics")
def evaluate_topics(
    data: Annotated[Path, typer.Option("--data", help="Labelled CSV with columns text,labels (labels ;-separated); other columns are ignored.")],
    model_dir: Annotated[Optional[Path], typer.Option("--model", help="Topic-model folder (default: the bundled one, models/topics/bundled).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Micro/macro F1 and per-category P/R/F1 of the topic classifier on a labelled CSV."""
    from newspulse.models.topics.model import DEFAULT_TOPIC_MODEL, TopicModel, TopicModelError
    from newspulse.models.topics.evaluate import multilabel_metrics, read_topics_csv

    frame = read_topics_csv(data)  # DataError: exit 2
    try:
        model = TopicModel.load(model_dir or DEFAULT_TOPIC_MODEL)
    except TopicModelError as err:  # --model names a folder that holds no topic model
        raise BadInput(str(err)) from None
    result = {"data": str(data), **multilabel_metrics(frame["labels"].tolist(), model.predict(frame["text"].tolist())), "model_version": model.version}
    if as_json:
        echo_json(result)
        return
    typer.echo(f"topic model {result['model_version']} on {data} (n={result['n']})")
    typer.echo(f"  micro-F1 {result['micro_f1']:.4f} (P {result['micro_precision']:.4f}, R {result['micro_recall']:.4f})  macro-F1 {result['macro_f1']:.4f} over {result['n_classes']} categories")
    for category, m in result["per_class"].items():
        typer.echo(f"  {category:16} P {m['precision']:.3f}  R {m['recall']:.3f}  F1 {m['f1']:.3f}  n={m['support']}")


@app.command("train-topics")
def train_topics(
    out: Annotated[Optional[Path], typer.Option(help="Folder to write the model to (default: the bundled one, models/topics/bundled).")] = None,
    folds: Annotated[int, typer.Option(min=0, help="Cross-validation folds over train + dev to measure (0: skip the measurement).")] = 5,
    baseline: Annotated[bool, typer.Option(help="Also measure the TF-IDF + linear SVM baseline on the same rows and folds.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP + " The model card.")] = False,
) -> None:
    """Train the topic classifier on data/topics (Reuters-21578 ModApte train + dev), after measuring
    it and the SVM baseline on dev and on k-fold CV over train + dev; writes weights, thresholds and card."""
    from newspulse.models.topics.model import DEFAULT_TOPIC_MODEL
    from newspulse.models.topics.train import TopicTrainConfig
    from newspulse.models.topics.train import train_topics as run_training

    _settings()
    model = run_training(TopicTrainConfig(), out=out or DEFAULT_TOPIC_MODEL, folds=folds, baseline=baseline, progress=lambda line: typer.echo(line, err=True))  # DataError: exit 2
    if as_json:
        echo_json(model.card)
        return
    typer.echo(f"saved topic model {model.version} to {out or DEFAULT_TOPIC_MODEL}")
    for name, m in model.card["metrics"].items():
        cv = m["cv"]
        typer.echo(f"  {name:13} dev micro-F1 {m['dev']['micro_f1']:.4f} macro-F1 {m['dev']['macro_f1']:.4f} | "
                   f"{cv['folds']}-fold CV micro-F1 {cv['micro_f1_mean']:.4f} ± {cv['micro_f1_std']:.4f} macro-F1 {cv['macro_f1_mean']:.4f} ± {cv['macro_f1_std']:.4f}")
