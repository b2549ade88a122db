#!/usr/bin/env bash
# deploy.sh: one idempotent, least-privilege deployment of workflows-callback-relay.
#
# Creates (or checks) the relay and dead-letter topics, the dead-letter
# subscription, three service accounts, a custom role holding only
# workflows.callbacks.send, the relay function (Cloud Functions 2nd gen,
# Pub/Sub trigger through Eventarc), the delivery policy of the trigger's
# subscription, and the demo workflow. Every step describes before it creates,
# so a re-run changes nothing that is already right. Run ./deploy.sh --help.
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
# Seconds between retries of an IAM grant while a new service account propagates.
IAM_RETRY_SLEEP="${IAM_RETRY_SLEEP:-5}"

MODE=deploy
DRY_RUN=false
ASSUME_YES=false
USE_INVOKER_ROLE=false
LEGACY_TOKEN_CREATOR=true
FORCE=false

# The APIs this deployment uses, and no others.
REQUIRED_APIS=(
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
# Cloud Functions caps event-driven functions at 540 s:
# https://cloud.google.com/functions/docs/configuring/timeout
MAX_EVENT_FUNCTION_TIMEOUT=540

usage() {
    cat <<EOF
Usage: $PROG [options]

Deploy workflows-callback-relay to Google Cloud: topics, function, workflow,
service accounts and the least IAM they need. Safe to run again.

Options:
  --project ID            Google Cloud project (env PROJECT_ID; default: gcloud config)
  --region REGION         Region of the function, trigger and workflow (env REGION; default us-central1)
  --runtime RUNTIME       Function runtime, python312 or newer (env FUNCTION_RUNTIME; default python312)
  --memory SIZE           Function memory (env FUNCTION_MEMORY; default 512Mi)
  --cpu N                 Function vCPUs (env FUNCTION_CPU; default 1; concurrency > 1 needs >= 1)
  --concurrency N         Requests per instance; also sets THREADS (env FUNCTION_CONCURRENCY; default 8)
  --max-instances N       Instance cap (env FUNCTION_MAX_INSTANCES; default 10)
  --timeout SECONDS       Function timeout, at most 540 (env FUNCTION_TIMEOUT; default 60); must exceed
                          CALLBACK_RETRY_DEADLINE_SECONDS + CALLBACK_CONNECT_TIMEOUT_SECONDS
                          + CALLBACK_READ_TIMEOUT_SECONDS (defaults 30 + 5 + 15)
  --max-delivery-attempts N
                          Deliveries before a message goes to the dead-letter topic, 5-100
                          (env MAX_DELIVERY_ATTEMPTS; default 10)
  --use-invoker-role      Grant the function roles/workflows.invoker instead of the custom role
                          (broader: it may also start and cancel every workflow in the project)
  --no-legacy-token-creator
                          Skip roles/iam.serviceAccountTokenCreator for the Pub/Sub service agent
                          on the trigger service account (needed only by agents older than 2021-04-08)
  --force                 Redeploy the function and workflow even if unchanged
  --dry-run               Print every command that would change something; change nothing
  --destroy               Delete what this script creates (asks first)
  --yes                   Do not ask before --destroy
  -h, --help              Show this help

Resource names come from the environment (defaults in brackets):
  RELAY_TOPIC [$RELAY_TOPIC]  DEAD_LETTER_TOPIC [$DEAD_LETTER_TOPIC]
  DEAD_LETTER_SUBSCRIPTION [$DEAD_LETTER_SUBSCRIPTION]
  FUNCTION_NAME [$FUNCTION_NAME]  WORKFLOW_NAME [$WORKFLOW_NAME]
  FUNCTION_SA_NAME [$FUNCTION_SA_NAME]  TRIGGER_SA_NAME [$TRIGGER_SA_NAME]
  WORKFLOW_SA_NAME [$WORKFLOW_SA_NAME]  CUSTOM_ROLE_ID [$CUSTOM_ROLE_ID]
Delivery policy: MIN_RETRY_DELAY [$MIN_RETRY_DELAY s], MAX_RETRY_DELAY [$MAX_RETRY_DELAY s],
  DEAD_LETTER_RETENTION [$DEAD_LETTER_RETENTION] on $DEAD_LETTER_SUBSCRIPTION.
Function settings: CALLBACK_RETRY_DEADLINE_SECONDS, CALLBACK_CONNECT_TIMEOUT_SECONDS,
  CALLBACK_READ_TIMEOUT_SECONDS, LOG_LEVEL.

Examples:
  $PROG --project my-project
  $PROG --project my-project --dry-run
  $PROG --project my-project --destroy --yes
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
query() {
    local err status=0
    err="$(mktemp)"
    QUERY_OUT="$(gcloud "$@" 2>"$err")" || status=$?
    local message
    message="$(cat "$err")"
    rm -f "$err"
    if ((status == 0)); then
        return 0
    fi
    QUERY_OUT=""
    # "Permission denied ... or it may not exist" is not a "not found".
    if ! grep -qiE 'PERMISSION_DENIED|UNAUTHENTICATED|\b40[13]\b' <<<"$message" &&
        grep -qiE 'NOT_FOUND|not found|does not exist|\b404\b' <<<"$message"; then
        return 1
    fi
    if $DRY_RUN; then
        warn "could not read ($(quote_cmd gcloud "$@")): ${message:-exit $status}; assuming it is missing"
        return 1
    fi
    printf '%s\n' "$message" >&2
    fail_step "$status" "$(quote_cmd gcloud "$@") failed with exit $status"
}

exists() {
    query "$@"
}

# True when RESOURCE's IAM policy already binds MEMBER to ROLE.
# KIND is the gcloud group, e.g. "pubsub topics"; the rest are flags like --region.
has_binding() {
    local kind=$1 resource=$2 member=$3 role=$4
    shift 4
    local -a group
    read -r -a group <<<"$kind"
    query "${group[@]}" get-iam-policy "$resource" "$@" \
        --flatten="bindings[].members" \
        --format="value(bindings.role,bindings.members)" || return 1
    grep -Fxq "$role"$'\t'"$member" <<<"$QUERY_OUT"
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
        run gcloud "${group[@]}" remove-iam-policy-binding "$resource" "$@" "${extra[@]}" \
            --member="$member" --role="$role" --format=none
    fi
}

sha256() {
    if command -v sha256sum >/dev/null; then
        sha256sum | cut -c1-40
    else
        shasum -a 256 | cut -c1-40
    fi
}

# Fingerprint of the files gcloud would upload (the same exclusions as
# function/.gcloudignore), used to skip an unchanged redeploy.
source_fingerprint() {
    local dir=$1
    (
        cd "$dir"
        find . -type f \
            ! -path '*/__pycache__/*' ! -name '*.py[cod]' ! -path './tests/*' \
            ! -path './.*' ! -name '.*' -print | LC_ALL=C sort | while IFS= read -r file; do
            printf '%s\n' "$file"
            cat "$file"
        done
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
    --use-invoker-role) USE_INVOKER_ROLE=true; shift ;;
    --no-legacy-token-creator) LEGACY_TOKEN_CREATOR=false; shift ;;
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
    [[ -f $SCRIPT_DIR/workflow.yaml ]] || die "workflow.yaml not found next to $PROG"
}
validate

FUNCTION_SA="$FUNCTION_SA_NAME@$PROJECT_ID.iam.gserviceaccount.com"
TRIGGER_SA="$TRIGGER_SA_NAME@$PROJECT_ID.iam.gserviceaccount.com"
WORKFLOW_SA="$WORKFLOW_SA_NAME@$PROJECT_ID.iam.gserviceaccount.com"
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
    say "  workflow           $WORKFLOW_NAME (RELAY_TOPIC=$RELAY_TOPIC)"
    say "  service accounts   $FUNCTION_SA (function), $TRIGGER_SA (trigger), $WORKFLOW_SA (workflow)"
    say "  function role      $FUNCTION_ROLE"
    say "  delivery policy    $MAX_DELIVERY_ATTEMPTS attempts, backoff ${MIN_RETRY_DELAY}s-${MAX_RETRY_DELAY}s, then $DEAD_LETTER_TOPIC"
}

# --- deploy steps -------------------------------------------------------------
PROJECT_NUMBER=""
PUBSUB_AGENT=""

enable_apis() {
    step "Enable APIs" "Enabling APIs needs roles/serviceusage.serviceUsageAdmin and a billing account on the project."
    local enabled="" missing=() api
    if query services list --enabled "${P[@]}" --format="value(config.name)"; then
        enabled=$QUERY_OUT
    fi
    for api in "${REQUIRED_APIS[@]}"; do
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
    step "Look up the project number" "Check that project $PROJECT_ID exists and you can read it: gcloud projects describe $PROJECT_ID"
    PROJECT_NUMBER=""
    if query projects describe "$PROJECT_ID" --format="value(projectNumber)"; then
        PROJECT_NUMBER=$QUERY_OUT
    fi
    if [[ -z $PROJECT_NUMBER ]]; then
        $DRY_RUN || die "could not read the number of project $PROJECT_ID"
        PROJECT_NUMBER="PROJECT_NUMBER"
    fi
    PUBSUB_AGENT="service-$PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com"
    say "    project number $PROJECT_NUMBER; Pub/Sub service agent $PUBSUB_AGENT"
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
    step "Create the topics" "Creating topics needs roles/pubsub.editor."
    ensure_topic "$RELAY_TOPIC"
    ensure_topic "$DEAD_LETTER_TOPIC"
    step "Create the dead-letter subscription" "Creating subscriptions needs roles/pubsub.editor."
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
    step "Create the service accounts" "Creating service accounts needs roles/iam.serviceAccountAdmin."
    ensure_service_account "$FUNCTION_SA_NAME" "$FUNCTION_SA" "callback relay function (sends Workflows callbacks)"
    ensure_service_account "$TRIGGER_SA_NAME" "$TRIGGER_SA" "callback relay Eventarc trigger (invokes the function)"
    ensure_service_account "$WORKFLOW_SA_NAME" "$WORKFLOW_SA" "callback relay demo workflow (publishes to the relay topic)"
}

ensure_custom_role() {
    step "Create the custom role $CUSTOM_ROLE_ID" "Creating roles needs roles/iam.roleAdmin. A role deleted less than 37 days ago cannot be recreated, only undeleted."
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
    step "Grant project-level roles" "Granting roles needs roles/resourcemanager.projectIamAdmin (or Owner)."
    if $USE_INVOKER_ROLE; then
        warn "--use-invoker-role: $FUNCTION_SA gets roles/workflows.invoker, which also lets it start and cancel every workflow in $PROJECT_ID. The default custom role $CUSTOM_ROLE_ID holds only $CALLBACK_PERMISSION."
    fi
    # Workflows has no per-workflow IAM, so the callback permission is granted
    # on the project; ALLOWED_WORKFLOWS narrows what the relay will call.
    ensure_binding projects "$PROJECT_ID" "serviceAccount:$FUNCTION_SA" "$FUNCTION_ROLE"
    ensure_binding projects "$PROJECT_ID" "serviceAccount:$WORKFLOW_SA" roles/logging.logWriter
    step "Let the workflow publish to $RELAY_TOPIC" "Setting topic IAM needs roles/pubsub.admin or roles/pubsub.editor on the topic."
    ensure_binding "pubsub topics" "$RELAY_TOPIC" "serviceAccount:$WORKFLOW_SA" roles/pubsub.publisher "${P[@]}"
}

FUNCTION_STATE=""
FUNCTION_HASH=""
FUNCTION_SERVICE=""
FUNCTION_TRIGGER=""

describe_function() {
    FUNCTION_STATE="" FUNCTION_HASH="" FUNCTION_SERVICE="" FUNCTION_TRIGGER=""
    query functions describe "$FUNCTION_NAME" --region="$REGION" "${P[@]}" --v2 \
        --format='value[separator="|"](state,labels.deploy_hash,serviceConfig.service,eventTrigger.trigger)' || return 1
    IFS='|' read -r FUNCTION_STATE FUNCTION_HASH FUNCTION_SERVICE FUNCTION_TRIGGER <<<"$QUERY_OUT"
}

deploy_function() {
    step "Deploy the function $FUNCTION_NAME" "Read the build log link above. Deploying needs roles/cloudfunctions.developer and roles/iam.serviceAccountUser on $FUNCTION_SA and $TRIGGER_SA; the Cloud Build service account needs roles/cloudbuild.builds.builder."
    local allowed env_vars fingerprint
    # The callback URL may name the project by id or by number: allow both,
    # for this one workflow only.
    allowed="projects/$PROJECT_ID/locations/$REGION/workflows/$WORKFLOW_NAME"
    allowed+=",projects/$PROJECT_NUMBER/locations/$REGION/workflows/$WORKFLOW_NAME"
    # '^@^' makes @ the list separator, so ALLOWED_WORKFLOWS may hold commas
    # (gcloud topic escaping).
    env_vars="^@^ALLOWED_WORKFLOWS=$allowed"
    env_vars+="@CALLBACK_RETRY_DEADLINE_SECONDS=$CALLBACK_RETRY_DEADLINE_SECONDS"
    env_vars+="@CALLBACK_CONNECT_TIMEOUT_SECONDS=$CALLBACK_CONNECT_TIMEOUT_SECONDS"
    env_vars+="@CALLBACK_READ_TIMEOUT_SECONDS=$CALLBACK_READ_TIMEOUT_SECONDS"
    env_vars+="@LOG_LEVEL=$LOG_LEVEL"
    # functions-framework serves with gunicorn; one thread per concurrent request.
    env_vars+="@THREADS=$FUNCTION_CONCURRENCY"
    local -a flags=(
        --gen2
        --region="$REGION"
        "${P[@]}"
        --runtime="$FUNCTION_RUNTIME"
        --source="$SCRIPT_DIR/function"
        --entry-point=relay
        --trigger-topic="$RELAY_TOPIC"
        --retry
        --service-account="$FUNCTION_SA"
        --trigger-service-account="$TRIGGER_SA"
        --set-env-vars="$env_vars"
        --memory="$FUNCTION_MEMORY"
        --cpu="$FUNCTION_CPU"
        --concurrency="$FUNCTION_CONCURRENCY"
        --max-instances="$FUNCTION_MAX_INSTANCES"
        --timeout="${FUNCTION_TIMEOUT}s"
        --ingress-settings=internal-only
        --no-allow-unauthenticated
    )
    fingerprint="$({ source_fingerprint "$SCRIPT_DIR/function"; printf '%s\n' "${flags[@]}"; } | sha256)"
    if ! $FORCE && describe_function && [[ $FUNCTION_STATE == ACTIVE && $FUNCTION_HASH == "$fingerprint" ]]; then
        say "    = function $FUNCTION_NAME is active with the same source and settings (use --force to redeploy)"
        return 0
    fi
    run gcloud functions deploy "$FUNCTION_NAME" "${flags[@]}" --update-labels="deploy_hash=$fingerprint" --quiet
    if $DRY_RUN; then
        describe_function || true
    else
        describe_function || die "function $FUNCTION_NAME not found after deploying it"
    fi
}

grant_trigger_invoker() {
    step "Let the trigger invoke the function" "Setting Cloud Run IAM needs roles/run.admin on the function's service."
    local service=${FUNCTION_SERVICE##*/}
    service=${service:-$FUNCTION_NAME}
    # On the function's own Cloud Run service only, not on the project.
    ensure_binding "run services" "$service" "serviceAccount:$TRIGGER_SA" roles/run.invoker --region="$REGION" "${P[@]}"
}

configure_delivery() {
    step "Configure the trigger's subscription" "The subscription is created by Eventarc with the function; see gcloud eventarc triggers describe ${FUNCTION_TRIGGER:-TRIGGER} --location=$REGION."
    local subscription="" current want
    if [[ -n $FUNCTION_TRIGGER ]]; then
        # https://cloud.google.com/eventarc/docs/retry-events: identify the
        # trigger's Pub/Sub subscription (transport.pubsub.subscription), then update it.
        if query eventarc triggers describe "$FUNCTION_TRIGGER" --location="$REGION" "${P[@]}" \
            --format="value(transport.pubsub.subscription)"; then
            subscription=$QUERY_OUT
        fi
    fi
    if [[ -z $subscription ]]; then
        $DRY_RUN || die "no Pub/Sub subscription found on the trigger of $FUNCTION_NAME (${FUNCTION_TRIGGER:-no trigger})"
        subscription="EVENTARC_SUBSCRIPTION"
    fi
    say "    trigger $FUNCTION_TRIGGER -> subscription $subscription"
    want="$DEAD_LETTER_TOPIC_PATH"$'\t'"$MAX_DELIVERY_ATTEMPTS"$'\t'"${MIN_RETRY_DELAY}s"$'\t'"${MAX_RETRY_DELAY}s"
    current=""
    if query pubsub subscriptions describe "$subscription" "${P[@]}" \
        --format="value(deadLetterPolicy.deadLetterTopic,deadLetterPolicy.maxDeliveryAttempts,retryPolicy.minimumBackoff,retryPolicy.maximumBackoff)"; then
        current=$QUERY_OUT
    fi
    if [[ $current == "$want" ]]; then
        say "    = dead letter after $MAX_DELIVERY_ATTEMPTS attempts to $DEAD_LETTER_TOPIC, backoff ${MIN_RETRY_DELAY}s-${MAX_RETRY_DELAY}s"
    else
        run gcloud pubsub subscriptions update "$subscription" "${P[@]}" \
            --dead-letter-topic="$DEAD_LETTER_TOPIC_PATH" \
            --max-delivery-attempts="$MAX_DELIVERY_ATTEMPTS" \
            --min-retry-delay="${MIN_RETRY_DELAY}s" \
            --max-retry-delay="${MAX_RETRY_DELAY}s" \
            --quiet
    fi
    step "Let Pub/Sub dead-letter and push" "Setting Pub/Sub IAM needs roles/pubsub.admin; the service agent $PUBSUB_AGENT appears once the Pub/Sub API is enabled."
    # https://cloud.google.com/pubsub/docs/handling-failures: the Pub/Sub
    # service agent publishes to the dead-letter topic and acks on the source.
    ensure_binding "pubsub topics" "$DEAD_LETTER_TOPIC" "serviceAccount:$PUBSUB_AGENT" roles/pubsub.publisher "${P[@]}"
    ensure_binding "pubsub subscriptions" "$subscription" "serviceAccount:$PUBSUB_AGENT" roles/pubsub.subscriber "${P[@]}"
    if $LEGACY_TOKEN_CREATOR; then
        # Agents created before 2021-04-08 need this to mint the push's OIDC
        # token. Granted on the trigger account only, not the project.
        ensure_binding "iam service-accounts" "$TRIGGER_SA" "serviceAccount:$PUBSUB_AGENT" \
            roles/iam.serviceAccountTokenCreator "${P[@]}"
    fi
}

deploy_workflow() {
    step "Deploy the workflow $WORKFLOW_NAME" "Deploying needs roles/workflows.editor and roles/iam.serviceAccountUser on $WORKFLOW_SA."
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

print_next_steps() {
    CURRENT_STEP="done"
    say ""
    if $DRY_RUN; then
        say "Dry run finished: nothing was changed. Run without --dry-run to apply."
        return
    fi
    cat <<EOF
Deployed. Start an execution and watch the callback resume it:

  gcloud workflows run $WORKFLOW_NAME --location=$REGION --project=$PROJECT_ID \\
      --data='{"payload": {"hello": "world"}, "timeout": 300}'

  The result is {"status": "RESUMED", "body": {"hello": "world"}, ...}.

Logs:
  function   gcloud functions logs read $FUNCTION_NAME --region=$REGION --project=$PROJECT_ID --limit=50
             https://console.cloud.google.com/functions/details/$REGION/$FUNCTION_NAME?project=$PROJECT_ID&tab=logs
  workflow   gcloud workflows executions list $WORKFLOW_NAME --location=$REGION --project=$PROJECT_ID
             https://console.cloud.google.com/workflows/workflow/$REGION/$WORKFLOW_NAME/executions?project=$PROJECT_ID
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
    deploy_workflow
    print_next_steps
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
    step "Delete the workflow" "Deleting needs roles/workflows.admin."
    delete_if_exists "workflow $WORKFLOW_NAME" workflows describe "$WORKFLOW_NAME" --location="$REGION" "${P[@]}" --format="value(name)" -- \
        workflows delete "$WORKFLOW_NAME" --location="$REGION" "${P[@]}" --quiet
    step "Delete the function" "Deleting needs roles/cloudfunctions.admin. Its Eventarc trigger and subscription go with it."
    delete_if_exists "function $FUNCTION_NAME" functions describe "$FUNCTION_NAME" --region="$REGION" "${P[@]}" --format="value(name)" -- \
        functions delete "$FUNCTION_NAME" --region="$REGION" "${P[@]}" --quiet
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
    step "Delete the custom role" "Needs roles/iam.roleAdmin. A deleted role is kept 7 days (undeletable), then purged."
    if query iam roles describe "$CUSTOM_ROLE_ID" "${P[@]}" --format="value(deleted)" && [[ ${QUERY_OUT,,} != true ]]; then
        run gcloud iam roles delete "$CUSTOM_ROLE_ID" "${P[@]}" --quiet
    else
        say "    = role $CUSTOM_ROLE_ID already gone"
    fi
    step "Delete the service accounts" "Needs roles/iam.serviceAccountAdmin. Their resource-level grants go with them."
    local email
    for email in "$FUNCTION_SA" "$TRIGGER_SA" "$WORKFLOW_SA"; do
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
esac
