#!/usr/bin/env bash
# The whole path on this machine, with no Google account:
#   Pub/Sub emulator (when installed) -> push-shaped delivery -> relay function
#   (functions-framework) -> fake Workflows callback API, tokens from a fake
#   metadata server. Runs one demo execution and prints every hop with its timing.
# Usage: scripts/run-local.sh [--stay] [--no-emulator] [--payload JSON] [--timeout SECONDS]
#                             [--workflow FILE] [--example events]
#                             [--example worker [--worker-mode MODE]
#                             [--worker-command COMMAND]]
#   --stay         keep everything running after the demo (delivery too), until Ctrl-C,
#                  and print a create-a-callback, publish, see-it-resumed sequence
#   --no-emulator  skip Pub/Sub: POST the push request to the function directly
#   With PUBSUB_EMULATOR_HOST set, the emulator there is used (topics named for this run)
#   instead of starting one.
#   --workflow     run FILE (your copy of the subworkflow) instead of workflow.yaml
#   --example worker  run examples/worker/: the workflow publishes a job, worker.py does
#                  it and publishes the result to the relay topic (needs the emulator);
#                  --worker-mode fail|broken: fail the step on purpose, or a broken message
#   --worker-command  with --example worker: your worker instead of worker.py, a shell
#                  command run in this directory with PUBSUB_EMULATOR_HOST,
#                  GOOGLE_CLOUD_PROJECT, JOBS_SUBSCRIPTION and RELAY_TOPIC set
#   --example events  keyed waits (docs/events.md): the Firestore emulator too, and
#                  workflow.yaml's await_event resumed by events (harness/events_example.py)
# Exit status: 0 the workflow returned (RESUMED), 1 its execution failed (a CallbackError),
# 2 it returned TIMED_OUT. Ctrl-C at any point stops every process this script started.
set -euo pipefail
caller_dir="$PWD"
cd "$(dirname "$0")/.."

stay=false
no_emulator=false
payload=""
timeout=30
workflow=workflow.yaml
example=""
worker_mode=work
worker_command=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --stay) stay=true ;;
        --no-emulator) no_emulator=true ;;
        --payload) payload="$2"; shift ;;
        --timeout) timeout="$2"; shift ;;
        --workflow) workflow="$(cd "$caller_dir" && readlink -f "$2")"; shift ;;
        --example) example="$2"; shift ;;
        --worker-mode) worker_mode="$2"; shift ;;
        --worker-command) worker_command="$2"; shift ;;
        -h | --help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

# SKIP_VENV=1 uses .venv as it is (the tests run this script that way).
if [[ ${SKIP_VENV:-} != 1 ]]; then
    scripts/venv.sh requirements.txt requirements-test.txt
fi
py=.venv/bin/python
project=local-project
logs="$(mktemp -d -t callback-relay-local.XXXXXX)"
pids=()

# shellcheck disable=SC2329  # invoked by the EXIT trap
cleanup() {
    trap - EXIT INT TERM
    local pid
    # Each child leads its own process group (setsid): stop the whole group,
    # so gcloud's Java and gunicorn's workers go too.
    for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=false
        for pid in "${pids[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=true; done
        [[ $alive == false ]] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    echo "stopped; logs in $logs" >&2
}
trap cleanup EXIT
trap 'echo; echo "interrupted" >&2; exit 130' INT TERM

free_port() {
    "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start NAME COMMAND...: run in a new session, output to $logs/NAME.log
start() {
    local name="$1"
    shift
    setsid "$@" >"$logs/$name.log" 2>&1 < /dev/null &
    pids+=("$!")
}

# wait_for NAME REGEX SECONDS: until the log shows REGEX; fail if the process dies
wait_for() {
    local name="$1" pattern="$2" seconds="$3" pid="${pids[-1]}"
    for _ in $(seq $((seconds * 10))); do
        if grep -Eq "$pattern" "$logs/$name.log"; then return 0; fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited; its log:" >&2
            cat "$logs/$name.log" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "$name was not ready within $seconds s; its log:" >&2
    cat "$logs/$name.log" >&2
    return 1
}

# wait_for_port NAME PORT SECONDS: until PORT accepts connections
wait_for_port() {
    local name="$1" port="$2" seconds="$3" pid="${pids[-1]}"
    if "$py" -c 'import sys; from harness.ports import wait_for_port as w
sys.exit(0 if w("127.0.0.1", int(sys.argv[1]), float(sys.argv[2])) else 1)' "$port" "$seconds" \
        && kill -0 "$pid" 2>/dev/null; then
        return 0
    fi
    echo "$name is not listening on port $port; its log:" >&2
    cat "$logs/$name.log" >&2
    return 1
}

ready_host() { sed -n 's/^READY \([^ ]*\).*/\1/p' "$logs/$1.log" | head -n1; }

echo "== starting on free loopback ports (logs in $logs)"
start metadata "$py" -m harness.fake_metadata_server --port 0 --project "$project"
wait_for metadata '^READY ' 15
metadata_host="$(ready_host metadata)"
echo "fake metadata server   $metadata_host"

start workflows "$py" -m harness.fake_workflows_api --port 0 --project "$project"
wait_for workflows '^READY ' 15
workflows_host="$(ready_host workflows)"
echo "fake Workflows API     $workflows_host"

function_url=""
# --example events starts a relay of its own, with keyed waits on (harness/events_example.py).
if [[ $example != events ]]; then
    function_port="$(free_port)"
    # google.auth.default() tries GOOGLE_APPLICATION_CREDENTIALS and gcloud's application
    # default credentials before the metadata server: hide both, so that no real Google
    # token ever reaches the fake (an empty CLOUDSDK_CONFIG holds no credentials).
    # https://googleapis.dev/python/google-auth/latest/reference/google.auth.html
    mkdir -p "$logs/gcloud-config"
    start function env -u GOOGLE_APPLICATION_CREDENTIALS CLOUDSDK_CONFIG="$logs/gcloud-config" \
        GCE_METADATA_HOST="$metadata_host" GCE_METADATA_IP="$metadata_host" \
        WORKFLOWS_EMULATOR_HOST="$workflows_host" WORKERS=1 THREADS=4 \
        PYTHONPATH=function PYTHONUNBUFFERED=1 \
        .venv/bin/functions-framework --source function/main.py --target relay \
        --signature-type cloudevent --host 127.0.0.1 --port "$function_port"
    wait_for_port function "$function_port" 30
    function_url="http://127.0.0.1:$function_port/"
    echo "relay function         $function_url"
fi

driver_args=(--workflows-api "$workflows_host" --metadata "$metadata_host"
    --function-url "$function_url" --timeout "$timeout"
    --project "$project" --workflow "$workflow")
if [[ -z $example ]]; then
    driver_args+=(--payload "${payload:-"{\"greeting\": \"hello from scripts/run-local.sh\"}"}")
fi
if [[ -n $example ]]; then
    # The worker's job is {"text": ...}: it counts the words and upper-cases them.
    driver_args+=(--payload "${payload:-"{\"text\": \"hello from the worker example\"}"}")
    driver_args+=(--example "$example" --worker-mode "$worker_mode" --log-dir "$logs")
    if [[ -n $worker_command ]]; then
        driver_args+=(--worker-command "$worker_command" --worker-cwd "$caller_dir")
    fi
elif [[ -n $worker_command ]]; then
    echo "--worker-command needs --example worker" >&2
    exit 2
fi
emulator_missing=""
external_emulator=false
if [[ $no_emulator == true ]]; then
    emulator_missing="--no-emulator"
elif [[ -n ${PUBSUB_EMULATOR_HOST:-} ]]; then
    external_emulator=true
elif ! command -v gcloud >/dev/null; then
    emulator_missing="gcloud is not on PATH"
elif ! command -v java >/dev/null; then
    emulator_missing="java is not on PATH"
elif [[ ! -d "$(dirname "$(dirname "$(readlink -f "$(command -v gcloud)")")")/platform/pubsub-emulator" ]]; then
    emulator_missing="the gcloud pubsub-emulator component is not installed"
fi
relay_topic=workflows-callback-relay
relay_subscription=workflows-callback-relay-local
jobs_topic=worker-example-jobs
if [[ $external_emulator == true ]]; then
    # An emulator already runs: use it, with names of this run's own, so that runs
    # sharing it never read each other's messages.
    suffix="-$(date +%s)-$$"
    relay_topic+="$suffix"
    relay_subscription+="$suffix"
    jobs_topic+="$suffix"
    export PUBSUB_PROJECT_ID="$project"
    echo "Pub/Sub emulator       $PUBSUB_EMULATOR_HOST (already running: PUBSUB_EMULATOR_HOST)"
elif [[ -z $emulator_missing ]]; then
    emulator_port="$(free_port)"
    start emulator gcloud beta emulators pubsub start \
        --host-port="127.0.0.1:$emulator_port" --project="$project" --quiet
    wait_for emulator 'Server started, listening on' 90
    export PUBSUB_EMULATOR_HOST="127.0.0.1:$emulator_port" PUBSUB_PROJECT_ID="$project"
    echo "Pub/Sub emulator       $PUBSUB_EMULATOR_HOST"
fi
if [[ -z $emulator_missing ]]; then
    driver_args+=(--topic "projects/$project/topics/$relay_topic"
        --subscription "projects/$project/subscriptions/$relay_subscription"
        --jobs-topic "projects/$project/topics/$jobs_topic")
elif [[ -n $example ]]; then
    echo "--example $example needs the Pub/Sub emulator, which is not available ($emulator_missing)" >&2
    exit 2
else
    unset PUBSUB_EMULATOR_HOST
    echo "Pub/Sub emulator       not available ($emulator_missing):"
    echo "                       the CloudEvent goes straight to the function"
fi

if [[ $example == events ]]; then
    # The example starts the Firestore emulator and the relay, with keyed waits on.
    echo
    echo "== keyed waits: workflow.yaml's await_event, run by the local Workflows interpreter"
    status=0
    "$py" -m harness.events_example --workflows-api "$workflows_host" --metadata "$metadata_host" \
        --project "$project" --log-dir "$logs" --timeout "$timeout" || status=$?
    exit "$status"
fi

echo
if [[ -n $example ]]; then
    echo "== examples/$example (its workflow.yaml, run by the local Workflows interpreter; worker: ${worker_command:-worker.py --$worker_mode})"
else
    echo "== demo execution (workflow.yaml, run by the local Workflows interpreter)"
fi
status=0
"$py" -m harness.demo_driver "${driver_args[@]}" || status=$?

echo
echo "== the relay function's log"
grep -F '"outcome"' "$logs/function.log" || echo "(no outcome logged; see $logs/function.log)"

if [[ $stay == true ]]; then
    # The driver's forwarder stopped with it: keep delivering from the subscription.
    if [[ -z $emulator_missing ]]; then
        start forwarder "$py" -m harness.eventarc_forwarder \
            --subscription "projects/$project/subscriptions/$relay_subscription" \
            --topic "projects/$project/topics/$relay_topic" --target "$function_url"
        wait_for forwarder '^READY ' 30
    fi
    fake="http://$workflows_host/_fake"
    echo
    echo "== still running; Ctrl-C stops everything. In another shell, in $PWD:"
    cat <<EOF
    # 1. an execution waiting on a callback, on the fake Workflows API
    url=\$(curl -sS -X POST $fake/executions -d '{"workflow": "callback-relay-demo"}' | $py -c 'import json, sys; print(json.load(sys.stdin)["callback_url"])')
EOF
    if [[ -z $emulator_missing ]]; then
        cat <<EOF
    # 2. a worker publishes the result for that callback on the relay topic (tools.publish
    #    checks the URL with the relay's policy: it needs the relay's WORKFLOWS_EMULATOR_HOST)
    PUBSUB_EMULATOR_HOST=$PUBSUB_EMULATOR_HOST WORKFLOWS_EMULATOR_HOST=$workflows_host $py -m tools.publish --topic $relay_topic --project $project --url "\$url" --payload '{"hello": "again"}'
EOF
    else
        cat <<EOF
    # 2. no emulator: POST the Pub/Sub push request for that message to the function,
    #    at the topic's path, as deploy.sh's push subscription does
    data=\$(printf '{"callback_url": "%s", "payload": {"hello": "again"}}' "\$url" | base64 | tr -d '\n')
    curl -sS -o /dev/null -w 'function answered %{http_code}\n' -X POST ${function_url}projects/$project/topics/workflows-callback-relay -H 'Content-Type: application/json' -d "{\"message\": {\"data\": \"\$data\", \"messageId\": \"manual-1\"}, \"subscription\": \"projects/$project/subscriptions/manual\"}"
EOF
    fi
    cat <<EOF
    # 3. the callback request that resumed the execution (408 after 30 s without one)
    curl -sS -w '\n' -X POST $fake/await -d "{\"callback_url\": \"\$url\", \"timeout\": 30}"

EOF
    echo "The function's log: $logs/function.log"
    wait
fi
exit "$status"
