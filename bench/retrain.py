"""How long the default retraining takes: `newspulse model train` with no options (what `make demo`
and the `sentiment_retrain` DAG run), timed end to end on this machine.

Issue 14's target: the default retraining stays within 10 minutes on 2 cores; issue 26's: it is
a fixed recipe (a step count, no wall clock) that takes at most 10 minutes on an idle 2-core
machine. The recipe bounds its fine-tuning by a fixed step count (``DEFAULT_STEPS``), so what
this measures is the step time and the rest around it: loading and preparing the data, the evaluation, the int8 check and both ONNX
exports, registering and the gate. The run trains into a fresh temporary registry and store
(production elsewhere is never touched) and writes bench/results/retrain.json.

    python bench/retrain.py                        # the default recipe (about 8 minutes)
    python bench/retrain.py -- --max-train-rows 64 # extra options go to `newspulse model train`
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
#: Issue 14: the default retraining, whole, within 10 minutes on 2 cores.
TARGET_S = 600.0


def run_training(extra: list[str], workdir: Path) -> tuple[float, int, str]:
    """Run `newspulse model train` into ``workdir``; (wall seconds, exit status, output tail)."""
    env = os.environ | {
        "NEWSPULSE_MODEL_REGISTRY": str(workdir / "registry"),
        "NEWSPULSE_STORE_URL": f"sqlite:///{workdir / 'newspulse.db'}",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "newspulse.cli", "model", "train", *extra], cwd=ROOT, env=env, capture_output=True, text=True)
    return time.perf_counter() - started, done.returncode, (done.stdout + done.stderr)[-2000:]


def measure(extra: list[str], note: str = "") -> dict:
    """One timed default retraining and what its model card says about it."""
    from newspulse.models.backends.onnx import cpu_count
    from newspulse.models.sentiment.registry import Registry

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="newspulse-retrain-") as tmp:
        wall, status, tail = run_training(extra, Path(tmp))
        if status != 0:
            raise SystemExit(f"newspulse model train failed (exit {status}):\n{tail}")
        registry = Registry(Path(tmp) / "registry")
        (version,) = registry.list_versions()
        card = registry.card(version)
    training = card.training
    return {
        "created_at": datetime.now(timezone.utc).isoformat(),
        "command": " ".join(["newspulse", "model", "train", *extra]),
        "wall_s": round(wall, 1),
        "target_s": TARGET_S,
        "met": wall <= TARGET_S,
        "fine_tuning_s": round(float(training.get("seconds", 0.0)), 1),
        "time_budget_s": card.params.get("time_budget_s"),
        "around_fine_tuning_s": round(wall - float(training.get("seconds", 0.0)), 1),
        "steps": training.get("steps"),
        "planned_steps": training.get("planned_steps"),
        "stopped": training.get("stopped_early"),
        "rows": training.get("rows"),
        "soft_rows": training.get("soft_rows"),
        "distillation": bool(card.distillation),
        "soft_labels": card.distillation.get("artifact_version") if card.distillation else None,
        "dev_macro_f1": round(card.metrics["dev"]["macro_f1"], 4),
        "dev_accuracy": round(card.metrics["dev"]["accuracy"], 4),
        "int8_recommended": card.quantization.get("recommended"),
        "setup": {
            "cores": cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "device": training.get("device"),
            "torch_threads": training.get("torch_threads"),
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
        "note": note,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=RESULTS / "retrain.json", help="where the JSON result goes")
    ap.add_argument("--note", default="", help="free text stored with the result (e.g. how busy the machine was)")
    ap.add_argument("train_args", nargs="*", help="options passed on to `newspulse model train` (after --)")
    args = ap.parse_args(argv)
    result = measure(args.train_args, args.note)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("wall_s", "fine_tuning_s", "met", "dev_macro_f1")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
