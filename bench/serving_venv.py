"""The serving install without torch, for real: a fresh virtual environment made from
docker/requirements-serve.txt (``--no-deps``, as the processor image installs it) plus the
NewsPulse wheel, its installed size beside what the training stack would add, and a check that
it stores a scored, summarised story on ONNX Runtime.

tests/test_packaging.py::test_serving_needs_no_torch checks the same code path in the test
environment with torch hidden; building the environment takes minutes (the downloads and ~1 GB
of files), so it is this benchmark, not a test. Writes bench/results/serving_venv.json.

    .venv/bin/python bench/serving_venv.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "tests"))


def size_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20, 1)


def training_stack_mb(python: Path) -> dict[str, float]:
    """What `pip install newspulse[train]` would add to the serving environment (the CPU build of
    torch, as the Makefile installs it), measured as the installed size of those distributions in
    the environment this script runs in."""
    report = subprocess.run(
        [str(python), "-m", "pip", "install", "--dry-run", "--quiet", "--report", "-", "-c", str(ROOT / "constraints.txt"), "torch", "onnx", "sentence-transformers"],
        capture_output=True, text=True, check=True, timeout=900,
    )
    names = [item["metadata"]["name"] for item in json.loads(report.stdout)["install"]]
    import importlib.metadata as md

    sizes = {}
    for name in names:
        dist = md.distribution(name)
        sizes[name] = round(sum((Path(dist.locate_file(f)).stat().st_size for f in dist.files or [] if Path(dist.locate_file(f)).is_file())) / 2**20, 1)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="Build the environment here and keep it.")
    args = parser.parse_args()
    from test_model_predict import register_random_model
    from test_packaging import SERVE_ONE_STORY

    from newspulse.models.sentiment.predict import SentimentModel
    from newspulse.models.sentiment.registry import Registry
    from newspulse.models.summarize import build_summarizer
    from newspulse.settings import load_settings

    work = Path(tempfile.mkdtemp(prefix="serving-venv-"))
    env_dir = args.keep or work / "venv"
    try:
        started = time.monotonic()
        venv.create(env_dir, with_pip=True)
        python = env_dir / "bin" / "python"
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "-r", str(ROOT / "docker" / "requirements-serve.txt")], check=True, timeout=1800)
        # Built from a copy of what the wheel is made of: a setuptools build leaves build/ behind.
        source = work / "source"
        source.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE", "NOTICE"):
            shutil.copy2(ROOT / name, source / name)
        for name in ("newspulse", "models", "ingest", "dashboard", "data"):
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        wheels = work / "wheels"
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)], check=True, cwd=work, timeout=900)
        (wheel,) = wheels.glob("newspulse-*.whl")
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, timeout=900)
        build_s = time.monotonic() - started
        site = next((env_dir / "lib").glob("python3*/site-packages"))
        serving_mb = size_mb(env_dir)

        # The exports a training installation leaves behind (here: this environment, with torch).
        registry = Registry(work / "registry")
        register_random_model(registry, "v1", seed=1)
        registry.promote("v1")
        SentimentModel.from_dir(registry.version_dir("v1"), device="cpu", quantize="auto", backend="onnxruntime")
        build_summarizer(load_settings(device="cpu", onnx_cache=work / "onnx-cache"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSPULSE_", "PYTHON"))} | {
            "NEWSPULSE_MODEL_REGISTRY": str(registry.path),
            "NEWSPULSE_STORE_URL": f"sqlite:///{work / 'np.db'}",
            "NEWSPULSE_ONNX_CACHE": str(work / "onnx-cache"),
        }
        done = subprocess.run([str(python), "-c", SERVE_ONE_STORY], env=env, cwd=work, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise SystemExit(f"the serving environment failed the check:\n{done.stderr[-3000:]}")
        check = json.loads(done.stdout.strip().splitlines()[-1])
        probe = "import importlib.util; print(importlib.util.find_spec('torch') is not None)"
        check["torch_importable"] = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "True"
        training = training_stack_mb(python)
        result = {
            "serving_venv_mb": serving_mb,
            "largest_mb": dict(sorted(((p.name, size_mb(p)) for p in site.iterdir() if p.is_dir()), key=lambda kv: -kv[1])[:8]),
            "training_stack_mb": training,
            "with_training_stack_mb": round(serving_mb + sum(training.values()), 1),
            "check": check,
            "build_s": round(build_s, 1),
            "conditions": "CPU build of torch 2.13.0 as the Makefile installs it; PyPI's default Linux torch wheel adds the CUDA libraries (several GB more); pip caches as found on the machine",
        }
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "serving_venv.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
