#!/usr/bin/env bash
# deploy.sh: one idempotent, least-privilege deployment of workflows-callback-relay.
#
# Creates (or checks) the relay and dead-letter topics, the dead-letter
# subscription, the service accounts (function, trigger, build, demo
# workflow), a custom role holding only workflows.callbacks.send, the relay
# function (Cloud Functions 2nd gen, Pub/Sub trigger through Eventarc), the
# delivery policy of the trigger's subscription, and, on request, the demo
# workflow, an HTTP twin of the function and an alert policy. Every step
# describes before it creates, so a re-run changes nothing that is already
# right; --status checks it all without changing anything.
# Run ./deploy.sh --help; docs/deploy.md explains each grant.
set -Eeuo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROG="$(basename "$0")"

# --- configuration: environment variables, then flags ------------------------
PROJECT_ID="${PROJECT_ID:-}"
REGION="${REGION:-us-central1}"
RELAY_TOPIC="${RELAY_TOPIC:-workflows-callback-relay}"
DEAD_LETTER_TOPIC="${DEAD_LETTER_TOPIC:-workflows-callback-relay-dead-letter}"
DEAD_LETTER_SUBSCRIPTION="${DEAD_LETTER_SUBSCRIPTION:-workflows-callback-relay-dead-letter-sub}"
FUNCTION_NAME="${FUNCTION_NAME:-workflows-callback-relay}"
WORKFLOW_NAME="${WORKFLOW_NAME:-callback-relay-demo}"
FUNCTION_SA_NAME="${FUNCTION_SA_NAME:-callback-relay-fn}"
TRIGGER_SA_NAME="${TRIGGER_SA_NAME:-callback-relay-trigger}"
WORKFLOW_SA_NAME="${WORKFLOW_SA_NAME:-callback-relay-workflow}"
CUSTOM_ROLE_ID="${CUSTOM_ROLE_ID:-workflowsCallbackSender}"
FUNCTION_RUNTIME="${FUNCTION_RUNTIME:-python312}"
FUNCTION_MEMORY="${FUNCTION_MEMORY:-512Mi}"
FUNCTION_CPU="${FUNCTION_CPU:-1}"
FUNCTION_CONCURRENCY="${FUNCTION_CONCURRENCY:-8}"
FUNCTION_MAX_INSTANCES="${FUNCTION_MAX_INSTANCES:-10}"
FUNCTION_TIMEOUT="${FUNCTION_TIMEOUT:-60}"
CALLBACK_RETRY_DEADLINE_SECONDS="${CALLBACK_RETRY_DEADLINE_SECONDS:-30}"
CALLBACK_CONNECT_TIMEOUT_SECONDS="${CALLBACK_CONNECT_TIMEOUT_SECONDS:-5}"
CALLBACK_READ_TIMEOUT_SECONDS="${CALLBACK_READ_TIMEOUT_SECONDS:-15}"
LOG_LEVEL="${LOG_LEVEL:-INFO}"
MAX_DELIVERY_ATTEMPTS="${MAX_DELIVERY_ATTEMPTS:-10}"
MIN_RETRY_DELAY="${MIN_RETRY_DELAY:-10}"
MAX_RETRY_DELAY="${MAX_RETRY_DELAY:-600}"
DEAD_LETTER_RETENTION="${DEAD_LETTER_RETENTION:-7d}"
BUILD_SA_NAME="${BUILD_SA_NAME:-callback-relay-build}"
HTTP_FUNCTION_NAME="${HTTP_FUNCTION_NAME:-workflows-callback-relay-http}"
HTTP_INGRESS="${HTTP_INGRESS:-internal-only}"
# Empty: the demo workflow, by project id and by number.
ALLOWED_WORKFLOWS="${ALLOWED_WORKFLOWS:-}"
# Members, separated by commas or spaces (the flags add to these).
PUBLISHERS="${PUBLISHERS:-}"
HTTP_INVOKERS="${HTTP_INVOKERS:-}"
ALERT_CHANNEL="${ALERT_CHANNEL:-}"
ALERT_POLICY_NAME="${ALERT_POLICY_NAME:-workflows-callback-relay delivery}"
# Empty: the retry window, MAX_DELIVERY_ATTEMPTS x (timeout + MAX_RETRY_DELAY).
ALERT_OLDEST_UNACKED_SECONDS="${ALERT_OLDEST_UNACKED_SECONDS:-}"
SKIP_DEMO_WORKFLOW="${SKIP_DEMO_WORKFLOW:-false}"
WITH_HTTP_FUNCTION="${WITH_HTTP_FUNCTION:-false}"
LEGACY_TOKEN_CREATOR="${LEGACY_TOKEN_CREATOR:-false}"
# Seconds between retries of an IAM grant while a new service account propagates.
IAM_RETRY_SLEEP="${IAM_RETRY_SLEEP:-5}"
MONITORING_API="${MONITORING_API:-https://monitoring.googleapis.com}"

MODE=deploy
DRY_RUN=false
ASSUME_YES=false
USE_INVOKER_ROLE=false
FORCE=false
ORIGINAL_ARGS=("$@")

# The APIs this deployment uses, and no others. IAM comes first: creating a
# service account fails without it, and the build service account needs it
# (https://cloud.google.com/functions/docs/securing/build-custom-sa).
REQUIRED_APIS=(
    iam.googleapis.com
    cloudresourcemanager.googleapis.com
    cloudfunctions.googleapis.com
    run.googleapis.com
    cloudbuild.googleapis.com
    artifactregistry.googleapis.com
    eventarc.googleapis.com
    pubsub.googleapis.com
    workflows.googleapis.com
    workflowexecutions.googleapis.com
    logging.googleapis.com
)
CALLBACK_PERMISSION=workflows.callbacks.send
# What Cloud Build needs to build a function with a service account of its
# own: write build logs, push the image to Artifact Registry, read the
# uploaded source. https://cloud.google.com/functions/docs/securing/build-custom-sa
BUILD_ROLES=(roles/logging.logWriter roles/artifactregistry.writer roles/storage.objectViewer)
# Cloud Functions caps event-driven functions at 540 s:
# https://cloud.google.com/functions/docs/configuring/timeout
MAX_EVENT_FUNCTION_TIMEOUT=540

usage() {
    cat <<EOF
Usage: $PROG [options]

Deploy workflows-callback-relay to Google Cloud: topics, function, service
accounts and the least IAM they need, for your own workflows and workers.
Safe to run again; --status checks a deployment without changing it.

Who may resume what (each flag is also an environment variable):
  --allowed-workflows LIST
                          Workflows the relay may resume: comma-separated
                          projects/P/locations/L/workflows/W, '*' for a whole segment
                          (env ALLOWED_WORKFLOWS; default: the demo workflow, by project id and number)
  --publisher MEMBER      Grant roles/pubsub.publisher on the relay topic only, e.g.
                          serviceAccount:worker@P.iam.gserviceaccount.com; repeatable
                          (env PUBLISHERS, comma-separated)
  --skip-demo-workflow    Do not deploy workflow.yaml or its service account
                          (env SKIP_DEMO_WORKFLOW=true; needs --allowed-workflows)
  --with-http-function    Also deploy the relay_http entry point as the HTTP function
                          HTTP_FUNCTION_NAME: never public (no --allow-unauthenticated),
                          ingress HTTP_INGRESS (env WITH_HTTP_FUNCTION=true)
  --http-invoker MEMBER   Grant roles/run.invoker on the HTTP function only; repeatable
                          (env HTTP_INVOKERS, comma-separated)
  --http-ingress SETTING  internal-only, internal-and-gclb or all
                          (env HTTP_INGRESS; default internal-only)
  --alert-channel CHANNEL Create or update the alert policy ALERT_POLICY_NAME, notifying
                          projects/P/notificationChannels/N when a dead letter is held 5 minutes
                          or a trigger message outlives the retry window (env ALERT_CHANNEL)

Function and delivery:
  --project ID            Google Cloud project (env PROJECT_ID; default: gcloud config)
  --region REGION         Region of the function, trigger and workflow (env REGION; default us-central1)
  --runtime RUNTIME       Function runtime, python312 or newer (env FUNCTION_RUNTIME; default python312)
  --memory SIZE           Function memory (env FUNCTION_MEMORY; default 512Mi)
  --cpu N                 Function vCPUs (env FUNCTION_CPU; default 1; concurrency > 1 needs >= 1)
  --concurrency N         Requests per instance; also sets THREADS (env FUNCTION_CONCURRENCY; default 8)
  --max-instances N       Instance cap (env FUNCTION_MAX_INSTANCES; default 10)
  --timeout SECONDS       Function timeout, at most 540 (env FUNCTION_TIMEOUT; default 60); must exceed
                          CALLBACK_RETRY_DEADLINE_SECONDS + CALLBACK_CONNECT_TIMEOUT_SECONDS
                          + CALLBACK_READ_TIMEOUT_SECONDS (defaults 30 + 5 + 15). The trigger
                          subscription's ack deadline is set to at least this.
  --max-delivery-attempts N
                          Deliveries before a message goes to the dead-letter topic, 5-100
                          (env MAX_DELIVERY_ATTEMPTS; default 10)
  --use-invoker-role      Grant the function roles/workflows.invoker instead of the custom role
                          (broader: it may also start and cancel every workflow in the project)
  --legacy-token-creator  Grant the Pub/Sub service agent roles/iam.serviceAccountTokenCreator
                          on the trigger service account; only agents enabled on or before
                          2021-04-08 need it (env LEGACY_TOKEN_CREATOR=true; default off)

Modes:
  --status                Read-only health check: exit 0 when all is as this script leaves it, else 1
  --force                 Redeploy the function and workflow even if unchanged
  --dry-run               Print every command that would change something; change nothing
  --destroy               Delete what this script creates (asks first)
  --yes                   Do not ask before --destroy
  -h, --help              Show this help

Resource names come from the environment (defaults in brackets):
  RELAY_TOPIC [$RELAY_TOPIC]  DEAD_LETTER_TOPIC [$DEAD_LETTER_TOPIC]
  DEAD_LETTER_SUBSCRIPTION [$DEAD_LETTER_SUBSCRIPTION]
  FUNCTION_NAME [$FUNCTION_NAME]  HTTP_FUNCTION_NAME [$HTTP_FUNCTION_NAME]
  WORKFLOW_NAME [$WORKFLOW_NAME]  FUNCTION_SA_NAME [$FUNCTION_SA_NAME]
  TRIGGER_SA_NAME [$TRIGGER_SA_NAME]  BUILD_SA_NAME [$BUILD_SA_NAME]
  WORKFLOW_SA_NAME [$WORKFLOW_SA_NAME]  CUSTOM_ROLE_ID [$CUSTOM_ROLE_ID]
  ALERT_POLICY_NAME [$ALERT_POLICY_NAME]
Delivery policy: MIN_RETRY_DELAY [$MIN_RETRY_DELAY s], MAX_RETRY_DELAY [$MAX_RETRY_DELAY s],
  DEAD_LETTER_RETENTION [$DEAD_LETTER_RETENTION] on $DEAD_LETTER_SUBSCRIPTION,
  ALERT_OLDEST_UNACKED_SECONDS [the retry window].
Function settings: CALLBACK_RETRY_DEADLINE_SECONDS, CALLBACK_CONNECT_TIMEOUT_SECONDS,
  CALLBACK_READ_TIMEOUT_SECONDS, LOG_LEVEL.

Examples:
  $PROG --project my-project
  $PROG --project my-project --skip-demo-workflow \\
      --allowed-workflows 'projects/my-project/locations/*/workflows/orders' \\
      --publisher serviceAccount:worker@my-project.iam.gserviceaccount.com
  $PROG --project my-project --status
  $PROG --project my-project --dry-run
  $PROG --project my-project --destroy --yes

Every grant and why: docs/deploy.md.
EOF
}

# --- output and failure handling ----------------------------------------------
CURRENT_STEP="start"
CURRENT_HINT="Run $PROG --help for the options."

say() { printf '%s\n' "$*"; }
warn() { printf '%s: WARNING: %s\n' "$PROG" "$*" >&2; }
die() {
    printf '%s: ERROR: %s\n' "$PROG" "$*" >&2
    exit 1
}

fail_step() {
    local status=$1 where=$2
    trap - ERR
    printf '\n%s: FAILED at step "%s" (%s).\n' "$PROG" "$CURRENT_STEP" "$where" >&2
    printf 'Hint: %s\n' "$CURRENT_HINT" >&2
    printf 'Fix the cause and run %s again: finished steps are skipped.\n' "$PROG" >&2
    exit "$status"
}

# A failing command stops the run with the step's name and a hint.
on_error() {
    local status=$1 line=$2
    # Command substitutions inherit the trap (set -E); report once, in the main shell.
    if ((BASH_SUBSHELL > 0)); then
        exit "$status"
    fi
    fail_step "$status" "exit $status, line $line"
}
trap 'on_error $? $LINENO' ERR

STEP_NO=0
step() {
    STEP_NO=$((STEP_NO + 1))
    CURRENT_STEP="$1"
    CURRENT_HINT="$2"
    say ""
    say "==> [$STEP_NO] $CURRENT_STEP"
}

quote_cmd() {
    local out="" arg
    for arg in "$@"; do
        out+="$(printf '%q' "$arg") "
    done
    printf '%s' "${out% }"
}

# Run a command that changes something; --dry-run only prints it.
run() {
    if $DRY_RUN; then
        say "DRY-RUN: $(quote_cmd "$@")"
        return 0
    fi
    say "+ $(quote_cmd "$@")"
    "$@"
}

# IAM grants right after creating a service account can fail until it has
# propagated; retry a few times (bounded) before giving up.
run_iam() {
    local attempt
    if $DRY_RUN; then
        run "$@"
        return 0
    fi
    for attempt in 1 2 3 4 5; do
        if run "$@"; then
            return 0
        fi
        if ((attempt == 5)); then
            return 1
        fi
        warn "IAM change failed (attempt $attempt of 5); retrying in $((IAM_RETRY_SLEEP * attempt)) s"
        sleep $((IAM_RETRY_SLEEP * attempt))
    done
}

# Read-only gcloud call (runs in --dry-run too); its stdout lands in QUERY_OUT.
# Status 0: found; 1: not found. Any other error stops the run, except in
# --dry-run, where it counts as "not found" so the plan can still be shown.
# (No command substitution around it: die must exit the main shell.)
QUERY_OUT=""
QUERY_ERR=""
query() {
    local status=0 message=""
    # One scratch file for every query's stderr: a script run makes dozens.
    [[ -n $QUERY_ERR ]] || QUERY_ERR="$(mktemp)"
    QUERY_OUT="$(gcloud "$@" 2>"$QUERY_ERR")" || status=$?
    if ((status == 0)); then
        return 0
    fi
    IFS= read -r -d '' message <"$QUERY_ERR" || true
    message=${message%$'\n'}
    QUERY_OUT=""
    # "Permission denied ... or it may not exist" is not a "not found".
    if ! grep -qiE 'PERMISSION_DENIED|UNAUTHENTICATED|\b40[13]\b' <<<"$message" &&
        grep -qiE 'NOT_FOUND|not found|does not exist|\b404\b' <<<"$message"; then
        return 1
    fi
    if $DRY_RUN || [[ $MODE == status ]]; then
        warn "could not read ($(quote_cmd gcloud "$@")): ${message:-exit $status}; assuming it is missing"
        return 1
    fi
    printf '%s\n' "$message" >&2
    fail_step "$status" "$(quote_cmd gcloud "$@") failed with exit $status"
}

exists() {
    query "$@"
}

# IAM policies read in this run, by resource; any IAM write empties it. The
# project's policy is checked for five grants, and each read is a gcloud call.
declare -A POLICIES=()

# True when RESOURCE's IAM policy already binds MEMBER to ROLE.
# KIND is the gcloud group, e.g. "pubsub topics"; the rest are flags like --region.
has_binding() {
    local kind=$1 resource=$2 member=$3 role=$4
    shift 4
    local key="$kind|$resource|$*"
    if [[ -z ${POLICIES[$key]+read} ]]; then
        local -a group
        read -r -a group <<<"$kind"
        query "${group[@]}" get-iam-policy "$resource" "$@" \
            --flatten="bindings[].members" \
            --format="value(bindings.role,bindings.members)" || return 1
        POLICIES[$key]=$QUERY_OUT
    fi
    [[ $'\n'${POLICIES[$key]}$'\n' == *$'\n'"$role"$'\t'"$member"$'\n'* ]]
}

# add-iam-policy-binding is itself idempotent (a binding is a set member), but
# checking first keeps a re-run free of writes and shows what is already right.
ensure_binding() {
    local kind=$1 resource=$2 member=$3 role=$4
    shift 4
    local -a group extra=()
    read -r -a group <<<"$kind"
    if has_binding "$kind" "$resource" "$member" "$role" "$@"; then
        say "    = $role for $member on ${kind##* } $resource (already granted)"
        return 0
    fi
    # Project policies may hold conditional bindings; gcloud then insists on
    # an explicit --condition (None = unconditional).
    [[ $kind != projects ]] || extra=(--condition=None)
    POLICIES=()
    run_iam gcloud "${group[@]}" add-iam-policy-binding "$resource" "$@" "${extra[@]}" \
        --member="$member" --role="$role" --format=none
}

remove_binding() {
    local kind=$1 resource=$2 member=$3 role=$4
    shift 4
    local -a group extra=()
    read -r -a group <<<"$kind"
    [[ $kind != projects ]] || extra=(--condition=None)
    if has_binding "$kind" "$resource" "$member" "$role" "$@"; then
        POLICIES=()
        run gcloud "${group[@]}" remove-iam-policy-binding "$resource" "$@" "${extra[@]}" \
            --member="$member" --role="$role" --format=none
    fi
}

if command -v sha256sum >/dev/null; then
    HASH_FILES=(sha256sum --)
else
    HASH_FILES=(shasum -a 256 --) # macOS
fi
sha256() {
    "${HASH_FILES[@]::${#HASH_FILES[@]}-1}" | cut -c1-40
}

# Fingerprint of the files gcloud would upload (the same exclusions as
# function/.gcloudignore), used to skip an unchanged redeploy.
source_fingerprint() {
    local dir=$1
    # Each file's name and hash, in a fixed order: a few processes, not one per file.
    (
        cd "$dir"
        find . -type f \
            ! -path '*/__pycache__/*' ! -name '*.py[cod]' ! -path './tests/*' \
            ! -path './.*' ! -name '.*' -print0 | LC_ALL=C sort -z | xargs -0 "${HASH_FILES[@]}"
    ) | sha256
}

is_number() { [[ $1 =~ ^[0-9]*[.]?[0-9]+$ ]]; }
is_int() { [[ $1 =~ ^[0-9]+$ ]]; }
# awk does the float comparisons bash cannot.
float_gt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a > b) }'; }

cpu_value() {
    # --cpu accepts 2, 2.0, .5 or 2000m.
    local cpu=$1
    if [[ $cpu =~ ^([0-9]+)m$ ]]; then
        awk -v m="${BASH_REMATCH[1]}" 'BEGIN { print m / 1000 }'
    else
        printf '%s' "$cpu"
    fi
}

# --- arguments -------------------------------------------------------------------
need_value() {
    [[ $# -ge 2 && -n $2 && $2 != --* ]] || die "$1 needs a value (see --help)"
}

while (($# > 0)); do
    arg=$1
    if [[ $arg == --*=* ]]; then
        set -- "${arg%%=*}" "${arg#*=}" "${@:2}"
        arg=$1
    fi
    case "$arg" in
    -h | --help)
        usage
        exit 0
        ;;
    --project) need_value "$@"; PROJECT_ID=$2; shift 2 ;;
    --region) need_value "$@"; REGION=$2; shift 2 ;;
    --runtime) need_value "$@"; FUNCTION_RUNTIME=$2; shift 2 ;;
    --memory) need_value "$@"; FUNCTION_MEMORY=$2; shift 2 ;;
    --cpu) need_value "$@"; FUNCTION_CPU=$2; shift 2 ;;
    --concurrency) need_value "$@"; FUNCTION_CONCURRENCY=$2; shift 2 ;;
    --max-instances) need_value "$@"; FUNCTION_MAX_INSTANCES=$2; shift 2 ;;
    --timeout) need_value "$@"; FUNCTION_TIMEOUT=${2%s}; shift 2 ;;
    --max-delivery-attempts) need_value "$@"; MAX_DELIVERY_ATTEMPTS=$2; shift 2 ;;
    --allowed-workflows) need_value "$@"; ALLOWED_WORKFLOWS=$2; shift 2 ;;
    --publisher) need_value "$@"; PUBLISHERS+=" $2"; shift 2 ;;
    --skip-demo-workflow) SKIP_DEMO_WORKFLOW=true; shift ;;
    --with-http-function) WITH_HTTP_FUNCTION=true; shift ;;
    --http-invoker) need_value "$@"; HTTP_INVOKERS+=" $2"; shift 2 ;;
    --http-ingress) need_value "$@"; HTTP_INGRESS=$2; shift 2 ;;
    --alert-channel) need_value "$@"; ALERT_CHANNEL=$2; shift 2 ;;
    --use-invoker-role) USE_INVOKER_ROLE=true; shift ;;
    --legacy-token-creator) LEGACY_TOKEN_CREATOR=true; shift ;;
    --no-legacy-token-creator) LEGACY_TOKEN_CREATOR=false; shift ;;
    --status) MODE=status; shift ;;
    --force) FORCE=true; shift ;;
    --dry-run) DRY_RUN=true; shift ;;
    --destroy) MODE=destroy; shift ;;
    --yes | -y) ASSUME_YES=true; shift ;;
    *)
        printf '%s: ERROR: unknown argument: %s\n' "$PROG" "$arg" >&2
        printf 'Run %s --help for the options.\n' "$PROG" >&2
        exit 2
        ;;
    esac
done

command -v gcloud >/dev/null || die "gcloud is not on PATH: install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install)"

if [[ -z $PROJECT_ID ]]; then
    PROJECT_ID="$(gcloud config get-value project 2>/dev/null || true)"
    PROJECT_ID="${PROJECT_ID//[[:space:]]/}"
    [[ $PROJECT_ID != "(unset)" ]] || PROJECT_ID=""
fi
[[ -n $PROJECT_ID ]] || die "no project: pass --project ID, set PROJECT_ID, or run 'gcloud config set project ID'"

# --- validation ---------------------------------------------------------------
validate() {
    local flag
    for flag in SKIP_DEMO_WORKFLOW WITH_HTTP_FUNCTION LEGACY_TOKEN_CREATOR; do
        [[ ${!flag} == true || ${!flag} == false ]] || die "$flag must be true or false, not '${!flag}'"
    done
    if [[ ! $PROJECT_ID =~ ^[a-z][-a-z0-9.:]{4,61}[a-z0-9]$ ]]; then
        die "PROJECT_ID '$PROJECT_ID' is not a project id"
    fi
    if [[ ! $REGION =~ ^[a-z]+-[a-z]+[0-9]+$ ]]; then
        die "REGION '$REGION' is not a region such as us-central1"
    fi
    if [[ ! $FUNCTION_RUNTIME =~ ^python3([0-9]+)$ ]] || ((BASH_REMATCH[1] < 12)); then
        die "--runtime '$FUNCTION_RUNTIME' must be python312 or newer"
    fi
    if ! is_int "$FUNCTION_CONCURRENCY" || ((FUNCTION_CONCURRENCY < 1 || FUNCTION_CONCURRENCY > 1000)); then
        die "--concurrency must be 1-1000"
    fi
    if ! is_int "$FUNCTION_MAX_INSTANCES" || ((FUNCTION_MAX_INSTANCES < 1)); then
        die "--max-instances must be at least 1"
    fi
    is_int "$FUNCTION_TIMEOUT" || die "--timeout must be whole seconds, e.g. 60"
    if ! is_int "$MAX_DELIVERY_ATTEMPTS" || ((MAX_DELIVERY_ATTEMPTS < 5 || MAX_DELIVERY_ATTEMPTS > 100)); then
        die "--max-delivery-attempts must be 5-100 (the Pub/Sub dead-letter policy range)"
    fi
    if ! is_int "$MIN_RETRY_DELAY" || ! is_int "$MAX_RETRY_DELAY" ||
        ((MIN_RETRY_DELAY > MAX_RETRY_DELAY || MAX_RETRY_DELAY > 600)); then
        die "MIN_RETRY_DELAY and MAX_RETRY_DELAY must be seconds with MIN <= MAX <= 600"
    fi
    local name
    for name in CALLBACK_RETRY_DEADLINE_SECONDS CALLBACK_CONNECT_TIMEOUT_SECONDS CALLBACK_READ_TIMEOUT_SECONDS; do
        if ! is_number "${!name}" || ! float_gt "${!name}" 0; then
            die "$name='${!name}' must be a positive number of seconds"
        fi
    done
    # One delivery retries the callback until the deadline; the last attempt
    # may start just before it and take a full connect + read timeout.
    local worst
    worst="$(awk -v d="$CALLBACK_RETRY_DEADLINE_SECONDS" -v c="$CALLBACK_CONNECT_TIMEOUT_SECONDS" \
        -v r="$CALLBACK_READ_TIMEOUT_SECONDS" 'BEGIN { print d + c + r }')"
    if ! float_gt "$FUNCTION_TIMEOUT" "$worst"; then
        die "--timeout ${FUNCTION_TIMEOUT}s must exceed CALLBACK_RETRY_DEADLINE_SECONDS + CALLBACK_CONNECT_TIMEOUT_SECONDS + CALLBACK_READ_TIMEOUT_SECONDS = ${worst}s, or Cloud Functions stops a delivery mid-retry"
    fi
    if ((FUNCTION_TIMEOUT > MAX_EVENT_FUNCTION_TIMEOUT)); then
        die "--timeout ${FUNCTION_TIMEOUT}s is above ${MAX_EVENT_FUNCTION_TIMEOUT}s, the limit for event-driven functions"
    fi
    local cpu
    cpu="$(cpu_value "$FUNCTION_CPU")"
    if ! is_number "$cpu" || ! float_gt "$cpu" 0; then
        die "--cpu '$FUNCTION_CPU' is not a number of vCPUs"
    fi
    if ((FUNCTION_CONCURRENCY > 1)) && float_gt 1 "$cpu"; then
        die "--concurrency $FUNCTION_CONCURRENCY needs --cpu 1 or more (Cloud Functions rule for concurrency > 1)"
    fi
    [[ -f $SCRIPT_DIR/function/main.py ]] || die "function/main.py not found next to $PROG"
    [[ -f $SCRIPT_DIR/workflow.yaml ]] || $SKIP_DEMO_WORKFLOW || die "workflow.yaml not found next to $PROG"
    validate_access
}

# The same syntax as callback_relay.config.parse_allowed_workflows: a segment
# is '*' or an id, never a partial wildcard.
WORKFLOW_SEGMENT='(\*|[A-Za-z0-9][A-Za-z0-9_-]{0,127})'
ALLOWED_WORKFLOW_RE="^projects/$WORKFLOW_SEGMENT/locations/$WORKFLOW_SEGMENT/workflows/$WORKFLOW_SEGMENT\$"
# IAM principals in gcloud's --member syntax. allUsers and
# allAuthenticatedUsers are refused: nothing here is ever public.
MEMBER_RE='^(serviceAccount|user|group|domain|principal|principalSet):[^[:space:],]+$'

split_list() {
    # "a, b c" -> one item per line
    tr -s ', ' '\n' <<<"$1" | grep -v '^$' || true
}

validate_access() {
    local entry member
    if [[ -n $ALLOWED_WORKFLOWS ]]; then
        ALLOWED_WORKFLOWS="$(split_list "$ALLOWED_WORKFLOWS" | paste -sd, -)"
        [[ -n $ALLOWED_WORKFLOWS ]] || die "--allowed-workflows holds no entry"
        while IFS= read -r entry; do
            [[ $entry =~ $ALLOWED_WORKFLOW_RE ]] ||
                die "--allowed-workflows entry '$entry' is not projects/PROJECT/locations/LOCATION/workflows/WORKFLOW ('*' for a whole segment)"
        done < <(split_list "$ALLOWED_WORKFLOWS")
    elif $SKIP_DEMO_WORKFLOW; then
        die "--skip-demo-workflow needs --allowed-workflows: the default allows only the demo workflow"
    fi
    mapfile -t PUBLISHER_MEMBERS < <(split_list "$PUBLISHERS")
    mapfile -t HTTP_INVOKER_MEMBERS < <(split_list "$HTTP_INVOKERS")
    for member in "${PUBLISHER_MEMBERS[@]}" "${HTTP_INVOKER_MEMBERS[@]}"; do
        [[ $member =~ $MEMBER_RE ]] ||
            die "'$member' is not an IAM member such as serviceAccount:worker@PROJECT.iam.gserviceaccount.com (allUsers and allAuthenticatedUsers are refused)"
    done
    if ((${#HTTP_INVOKER_MEMBERS[@]} > 0)) && ! $WITH_HTTP_FUNCTION; then
        die "--http-invoker needs --with-http-function"
    fi
    case $HTTP_INGRESS in
    internal-only | internal-and-gclb | all) ;;
    *) die "--http-ingress must be internal-only, internal-and-gclb or all" ;;
    esac
    if [[ -n $ALERT_CHANNEL && ! $ALERT_CHANNEL =~ ^projects/[^/]+/notificationChannels/[0-9]+$ ]]; then
        die "--alert-channel must be projects/PROJECT/notificationChannels/ID (gcloud beta monitoring channels list)"
    fi
    [[ $ALERT_POLICY_NAME =~ ^[^\"\\]+$ ]] || die "ALERT_POLICY_NAME must not be empty or hold quotes or backslashes"
    if [[ -n $ALERT_OLDEST_UNACKED_SECONDS ]] && ! is_int "$ALERT_OLDEST_UNACKED_SECONDS"; then
        die "ALERT_OLDEST_UNACKED_SECONDS must be whole seconds"
    fi
}
PUBLISHER_MEMBERS=()
HTTP_INVOKER_MEMBERS=()
validate

FUNCTION_SA="$FUNCTION_SA_NAME@$PROJECT_ID.iam.gserviceaccount.com"
TRIGGER_SA="$TRIGGER_SA_NAME@$PROJECT_ID.iam.gserviceaccount.com"
WORKFLOW_SA="$WORKFLOW_SA_NAME@$PROJECT_ID.iam.gserviceaccount.com"
BUILD_SA="$BUILD_SA_NAME@$PROJECT_ID.iam.gserviceaccount.com"
RELAY_TOPIC_PATH="projects/$PROJECT_ID/topics/$RELAY_TOPIC"
# For push delivery the ack deadline is the push request's timeout
# (ackDeadlineSeconds, https://cloud.google.com/pubsub/docs/reference/rest/v1/projects.subscriptions):
# it must outlast one whole function run, or Pub/Sub redelivers mid-call.
ACK_DEADLINE=$((FUNCTION_TIMEOUT > 10 ? FUNCTION_TIMEOUT : 10))
# How long a message may wait on the trigger's subscription when every
# delivery fails slowly: each attempt may run the full timeout, then back off
# up to MAX_RETRY_DELAY. Older than that, delivery is stuck, not retrying.
RETRY_WINDOW_SECONDS=${ALERT_OLDEST_UNACKED_SECONDS:-$((MAX_DELIVERY_ATTEMPTS * (FUNCTION_TIMEOUT + MAX_RETRY_DELAY)))}
CUSTOM_ROLE="projects/$PROJECT_ID/roles/$CUSTOM_ROLE_ID"
DEAD_LETTER_TOPIC_PATH="projects/$PROJECT_ID/topics/$DEAD_LETTER_TOPIC"
if $USE_INVOKER_ROLE; then
    FUNCTION_ROLE=roles/workflows.invoker
else
    FUNCTION_ROLE=$CUSTOM_ROLE
fi
P=(--project="$PROJECT_ID")

summary() {
    local note=""
    if $DRY_RUN; then
        note=" (dry run: nothing will change)"
    fi
    say "workflows-callback-relay: $MODE$note"
    say "  project            $PROJECT_ID"
    say "  region             $REGION"
    say "  relay topic        $RELAY_TOPIC"
    say "  dead-letter topic  $DEAD_LETTER_TOPIC (subscription $DEAD_LETTER_SUBSCRIPTION, retention $DEAD_LETTER_RETENTION)"
    say "  function           $FUNCTION_NAME ($FUNCTION_RUNTIME, entry point relay, $FUNCTION_MEMORY, cpu $FUNCTION_CPU, concurrency $FUNCTION_CONCURRENCY, max instances $FUNCTION_MAX_INSTANCES, timeout ${FUNCTION_TIMEOUT}s)"
    if $WITH_HTTP_FUNCTION; then
        say "  HTTP function      $HTTP_FUNCTION_NAME (entry point relay_http, ingress $HTTP_INGRESS, invokers: ${HTTP_INVOKER_MEMBERS[*]:-none})"
    fi
    say "  allowed workflows  ${ALLOWED_WORKFLOWS:-the demo workflow $WORKFLOW_NAME, by project id and number}"
    say "  publishers         ${PUBLISHER_MEMBERS[*]:-none}$($SKIP_DEMO_WORKFLOW || printf ' (and the demo workflow)')"
    if $SKIP_DEMO_WORKFLOW; then
        say "  workflow           none (--skip-demo-workflow)"
    else
        say "  workflow           $WORKFLOW_NAME (RELAY_TOPIC=$RELAY_TOPIC)"
    fi
    say "  service accounts   $FUNCTION_SA (function), $TRIGGER_SA (trigger), $BUILD_SA (build)$($SKIP_DEMO_WORKFLOW || printf ', %s (workflow)' "$WORKFLOW_SA")"
    say "  function role      $FUNCTION_ROLE"
    say "  delivery policy    $MAX_DELIVERY_ATTEMPTS attempts, backoff ${MIN_RETRY_DELAY}s-${MAX_RETRY_DELAY}s, then $DEAD_LETTER_TOPIC; ack deadline ${ACK_DEADLINE}s"
    if [[ -n $ALERT_CHANNEL ]]; then
        say "  alert policy       $ALERT_POLICY_NAME -> $ALERT_CHANNEL"
    fi
}

# --- deploy steps -------------------------------------------------------------
PROJECT_NUMBER=""
PUBSUB_AGENT=""
ALLOWED=""

enable_apis() {
    step "Enable APIs" "Enabling APIs needs serviceusage.services.enable (roles/serviceusage.serviceUsageAdmin) and a billing account on the project."
    local enabled="" missing=() api
    local -a apis=("${REQUIRED_APIS[@]}")
    [[ -z $ALERT_CHANNEL ]] || apis+=(monitoring.googleapis.com)
    if query services list --enabled "${P[@]}" --format="value(config.name)"; then
        enabled=$QUERY_OUT
    fi
    for api in "${apis[@]}"; do
        if grep -Fxq "$api" <<<"$enabled"; then
            say "    = $api"
        else
            missing+=("$api")
        fi
    done
    if ((${#missing[@]} > 0)); then
        run gcloud services enable "${missing[@]}" "${P[@]}"
    fi
}

lookup_project_number() {
    step "Look up the project number" "Reading the project needs resourcemanager.projects.get (roles/browser). Check: gcloud projects describe $PROJECT_ID"
    PROJECT_NUMBER=""
    if query projects describe "$PROJECT_ID" --format="value(projectNumber)"; then
        PROJECT_NUMBER=$QUERY_OUT
    fi
    if [[ -z $PROJECT_NUMBER ]]; then
        $DRY_RUN || [[ $MODE == status ]] || die "could not read the number of project $PROJECT_ID"
        PROJECT_NUMBER="PROJECT_NUMBER"
    fi
    PUBSUB_AGENT="service-$PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com"
    # The callback URL may name the project by id or by number: by default
    # allow both, for the demo workflow only.
    ALLOWED=$ALLOWED_WORKFLOWS
    if [[ -z $ALLOWED ]]; then
        ALLOWED="projects/$PROJECT_ID/locations/$REGION/workflows/$WORKFLOW_NAME"
        ALLOWED+=",projects/$PROJECT_NUMBER/locations/$REGION/workflows/$WORKFLOW_NAME"
    fi
    [[ $MODE == status ]] || say "    project number $PROJECT_NUMBER; Pub/Sub service agent $PUBSUB_AGENT"
}

ensure_topic() {
    local topic=$1
    if exists pubsub topics describe "$topic" "${P[@]}" --format="value(name)"; then
        say "    = topic $topic"
    else
        run gcloud pubsub topics create "$topic" "${P[@]}"
    fi
}

create_topics() {
    step "Create the topics" "Creating topics needs pubsub.topics.create (roles/pubsub.editor)."
    ensure_topic "$RELAY_TOPIC"
    ensure_topic "$DEAD_LETTER_TOPIC"
    step "Create the dead-letter subscription" "Creating subscriptions needs pubsub.subscriptions.create (roles/pubsub.editor)."
    # Kept so that tools/replay_dead_letters.py can move messages back; never
    # expires, and a message stays for DEAD_LETTER_RETENTION (at most 31d).
    if exists pubsub subscriptions describe "$DEAD_LETTER_SUBSCRIPTION" "${P[@]}" --format="value(name)"; then
        say "    = subscription $DEAD_LETTER_SUBSCRIPTION"
    else
        run gcloud pubsub subscriptions create "$DEAD_LETTER_SUBSCRIPTION" "${P[@]}" \
            --topic="$DEAD_LETTER_TOPIC" \
            --message-retention-duration="$DEAD_LETTER_RETENTION" \
            --expiration-period=never \
            --ack-deadline=60
    fi
}

ensure_service_account() {
    local name=$1 email=$2 display=$3
    if exists iam service-accounts describe "$email" "${P[@]}" --format="value(email)"; then
        say "    = service account $email"
    else
        run gcloud iam service-accounts create "$name" "${P[@]}" --display-name="$display"
    fi
}

create_service_accounts() {
    step "Create the service accounts" "Creating service accounts needs iam.serviceAccounts.create (roles/iam.serviceAccountAdmin) and the IAM API."
    ensure_service_account "$FUNCTION_SA_NAME" "$FUNCTION_SA" "callback relay function (sends Workflows callbacks)"
    ensure_service_account "$TRIGGER_SA_NAME" "$TRIGGER_SA" "callback relay Eventarc trigger (invokes the function)"
    ensure_service_account "$BUILD_SA_NAME" "$BUILD_SA" "callback relay build (Cloud Build for the function)"
    if ! $SKIP_DEMO_WORKFLOW; then
        ensure_service_account "$WORKFLOW_SA_NAME" "$WORKFLOW_SA" "callback relay demo workflow (publishes to the relay topic)"
    fi
}

ensure_custom_role() {
    # https://cloud.google.com/iam/docs/creating-custom-roles#deleting-custom-role:
    # a deleted role can be undeleted for 7 days; after that it is purged and
    # its ID cannot be reused until 37 days after the deletion.
    step "Create the custom role $CUSTOM_ROLE_ID" "Creating roles needs iam.roles.create/get/update/undelete (roles/iam.roleAdmin). A custom role deleted more than 7 days ago cannot be undeleted, and its ID cannot be reused until 37 days after the deletion: run again with CUSTOM_ROLE_ID=another-id (e.g. ${CUSTOM_ROLE_ID}2)."
    local deleted permissions
    if query iam roles describe "$CUSTOM_ROLE_ID" "${P[@]}" --format='value[separator="|"](deleted,includedPermissions)'; then
        # "|", not the default tab: read would merge the empty fields around a tab.
        IFS='|' read -r deleted permissions <<<"$QUERY_OUT"
        if [[ ${deleted,,} == true ]]; then
            run gcloud iam roles undelete "$CUSTOM_ROLE_ID" "${P[@]}"
        fi
        if [[ $permissions != "$CALLBACK_PERMISSION" ]]; then
            run gcloud iam roles update "$CUSTOM_ROLE_ID" "${P[@]}" --permissions="$CALLBACK_PERMISSION" --quiet
        else
            say "    = role $CUSTOM_ROLE ($CALLBACK_PERMISSION)"
        fi
    else
        run gcloud iam roles create "$CUSTOM_ROLE_ID" "${P[@]}" \
            --title="Workflows callback sender" \
            --description="Only $CALLBACK_PERMISSION: resume a waiting execution, nothing else" \
            --permissions="$CALLBACK_PERMISSION" \
            --stage=GA
    fi
}

grant_project_roles() {
    step "Grant project-level roles" "Granting roles needs resourcemanager.projects.getIamPolicy/setIamPolicy (roles/resourcemanager.projectIamAdmin)."
    if $USE_INVOKER_ROLE; then
        warn "--use-invoker-role: $FUNCTION_SA gets roles/workflows.invoker, which also lets it start and cancel every workflow in $PROJECT_ID. The default custom role $CUSTOM_ROLE_ID holds only $CALLBACK_PERMISSION."
    fi
    local grant
    while IFS= read -r grant; do
        # shellcheck disable=SC2086 # the record's fields are single words
        ensure_binding projects "$PROJECT_ID" ${grant}
    done < <(project_grants)
    step "Let the publishers publish to $RELAY_TOPIC" "Setting topic IAM needs pubsub.topics.getIamPolicy/setIamPolicy (roles/pubsub.admin on the topic). Each --publisher must exist: gcloud iam service-accounts describe EMAIL."
    local member
    while IFS= read -r member; do
        ensure_binding "pubsub topics" "$RELAY_TOPIC" "$member" roles/pubsub.publisher "${P[@]}"
    done < <(publisher_members)
}

# "MEMBER ROLE" per line: the project-level grants this script makes.
project_grants() {
    # Workflows has no per-workflow IAM, so the callback permission is granted
    # on the project; ALLOWED_WORKFLOWS narrows what the relay will call.
    printf '%s %s\n' "serviceAccount:$FUNCTION_SA" "$FUNCTION_ROLE"
    local role
    for role in "${BUILD_ROLES[@]}"; do
        printf '%s %s\n' "serviceAccount:$BUILD_SA" "$role"
    done
    $SKIP_DEMO_WORKFLOW || printf '%s %s\n' "serviceAccount:$WORKFLOW_SA" roles/logging.logWriter
}

publisher_members() {
    $SKIP_DEMO_WORKFLOW || printf '%s\n' "serviceAccount:$WORKFLOW_SA"
    ((${#PUBLISHER_MEMBERS[@]} == 0)) || printf '%s\n' "${PUBLISHER_MEMBERS[@]}"
}

function_env_vars() {
    # '^@^' makes @ the list separator, so ALLOWED_WORKFLOWS may hold commas
    # (gcloud topic escaping).
    local env_vars="^@^ALLOWED_WORKFLOWS=$ALLOWED"
    env_vars+="@CALLBACK_RETRY_DEADLINE_SECONDS=$CALLBACK_RETRY_DEADLINE_SECONDS"
    env_vars+="@CALLBACK_CONNECT_TIMEOUT_SECONDS=$CALLBACK_CONNECT_TIMEOUT_SECONDS"
    env_vars+="@CALLBACK_READ_TIMEOUT_SECONDS=$CALLBACK_READ_TIMEOUT_SECONDS"
    env_vars+="@LOG_LEVEL=$LOG_LEVEL"
    # functions-framework serves with gunicorn; one thread per concurrent request.
    env_vars+="@THREADS=$FUNCTION_CONCURRENCY"
    printf '%s' "$env_vars"
}

# Flags both functions share: runtime, source, identity, build account, limits.
common_function_flags() {
    COMMON_FLAGS=(
        --gen2
        --region="$REGION"
        "${P[@]}"
        --runtime="$FUNCTION_RUNTIME"
        --source="$SCRIPT_DIR/function"
        --service-account="$FUNCTION_SA"
        # A build account of our own: since July 2024 a new project's default
        # Cloud Build account may lack the roles a build needs, and with
        # --quiet gcloud does not warn.
        # https://cloud.google.com/functions/docs/securing/build-custom-sa
        --build-service-account="projects/$PROJECT_ID/serviceAccounts/$BUILD_SA"
        --set-env-vars="$(function_env_vars)"
        --memory="$FUNCTION_MEMORY"
        --cpu="$FUNCTION_CPU"
        --concurrency="$FUNCTION_CONCURRENCY"
        --max-instances="$FUNCTION_MAX_INSTANCES"
        --timeout="${FUNCTION_TIMEOUT}s"
        --no-allow-unauthenticated
    )
}

FUNCTION_STATE=""
FUNCTION_HASH=""
FUNCTION_SERVICE=""
FUNCTION_TRIGGER=""
TRIGGER_TOPIC=""
TRIGGER_ACCOUNT=""
TRIGGER_RETRY=""
FUNCTION_ALLOWED=""

describe_function() {
    FUNCTION_STATE="" FUNCTION_HASH="" FUNCTION_SERVICE="" FUNCTION_TRIGGER=""
    TRIGGER_TOPIC="" TRIGGER_ACCOUNT="" TRIGGER_RETRY="" FUNCTION_ALLOWED=""
    query functions describe "$FUNCTION_NAME" --region="$REGION" "${P[@]}" --v2 \
        --format='value[separator="|"](state,labels.deploy_hash,serviceConfig.service,eventTrigger.trigger,eventTrigger.pubsubTopic,eventTrigger.serviceAccountEmail,eventTrigger.retryPolicy,serviceConfig.environmentVariables.ALLOWED_WORKFLOWS)' || return 1
    IFS='|' read -r FUNCTION_STATE FUNCTION_HASH FUNCTION_SERVICE FUNCTION_TRIGGER \
        TRIGGER_TOPIC TRIGGER_ACCOUNT TRIGGER_RETRY FUNCTION_ALLOWED <<<"$QUERY_OUT"
}

# What must change on the function's trigger; empty when it is as wanted.
trigger_drift() {
    local drift=()
    [[ $TRIGGER_TOPIC == "$RELAY_TOPIC_PATH" ]] || drift+=("topic ${TRIGGER_TOPIC:-none} -> $RELAY_TOPIC_PATH")
    [[ $TRIGGER_ACCOUNT == "$TRIGGER_SA" ]] || drift+=("service account ${TRIGGER_ACCOUNT:-none} -> $TRIGGER_SA")
    [[ $TRIGGER_RETRY == RETRY_POLICY_RETRY ]] || drift+=("retry ${TRIGGER_RETRY:-none} -> RETRY_POLICY_RETRY")
    local IFS=';'
    printf '%s' "${drift[*]}"
}

deploy_function() {
    step "Deploy the function $FUNCTION_NAME" "Read the build log link above. Deploying needs roles/cloudfunctions.developer, iam.serviceAccounts.actAs (roles/iam.serviceAccountUser) on $FUNCTION_SA, $TRIGGER_SA and $BUILD_SA, and eventarc.triggers.get (roles/eventarc.viewer) to read the trigger back."
    local fingerprint drift
    common_function_flags
    local -a trigger_flags=(
        --trigger-topic="$RELAY_TOPIC"
        --retry
        --trigger-service-account="$TRIGGER_SA"
    )
    local -a flags=("${COMMON_FLAGS[@]}" --entry-point=relay --ingress-settings=internal-only)
    # The fingerprint covers the trigger flags too, passed or not.
    fingerprint="$({ source_fingerprint "$SCRIPT_DIR/function"; printf '%s\n' "${flags[@]}" "${trigger_flags[@]}"; } | sha256)"
    if describe_function; then
        drift="$(trigger_drift)"
        if ! $FORCE && [[ $FUNCTION_STATE == ACTIVE && $FUNCTION_HASH == "$fingerprint" && -z $drift ]]; then
            say "    = function $FUNCTION_NAME is active with the same source and settings (use --force to redeploy)"
            return 0
        fi
        if [[ -z $drift ]]; then
            # gcloud functions deploy --help: "If you don't specify a trigger
            # when deploying an update to an existing function it will keep its
            # current trigger." Passing --trigger-topic again puts the trigger in
            # the update mask, which can recreate the Eventarc trigger and its
            # subscription, dropping the delivery policy set below.
            say "    = trigger unchanged (topic, service account, retry): redeploying without trigger flags, so the trigger and its subscription stay"
        else
            warn "the trigger of $FUNCTION_NAME must change (${drift//;/, }): gcloud will recreate the Eventarc trigger and its subscription; the next step sets the delivery policy again"
            flags+=("${trigger_flags[@]}")
        fi
    else
        flags+=("${trigger_flags[@]}")
    fi
    run gcloud functions deploy "$FUNCTION_NAME" "${flags[@]}" --update-labels="deploy_hash=$fingerprint" --quiet
    if $DRY_RUN; then
        describe_function || true
    else
        describe_function || die "function $FUNCTION_NAME not found after deploying it"
    fi
}

grant_trigger_invoker() {
    step "Let the trigger invoke the function" "Setting Cloud Run IAM needs run.services.getIamPolicy/setIamPolicy (roles/run.admin) on the function's service."
    # On the function's own Cloud Run service only, not on the project.
    ensure_binding "run services" "$(service_of "$FUNCTION_SERVICE" "$FUNCTION_NAME")" "serviceAccount:$TRIGGER_SA" roles/run.invoker --region="$REGION" "${P[@]}"
}

service_of() {
    local service=${1##*/}
    printf '%s' "${service:-$2}"
}

TRIGGER_SUBSCRIPTION=""

# The Pub/Sub subscription Eventarc created for the trigger:
# https://cloud.google.com/eventarc/docs/retry-events (transport.pubsub.subscription).
find_trigger_subscription() {
    TRIGGER_SUBSCRIPTION=""
    if [[ -n $FUNCTION_TRIGGER ]] &&
        query eventarc triggers describe "$FUNCTION_TRIGGER" --location="$REGION" "${P[@]}" \
            --format="value(transport.pubsub.subscription)"; then
        TRIGGER_SUBSCRIPTION=$QUERY_OUT
    fi
    [[ -n $TRIGGER_SUBSCRIPTION ]]
}

SUB_DEAD_LETTER_TOPIC=""
SUB_MAX_ATTEMPTS=""
SUB_MIN_BACKOFF=""
SUB_MAX_BACKOFF=""
SUB_ACK_DEADLINE=""

describe_delivery() {
    SUB_DEAD_LETTER_TOPIC="" SUB_MAX_ATTEMPTS="" SUB_MIN_BACKOFF="" SUB_MAX_BACKOFF="" SUB_ACK_DEADLINE=""
    query pubsub subscriptions describe "$1" "${P[@]}" \
        --format='value[separator="|"](deadLetterPolicy.deadLetterTopic,deadLetterPolicy.maxDeliveryAttempts,retryPolicy.minimumBackoff,retryPolicy.maximumBackoff,ackDeadlineSeconds)' || return 1
    IFS='|' read -r SUB_DEAD_LETTER_TOPIC SUB_MAX_ATTEMPTS SUB_MIN_BACKOFF SUB_MAX_BACKOFF SUB_ACK_DEADLINE <<<"$QUERY_OUT"
}

dead_letter_ok() { [[ $SUB_DEAD_LETTER_TOPIC == "$DEAD_LETTER_TOPIC_PATH" && $SUB_MAX_ATTEMPTS == "$MAX_DELIVERY_ATTEMPTS" ]]; }
retry_ok() { [[ $SUB_MIN_BACKOFF == "${MIN_RETRY_DELAY}s" && $SUB_MAX_BACKOFF == "${MAX_RETRY_DELAY}s" ]]; }
ack_deadline_ok() { is_int "$SUB_ACK_DEADLINE" && ((SUB_ACK_DEADLINE >= ACK_DEADLINE)); }

delivery_update_cmd() {
    DELIVERY_UPDATE=(
        gcloud pubsub subscriptions update "$1" "${P[@]}"
        --dead-letter-topic="$DEAD_LETTER_TOPIC_PATH"
        --max-delivery-attempts="$MAX_DELIVERY_ATTEMPTS"
        --min-retry-delay="${MIN_RETRY_DELAY}s"
        --max-retry-delay="${MAX_RETRY_DELAY}s"
        --ack-deadline="$ACK_DEADLINE"
        --quiet
    )
}

configure_delivery() {
    step "Configure the trigger's subscription" "The subscription is created by Eventarc with the function; reading it needs eventarc.triggers.get (roles/eventarc.viewer) and pubsub.subscriptions.get/update (roles/pubsub.editor). See gcloud eventarc triggers describe ${FUNCTION_TRIGGER:-TRIGGER} --location=$REGION."
    if ! find_trigger_subscription; then
        $DRY_RUN || die "no Pub/Sub subscription found on the trigger of $FUNCTION_NAME (${FUNCTION_TRIGGER:-no trigger})"
        TRIGGER_SUBSCRIPTION="EVENTARC_SUBSCRIPTION"
    fi
    local subscription=$TRIGGER_SUBSCRIPTION
    say "    trigger $FUNCTION_TRIGGER -> subscription $subscription"
    describe_delivery "$subscription" || true
    if dead_letter_ok && retry_ok && ack_deadline_ok; then
        say "    = dead letter after $MAX_DELIVERY_ATTEMPTS attempts to $DEAD_LETTER_TOPIC, backoff ${MIN_RETRY_DELAY}s-${MAX_RETRY_DELAY}s, ack deadline ${SUB_ACK_DEADLINE}s"
    else
        delivery_update_cmd "$subscription"
        run "${DELIVERY_UPDATE[@]}"
    fi
    step "Let Pub/Sub dead-letter" "Setting Pub/Sub IAM needs pubsub.topics/subscriptions.getIamPolicy/setIamPolicy (roles/pubsub.admin); the service agent $PUBSUB_AGENT appears once the Pub/Sub API is enabled."
    # https://cloud.google.com/pubsub/docs/handling-failures: the Pub/Sub
    # service agent publishes to the dead-letter topic and acks on the source.
    ensure_binding "pubsub topics" "$DEAD_LETTER_TOPIC" "serviceAccount:$PUBSUB_AGENT" roles/pubsub.publisher "${P[@]}"
    ensure_binding "pubsub subscriptions" "$subscription" "serviceAccount:$PUBSUB_AGENT" roles/pubsub.subscriber "${P[@]}"
    if $LEGACY_TOKEN_CREATOR; then
        # Only Pub/Sub service agents enabled on or before 2021-04-08 need this
        # to mint the push's OIDC token (https://cloud.google.com/eventarc/standard/docs/functions/roles-permissions).
        # Granted on the trigger account only, not the project.
        ensure_binding "iam service-accounts" "$TRIGGER_SA" "serviceAccount:$PUBSUB_AGENT" \
            roles/iam.serviceAccountTokenCreator "${P[@]}"
    fi
}

HTTP_STATE=""
HTTP_HASH=""
HTTP_SERVICE=""
HTTP_INGRESS_NOW=""

describe_http_function() {
    HTTP_STATE="" HTTP_HASH="" HTTP_SERVICE="" HTTP_INGRESS_NOW=""
    query functions describe "$HTTP_FUNCTION_NAME" --region="$REGION" "${P[@]}" --v2 \
        --format='value[separator="|"](state,labels.deploy_hash,serviceConfig.service,serviceConfig.ingressSettings)' || return 1
    IFS='|' read -r HTTP_STATE HTTP_HASH HTTP_SERVICE HTTP_INGRESS_NOW <<<"$QUERY_OUT"
}

# --ingress-settings value -> the API's serviceConfig.ingressSettings
ingress_enum() {
    case $1 in
    internal-only) printf 'ALLOW_INTERNAL_ONLY' ;;
    internal-and-gclb) printf 'ALLOW_INTERNAL_AND_GCLB' ;;
    all) printf 'ALLOW_ALL' ;;
    esac
}

deploy_http_function() {
    step "Deploy the HTTP function $HTTP_FUNCTION_NAME" "Deploying needs roles/cloudfunctions.developer and iam.serviceAccounts.actAs (roles/iam.serviceAccountUser) on $FUNCTION_SA and $BUILD_SA."
    local fingerprint
    common_function_flags
    # The ?callback_url= service: callers need roles/run.invoker (--http-invoker),
    # never allUsers; ingress stays internal unless --http-ingress says otherwise.
    local -a flags=("${COMMON_FLAGS[@]}" --entry-point=relay_http --trigger-http --ingress-settings="$HTTP_INGRESS")
    fingerprint="$({ source_fingerprint "$SCRIPT_DIR/function"; printf '%s\n' "${flags[@]}"; } | sha256)"
    if ! $FORCE && describe_http_function && [[ $HTTP_STATE == ACTIVE && $HTTP_HASH == "$fingerprint" ]]; then
        say "    = function $HTTP_FUNCTION_NAME is active with the same source and settings"
    else
        run gcloud functions deploy "$HTTP_FUNCTION_NAME" "${flags[@]}" --update-labels="deploy_hash=$fingerprint" --quiet
        $DRY_RUN || describe_http_function || die "function $HTTP_FUNCTION_NAME not found after deploying it"
    fi
    step "Let the HTTP invokers call $HTTP_FUNCTION_NAME" "Setting Cloud Run IAM needs run.services.getIamPolicy/setIamPolicy (roles/run.admin) on the function's service. Each --http-invoker must exist."
    local member
    for member in "${HTTP_INVOKER_MEMBERS[@]}"; do
        ensure_binding "run services" "$(service_of "$HTTP_SERVICE" "$HTTP_FUNCTION_NAME")" "$member" roles/run.invoker --region="$REGION" "${P[@]}"
    done
    ((${#HTTP_INVOKER_MEMBERS[@]} > 0)) || say "    no --http-invoker: nobody may call it yet"
}

deploy_workflow() {
    step "Deploy the workflow $WORKFLOW_NAME" "Deploying needs roles/workflows.editor and iam.serviceAccounts.actAs (roles/iam.serviceAccountUser) on $WORKFLOW_SA."
    local fingerprint
    local -a flags=(
        --location="$REGION"
        "${P[@]}"
        --source="$SCRIPT_DIR/workflow.yaml"
        --service-account="$WORKFLOW_SA"
        --set-env-vars="RELAY_TOPIC=$RELAY_TOPIC"
    )
    fingerprint="$({ sha256 <"$SCRIPT_DIR/workflow.yaml"; printf '%s\n' "${flags[@]}"; } | sha256)"
    if ! $FORCE && query workflows describe "$WORKFLOW_NAME" --location="$REGION" "${P[@]}" \
        --format="value(state,labels.deploy_hash)" &&
        [[ $QUERY_OUT == "ACTIVE"$'\t'"$fingerprint" ]]; then
        say "    = workflow $WORKFLOW_NAME is active with the same source and settings"
        return 0
    fi
    run gcloud workflows deploy "$WORKFLOW_NAME" "${flags[@]}" --labels="deploy_hash=$fingerprint"
}

# --- alert policy ------------------------------------------------------------------
TMP_FILES=()
cleanup() {
    [[ -z $QUERY_ERR ]] || TMP_FILES+=("$QUERY_ERR")
    ((${#TMP_FILES[@]} == 0)) || rm -f "${TMP_FILES[@]}"
}
trap cleanup EXIT

# One threshold condition on a subscription metric. Metric names:
# https://cloud.google.com/monitoring/api/metrics_gcp_p_z#gcp-pubsub
alert_condition() {
    local display=$1 subscription=$2 metric=$3 threshold=$4 duration=$5
    cat <<EOF
    {
      "displayName": "$display",
      "conditionThreshold": {
        "filter": "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"$subscription\" AND metric.type = \"pubsub.googleapis.com/subscription/$metric\"",
        "aggregations": [{"alignmentPeriod": "60s", "perSeriesAligner": "ALIGN_MAX"}],
        "comparison": "COMPARISON_GT",
        "thresholdValue": $threshold,
        "duration": "$duration",
        "trigger": {"count": 1}
      }
    }
EOF
}

# The AlertPolicy resource (https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.alertPolicies),
# labelled with its own fingerprint so that an unchanged policy is not rewritten.
alert_policy_json() {
    local hash=$1 trigger_sub=${TRIGGER_SUBSCRIPTION##*/}
    cat <<EOF
{
  "displayName": "$ALERT_POLICY_NAME",
  "combiner": "OR",
  "userLabels": {"deploy_hash": "$hash"},
  "notificationChannels": ["$ALERT_CHANNEL"],
  "documentation": {
    "mimeType": "text/markdown",
    "content": "Messages for workflows-callback-relay are stuck or dead-lettered. Check: ./deploy.sh --project $PROJECT_ID --status. Replay dead letters: python -m tools.replay_dead_letters --project $PROJECT_ID --subscription $DEAD_LETTER_SUBSCRIPTION --topic $RELAY_TOPIC"
  },
  "conditions": [
$(alert_condition "Dead letters held for 5 minutes on $DEAD_LETTER_SUBSCRIPTION" "$DEAD_LETTER_SUBSCRIPTION" num_undelivered_messages 0 300s),
$(alert_condition "A message on $trigger_sub is older than the retry window (${RETRY_WINDOW_SECONDS}s)" "$trigger_sub" oldest_unacked_message_age "$RETRY_WINDOW_SECONDS" 0s)
  ]
}
EOF
}

ALERT_POLICY=""
ALERT_HASH=""

describe_alert_policy() {
    ALERT_POLICY="" ALERT_HASH=""
    query alpha monitoring policies list "${P[@]}" --filter="displayName=\"$ALERT_POLICY_NAME\"" \
        --format='value[separator="|"](name,userLabels.deploy_hash)' || return 1
    [[ -n $QUERY_OUT ]] || return 1
    if (($(wc -l <<<"$QUERY_OUT") > 1)); then
        die "several alert policies are named '$ALERT_POLICY_NAME'; delete the extra ones (gcloud alpha monitoring policies list --filter='displayName=\"$ALERT_POLICY_NAME\"') or set ALERT_POLICY_NAME"
    fi
    IFS='|' read -r ALERT_POLICY ALERT_HASH <<<"$QUERY_OUT"
}

wanted_alert_hash() {
    alert_policy_json "" | sha256
}

ensure_alert_policy() {
    step "Alert on stuck and dead-lettered messages" "Alert policies need monitoring.alertPolicies.list/create/update (roles/monitoring.alertPolicyEditor); gcloud 528 has them only in the alpha track (gcloud components install alpha)."
    local hash file
    hash="$(wanted_alert_hash)"
    if describe_alert_policy && [[ $ALERT_HASH == "$hash" ]]; then
        say "    = alert policy '$ALERT_POLICY_NAME' ($ALERT_POLICY)"
        return 0
    fi
    file="$(mktemp "${TMPDIR:-/tmp}/alert-policy.XXXXXX")"
    TMP_FILES+=("$file")
    alert_policy_json "$hash" >"$file"
    if [[ -n $ALERT_POLICY ]]; then
        # Without --fields, update replaces the policy with the file's.
        run gcloud alpha monitoring policies update "$ALERT_POLICY" "${P[@]}" --policy-from-file="$file"
    else
        run gcloud alpha monitoring policies create "${P[@]}" --policy-from-file="$file"
    fi
}

print_next_steps() {
    CURRENT_STEP="done"
    say ""
    if $DRY_RUN; then
        say "Dry run finished: nothing was changed. Run without --dry-run to apply."
        return
    fi
    say "Deployed. Check it any time with: $PROG --project $PROJECT_ID --status"
    if ! $SKIP_DEMO_WORKFLOW; then
        cat <<EOF
Start an execution and watch the callback resume it:

  gcloud workflows run $WORKFLOW_NAME --location=$REGION --project=$PROJECT_ID \\
      --data='{"payload": {"hello": "world"}, "timeout": 300}'

  The result is {"status": "RESUMED", "body": {"hello": "world"}, ...}.
EOF
    fi
    cat <<EOF

Logs:
  function   gcloud functions logs read $FUNCTION_NAME --region=$REGION --project=$PROJECT_ID --limit=50
             https://console.cloud.google.com/functions/details/$REGION/$FUNCTION_NAME?project=$PROJECT_ID&tab=logs
EOF
    if ! $SKIP_DEMO_WORKFLOW; then
        cat <<EOF
  workflow   gcloud workflows executions list $WORKFLOW_NAME --location=$REGION --project=$PROJECT_ID
             https://console.cloud.google.com/workflows/workflow/$REGION/$WORKFLOW_NAME/executions?project=$PROJECT_ID
EOF
    fi
    cat <<EOF
  dead letters (after $MAX_DELIVERY_ATTEMPTS failed deliveries), to move them back:
             python -m tools.replay_dead_letters --project $PROJECT_ID --subscription $DEAD_LETTER_SUBSCRIPTION --topic $RELAY_TOPIC
EOF
}

deploy() {
    summary
    enable_apis
    lookup_project_number
    create_topics
    create_service_accounts
    if ! $USE_INVOKER_ROLE; then
        ensure_custom_role
    fi
    grant_project_roles
    deploy_function
    grant_trigger_invoker
    configure_delivery
    if $WITH_HTTP_FUNCTION; then
        deploy_http_function
    fi
    if [[ -n $ALERT_CHANNEL ]]; then
        ensure_alert_policy
    fi
    if ! $SKIP_DEMO_WORKFLOW; then
        deploy_workflow
    fi
    print_next_steps
}

# --- status: read only ------------------------------------------------------------
PROBLEMS=0
ok() { say "  OK    $1"; }
problem() {
    PROBLEMS=$((PROBLEMS + 1))
    say "  FAIL  $1"
    say "        fix: $2"
}

redeploy_cmd() {
    local -a args=() arg
    for arg in "${ORIGINAL_ARGS[@]}"; do
        [[ $arg == --status ]] || args+=("$arg")
    done
    [[ " ${args[*]} " == *" --project"* ]] || args=(--project "$PROJECT_ID" "${args[@]}")
    printf './%s %s' "$PROG" "$(quote_cmd "${args[@]}")"
}

check_binding() {
    local kind=$1 resource=$2 member=$3 role=$4
    shift 4
    local -a group extra=()
    read -r -a group <<<"$kind"
    [[ $kind != projects ]] || extra=(--condition=None)
    if has_binding "$kind" "$resource" "$member" "$role" "$@"; then
        ok "$role for $member on ${kind##* } $resource"
    else
        problem "$role for $member on ${kind##* } $resource is missing" \
            "$(quote_cmd gcloud "${group[@]}" add-iam-policy-binding "$resource" "$@" "${extra[@]}" --member="$member" --role="$role")"
    fi
}

iso_time() {
    date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u -r "$1" +%Y-%m-%dT%H:%M:%SZ
}

# Undelivered messages on the dead-letter subscription, from Cloud Monitoring
# (timeSeries.list: https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.timeSeries/list);
# gcloud has no read-only command for a subscription's backlog. Empty when unknown.
dead_letter_backlog() {
    local now out
    command -v curl >/dev/null || return 1
    query auth print-access-token || return 1
    now="$(date -u +%s)"
    # The token goes on stdin, never on the command line.
    out="$(printf 'Authorization: Bearer %s\n' "$QUERY_OUT" | curl -fsS --max-time 20 --get -H @- \
        --data-urlencode "filter=metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND resource.labels.subscription_id = \"$DEAD_LETTER_SUBSCRIPTION\"" \
        --data-urlencode "interval.startTime=$(iso_time $((now - 600)))" \
        --data-urlencode "interval.endTime=$(iso_time "$now")" \
        "$MONITORING_API/v3/projects/$PROJECT_ID/timeSeries" 2>/dev/null)" || return 1
    QUERY_OUT=""
    # Points come newest first; no series at all means no messages reported.
    out="$(grep -o '"int64Value": *"[0-9]*"' <<<"$out" | head -n 1 | sed 's/.*: *"\([0-9]*\)"/\1/' || true)"
    printf '%s' "${out:-0}"
}

status() {
    CURRENT_STEP="status"
    say "workflows-callback-relay: status of project $PROJECT_ID, region $REGION (read-only)"
    lookup_project_number
    local fix
    fix="$(redeploy_cmd)"

    # The function and its trigger.
    if ! describe_function; then
        problem "function $FUNCTION_NAME not found" "$fix"
    else
        if [[ $FUNCTION_STATE == ACTIVE ]]; then
            ok "function $FUNCTION_NAME is ACTIVE"
        else
            problem "function $FUNCTION_NAME is ${FUNCTION_STATE:-in no state}" "$fix --force"
        fi
        local drift
        drift="$(trigger_drift)"
        if [[ -z $drift ]]; then
            ok "trigger $FUNCTION_TRIGGER: topic $RELAY_TOPIC, service account $TRIGGER_SA, retry on"
        else
            problem "trigger differs: ${drift//;/, }" "$fix   (recreates the trigger)"
        fi
        if [[ $FUNCTION_ALLOWED == "$ALLOWED" ]]; then
            ok "allowed workflows: $ALLOWED"
        else
            problem "allowed workflows are '${FUNCTION_ALLOWED:-unset}', want '$ALLOWED'" "$fix"
        fi
        check_binding "run services" "$(service_of "$FUNCTION_SERVICE" "$FUNCTION_NAME")" "serviceAccount:$TRIGGER_SA" roles/run.invoker --region="$REGION" "${P[@]}"
    fi

    # The trigger's subscription: dead letters, retries, ack deadline.
    if ! find_trigger_subscription; then
        problem "no Pub/Sub subscription found on the trigger ${FUNCTION_TRIGGER:-of $FUNCTION_NAME}" "$fix"
    else
        local subscription=$TRIGGER_SUBSCRIPTION
        delivery_update_cmd "$subscription"
        local update
        update="$(quote_cmd "${DELIVERY_UPDATE[@]}")"
        ok "trigger subscription $subscription"
        describe_delivery "$subscription" || true
        if dead_letter_ok; then
            ok "dead-letter policy: $DEAD_LETTER_TOPIC after $MAX_DELIVERY_ATTEMPTS attempts"
        else
            problem "dead-letter policy is '${SUB_DEAD_LETTER_TOPIC:-none}' after '${SUB_MAX_ATTEMPTS:-none}' attempts, want $DEAD_LETTER_TOPIC_PATH after $MAX_DELIVERY_ATTEMPTS" "$update"
        fi
        if retry_ok; then
            ok "retry policy: backoff ${MIN_RETRY_DELAY}s-${MAX_RETRY_DELAY}s"
        else
            problem "retry policy is '${SUB_MIN_BACKOFF:-none}'-'${SUB_MAX_BACKOFF:-none}', want ${MIN_RETRY_DELAY}s-${MAX_RETRY_DELAY}s" "$update"
        fi
        if ack_deadline_ok; then
            ok "ack deadline ${SUB_ACK_DEADLINE}s (at least the function timeout, ${ACK_DEADLINE}s)"
        else
            problem "ack deadline is ${SUB_ACK_DEADLINE:-unknown}s, shorter than the function timeout (${ACK_DEADLINE}s): Pub/Sub would redeliver while a call still runs" "$update"
        fi
        check_binding "pubsub subscriptions" "$subscription" "serviceAccount:$PUBSUB_AGENT" roles/pubsub.subscriber "${P[@]}"
    fi

    # IAM: the custom role, then every grant deploy.sh makes.
    if ! $USE_INVOKER_ROLE; then
        if query iam roles describe "$CUSTOM_ROLE_ID" "${P[@]}" --format='value[separator="|"](deleted,includedPermissions)' &&
            [[ $QUERY_OUT == "|$CALLBACK_PERMISSION" || $QUERY_OUT == "False|$CALLBACK_PERMISSION" ]]; then
            ok "custom role $CUSTOM_ROLE_ID holds only $CALLBACK_PERMISSION"
        else
            problem "custom role $CUSTOM_ROLE_ID is missing, deleted or holds other permissions" "$fix"
        fi
    fi
    local grant member role
    while IFS= read -r grant; do
        read -r member role <<<"$grant"
        check_binding projects "$PROJECT_ID" "$member" "$role"
    done < <(project_grants)
    while IFS= read -r member; do
        check_binding "pubsub topics" "$RELAY_TOPIC" "$member" roles/pubsub.publisher "${P[@]}"
    done < <(publisher_members)
    check_binding "pubsub topics" "$DEAD_LETTER_TOPIC" "serviceAccount:$PUBSUB_AGENT" roles/pubsub.publisher "${P[@]}"
    if $LEGACY_TOKEN_CREATOR; then
        check_binding "iam service-accounts" "$TRIGGER_SA" "serviceAccount:$PUBSUB_AGENT" roles/iam.serviceAccountTokenCreator "${P[@]}"
    fi

    if $WITH_HTTP_FUNCTION; then
        if ! describe_http_function; then
            problem "HTTP function $HTTP_FUNCTION_NAME not found" "$fix"
        else
            if [[ $HTTP_STATE == ACTIVE && $HTTP_INGRESS_NOW == "$(ingress_enum "$HTTP_INGRESS")" ]]; then
                ok "HTTP function $HTTP_FUNCTION_NAME is ACTIVE, ingress $HTTP_INGRESS"
            else
                problem "HTTP function $HTTP_FUNCTION_NAME is ${HTTP_STATE:-in no state}, ingress ${HTTP_INGRESS_NOW:-unknown}" "$fix --force"
            fi
            for member in "${HTTP_INVOKER_MEMBERS[@]}"; do
                check_binding "run services" "$(service_of "$HTTP_SERVICE" "$HTTP_FUNCTION_NAME")" "$member" roles/run.invoker --region="$REGION" "${P[@]}"
            done
        fi
    fi

    if [[ -n $ALERT_CHANNEL ]]; then
        TRIGGER_SUBSCRIPTION=${TRIGGER_SUBSCRIPTION:-EVENTARC_SUBSCRIPTION}
        if describe_alert_policy && [[ $ALERT_HASH == "$(wanted_alert_hash)" ]]; then
            ok "alert policy '$ALERT_POLICY_NAME' -> $ALERT_CHANNEL"
        else
            problem "alert policy '$ALERT_POLICY_NAME' is missing or differs" "$fix"
        fi
    fi

    local backlog
    if backlog="$(dead_letter_backlog)" && [[ -n $backlog ]]; then
        if ((backlog == 0)); then
            ok "dead-letter backlog: 0 messages on $DEAD_LETTER_SUBSCRIPTION"
        else
            problem "dead-letter backlog: $backlog messages on $DEAD_LETTER_SUBSCRIPTION" \
                "read why in the function's logs, fix the cause, then: python -m tools.replay_dead_letters --project $PROJECT_ID --subscription $DEAD_LETTER_SUBSCRIPTION --topic $RELAY_TOPIC"
        fi
    else
        say "  ?     dead-letter backlog unknown (needs curl and monitoring.timeSeries.list, roles/monitoring.viewer)"
        say "        check: gcloud pubsub subscriptions pull $DEAD_LETTER_SUBSCRIPTION --project=$PROJECT_ID --limit=10 (leases them for the ack deadline; does not ack)"
    fi

    CURRENT_STEP="done"
    say ""
    if ((PROBLEMS == 0)); then
        say "Status: all as $PROG leaves it."
        exit 0
    fi
    say "Status: $PROBLEMS problem(s). Run the fix lines above; '$fix' repairs all but the backlog."
    exit 1
}

# --- destroy --------------------------------------------------------------------
confirm_destroy() {
    if $ASSUME_YES || $DRY_RUN; then
        return 0
    fi
    if [[ ! -t 0 ]]; then
        die "--destroy deletes resources in $PROJECT_ID; stdin is not a terminal, so pass --yes to confirm"
    fi
    local answer
    read -r -p "Delete the resources above from project $PROJECT_ID? Type the project id to confirm: " answer
    [[ $answer == "$PROJECT_ID" ]] || die "not confirmed; nothing was deleted"
}

delete_if_exists() {
    local label=$1
    shift
    local -a describe=() delete=()
    while [[ $1 != -- ]]; do
        describe+=("$1")
        shift
    done
    shift
    delete=("$@")
    if exists "${describe[@]}"; then
        run gcloud "${delete[@]}"
    else
        say "    = $label already gone"
    fi
}

destroy() {
    summary
    confirm_destroy
    if ! $SKIP_DEMO_WORKFLOW; then
        step "Delete the workflow" "Deleting needs roles/workflows.admin."
        delete_if_exists "workflow $WORKFLOW_NAME" workflows describe "$WORKFLOW_NAME" --location="$REGION" "${P[@]}" --format="value(name)" -- \
            workflows delete "$WORKFLOW_NAME" --location="$REGION" "${P[@]}" --quiet
    fi
    if [[ -n $ALERT_CHANNEL ]]; then
        step "Delete the alert policy" "Deleting needs roles/monitoring.alertPolicyEditor."
        if describe_alert_policy; then
            run gcloud alpha monitoring policies delete "$ALERT_POLICY" "${P[@]}" --quiet
        else
            say "    = alert policy '$ALERT_POLICY_NAME' already gone"
        fi
    fi
    step "Delete the functions" "Deleting needs roles/cloudfunctions.admin. The Eventarc trigger and its subscription go with the function."
    local name
    for name in "$FUNCTION_NAME" "$HTTP_FUNCTION_NAME"; do
        delete_if_exists "function $name" functions describe "$name" --region="$REGION" "${P[@]}" --format="value(name)" -- \
            functions delete "$name" --region="$REGION" "${P[@]}" --quiet
    done
    step "Delete the topics and the dead-letter subscription" "Deleting needs roles/pubsub.editor. Messages still on $DEAD_LETTER_SUBSCRIPTION are lost."
    delete_if_exists "subscription $DEAD_LETTER_SUBSCRIPTION" pubsub subscriptions describe "$DEAD_LETTER_SUBSCRIPTION" "${P[@]}" --format="value(name)" -- \
        pubsub subscriptions delete "$DEAD_LETTER_SUBSCRIPTION" "${P[@]}" --quiet
    local topic
    for topic in "$RELAY_TOPIC" "$DEAD_LETTER_TOPIC"; do
        delete_if_exists "topic $topic" pubsub topics describe "$topic" "${P[@]}" --format="value(name)" -- \
            pubsub topics delete "$topic" "${P[@]}" --quiet
    done
    step "Remove project-level grants" "Needs roles/resourcemanager.projectIamAdmin."
    remove_binding projects "$PROJECT_ID" "serviceAccount:$FUNCTION_SA" "$CUSTOM_ROLE"
    remove_binding projects "$PROJECT_ID" "serviceAccount:$FUNCTION_SA" roles/workflows.invoker
    remove_binding projects "$PROJECT_ID" "serviceAccount:$WORKFLOW_SA" roles/logging.logWriter
    local role
    for role in "${BUILD_ROLES[@]}"; do
        remove_binding projects "$PROJECT_ID" "serviceAccount:$BUILD_SA" "$role"
    done
    step "Delete the custom role" "Needs roles/iam.roleAdmin. A deleted role can be undeleted for 7 days; its ID is reusable 37 days after the deletion."
    if query iam roles describe "$CUSTOM_ROLE_ID" "${P[@]}" --format="value(deleted)" && [[ ${QUERY_OUT,,} != true ]]; then
        run gcloud iam roles delete "$CUSTOM_ROLE_ID" "${P[@]}" --quiet
    else
        say "    = role $CUSTOM_ROLE_ID already gone"
    fi
    step "Delete the service accounts" "Needs roles/iam.serviceAccountAdmin. Their resource-level grants go with them."
    local email
    for email in "$FUNCTION_SA" "$TRIGGER_SA" "$BUILD_SA" "$WORKFLOW_SA"; do
        delete_if_exists "service account $email" iam service-accounts describe "$email" "${P[@]}" --format="value(email)" -- \
            iam service-accounts delete "$email" "${P[@]}" --quiet
    done
    CURRENT_STEP="done"
    say ""
    if $DRY_RUN; then
        say "Dry run finished: nothing was deleted."
    else
        say "Destroyed. The APIs stay enabled (other resources may use them); disable them with gcloud services disable if you want."
    fi
}

case "$MODE" in
deploy) deploy ;;
destroy) destroy ;;
status) status ;;
esac
