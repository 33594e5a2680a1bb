#!/usr/bin/env bash
# The whole GPU benchmark on a lent device machine, in one command (see BENCHMARKS.md, "GPU run").
#
# Prepare once, here:   python bench/prepare_device.py          # builds .carry/ (wheels, MiniLM)
# Run there:            bash bench/device_run.sh                 # with .carry carried; $OUT set
#
# Installs the carried wheels and this checkout (editable, no dependencies: the image has torch
# and transformers), points NEWSPULSE_BASE_MODEL at the carried MiniLM folder, runs bench/gpu.py
# under a time limit and leaves gpu.json, the log and nvidia-smi's view in $OUT. gpu.json is
# rewritten after every stage, so a run stopped at the limit still returns what it measured.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-var/device-out}
CARRY=${CARRY:-.carry}
LIMIT_S=${LIMIT_S:-420}
mkdir -p "$OUT"
exec > >(tee "$OUT/device_run.log") 2>&1

PY=${PYTHON:-python3}
echo "== $(date -u +%FT%TZ) device run in $PWD"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$OUT/nvidia-smi.csv" 2>&1 || true
cat "$OUT/nvidia-smi.csv"

# The wheels are for the device's Python 3.12; a host that has the packages skips them.
if ! "$PY" -c "import pydantic_settings" 2>/dev/null && ls "$CARRY"/wheels/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$CARRY"/wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# The folders install as newspulse.models, newspulse.ingest, … (package-dir): an editable
# install makes those names import from this checkout. Where it cannot be built (an image with
# an older setuptools), a tree of links gives the same import names.
if ! "$PY" -m pip install -q --no-deps --no-build-isolation --no-cache-dir -e .; then
  echo "editable install failed: linking the package tree under /tmp/newspulse-src instead"
  rm -rf /tmp/newspulse-src && mkdir -p /tmp/newspulse-src/newspulse
  for entry in newspulse/*; do ln -s "$PWD/$entry" /tmp/newspulse-src/newspulse/; done
  for sub in models ingest dashboard data; do ln -s "$PWD/$sub" "/tmp/newspulse-src/newspulse/$sub"; done
  export PYTHONPATH=/tmp/newspulse-src${PYTHONPATH:+:$PYTHONPATH}
fi
export NEWSPULSE_BASE_MODEL=${NEWSPULSE_BASE_MODEL:-$PWD/$CARRY/minilm}
export NEWSPULSE_MODEL_REGISTRY=${NEWSPULSE_MODEL_REGISTRY:-/tmp/newspulse-registry}  # empty: base encoder
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
"$PY" -c "import torch, transformers, newspulse.models.backends.cuda_batched as b; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available(), b.__file__)" || exit 1

timeout "$LIMIT_S" "$PY" bench/gpu.py --out "$OUT/gpu.json" "$@"
rc=$?
echo "== bench/gpu.py exit $rc (124 = stopped at ${LIMIT_S}s; gpu.json holds the stages done)"
# Back here: copy $OUT/gpu.json to bench/results/gpu.json and run `make report`.
exit $rc
