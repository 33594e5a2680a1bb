"""bench/gpu.py and its device preparation, on CPU: the prepared GPU run must not rot unseen.

The smoke mode runs every stage with tiny random models (no figure in it measures anything);
the carry builder's model copy must load as float32 with the packaged MiniLM's outputs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))


def test_smoke_run_writes_every_stage(tmp_path, monkeypatch):
    import gpu

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    out = tmp_path / "gpu-smoke.json"
    assert gpu.main(["--smoke", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["device"] is None and result["smoke"] is True  # report.py claims nothing from it
    assert "errors" not in result
    agreement = result["batched_vs_plain_path"]
    assert agreement["same_label"] == 1.0 and agreement["max_abs_probability_difference"] < 1e-4  # fp32 on CPU
    for key in ("headlines_per_s", "articles_per_s", "summaries_per_s", "speedup_vs_bert_base"):
        assert result[key] > 0, key
    assert {"production_bf16_batched", "bert_base_bf16_batched", "production_bf16_plain_batch256", "bert_base_bf16_plain_batch256"} <= set(result["throughput"])
    before, after = result["profile"]["before_plain_path"], result["profile"]["after_batched_path"]
    for summary in (before, after):
        assert summary["wall_s"] > 0 and summary["top_ops_by_host_time"]
    # the batched path never reads a value back per batch (one copy per micro-batch, no .item())
    assert after["syncs"]["aten::item"] == 0 and after["syncs"]["aten::_local_scalar_dense"] == 0
    assert result["cuda_graphs"] == {"skipped": "needs CUDA"}
    assert set(result["stage_seconds"]) == {"headlines", "articles", "summaries", "profile", "cuda_graphs"}


def test_carried_minilm_copy_is_fp16_on_disk_and_loads_as_float32(tmp_path):
    import numpy as np
    import torch
    from safetensors import safe_open
    from transformers import AutoModel, AutoTokenizer

    from newspulse.models.sentiment.data import packaged_base_model
    from prepare_device import copy_encoder

    source = Path(packaged_base_model())
    copy_encoder(source, tmp_path / "minilm", weights=True)
    with safe_open(str(tmp_path / "minilm/model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()} == {torch.float16}
    assert (tmp_path / "minilm/model.safetensors").stat().st_size < 0.55 * (source / "model.safetensors").stat().st_size
    copy, original = AutoModel.from_pretrained(tmp_path / "minilm"), AutoModel.from_pretrained(source)
    assert next(copy.parameters()).dtype == torch.float32
    tok = AutoTokenizer.from_pretrained(tmp_path / "minilm")
    enc = tok(["Shares of Acme rose 5% after results."], return_tensors="pt")
    with torch.inference_mode():
        a, b = copy(**enc).last_hidden_state, original(**enc).last_hidden_state
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-2)
    copy_encoder(source, tmp_path / "bare", weights=False)
    assert not (tmp_path / "bare/model.safetensors").exists() and (tmp_path / "bare/tokenizer.json").exists()
