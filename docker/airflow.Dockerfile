# syntax=docker/dockerfile:1
# Airflow 3 with NewsPulse installed, so the retraining DAGs (dags/, mounted by
# docker-compose.yml) import newspulse.models.* and write to the model registry volume.
# Build context: the repository root (docker compose does this).
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false

USER root
RUN mkdir -p /opt/newspulse /data/registry /data/state \
 && chown -R airflow:0 /opt/newspulse /data \
 && chmod -R g+rwX /data
USER airflow

# Pinning apache-airflow in every install keeps pip from changing Airflow itself
# (the official image's documented way to add packages).
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "apache-airflow==${AIRFLOW_VERSION}" "torch==${TORCH_VERSION}"
WORKDIR /opt/newspulse
COPY --chown=airflow:0 pyproject.toml ./
# NewsPulse's core plus the [elasticsearch] role (the DAGs read feedback from the store and
# re-score it) and the [train] role (torch came above): no dashboard or Kafka client, so less to
# conflict with the Airflow image's providers.
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; x = p['optional-dependencies']; print('\n'.join(p['dependencies'] + x['elasticsearch'] + [r for r in x['train'] if not r.startswith('torch')]))" > /tmp/requirements.txt \
 && pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt
COPY --chown=airflow:0 . .
RUN pip install --no-cache-dir --no-deps -e . \
 && python -c "import newspulse.models, newspulse.settings"
WORKDIR /opt/airflow
