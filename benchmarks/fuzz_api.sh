#!/usr/bin/env bash
# Fuzz the HTTP API with schemathesis against a real `python -m service` on a free loopback
# port, from the app's own /openapi.json. Not part of `make test` (slow and random).
#
#   benchmarks/fuzz_api.sh                      every operation, 50 examples each, <= 600 s
#   MAX_EXAMPLES=20 MAX_TIME=120 benchmarks/fuzz_api.sh
#   SEED=1 benchmarks/fuzz_api.sh               repeat a run
#   API_KEY=k SCRATCHNET_API_KEYS=fuzz:k benchmarks/fuzz_api.sh   every request with that key
#   SEED_API_KEY=k API_KEY=wrong SCRATCHNET_API_KEYS=fuzz:k ...    resources made with k,
#                                               fuzzed with a wrong key (or none: API_KEY=)
#   benchmarks/fuzz_api.sh --include-path-regex '^/v1/models'   extra schemathesis options
#
# Needs schemathesis in the virtualenv (`.venv/bin/pip install schemathesis`; verified with
# schemathesis 4.32.5, the newest release when written). Every check (`--checks all`: no 5xx,
# every status code, content type, header and body as the OpenAPI document declares them, 405
# with Allow for undeclared methods, invalid data refused and valid data accepted, deleted
# resources gone) and every phase: examples, coverage, fuzzing and stateful (the document's links
# from each response carrying an id to every operation taking it).
#
# The deployment limits are small (the document declares them as schema bounds, so generated
# options stay inside them): a job is at most 2 hidden layers of 16 units for 1000 epochs, which
# on the seeded datasets (<= 120 training points) is < 5e7 work units, and a sweep at most 8 of
# them, under SCRATCHNET_MAX_WORK: the work limit, which JSON Schema cannot express, never
# binds on the seeded datasets.
#
# Before fuzzing, the script creates a few resources (a 2-feature and a 4-feature dataset, a
# trained model of each, their jobs, an imported model, a finished sweep) and binds their ids to
# the `*_id` path parameters and to `dataset_id` in bodies (80% of the cases; DELETE excepted, so
# they live through the run): without them every id-taking operation only ever sees 404s.
# Training is kept cheap (tiny work and epoch limits) so fuzzed jobs finish at once. The server's
# log is kept in the report directory and searched for tracebacks at the end. Exit status:
# schemathesis's (nonzero on a failure), or 1 when the server logged an error.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
SCHEMATHESIS="${SCHEMATHESIS:-$ROOT/.venv/bin/schemathesis}"
MAX_EXAMPLES="${MAX_EXAMPLES:-50}"
MAX_TIME="${MAX_TIME:-600}"
REPORT_DIR="${REPORT_DIR:-$(mktemp -d -t scratchnet-fuzz-XXXXXX)}"
SEED_OPTION=()
if [[ -n "${SEED:-}" ]]; then SEED_OPTION=(--seed "$SEED"); fi
AUTH_OPTION=()
if [[ -n "${API_KEY:-}" ]]; then AUTH_OPTION=(--header "Authorization: Bearer $API_KEY"); fi
export SEED_API_KEY="${SEED_API_KEY:-${API_KEY:-}}"

if [[ ! -x "$SCHEMATHESIS" ]]; then
    echo "schemathesis is not installed: $ROOT/.venv/bin/pip install schemathesis" >&2
    exit 2
fi

mkdir -p "$REPORT_DIR"
REPORT_DIR="$(cd "$REPORT_DIR" && pwd)"
PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
URL="http://127.0.0.1:$PORT"
LOG="$REPORT_DIR/server.log"
CONFIG="$REPORT_DIR/schemathesis.toml"

# Cheap, bounded training: every fuzzed job or sweep ends within seconds.
export SCRATCHNET_WORKERS="${SCRATCHNET_WORKERS:-1}"
export SCRATCHNET_MAX_WORK="${SCRATCHNET_MAX_WORK:-1e9}"
export SCRATCHNET_MAX_EPOCHS="${SCRATCHNET_MAX_EPOCHS:-1000}"
export SCRATCHNET_MAX_HIDDEN_LAYERS="${SCRATCHNET_MAX_HIDDEN_LAYERS:-2}"
export SCRATCHNET_MAX_UNITS_PER_LAYER="${SCRATCHNET_MAX_UNITS_PER_LAYER:-16}"
export SCRATCHNET_MAX_SWEEP_CONFIGURATIONS="${SCRATCHNET_MAX_SWEEP_CONFIGURATIONS:-8}"
export SCRATCHNET_MAX_SAMPLES="${SCRATCHNET_MAX_SAMPLES:-5000}"
export SCRATCHNET_JOB_TIMEOUT_SECONDS="${SCRATCHNET_JOB_TIMEOUT_SECONDS:-30}"
export SCRATCHNET_LOG_LEVEL="${SCRATCHNET_LOG_LEVEL:-warning}"

cd "$ROOT"
"$PYTHON" -m service --host 127.0.0.1 --port "$PORT" >"$LOG" 2>&1 &
SERVER_PID=$!
stop_server() {
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID"
        wait "$SERVER_PID" || true
    fi
}
trap stop_server EXIT

for _ in $(seq 1 600); do
    if "$PYTHON" -c "import sys, httpx; sys.exit(httpx.get('$URL/readyz').status_code != 200)" \
        2>/dev/null; then
        break
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "the server exited at start:" >&2
        cat "$LOG" >&2
        exit 2
    fi
    sleep 0.1
done

# Resources to fuzz against, and the config binding their ids.
"$PYTHON" - "$URL" "$CONFIG" "$REPORT_DIR" <<'PYTHON'
import json
import os
import sys
import time

import httpx

url, config_path, report_dir = sys.argv[1:]
# The resources are made with SEED_API_KEY (default: the key the run uses).
key = os.environ["SEED_API_KEY"]
client = httpx.Client(
    base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"} if key else {}
)


def created(response: httpx.Response) -> dict:
    assert response.status_code in (201, 202), response.text
    return response.json()


def finished(path: str) -> dict:
    for _ in range(1200):
        resource = client.get(path).json()
        if resource["status"] in ("succeeded", "failed", "cancelled"):
            return resource
        time.sleep(0.05)
    raise SystemExit(f"{path} did not finish")


quick = {"hidden_layers": [3], "epochs": 50, "record_every": 10}
datasets = [
    created(client.post("/v1/datasets", json={"kind": "moons", "n_samples": 100}))["id"],
    created(client.post("/v1/datasets", json={"kind": "iris"}))["id"],
]
jobs, models = [], []
for dataset_id in datasets:
    body = {"dataset_id": dataset_id, "hyperparameters": quick, "baseline": True}
    job = finished(f"/v1/jobs/{created(client.post('/v1/jobs', json=body))['id']}")
    jobs.append(job["id"])
    models.append(job["model_id"])
exported = client.get(f"/v1/models/{models[0]}/export").content
imported = client.post(
    "/v1/models/import", content=exported, headers={"content-type": "application/octet-stream"}
)
models.append(created(imported)["id"])
sweep_body = {"dataset_id": datasets[0], "base": quick, "grid": {"learning_rate": [0.01, 0.1]}}
sweeps = [finished(f"/v1/sweeps/{created(client.post('/v1/sweeps', json=sweep_body))['id']}")["id"]]


def toml_list(values: list[str]) -> str:
    return json.dumps(values)  # a JSON list of strings is a TOML array


bindings = {
    "path.dataset_id": "datasets",
    "body.dataset_id": "datasets",
    "path.job_id": "jobs",
    "path.model_id": "models",
    "path.sweep_id": "sweeps",
}
lines = [
    "[cache]",
    f'directory = "{report_dir}/cache"',
    "",
    *(
        f"[dictionaries.{name}]\nvalues = {toml_list(values)}\n"
        for name, values in (
            ("datasets", datasets),
            ("jobs", jobs),
            ("models", models),
            ("sweeps", sweeps),
        )
    ),
    # Valid data must be accepted (positive_data_acceptance: 2xx, 404, 409, 429), except where
    # the service refuses for a reason JSON Schema cannot state, which these operations answer
    # with 422 naming it. Everything else a body must satisfy, the document declares.
    *(
        f'[[operations]]\ninclude-name = "{name}"\n'
        "[operations.checks.positive_data_acceptance]\n"
        'expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]\n'
        for name, _why in (
            ("POST /v1/datasets", "custom: one label per point, rows of one length; a test "
             "split must hold one point of each class; n_samples >= 2 x n_classes"),
            ("POST /v1/jobs", "dataset_id must name a dataset; batch_size <= its training "
             "split; early_stopping needs a test split"),
            ("POST /v1/sweeps", "as POST /v1/jobs, and the product of the grid's lengths <= "
             "max_sweep_configurations"),
            ("POST /v1/models/{model_id}/predict", "each point has the model's n_features"),
            ("POST /v1/models/import", "the bytes are a model GET .../export wrote"),
        )
    ),
    "[[operations]]",
    'exclude-method = "DELETE"',
    "[operations.parameters]",
    *(f'"{key}" = {{ dictionary = "{name}", probability = 0.8 }}' for key, name in bindings.items()),
    "",
]
with open(config_path, "w") as config:
    config.write("\n".join(lines))
print(f"seeded: datasets {datasets}, jobs {jobs}, models {models}, sweeps {sweeps}")
PYTHON

status=0
"$SCHEMATHESIS" --config-file "$CONFIG" run "$URL/openapi.json" \
    --checks all \
    --phases examples,coverage,fuzzing,stateful \
    --max-examples "$MAX_EXAMPLES" \
    --max-time "$MAX_TIME" \
    --request-timeout 30 \
    --workers 1 \
    --suppress-health-check too_slow,filter_too_much \
    --report junit \
    --report-dir "$REPORT_DIR" \
    "${SEED_OPTION[@]}" \
    "${AUTH_OPTION[@]}" \
    "$@" || status=$?

stop_server
trap - EXIT
if grep -qE 'Traceback|ERROR' "$LOG"; then
    echo "the server logged errors (see $LOG):" >&2
    grep -nE -A3 'Traceback|ERROR' "$LOG" | head -40 >&2
    [[ $status -ne 0 ]] || status=1
fi
echo "report and server log: $REPORT_DIR"
exit "$status"
