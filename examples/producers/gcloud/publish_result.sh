#!/usr/bin/env bash
# Resume the workflow that sent a job: publish the worker's result to the relay topic.
#
#   ./publish_result.sh job.json '{"status": "shipped"}'         # resume the step
#   ./publish_result.sh job.json --fail CODE MESSAGE [DETAILS]    # fail it on purpose
#
# The job comes from the workflow and carries callback_url, method and expires_at.
# Needs gcloud and jq. RELAY_TOPIC defaults to workflows-callback-relay; the
# project is gcloud's (core/project or CLOUDSDK_CORE_PROJECT).
set -euo pipefail

job_file=$1
if [[ ${2:-} == --fail ]]; then
  # A payload that makes the waiting step raise CallbackError.
  details=${5:-"{}"}
  payload=$(jq -cn --arg code "$3" --arg message "$4" --argjson details "$details" \
    '{error: {code: $code, message: $message, details: $details}}')
else
  payload=$2
fi
# Copy callback_url, method and expires_at from the job; the result is the payload.
message=$(jq -c --argjson payload "$payload" \
  '{callback_url: .callback_url, payload: $payload, method: .method, expires_at: .expires_at}' \
  "$job_file")
gcloud pubsub topics publish "${RELAY_TOPIC:-workflows-callback-relay}" --message="$message"
