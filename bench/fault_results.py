"""The results of the fault suite: one :class:`Outcome` per scenario, merged into
bench/results/faults.json. Shared by bench/faults.py and bench/faults_crawler.py (R4), which
both write the same file; kept apart from both so neither imports the other's internals."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Outcome:
    """One scenario's verdict: passed or not, its figures and parameters, how long it ran."""

    name: str
    passed: bool
    figures: dict
    params: dict
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in self.figures.items() if not isinstance(v, (dict, list)))
        return f"{self.name:<22} {'PASS' if self.passed else 'FAIL'}  {shown}  ({self.seconds:.0f}s)"


def _fmt(v: object) -> str:
    return f"{v:.1f}" if isinstance(v, float) else str(v)


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "host": platform.node()}


def write_results(path: Path, outcomes: list[Outcome], run_info: dict) -> None:
    """Merge into ``path``: scenarios run now replace their earlier results, others are kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_file = Path(tempfile.gettempdir()) / f"newspulse-faults-{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}.lock"
    with open(lock_file, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # runs side by side (R2's long outages beside R1) share the file
        _merge_results(path, outcomes, run_info)


def _merge_results(path: Path, outcomes: list[Outcome], run_info: dict) -> None:
    data = json.loads(path.read_text()) if path.exists() else {}
    kept = [s for s in data.get("scenarios", []) if s["name"] not in {o.name for o in outcomes}]
    fresh = [{"name": o.name, "passed": o.passed, "seconds": round(o.seconds, 1), "params": o.params, "figures": o.figures, **run_info} for o in outcomes]
    scenarios = sorted(kept + fresh, key=lambda s: s["name"])
    path.write_text(json.dumps({"suite": "bench/faults.py", "passed": all(s["passed"] for s in scenarios), "scenarios": scenarios}, indent=2, default=str) + "\n")


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
