"""Training pieces: data validation, leakage guard, class weights, batching, and a full
fit → register → evaluate → gate cycle on a tiny random base model (seconds)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from newspulse.models.sentiment.data import DataError, read_labelled_csv
from newspulse.models.sentiment.evaluate import evaluate_candidate
from newspulse.models.sentiment.registry import Registry, gate_and_promote
from newspulse.models.sentiment.config import TrainConfig, config_from_params
from newspulse.models.sentiment.train import WarmupLinearDecay, _batches, class_weights, epoch_rows, fit_and_register, length_bucketed_batches, load_training_frame, train

ROOT = Path(__file__).resolve().parent.parent


def _csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> str:
    from newspulse.models.sentiment.bench import random_bert_classifier
    from newspulse.models.sentiment.data import packaged_base_model

    out = tmp_path_factory.mktemp("tiny-base")
    model, tokenizer = random_bert_classifier(packaged_base_model(), hidden_size=32, num_layers=2, num_heads=2)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("data")
    pb = pd.read_csv(ROOT / "data/phrasebank/train.csv")
    dev = pd.read_csv(ROOT / "data/phrasebank/dev.csv")
    pb.head(60)[["text", "label"]].to_csv(d / "train.csv", index=False)
    dev.head(30).to_csv(d / "dev.csv", index=False)
    return {"train": d / "train.csv", "dev": d / "dev.csv"}


def test_bad_files_are_rejected_with_the_line(tmp_path):
    with pytest.raises(DataError, match="missing column"):
        read_labelled_csv(_csv_raw(tmp_path / "a.csv", "sentence,label\nx,positive\n"))
    with pytest.raises(DataError, match=r"outside .*lines \[3\]"):
        read_labelled_csv(_csv_raw(tmp_path / "b.csv", "text,label\nfine,positive\nodd,great\n"))
    with pytest.raises(DataError, match="empty text"):
        read_labelled_csv(_csv_raw(tmp_path / "c.csv", "text,label\n ,neutral\n"))
    with pytest.raises(DataError, match="no such file"):
        read_labelled_csv(tmp_path / "missing.csv")
    df = read_labelled_csv(_csv_raw(tmp_path / "d.csv", "text,label\nup,POS\ndown,Negative\n"))
    assert df["label"].tolist() == ["positive", "negative"] and df["agreement"].isna().all()


def _csv_raw(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_training_frame_drops_dev_rows_duplicates_and_subsamples_by_label(tmp_path):
    rows = [(f"neutral sentence {i}", "neutral") for i in range(60)] + [(f"good {i}", "positive") for i in range(30)] + [(f"bad {i}", "negative") for i in range(10)]
    a = _csv(tmp_path / "a.csv", rows)
    b = _csv(tmp_path / "b.csv", [("good 0", "negative")])  # later file (feedback) wins
    df = load_training_frame([a, b], holdout_texts={"bad 1"}, max_rows=None, seed=1)
    assert len(df) == 99 and "bad 1" not in set(df["text"])
    assert df.loc[df["text"] == "good 0", "label"].item() == "negative"
    sub = load_training_frame([a], holdout_texts=set(), max_rows=50, seed=1)
    assert sub["label"].value_counts().to_dict() == {"neutral": 30, "positive": 15, "negative": 5}
    assert sub.equals(load_training_frame([a], holdout_texts=set(), max_rows=50, seed=1))  # seeded


def test_class_weights():
    counts = {"negative": 1, "neutral": 2, "positive": 1}
    assert class_weights(counts, "balanced") == pytest.approx([4 / 3, 2 / 3, 4 / 3])
    assert class_weights(counts, "sqrt") == pytest.approx([np.sqrt(4 / 3), np.sqrt(2 / 3), np.sqrt(4 / 3)])
    assert class_weights(counts, "none") == [1.0, 1.0, 1.0]
    assert class_weights({"negative": 0, "neutral": 3, "positive": 1}, "balanced")[0] == 0.0


def test_length_bucketed_batches_cover_every_row_once():
    lengths = list(np.random.default_rng(0).integers(3, 60, size=1000))
    batches = length_bucketed_batches(lengths, 32, np.random.default_rng(1))
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1000)) and max(len(b) for b in batches) == 32
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches])
    assert spread < 10  # rows of similar length share a batch: little padding


def test_entity_share_trains_every_story_row_each_epoch_and_a_fresh_share_of_the_entity_rows(tmp_path):
    """entity_share 0.5: each epoch holds every story row once and half of the entity rows,
    another half the next epoch, the same for a seed; 1.0 is the plain epoch, drawing nothing."""
    entity = np.arange(10, 30)  # rows 10..29 are entity-marked, 0..9 and 30..39 story rows
    lengths = [5 + i % 7 for i in range(40)]
    cfg = TrainConfig(registry=tmp_path, epochs=2, batch_size=4, entity_share=0.5)
    epochs: dict[int, list[int]] = {}
    for epoch, _, _, rows in _batches(lengths, cfg, np.random.default_rng(1), 0, 0, entity):
        epochs.setdefault(epoch, []).extend(rows)
    story = set(range(40)) - set(entity.tolist())
    for rows in epochs.values():
        assert len(rows) == len(set(rows)) == 30 and story <= set(rows) and len(set(rows) & set(entity.tolist())) == 10
    assert set(epochs[0]) != set(epochs[1]), "each epoch draws its own entity rows"
    again = [r for _, _, _, rows in _batches(lengths, cfg, np.random.default_rng(1), 0, 0, entity) for r in rows]
    assert again == epochs[0] + epochs[1]
    plain = TrainConfig(registry=tmp_path, epochs=1, batch_size=4)
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    assert [r for *_, rows in _batches(lengths, plain, rng_a, 0, 0, entity) for r in rows] == [r for b in length_bucketed_batches(lengths, 4, rng_b) for r in b]
    assert epoch_rows(40, entity, 1.0, np.random.default_rng(0)).tolist() == list(range(40))
    with pytest.raises(ValueError):
        TrainConfig(registry=tmp_path, entity_share=0.0)


def test_lr_schedule_warms_up_then_decays_to_zero_at_a_movable_horizon():
    import torch

    schedule = WarmupLinearDecay(warmup=4, horizon=20)
    assert [schedule(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert schedule(12) == pytest.approx(0.5) and schedule(20) == 0.0 and schedule(25) == 0.0
    schedule.end_within(step=10, seconds_left=3.0, seconds_per_step=1.0, planned=20)  # the budget ends at step 13
    assert schedule.horizon == 13 and schedule(13) == 0.0
    schedule.end_within(step=2, seconds_left=0.0, seconds_per_step=1.0, planned=20)
    assert schedule.horizon == 5, "never before warm-up ends"
    schedule.end_within(step=10, seconds_left=1e6, seconds_per_step=1.0, planned=20)
    assert schedule.horizon == 20, "never after the planned steps"
    # torch's LambdaLR keeps the horizon in its state: a checkpoint restores a moved one
    sched = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), WarmupLinearDecay(warmup=4, horizon=7))
    restored = WarmupLinearDecay(warmup=4, horizon=20)
    torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), restored).load_state_dict(sched.state_dict())
    assert restored.horizon == 7


def test_config_from_params_keeps_defaults_for_empty_values(tmp_path):
    from newspulse.settings import load_settings

    settings = load_settings(model_registry=tmp_path)
    cfg = config_from_params({"epochs": None, "base_model": "", "data_sources": [], "max_train_rows": 50, "include_feedback": False}, settings)
    assert cfg.epochs == TrainConfig(registry=tmp_path).epochs and cfg.max_train_rows == 50 and not cfg.include_feedback
    assert cfg.registry == tmp_path and len(cfg.train_files) == 3 and cfg.eval_files


def test_tier_accurate_selects_mpnet_with_its_own_recipe_and_says_how_to_fetch_it(tmp_path):
    """``--tier accurate`` / the DAG's ``tier`` param: the accurate base model, its own learning
    rate and steps, no distillation, a card of tier accurate; without the base model, one line
    naming the fetch command. The fast tier's defaults stay as they are."""
    from newspulse.errors import BadInput
    from newspulse.models.sentiment.config import ACCURATE_LEARNING_RATE, ACCURATE_STEPS, DEFAULT_STEPS
    from newspulse.settings import load_settings

    with pytest.raises(BadInput, match="newspulse.models.sentiment.teacher fetch"):
        config_from_params({"tier": "accurate"}, load_settings(model_registry=tmp_path))
    settings = load_settings(model_registry=tmp_path, accurate_base_model=str(tmp_path / "all-mpnet-base-v2"))
    cfg = config_from_params({"tier": "accurate", "include_feedback": False}, settings)
    assert (cfg.tier, cfg.base_model, cfg.max_steps, cfg.learning_rate, cfg.soft_labels) == ("accurate", str(tmp_path / "all-mpnet-base-v2"), ACCURATE_STEPS, ACCURATE_LEARNING_RATE, None)
    assert cfg.params()["tier"] == "accurate" and not cfg.include_feedback
    fast = config_from_params({}, settings)
    assert (fast.tier, fast.base_model, fast.max_steps) == ("fast", "", DEFAULT_STEPS)
    assert (cfg.cpu_precision, fast.cpu_precision) == ("auto", "fp32")
    assert config_from_params({"tier": "accurate", "cpu_precision": "fp32"}, settings).cpu_precision == "fp32"


def test_cpu_precision_takes_bf16_only_where_the_cpu_has_it(tmp_path, monkeypatch):
    """``auto`` is bf16 on a CPU with native bf16 and fp32 elsewhere; an explicit ``bf16`` on a
    CPU that would emulate it is refused, naming the alternatives; ``fp32`` is always fp32."""
    import torch

    from newspulse.errors import BadInput
    from newspulse.models.sentiment.train import training_precision

    def cfg(precision: str) -> TrainConfig:
        return TrainConfig(registry=tmp_path, cpu_precision=precision)

    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: False, raising=False)
    assert [training_precision(cfg(p), "cpu") for p in ("fp32", "auto")] == ["fp32", "fp32"]
    with pytest.raises(BadInput, match="native bf16.*fp32 or auto"):
        training_precision(cfg("bf16"), "cpu")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert [training_precision(cfg(p), "cpu") for p in ("fp32", "auto", "bf16")] == ["fp32", "bf16", "bf16"]


def test_fit_register_evaluate_gate_on_a_tiny_model(tmp_path, tiny_base, tiny_data):
    reg = Registry(tmp_path / "reg")
    cfg = TrainConfig(registry=reg.path, base_model=tiny_base, train_files=[tiny_data["train"]], dev_files=[tiny_data["dev"]], epochs=2, batch_size=16, max_length=32, learning_rate=1e-3, progress=False, f1_floor=0.0)
    card = fit_and_register(cfg, cfg.train_files)
    assert reg.list_versions() == [card.version] and reg.production_version() is None
    assert not list(reg.path.glob(".*.partial"))
    assert card.data_files[0].rows == 60 and len(card.data_files[0].sha256) == 64
    assert card.params["epochs"] == 2 and card.base_model == tiny_base and card.code_version
    assert sum(card.label_distribution["train"].values()) == 60
    assert card.training["steps"] >= 1 and card.training["history"]
    card = evaluate_candidate(reg, card.version, cfg.dev_files, cfg.gate_files)
    dev = card.metrics["dev"]
    assert dev["n"] == 30 and "lexicon" in dev and "by_agreement" in dev and card.metrics["eval"]["macro_f1"] == dev["macro_f1"]
    assert 0.0 <= card.quantization["agreement"] <= 1.0 and card.eval_split and card.eval_files
    assert {"dev_macro_f1_int8", "dev_macro_f1_fp32", "recommended"} <= set(card.quantization)
    # both ONNX exports are built at training time: a read-only registry serves either precision
    assert sorted(p.name.rsplit("-", 1)[1] for p in (reg.version_dir(card.version) / "onnx").glob("*.onnx")) == ["fp32.onnx", "int8.onnx"]
    decision = gate_and_promote(reg, card.version, floor=0.0)
    assert decision.promote and reg.production_version() == card.version
    assert reg.card(card.version).gate.promote  # the decision is kept in the card
    # a candidate that cannot reach the floor is registered but never promoted
    worse = train(TrainConfig(registry=reg.path, base_model=tiny_base, train_files=[tiny_data["train"]], dev_files=[tiny_data["dev"]], epochs=1, max_length=32, progress=False, f1_floor=0.99, quantize_check=False))
    assert not worse.gate.promote and "floor" in worse.gate.reason
    assert reg.production_version() == card.version and len(reg.list_versions()) == 2


def test_a_failed_run_never_touches_production(tmp_path, tiny_base, tiny_data):
    reg = Registry(tmp_path / "reg")
    bad = _csv_raw(tmp_path / "bad.csv", "text,label\nsomething,maybe\n")
    with pytest.raises(DataError):
        train(TrainConfig(registry=reg.path, base_model=tiny_base, train_files=[tiny_data["train"], bad], dev_files=[tiny_data["dev"]], progress=False))
    assert reg.list_versions() == [] and reg.production_version() is None


def test_time_budget_stops_training_and_keeps_the_best_checkpoint(tmp_path, tiny_base, tiny_data):
    reg = Registry(tmp_path / "reg")
    cfg = TrainConfig(registry=reg.path, base_model=tiny_base, train_files=[tiny_data["train"]], dev_files=[tiny_data["dev"]], epochs=50, batch_size=4, max_length=32, progress=False, time_budget_s=0.5, patience=10**6)  # only the budget can stop it
    card = fit_and_register(cfg, cfg.train_files)
    assert card.training["stopped_early"] == "time budget"
    assert card.training["steps"] < card.training["planned_steps"] and card.training["history"]
    assert reg.list_versions() == [card.version]


def test_analyst_feedback_is_snapshotted_and_pinned(np_env, tiny_data):
    from newspulse.models.sentiment.train import prepare_data
    from newspulse.schema import Feedback
    from newspulse.settings import get_settings
    from newspulse.wiring import feedback_source, open_store

    settings = get_settings()
    store = open_store(settings)
    try:
        store.add_feedback(Feedback(article_id="a1", label="negative", text="Guidance cut again"))
        store.add_feedback(Feedback(article_id="a2", label="positive", text="Record orders"))
    finally:
        store.close()
    cfg = TrainConfig(registry=settings.model_registry, train_files=[tiny_data["train"]], dev_files=[tiny_data["dev"]], include_feedback=True, feedback=feedback_source(settings))
    files = prepare_data(cfg)
    assert files[0] == tiny_data["train"] and files[1].parent == settings.model_registry / "_data"
    snap = read_labelled_csv(files[1])
    assert sorted(zip(snap["text"], snap["label"])) == [("Guidance cut again", "negative"), ("Record orders", "positive")]
    assert prepare_data(cfg)[1] == files[1]  # same feedback, same pinned file


def _licensed(tmp_path: Path, folder: str, frame: pd.DataFrame, name: str) -> Path:
    """A CSV in a folder named like a bundled data set, so its licence is recognised."""
    d = tmp_path / folder
    d.mkdir(exist_ok=True)
    frame[["text", "label"]].to_csv(d / name, index=False)
    return d / name


def test_distillation_trains_on_soft_labels_and_the_card_records_it(tmp_path, tiny_base, tiny_data):
    from newspulse.models.sentiment.soft_labels import SoftLabelError, write_soft_labels

    dev = read_labelled_csv(tiny_data["dev"])
    texts = [f"Company {i} said quarterly results were in line with its forecast." for i in range(40)] + [dev["text"][0]]
    probs = np.tile(np.array([[0.2, 0.5, 0.3]], dtype=np.float32), (len(texts), 1))
    art = tmp_path / "soft" / "reuters-t1.csv.gz"
    manifest = write_soft_labels(art, texts, probs, ["reuters"] * len(texts), {"teacher": "tiny teacher", "version": "t1", "licences": {"texts": "research only"}, "commercial": False})
    reg = Registry(tmp_path / "reg")
    train_csv = _licensed(tmp_path, "phrasebank", pd.read_csv(tiny_data["train"]), "train.csv")
    cfg = TrainConfig(registry=reg.path, base_model=tiny_base, train_files=[train_csv], dev_files=[tiny_data["dev"]], epochs=1, max_length=32, progress=False, soft_labels=art, soft_labels_sha256=manifest["sha256"], distill_alpha=0.7, distill_temperature=3.0)
    card = fit_and_register(cfg, cfg.train_files)
    assert card.training["rows"] == 60 and card.training["soft_rows"] == 40  # the dev sentence is never a soft row
    assert card.training["planned_steps"] == 7  # ceil((60 + 40) / 16): soft rows are part of each epoch
    d = card.distillation
    assert d["teacher"] == "tiny teacher" and d["artifact_sha256"] == manifest["sha256"] and d["artifact_version"] == "t1"
    assert d["weights"] == {"gold_cross_entropy": 1.0, "alpha": 0.7} and d["temperature"] == 3.0
    lic = card.licences
    assert lic["train"][0]["licence"] == "CC BY-NC-SA 3.0" and lic["train"][0]["commercial"] is False
    assert lic["soft_labels"]["licences"] == {"texts": "research only"} and lic["commercial_use"] is False
    assert reg.card(card.version).distillation == d  # persisted
    # a tampered artifact stops the run before anything is registered
    art.write_bytes(art.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(SoftLabelError, match="does not match the pinned"):
        fit_and_register(cfg, cfg.train_files)
    assert reg.list_versions() == [card.version]


def test_distilling_on_gold_rows_gives_them_a_second_target(tmp_path, tiny_data):
    """``distill_rows``: "both" makes a soft label whose text is a gold training row that row's
    second target (cross-entropy + KD) and keeps the other soft rows; "gold" keeps only the
    former (no extra rows, no extra steps); "auto" follows the artifact's manifest."""
    import torch

    from newspulse.models.sentiment.soft_labels import kd_loss, write_soft_labels
    from newspulse.models.sentiment.train import _loss, load_training_set

    gold = read_labelled_csv(tiny_data["train"])["text"].tolist()
    texts = gold[:5] + [f"Company {i} said quarterly results were in line with its forecast." for i in range(3)]
    probs = np.tile(np.array([[0.1, 0.2, 0.7]], dtype=np.float32), (len(texts), 1))
    art = tmp_path / "soft.csv.gz"
    write_soft_labels(art, texts, probs, ["train"] * 5 + ["reuters"] * 3, {"teacher": "t"})
    base = dict(registry=tmp_path / "reg", train_files=[tiny_data["train"]], dev_files=[tiny_data["dev"]], soft_labels=art)
    dropped = load_training_set(TrainConfig(**base), [tiny_data["train"]])
    assert len(dropped.soft.texts) == 3 and not dropped.teacher[: len(dropped.frame)].any()  # default: the gold label wins
    data = load_training_set(TrainConfig(**base, distill_rows="both"), [tiny_data["train"]])
    assert len(data.frame) == 60 and len(data.soft.texts) == 3 and len(data.texts) == 63
    taught = [data.texts[i] for i in np.flatnonzero(data.teacher[:60].sum(axis=1))]
    assert sorted(taught) == sorted(gold[:5]) and np.allclose(data.teacher[60:], probs[5:], atol=1e-5)
    only_gold = load_training_set(TrainConfig(**base, distill_rows="gold"), [tiny_data["train"]])
    assert only_gold.soft.texts == [] and len(only_gold.texts) == 60 and only_gold.taught_gold_rows == 5
    # an artifact of training rows says so in its manifest, and "auto" then distils on gold rows only
    training_art = tmp_path / "train-soft.csv.gz"
    write_soft_labels(training_art, texts, probs, ["train"] * len(texts), {"teacher": "t", "kind": "training-rows"})
    auto = load_training_set(TrainConfig(**base | {"soft_labels": training_art}), [tiny_data["train"]])
    assert (auto.distill_rows, auto.taught_gold_rows, len(auto.texts)) == ("gold", 5, 60)
    assert load_training_set(TrainConfig(**base), [tiny_data["train"]]).distill_rows == "unlabelled"
    # the loss adds the KD term for the taught gold rows, and only for rows with a teacher
    cfg = TrainConfig(**base, distill_rows="both", distill_alpha=0.5, distill_temperature=2.0)
    logits = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]])
    y, teacher = torch.tensor([0, 1]), torch.tensor([[0.1, 0.2, 0.7], [0.0, 0.0, 0.0]])
    ce = torch.nn.CrossEntropyLoss()
    expected = ce(logits, y) + 0.5 * kd_loss(logits[:1], teacher[:1], 2.0)
    assert torch.isclose(_loss(cfg, ce, logits, y, teacher), expected)
    assert torch.isclose(_loss(cfg, ce, logits, y, torch.zeros_like(teacher)), ce(logits, y))


def test_training_without_phrasebank_for_commercial_use(np_env, tmp_path, tiny_base):
    """`newspulse model train --train <Twitter CSV> --commercial-only`: no PhraseBank anywhere,
    and the card says every input allows commercial use."""
    from typer.testing import CliRunner

    from newspulse.models.sentiment.data import PHRASEBANK_TRAIN, SENTFIN_TRAIN, TWITTER_DEV, TWITTER_TRAIN
    from newspulse.models.sentiment.config import TrainConfig
    from newspulse.cli import app
    from newspulse.settings import get_settings

    cfg = TrainConfig.production(get_settings(), commercial_only=True)
    assert cfg.train_files == [TWITTER_TRAIN, SENTFIN_TRAIN] and cfg.dev_files == [TWITTER_DEV] and cfg.gate_files == [TWITTER_DEV]
    tw_train = _licensed(tmp_path, "twitter_financial_news", pd.read_csv(TWITTER_TRAIN).head(60), "train.csv")
    tw_dev = _licensed(tmp_path, "twitter_financial_news", pd.read_csv(TWITTER_DEV).head(30), "dev.csv")
    args = ["model", "train", "--base-model", tiny_base, "--train", str(tw_train), "--dev", str(tw_dev), "--eval", str(tw_dev), "--no-feedback", "--commercial-only", "--epochs", "1", "--max-length", "32", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    card = json.loads(result.stdout.strip().splitlines()[-1])
    assert [f["path"] for f in card["data_files"]] == [str(tw_train)]
    lic = card["licences"]
    assert lic["commercial_use"] is True and {r["licence"] for r in lic["train"] + lic["dev"] + lic["eval"]} == {"MIT"}
    # PhraseBank is refused by name in a commercial-only run
    bad = CliRunner().invoke(app, [*args[:-1], "--train", str(PHRASEBANK_TRAIN)])
    assert bad.exit_code == 2 and "CC BY-NC-SA 3.0" in bad.output and "phrasebank" in bad.output


def test_retraining_benchmark_times_a_real_run_into_a_scratch_registry(np_env, tiny_base, tiny_data, tmp_path):
    """bench/retrain.py runs `newspulse model train` end to end in a temporary registry and store
    (never the configured one) and reports the wall time next to what the card says."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("bench_retrain", ROOT / "bench" / "retrain.py")
    retrain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(retrain)
    out = tmp_path / "retrain.json"
    args = ["--base-model", tiny_base, "--train", str(tiny_data["train"]), "--dev", str(tiny_data["dev"]), "--eval", str(tiny_data["dev"]), "--epochs", "1", "--max-length", "32"]
    assert retrain.main(["--out", str(out), "--note", "test", "--", *args]) == 0
    result = json.loads(out.read_text())
    assert result["command"] == "newspulse model train " + " ".join(args)
    assert 0 < result["fine_tuning_s"] < result["wall_s"] and result["met"] == (result["wall_s"] <= 600)
    assert result["steps"] >= 1 and 0.0 <= result["dev_macro_f1"] <= 1.0 and result["rows"] == 60
    assert not (np_env / "registry").exists()  # the configured registry was never touched


def test_keep_last_registers_the_final_weights_not_the_best_dev_checkpoint(tmp_path, tiny_base, tiny_data):
    """Fixed-compute comparisons (experiments/distill_cv.py) keep the last step: a small dev slice
    choosing among checkpoints would otherwise decide the result."""
    from safetensors.torch import load_file

    common = dict(base_model=tiny_base, train_files=[tiny_data["train"]], dev_files=[tiny_data["dev"]], epochs=8, batch_size=4, max_length=32, evals_per_epoch=2, patience=10**6, progress=False, promote=False, quantize_check=False)
    best = fit_and_register(TrainConfig(registry=tmp_path / "best", **common))
    last = fit_and_register(TrainConfig(registry=tmp_path / "last", keep="last", **common))
    assert best.training["history"] == last.training["history"]  # one seeded run, two choices
    assert best.training["best_step"] < best.training["steps"]  # the seed's dev curve peaks early
    assert best.training["kept_step"] == best.training["best_step"] and last.training["kept_step"] == last.training["steps"]
    weights = {name: load_file(Registry(tmp_path / name).version_dir(card.version) / "model.safetensors") for name, card in (("best", best), ("last", last))}
    assert any(not weights["best"][k].equal(weights["last"][k]) for k in weights["best"])


def test_default_run_distils_from_the_pinned_bundled_soft_labels(np_env, tmp_path, tiny_base, tiny_data):
    """`make demo`, `newspulse model train` and the DAG distil from data/soft_labels/train-v5 by
    default (hash pinned in code), on the gold rows it labels; --no-distill / distill=false and
    commercial-only runs do not, and an explicit artifact replaces it."""
    from typer.testing import CliRunner

    from newspulse.cli import app
    from newspulse.models.sentiment.soft_labels import load_soft_labels
    from newspulse.models.sentiment.config import DEFAULT_SOFT_LABELS, DEFAULT_SOFT_LABELS_SHA256, TrainConfig, config_from_params
    from newspulse.settings import get_settings

    settings = get_settings()
    assert load_soft_labels(DEFAULT_SOFT_LABELS, DEFAULT_SOFT_LABELS_SHA256).manifest["kind"] == "training-rows"
    cfg = TrainConfig.production(settings)
    assert (cfg.soft_labels, cfg.soft_labels_sha256, cfg.distill_rows) == (DEFAULT_SOFT_LABELS, DEFAULT_SOFT_LABELS_SHA256, "auto")
    assert TrainConfig.production(settings, distill=False).soft_labels is None
    assert TrainConfig.production(settings, commercial_only=True).soft_labels is None  # its teacher learned from PhraseBank
    other = tmp_path / "other.csv.gz"
    assert (TrainConfig.production(settings, soft_labels=other).soft_labels, TrainConfig.production(settings, soft_labels=other).soft_labels_sha256) == (other, "")
    assert config_from_params({"distill": False}, settings).soft_labels is None and config_from_params({}, settings).soft_labels == DEFAULT_SOFT_LABELS

    args = ["model", "train", "--base-model", tiny_base, "--train", str(tiny_data["train"]), "--dev", str(tiny_data["dev"]), "--eval", str(tiny_data["dev"]), "--no-feedback", "--epochs", "1", "--max-length", "32", "--no-promote", "--json"]
    cards = {}
    for flag in ("--distill", "--no-distill"):
        result = CliRunner().invoke(app, [*args, flag])
        assert result.exit_code == 0, result.output
        cards[flag] = json.loads(result.stdout.strip().splitlines()[-1])
    distilled = cards["--distill"]["distillation"]
    # tiny_data's rows are bundled PhraseBank training rows, so the teacher labels each of them
    assert distilled["artifact_sha256"] == DEFAULT_SOFT_LABELS_SHA256 and distilled["rows"] == "gold" and distilled["gold_rows_taught"] == 60
    assert distilled["soft_rows_added"] == 0 and cards["--distill"]["training"]["soft_rows"] == 0  # no extra rows, no extra steps
    assert cards["--distill"]["training"]["steps"] == cards["--no-distill"]["training"]["steps"]
    assert cards["--no-distill"]["distillation"] == {}


def test_the_fixed_recipe_gives_the_same_weights_for_a_seed_on_a_busy_or_an_idle_machine(tmp_path, tiny_base, tiny_data, monkeypatch):
    """Issue 26: the default retraining is a step count, not a wall clock. A run whose every
    step takes ten times longer (a loaded machine, simulated by a slow clock) trains the same
    steps and registers bit-identical weights; a keep="last" run never stops early on dev."""
    import newspulse.models.sentiment.train as train_module
    from safetensors.torch import load_file

    common = dict(base_model=tiny_base, train_files=[tiny_data["train"]], dev_files=[tiny_data["dev"]], epochs=50, max_steps=12, keep="last", batch_size=4, max_length=32, evals_per_epoch=4, patience=1, progress=False, promote=False, quantize_check=False)
    idle = fit_and_register(TrainConfig(registry=tmp_path / "idle", **common))
    real = time.monotonic
    started = real()
    monkeypatch.setattr(train_module.time, "monotonic", lambda: started + (real() - started) * 10)
    busy = fit_and_register(TrainConfig(registry=tmp_path / "busy", **common))
    assert idle.training["steps"] == busy.training["steps"] == 12 and not idle.training["stopped_early"]
    weights = [load_file(Registry(tmp_path / name).version_dir(card.version) / "model.safetensors") for name, card in (("idle", idle), ("busy", busy))]
    assert all(weights[0][k].equal(weights[1][k]) for k in weights[0])


def test_agreement_smoothing_softens_disputed_phrasebank_rows_only(tmp_path):
    """A 50 %-agreement sentence gets twice the smoothing of a 75 % one, a unanimous one and a
    row without an agreement (Twitter, SEntFiN) none; off, the loss is the plain class-weighted
    cross-entropy."""
    import torch

    from newspulse.models.sentiment.train import TrainingSet, _loss, agreement_smoothing

    frame = pd.DataFrame({"text": list("abcd"), "label": ["positive", "neutral", "negative", "neutral"], "agreement": [50, 75, 100, float("nan")]})
    data = TrainingSet(frame=frame, dev=frame, soft=None, texts=list("abcd"), labels=[2, 1, 0, 1], teacher=np.zeros((4, 3), np.float32), counts={"negative": 1, "neutral": 2, "positive": 1})
    assert agreement_smoothing(TrainConfig(registry=tmp_path), data) is None
    eps = agreement_smoothing(TrainConfig(registry=tmp_path, agreement_smoothing=0.4), data)
    assert eps.tolist() == pytest.approx([0.2, 0.1, 0.0, 0.0])

    cfg = TrainConfig(registry=tmp_path)
    ce = torch.nn.CrossEntropyLoss(weight=torch.tensor([2.0, 1.0, 1.5]))
    logits, y, none = torch.tensor([[2.0, 0.1, -1.0], [0.3, 1.2, 0.0], [-0.5, 0.2, 2.5], [0.0, 0.0, 1.0]]), torch.tensor([2, 1, 0, 1]), torch.zeros(4, 3)
    plain = _loss(cfg, ce, logits, y, none)
    assert _loss(cfg, ce, logits, y, none, torch.zeros(4)) == pytest.approx(plain.item())
    smoothed = _loss(cfg, ce, logits, y, none, torch.from_numpy(eps))
    assert smoothed.item() != pytest.approx(plain.item())
    # a confidently right prediction on a disputed row costs more once smoothed
    assert _loss(cfg, ce, torch.tensor([[-5.0, -5.0, 8.0]]), torch.tensor([2]), torch.zeros(1, 3), torch.tensor([0.5])) > _loss(cfg, ce, torch.tensor([[-5.0, -5.0, 8.0]]), torch.tensor([2]), torch.zeros(1, 3))
