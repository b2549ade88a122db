#!/usr/bin/env bash
# deploy.sh: one idempotent, least-privilege deployment of workflows-callback-relay.
#
# Creates (or checks) the relay and dead-letter topics, the service accounts
# (function, push, build, demo workflow), a custom role holding only
# workflows.callbacks.send, an image repository with a cleanup policy, the relay
# function (Cloud Functions 2nd gen, HTTP trigger, internal ingress, IAM only),
# the push subscription that delivers the relay topic to it (OIDC, dead letters,
# retry policy), a log-based metric of the relay's outcomes and, on request, the
# demo workflow, an HTTP twin of the function, alert policies and keyed waits
# (--with-events: a Firestore database, its TTL policies and a one-database
# grant; existing topics and Cloud Storage buckets wired to the relay by push
# subscriptions and bucket notifications). Every step reads
# before it writes, so a re-run changes only what differs, in both directions:
# a grant that is no longer asked for is removed. --status checks it all without
# changing anything. Run ./deploy.sh --help; docs/deploy.md explains each grant.
set -Eeuo pipefail
# Associative arrays and namerefs: bash 4.3 or newer (macOS ships 3.2: brew install bash).
if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 3))); then
    printf 'deploy.sh needs bash 4.3 or newer; this is %s\n' "$BASH_VERSION" >&2
    exit 1
fi

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROG="$(basename "$0")"

# --- configuration: environment variables, then flags ------------------------
PROJECT_ID="${PROJECT_ID:-}"
REGION="${REGION:-us-central1}"
RELAY_TOPIC="${RELAY_TOPIC:-workflows-callback-relay}"
PUSH_SUBSCRIPTION="${PUSH_SUBSCRIPTION:-workflows-callback-relay-push}"
DEAD_LETTER_TOPIC="${DEAD_LETTER_TOPIC:-workflows-callback-relay-dead-letter}"
DEAD_LETTER_SUBSCRIPTION="${DEAD_LETTER_SUBSCRIPTION:-workflows-callback-relay-dead-letter-sub}"
FUNCTION_NAME="${FUNCTION_NAME:-workflows-callback-relay}"
WORKFLOW_NAME="${WORKFLOW_NAME:-callback-relay-demo}"
FUNCTION_SA_NAME="${FUNCTION_SA_NAME:-callback-relay-fn}"
PUSH_SA_NAME="${PUSH_SA_NAME:-callback-relay-push}"
WORKFLOW_SA_NAME="${WORKFLOW_SA_NAME:-callback-relay-workflow}"
BUILD_SA_NAME="${BUILD_SA_NAME:-callback-relay-build}"
# The Eventarc trigger's account of deployments made before the push subscription.
LEGACY_TRIGGER_SA_NAME="${LEGACY_TRIGGER_SA_NAME:-callback-relay-trigger}"
CUSTOM_ROLE_ID="${CUSTOM_ROLE_ID:-workflowsCallbackSender}"
ARTIFACT_REPOSITORY="${ARTIFACT_REPOSITORY:-workflows-callback-relay}"
LOG_METRIC="${LOG_METRIC:-workflows-callback-relay-outcomes}"
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
KEEP_IMAGES="${KEEP_IMAGES:-5}"
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
USE_INVOKER_ROLE="${USE_INVOKER_ROLE:-false}"
# apply: make the IAM changes; print: make none, print them for an IAM team.
IAM_MODE="${IAM_MODE:-apply}"
# Organisation policies (each empty unless set):
KMS_KEY="${KMS_KEY:-}"                     # CMEK for the function and its image repository
TOPIC_KMS_KEY="${TOPIC_KMS_KEY:-}"         # CMEK for the topics (default: KMS_KEY)
DOCKER_REPOSITORY="${DOCKER_REPOSITORY:-}" # an image repository of yours instead of ours
VPC_CONNECTOR="${VPC_CONNECTOR:-}"
EGRESS_SETTINGS="${EGRESS_SETTINGS:-}"
BUILD_WORKER_POOL="${BUILD_WORKER_POOL:-}"
# Keyed waits (docs/events.md), each empty or off unless set:
WITH_EVENTS="${WITH_EVENTS:-false}"
FIRESTORE_DATABASE="${FIRESTORE_DATABASE:-}" # empty: (default)
FIRESTORE_LOCATION="${FIRESTORE_LOCATION:-}" # empty: REGION, when the database is created
EVENT_TTL_SECONDS="${EVENT_TTL_SECONDS:-}"   # empty: the relay's default (3600)
# Existing topics whose messages are events: TOPIC=TEMPLATE, one per line (the flags add to these).
EVENT_TOPIC_SPECS="${EVENT_TOPIC_SPECS:-}"
# Cloud Storage buckets whose new objects are events, separated by commas or spaces.
EVENT_BUCKETS="${EVENT_BUCKETS:-}"
EVENTS_ROLE_ID="${EVENTS_ROLE_ID:-workflowsCallbackRelayEventStore}"
# database: the role on FIRESTORE_DATABASE only (an IAM condition); project: on every
# database of the project, should the condition not take (docs/deploy.md).
EVENTS_GRANT_SCOPE="${EVENTS_GRANT_SCOPE:-database}"
# Names of what --event-bucket and --event-topic make: a topic per bucket, a push
# subscription per topic.
BUCKET_TOPIC_PREFIX="${BUCKET_TOPIC_PREFIX:-$RELAY_TOPIC-bucket-}"
EVENT_SUBSCRIPTION_PREFIX="${EVENT_SUBSCRIPTION_PREFIX:-$PUSH_SUBSCRIPTION-}"
# The interpreter that checks the key templates with the relay's own parser (3.10 or newer).
EVENTS_PYTHON="${EVENTS_PYTHON:-python3}"
# How long a step is retried while IAM changes and new service agents propagate.
PROPAGATION_TIMEOUT="${PROPAGATION_TIMEOUT:-600}"
# The command that waits between those retries (tests replace it).
DEPLOY_SLEEP="${DEPLOY_SLEEP:-sleep}"

MODE=deploy
DRY_RUN=false
ASSUME_YES=false
FORCE=false
DELETE_IMAGES=false
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
    pubsub.googleapis.com
    workflows.googleapis.com
    workflowexecutions.googleapis.com
    logging.googleapis.com
    monitoring.googleapis.com
)
CALLBACK_PERMISSION=workflows.callbacks.send
# What Cloud Build needs to build a function with a service account of its own,
# as Google recommends it: "grant the Cloud Build service account the Cloud Run
# Builder (roles/run.builder) role on the project"
# (https://cloud.google.com/run/docs/configuring/services/build-service-account).
BUILD_ROLE=roles/run.builder
KMS_ROLE=roles/cloudkms.cryptoKeyEncrypterDecrypter
# Cloud Functions caps event-driven functions at 540 s
# (https://cloud.google.com/functions/docs/configuring/timeout); the relay's
# timeout also bounds the push subscription's ack deadline (at most 600 s).
MAX_FUNCTION_TIMEOUT=540
APP_LABEL=workflows-callback-relay
# The outcomes the relay acknowledges without delivering: they never reach the
# dead-letter topic, so only the logs (and the metric over them) show them.
ACKED_FAILURES=(url_refused message_rejected failed_fast expired callback_rejected)
MONITORING_API=https://monitoring.googleapis.com
# Keyed waits' store: its collection groups and their TTL field, as
# function/callback_relay/event_store.py names them (tests/deploy/test_names_agree.py).
EVENT_COLLECTIONS=(relay_channels relay_events relay_waits)
EVENT_TTL_FIELD=expire_at
# The permissions the store's REST calls need, from the method table of
# https://cloud.google.com/firestore/docs/security/iam: batchGet needs
# datastore.entities.get; a commit that creates (exists=false) needs .create; one
# conditioned on the document's updateTime (it exists) needs .update. The store
# never deletes, lists, queries or opens a transaction, so roles/datastore.user
# (which adds delete, list, and every database in the project) is not granted.
EVENTS_PERMISSIONS=datastore.entities.create,datastore.entities.get,datastore.entities.update
# Cloud Storage notifications: new objects only; a metadata update or a delete of
# the same generation would repeat its event id (docs/events.md).
NOTIFICATION_EVENT_TYPES=OBJECT_FINALIZE

usage() {
    cat <<EOF
Usage: $PROG [options]

Deploy workflows-callback-relay to Google Cloud: topics, function, push
subscription, service accounts and the least IAM they need, for your own
workflows and workers. Safe to run again; --status checks a deployment.

Who may resume what (each flag is also an environment variable):
  --allowed-workflows LIST
                          Workflows the relay may resume: comma-separated
                          projects/P/locations/L/workflows/W, '*' for a whole segment
                          (env ALLOWED_WORKFLOWS; default: the demo workflow, by project id and number)
  --publisher MEMBER      The members that may publish to the relay topic (roles/pubsub.publisher
                          on that topic only, exactly these), e.g.
                          serviceAccount:worker@P.iam.gserviceaccount.com; repeatable
                          (env PUBLISHERS, comma-separated)
  --skip-demo-workflow    Do not deploy workflow.yaml or its service account
                          (env SKIP_DEMO_WORKFLOW=true; needs --allowed-workflows)
  --with-http-function    Also deploy the relay_http entry point as the HTTP function
                          HTTP_FUNCTION_NAME: never public, ingress HTTP_INGRESS
                          (env WITH_HTTP_FUNCTION=true; without it, that function is deleted)
  --http-invoker MEMBER   roles/run.invoker on the HTTP function only; repeatable
                          (env HTTP_INVOKERS, comma-separated)
  --http-ingress SETTING  internal-only, internal-and-gclb or all
                          (env HTTP_INGRESS; default internal-only)
  --alert-channel CHANNEL Create or update the alert policy ALERT_POLICY_NAME, notifying
                          projects/P/notificationChannels/N (env ALERT_CHANNEL)

Function and delivery:
  --project ID            Google Cloud project (env PROJECT_ID; default: gcloud config)
  --region REGION         Region of the function and workflow (env REGION; default us-central1)
  --runtime RUNTIME       Function runtime, python312 or newer (env FUNCTION_RUNTIME; default python312)
  --memory SIZE           Function memory, e.g. 512Mi or 1Gi (env FUNCTION_MEMORY; default 512Mi)
  --cpu N                 Function vCPUs (env FUNCTION_CPU; default 1; concurrency > 1 needs >= 1)
  --concurrency N         Requests per instance; also sets THREADS (env FUNCTION_CONCURRENCY; default 8)
  --max-instances N       Instance cap (env FUNCTION_MAX_INSTANCES; default 10)
  --timeout SECONDS       Function timeout, at most 540 (env FUNCTION_TIMEOUT; default 60); must exceed
                          CALLBACK_RETRY_DEADLINE_SECONDS + CALLBACK_CONNECT_TIMEOUT_SECONDS
                          + CALLBACK_READ_TIMEOUT_SECONDS (defaults 30 + 5 + 15). The push
                          subscription's ack deadline is at least this.
  --max-delivery-attempts N
                          Deliveries before a message goes to the dead-letter topic, 5-100
                          (env MAX_DELIVERY_ATTEMPTS; default 10)
  --keep-images N         Images kept in the image repository, newest first (env KEEP_IMAGES; default 5)
  --use-invoker-role      Grant the function roles/workflows.invoker instead of the custom role
                          (env USE_INVOKER_ROLE=true; broader: it may also start and cancel workflows)
  --legacy-token-creator  Grant the Pub/Sub service agent roles/iam.serviceAccountTokenCreator
                          on the push service account; only agents enabled on or before
                          2021-04-08 need it (env LEGACY_TOKEN_CREATOR=true; default off)

Organisation policies (each also an environment variable):
  --kms-key KEY           CMEK for the function and its image repository (constraints/gcp.restrictNonCmekServices):
                          projects/P/locations/L/keyRings/R/cryptoKeys/K (env KMS_KEY)
  --topic-kms-key KEY     CMEK for the topics (env TOPIC_KMS_KEY; default: --kms-key)
  --docker-repository REPO
                          Build into your own Artifact Registry repository,
                          projects/P/locations/L/repositories/R, instead of ours (env DOCKER_REPOSITORY)
  --vpc-connector CONNECTOR
                          Serverless VPC Access connector for the function's egress
                          (a policy that requires one; env VPC_CONNECTOR)
  --egress-settings SETTING
                          private-ranges-only or all, with --vpc-connector (env EGRESS_SETTINGS)
  --build-worker-pool POOL
                          Cloud Build private pool, projects/P/locations/L/workerPools/W
                          (constraints/cloudbuild.allowedWorkerPools; env BUILD_WORKER_POOL)

Keyed waits (docs/events.md):
  --with-events           Turn keyed waits on: a Firestore database in Native mode
                          (FIRESTORE_DATABASE, default (default), created in FIRESTORE_LOCATION,
                          default the region, if missing), TTL policies on its collection groups,
                          a custom role with the three document permissions the store uses,
                          granted on that database only (env WITH_EVENTS=true). Dropped again,
                          the grant and the settings go; the database stays (see --destroy)
  --event-topic TOPIC=TEMPLATE
                          Deliver an existing topic's messages to the relay as events, keyed by
                          TEMPLATE (e.g. 'orders-shipped=order:{attributes.orderId}', or a JSON
                          object with key and event_id); repeatable (env EVENT_TOPIC_SPECS, one
                          per line). Needs --with-events
  --event-bucket BUCKET   Deliver new objects of a Cloud Storage bucket as events keyed
                          gs://BUCKET/OBJECT: a notification (OBJECT_FINALIZE) to the topic
                          BUCKET_TOPIC_PREFIX+BUCKET; repeatable (env EVENT_BUCKETS). Needs --with-events

Modes:
  --status                Read-only check: exit 0 when all is OK, 1 on any FAIL, 2 when some
                          checks have no data (UNKNOWN) and none failed
  --iam=print             Make no IAM change: print every grant the run needs as gcloud commands
                          for an IAM team, check each, exit 3 while any is missing (env IAM_MODE)
  --force                 Redeploy the functions and workflow even if unchanged
  --dry-run               Print every command that would change something; change nothing
  --destroy               Delete everything this script creates, whatever the other flags (asks first)
  --delete-images         With --destroy: delete the image repository and its images too
  --yes                   Do not ask before --destroy
  -h, --help              Show this help

Resource names come from the environment (defaults in brackets):
  RELAY_TOPIC [$RELAY_TOPIC]  PUSH_SUBSCRIPTION [$PUSH_SUBSCRIPTION]
  DEAD_LETTER_TOPIC [$DEAD_LETTER_TOPIC]  DEAD_LETTER_SUBSCRIPTION [$DEAD_LETTER_SUBSCRIPTION]
  FUNCTION_NAME [$FUNCTION_NAME]  HTTP_FUNCTION_NAME [$HTTP_FUNCTION_NAME]
  WORKFLOW_NAME [$WORKFLOW_NAME]  FUNCTION_SA_NAME [$FUNCTION_SA_NAME]
  PUSH_SA_NAME [$PUSH_SA_NAME]  BUILD_SA_NAME [$BUILD_SA_NAME]
  WORKFLOW_SA_NAME [$WORKFLOW_SA_NAME]  CUSTOM_ROLE_ID [$CUSTOM_ROLE_ID]
  ARTIFACT_REPOSITORY [$ARTIFACT_REPOSITORY]  LOG_METRIC [$LOG_METRIC]
  ALERT_POLICY_NAME [$ALERT_POLICY_NAME]  EVENTS_ROLE_ID [$EVENTS_ROLE_ID]
  BUCKET_TOPIC_PREFIX [$BUCKET_TOPIC_PREFIX]  EVENT_SUBSCRIPTION_PREFIX [$EVENT_SUBSCRIPTION_PREFIX]
Keyed waits: FIRESTORE_DATABASE, FIRESTORE_LOCATION, EVENT_TTL_SECONDS, EVENTS_GRANT_SCOPE
  [$EVENTS_GRANT_SCOPE: the role on the database only, or project], and
  EVENTS_PYTHON [$EVENTS_PYTHON] to check the templates with the relay's own parser.
Delivery policy: MIN_RETRY_DELAY [$MIN_RETRY_DELAY s], MAX_RETRY_DELAY [$MAX_RETRY_DELAY s],
  DEAD_LETTER_RETENTION [$DEAD_LETTER_RETENTION] on $DEAD_LETTER_SUBSCRIPTION,
  ALERT_OLDEST_UNACKED_SECONDS [the retry window].
Function settings: CALLBACK_RETRY_DEADLINE_SECONDS, CALLBACK_CONNECT_TIMEOUT_SECONDS,
  CALLBACK_READ_TIMEOUT_SECONDS, LOG_LEVEL.
A step that fails while IAM changes or a new service agent propagate is retried
for up to PROPAGATION_TIMEOUT [$PROPAGATION_TIMEOUT s].

Examples:
  $PROG --project my-project
  $PROG --project my-project --skip-demo-workflow \\
      --allowed-workflows 'projects/my-project/locations/*/workflows/orders' \\
      --publisher serviceAccount:worker@my-project.iam.gserviceaccount.com
  $PROG --project my-project --status
  $PROG --project my-project --iam=print
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
    local out="" arg quoted
    for arg in "$@"; do
        printf -v quoted '%q' "$arg" # -v: no subshell per argument
        out+="$quoted "
    done
    printf '%s' "${out% }"
}

# True when LINES (newline-separated) holds LINE exactly; no process started.
has_line() { [[ $'\n'$1$'\n' == *$'\n'"$2"$'\n'* ]]; }

# --- retrying what IAM propagation and new service agents break ----------------
# IAM changes "typically propagate in 2 minutes, potentially 7 minutes or longer"
# (https://cloud.google.com/iam/docs/access-change-propagation); a service account
# or service agent used right after it was created fails the same way. These are
# the errors that look like that; any other error fails at once.
# (TRANSIENT_RE is set once the accounts' names are known, below.)
TRANSIENT_RE=""
RETRY_LOG=""

# Run a changing command; retry it while it fails with a propagation error, for
# up to PROPAGATION_TIMEOUT seconds of waiting in all, with a line each time.
run_retrying() {
    local waited=0 pause=10 attempt=1 status message
    [[ -n $RETRY_LOG ]] || RETRY_LOG="$(mktemp)"
    while true; do
        # stderr shown as it comes and kept; the pipeline ends only once tee has
        # written it all, and with pipefail its status is the command's.
        if { "$@" 2>&1 1>&3 3>&- | tee "$RETRY_LOG" >&2; } 3>&1; then
            return 0
        else
            status=$?
        fi
        message="$(grep -v '^[[:space:]]*$' "$RETRY_LOG" | tail -n 1 || true)"
        if ! grep -qiE "$TRANSIENT_RE" "$RETRY_LOG"; then
            return "$status"
        fi
        if ((waited + pause > PROPAGATION_TIMEOUT)); then
            printf '%s: still failing after %s s of retries (%s attempts): %s\n' "$PROG" "$waited" "$attempt" "$message" >&2
            printf '%s: IAM changes typically propagate in 2 minutes, potentially 7 or longer (https://cloud.google.com/iam/docs/access-change-propagation); run %s again later, or check the grant named above.\n' "$PROG" "$PROG" >&2
            return "$status"
        fi
        say "    ... waiting for IAM or a new service agent to propagate: attempt $attempt failed ($message); retrying in ${pause} s (${waited} s of ${PROPAGATION_TIMEOUT} s so far)"
        "$DEPLOY_SLEEP" "$pause"
        waited=$((waited + pause))
        attempt=$((attempt + 1))
        pause=$((pause * 2 > 60 ? 60 : pause * 2))
    done
}

# Run a command that changes something; --dry-run only prints it.
run() {
    if $DRY_RUN; then
        say "DRY-RUN: $(quote_cmd "$@")"
        return 0
    fi
    say "+ $(quote_cmd "$@")"
    run_retrying "$@"
}

# Read-only gcloud call (runs in --dry-run too); its stdout lands in QUERY_OUT.
# Status 0: found; 1: not found. Any other error stops the run, except in
# --dry-run and --status, where it counts as "not found" with a warning.
# (No command substitution around it: fail_step must exit the main shell.)
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

# --- IAM: read, converge, or print for an IAM team -------------------------------------
# IAM policies read in this run, by resource; any IAM write empties the cache.
declare -A POLICIES=()
# --iam=print: every grant and removal the run needs, and whether it is in place.
IAM_PLAN=()
IAM_MISSING=0

# "ROLE<tab>MEMBER" lines of a resource's IAM policy. KIND is the gcloud group,
# e.g. "pubsub topics"; the rest are flags like --region. Status 1: unreadable.
read_policy() {
    local kind=$1 resource=$2
    shift 2
    local key="$kind|$resource|$*"
    if [[ -z ${POLICIES[$key]+read} ]]; then
        local -a group
        read -r -a group <<<"$kind"
        if [[ $kind == projects ]]; then
            # The project's policy may hold conditional bindings (ours: the event
            # store's role on one database); the expression comes last, as it may hold '|'.
            query projects get-iam-policy "$resource" "$@" \
                --flatten="bindings[].members" \
                --format='value[separator="|"](bindings.role,bindings.members,bindings.condition.title,bindings.condition.description,bindings.condition.expression)' || return 1
            POLICIES[$key]=$(fold_conditions)
        else
            query "${group[@]}" get-iam-policy "$resource" "$@" \
                --flatten="bindings[].members" \
                --format="value(bindings.role,bindings.members)" || return 1
            POLICIES[$key]=$QUERY_OUT
        fi
    fi
    POLICY=${POLICIES[$key]}
}

# A conditional binding is kept as a "role" of its own: ROLE, then its
# expression, title and description, each after a unit separator (US). So a role
# held with another condition, or none, is another role, and converges like one.
US=$'\x1f'
fold_conditions() {
    local role member title description expression out=""
    while IFS='|' read -r role member title description expression; do
        [[ -n $role ]] || continue
        [[ -z $expression ]] || role+="$US$expression$US$title$US$description"
        out+="$role"$'\t'"$member"$'\n'
    done <<<"$QUERY_OUT"
    printf '%s' "$out"
}

# A role as people read it: ROLE, or ROLE (if EXPRESSION).
role_text() {
    if [[ $1 == *"$US"* ]]; then
        local role expression rest
        IFS=$US read -r role expression rest <<<"$1"
        printf '%s (if %s)' "$role" "$expression"
    else
        printf '%s' "$1"
    fi
}

# gcloud's --condition value for a folded role: expression, title and description,
# split on a delimiter none of them holds (gcloud topic escaping).
condition_flag() {
    local role expression title description delimiter
    IFS=$US read -r role expression title description <<<"$1"
    for delimiter in ',' '|' ';' '#' '~' '!'; do
        [[ $expression$title$description == *"$delimiter"* ]] || break
    done
    local value="expression=$expression${delimiter}title=$title"
    [[ -z $description ]] || value+="${delimiter}description=$description"
    [[ $delimiter == , ]] || value="^$delimiter^$value"
    printf -- '--condition=%s' "$value"
}

# The members that hold ROLE on a resource, one per line.
role_members() {
    local kind=$1 resource=$2 role=$3
    shift 3
    read_policy "$kind" "$resource" "$@" || return 1
    ROLE_MEMBERS=$(column_where 1 "$role")
}

iam_cmd() {
    local verb=$1 kind=$2 resource=$3 member=$4 role=$5
    shift 5
    local -a group extra=()
    read -r -a group <<<"$kind"
    # Project policies may hold conditional bindings; gcloud then insists on
    # an explicit --condition (None = unconditional).
    if [[ $kind == projects && $role == *"$US"* ]]; then
        extra=("$(condition_flag "$role")")
        role=${role%%"$US"*}
    elif [[ $kind == projects ]]; then
        extra=(--condition=None)
    fi
    IAM_CMD=(gcloud "${group[@]}" "$verb" "$resource" "$@" "${extra[@]}" --member="$member" --role="$role")
}

# Make the members of ROLE on a resource exactly WANTED (newline-separated), or,
# with --iam=print, print the commands that would and check whether they are needed.
# Only ROLE changes; other roles on the resource are left alone.
converge_members() {
    local kind=$1 resource=$2 role=$3 wanted=$4
    shift 4
    local member label=${kind##* }
    local -a adds=() removes=()
    if ! role_members "$kind" "$resource" "$role" "$@"; then
        # Not there yet (a --dry-run of a first deploy): everything is to add.
        ROLE_MEMBERS=""
    fi
    while IFS= read -r member; do
        [[ -n $member ]] || continue
        if has_line "$ROLE_MEMBERS" "$member"; then
            iam_in_place add-iam-policy-binding "$kind" "$resource" "$member" "$role" "$@"
        else
            adds+=("$member")
        fi
    done <<<"$wanted"
    while IFS= read -r member; do
        [[ -z $member ]] || has_line "$wanted" "$member" || removes+=("$member")
    done <<<"$ROLE_MEMBERS"
    for member in "${adds[@]}"; do
        iam_change add-iam-policy-binding "$kind" "$resource" "$member" "$role" "$@"
    done
    for member in "${removes[@]}"; do
        iam_change remove-iam-policy-binding "$kind" "$resource" "$member" "$role" "$@"
    done
    if ((${#adds[@]} == 0 && ${#removes[@]} == 0)) && [[ $IAM_MODE == apply ]]; then
        say "    = $role on $label $resource: $(members_text "$wanted")"
    fi
}

members_text() {
    local text="" line
    while IFS= read -r line; do
        [[ -z $line ]] || text+="${text:+ }$line"
    done <<<"$1"
    printf '%s' "${text:-nobody}"
}

# From POLICY's "ROLE<tab>MEMBER" lines, the other column of those whose column
# COLUMN (1: role, 2: member) is VALUE, once each, in order. No process started
# beyond the caller's own $(...).
column_where() {
    local column=$1 value=$2 role member out=""
    while IFS=$'\t' read -r role member; do
        if ((column == 1)) && [[ $role == "$value" ]] && ! has_line "$out" "$member"; then
            out+="$member"$'\n'
        elif ((column == 2)) && [[ $member == "$value" ]] && ! has_line "$out" "$role"; then
            out+="$role"$'\n'
        fi
    done <<<"$POLICY"
    printf '%s' "$out"
}

iam_in_place() {
    [[ $IAM_MODE == print ]] || return 0
    iam_cmd "$@"
    IAM_PLAN+=("  in place  $(quote_cmd "${IAM_CMD[@]}")")
}

iam_change() {
    iam_cmd "$@"
    if [[ $IAM_MODE == print ]]; then
        IAM_MISSING=$((IAM_MISSING + 1))
        IAM_PLAN+=("  MISSING   $(quote_cmd "${IAM_CMD[@]}")")
        say "    IAM for your IAM team: $(quote_cmd "${IAM_CMD[@]}")"
        return 0
    fi
    POLICIES=()
    run "${IAM_CMD[@]}" --format=none
}

# The project-level roles of one of this script's own service accounts: exactly WANTED.
converge_project_roles() {
    local member=$1 wanted=$2 role
    read_policy projects "$PROJECT_ID" || POLICY=""
    local held
    held=$(column_where 2 "$member")
    while IFS= read -r role; do
        [[ -n $role ]] || continue
        if has_line "$held" "$role"; then
            iam_in_place add-iam-policy-binding projects "$PROJECT_ID" "$member" "$role"
            [[ $IAM_MODE == print ]] || say "    = $(role_text "$role") for $member on project $PROJECT_ID"
        else
            iam_change add-iam-policy-binding projects "$PROJECT_ID" "$member" "$role"
        fi
    done <<<"$wanted"
    while IFS= read -r role; do
        [[ -z $role ]] || has_line "$wanted" "$role" ||
            iam_change remove-iam-policy-binding projects "$PROJECT_ID" "$member" "$role"
    done <<<"$held"
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
# function/.gcloudignore), used to skip an unchanged redeploy. Computed once a run.
SOURCE_FINGERPRINT=""
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

is_number() { [[ $1 =~ ^[0-9]{0,6}[.]?[0-9]{1,6}$ ]]; }
# Whole numbers are read as decimal: bash would take "060" for octal 48.
is_int() { [[ $1 =~ ^[0-9]{1,7}$ ]]; }
# awk does the float comparisons bash cannot (bash does the whole ones).
float_gt() {
    if [[ $1 =~ ^[0-9]{1,9}$ && $2 =~ ^[0-9]{1,9}$ ]]; then
        ((10#$1 > 10#$2))
    else
        awk -v a="$1" -v b="$2" 'BEGIN { exit !(a > b) }'
    fi
}

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
    --keep-images) need_value "$@"; KEEP_IMAGES=$2; shift 2 ;;
    --allowed-workflows) need_value "$@"; ALLOWED_WORKFLOWS=$2; shift 2 ;;
    --publisher) need_value "$@"; PUBLISHERS+=" $2"; shift 2 ;;
    --skip-demo-workflow) SKIP_DEMO_WORKFLOW=true; shift ;;
    --with-http-function) WITH_HTTP_FUNCTION=true; shift ;;
    --http-invoker) need_value "$@"; HTTP_INVOKERS+=" $2"; shift 2 ;;
    --http-ingress) need_value "$@"; HTTP_INGRESS=$2; shift 2 ;;
    --alert-channel) need_value "$@"; ALERT_CHANNEL=$2; shift 2 ;;
    --use-invoker-role) USE_INVOKER_ROLE=true; shift ;;
    --legacy-token-creator) LEGACY_TOKEN_CREATOR=true; shift ;;
    --with-events) WITH_EVENTS=true; shift ;;
    --event-topic) need_value "$@"; EVENT_TOPIC_SPECS+=$'\n'"$2"; shift 2 ;;
    --event-bucket) need_value "$@"; EVENT_BUCKETS+=" $2"; shift 2 ;;
    --no-legacy-token-creator) LEGACY_TOKEN_CREATOR=false; shift ;;
    --kms-key) need_value "$@"; KMS_KEY=$2; shift 2 ;;
    --topic-kms-key) need_value "$@"; TOPIC_KMS_KEY=$2; shift 2 ;;
    --docker-repository) need_value "$@"; DOCKER_REPOSITORY=$2; shift 2 ;;
    --vpc-connector) need_value "$@"; VPC_CONNECTOR=$2; shift 2 ;;
    --egress-settings) need_value "$@"; EGRESS_SETTINGS=$2; shift 2 ;;
    --build-worker-pool) need_value "$@"; BUILD_WORKER_POOL=$2; shift 2 ;;
    --iam) need_value "$@"; IAM_MODE=$2; shift 2 ;;
    --status) MODE=status; shift ;;
    --force) FORCE=true; shift ;;
    --dry-run) DRY_RUN=true; shift ;;
    --destroy) MODE=destroy; shift ;;
    --delete-images) DELETE_IMAGES=true; shift ;;
    --yes | -y) ASSUME_YES=true; shift ;;
    *)
        printf '%s: ERROR: unknown argument: %s\n' "$PROG" "$arg" >&2
        printf 'Run %s --help for the options.\n' "$PROG" >&2
        exit 2
        ;;
    esac
done

# --- validation: every input, before anything changes ---------------------------
# The same syntax as callback_relay.config.parse_allowed_workflows: a segment
# is '*' or an id, never a partial wildcard.
WORKFLOW_SEGMENT='(\*|[A-Za-z0-9][A-Za-z0-9_-]{0,127})'
ALLOWED_WORKFLOW_RE="^projects/$WORKFLOW_SEGMENT/locations/$WORKFLOW_SEGMENT/workflows/$WORKFLOW_SEGMENT\$"
# IAM principals in gcloud's --member syntax. allUsers and
# allAuthenticatedUsers are refused: nothing here is ever public.
MEMBER_RE='^(serviceAccount|user|group|domain|principal|principalSet):[^[:space:],;@]*@?[^[:space:],;]+$'
KMS_KEY_RE='^projects/[a-z][-a-z0-9]{4,28}[a-z0-9]/locations/[a-z0-9-]+/keyRings/[A-Za-z0-9_-]{1,63}/cryptoKeys/[A-Za-z0-9_-]{1,63}$'

split_list() {
    # "a, b c" -> one item per line
    tr -s ', ' '\n' <<<"$1" | grep -v '^$' || true
}

check_name() {
    local what=$1 value=$2 re=$3 rule=$4
    [[ $value =~ $re ]] || die "$what '$value' is not valid: $rule"
}

check_int() {
    local what=$1 name=$2 low=$3 high=$4 value
    value=${!name}
    is_int "$value" || die "$what must be a whole number of at most 7 digits, not '$value'"
    value=$((10#$value))
    ((value >= low && value <= high)) || die "$what must be $low-$high, not $value"
    printf -v "$name" '%s' "$value"
}

validate() {
    local flag name entry member
    for flag in SKIP_DEMO_WORKFLOW WITH_HTTP_FUNCTION LEGACY_TOKEN_CREATOR USE_INVOKER_ROLE WITH_EVENTS; do
        [[ ${!flag} == true || ${!flag} == false ]] || die "$flag must be true or false, not '${!flag}'"
    done
    case $IAM_MODE in
    apply | print) ;;
    *) die "--iam must be apply or print, not '$IAM_MODE'" ;;
    esac
    if [[ $PROJECT_ID == *:* ]]; then
        die "PROJECT_ID '$PROJECT_ID' is a domain-scoped project id: its service account emails and resource names take another form, which this script does not build. Deploy to a project with a plain id."
    fi
    # https://cloud.google.com/resource-manager/docs/creating-managing-projects: 6-30
    # characters, lowercase letters, digits and hyphens, a letter first.
    check_name PROJECT_ID "$PROJECT_ID" '^[a-z][-a-z0-9]{4,28}[a-z0-9]$' "6-30 lowercase letters, digits or hyphens, starting with a letter"
    check_name REGION "$REGION" '^[a-z]+-[a-z]+[0-9]+$' "a region such as us-central1"
    # Topic and subscription ids (https://cloud.google.com/pubsub/docs/pubsub-basics#resource_names),
    # narrowed to what needs no escaping in URLs, filters and commands.
    for name in RELAY_TOPIC DEAD_LETTER_TOPIC PUSH_SUBSCRIPTION DEAD_LETTER_SUBSCRIPTION; do
        check_name "$name" "${!name}" '^[a-zA-Z][a-zA-Z0-9._-]{2,254}$' "3-255 letters, digits, dots, underscores or hyphens, starting with a letter"
        [[ ${!name} != goog* ]] || die "$name must not start with 'goog'"
    done
    for name in FUNCTION_NAME HTTP_FUNCTION_NAME ARTIFACT_REPOSITORY; do
        check_name "$name" "${!name}" '^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$' "lowercase letters, digits and hyphens, at most 49, starting with a letter"
    done
    for name in FUNCTION_SA_NAME PUSH_SA_NAME WORKFLOW_SA_NAME BUILD_SA_NAME LEGACY_TRIGGER_SA_NAME; do
        check_name "$name" "${!name}" '^[a-z][-a-z0-9]{4,28}[a-z0-9]$' "a service account id: 6-30 lowercase letters, digits or hyphens"
    done
    for name in CUSTOM_ROLE_ID EVENTS_ROLE_ID; do
        check_name "$name" "${!name}" '^[a-zA-Z0-9_.]{3,64}$' "3-64 letters, digits, underscores or dots"
    done
    [[ $CUSTOM_ROLE_ID != "$EVENTS_ROLE_ID" ]] || die "CUSTOM_ROLE_ID and EVENTS_ROLE_ID must differ"
    check_name LOG_METRIC "$LOG_METRIC" '^[a-zA-Z0-9][-a-zA-Z0-9_.]{0,99}$' "letters, digits, hyphens, underscores or dots"
    # The workflow's name goes into ALLOWED_WORKFLOWS and the function's
    # environment: nothing but a Workflows id.
    check_name WORKFLOW_NAME "$WORKFLOW_NAME" '^[a-zA-Z][a-zA-Z0-9_-]{0,63}$' "a workflow id: a letter, then letters, digits, underscores or hyphens (at most 64)"
    # LOG_LEVEL reaches --set-env-vars, whose '@' separates variables: only its four values.
    case $LOG_LEVEL in
    DEBUG | INFO | WARNING | ERROR) ;;
    *) die "LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not '$LOG_LEVEL'" ;;
    esac
    check_name DEAD_LETTER_RETENTION "$DEAD_LETTER_RETENTION" '^[1-9][0-9]{0,6}[smhd]$' "a duration such as 7d or 86400s (10 minutes to 31 days)"
    if [[ ! $FUNCTION_RUNTIME =~ ^python3([0-9]+)$ ]] || ((10#${BASH_REMATCH[1]} < 12)); then
        die "--runtime '$FUNCTION_RUNTIME' must be python312 or newer"
    fi
    check_name "--memory" "$FUNCTION_MEMORY" '^[1-9][0-9]{0,5}(Mi|Gi|M|G)$' "an amount with a unit, e.g. 512Mi or 1Gi"
    check_int "--concurrency" FUNCTION_CONCURRENCY 1 1000
    check_int "--max-instances" FUNCTION_MAX_INSTANCES 1 1000
    check_int "--timeout" FUNCTION_TIMEOUT 1 "$MAX_FUNCTION_TIMEOUT"
    check_int "--max-delivery-attempts" MAX_DELIVERY_ATTEMPTS 5 100
    check_int MIN_RETRY_DELAY MIN_RETRY_DELAY 0 600
    check_int MAX_RETRY_DELAY MAX_RETRY_DELAY 0 600
    ((MIN_RETRY_DELAY <= MAX_RETRY_DELAY)) || die "MIN_RETRY_DELAY must not exceed MAX_RETRY_DELAY"
    check_int "--keep-images" KEEP_IMAGES 1 100
    check_int PROPAGATION_TIMEOUT PROPAGATION_TIMEOUT 0 3600
    if [[ -n $ALERT_OLDEST_UNACKED_SECONDS ]]; then
        check_int ALERT_OLDEST_UNACKED_SECONDS ALERT_OLDEST_UNACKED_SECONDS 60 604800
    fi
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
    local cpu
    cpu="$(cpu_value "$FUNCTION_CPU")"
    if ! is_number "$cpu" || ! float_gt "$cpu" 0; then
        die "--cpu '$FUNCTION_CPU' is not a number of vCPUs"
    fi
    if ((FUNCTION_CONCURRENCY > 1)) && float_gt 1 "$cpu"; then
        die "--concurrency $FUNCTION_CONCURRENCY needs --cpu 1 or more (Cloud Functions rule for concurrency > 1)"
    fi
    # Organisation-policy pass-throughs.
    TOPIC_KMS_KEY=${TOPIC_KMS_KEY:-$KMS_KEY}
    for name in KMS_KEY TOPIC_KMS_KEY; do
        [[ -z ${!name} ]] || check_name "$name" "${!name}" "$KMS_KEY_RE" "projects/P/locations/L/keyRings/R/cryptoKeys/K"
    done
    if [[ -n $KMS_KEY && $KMS_KEY != */locations/"$REGION"/* ]]; then
        die "--kms-key must be in the function's region $REGION (https://cloud.google.com/functions/docs/securing/cmek)"
    fi
    [[ -z $DOCKER_REPOSITORY ]] || check_name "--docker-repository" "$DOCKER_REPOSITORY" '^projects/[a-z][-a-z0-9]{4,28}[a-z0-9]/locations/[a-z0-9-]+/repositories/[a-z]([-a-z0-9]{0,61}[a-z0-9])?$' "projects/P/locations/L/repositories/R"
    [[ -z $VPC_CONNECTOR ]] || check_name "--vpc-connector" "$VPC_CONNECTOR" '^(projects/[a-z][-a-z0-9]{4,28}[a-z0-9]/locations/[a-z0-9-]+/connectors/)?[a-z][-a-z0-9]{0,23}$' "a connector name or projects/P/locations/L/connectors/C"
    case $EGRESS_SETTINGS in
    "") ;;
    private-ranges-only | all) [[ -n $VPC_CONNECTOR ]] || die "--egress-settings needs --vpc-connector" ;;
    *) die "--egress-settings must be private-ranges-only or all" ;;
    esac
    [[ -z $BUILD_WORKER_POOL ]] || check_name "--build-worker-pool" "$BUILD_WORKER_POOL" '^projects/[a-z][-a-z0-9]{4,28}[a-z0-9]/locations/[a-z0-9-]+/workerPools/[a-zA-Z0-9_-]{1,63}$' "projects/P/locations/L/workerPools/W"
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
    mapfile -t PUBLISHER_MEMBERS < <(split_list "$PUBLISHERS" | sort -u)
    mapfile -t HTTP_INVOKER_MEMBERS < <(split_list "$HTTP_INVOKERS" | sort -u)
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
    [[ -x $(command -v "$DEPLOY_SLEEP" 2>/dev/null || true) ]] || die "DEPLOY_SLEEP '$DEPLOY_SLEEP' is not a command"
    validate_events
    [[ -f $SCRIPT_DIR/function/main.py ]] || die "function/main.py not found next to $PROG"
    [[ -f $SCRIPT_DIR/workflow.yaml ]] || $SKIP_DEMO_WORKFLOW || die "workflow.yaml not found next to $PROG"
}
PUBLISHER_MEMBERS=()
HTTP_INVOKER_MEMBERS=()

# Topic ids, narrowed as RELAY_TOPIC's are; a bucket name
# (https://cloud.google.com/storage/docs/buckets#naming).
TOPIC_ID_RE='^[a-zA-Z][a-zA-Z0-9._-]{2,254}$'
BUCKET_RE='^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$'
EVENT_TOPIC_NAMES=()   # the --event-topic topics (ids), in order
EVENT_BUCKET_NAMES=()  # the --event-bucket buckets
EVENT_TOPICS_JSON=""   # the function's EVENT_TOPICS

# The keyed-wait inputs, each checked before anything changes; EVENT_TOPICS is
# built and then parsed by the relay's own parser, so a template the relay would
# refuse at start-up is refused here.
validate_events() {
    local spec topic template bucket name
    local -a specs=() buckets=()
    if [[ -n $FIRESTORE_DATABASE ]]; then
        # gcloud firestore databases create --help: 4-63 of [a-z0-9-], a letter
        # first, a letter or digit last, not UUID-like; or (default).
        if [[ $FIRESTORE_DATABASE != "(default)" ]]; then
            check_name FIRESTORE_DATABASE "$FIRESTORE_DATABASE" '^[a-z][a-z0-9-]{2,61}[a-z0-9]$' "(default), or 4-63 lowercase letters, digits or hyphens, a letter first"
            [[ ! $FIRESTORE_DATABASE =~ ^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$ ]] || die "FIRESTORE_DATABASE must not look like a UUID"
        fi
    fi
    [[ -z $FIRESTORE_LOCATION ]] || check_name FIRESTORE_LOCATION "$FIRESTORE_LOCATION" '^[a-z][a-z0-9-]{1,30}[a-z0-9]$' "a Firestore location such as us-central1 or nam5"
    case $EVENTS_GRANT_SCOPE in
    database | project) ;;
    *) die "EVENTS_GRANT_SCOPE must be database or project, not '$EVENTS_GRANT_SCOPE'" ;;
    esac
    # The relay reads 0 to 7 days (keyed_message.MAX_TTL_SECONDS).
    [[ -z $EVENT_TTL_SECONDS ]] || check_int EVENT_TTL_SECONDS EVENT_TTL_SECONDS 0 604800
    while IFS= read -r spec; do
        [[ -z ${spec//[[:space:]]/} ]] || specs+=("$spec")
    done <<<"$EVENT_TOPIC_SPECS"
    mapfile -t buckets < <(split_list "$EVENT_BUCKETS")
    if ! $WITH_EVENTS; then
        ((${#specs[@]} + ${#buckets[@]} == 0)) || die "--event-topic and --event-bucket need --with-events (the relay refuses EVENT_TOPICS while keyed waits are off)"
        [[ -z $FIRESTORE_DATABASE$FIRESTORE_LOCATION$EVENT_TTL_SECONDS ]] || die "FIRESTORE_DATABASE, FIRESTORE_LOCATION and EVENT_TTL_SECONDS need --with-events"
        return 0
    fi
    EVENT_TOPIC_NAMES=() EVENT_BUCKET_NAMES=()
    local -a entries=()
    local -A seen=()
    for spec in "${specs[@]}"; do
        [[ $spec == *=* ]] || die "--event-topic '$spec' is not TOPIC=TEMPLATE"
        topic=${spec%%=*} template=${spec#*=}
        # A push subscription must be in the function's project (internal ingress
        # admits Pub/Sub from the same project only), so is the topic it reads here.
        if [[ $topic == projects/* ]]; then
            [[ $topic == "projects/$PROJECT_ID/topics/"* ]] || die "--event-topic '$topic' is in another project: only topics of $PROJECT_ID can be wired (its push subscription must be in the function's project)"
            topic=${topic#"projects/$PROJECT_ID/topics/"}
        fi
        check_name "--event-topic" "$topic" "$TOPIC_ID_RE" "a topic id (3-255 letters, digits, dots, underscores or hyphens, starting with a letter) or projects/$PROJECT_ID/topics/ID"
        [[ $topic != goog* ]] || die "--event-topic '$topic' must not start with 'goog'"
        [[ $topic != "$RELAY_TOPIC" && $topic != "$DEAD_LETTER_TOPIC" ]] || die "--event-topic '$topic' is the relay's own topic or its dead-letter topic"
        [[ -z ${seen[$topic]+x} ]] || die "--event-topic '$topic' is given twice"
        [[ -n $template ]] || die "--event-topic '$topic' has an empty template"
        seen[$topic]=1
        EVENT_TOPIC_NAMES+=("$topic")
        entries+=("$topic" "$template")
    done
    for bucket in "${buckets[@]}"; do
        bucket=${bucket#gs://}
        bucket=${bucket%/}
        check_name "--event-bucket" "$bucket" "$BUCKET_RE" "a bucket name (3-222 lowercase letters, digits, dots, underscores or hyphens)"
        [[ $bucket != goog* ]] || die "--event-bucket '$bucket' must not start with 'goog'"
        topic="$(bucket_topic "$bucket")"
        check_name "the topic of bucket $bucket" "$topic" "$TOPIC_ID_RE" "BUCKET_TOPIC_PREFIX + the bucket must be a topic id of at most 255 characters"
        [[ -z ${seen[$topic]+x} ]] || die "--event-bucket '$bucket' is given twice, or its topic $topic is also an --event-topic"
        seen[$topic]=1
        EVENT_BUCKET_NAMES+=("$bucket")
        entries+=("$topic" "cloud-storage")
    done
    for topic in "${EVENT_TOPIC_NAMES[@]}" "${EVENT_BUCKET_NAMES[@]/#/$BUCKET_TOPIC_PREFIX}"; do
        name="$(event_subscription "$topic")"
        check_name "the push subscription of $topic" "$name" '^[a-zA-Z][a-zA-Z0-9._-]{2,254}$' "EVENT_SUBSCRIPTION_PREFIX + the topic must be a subscription id of at most 255 characters"
    done
    ((${#entries[@]} > 0)) || return 0
    event_topics_json "${entries[@]}"
}

bucket_topic() { printf '%s%s' "$BUCKET_TOPIC_PREFIX" "$1"; }
event_subscription() { printf '%s%s' "$EVENT_SUBSCRIPTION_PREFIX" "$1"; }

# EVENT_TOPICS from TOPIC TEMPLATE pairs: a template that is a JSON object is taken
# as one ({"key", "event_id"}), anything else as a key template. The relay's own
# parser (function/callback_relay/event_topics.py) must accept the result.
event_topics_json() {
    command -v "$EVENTS_PYTHON" >/dev/null || die "--event-topic and --event-bucket need Python 3.10 or newer ($EVENTS_PYTHON) to check the templates with the relay's own parser; set EVENTS_PYTHON"
    local out status=0
    # Its reasons go to stderr as they come; only the JSON is kept.
    out="$("$EVENTS_PYTHON" - "$SCRIPT_DIR/function" "$@" <<'PY'
import json
import sys

if sys.version_info < (3, 10):
    sys.exit(f"Python {sys.version.split()[0]} is too old to check the templates: set EVENTS_PYTHON to Python 3.10 or newer")
sys.path.insert(0, sys.argv[1])
from callback_relay.errors import ConfigError  # noqa: E402
from callback_relay.event_topics import parse_event_topics  # noqa: E402

pairs = sys.argv[2:]
config = {}
for topic, template in zip(pairs[::2], pairs[1::2]):
    try:
        value = json.loads(template)
    except ValueError:
        value = template
    config[topic] = value if isinstance(value, dict) else template
text = json.dumps(config, sort_keys=True, separators=(",", ":"))
try:
    parse_event_topics(text)
except ConfigError as exc:
    sys.exit(f"EVENT_TOPICS would be refused by the relay: {exc}")
print(text)
PY
)" || status=$?
    ((status == 0)) && [[ $out == \{* ]] || die "--event-topic: the templates were not accepted (above); nothing was changed"
    # A function's variables, names and values, hold at most 32 KiB in all
    # (https://cloud.google.com/run/docs/configuring/services/overview-environment-variables).
    ((${#out} <= 30000)) || die "EVENT_TOPICS would be ${#out} bytes; a function's environment holds at most 32 KiB: wire fewer topics or shorter templates"
    EVENT_TOPICS_JSON=$out
}

command -v gcloud >/dev/null || die "gcloud is not on PATH: install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install)"

if [[ -z $PROJECT_ID ]]; then
    PROJECT_ID="$(gcloud config get-value project 2>/dev/null || true)"
    PROJECT_ID="${PROJECT_ID//[[:space:]]/}"
    [[ $PROJECT_ID != "(unset)" ]] || PROJECT_ID=""
fi
[[ -n $PROJECT_ID ]] || die "no project: pass --project ID, set PROJECT_ID, or run 'gcloud config set project ID'"
validate

FUNCTION_SA="$FUNCTION_SA_NAME@$PROJECT_ID.iam.gserviceaccount.com"
PUSH_SA="$PUSH_SA_NAME@$PROJECT_ID.iam.gserviceaccount.com"
WORKFLOW_SA="$WORKFLOW_SA_NAME@$PROJECT_ID.iam.gserviceaccount.com"
BUILD_SA="$BUILD_SA_NAME@$PROJECT_ID.iam.gserviceaccount.com"
LEGACY_TRIGGER_SA="$LEGACY_TRIGGER_SA_NAME@$PROJECT_ID.iam.gserviceaccount.com"
DEAD_LETTER_TOPIC_PATH="projects/$PROJECT_ID/topics/$DEAD_LETTER_TOPIC"
# For push delivery the ack deadline is the push request's timeout
# (ackDeadlineSeconds, https://cloud.google.com/pubsub/docs/reference/rest/v1/projects.subscriptions):
# it must outlast one whole function run, or Pub/Sub redelivers mid-call.
ACK_DEADLINE=$((FUNCTION_TIMEOUT > 10 ? FUNCTION_TIMEOUT : 10))
# How long a message may wait on the push subscription when every delivery
# fails slowly: each attempt may run the full timeout, then back off up to
# MAX_RETRY_DELAY. Older than that, delivery is stuck, not retrying.
RETRY_WINDOW_SECONDS=${ALERT_OLDEST_UNACKED_SECONDS:-$((MAX_DELIVERY_ATTEMPTS * (FUNCTION_TIMEOUT + MAX_RETRY_DELAY)))}
CUSTOM_ROLE="projects/$PROJECT_ID/roles/$CUSTOM_ROLE_ID"
if $USE_INVOKER_ROLE; then
    FUNCTION_ROLE=roles/workflows.invoker
else
    FUNCTION_ROLE=$CUSTOM_ROLE
fi
# Keyed waits: the database, where it is made, and the one grant on it.
EVENTS_DATABASE=${FIRESTORE_DATABASE:-"(default)"}
EVENTS_LOCATION=${FIRESTORE_LOCATION:-$REGION}
EVENTS_ROLE="projects/$PROJECT_ID/roles/$EVENTS_ROLE_ID"
# The custom role on this database only: an IAM condition on its resource name
# (Firestore has no per-database IAM policy of its own), folded as read_policy keeps it.
EVENTS_GRANT="$EVENTS_ROLE${US}resource.name == \"projects/$PROJECT_ID/databases/$EVENTS_DATABASE\"${US}workflows-callback-relay event store${US}Documents of the database $EVENTS_DATABASE only"
[[ $EVENTS_GRANT_SCOPE == database ]] || EVENTS_GRANT=$EVENTS_ROLE
IMAGE_REPOSITORY=${DOCKER_REPOSITORY:-projects/$PROJECT_ID/locations/$REGION/repositories/$ARTIFACT_REPOSITORY}
EGRESS_SETTINGS=${EGRESS_SETTINGS:-${VPC_CONNECTOR:+private-ranges-only}}
P=(--project="$PROJECT_ID")
# "Does not exist" is a propagation delay only for an account this run may just
# have created, or a Google service agent; a --publisher typo fails at once.
OWN_ACCOUNTS_RE="($FUNCTION_SA_NAME|$PUSH_SA_NAME|$BUILD_SA_NAME|$WORKFLOW_SA_NAME)@$PROJECT_ID\.iam\.gserviceaccount\.com|service-[0-9]+@[a-z-]+\.iam\.gserviceaccount\.com"
TRANSIENT_RE="iam\.serviceaccounts\.actas|($OWN_ACCOUNTS_RE).{0,60}(does not exist|not found)|(does not exist|not found).{0,60}($OWN_ACCOUNTS_RE)|missing permission on the build service account|service agent|gs-project-accounts\.iam\.gserviceaccount\.com.{0,3} does not have permission to publish|enabled this API recently"

# Every labelled resource: app=..., component=<what it is>.
LABELS="app=$APP_LABEL,component="

summary() {
    local note=""
    if $DRY_RUN; then
        note=" (dry run: nothing will change)"
    elif [[ $IAM_MODE == print && $MODE == deploy ]]; then
        note=" (--iam=print: no IAM change, the grants are printed)"
    fi
    say "workflows-callback-relay: $MODE$note"
    say "  project            $PROJECT_ID"
    say "  region             $REGION"
    say "  relay topic        $RELAY_TOPIC, delivered by the push subscription $PUSH_SUBSCRIPTION"
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
    say "  service accounts   $FUNCTION_SA (function), $PUSH_SA (push), $BUILD_SA (build)$($SKIP_DEMO_WORKFLOW || printf ', %s (workflow)' "$WORKFLOW_SA")"
    say "  function role      $FUNCTION_ROLE"
    say "  delivery policy    $MAX_DELIVERY_ATTEMPTS attempts, backoff ${MIN_RETRY_DELAY}s-${MAX_RETRY_DELAY}s, then $DEAD_LETTER_TOPIC; ack deadline ${ACK_DEADLINE}s"
    say "  images             $IMAGE_REPOSITORY$([[ -n $DOCKER_REPOSITORY ]] || printf ' (newest %s kept)' "$KEEP_IMAGES")"
    [[ -z $KMS_KEY$TOPIC_KMS_KEY ]] || say "  encryption keys    function and images ${KMS_KEY:-Google-managed}; topics ${TOPIC_KMS_KEY:-Google-managed}"
    [[ -z $VPC_CONNECTOR ]] || say "  VPC connector      $VPC_CONNECTOR (egress $EGRESS_SETTINGS)"
    [[ -z $BUILD_WORKER_POOL ]] || say "  build worker pool  $BUILD_WORKER_POOL"
    if [[ -n $ALERT_CHANNEL ]]; then
        say "  alert policy       $ALERT_POLICY_NAME -> $ALERT_CHANNEL"
    fi
    if $WITH_EVENTS; then
        say "  keyed waits        Firestore database $EVENTS_DATABASE (created in $EVENTS_LOCATION if missing), role $EVENTS_ROLE_ID on $([[ $EVENTS_GRANT_SCOPE == database ]] && printf 'it only' || printf 'every database of the project (EVENTS_GRANT_SCOPE=project)')${EVENT_TTL_SECONDS:+, events kept ${EVENT_TTL_SECONDS}s}"
        local topic
        for topic in "${EVENT_TOPIC_NAMES[@]}"; do
            say "  event topic        $topic -> $(event_subscription "$topic")"
        done
        for topic in "${EVENT_BUCKET_NAMES[@]}"; do
            say "  event bucket       gs://$topic ($NOTIFICATION_EVENT_TYPES) -> topic $(bucket_topic "$topic") -> $(event_subscription "$(bucket_topic "$topic")")"
        done
    fi
}

# --- shared look-ups ----------------------------------------------------------------
PROJECT_NUMBER=""
PUBSUB_AGENT=""
ALLOWED=""

lookup_project_number() {
    step "Look up the project number" "Reading the project needs resourcemanager.projects.get (roles/browser). Check: gcloud projects describe $PROJECT_ID"
    PROJECT_NUMBER=""
    if query projects describe "$PROJECT_ID" --format="value(projectNumber)"; then
        PROJECT_NUMBER=$QUERY_OUT
    fi
    if [[ -z $PROJECT_NUMBER ]]; then
        $DRY_RUN || [[ $MODE != deploy ]] || die "could not read the number of project $PROJECT_ID"
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

# The service agents that use KMS_KEY, as https://cloud.google.com/functions/docs/securing/cmek lists them.
cmek_agents() {
    local n=$PROJECT_NUMBER
    printf 'serviceAccount:service-%s@%s.iam.gserviceaccount.com\n' \
        "$n" gcf-admin-robot "$n" gcp-sa-artifactregistry "$n" gs-project-accounts \
        "$n" serverless-robot-prod "$n" gcp-sa-eventarc
}

# Functions of this deployment that live in another region (a --region change).
OTHER_REGIONS=()
find_other_regions() {
    OTHER_REGIONS=()
    local name fn
    query functions list "${P[@]}" --format="value(name)" || return 0
    while IFS= read -r name; do
        for fn in "$FUNCTION_NAME" "$HTTP_FUNCTION_NAME"; do
            if [[ $name == projects/*/locations/*/functions/"$fn" && $name != */locations/"$REGION"/* ]]; then
                OTHER_REGIONS+=("$name")
            fi
        done
    done <<<"$QUERY_OUT"
}

other_region_commands() {
    local name region
    for name in "${OTHER_REGIONS[@]}"; do
        region=${name#*/locations/}
        region=${region%%/*}
        printf '  %s\n' "$(quote_cmd gcloud functions delete "${name##*/}" --region="$region" "${P[@]}" --quiet)"
        if [[ ${name##*/} == "$FUNCTION_NAME" ]] && ! $SKIP_DEMO_WORKFLOW; then
            printf '  %s\n' "$(quote_cmd gcloud workflows delete "$WORKFLOW_NAME" --location="$region" "${P[@]}" --quiet)"
        fi
    done
}

# --- deploy steps -------------------------------------------------------------
enable_apis() {
    step "Enable APIs" "Enabling APIs needs serviceusage.services.enable (roles/serviceusage.serviceUsageAdmin) and a billing account on the project."
    local enabled="" missing=() api
    local -a apis=("${REQUIRED_APIS[@]}")
    [[ -z $KMS_KEY$TOPIC_KMS_KEY ]] || apis+=(cloudkms.googleapis.com)
    # Only the CMEK grants name the Eventarc agent (see cmek_agents).
    [[ -z $KMS_KEY ]] || apis+=(eventarc.googleapis.com)
    [[ -z $VPC_CONNECTOR ]] || apis+=(vpcaccess.googleapis.com)
    ! $WITH_EVENTS || apis+=(firestore.googleapis.com)
    ((${#EVENT_BUCKET_NAMES[@]} == 0)) || apis+=(storage.googleapis.com)
    if query services list --enabled "${P[@]}" --format="value(config.name)"; then
        enabled=$QUERY_OUT
    fi
    for api in "${apis[@]}"; do
        if has_line "$enabled" "$api"; then
            say "    = $api"
        else
            missing+=("$api")
        fi
    done
    if ((${#missing[@]} > 0)); then
        run gcloud services enable "${missing[@]}" "${P[@]}"
    fi
}

# A new project has no Pub/Sub service agent until something creates it; the
# dead-letter grants and the push subscription's OIDC token need it.
# https://cloud.google.com/sdk/gcloud/reference/beta/services/identity/create
create_service_identities() {
    step "Create the service agents" "Needs serviceusage.services.use (roles/serviceusage.serviceUsageAdmin) and the gcloud beta component (gcloud components install beta)."
    # An agent that already holds one of this deployment's grants exists: the
    # creation (idempotent, but a write) is skipped then.
    if { role_members "pubsub topics" "$DEAD_LETTER_TOPIC" roles/pubsub.publisher "${P[@]}" &&
        has_line "$ROLE_MEMBERS" "serviceAccount:$PUBSUB_AGENT"; } ||
        { role_members "pubsub subscriptions" "$PUSH_SUBSCRIPTION" roles/pubsub.subscriber "${P[@]}" &&
            has_line "$ROLE_MEMBERS" "serviceAccount:$PUBSUB_AGENT"; }; then
        say "    = Pub/Sub service agent $PUBSUB_AGENT"
    else
        run gcloud beta services identity create --service=pubsub.googleapis.com "${P[@]}" --format=none
    fi
    [[ -n $KMS_KEY && -z $DOCKER_REPOSITORY ]] || return 0
    local users=""
    if role_members "kms keys" "$KMS_KEY" "$KMS_ROLE"; then
        users=$ROLE_MEMBERS
    fi
    if grep -Fxq "serviceAccount:service-$PROJECT_NUMBER@gcp-sa-artifactregistry.iam.gserviceaccount.com" <<<"$users" &&
        grep -Fxq "serviceAccount:service-$PROJECT_NUMBER@gs-project-accounts.iam.gserviceaccount.com" <<<"$users"; then
        say "    = the Artifact Registry and Cloud Storage service agents"
        return 0
    fi
    # The agents that use the key and are not created with their API
    # (https://cloud.google.com/artifact-registry/docs/cmek, https://cloud.google.com/storage/docs/getting-service-agent).
    run gcloud beta services identity create --service=artifactregistry.googleapis.com "${P[@]}" --format=none
    run gcloud storage service-agent "${P[@]}" --format=none
}

check_regions() {
    step "Check for an earlier deployment in another region" "Listing functions needs cloudfunctions.functions.list (roles/cloudfunctions.viewer)."
    find_other_regions
    if ((${#OTHER_REGIONS[@]} > 0)); then
        printf '%s: ERROR: this deployment also exists in another region: %s.\n' "$PROG" "${OTHER_REGIONS[*]}" >&2
        printf 'It still runs as %s, which may resume workflows. Delete it first, then run %s again:\n' "$FUNCTION_SA" "$PROG" >&2
        other_region_commands >&2
        exit 1
    fi
    say "    = only in $REGION"
}

TOPIC_KMS_NOW=""
TOPIC_LABELS_NOW=""
describe_topic() {
    TOPIC_KMS_NOW="" TOPIC_LABELS_NOW=""
    query pubsub topics describe "$1" "${P[@]}" --format='value[separator="|"](kmsKeyName,labels.app,labels.component)' || return 1
    local app component
    IFS='|' read -r TOPIC_KMS_NOW app component <<<"$QUERY_OUT"
    TOPIC_LABELS_NOW="app=$app,component=$component"
}

ensure_topic() {
    local topic=$1 component=$2
    local -a key_flags=()
    [[ -z $TOPIC_KMS_KEY ]] || key_flags=(--topic-encryption-key="$TOPIC_KMS_KEY")
    if ! describe_topic "$topic"; then
        run gcloud pubsub topics create "$topic" "${P[@]}" --labels="${LABELS}$component" "${key_flags[@]}"
        return 0
    fi
    local -a update=()
    [[ $TOPIC_LABELS_NOW == "${LABELS}$component" ]] || update+=(--update-labels="${LABELS}$component")
    [[ -z $TOPIC_KMS_KEY || $TOPIC_KMS_NOW == "$TOPIC_KMS_KEY" ]] || update+=("${key_flags[@]}")
    if ((${#update[@]} > 0)); then
        run gcloud pubsub topics update "$topic" "${P[@]}" "${update[@]}"
    else
        say "    = topic $topic"
    fi
}

DL_SUB_TOPIC=""
DL_SUB_TTL=""
DL_SUB_RETENTION=""
DL_SUB_LABELS=""
describe_dead_letter_subscription() {
    DL_SUB_TOPIC="" DL_SUB_TTL="" DL_SUB_RETENTION="" DL_SUB_LABELS=""
    query pubsub subscriptions describe "$DEAD_LETTER_SUBSCRIPTION" "${P[@]}" \
        --format='value[separator="|"](topic,expirationPolicy.ttl,messageRetentionDuration,labels.app,labels.component)' || return 1
    local app component
    IFS='|' read -r DL_SUB_TOPIC DL_SUB_TTL DL_SUB_RETENTION app component <<<"$QUERY_OUT"
    DL_SUB_LABELS="app=$app,component=$component"
}

# The retention as the API reports it (seconds), e.g. 7d -> 604800s.
retention_seconds() {
    local value=${1%?} unit=${1: -1}
    case $unit in
    s) printf '%ss' "$((10#$value))" ;;
    m) printf '%ss' "$((10#$value * 60))" ;;
    h) printf '%ss' "$((10#$value * 3600))" ;;
    d) printf '%ss' "$((10#$value * 86400))" ;;
    esac
}

create_topics() {
    step "Create the topics" "Creating topics needs pubsub.topics.create/update (roles/pubsub.editor); a topic key needs the Pub/Sub service agent's roles/cloudkms.cryptoKeyEncrypterDecrypter on it."
    if [[ -n $TOPIC_KMS_KEY ]]; then
        # Pub/Sub encrypts with the key as its service agent (https://cloud.google.com/pubsub/docs/encryption).
        converge_key_users "$TOPIC_KMS_KEY" "serviceAccount:$PUBSUB_AGENT"
    fi
    ensure_topic "$RELAY_TOPIC" relay-topic
    ensure_topic "$DEAD_LETTER_TOPIC" dead-letter-topic
    step "Create the dead-letter subscription" "Creating subscriptions needs pubsub.subscriptions.create/update (roles/pubsub.editor)."
    # Kept so that tools/replay_dead_letters.py can move messages back; never
    # expires, and a message stays for DEAD_LETTER_RETENTION (at most 31d).
    if ! describe_dead_letter_subscription; then
        run gcloud pubsub subscriptions create "$DEAD_LETTER_SUBSCRIPTION" "${P[@]}" \
            --topic="$DEAD_LETTER_TOPIC" \
            --message-retention-duration="$DEAD_LETTER_RETENTION" \
            --expiration-period=never \
            --ack-deadline=60 \
            --labels="${LABELS}dead-letter-subscription"
        return 0
    fi
    if [[ $DL_SUB_TOPIC != "$DEAD_LETTER_TOPIC_PATH" ]]; then
        die "subscription $DEAD_LETTER_SUBSCRIPTION reads ${DL_SUB_TOPIC:-no topic}, not $DEAD_LETTER_TOPIC_PATH: a subscription's topic cannot change. Set DEAD_LETTER_SUBSCRIPTION to another name, or delete it (its messages go with it): gcloud pubsub subscriptions delete $DEAD_LETTER_SUBSCRIPTION --project=$PROJECT_ID"
    fi
    if [[ -n $DL_SUB_TTL || $DL_SUB_RETENTION != "$(retention_seconds "$DEAD_LETTER_RETENTION")" || $DL_SUB_LABELS != "${LABELS}dead-letter-subscription" ]]; then
        run gcloud pubsub subscriptions update "$DEAD_LETTER_SUBSCRIPTION" "${P[@]}" \
            --expiration-period=never \
            --message-retention-duration="$DEAD_LETTER_RETENTION" \
            --update-labels="${LABELS}dead-letter-subscription"
    else
        say "    = subscription $DEAD_LETTER_SUBSCRIPTION"
    fi
}

# The members that may use a KMS key: its encrypter/decrypter role holds at least
# these (a key is often shared, so nobody else is removed).
converge_key_users() {
    local key=$1 member
    shift
    if ! role_members "kms keys" "$key" "$KMS_ROLE"; then
        ROLE_MEMBERS=""
    fi
    for member in "$@"; do
        if has_line "$ROLE_MEMBERS" "$member"; then
            iam_in_place add-iam-policy-binding "kms keys" "$key" "$member" "$KMS_ROLE"
            [[ $IAM_MODE == print ]] || say "    = $KMS_ROLE for $member on key $key"
        else
            iam_change add-iam-policy-binding "kms keys" "$key" "$member" "$KMS_ROLE"
        fi
    done
}

REPO_KMS_NOW=""
REPO_KEEP_NOW=""
REPO_DELETE_NOW=""
REPO_LABELS_NOW=""
describe_repository() {
    REPO_KMS_NOW="" REPO_KEEP_NOW="" REPO_DELETE_NOW="" REPO_LABELS_NOW=""
    query artifacts repositories describe "$ARTIFACT_REPOSITORY" --location="$REGION" "${P[@]}" \
        --format='value[separator="|"](kmsKeyName,cleanupPolicies.keep-newest.mostRecentVersions.keepCount,cleanupPolicies.delete-older.condition.olderThan,labels.app,labels.component)' || return 1
    local app component
    IFS='|' read -r REPO_KMS_NOW REPO_KEEP_NOW REPO_DELETE_NOW app component <<<"$QUERY_OUT"
    REPO_LABELS_NOW="app=$app,component=$component"
}

# Keep the KEEP_IMAGES newest images; delete the others once a day old. A version
# that a keep policy matches is never deleted
# (https://cloud.google.com/artifact-registry/docs/repositories/cleanup-policy).
cleanup_policy_json() {
    cat <<EOF
[
  {"name": "keep-newest", "action": {"type": "Keep"}, "mostRecentVersions": {"keepCount": $KEEP_IMAGES}},
  {"name": "delete-older", "action": {"type": "Delete"}, "condition": {"tagState": "any", "olderThan": "86400s"}}
]
EOF
}

ensure_repository() {
    step "Create the image repository" "Needs artifactregistry.repositories.create/update (roles/artifactregistry.admin)."
    if [[ -n $DOCKER_REPOSITORY ]]; then
        say "    = your repository $DOCKER_REPOSITORY (--docker-repository): its cleanup policy is yours"
        return 0
    fi
    if [[ -n $KMS_KEY ]]; then
        local -a agents
        mapfile -t agents < <(cmek_agents)
        converge_key_users "$KMS_KEY" "${agents[@]}"
    fi
    if ! describe_repository; then
        local -a key_flags=()
        [[ -z $KMS_KEY ]] || key_flags=(--kms-key="$KMS_KEY")
        run gcloud artifacts repositories create "$ARTIFACT_REPOSITORY" --location="$REGION" "${P[@]}" \
            --repository-format=docker --description="Images of the workflows-callback-relay functions" \
            --labels="${LABELS}images" "${key_flags[@]}"
        REPO_KEEP_NOW="" REPO_KMS_NOW=$KMS_KEY REPO_LABELS_NOW="${LABELS}images"
    fi
    if [[ -n $KMS_KEY && $REPO_KMS_NOW != "$KMS_KEY" ]]; then
        die "repository $ARTIFACT_REPOSITORY is encrypted with '${REPO_KMS_NOW:-a Google-managed key}', not '${KMS_KEY:-a Google-managed key}': a repository's key cannot change. Set ARTIFACT_REPOSITORY to a new name."
    fi
    if [[ $REPO_LABELS_NOW != "${LABELS}images" ]]; then
        run gcloud artifacts repositories update "$ARTIFACT_REPOSITORY" --location="$REGION" "${P[@]}" --update-labels="${LABELS}images"
    fi
    if [[ $REPO_KEEP_NOW == "$KEEP_IMAGES" && $REPO_DELETE_NOW == 86400s ]]; then
        say "    = repository $ARTIFACT_REPOSITORY, newest $KEEP_IMAGES images kept"
        return 0
    fi
    local file
    file="$(scratch_file cleanup-policy)"
    cleanup_policy_json >"$file"
    run gcloud artifacts repositories set-cleanup-policies "$ARTIFACT_REPOSITORY" --location="$REGION" "${P[@]}" --policy="$file"
}

ensure_service_account() {
    local name=$1 email=$2 display=$3
    if exists iam service-accounts describe "$email" "${P[@]}" --format="value(email)"; then
        say "    = service account $email"
    elif [[ $IAM_MODE == print ]]; then
        iam_identity_missing gcloud iam service-accounts create "$name" "${P[@]}" --display-name="$display"
    else
        run gcloud iam service-accounts create "$name" "${P[@]}" --display-name="$display"
    fi
}

IDENTITIES_MISSING=0
iam_identity_missing() {
    IAM_MISSING=$((IAM_MISSING + 1))
    IDENTITIES_MISSING=$((IDENTITIES_MISSING + 1))
    IAM_PLAN+=("  MISSING   $(quote_cmd "$@")")
    say "    IAM for your IAM team: $(quote_cmd "$@")"
}

create_service_accounts() {
    step "Create the service accounts" "Creating service accounts needs iam.serviceAccounts.create (roles/iam.serviceAccountAdmin) and the IAM API."
    ensure_service_account "$FUNCTION_SA_NAME" "$FUNCTION_SA" "callback relay function (sends Workflows callbacks)"
    ensure_service_account "$PUSH_SA_NAME" "$PUSH_SA" "callback relay push subscription (invokes the function)"
    ensure_service_account "$BUILD_SA_NAME" "$BUILD_SA" "callback relay build (Cloud Build for the function)"
    if ! $SKIP_DEMO_WORKFLOW; then
        ensure_service_account "$WORKFLOW_SA_NAME" "$WORKFLOW_SA" "callback relay demo workflow (publishes to the relay topic)"
    fi
}

ensure_custom_role() {
    ensure_role "$CUSTOM_ROLE_ID" CUSTOM_ROLE_ID "$CALLBACK_PERMISSION" "Workflows callback sender" \
        "Only $CALLBACK_PERMISSION: resume a waiting execution, nothing else"
}

# The keyed waits' store: read, create and update documents; never delete or list.
ensure_events_role() {
    ensure_role "$EVENTS_ROLE_ID" EVENTS_ROLE_ID "$EVENTS_PERMISSIONS" "workflows-callback-relay event store" \
        "Read, create and update Firestore documents (no delete, no list): the keyed waits of workflows-callback-relay"
}

# ensure_role ID VARIABLE PERMISSIONS TITLE DESCRIPTION: a project custom role
# holding exactly PERMISSIONS (comma-separated).
ensure_role() {
    local id=$1 variable=$2 wanted=$3 title=$4 description=$5
    # https://cloud.google.com/iam/docs/creating-custom-roles#deleting-custom-role:
    # a deleted role can be undeleted for 7 days; after that it is purged and
    # its ID cannot be reused until 37 days after the deletion.
    step "Create the custom role $id" "Creating roles needs iam.roles.create/get/update/undelete (roles/iam.roleAdmin). A custom role deleted more than 7 days ago cannot be undeleted, and its ID cannot be reused until 37 days after the deletion: run again with $variable=another-id (e.g. ${id}2)."
    local deleted permissions
    local -a role_cmd=()
    if query iam roles describe "$id" "${P[@]}" --format='value[separator="|"](deleted,includedPermissions)'; then
        # "|", not the default tab: read would merge the empty fields around a tab.
        IFS='|' read -r deleted permissions <<<"$QUERY_OUT"
        if [[ ${deleted,,} == true ]]; then
            role_cmd=(gcloud iam roles undelete "$id" "${P[@]}")
            if [[ $IAM_MODE == print ]]; then iam_identity_missing "${role_cmd[@]}"; else run "${role_cmd[@]}"; fi
        fi
        # value() joins the permissions with ';'.
        if ! same_items "$permissions" "${wanted//,/;}"; then
            role_cmd=(gcloud iam roles update "$id" "${P[@]}" --permissions="$wanted" --quiet)
            if [[ $IAM_MODE == print ]]; then iam_identity_missing "${role_cmd[@]}"; else run "${role_cmd[@]}"; fi
        else
            say "    = role projects/$PROJECT_ID/roles/$id ($wanted)"
        fi
    else
        role_cmd=(gcloud iam roles create "$id" "${P[@]}" --title="$title" --description="$description"
            --permissions="$wanted" --stage=GA)
        if [[ $IAM_MODE == print ]]; then iam_identity_missing "${role_cmd[@]}"; else run "${role_cmd[@]}"; fi
    fi
}

# "MEMBER ROLE..." per line: the project-level roles of this script's accounts,
# exactly; any other project role they hold is removed.
project_roles_of() {
    case $1 in
    "$FUNCTION_SA")
        printf '%s\n' "$FUNCTION_ROLE"
        ! $WITH_EVENTS || printf '%s\n' "$EVENTS_GRANT"
        ;;
    # Workflows has no per-workflow IAM, so the callback permission is granted
    # on the project; ALLOWED_WORKFLOWS narrows what the relay will call.
    "$BUILD_SA") printf '%s\n' "$BUILD_ROLE" ;;
    "$WORKFLOW_SA") $SKIP_DEMO_WORKFLOW || printf '%s\n' roles/logging.logWriter ;;
    esac
}

our_accounts() {
    printf '%s\n' "$FUNCTION_SA" "$PUSH_SA" "$BUILD_SA" "$WORKFLOW_SA" "$LEGACY_TRIGGER_SA"
}

grant_project_roles() {
    step "Grant project-level roles" "Granting roles needs resourcemanager.projects.getIamPolicy/setIamPolicy (roles/resourcemanager.projectIamAdmin)."
    if $USE_INVOKER_ROLE; then
        warn "--use-invoker-role: $FUNCTION_SA gets roles/workflows.invoker, which also lets it start and cancel every workflow in $PROJECT_ID. The default custom role $CUSTOM_ROLE_ID holds only $CALLBACK_PERMISSION."
    fi
    local account
    while IFS= read -r account; do
        converge_project_roles "serviceAccount:$account" "$(project_roles_of "$account")"
    done < <(our_accounts)
}

publisher_members() {
    $SKIP_DEMO_WORKFLOW || printf '%s\n' "serviceAccount:$WORKFLOW_SA"
    ((${#PUBLISHER_MEMBERS[@]} == 0)) || printf '%s\n' "${PUBLISHER_MEMBERS[@]}"
}

grant_publishers() {
    step "Let exactly the publishers publish to $RELAY_TOPIC" "Setting topic IAM needs pubsub.topics.getIamPolicy/setIamPolicy (roles/pubsub.admin on the topic). Each --publisher must exist: gcloud iam service-accounts describe EMAIL."
    converge_members "pubsub topics" "$RELAY_TOPIC" roles/pubsub.publisher "$(publisher_members)" "${P[@]}"
}

# The functions' environment, as NAME=VALUE lines (in the order earlier versions
# used, so that their deploy_hash still matches).
function_env() {
    local -a env=(
        "ALLOWED_WORKFLOWS=$ALLOWED"
        "CALLBACK_RETRY_DEADLINE_SECONDS=$CALLBACK_RETRY_DEADLINE_SECONDS"
        "CALLBACK_CONNECT_TIMEOUT_SECONDS=$CALLBACK_CONNECT_TIMEOUT_SECONDS"
        "CALLBACK_READ_TIMEOUT_SECONDS=$CALLBACK_READ_TIMEOUT_SECONDS"
        "LOG_LEVEL=$LOG_LEVEL"
        # functions-framework serves with gunicorn; one thread per concurrent request.
        "THREADS=$FUNCTION_CONCURRENCY"
    )
    if $WITH_EVENTS; then
        # The store's project: Cloud Run functions set no GOOGLE_CLOUD_PROJECT of their own
        # (https://cloud.google.com/run/docs/configuring/services/overview-environment-variables).
        env+=("EVENT_STORE=firestore" "GOOGLE_CLOUD_PROJECT=$PROJECT_ID")
        [[ -z $FIRESTORE_DATABASE ]] || env+=("FIRESTORE_DATABASE=$FIRESTORE_DATABASE")
        [[ -z $EVENT_TTL_SECONDS ]] || env+=("EVENT_TTL_SECONDS=$EVENT_TTL_SECONDS")
        [[ -z $EVENT_TOPICS_JSON ]] || env+=("EVENT_TOPICS=$EVENT_TOPICS_JSON")
    fi
    printf '%s\n' "${env[@]}"
}

# The --set-env-vars value: gcloud's list escaping (gcloud topic escaping), '^D^'
# with a delimiter D that no value holds, so that ALLOWED_WORKFLOWS's commas and
# the JSON of EVENT_TOPICS stay whole. validate() keeps '@' out of every value but
# EVENT_TOPICS, whose templates may hold anything printable.
function_env_vars() {
    local env delimiter
    env="$(function_env)"
    for delimiter in @ '|' '#' '~' '!' '%' '&' '*' '+' ';' ':'; do
        [[ $env == *"$delimiter"* ]] || break
    done
    [[ $env != *"$delimiter"* ]] || die "the functions' environment holds every delimiter gcloud could split it on; simplify the --event-topic templates"
    printf '^%s^%s' "$delimiter" "${env//$'\n'/$delimiter}"
}

# The environment as `value(serviceConfig.environmentVariables)` prints it: key=value
# pairs joined by ';' (in key order there: same_items compares them as sets).
wanted_env_text() {
    local env
    env="$(function_env)"
    printf '%s' "${env//$'\n'/;}"
}

# --ingress-settings value -> the API's serviceConfig.ingressSettings
ingress_enum() {
    case $1 in
    internal-only) printf 'ALLOW_INTERNAL_ONLY' ;;
    internal-and-gclb) printf 'ALLOW_INTERNAL_AND_GCLB' ;;
    all) printf 'ALLOW_ALL' ;;
    esac
}

egress_enum() {
    case $1 in
    private-ranges-only) printf 'PRIVATE_RANGES_ONLY' ;;
    all) printf 'ALL_TRAFFIC' ;;
    esac
}

vpc_connector_path() {
    [[ -n $VPC_CONNECTOR ]] || return 0
    if [[ $VPC_CONNECTOR == projects/* ]]; then
        printf '%s' "$VPC_CONNECTOR"
    else
        printf 'projects/%s/locations/%s/connectors/%s' "$PROJECT_ID" "$REGION" "$VPC_CONNECTOR"
    fi
}

# Flags both functions share: runtime, source, identity, build, limits, policies.
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
        --docker-repository="$IMAGE_REPOSITORY"
        --set-env-vars="$(function_env_vars)"
        --memory="$FUNCTION_MEMORY"
        --cpu="$FUNCTION_CPU"
        --concurrency="$FUNCTION_CONCURRENCY"
        --max-instances="$FUNCTION_MAX_INSTANCES"
        --timeout="${FUNCTION_TIMEOUT}s"
        --trigger-http
        --no-allow-unauthenticated
    )
    [[ -z $KMS_KEY ]] || COMMON_FLAGS+=(--kms-key="$KMS_KEY")
    [[ -z $VPC_CONNECTOR ]] || COMMON_FLAGS+=(--vpc-connector="$(vpc_connector_path)" --egress-settings="$EGRESS_SETTINGS")
    [[ -z $BUILD_WORKER_POOL ]] || COMMON_FLAGS+=(--build-worker-pool="$BUILD_WORKER_POOL")
}

# A function's live settings, as the Cloud Functions API reports them.
FN_FIELDS='state,labels.deploy_hash,eventTrigger.trigger,serviceConfig.uri,serviceConfig.service,serviceConfig.ingressSettings,serviceConfig.serviceAccountEmail,serviceConfig.timeoutSeconds,serviceConfig.availableMemory,serviceConfig.availableCpu,serviceConfig.maxInstanceRequestConcurrency,serviceConfig.maxInstanceCount,serviceConfig.environmentVariables,serviceConfig.secretEnvironmentVariables,serviceConfig.vpcConnector,serviceConfig.vpcConnectorEgressSettings,buildConfig.entryPoint,buildConfig.runtime,buildConfig.serviceAccount,buildConfig.dockerRepository,buildConfig.workerPool,kmsKeyName,labels.app,labels.component'
declare -A FN=()

# FN[field] of function NAME; status 1 when it does not exist.
describe_fn() {
    FN=()
    query functions describe "$1" --region="$REGION" "${P[@]}" --v2 --format="value[separator=\"|\"]($FN_FIELDS)" || return 1
    fields_into FN "$FN_FIELDS"
}

# Into the associative array NAME, each of FIELDS (comma-separated) from the one
# "|"-separated line of a `--format=value[separator="|"](FIELDS)` query in QUERY_OUT.
fields_into() {
    local -n into=$1 # a nameref: the caller's array
    local -a values fields
    IFS='|' read -r -a values <<<"$QUERY_OUT|"
    IFS=',' read -r -a fields <<<"$2"
    local i
    for i in "${!fields[@]}"; do
        # shellcheck disable=SC2034 # written through the nameref
        into[${fields[$i]}]=${values[$i]:-}
    done
}

# The live function's environment (platform-added LOG_EXECUTION_ID aside).
live_env_text() {
    local live=";${FN[serviceConfig.environmentVariables]};"
    live=${live/;LOG_EXECUTION_ID=true;/;}
    live=${live#;}
    printf '%s' "${live%;}"
}

# True when two ';'-separated lists hold the same items, in any order.
same_items() {
    local a=";$1;" b=";$2;" item
    local -a items
    IFS=';' read -r -a items <<<"$1;$2"
    for item in "${items[@]}"; do
        [[ -z $item || ($a == *";$item;"* && $b == *";$item;"*) ]] || return 1
    done
}

# What differs between the live function (FN) and what this run wants; one line each.
function_drift() {
    local entry=$1 ingress=$2 component=$3
    local -a drift=()
    local want_build="projects/$PROJECT_ID/serviceAccounts/$BUILD_SA"
    [[ ${FN[state]} == ACTIVE ]] || drift+=("state ${FN[state]:-unknown}, not ACTIVE")
    [[ -z ${FN[eventTrigger.trigger]} ]] || drift+=("an Eventarc trigger ${FN[eventTrigger.trigger]}, not the push subscription")
    [[ ${FN[serviceConfig.ingressSettings]} == "$(ingress_enum "$ingress")" ]] || drift+=("ingress ${FN[serviceConfig.ingressSettings]:-unknown}, want $(ingress_enum "$ingress")")
    [[ ${FN[serviceConfig.serviceAccountEmail]} == "$FUNCTION_SA" ]] || drift+=("runtime service account ${FN[serviceConfig.serviceAccountEmail]:-unknown}, want $FUNCTION_SA")
    [[ ${FN[serviceConfig.timeoutSeconds]} == "$FUNCTION_TIMEOUT" ]] || drift+=("timeout ${FN[serviceConfig.timeoutSeconds]:-unknown}s, want ${FUNCTION_TIMEOUT}s")
    [[ ${FN[serviceConfig.availableMemory]} == "$FUNCTION_MEMORY" ]] || drift+=("memory ${FN[serviceConfig.availableMemory]:-unknown}, want $FUNCTION_MEMORY")
    [[ ${FN[serviceConfig.availableCpu]} == "$FUNCTION_CPU" ]] || drift+=("cpu ${FN[serviceConfig.availableCpu]:-unknown}, want $FUNCTION_CPU")
    [[ ${FN[serviceConfig.maxInstanceRequestConcurrency]} == "$FUNCTION_CONCURRENCY" ]] || drift+=("concurrency ${FN[serviceConfig.maxInstanceRequestConcurrency]:-unknown}, want $FUNCTION_CONCURRENCY")
    [[ ${FN[serviceConfig.maxInstanceCount]} == "$FUNCTION_MAX_INSTANCES" ]] || drift+=("max instances ${FN[serviceConfig.maxInstanceCount]:-unknown}, want $FUNCTION_MAX_INSTANCES")
    local live_env wanted_env
    live_env=$(live_env_text) wanted_env=$(wanted_env_text)
    same_items "$live_env" "$wanted_env" || drift+=("environment '$live_env', want '$wanted_env'")
    [[ -z ${FN[serviceConfig.secretEnvironmentVariables]} ]] || drift+=("secret environment variables, want none")
    [[ ${FN[serviceConfig.vpcConnector]} == "$(vpc_connector_path)" ]] || drift+=("VPC connector '${FN[serviceConfig.vpcConnector]}', want '$(vpc_connector_path)'")
    [[ ${FN[serviceConfig.vpcConnectorEgressSettings]} == "$(egress_enum "$EGRESS_SETTINGS")" ]] || drift+=("egress '${FN[serviceConfig.vpcConnectorEgressSettings]}', want '$(egress_enum "$EGRESS_SETTINGS")'")
    [[ ${FN[buildConfig.entryPoint]} == "$entry" ]] || drift+=("entry point ${FN[buildConfig.entryPoint]:-unknown}, want $entry")
    [[ ${FN[buildConfig.runtime]} == "$FUNCTION_RUNTIME" ]] || drift+=("runtime ${FN[buildConfig.runtime]:-unknown}, want $FUNCTION_RUNTIME")
    [[ ${FN[buildConfig.serviceAccount]} == "$want_build" ]] || drift+=("build service account '${FN[buildConfig.serviceAccount]}', want $want_build")
    [[ ${FN[buildConfig.dockerRepository]} == "$IMAGE_REPOSITORY" ]] || drift+=("image repository '${FN[buildConfig.dockerRepository]}', want $IMAGE_REPOSITORY")
    [[ ${FN[buildConfig.workerPool]} == "$BUILD_WORKER_POOL" ]] || drift+=("build worker pool '${FN[buildConfig.workerPool]}', want '$BUILD_WORKER_POOL'")
    [[ ${FN[kmsKeyName]} == "$KMS_KEY" ]] || drift+=("key '${FN[kmsKeyName]}', want '$KMS_KEY'")
    [[ ${FN[labels.app]} == "$APP_LABEL" && ${FN[labels.component]} == "$component" ]] || drift+=("labels app=${FN[labels.app]},component=${FN[labels.component]}, want ${LABELS}$component")
    ((${#drift[@]} == 0)) || printf '%s\n' "${drift[@]}"
}

# Flags that undo what an out-of-band edit added and these flags would keep.
clearing_flags() {
    CLEAR_FLAGS=()
    [[ -z ${FN[serviceConfig.secretEnvironmentVariables]} ]] || CLEAR_FLAGS+=(--clear-secrets)
    [[ -z ${FN[serviceConfig.vpcConnector]} || -n $VPC_CONNECTOR ]] || CLEAR_FLAGS+=(--clear-vpc-connector)
    [[ -z ${FN[kmsKeyName]} || -n $KMS_KEY ]] || CLEAR_FLAGS+=(--clear-kms-key)
    [[ -z ${FN[buildConfig.workerPool]} || -n $BUILD_WORKER_POOL ]] || CLEAR_FLAGS+=(--clear-build-worker-pool)
    return 0
}

# Deploy NAME (entry point, ingress, component) unless it is ACTIVE with the same
# fingerprint and no live setting differs.
deploy_one_function() {
    local name=$1 entry=$2 ingress=$3 component=$4
    local fingerprint drift
    common_function_flags
    local -a flags=("${COMMON_FLAGS[@]}" --entry-point="$entry" --ingress-settings="$ingress")
    [[ -n $SOURCE_FINGERPRINT ]] || SOURCE_FINGERPRINT=$(source_fingerprint "$SCRIPT_DIR/function")
    fingerprint="$({ printf '%s' "$SOURCE_FINGERPRINT"; printf '%s\n' "${flags[@]}"; } | sha256)"
    CLEAR_FLAGS=()
    if describe_fn "$name"; then
        drift="$(function_drift "$entry" "$ingress" "$component")"
        if ! $FORCE && [[ -z $drift && ${FN[labels.deploy_hash]} == "$fingerprint" ]]; then
            say "    = function $name is active with the same source and settings (use --force to redeploy)"
            return 0
        fi
        if [[ -n $drift ]]; then
            say "    live settings differ from the wanted ones:"
            while IFS= read -r line; do say "      - $line"; done <<<"$drift"
        fi
        clearing_flags
    fi
    # (Explicit returns: the caller may run this where errexit is off.)
    run gcloud functions deploy "$name" "${flags[@]}" "${CLEAR_FLAGS[@]}" \
        --update-labels="${LABELS}$component,deploy_hash=$fingerprint" --quiet || return $?
    if ! $DRY_RUN; then
        describe_fn "$name" || die "function $name not found after deploying it"
    fi
}

FUNCTION_URI=""
FUNCTION_SERVICE=""
EVENTARC_TRIGGER=""

deploy_function() {
    step "Deploy the function $FUNCTION_NAME" "Read the build log link above. Deploying needs roles/cloudfunctions.developer and iam.serviceAccounts.actAs (roles/iam.serviceAccountUser) on $FUNCTION_SA and $BUILD_SA; the build needs $BUILD_ROLE for $BUILD_SA."
    EVENTARC_TRIGGER=""
    if describe_fn "$FUNCTION_NAME" && [[ -n ${FN[eventTrigger.trigger]} ]]; then
        # A deployment from before the push subscription: its trigger is moved
        # only once the push subscription delivers (migrate_from_eventarc).
        EVENTARC_TRIGGER=${FN[eventTrigger.trigger]}
        say "    $FUNCTION_NAME is triggered by Eventarc ($EVENTARC_TRIGGER): the push subscription takes over first, then the trigger is removed"
    else
        deploy_one_function "$FUNCTION_NAME" relay internal-only function
    fi
    FUNCTION_URI=${FN[serviceConfig.uri]:-}
    FUNCTION_SERVICE=$(service_of "${FN[serviceConfig.service]:-}" "$FUNCTION_NAME")
    if [[ -z $FUNCTION_URI ]]; then
        $DRY_RUN || die "function $FUNCTION_NAME reports no URL (serviceConfig.uri)"
        FUNCTION_URI="https://FUNCTION-URL"
    fi
}

service_of() {
    local service=${1##*/}
    printf '%s' "${service:-$2}"
}

grant_push_invoker() {
    step "Let only the push subscription invoke the function" "Setting Cloud Run IAM needs run.services.getIamPolicy/setIamPolicy (roles/run.admin) on the function's service."
    local invokers="serviceAccount:$PUSH_SA"
    # While an Eventarc trigger still delivers, its account keeps invoking.
    [[ -z $EVENTARC_TRIGGER ]] || invokers+=$'\n'"serviceAccount:$LEGACY_TRIGGER_SA"
    # On the function's own Cloud Run service only, not on the project.
    converge_members "run services" "$FUNCTION_SERVICE" roles/run.invoker "$invokers" --region="$REGION" "${P[@]}"
}

# --- the push subscription (reusable: one per topic the relay reads) -------------
# The endpoint is the function's URL followed by the topic's full name:
# functions-framework turns a raw push to .../projects/P/topics/T into a
# CloudEvent whose source is //pubsub.googleapis.com/projects/P/topics/T
# (_PUBSUB_TOPIC_REQUEST_PATH in functions_framework/event_conversion.py), so the
# relay knows which topic a message came from.
push_endpoint() { printf '%s/projects/%s/topics/%s' "${FUNCTION_URI%/}" "$PROJECT_ID" "$1"; }

# SUB[field] of a subscription; status 1 when it does not exist.
SUB_FIELDS='topic,pushConfig.pushEndpoint,pushConfig.oidcToken.serviceAccountEmail,pushConfig.oidcToken.audience,ackDeadlineSeconds,deadLetterPolicy.deadLetterTopic,deadLetterPolicy.maxDeliveryAttempts,retryPolicy.minimumBackoff,retryPolicy.maximumBackoff,expirationPolicy.ttl,labels.app,labels.component'
declare -A SUB=()
describe_subscription() {
    SUB=()
    query pubsub subscriptions describe "$1" "${P[@]}" --format="value[separator=\"|\"]($SUB_FIELDS)" || return 1
    fields_into SUB "$SUB_FIELDS"
}

# What differs on a push subscription of TOPIC; one line each.
push_subscription_drift() {
    local topic=$1 component=$2
    local -a drift=()
    # The audience is the service URL: Cloud Run accepts a token whose audience is
    # the service's URL (https://cloud.google.com/run/docs/configuring/custom-audiences);
    # without one, Pub/Sub would use the whole endpoint, path included.
    [[ ${SUB[pushConfig.pushEndpoint]} == "$(push_endpoint "$topic")" ]] || drift+=("endpoint '${SUB[pushConfig.pushEndpoint]}', want $(push_endpoint "$topic")")
    [[ ${SUB[pushConfig.oidcToken.serviceAccountEmail]} == "$PUSH_SA" ]] || drift+=("OIDC account '${SUB[pushConfig.oidcToken.serviceAccountEmail]}', want $PUSH_SA")
    [[ ${SUB[pushConfig.oidcToken.audience]} == "${FUNCTION_URI%/}" ]] || drift+=("OIDC audience '${SUB[pushConfig.oidcToken.audience]}', want ${FUNCTION_URI%/}")
    { is_int "${SUB[ackDeadlineSeconds]}" && ((10#${SUB[ackDeadlineSeconds]} >= ACK_DEADLINE)); } ||
        drift+=("ack deadline ${SUB[ackDeadlineSeconds]:-unknown}s, shorter than the function timeout (${ACK_DEADLINE}s): Pub/Sub would redeliver while a call still runs")
    [[ ${SUB[deadLetterPolicy.deadLetterTopic]} == "$DEAD_LETTER_TOPIC_PATH" && ${SUB[deadLetterPolicy.maxDeliveryAttempts]} == "$MAX_DELIVERY_ATTEMPTS" ]] ||
        drift+=("dead-letter policy '${SUB[deadLetterPolicy.deadLetterTopic]:-none}' after '${SUB[deadLetterPolicy.maxDeliveryAttempts]:-none}' attempts, want $DEAD_LETTER_TOPIC_PATH after $MAX_DELIVERY_ATTEMPTS")
    [[ ${SUB[retryPolicy.minimumBackoff]} == "${MIN_RETRY_DELAY}s" && ${SUB[retryPolicy.maximumBackoff]} == "${MAX_RETRY_DELAY}s" ]] ||
        drift+=("retry policy '${SUB[retryPolicy.minimumBackoff]:-none}'-'${SUB[retryPolicy.maximumBackoff]:-none}', want ${MIN_RETRY_DELAY}s-${MAX_RETRY_DELAY}s")
    # An empty ttl is "never expires"; the API's default is 31 days.
    [[ -z ${SUB[expirationPolicy.ttl]} ]] || drift+=("expires after ${SUB[expirationPolicy.ttl]} without deliveries, want never")
    [[ ${SUB[labels.app]} == "$APP_LABEL" && ${SUB[labels.component]} == "$component" ]] || drift+=("labels app=${SUB[labels.app]},component=${SUB[labels.component]}, want ${LABELS}$component")
    ((${#drift[@]} == 0)) || printf '%s\n' "${drift[@]}"
}

# Every setting of the push subscription, for create and update alike.
push_subscription_flags() {
    local topic=$1
    PUSH_FLAGS=(
        --push-endpoint="$(push_endpoint "$topic")"
        --push-auth-service-account="$PUSH_SA"
        --push-auth-token-audience="${FUNCTION_URI%/}"
        --ack-deadline="$ACK_DEADLINE"
        --dead-letter-topic="$DEAD_LETTER_TOPIC_PATH"
        --max-delivery-attempts="$MAX_DELIVERY_ATTEMPTS"
        --min-retry-delay="${MIN_RETRY_DELAY}s"
        --max-retry-delay="${MAX_RETRY_DELAY}s"
        --expiration-period=never
    )
}

# ensure_push_subscription SUBSCRIPTION TOPIC COMPONENT: the subscription that
# pushes TOPIC to the relay function, with OIDC as PUSH_SA, the dead-letter topic,
# the retry policy, an ack deadline of at least the function timeout and no
# expiry. Creates it, or updates it when a setting differs; the Pub/Sub service
# agent gets the subscriber role on it to dead-letter. Reusable for any topic.
ensure_push_subscription() {
    local subscription=$1 topic=$2 component=$3 drift
    push_subscription_flags "$topic"
    if ! describe_subscription "$subscription"; then
        run gcloud pubsub subscriptions create "$subscription" "${P[@]}" --topic="$topic" \
            "${PUSH_FLAGS[@]}" --labels="${LABELS}$component"
    elif [[ ${SUB[topic]} != "projects/$PROJECT_ID/topics/$topic" ]]; then
        die "subscription $subscription reads ${SUB[topic]:-no topic}, not projects/$PROJECT_ID/topics/$topic: a subscription's topic cannot change. Deleting it drops its backlog: gcloud pubsub subscriptions delete $subscription --project=$PROJECT_ID"
    else
        drift="$(push_subscription_drift "$topic" "$component")"
        if [[ -z $drift ]]; then
            say "    = push subscription $subscription -> $(push_endpoint "$topic")"
        else
            while IFS= read -r line; do say "      - $line"; done <<<"$drift"
            run gcloud pubsub subscriptions update "$subscription" "${P[@]}" \
                "${PUSH_FLAGS[@]}" --update-labels="${LABELS}$component"
        fi
    fi
    # https://cloud.google.com/pubsub/docs/handling-failures: the Pub/Sub service
    # agent publishes to the dead-letter topic and acks on the source subscription.
    converge_members "pubsub subscriptions" "$subscription" roles/pubsub.subscriber "serviceAccount:$PUBSUB_AGENT" "${P[@]}"
}

configure_delivery() {
    step "Deliver $RELAY_TOPIC by push to the function" "Creating subscriptions needs pubsub.subscriptions.create/update (roles/pubsub.editor) and iam.serviceAccounts.actAs (roles/iam.serviceAccountUser) on $PUSH_SA; its IAM, roles/pubsub.admin."
    ensure_push_subscription "$PUSH_SUBSCRIPTION" "$RELAY_TOPIC" push-subscription
    step "Let Pub/Sub dead-letter" "Setting Pub/Sub IAM needs pubsub.topics.getIamPolicy/setIamPolicy (roles/pubsub.admin); setting the push account's IAM, roles/iam.serviceAccountAdmin."
    converge_members "pubsub topics" "$DEAD_LETTER_TOPIC" roles/pubsub.publisher "serviceAccount:$PUBSUB_AGENT" "${P[@]}"
    # Only Pub/Sub service agents enabled on or before 2021-04-08 need this to mint
    # the push's OIDC token (https://cloud.google.com/eventarc/standard/docs/functions/roles-permissions);
    # on the push account only, not the project.
    local token_creators=""
    ! $LEGACY_TOKEN_CREATOR || token_creators="serviceAccount:$PUBSUB_AGENT"
    if ! $DRY_RUN || exists iam service-accounts describe "$PUSH_SA" "${P[@]}" --format="value(email)"; then
        converge_members "iam service-accounts" "$PUSH_SA" roles/iam.serviceAccountTokenCreator "$token_creators" "${P[@]}"
    fi
}

# --- moving a deployment from its Eventarc trigger to the push subscription ---------
# A gen2 function's trigger type is set at deploy time. gcloud 528 sends an update
# with --trigger-http (the event trigger in the update mask, emptied); whether the
# API accepts that in place is not documented. So nothing is lost either way: the
# push subscription exists first, it is seeked to a snapshot of the Eventarc
# subscription (which copies that subscription's backlog, https://cloud.google.com/pubsub/docs/replay-overview),
# and only then is the trigger removed. Messages published meanwhile arrive twice;
# the relay's Idempotency-Key makes a duplicate harmless.
migrate_from_eventarc() {
    [[ -n $EVENTARC_TRIGGER ]] || return 0
    step "Move delivery from the Eventarc trigger to the push subscription" "Needs pubsub.snapshots.create/seek (roles/pubsub.editor), eventarc.triggers.get (roles/eventarc.viewer) and the function deploy rights above."
    local eventarc_sub="" snapshot="$PUSH_SUBSCRIPTION-from-eventarc"
    if query eventarc triggers describe "$EVENTARC_TRIGGER" --location="$REGION" "${P[@]}" \
        --format="value(transport.pubsub.subscription)"; then
        eventarc_sub=$QUERY_OUT
    fi
    if [[ -n $eventarc_sub ]]; then
        if ! exists pubsub snapshots describe "$snapshot" "${P[@]}" --format="value(name)"; then
            run gcloud pubsub snapshots create "$snapshot" "${P[@]}" --subscription="$eventarc_sub" --labels="${LABELS}migration"
        fi
        # The push subscription now holds everything the Eventarc one had not acknowledged.
        run gcloud pubsub subscriptions seek "$PUSH_SUBSCRIPTION" "${P[@]}" --snapshot="$snapshot"
        if monitoring_query "$(monitoring_filter num_undelivered_messages "${eventarc_sub##*/}")" 600 ALIGN_MAX && [[ -n $SERIES ]]; then
            local waiting=${SERIES%%$'\n'*}
            say "    ${eventarc_sub##*/} reported ${waiting#* } waiting message(s) in the last 10 minutes: the seek copied them to $PUSH_SUBSCRIPTION"
        fi
    else
        warn "no subscription found on $EVENTARC_TRIGGER: nothing to copy"
    fi
    local status=0
    deploy_one_function "$FUNCTION_NAME" relay internal-only function || status=$?
    if ((status != 0)); then
        printf '\n%s: the Cloud Functions API did not change the trigger of %s in place.\n' "$PROG" "$FUNCTION_NAME" >&2
        printf 'Nothing is lost: both the Eventarc trigger and %s deliver now (duplicates are harmless).\n' "$PUSH_SUBSCRIPTION" >&2
        printf 'To finish, delete the function; %s keeps what arrives meanwhile, and retries it, then dead-letters it at worst (replay with tools.replay_dead_letters):\n' "$PUSH_SUBSCRIPTION" >&2
        printf '  %s\n  ./%s %s\n' "$(quote_cmd gcloud functions delete "$FUNCTION_NAME" --region="$REGION" "${P[@]}" --quiet)" "$PROG" "$(quote_cmd "${ORIGINAL_ARGS[@]}")" >&2
        fail_step "$status" "functions deploy --trigger-http"
    fi
    if exists pubsub snapshots describe "$snapshot" "${P[@]}" --format="value(name)"; then
        run gcloud pubsub snapshots delete "$snapshot" "${P[@]}" --quiet
    fi
    FUNCTION_URI=${FN[serviceConfig.uri]:-$FUNCTION_URI}
    EVENTARC_TRIGGER=""
    # The push endpoint follows the function's URL, if the move changed it; the
    # trigger's account no longer invokes.
    ensure_push_subscription "$PUSH_SUBSCRIPTION" "$RELAY_TOPIC" push-subscription
    grant_push_invoker
}

delete_legacy_trigger_account() {
    if exists iam service-accounts describe "$LEGACY_TRIGGER_SA" "${P[@]}" --format="value(email)"; then
        step "Delete the Eventarc trigger's old service account" "Needs iam.serviceAccounts.delete (roles/iam.serviceAccountAdmin)."
        if [[ $IAM_MODE == print ]]; then
            iam_identity_missing gcloud iam service-accounts delete "$LEGACY_TRIGGER_SA" "${P[@]}" --quiet
        else
            run gcloud iam service-accounts delete "$LEGACY_TRIGGER_SA" "${P[@]}" --quiet
        fi
    fi
}

# --- the HTTP twin ---------------------------------------------------------------------
deploy_http_function() {
    if ! $WITH_HTTP_FUNCTION; then
        # It runs as the account that holds the token: not asked for, not kept.
        if exists functions describe "$HTTP_FUNCTION_NAME" --region="$REGION" "${P[@]}" --v2 --format="value(name)"; then
            step "Delete the HTTP function $HTTP_FUNCTION_NAME (no --with-http-function)" "Deleting needs roles/cloudfunctions.developer."
            run gcloud functions delete "$HTTP_FUNCTION_NAME" --region="$REGION" "${P[@]}" --quiet
        fi
        return 0
    fi
    step "Deploy the HTTP function $HTTP_FUNCTION_NAME" "Deploying needs roles/cloudfunctions.developer and iam.serviceAccounts.actAs (roles/iam.serviceAccountUser) on $FUNCTION_SA and $BUILD_SA."
    # The ?callback_url= service: callers need roles/run.invoker (--http-invoker),
    # never allUsers; ingress stays internal unless --http-ingress says otherwise.
    deploy_one_function "$HTTP_FUNCTION_NAME" relay_http "$HTTP_INGRESS" http-function
    local service
    service=$(service_of "${FN[serviceConfig.service]:-}" "$HTTP_FUNCTION_NAME")
    step "Let exactly the HTTP invokers call $HTTP_FUNCTION_NAME" "Setting Cloud Run IAM needs run.services.getIamPolicy/setIamPolicy (roles/run.admin) on the function's service. Each --http-invoker must exist."
    converge_members "run services" "$service" roles/run.invoker "$(printf '%s\n' "${HTTP_INVOKER_MEMBERS[@]}")" --region="$REGION" "${P[@]}"
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
        --format='value[separator="|"](state,labels.deploy_hash,labels.app)' &&
        [[ $QUERY_OUT == "ACTIVE|$fingerprint|$APP_LABEL" ]]; then
        say "    = workflow $WORKFLOW_NAME is active with the same source and settings"
        return 0
    fi
    run gcloud workflows deploy "$WORKFLOW_NAME" "${flags[@]}" --labels="${LABELS}workflow,deploy_hash=$fingerprint"
}

# --- keyed waits: the Firestore store ------------------------------------------------------
DB_TYPE=""
DB_LOCATION=""
describe_database() {
    DB_TYPE="" DB_LOCATION=""
    query firestore databases describe --database="$EVENTS_DATABASE" "${P[@]}" \
        --format='value[separator="|"](type,locationId)' || return 1
    IFS='|' read -r DB_TYPE DB_LOCATION <<<"$QUERY_OUT"
}

# Firestore's locations are not Cloud Run's regions (multi-regions such as nam5,
# and regions one may have and not the other): the API's own list decides
# (https://cloud.google.com/firestore/docs/locations).
check_firestore_location() {
    local locations=""
    if query firestore locations list "${P[@]}" --format="value(locationId)"; then
        locations=$QUERY_OUT
    fi
    if [[ -z $locations ]]; then
        $DRY_RUN || warn "could not list Firestore's locations; the database is created in $EVENTS_LOCATION and the API says if it cannot be"
        return 0
    fi
    if ! has_line "$locations" "$EVENTS_LOCATION"; then
        local why="FIRESTORE_LOCATION"
        [[ -n $FIRESTORE_LOCATION ]] || why="the function's region (--region)"
        die "$EVENTS_LOCATION, $why, is not a Firestore location. Set FIRESTORE_LOCATION to one of: $(members_text "$locations") (https://cloud.google.com/firestore/docs/locations; a multi-region such as nam5 or eur3 spans several regions). Nothing was changed by this check."
    fi
}

# Before anything of keyed waits changes: the database is usable or can be made, and
# every event source exists in this project.
check_event_sources() {
    $WITH_EVENTS || return 0
    step "Check the keyed waits' database and event sources" "Reading needs datastore.databases.getMetadata (roles/datastore.viewer), pubsub.topics.get (roles/pubsub.viewer) and storage.buckets.get (roles/storage.admin, or a bucket role that holds it)."
    if describe_database; then
        [[ $DB_TYPE == FIRESTORE_NATIVE ]] ||
            die "database $EVENTS_DATABASE is in ${DB_TYPE:-an unknown} mode, not Native mode: keyed waits use Firestore's document API. Set FIRESTORE_DATABASE to another id (deploy.sh creates it), or switch an empty database: gcloud firestore databases update --database=$EVENTS_DATABASE --type=firestore-native --project=$PROJECT_ID"
        say "    = database $EVENTS_DATABASE, Native mode, in ${DB_LOCATION:-an unknown location}"
        if [[ -n $FIRESTORE_LOCATION && $DB_LOCATION != "$FIRESTORE_LOCATION" ]]; then
            warn "database $EVENTS_DATABASE is in $DB_LOCATION, not FIRESTORE_LOCATION=$FIRESTORE_LOCATION: a database's location never changes; it is used where it is"
        fi
    else
        check_firestore_location
        say "    database $EVENTS_DATABASE is missing: it will be created in $EVENTS_LOCATION"
    fi
    local topic bucket number
    for topic in "${EVENT_TOPIC_NAMES[@]}"; do
        if exists pubsub topics describe "$topic" "${P[@]}" --format="value(name)"; then
            say "    = topic $topic"
        elif $DRY_RUN; then
            warn "topic $topic was not found: a real run stops here"
        else
            die "--event-topic $topic: no such topic in $PROJECT_ID. deploy.sh wires topics you already have; create it, or drop the flag."
        fi
    done
    for bucket in "${EVENT_BUCKET_NAMES[@]}"; do
        number=""
        if query storage buckets describe "gs://$bucket" "${P[@]}" --raw --format="value(projectNumber)"; then
            number=$QUERY_OUT
        elif ! $DRY_RUN; then
            die "--event-bucket $bucket: no such bucket, or it cannot be read"
        fi
        if [[ -n $number && $number != "$PROJECT_NUMBER" ]]; then
            die "--event-bucket $bucket belongs to project number $number, not $PROJECT_ID ($PROJECT_NUMBER): its notifications would be published by that project's Cloud Storage service agent, which deploy.sh does not manage. Wire a bucket of this project."
        fi
        say "    = bucket gs://$bucket"
    done
}

ensure_event_store() {
    $WITH_EVENTS || return 0
    step "Create the Firestore database $EVENTS_DATABASE and its TTL policies" "Needs datastore.databases.create/getMetadata and datastore.indexes.update (roles/datastore.owner). The (default) database's location may already be fixed by the project's default resource location: set FIRESTORE_LOCATION to it, or FIRESTORE_DATABASE to a new id."
    if describe_database; then
        say "    = database $EVENTS_DATABASE (Native mode, $DB_LOCATION)"
    else
        # Delete protection: the store holds the waits in flight; --destroy says how to lift it.
        run gcloud firestore databases create --database="$EVENTS_DATABASE" --location="$EVENTS_LOCATION" \
            --type=firestore-native --delete-protection "${P[@]}"
    fi
    # Expired waits and events carry expire_at; Firestore deletes them within about a
    # day of it (https://cloud.google.com/firestore/docs/ttl), the relay ignores them
    # before. --async: new documents are covered while existing ones are processed.
    local ttls="" group state
    if query firestore fields ttls list --database="$EVENTS_DATABASE" "${P[@]}" --format="value(name,ttlConfig.state)"; then
        ttls=$QUERY_OUT
    fi
    for group in "${EVENT_COLLECTIONS[@]}"; do
        state="$(ttl_state "$ttls" "$group")"
        case $state in
        ACTIVE | CREATING) say "    = TTL policy on $group.$EVENT_TTL_FIELD ($state)" ;;
        *)
            [[ $state == NONE ]] || say "    TTL policy on $group.$EVENT_TTL_FIELD is $state: enabled again"
            run gcloud firestore fields ttls update "$EVENT_TTL_FIELD" --collection-group="$group" \
                --database="$EVENTS_DATABASE" --enable-ttl --async "${P[@]}"
            ;;
        esac
    done
}

# The state of the TTL policy on GROUP's expire_at, from "NAME<tab>STATE" lines; NONE without one.
ttl_state() {
    local name state
    while IFS=$'\t' read -r name state; do
        if [[ $name == */databases/"$EVENTS_DATABASE"/collectionGroups/"$2"/fields/"$EVENT_TTL_FIELD" ]]; then
            printf '%s' "${state:-STATE_UNSPECIFIED}"
            return 0
        fi
    done <<<"$1"
    printf 'NONE'
}

# --- keyed waits: events from topics and buckets you already have ------------------------
gcs_agent() { printf 'serviceAccount:service-%s@gs-project-accounts.iam.gserviceaccount.com' "$PROJECT_NUMBER"; }

# Every topic whose messages are events: the --event-topic ones, then one per bucket.
event_topics() {
    local bucket
    ((${#EVENT_TOPIC_NAMES[@]} == 0)) || printf '%s\n' "${EVENT_TOPIC_NAMES[@]}"
    for bucket in "${EVENT_BUCKET_NAMES[@]}"; do
        printf '%s\n' "$(bucket_topic "$bucket")"
    done
}

# What deploy.sh made for events earlier, found by its labels: "NAME" lines.
labelled() {
    local kind=$1 component=$2
    LABELLED=""
    if query pubsub "$kind" list "${P[@]}" --filter="labels.app=$APP_LABEL AND labels.component=$component" \
        --format="value(name)"; then
        LABELLED=$QUERY_OUT
    fi
}

# NOTIFICATIONS: "ID|TOPIC|EVENT TYPES|PAYLOAD FORMAT|PREFIX" lines of a bucket's
# notification configurations (status 1: the bucket cannot be read).
NOTIFICATION_FIELDS='"Notification Configuration".id,"Notification Configuration".topic,"Notification Configuration".event_types,"Notification Configuration".payload_format,"Notification Configuration".object_name_prefix'
NOTIFICATIONS=""
list_notifications() {
    NOTIFICATIONS=""
    query storage buckets notifications list "gs://$1" "${P[@]}" --format="value[separator=\"|\"]($NOTIFICATION_FIELDS)" || return 1
    NOTIFICATIONS=$QUERY_OUT
}

notification_topic() { printf '//pubsub.googleapis.com/projects/%s/topics/%s' "$PROJECT_ID" "$1"; }

# The notification ids on NOTIFICATIONS that publish to TOPIC: as wanted (new objects,
# the object's JSON, every object) first in WANTED_IDS, the others in OTHER_IDS.
WANTED_IDS=()
OTHER_IDS=()
sort_notifications() {
    local topic id target types format prefix
    topic="$(notification_topic "$1")"
    WANTED_IDS=() OTHER_IDS=()
    while IFS='|' read -r id target types format prefix; do
        [[ -n $id && $target == "$topic" ]] || continue
        if [[ $types == "$NOTIFICATION_EVENT_TYPES" && $format == JSON_API_V1 && -z $prefix ]]; then
            WANTED_IDS+=("$id")
        else
            OTHER_IDS+=("$id")
        fi
    done <<<"$NOTIFICATIONS"
}

delete_notification() {
    run gcloud storage buckets notifications delete "projects/_/buckets/$1/notificationConfigs/$2" "${P[@]}"
}

GCS_AGENT_READY=false
# A bucket's events: its topic (ours), the Cloud Storage service agent as its only
# publisher, and one notification of new objects to it
# (https://cloud.google.com/storage/docs/reporting-changes). gcloud's own topic
# set-up is skipped (--skip-topic-setup): it would grant outside --iam=print and
# never converge.
ensure_bucket_events() {
    local bucket=$1 topic id
    topic="$(bucket_topic "$bucket")"
    ensure_topic "$topic" bucket-topic
    if ! $GCS_AGENT_READY; then
        # The agent exists once something asked for it (https://cloud.google.com/storage/docs/getting-service-agent).
        if ! { role_members "pubsub topics" "$topic" roles/pubsub.publisher "${P[@]}" &&
            has_line "$ROLE_MEMBERS" "$(gcs_agent)"; }; then
            run gcloud storage service-agent "${P[@]}" --format=none
        fi
        GCS_AGENT_READY=true
    fi
    converge_members "pubsub topics" "$topic" roles/pubsub.publisher "$(gcs_agent)" "${P[@]}"
    if ! list_notifications "$bucket"; then
        $DRY_RUN || die "could not list the notifications of gs://$bucket"
    fi
    sort_notifications "$topic"
    # One is enough: a second would deliver every object twice.
    for id in "${WANTED_IDS[@]:1}" "${OTHER_IDS[@]}"; do
        say "    notification $id of gs://$bucket is extra or differs: deleted (a notification cannot be changed)"
        delete_notification "$bucket" "$id"
    done
    if ((${#WANTED_IDS[@]} > 0)); then
        say "    = notification ${WANTED_IDS[0]}: gs://$bucket $NOTIFICATION_EVENT_TYPES -> $topic"
    elif [[ $IAM_MODE == print ]] && ! { role_members "pubsub topics" "$topic" roles/pubsub.publisher "${P[@]}" &&
        has_line "$ROLE_MEMBERS" "$(gcs_agent)"; }; then
        say "    the notification of gs://$bucket waits for the grant above (--iam=print)"
    else
        run gcloud storage buckets notifications create "gs://$bucket" "${P[@]}" \
            --topic="projects/$PROJECT_ID/topics/$topic" --event-types="$NOTIFICATION_EVENT_TYPES" \
            --payload-format=json --skip-topic-setup --format=none
    fi
}

# Every event topic pushed to the function as the relay topic is, and nothing more:
# subscriptions, notifications and bucket topics no longer asked for go.
configure_event_delivery() {
    local topic bucket
    if $WITH_EVENTS && ((${#EVENT_TOPIC_NAMES[@]} + ${#EVENT_BUCKET_NAMES[@]} > 0)); then
        step "Deliver the event topics and buckets by push to the function" "Needs roles/pubsub.editor and roles/pubsub.admin (topic IAM), storage.buckets.update (roles/storage.admin) for notifications, and iam.serviceAccounts.actAs on $PUSH_SA."
        for bucket in "${EVENT_BUCKET_NAMES[@]}"; do
            ensure_bucket_events "$bucket"
        done
        while IFS= read -r topic; do
            ensure_push_subscription "$(event_subscription "$topic")" "$topic" event-subscription
        done < <(event_topics)
    fi
    stale_event_deliveries
    ((${#STALE_SUBSCRIPTIONS[@]} + ${#STALE_TOPICS[@]} > 0)) || return 0
    step "Remove the event deliveries no longer asked for" "Deleting needs roles/pubsub.editor and, for notifications, storage.buckets.update (roles/storage.admin)."
    remove_event_deliveries "${STALE_SUBSCRIPTIONS[@]}" -- "${STALE_TOPICS[@]}"
}

# What deploy.sh made for events earlier (found by its labels) and this run does
# not ask for: subscriptions in STALE_SUBSCRIPTIONS, bucket topics in STALE_TOPICS.
STALE_SUBSCRIPTIONS=()
STALE_TOPICS=()
stale_event_deliveries() {
    local wanted_topics wanted_subscriptions="" topic name
    wanted_topics="$(event_topics)"
    while IFS= read -r topic; do
        [[ -z $topic ]] || wanted_subscriptions+="$(event_subscription "$topic")"$'\n'
    done <<<"$wanted_topics"
    STALE_SUBSCRIPTIONS=() STALE_TOPICS=()
    labelled subscriptions event-subscription
    while IFS= read -r name; do
        [[ -z $name ]] || has_line "$wanted_subscriptions" "${name##*/}" || STALE_SUBSCRIPTIONS+=("${name##*/}")
    done <<<"$LABELLED"
    labelled topics bucket-topic
    while IFS= read -r name; do
        [[ -z $name ]] || has_line "$wanted_topics" "${name##*/}" || STALE_TOPICS+=("${name##*/}")
    done <<<"$LABELLED"
}

# remove_event_deliveries SUBSCRIPTION... -- BUCKET_TOPIC...: a bucket topic's
# notifications go first (Cloud Storage would publish into nothing), then the
# subscriptions, then the topics. Messages still queued on a subscription go with it.
remove_event_deliveries() {
    local name topic bucket id
    local -a subscriptions=()
    while (($# > 0)) && [[ $1 != -- ]]; do
        subscriptions+=("$1")
        shift
    done
    shift
    for topic in "$@"; do
        bucket=${topic#"$BUCKET_TOPIC_PREFIX"}
        if [[ $bucket != "$topic" ]] && list_notifications "$bucket"; then
            sort_notifications "$topic"
            for id in "${WANTED_IDS[@]}" "${OTHER_IDS[@]}"; do
                delete_notification "$bucket" "$id"
            done
        fi
    done
    for name in "${subscriptions[@]}"; do
        run gcloud pubsub subscriptions delete "$name" "${P[@]}" --quiet
    done
    for topic in "$@"; do
        run gcloud pubsub topics delete "$topic" "${P[@]}" --quiet
    done
}

# --- observability: the log-based metric and the alert policy ----------------------------
TMP_FILES=()
cleanup() {
    [[ -z $QUERY_ERR ]] || TMP_FILES+=("$QUERY_ERR")
    [[ -z $RETRY_LOG ]] || TMP_FILES+=("$RETRY_LOG")
    ((${#TMP_FILES[@]} == 0)) || rm -f "${TMP_FILES[@]}"
}
trap cleanup EXIT

scratch_file() {
    local file
    file="$(mktemp "${TMPDIR:-/tmp}/$1.XXXXXX")"
    TMP_FILES+=("$file")
    printf '%s' "$file"
}

relay_log_filter() {
    printf 'resource.type="cloud_run_revision" AND (resource.labels.service_name="%s" OR resource.labels.service_name="%s") AND jsonPayload.outcome:*' \
        "$FUNCTION_NAME" "$HTTP_FUNCTION_NAME"
}

# The LogMetric (https://cloud.google.com/logging/docs/reference/v2/rest/v2/projects.metrics):
# one count per relay log line, labelled by its outcome
# (https://cloud.google.com/logging/docs/logs-based-metrics/labels). Its
# description carries its own fingerprint, so an unchanged metric is not rewritten.
log_metric_json() {
    local filter
    filter="$(relay_log_filter | sed 's/"/\\"/g')"
    cat <<EOF
{
  "name": "$LOG_METRIC",
  "description": "Messages of workflows-callback-relay by outcome (deploy.sh $1)",
  "filter": "$filter",
  "metricDescriptor": {
    "metricKind": "DELTA",
    "valueType": "INT64",
    "unit": "1",
    "labels": [{"key": "outcome", "valueType": "STRING", "description": "The relay's outcome, e.g. delivered or url_refused"}]
  },
  "labelExtractors": {"outcome": "EXTRACT(jsonPayload.outcome)"}
}
EOF
}

wanted_metric_hash() { log_metric_json "" | sha256; }

ensure_log_metric() {
    step "Count the relay's outcomes (log-based metric $LOG_METRIC)" "Needs logging.logMetrics.create/update (roles/logging.configWriter)."
    local hash file
    hash="$(wanted_metric_hash)"
    local -a verb=(create)
    if query logging metrics describe "$LOG_METRIC" "${P[@]}" --format="value(description)"; then
        if [[ $QUERY_OUT == *"(deploy.sh $hash)"* ]]; then
            say "    = metric logging.googleapis.com/user/$LOG_METRIC"
            return 0
        fi
        verb=(update)
    fi
    file="$(scratch_file log-metric)"
    log_metric_json "$hash" >"$file"
    run gcloud logging metrics "${verb[@]}" "$LOG_METRIC" "${P[@]}" --config-from-file="$file"
}

# One condition on a subscription metric. Metric names:
# https://cloud.google.com/monitoring/api/metrics_gcp_p_z#gcp-pubsub
threshold_condition() {
    local display=$1 filter=$2 threshold=$3 duration=$4 aligner=$5 period=$6
    cat <<EOF
    {
      "displayName": "$display",
      "conditionThreshold": {
        "filter": "$filter",
        "aggregations": [{"alignmentPeriod": "$period", "perSeriesAligner": "$aligner"}],
        "comparison": "COMPARISON_GT",
        "thresholdValue": $threshold,
        "duration": "$duration",
        "trigger": {"count": 1}
      }
    }
EOF
}

subscription_filter() {
    printf 'resource.type = \\"pubsub_subscription\\" AND resource.labels.subscription_id = \\"%s\\" AND metric.type = \\"pubsub.googleapis.com/subscription/%s\\"' "$1" "$2"
}

acked_failures_filter() {
    local outcomes
    outcomes="$(printf '\\"%s\\", ' "${ACKED_FAILURES[@]}")"
    printf 'resource.type = \\"cloud_run_revision\\" AND metric.type = \\"logging.googleapis.com/user/%s\\" AND metric.label.outcome = one_of(%s)' "$LOG_METRIC" "${outcomes%, }"
}

# The AlertPolicy resource (https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.alertPolicies),
# labelled with its own fingerprint so that an unchanged policy is not rewritten.
alert_policy_json() {
    local hash=$1
    cat <<EOF
{
  "displayName": "$ALERT_POLICY_NAME",
  "combiner": "OR",
  "userLabels": {"app": "$APP_LABEL", "component": "alert-policy", "deploy_hash": "$hash"},
  "notificationChannels": ["$ALERT_CHANNEL"],
  "documentation": {
    "mimeType": "text/markdown",
    "content": "Messages for workflows-callback-relay are failing, stuck or dead-lettered. Check: ./deploy.sh --project $PROJECT_ID --status. Replay dead letters: python -m tools.replay_dead_letters --project $PROJECT_ID --subscription $DEAD_LETTER_SUBSCRIPTION --topic $RELAY_TOPIC"
  },
  "conditions": [
$(threshold_condition "Dead letters held for 5 minutes on $DEAD_LETTER_SUBSCRIPTION" "$(subscription_filter "$DEAD_LETTER_SUBSCRIPTION" num_undelivered_messages)" 0 300s ALIGN_MAX 60s),
    {
      "displayName": "No backlog reported for $DEAD_LETTER_SUBSCRIPTION in 30 minutes (deleted?)",
      "conditionAbsent": {
        "filter": "$(subscription_filter "$DEAD_LETTER_SUBSCRIPTION" num_undelivered_messages)",
        "aggregations": [{"alignmentPeriod": "300s", "perSeriesAligner": "ALIGN_MAX"}],
        "duration": "1800s",
        "trigger": {"count": 1}
      }
    },
$(threshold_condition "A message on $PUSH_SUBSCRIPTION is older than the retry window (${RETRY_WINDOW_SECONDS}s)" "$(subscription_filter "$PUSH_SUBSCRIPTION" oldest_unacked_message_age)" "$RETRY_WINDOW_SECONDS" 0s ALIGN_MAX 60s),
$(threshold_condition "Messages acknowledged without delivery (${ACKED_FAILURES[*]})" "$(acked_failures_filter)" 0 0s ALIGN_SUM 300s)
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
    if [[ -z $ALERT_CHANNEL ]]; then
        return 0
    fi
    step "Alert on failed, stuck and dead-lettered messages" "Alert policies need monitoring.alertPolicies.list/create/update (roles/monitoring.alertPolicyEditor); gcloud 528 has them only in the alpha track (gcloud components install alpha)."
    local hash file
    hash="$(wanted_alert_hash)"
    if describe_alert_policy && [[ $ALERT_HASH == "$hash" ]]; then
        say "    = alert policy '$ALERT_POLICY_NAME' ($ALERT_POLICY)"
        return 0
    fi
    file="$(scratch_file alert-policy)"
    alert_policy_json "$hash" >"$file"
    if [[ -n $ALERT_POLICY ]]; then
        # Without --fields, update replaces the policy with the file's.
        run gcloud alpha monitoring policies update "$ALERT_POLICY" "${P[@]}" --policy-from-file="$file"
    else
        run gcloud alpha monitoring policies create "${P[@]}" --policy-from-file="$file"
    fi
}

print_iam_plan() {
    [[ $IAM_MODE == print ]] || return 0
    CURRENT_STEP="done"
    say ""
    say "IAM for your IAM team (--iam=print: $PROG changed no IAM):"
    if ((${#IAM_PLAN[@]} > 0)); then
        printf '%s\n' "${IAM_PLAN[@]}"
    fi
    if ((IAM_MISSING > 0)); then
        say "$IAM_MISSING change(s) MISSING: have them made, then run $PROG --iam=print again."
        exit 3
    fi
    say "Every grant is in place."
}

# --iam=print stops here while identities are missing: nothing can run as them.
stop_for_missing_identities() {
    ((IDENTITIES_MISSING == 0)) && return 0
    say ""
    say "The service accounts and the role above must exist before anything can be deployed."
    print_iam_plan
}

# --iam=print: the build fails without its role, so check it before deploying.
stop_for_missing_build_grants() {
    [[ $IAM_MODE == print ]] || return 0
    read_policy projects "$PROJECT_ID" || POLICY=""
    if ! grep -Fxq "$BUILD_ROLE"$'\t'"serviceAccount:$BUILD_SA" <<<"$POLICY"; then
        ((IAM_MISSING > 0)) || IAM_MISSING=1
        say ""
        say "The build needs $BUILD_ROLE for $BUILD_SA before the function can be deployed."
        print_iam_plan
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
    if $WITH_EVENTS; then
        local sources
        sources="$(event_topics)"
        cat <<EOF
             (a dead-lettered event goes back to its own topic: --topic TOPIC; the tool says which)

Keyed waits are on: a workflow waits with the await_event subworkflow (docs/events.md),
on the source relay${sources:+ or one of: ${sources//$'\n'/, }}.
EOF
    fi
}

deploy() {
    summary
    enable_apis
    lookup_project_number
    check_event_sources
    create_service_identities
    check_regions
    create_service_accounts
    if ! $USE_INVOKER_ROLE; then
        ensure_custom_role
    fi
    if $WITH_EVENTS; then
        ensure_events_role
    fi
    stop_for_missing_identities
    grant_project_roles
    create_topics
    ensure_repository
    grant_publishers
    ensure_event_store
    stop_for_missing_build_grants
    deploy_function
    grant_push_invoker
    configure_delivery
    migrate_from_eventarc
    configure_event_delivery
    delete_legacy_trigger_account
    deploy_http_function
    ensure_log_metric
    ensure_alert_policy
    if ! $SKIP_DEMO_WORKFLOW; then
        deploy_workflow
    fi
    print_iam_plan
    print_next_steps
}

# --- status: read only ------------------------------------------------------------
FAILS=0
UNKNOWNS=0
ok() { say "  OK      $1"; }
problem() {
    FAILS=$((FAILS + 1))
    say "  FAIL    $1"
    say "          fix: $2"
}
unknown() {
    UNKNOWNS=$((UNKNOWNS + 1))
    say "  UNKNOWN $1"
    say "          check: $2"
}

redeploy_cmd() {
    local -a args=() arg
    for arg in "${ORIGINAL_ARGS[@]}"; do
        [[ $arg == --status ]] || args+=("$arg")
    done
    [[ " ${args[*]} " == *" --project"* ]] || args=(--project "$PROJECT_ID" "${args[@]}")
    printf './%s %s' "$PROG" "$(quote_cmd "${args[@]}")"
}

# ROLE on a resource holds exactly WANTED: a FAIL per missing and per extra member.
check_members() {
    local kind=$1 resource=$2 role=$3 wanted=$4
    shift 4
    local member label=${kind##* } bad=0
    if ! role_members "$kind" "$resource" "$role" "$@"; then
        local -a group
        read -r -a group <<<"$kind"
        unknown "$role on $label $resource: its IAM policy could not be read" "$(quote_cmd gcloud "${group[@]}" get-iam-policy "$resource" "$@")"
        return 0
    fi
    while IFS= read -r member; do
        [[ -n $member ]] || continue
        if ! has_line "$ROLE_MEMBERS" "$member"; then
            iam_cmd add-iam-policy-binding "$kind" "$resource" "$member" "$role" "$@"
            problem "$role for $member on $label $resource is missing" "$(quote_cmd "${IAM_CMD[@]}")"
            bad=1
        fi
    done <<<"$wanted"
    while IFS= read -r member; do
        [[ -n $member ]] || continue
        if ! has_line "$wanted" "$member"; then
            iam_cmd remove-iam-policy-binding "$kind" "$resource" "$member" "$role" "$@"
            problem "$role on $label $resource is also held by $member, which $PROG did not ask for" "$(quote_cmd "${IAM_CMD[@]}")"
            bad=1
        fi
    done <<<"$ROLE_MEMBERS"
    ((bad)) || ok "$role on $label $resource: exactly $(members_text "$wanted")"
}

check_project_roles() {
    local member=$1 wanted=$2 role held
    read_policy projects "$PROJECT_ID" || {
        unknown "project roles of $member: the project's IAM policy could not be read" "gcloud projects get-iam-policy $PROJECT_ID"
        return 0
    }
    held=$(column_where 2 "$member")
    while IFS= read -r role; do
        [[ -n $role ]] || continue
        iam_cmd add-iam-policy-binding projects "$PROJECT_ID" "$member" "$role"
        if has_line "$held" "$role"; then ok "$(role_text "$role") for $member on project $PROJECT_ID"; else problem "$(role_text "$role") for $member on project $PROJECT_ID is missing" "$(quote_cmd "${IAM_CMD[@]}")"; fi
    done <<<"$wanted"
    while IFS= read -r role; do
        [[ -n $role ]] || continue
        if ! has_line "$wanted" "$role"; then
            iam_cmd remove-iam-policy-binding projects "$PROJECT_ID" "$member" "$role"
            problem "$member also holds $(role_text "$role") on project $PROJECT_ID, which $PROG did not ask for" "$(quote_cmd "${IAM_CMD[@]}")"
        fi
    done <<<"$held"
}

iso_time() {
    date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u -r "$1" +%Y-%m-%dT%H:%M:%SZ
}

# Cloud Monitoring timeSeries.list (https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.timeSeries/list);
# gcloud has no read-only command for a subscription's metrics. SERIES holds one
# "LABEL VALUE" line per series (LABEL: the group-by label's value, or -).
# Status 0 with SERIES empty: the query worked and found no data.
SERIES=""
TOKEN=""
monitoring_query() {
    local filter=$1 window=$2 aligner=$3 group_by=${4:-} now out compact series label value
    SERIES=""
    command -v curl >/dev/null || return 1
    if [[ -z $TOKEN ]]; then
        query auth print-access-token || return 1
        TOKEN=$QUERY_OUT
        QUERY_OUT=""
    fi
    now="$(date -u +%s)"
    local -a params=(
        --data-urlencode "filter=$filter"
        --data-urlencode "interval.startTime=$(iso_time $((now - window)))"
        --data-urlencode "interval.endTime=$(iso_time "$now")"
        --data-urlencode "aggregation.alignmentPeriod=${window}s"
        --data-urlencode "aggregation.perSeriesAligner=$aligner"
    )
    [[ -z $group_by ]] || params+=(--data-urlencode "aggregation.crossSeriesReducer=REDUCE_SUM" --data-urlencode "aggregation.groupByFields=$group_by")
    # The token goes on stdin, never on the command line.
    out="$(printf 'Authorization: Bearer %s\n' "$TOKEN" | curl -fsS --max-time 20 --get -H @- "${params[@]}" \
        "$MONITORING_API/v3/projects/$PROJECT_ID/timeSeries" 2>/dev/null)" || return 1
    compact="$(tr -d ' \n\t' <<<"$out")"
    [[ $compact == \{* ]] || return 1
    while IFS= read -r series; do
        label=-
        [[ -z $group_by ]] || label="$(grep -o "\"${group_by##*.}\":\"[^\"]*\"" <<<"$series" | head -n 1 | cut -d'"' -f4 || true)"
        # Points come newest first.
        value="$(grep -oE '"(int64Value|doubleValue)":"?[0-9.]+' <<<"$series" | head -n 1 | grep -oE '[0-9.]+$' || true)"
        [[ -z $value ]] || SERIES+="${label:--} ${value%%.*}"$'\n'
    done < <(awk '{ gsub(/\{"metric":/, "\n{\"metric\":"); print }' <<<"$compact" | grep '^{"metric":' || true)
    return 0
}

monitoring_filter() {
    printf 'metric.type = "pubsub.googleapis.com/subscription/%s" AND resource.labels.subscription_id = "%s"' "$1" "$2"
}

check_metrics() {
    local how="needs curl and monitoring.timeSeries.list (roles/monitoring.viewer)"
    local value
    # The dead-letter backlog: "no data" is not "0".
    if ! monitoring_query "$(monitoring_filter num_undelivered_messages "$DEAD_LETTER_SUBSCRIPTION")" 600 ALIGN_MAX; then
        unknown "dead-letter backlog on $DEAD_LETTER_SUBSCRIPTION: Cloud Monitoring could not be read ($how)" "gcloud pubsub subscriptions pull $DEAD_LETTER_SUBSCRIPTION --project=$PROJECT_ID --limit=10 (leases them for the ack deadline; does not ack)"
    elif [[ -z $SERIES ]]; then
        unknown "dead-letter backlog on $DEAD_LETTER_SUBSCRIPTION: no data in the last 10 minutes (is the subscription there?)" "gcloud pubsub subscriptions describe $DEAD_LETTER_SUBSCRIPTION --project=$PROJECT_ID"
    else
        value=${SERIES%%$'\n'*}
        value=${value#* }
        if ((value == 0)); then
            ok "dead-letter backlog: 0 messages on $DEAD_LETTER_SUBSCRIPTION"
        else
            problem "dead-letter backlog: $value messages on $DEAD_LETTER_SUBSCRIPTION" \
                "read why in the function's logs, fix the cause, then: python -m tools.replay_dead_letters --project $PROJECT_ID --subscription $DEAD_LETTER_SUBSCRIPTION --topic $RELAY_TOPIC"
        fi
    fi
    # The oldest unacknowledged message on the push subscription.
    if ! monitoring_query "$(monitoring_filter oldest_unacked_message_age "$PUSH_SUBSCRIPTION")" 600 ALIGN_MAX; then
        unknown "oldest unacked message on $PUSH_SUBSCRIPTION: Cloud Monitoring could not be read ($how)" "the subscription's page in the console"
    elif [[ -z $SERIES ]]; then
        unknown "oldest unacked message on $PUSH_SUBSCRIPTION: no data in the last 10 minutes" "gcloud pubsub subscriptions describe $PUSH_SUBSCRIPTION --project=$PROJECT_ID"
    else
        value=${SERIES%%$'\n'*}
        value=${value#* }
        if ((value <= RETRY_WINDOW_SECONDS)); then
            ok "oldest unacked message on $PUSH_SUBSCRIPTION: ${value}s (retry window ${RETRY_WINDOW_SECONDS}s)"
        else
            problem "oldest unacked message on $PUSH_SUBSCRIPTION is ${value}s old, beyond the retry window (${RETRY_WINDOW_SECONDS}s): delivery is stuck" \
                "read the function's logs (redelivery_requested, internal_error) and the subscription's push errors"
        fi
    fi
    # Push answers over the last hour, by response class: 5xx means the function fails.
    if ! monitoring_query "$(monitoring_filter push_request_count "$PUSH_SUBSCRIPTION")" 3600 ALIGN_SUM metric.label.response_class; then
        unknown "push answers on $PUSH_SUBSCRIPTION: Cloud Monitoring could not be read ($how)" "the subscription's page in the console"
    elif [[ -z $SERIES ]]; then
        # A count has no points when nothing happened: a definite zero, unlike a gauge.
        ok "push answers on $PUSH_SUBSCRIPTION in the last hour: none (no push request)"
    else
        local errors total
        errors="$(awk '$1 == "remote_server_5xx" { s += $2 } END { print s + 0 }' <<<"$SERIES")"
        total="$(awk '{ s += $2 } END { print s + 0 }' <<<"$SERIES")"
        if ((errors == 0)); then
            ok "push answers on $PUSH_SUBSCRIPTION in the last hour: $total, none 5xx"
        else
            problem "push answers on $PUSH_SUBSCRIPTION in the last hour: $errors of $total were 5xx (the function failed or asked for redelivery)" \
                "gcloud functions logs read $FUNCTION_NAME --region=$REGION --project=$PROJECT_ID --limit=50"
        fi
    fi
}

check_acked_failures() {
    local filter outcome count
    filter="$(relay_log_filter)"
    if ! query logging read "$filter" "${P[@]}" --freshness=1h --limit=1000 --format="value(jsonPayload.outcome)"; then
        unknown "outcomes in the last hour: the logs could not be read (roles/logging.viewer)" "gcloud logging read '$filter' --freshness=1h --project=$PROJECT_ID"
        return 0
    fi
    if [[ -z $QUERY_OUT ]]; then
        ok "outcomes in the last hour: no relay log line, so none acknowledged without delivery"
        return 0
    fi
    local failures="" lines
    lines="$(grep -c . <<<"$QUERY_OUT" || true)"
    for outcome in "${ACKED_FAILURES[@]}"; do
        count="$(grep -cFx -- "$outcome" <<<"$QUERY_OUT" || true)"
        ((count == 0)) || failures+="${failures:+, }$outcome $count"
    done
    if [[ -z $failures ]]; then
        ok "outcomes in the last hour: $lines line(s), none acknowledged without delivery"
    else
        problem "acknowledged without delivery in the last hour: $failures (these never reach the dead-letter topic)" \
            "gcloud logging read '$filter AND severity>=WARNING' --freshness=1h --project=$PROJECT_ID; each line carries its reason and a replay record"
    fi
}

status_function() {
    local redeploy=$1 drift
    if ! describe_fn "$FUNCTION_NAME"; then
        problem "function $FUNCTION_NAME not found in $REGION" "$redeploy"
        FUNCTION_URI="" FUNCTION_SERVICE=$FUNCTION_NAME
        return 0
    fi
    FUNCTION_URI=${FN[serviceConfig.uri]:-}
    FUNCTION_SERVICE=$(service_of "${FN[serviceConfig.service]:-}" "$FUNCTION_NAME")
    drift="$(function_drift relay internal-only function)"
    if [[ -z $drift ]]; then
        ok "function $FUNCTION_NAME is ACTIVE, HTTP-triggered, internal ingress, runs as $FUNCTION_SA, settings as wanted"
    else
        while IFS= read -r line; do
            problem "function $FUNCTION_NAME: $line" "$redeploy"
        done <<<"$drift"
    fi
    check_members "run services" "$FUNCTION_SERVICE" roles/run.invoker "serviceAccount:$PUSH_SA" --region="$REGION" "${P[@]}"
}

# --status of one push subscription deploy.sh owns: SUBSCRIPTION delivers TOPIC with the
# relay's delivery policy; COMPONENT is its label (push-subscription for the relay topic's).
status_push_subscription() {
    local subscription=$1 topic=$2 component=$3 redeploy=$4 drift line detail
    local topic_path="projects/$PROJECT_ID/topics/$topic"
    if ! describe_subscription "$subscription"; then
        problem "push subscription $subscription not found: nothing delivers $topic" "$redeploy"
    elif [[ ${SUB[topic]} != "$topic_path" ]]; then
        problem "push subscription $subscription reads ${SUB[topic]:-no topic}, not $topic_path" "gcloud pubsub subscriptions delete $subscription --project=$PROJECT_ID, then $redeploy"
    else
        push_subscription_flags "$topic"
        drift="$(push_subscription_drift "$topic" "$component")"
        if [[ -n $drift ]]; then
            while IFS= read -r line; do
                problem "push subscription $subscription: $line" "$(quote_cmd gcloud pubsub subscriptions update "$subscription" "${P[@]}" "${PUSH_FLAGS[@]}")"
            done <<<"$drift"
        elif [[ $component == push-subscription ]]; then
            detail="as $PUSH_SA; dead letters to $DEAD_LETTER_TOPIC after $MAX_DELIVERY_ATTEMPTS attempts; backoff ${MIN_RETRY_DELAY}s-${MAX_RETRY_DELAY}s; ack deadline ${SUB[ackDeadlineSeconds]}s; never expires"
            ok "push subscription $subscription -> $(push_endpoint "$topic") $detail"
        else
            ok "push subscription $subscription -> $(push_endpoint "$topic"); same delivery policy as $PUSH_SUBSCRIPTION"
        fi
        check_members "pubsub subscriptions" "$subscription" roles/pubsub.subscriber "serviceAccount:$PUBSUB_AGENT" "${P[@]}"
    fi
}

status_subscriptions() {
    local redeploy=$1
    status_push_subscription "$PUSH_SUBSCRIPTION" "$RELAY_TOPIC" push-subscription "$redeploy"
    if ! describe_dead_letter_subscription; then
        problem "dead-letter subscription $DEAD_LETTER_SUBSCRIPTION not found: dead letters are lost" "$redeploy"
    else
        if [[ $DL_SUB_TOPIC == "$DEAD_LETTER_TOPIC_PATH" ]]; then
            ok "dead-letter subscription $DEAD_LETTER_SUBSCRIPTION reads $DEAD_LETTER_TOPIC"
        else
            problem "dead-letter subscription $DEAD_LETTER_SUBSCRIPTION reads ${DL_SUB_TOPIC:-no topic}, not $DEAD_LETTER_TOPIC_PATH" "gcloud pubsub subscriptions delete $DEAD_LETTER_SUBSCRIPTION --project=$PROJECT_ID, then $redeploy"
        fi
        if [[ -z $DL_SUB_TTL ]]; then
            ok "dead-letter subscription $DEAD_LETTER_SUBSCRIPTION never expires"
        else
            problem "dead-letter subscription $DEAD_LETTER_SUBSCRIPTION expires after $DL_SUB_TTL without activity" "gcloud pubsub subscriptions update $DEAD_LETTER_SUBSCRIPTION --project=$PROJECT_ID --expiration-period=never"
        fi
    fi
}

status_topics() {
    local redeploy=$1 topic
    for topic in "$RELAY_TOPIC" "$DEAD_LETTER_TOPIC"; do
        if ! describe_topic "$topic"; then
            problem "topic $topic not found" "$redeploy"
        elif [[ -n $TOPIC_KMS_KEY && $TOPIC_KMS_NOW != "$TOPIC_KMS_KEY" ]]; then
            problem "topic $topic is encrypted with '${TOPIC_KMS_NOW:-a Google-managed key}', want $TOPIC_KMS_KEY" "$redeploy"
        else
            ok "topic $topic"
        fi
    done
    check_members "pubsub topics" "$RELAY_TOPIC" roles/pubsub.publisher "$(publisher_members)" "${P[@]}"
    check_members "pubsub topics" "$DEAD_LETTER_TOPIC" roles/pubsub.publisher "serviceAccount:$PUBSUB_AGENT" "${P[@]}"
}

status_iam() {
    local redeploy=$1 account token_creators=""
    if ! $USE_INVOKER_ROLE; then
        if query iam roles describe "$CUSTOM_ROLE_ID" "${P[@]}" --format='value[separator="|"](deleted,includedPermissions)' &&
            [[ $QUERY_OUT == "|$CALLBACK_PERMISSION" || $QUERY_OUT == "False|$CALLBACK_PERMISSION" ]]; then
            ok "custom role $CUSTOM_ROLE_ID holds only $CALLBACK_PERMISSION"
        else
            problem "custom role $CUSTOM_ROLE_ID is missing, deleted or holds other permissions" "$redeploy"
        fi
    fi
    while IFS= read -r account; do
        check_project_roles "serviceAccount:$account" "$(project_roles_of "$account")"
    done < <(our_accounts)
    ! $LEGACY_TOKEN_CREATOR || token_creators="serviceAccount:$PUBSUB_AGENT"
    if exists iam service-accounts describe "$PUSH_SA" "${P[@]}" --format="value(email)"; then
        check_members "iam service-accounts" "$PUSH_SA" roles/iam.serviceAccountTokenCreator "$token_creators" "${P[@]}"
    else
        problem "service account $PUSH_SA not found" "$redeploy"
    fi
    if exists iam service-accounts describe "$LEGACY_TRIGGER_SA" "${P[@]}" --format="value(email)"; then
        problem "the Eventarc trigger's old account $LEGACY_TRIGGER_SA still exists" "$redeploy"
    fi
}

status_extras() {
    local redeploy=$1
    if $WITH_HTTP_FUNCTION; then
        if ! describe_fn "$HTTP_FUNCTION_NAME"; then
            problem "HTTP function $HTTP_FUNCTION_NAME not found" "$redeploy"
        else
            local drift line
            drift="$(function_drift relay_http "$HTTP_INGRESS" http-function)"
            if [[ -z $drift ]]; then
                ok "HTTP function $HTTP_FUNCTION_NAME is ACTIVE, ingress $HTTP_INGRESS, settings as wanted"
            else
                while IFS= read -r line; do problem "HTTP function $HTTP_FUNCTION_NAME: $line" "$redeploy"; done <<<"$drift"
            fi
            check_members "run services" "$(service_of "${FN[serviceConfig.service]:-}" "$HTTP_FUNCTION_NAME")" roles/run.invoker \
                "$(printf '%s\n' "${HTTP_INVOKER_MEMBERS[@]}")" --region="$REGION" "${P[@]}"
        fi
    elif exists functions describe "$HTTP_FUNCTION_NAME" --region="$REGION" "${P[@]}" --v2 --format="value(name)"; then
        problem "HTTP function $HTTP_FUNCTION_NAME runs, but --with-http-function was not asked for: it runs as $FUNCTION_SA" "$redeploy"
    fi
    find_other_regions
    local other region
    for other in "${OTHER_REGIONS[@]}"; do
        region=${other#*/locations/}
        region=${region%%/*}
        problem "this deployment also runs in another region: $other, as $FUNCTION_SA" \
            "$(quote_cmd gcloud functions delete "${other##*/}" --region="$region" "${P[@]}" --quiet)"
    done
    ((${#OTHER_REGIONS[@]} > 0)) || ok "no function of this deployment in another region"
    if [[ -z $DOCKER_REPOSITORY ]]; then
        if ! describe_repository; then
            problem "image repository $ARTIFACT_REPOSITORY not found" "$redeploy"
        elif [[ $REPO_KEEP_NOW != "$KEEP_IMAGES" || $REPO_DELETE_NOW != 86400s ]]; then
            problem "image repository $ARTIFACT_REPOSITORY has no cleanup policy keeping the newest $KEEP_IMAGES" "$redeploy"
        else
            ok "image repository $ARTIFACT_REPOSITORY keeps the newest $KEEP_IMAGES images"
        fi
    fi
    if query logging metrics describe "$LOG_METRIC" "${P[@]}" --format="value(description)" &&
        [[ $QUERY_OUT == *"(deploy.sh $(wanted_metric_hash))"* ]]; then
        ok "log-based metric $LOG_METRIC"
    else
        problem "log-based metric $LOG_METRIC is missing or differs" "$redeploy"
    fi
    if ! $SKIP_DEMO_WORKFLOW; then
        # The API names the account in full: projects/P/serviceAccounts/EMAIL.
        if query workflows describe "$WORKFLOW_NAME" --location="$REGION" "${P[@]}" \
            --format='value[separator="|"](state,serviceAccount,labels.app)' &&
            [[ ${QUERY_OUT/projects\/$PROJECT_ID\/serviceAccounts\//} == "ACTIVE|$WORKFLOW_SA|$APP_LABEL" ]]; then
            ok "demo workflow $WORKFLOW_NAME is ACTIVE, runs as $WORKFLOW_SA"
        else
            problem "demo workflow $WORKFLOW_NAME is missing, not ACTIVE, or runs as another account (${QUERY_OUT:-not found})" "$redeploy"
        fi
    fi
    if [[ -n $ALERT_CHANNEL ]]; then
        if describe_alert_policy && [[ $ALERT_HASH == "$(wanted_alert_hash)" ]]; then
            ok "alert policy '$ALERT_POLICY_NAME' -> $ALERT_CHANNEL"
        else
            problem "alert policy '$ALERT_POLICY_NAME' is missing or differs" "$redeploy"
        fi
    fi
}

status_events() {
    local redeploy=$1 topic bucket
    if $WITH_EVENTS; then
        if ! describe_database; then
            problem "Firestore database $EVENTS_DATABASE not found: every keyed wait and event fails" "$redeploy"
        elif [[ $DB_TYPE != FIRESTORE_NATIVE ]]; then
            problem "Firestore database $EVENTS_DATABASE is in ${DB_TYPE:-an unknown} mode, not Native mode" "set FIRESTORE_DATABASE to another id, then $redeploy"
        else
            ok "Firestore database $EVENTS_DATABASE: Native mode, $DB_LOCATION"
        fi
        local ttls="" group state
        if ! query firestore fields ttls list --database="$EVENTS_DATABASE" "${P[@]}" --format="value(name,ttlConfig.state)"; then
            unknown "TTL policies of $EVENTS_DATABASE: they could not be read" "gcloud firestore fields ttls list --database=$EVENTS_DATABASE --project=$PROJECT_ID"
        else
            ttls=$QUERY_OUT
            for group in "${EVENT_COLLECTIONS[@]}"; do
                state="$(ttl_state "$ttls" "$group")"
                local fix
                fix="$(quote_cmd gcloud firestore fields ttls update "$EVENT_TTL_FIELD" --collection-group="$group" --database="$EVENTS_DATABASE" --enable-ttl --async "${P[@]}")"
                case $state in
                ACTIVE) ok "TTL policy on $group.$EVENT_TTL_FIELD: ACTIVE" ;;
                # New documents are covered while the existing ones are processed.
                CREATING) ok "TTL policy on $group.$EVENT_TTL_FIELD: CREATING (new documents already covered)" ;;
                NONE) problem "no TTL policy on $group.$EVENT_TTL_FIELD: expired waits and events are never deleted" "$fix" ;;
                *) problem "TTL policy on $group.$EVENT_TTL_FIELD is $state" "$fix" ;;
                esac
            done
        fi
        if query iam roles describe "$EVENTS_ROLE_ID" "${P[@]}" --format='value[separator="|"](deleted,includedPermissions)' &&
            [[ ${QUERY_OUT%%|*} != [Tt]rue ]] && same_items "${QUERY_OUT#*|}" "${EVENTS_PERMISSIONS//,/;}"; then
            ok "custom role $EVENTS_ROLE_ID holds only $EVENTS_PERMISSIONS"
        else
            problem "custom role $EVENTS_ROLE_ID is missing, deleted or holds other permissions" "$redeploy"
        fi
        # What the relay reads, exactly (the function's environment is checked above too).
        if query functions describe "$FUNCTION_NAME" --region="$REGION" "${P[@]}" --v2 \
            --format="value(serviceConfig.environmentVariables.EVENT_TOPICS)"; then
            if [[ $QUERY_OUT == "$EVENT_TOPICS_JSON" ]]; then
                ok "EVENT_TOPICS of $FUNCTION_NAME: ${EVENT_TOPICS_JSON:-none}"
            else
                problem "EVENT_TOPICS of $FUNCTION_NAME is '${QUERY_OUT}', want '${EVENT_TOPICS_JSON}'" "$redeploy"
            fi
        fi
        for bucket in "${EVENT_BUCKET_NAMES[@]}"; do
            topic="$(bucket_topic "$bucket")"
            if ! describe_topic "$topic"; then
                problem "topic $topic of gs://$bucket not found" "$redeploy"
                continue
            fi
            check_members "pubsub topics" "$topic" roles/pubsub.publisher "$(gcs_agent)" "${P[@]}"
            if ! list_notifications "$bucket"; then
                unknown "notifications of gs://$bucket: the bucket could not be read" "gcloud storage buckets notifications list gs://$bucket --project=$PROJECT_ID"
                continue
            fi
            sort_notifications "$topic"
            if ((${#WANTED_IDS[@]} == 1 && ${#OTHER_IDS[@]} == 0)); then
                ok "notification ${WANTED_IDS[0]}: gs://$bucket $NOTIFICATION_EVENT_TYPES -> $topic"
            elif ((${#WANTED_IDS[@]} + ${#OTHER_IDS[@]} == 0)); then
                problem "gs://$bucket has no notification to $topic: its new objects are no events" "$redeploy"
            else
                problem "gs://$bucket has ${#WANTED_IDS[@]} notification(s) to $topic as wanted and ${#OTHER_IDS[@]} otherwise (one $NOTIFICATION_EVENT_TYPES, JSON, every object, is wanted)" "$redeploy"
            fi
        done
        while IFS= read -r topic; do
            [[ -n $topic ]] || continue
            status_push_subscription "$(event_subscription "$topic")" "$topic" event-subscription "$redeploy"
        done < <(event_topics)
    fi
    # Whatever deploy.sh wired for events and this run does not ask for.
    stale_event_deliveries
    local name
    for name in "${STALE_SUBSCRIPTIONS[@]}"; do
        problem "push subscription $name delivers events nobody asked for any more ($redeploy removes it)" "$(quote_cmd gcloud pubsub subscriptions delete "$name" "${P[@]}" --quiet)"
    done
    for name in "${STALE_TOPICS[@]}"; do
        problem "bucket topic $name (and its notification) is no longer asked for" "$redeploy"
    done
}

status() {
    CURRENT_STEP="status"
    say "workflows-callback-relay: status of project $PROJECT_ID, region $REGION (read-only)"
    lookup_project_number
    local fix
    fix="$(redeploy_cmd)"
    status_function "$fix"
    status_subscriptions "$fix"
    status_topics "$fix"
    status_iam "$fix"
    status_extras "$fix"
    status_events "$fix"
    check_metrics
    check_acked_failures
    CURRENT_STEP="done"
    say ""
    if ((FAILS > 0)); then
        local unknowns=""
        ((UNKNOWNS == 0)) || unknowns=", $UNKNOWNS unknown"
        say "Status: $FAILS problem(s)$unknowns. Run the fix lines above; '$fix' repairs the deployment itself."
        exit 1
    fi
    if ((UNKNOWNS > 0)); then
        say "Status: no problem found, but $UNKNOWNS check(s) had no data (UNKNOWN above)."
        exit 2
    fi
    say "Status: all as $PROG leaves it."
    exit 0
}

# --- destroy: everything this script may have made, whatever the flags --------------------
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

# Messages still waiting, so that nobody deletes them unawares.
warn_queued_messages() {
    local subscription value
    for subscription in "$PUSH_SUBSCRIPTION" "$DEAD_LETTER_SUBSCRIPTION" "${DESTROY_SUBSCRIPTIONS[@]}"; do
        if monitoring_query "$(monitoring_filter num_undelivered_messages "$subscription")" 600 ALIGN_MAX && [[ -n $SERIES ]]; then
            value=${SERIES%%$'\n'*}
            value=${value#* }
            if ((value > 0)); then
                warn "$value message(s) still wait on $subscription: deleting it loses them"
                [[ $subscription != "$DEAD_LETTER_SUBSCRIPTION" ]] ||
                    warn "replay them first: python -m tools.replay_dead_letters --project $PROJECT_ID --subscription $DEAD_LETTER_SUBSCRIPTION --topic $RELAY_TOPIC"
            else
                say "    no message waits on $subscription"
            fi
        else
            warn "could not tell how many messages wait on $subscription (Cloud Monitoring); any that do are lost with it"
        fi
    done
}

# What deploy.sh made for events, whatever the flags: found by their labels.
DESTROY_SUBSCRIPTIONS=()
DESTROY_TOPICS=()
find_event_deliveries() {
    local name
    DESTROY_SUBSCRIPTIONS=() DESTROY_TOPICS=()
    labelled subscriptions event-subscription
    while IFS= read -r name; do
        [[ -z $name ]] || DESTROY_SUBSCRIPTIONS+=("${name##*/}")
    done <<<"$LABELLED"
    labelled topics bucket-topic
    while IFS= read -r name; do
        [[ -z $name ]] || DESTROY_TOPICS+=("${name##*/}")
    done <<<"$LABELLED"
}

# The database may hold other data (the (default) database often does), and its
# loss loses every wait in flight: it is never deleted, only shown how to.
say_how_to_delete_the_database() {
    # Any failure (no Firestore API, no database, no right to read it) means nothing to say.
    local type
    type="$(gcloud firestore databases describe --database="$EVENTS_DATABASE" "${P[@]}" --format="value(type)" 2>/dev/null)" || return 0
    [[ -n $type ]] || return 0
    say ""
    say "The Firestore database $EVENTS_DATABASE is kept: it may hold other data, and the TTL policies delete"
    say "the relay's documents (relay_channels, relay_events, relay_waits) once they expire. To delete it:"
    say "  $(quote_cmd gcloud firestore databases update --database="$EVENTS_DATABASE" --no-delete-protection "${P[@]}")"
    say "  $(quote_cmd gcloud firestore databases delete --database="$EVENTS_DATABASE" "${P[@]}")"
}

destroy() {
    summary
    lookup_project_number
    find_event_deliveries
    step "Check for messages still queued" "Reading the backlog needs monitoring.timeSeries.list (roles/monitoring.viewer)."
    warn_queued_messages
    confirm_destroy
    step "Delete the workflow" "Deleting needs roles/workflows.admin. Only a workflow labelled app=$APP_LABEL is deleted."
    if query workflows describe "$WORKFLOW_NAME" --location="$REGION" "${P[@]}" --format='value[separator="|"](labels.app,labels.deploy_hash)'; then
        if [[ $QUERY_OUT == "$APP_LABEL|"* || $QUERY_OUT == "|"?* ]]; then
            run gcloud workflows delete "$WORKFLOW_NAME" --location="$REGION" "${P[@]}" --quiet
        else
            warn "workflow $WORKFLOW_NAME was not deployed by $PROG (no app=$APP_LABEL label): left alone"
        fi
    else
        say "    = workflow $WORKFLOW_NAME already gone"
    fi
    step "Delete the alert policy and the log-based metric" "Needs roles/monitoring.alertPolicyEditor and roles/logging.configWriter."
    if describe_alert_policy; then
        run gcloud alpha monitoring policies delete "$ALERT_POLICY" "${P[@]}" --quiet
    else
        say "    = alert policy '$ALERT_POLICY_NAME' already gone"
    fi
    delete_if_exists "metric $LOG_METRIC" logging metrics describe "$LOG_METRIC" "${P[@]}" --format="value(name)" -- \
        logging metrics delete "$LOG_METRIC" "${P[@]}" --quiet
    step "Delete the push subscription and the functions" "Deleting needs roles/pubsub.editor and roles/cloudfunctions.developer. A function still triggered by Eventarc takes its trigger and subscription with it."
    delete_if_exists "subscription $PUSH_SUBSCRIPTION" pubsub subscriptions describe "$PUSH_SUBSCRIPTION" "${P[@]}" --format="value(name)" -- \
        pubsub subscriptions delete "$PUSH_SUBSCRIPTION" "${P[@]}" --quiet
    delete_if_exists "snapshot $PUSH_SUBSCRIPTION-from-eventarc" pubsub snapshots describe "$PUSH_SUBSCRIPTION-from-eventarc" "${P[@]}" --format="value(name)" -- \
        pubsub snapshots delete "$PUSH_SUBSCRIPTION-from-eventarc" "${P[@]}" --quiet
    local name
    for name in "$FUNCTION_NAME" "$HTTP_FUNCTION_NAME"; do
        delete_if_exists "function $name" functions describe "$name" --region="$REGION" "${P[@]}" --v2 --format="value(name)" -- \
            functions delete "$name" --region="$REGION" "${P[@]}" --quiet
    done
    find_other_regions
    if ((${#OTHER_REGIONS[@]} > 0)); then
        warn "this deployment also runs in another region; delete it with:"
        other_region_commands >&2
    fi
    if ((${#DESTROY_SUBSCRIPTIONS[@]} + ${#DESTROY_TOPICS[@]} > 0)); then
        step "Delete the event deliveries (subscriptions, bucket notifications and topics)" "Deleting needs roles/pubsub.editor and storage.buckets.update (roles/storage.admin). Your own topics stay."
        remove_event_deliveries "${DESTROY_SUBSCRIPTIONS[@]}" -- "${DESTROY_TOPICS[@]}"
    fi
    step "Delete the topics and the dead-letter subscription" "Deleting needs roles/pubsub.editor. Messages still on $DEAD_LETTER_SUBSCRIPTION are lost."
    delete_if_exists "subscription $DEAD_LETTER_SUBSCRIPTION" pubsub subscriptions describe "$DEAD_LETTER_SUBSCRIPTION" "${P[@]}" --format="value(name)" -- \
        pubsub subscriptions delete "$DEAD_LETTER_SUBSCRIPTION" "${P[@]}" --quiet
    local topic
    for topic in "$RELAY_TOPIC" "$DEAD_LETTER_TOPIC"; do
        delete_if_exists "topic $topic" pubsub topics describe "$topic" "${P[@]}" --format="value(name)" -- \
            pubsub topics delete "$topic" "${P[@]}" --quiet
    done
    step "Delete the images" "Deleting the repository needs roles/artifactregistry.admin."
    if [[ -n $DOCKER_REPOSITORY ]]; then
        say "    = your repository $DOCKER_REPOSITORY is yours: left alone"
    elif $DELETE_IMAGES; then
        delete_if_exists "repository $ARTIFACT_REPOSITORY" artifacts repositories describe "$ARTIFACT_REPOSITORY" --location="$REGION" "${P[@]}" --format="value(name)" -- \
            artifacts repositories delete "$ARTIFACT_REPOSITORY" --location="$REGION" "${P[@]}" --quiet
    elif exists artifacts repositories describe "$ARTIFACT_REPOSITORY" --location="$REGION" "${P[@]}" --format="value(name)"; then
        say "    repository $ARTIFACT_REPOSITORY and its images are kept; --destroy --delete-images deletes them"
    else
        say "    = repository $ARTIFACT_REPOSITORY already gone"
    fi
    step "Remove project-level grants" "Needs roles/resourcemanager.projectIamAdmin."
    local account
    while IFS= read -r account; do
        converge_project_roles "serviceAccount:$account" ""
    done < <(our_accounts)
    step "Delete the custom roles" "Needs roles/iam.roleAdmin. A deleted role can be undeleted for 7 days; its ID is reusable 37 days after the deletion."
    local role
    for role in "$CUSTOM_ROLE_ID" "$EVENTS_ROLE_ID"; do
        if query iam roles describe "$role" "${P[@]}" --format="value(deleted)" && [[ ${QUERY_OUT,,} != true ]]; then
            run gcloud iam roles delete "$role" "${P[@]}" --quiet
        else
            say "    = role $role already gone"
        fi
    done
    step "Delete the service accounts" "Needs roles/iam.serviceAccountAdmin. Their resource-level grants go with them."
    while IFS= read -r account; do
        delete_if_exists "service account $account" iam service-accounts describe "$account" "${P[@]}" --format="value(email)" -- \
            iam service-accounts delete "$account" "${P[@]}" --quiet
    done < <(our_accounts)
    say_how_to_delete_the_database
    CURRENT_STEP="done"
    say ""
    if $DRY_RUN; then
        say "Dry run finished: nothing was deleted."
    else
        say "Destroyed. The APIs stay enabled (other resources may use them), and so do grants on your KMS keys; remove them with gcloud if you want."
    fi
}

case "$MODE" in
deploy) deploy ;;
destroy) destroy ;;
status) status ;;
esac
