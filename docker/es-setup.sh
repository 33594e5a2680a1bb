#!/usr/bin/env bash
# One-shot Elasticsearch set-up of docker-compose.yml (service es-setup), idempotent:
#  1. the role `newspulse_app` (its own indices only) and the user the NewsPulse services log in as;
#  2. the kibana_system password, when KIBANA_SYSTEM_PASSWORD is set (profile kibana);
#  3. the snapshot repository `newspulse-backups` on the es-snapshots volume and the nightly
#     snapshot lifecycle policy `newspulse-nightly` (docs/operations.md, "Backups").
# Runs in the Elasticsearch image (bash + curl) as root, only to hand the snapshot volume to
# the elasticsearch user (uid 1000).
set -euo pipefail

: "${ES_URL:?}" "${ELASTIC_PASSWORD:?}" "${APP_USERNAME:?}" "${APP_PASSWORD:?}" "${INDEX_PREFIX:?}"
SNAPSHOT_SCHEDULE="${SNAPSHOT_SCHEDULE:-0 30 1 * * ?}"
SNAPSHOT_RETENTION="${SNAPSHOT_RETENTION:-30d}"
# Where the es-snapshots volume is mounted in this container (path.repo in the elasticsearch one).
SNAPSHOT_DIR="${SNAPSHOT_DIR:-/snapshots}"

# JSON string body of a shell value (passwords may hold quotes or backslashes).
json_string() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

# es METHOD PATH [BODY]: one authenticated request; any non-2xx answer stops the job with the body.
es() {
  local method=$1 path=$2 body=${3:-} code
  code=$(curl -sS -o /tmp/es-answer -w '%{http_code}' -u "elastic:${ELASTIC_PASSWORD}" \
    -X "$method" -H 'Content-Type: application/json' "${ES_URL}${path}" ${body:+--data-binary "$body"})
  if [[ $code != 2* ]]; then
    echo "es-setup: $method $path answered $code: $(cat /tmp/es-answer)" >&2
    exit 1
  fi
  echo "es-setup: $method $path -> $code"
}

if (( ${#APP_PASSWORD} < 6 )); then
  echo "es-setup: NEWSPULSE_ES_PASSWORD must have at least 6 characters" >&2
  exit 1
fi

es PUT /_security/role/newspulse_app "{
  \"cluster\": [\"monitor\", \"manage_index_templates\"],
  \"indices\": [{\"names\": [$(json_string "${INDEX_PREFIX}-*")], \"privileges\": [\"all\"]}]
}"
es PUT "/_security/user/${APP_USERNAME}" "{
  \"password\": $(json_string "$APP_PASSWORD"),
  \"roles\": [\"newspulse_app\"],
  \"full_name\": \"NewsPulse services\"
}"

if [[ -n ${KIBANA_SYSTEM_PASSWORD:-} ]]; then
  es POST /_security/user/kibana_system/_password "{\"password\": $(json_string "$KIBANA_SYSTEM_PASSWORD")}"
fi

chown -R 1000:0 "$SNAPSHOT_DIR"
chmod -R g+rwX "$SNAPSHOT_DIR"
es PUT /_snapshot/newspulse-backups '{"type": "fs", "settings": {"location": "/usr/share/elasticsearch/snapshots", "compress": true}}'
es PUT /_slm/policy/newspulse-nightly "{
  \"schedule\": $(json_string "$SNAPSHOT_SCHEDULE"),
  \"name\": \"<newspulse-{now/d}>\",
  \"repository\": \"newspulse-backups\",
  \"config\": {\"indices\": [$(json_string "${INDEX_PREFIX}-*")], \"include_global_state\": false},
  \"retention\": {\"expire_after\": $(json_string "$SNAPSHOT_RETENTION"), \"min_count\": 7, \"max_count\": 100}
}"
echo "es-setup: done"
