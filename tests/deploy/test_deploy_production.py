"""deploy.sh for your own workflows and workers: production flags, grants that converge in
both directions, --status, the move from an Eventarc trigger, --iam=print, organisation
policies, the README's commands.

Against the fake gcloud (fake_gcloud.py), which keeps IAM policies as sets and the
messages waiting on each subscription, so that "removed", "left alone" and "not lost"
are read from the project's state.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.deploy_runner import (
    BUILD_SA,
    CUSTOM_ROLE,
    DEAD_LETTER_SUB,
    DEAD_LETTER_TOPIC,
    FUNCTION_KEY,
    FUNCTION_SA,
    FUNCTION_URI,
    HTTP_FUNCTION_KEY,
    LEGACY_TRIGGER_SA,
    PROJECT,
    PROJECT_NUMBER,
    PUBSUB_AGENT,
    PUSH_SA,
    PUSH_SUB,
    REGION,
    RELAY_TOPIC,
    REPO,
    Call,
    FakeCloud,
    Result,
    bindings,
    eventarc_era_state,
    fixes,
    members,
    parse_env_vars,
    project_roles,
    status_lines,
)
from tests.deploy.fake_gcloud import run_gcloud

WORKER = f"serviceAccount:worker@{PROJECT}.iam.gserviceaccount.com"
ORDERS_WORKFLOW = f"serviceAccount:orders-wf@{PROJECT}.iam.gserviceaccount.com"
CALLER = f"serviceAccount:caller@{PROJECT}.iam.gserviceaccount.com"
CHANNEL = f"projects/{PROJECT}/notificationChannels/42"
ALLOWED = (
    f"projects/{PROJECT}/locations/*/workflows/orders,"
    f"projects/{PROJECT_NUMBER}/locations/*/workflows/orders"
)
BASE_ARGS = ("--skip-demo-workflow", "--allowed-workflows", ALLOWED)
PRODUCTION_ARGS = (
    *BASE_ARGS,
    "--publisher",
    WORKER,
    f"--publisher={ORDERS_WORKFLOW}",
    "--with-http-function",
    "--http-invoker",
    CALLER,
    "--alert-channel",
    CHANNEL,
)
KMS_KEY = f"projects/{PROJECT}/locations/{REGION}/keyRings/relay/cryptoKeys/relay"
TOPIC_KEY = "projects/security-project/locations/global/keyRings/pubsub/cryptoKeys/topics"
RUN_INVOKER = "roles/run.invoker"
PUBLISHER = "roles/pubsub.publisher"


def project_with_users(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A project where the user's workers, workflow and caller accounts exist."""
    accounts = {
        member.split(":", 1)[1]: {"email": member.split(":", 1)[1]}
        for member in (WORKER, ORDERS_WORKFLOW, CALLER)
    }
    return {
        "config_project": PROJECT,
        "service_accounts": accounts,
        "notification_channels": [CHANNEL],
        **(extra or {}),
    }


@pytest.fixture(scope="module")
def production_state(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cloud = FakeCloud(tmp_path_factory.mktemp("production"), project_with_users())
    result = cloud.deploy(*PRODUCTION_ARGS)
    assert result.returncode == 0, result.stderr
    return cloud.read_state()


@pytest.fixture
def production(tmp_path: Path, production_state: dict[str, Any]) -> FakeCloud:
    return FakeCloud(tmp_path, copy.deepcopy(production_state))


def only(result: Result, command: str) -> Call:
    (call,) = result.find(command)
    return call


def edit(cloud: FakeCloud, change: Any) -> None:
    state = cloud.read_state()
    change(state)
    cloud.write_state(state)


# -- a production deploy with every flag ------------------------------------------


def test_production_deploy_with_every_flag(tmp_path: Path) -> None:
    cloud = FakeCloud(tmp_path, project_with_users())
    result = cloud.deploy(*PRODUCTION_ARGS)
    assert result.returncode == 0, result.stderr
    state = cloud.read_state()

    # No demo: no workflow, no workflow service account, nothing granted to it.
    assert result.find("workflows deploy") == []
    assert state["workflows"] == {}
    assert not any("callback-relay-workflow" in member for _, _, member in bindings(state))
    assert "gcloud workflows run" not in result.stdout

    # The relay may resume the user's workflows, by project id and number.
    relay, http = result.find("functions deploy")
    assert relay.positionals() == ["workflows-callback-relay"]
    env = parse_env_vars(str(relay.flag("set-env-vars")))
    assert env["ALLOWED_WORKFLOWS"] == ALLOWED
    assert parse_env_vars(str(http.flag("set-env-vars"))) == env

    # The HTTP twin: relay_http, never public, internal ingress, same identity.
    assert http.positionals() == ["workflows-callback-relay-http"]
    assert http.flag("entry-point") == "relay_http"
    assert http.flag("trigger-http") is True
    assert http.flag("no-allow-unauthenticated") is True
    assert http.flag("allow-unauthenticated") is None
    assert http.flag("ingress-settings") == "internal-only"
    assert http.flag("service-account") == FUNCTION_SA

    # Publishers on the relay topic only; the caller on the HTTP function only.
    assert members(state, f"topic:{RELAY_TOPIC}", PUBLISHER) == {WORKER, ORDERS_WORKFLOW}
    assert {(r, role) for r, role, m in bindings(state) if m == CALLER} == {
        (f"run_service:{HTTP_FUNCTION_KEY}", RUN_INVOKER)
    }
    assert members(state, f"run_service:{FUNCTION_KEY}", RUN_INVOKER) == {
        f"serviceAccount:{PUSH_SA}"
    }
    assert not any(m in ("allUsers", "allAuthenticatedUsers") for _, _, m in bindings(state))

    # The alert policy: dead letters (held, and their metric gone), stuck delivery,
    # and the failures the relay acknowledges, which never reach the dead-letter topic.
    (policy,) = state["alert_policies"].values()
    assert policy["displayName"] == "workflows-callback-relay delivery"
    assert policy["notificationChannels"] == [CHANNEL]
    assert policy["combiner"] == "OR"
    held, absent, stuck, acked = policy["conditions"]
    held_filter = held["conditionThreshold"]["filter"]
    assert f'subscription_id = "{DEAD_LETTER_SUB}"' in held_filter
    assert "subscription/num_undelivered_messages" in held_filter
    assert absent["conditionAbsent"]["filter"] == held_filter
    assert absent["conditionAbsent"]["duration"] == "1800s"
    assert f'subscription_id = "{PUSH_SUB}"' in stuck["conditionThreshold"]["filter"]
    # 10 attempts x (60 s timeout + 600 s maximum backoff)
    assert stuck["conditionThreshold"]["thresholdValue"] == 6600
    acked_filter = acked["conditionThreshold"]["filter"]
    assert "logging.googleapis.com/user/workflows-callback-relay-outcomes" in acked_filter
    for outcome in ("url_refused", "message_rejected", "failed_fast", "expired"):
        assert f'"{outcome}"' in acked_filter
    assert '"delivered"' not in acked_filter
    assert policy["userLabels"]["app"] == "workflows-callback-relay"
    assert "monitoring.googleapis.com" in state["services"]


def test_production_rerun_changes_nothing(production: FakeCloud) -> None:
    before = production.read_state()
    result = production.deploy(*PRODUCTION_ARGS)
    assert result.returncode == 0, result.stderr
    assert result.mutating == [], [c.argv for c in result.mutating]
    assert production.read_state() == before


def test_changed_alert_threshold_updates_the_same_policy(production: FakeCloud) -> None:
    (name,) = production.read_state()["alert_policies"]
    result = production.deploy(*PRODUCTION_ARGS, env={"ALERT_OLDEST_UNACKED_SECONDS": "1800"})
    assert result.returncode == 0, result.stderr
    assert [c.command for c in result.mutating] == ["alpha monitoring policies update"]
    assert only(result, "alpha monitoring policies update").positionals() == [name]
    (policy,) = production.read_state()["alert_policies"].values()
    assert policy["conditions"][2]["conditionThreshold"]["thresholdValue"] == 1800


def test_environment_variables_work_like_the_flags(tmp_path: Path) -> None:
    by_flags = FakeCloud(tmp_path / "flags", project_with_users())
    by_env = FakeCloud(tmp_path / "env", project_with_users())
    assert by_flags.deploy(*PRODUCTION_ARGS).returncode == 0
    result = by_env.deploy(
        env={
            "SKIP_DEMO_WORKFLOW": "true",
            "ALLOWED_WORKFLOWS": ALLOWED,
            "PUBLISHERS": f"{WORKER},{ORDERS_WORKFLOW}",
            "WITH_HTTP_FUNCTION": "true",
            "HTTP_INVOKERS": CALLER,
            "ALERT_CHANNEL": CHANNEL,
        }
    )
    assert result.returncode == 0, result.stderr
    assert bindings(by_env.read_state()) == bindings(by_flags.read_state())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--allowed-workflows", "projects/p/workflows/w"], "is not projects/PROJECT"),
        (["--allowed-workflows", "projects/p/locations/l/workflows/orders-*"], "orders-*"),
        (["--skip-demo-workflow"], "needs --allowed-workflows"),
        (["--http-invoker", CALLER], "needs --with-http-function"),
        (["--with-http-function", "--http-invoker", "allUsers"], "not an IAM member"),
        (["--publisher", "allAuthenticatedUsers"], "not an IAM member"),
        (["--with-http-function", "--http-ingress", "public"], "--http-ingress must be"),
        (["--alert-channel", "my-channel"], "notificationChannels"),
    ],
)
def test_bad_production_flags_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    cloud = FakeCloud(tmp_path, project_with_users())
    result = cloud.deploy(*args)
    assert result.returncode != 0
    assert message in result.stderr
    assert result.commands() in ([], ["config get-value"])


# -- grants converge to what is asked, in both directions ----------------------------


def test_a_removed_publisher_loses_the_topic(production: FakeCloud) -> None:
    args = [a for a in PRODUCTION_ARGS if a != f"--publisher={ORDERS_WORKFLOW}"]
    # --status sees the publisher nobody asked for any more, with the command that removes it.
    status = production.deploy(*args, "--status")
    assert status.returncode == 1
    (extra,) = [line for line in status_lines(status, "FAIL") if ORDERS_WORKFLOW in line]
    assert "which deploy.sh did not ask for" in extra
    assert (
        "gcloud pubsub topics remove-iam-policy-binding workflows-callback-relay "
        f"--project={PROJECT} --member={ORDERS_WORKFLOW} --role=roles/pubsub.publisher"
    ) in fixes(status)

    result = production.deploy(*args)
    assert result.returncode == 0, result.stderr
    assert [c.command for c in result.mutating] == ["pubsub topics remove-iam-policy-binding"]
    assert members(production.read_state(), f"topic:{RELAY_TOPIC}", PUBLISHER) == {WORKER}
    assert production.deploy(*args, "--status").returncode == 0


def test_a_publisher_added_out_of_band_is_removed(production: FakeCloud) -> None:
    intruder = f"user:someone@{PROJECT}.example.com"

    def grant(state: dict[str, Any]) -> None:
        state["iam"][f"topic:{RELAY_TOPIC}"].append([PUBLISHER, intruder])

    edit(production, grant)
    assert production.deploy(*PRODUCTION_ARGS, "--status").returncode == 1
    assert production.deploy(*PRODUCTION_ARGS).returncode == 0
    assert intruder not in members(production.read_state(), f"topic:{RELAY_TOPIC}", PUBLISHER)


def test_dropped_options_take_their_grants_and_the_http_function_with_them(
    production: FakeCloud,
) -> None:
    # Turn every option on, then drop them all: nothing they granted stays.
    full = (*PRODUCTION_ARGS, "--use-invoker-role", "--legacy-token-creator")
    assert production.deploy(*full).returncode == 0
    state = production.read_state()
    assert project_roles(state, f"serviceAccount:{FUNCTION_SA}") == {"roles/workflows.invoker"}
    assert HTTP_FUNCTION_KEY in state["functions"]

    bare = (*BASE_ARGS, "--publisher", WORKER)
    status = production.deploy(*bare, "--status")
    assert status.returncode == 1
    failures = "\n".join(status_lines(status, "FAIL"))
    assert "roles/workflows.invoker" in failures
    assert "roles/iam.serviceAccountTokenCreator" in failures
    assert "HTTP function workflows-callback-relay-http runs" in failures

    result = production.deploy(*bare)
    assert result.returncode == 0, result.stderr
    state = production.read_state()
    assert project_roles(state, f"serviceAccount:{FUNCTION_SA}") == {CUSTOM_ROLE}
    assert HTTP_FUNCTION_KEY not in state["functions"]
    assert not any(m == CALLER for _, _, m in bindings(state))
    assert (
        members(state, f"service_account:{PUSH_SA}", "roles/iam.serviceAccountTokenCreator")
        == set()
    )
    assert members(state, f"topic:{RELAY_TOPIC}", PUBLISHER) == {WORKER}
    assert production.deploy(*bare, "--status").returncode == 0


def test_http_invokers_converge(production: FakeCloud) -> None:
    other = f"serviceAccount:worker@{PROJECT}.iam.gserviceaccount.com"
    args = [a if a != CALLER else other for a in PRODUCTION_ARGS]
    result = production.deploy(*args)
    assert result.returncode == 0, result.stderr
    key = f"run_service:{HTTP_FUNCTION_KEY}"
    assert members(production.read_state(), key, RUN_INVOKER) == {other}


def test_an_extra_invoker_of_the_function_is_a_failure_and_is_removed(
    production: FakeCloud,
) -> None:
    def open_up(state: dict[str, Any]) -> None:
        state["iam"][f"run_service:{FUNCTION_KEY}"].append([RUN_INVOKER, "allUsers"])

    edit(production, open_up)
    status = production.deploy(*PRODUCTION_ARGS, "--status")
    assert status.returncode == 1
    assert any("also held by allUsers" in line for line in status_lines(status, "FAIL"))
    assert production.deploy(*PRODUCTION_ARGS).returncode == 0
    assert members(production.read_state(), f"run_service:{FUNCTION_KEY}", RUN_INVOKER) == {
        f"serviceAccount:{PUSH_SA}"
    }


def test_a_region_change_is_refused_with_the_commands_that_clean_up(
    production: FakeCloud,
) -> None:
    before = production.read_state()
    result = production.deploy(*PRODUCTION_ARGS, "--region", "europe-west1")
    assert result.returncode == 1
    assert "also exists in another region" in result.stderr
    assert (
        f"gcloud functions delete workflows-callback-relay --region={REGION} "
        f"--project={PROJECT} --quiet"
    ) in result.stderr
    assert "workflows-callback-relay-http" in result.stderr
    assert result.mutating == []
    assert production.read_state() == before
    status = production.deploy(*PRODUCTION_ARGS, "--region", "europe-west1", "--status")
    assert any("another region" in line for line in status_lines(status, "FAIL"))


# -- drift: edits made outside deploy.sh -----------------------------------------------


def _allow_all(function: dict[str, Any]) -> None:
    function["serviceConfig"]["ingressSettings"] = "ALLOW_ALL"


def _run_as_another_account(function: dict[str, Any]) -> None:
    function["serviceConfig"]["serviceAccountEmail"] = f"other@{PROJECT}.iam.gserviceaccount.com"


def _longer_timeout(function: dict[str, Any]) -> None:
    function["serviceConfig"]["timeoutSeconds"] = 300


def _an_emulator_origin(function: dict[str, Any]) -> None:
    function["serviceConfig"]["environmentVariables"]["WORKFLOWS_EMULATOR_HOST"] = "10.0.0.9:80"


def _a_secret_variable(function: dict[str, Any]) -> None:
    function["serviceConfig"]["secretEnvironmentVariables"] = [
        {"key": "WORKFLOWS_EMULATOR_HOST", "secret": "s", "version": "1"}
    ]


@pytest.mark.parametrize(
    ("edit_function", "said", "flag"),
    [
        (_allow_all, "ingress ALLOW_ALL", ("ingress-settings", "internal-only")),
        (
            _run_as_another_account,
            "runtime service account other@",
            ("service-account", FUNCTION_SA),
        ),
        (_longer_timeout, "timeout 300s", ("timeout", "60s")),
        (_an_emulator_origin, "WORKFLOWS_EMULATOR_HOST", None),
        (_a_secret_variable, "secret environment variables", ("clear-secrets", True)),
    ],
    ids=["ingress", "runtime-account", "timeout", "extra-variable", "secret"],
)
def test_an_out_of_band_edit_is_seen_and_repaired(
    production: FakeCloud, edit_function: Any, said: str, flag: tuple[str, Any] | None
) -> None:
    edit(production, lambda state: edit_function(state["functions"][FUNCTION_KEY]))
    # The deploy_hash label still matches: only the live settings tell.
    status = production.deploy(*PRODUCTION_ARGS, "--status")
    assert status.returncode == 1
    assert any(said in line for line in status_lines(status, "FAIL")), status.stdout
    result = production.deploy(*PRODUCTION_ARGS)
    assert result.returncode == 0, result.stderr
    deploy = only(result, "functions deploy")
    if flag is not None:
        assert deploy.flag(flag[0]) == flag[1]
    service = production.read_state()["functions"][FUNCTION_KEY]["serviceConfig"]
    assert service["ingressSettings"] == "ALLOW_INTERNAL_ONLY"
    assert service["serviceAccountEmail"] == FUNCTION_SA
    assert "WORKFLOWS_EMULATOR_HOST" not in service["environmentVariables"]
    assert "secretEnvironmentVariables" not in service
    assert production.deploy(*PRODUCTION_ARGS, "--status").returncode == 0


def test_a_platform_variable_is_not_drift(production: FakeCloud) -> None:
    edit(
        production,
        lambda s: s["functions"][FUNCTION_KEY]["serviceConfig"]["environmentVariables"].update(
            {"LOG_EXECUTION_ID": "true"}
        ),
    )
    assert production.deploy(*PRODUCTION_ARGS).mutating == []


# -- --status ----------------------------------------------------------------------------


def test_status_of_a_healthy_deployment(production: FakeCloud) -> None:
    before = production.read_state()
    result = production.deploy(*PRODUCTION_ARGS, "--status")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.mutating == []
    assert production.read_state() == before
    assert status_lines(result, "FAIL") == status_lines(result, "UNKNOWN") == []
    for expected in (
        "function workflows-callback-relay is ACTIVE, HTTP-triggered, internal ingress",
        f"push subscription {PUSH_SUB} -> {FUNCTION_URI}/projects/{PROJECT}/topics/{RELAY_TOPIC}",
        f"dead-letter subscription {DEAD_LETTER_SUB} reads {DEAD_LETTER_TOPIC}",
        f"dead-letter subscription {DEAD_LETTER_SUB} never expires",
        f"roles/pubsub.publisher on topics {RELAY_TOPIC}: exactly",
        f"roles/run.invoker on services workflows-callback-relay: exactly serviceAccount:{PUSH_SA}",
        f"roles/run.builder for serviceAccount:{BUILD_SA}",
        "HTTP function workflows-callback-relay-http is ACTIVE, ingress internal-only",
        "alert policy 'workflows-callback-relay delivery'",
        "log-based metric workflows-callback-relay-outcomes",
        "image repository workflows-callback-relay keeps the newest 5 images",
        "dead-letter backlog: 0 messages",
        f"oldest unacked message on {PUSH_SUB}: 0s",
        "push answers on",
        "outcomes in the last hour",
        "no function of this deployment in another region",
    ):
        assert any(expected in line for line in status_lines(result, "OK")), expected
    assert "Status: all as deploy.sh leaves it." in result.stdout


def test_status_after_the_dead_letter_subscription_is_deleted(production: FakeCloud) -> None:
    edit(production, lambda state: state["subscriptions"].pop(DEAD_LETTER_SUB))
    result = production.deploy(*PRODUCTION_ARGS, "--status")
    assert result.returncode == 1
    assert any(
        f"dead-letter subscription {DEAD_LETTER_SUB} not found: dead letters are lost" in line
        for line in status_lines(result, "FAIL")
    )
    # No data is no data: the backlog is unknown, not 0.
    (backlog,) = [line for line in status_lines(result, "UNKNOWN") if "backlog" in line]
    assert "no data" in backlog
    assert not any("backlog: 0" in line for line in status_lines(result, "OK"))
    # The deploy puts it back.
    assert production.deploy(*PRODUCTION_ARGS).returncode == 0
    assert production.deploy(*PRODUCTION_ARGS, "--status").returncode == 0


def test_status_reports_each_problem_with_its_fix(production: FakeCloud) -> None:
    def damage(state: dict[str, Any]) -> None:
        push = state["subscriptions"][PUSH_SUB]
        del push["deadLetterPolicy"]
        push["ackDeadlineSeconds"] = 10
        key = f"topic:{RELAY_TOPIC}"
        state["iam"][key] = [b for b in state["iam"][key] if b[1] != WORKER]
        state["subscriptions"][DEAD_LETTER_SUB]["messages"] = ["d1", "d2", "d3"]

    edit(production, damage)
    before = production.read_state()
    result = production.deploy(*PRODUCTION_ARGS, "--status")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.mutating == []
    assert production.read_state() == before
    failures = status_lines(result, "FAIL")
    assert len(failures) == 4, failures
    update = (
        f"gcloud pubsub subscriptions update {PUSH_SUB} --project={PROJECT} "
        f"--push-endpoint={FUNCTION_URI}/projects/{PROJECT}/topics/{RELAY_TOPIC} "
        f"--push-auth-service-account={PUSH_SA} --push-auth-token-audience={FUNCTION_URI} "
        f"--ack-deadline=60 --dead-letter-topic=projects/{PROJECT}/topics/{DEAD_LETTER_TOPIC} "
        "--max-delivery-attempts=10 --min-retry-delay=10s --max-retry-delay=600s "
        "--expiration-period=never"
    )
    assert fixes(result).count(update) == 2
    assert (
        f"gcloud pubsub topics add-iam-policy-binding {RELAY_TOPIC} --project={PROJECT} "
        f"--member={WORKER} --role=roles/pubsub.publisher"
    ) in fixes(result)
    assert any(line.startswith("dead-letter backlog: 3 messages") for line in failures)
    assert "Status: 4 problem(s)" in result.stdout

    # The deploy fixes what it can; the backlog is the operator's to replay.
    assert production.deploy(*PRODUCTION_ARGS).returncode == 0
    edit(production, lambda state: state["subscriptions"][DEAD_LETTER_SUB].update(messages=[]))
    assert production.deploy(*PRODUCTION_ARGS, "--status").returncode == 0


def test_status_without_metric_data_is_unknown_not_ok(production: FakeCloud) -> None:
    edit(
        production,
        lambda state: state["metrics"].update(
            {
                "num_undelivered_messages": {DEAD_LETTER_SUB: None},
                "oldest_unacked_message_age": {PUSH_SUB: None},
            }
        ),
    )
    result = production.deploy(*PRODUCTION_ARGS, "--status")
    assert result.returncode == 2, result.stdout
    unknown = status_lines(result, "UNKNOWN")
    assert len(unknown) == 2, unknown
    assert status_lines(result, "FAIL") == []
    assert "2 check(s) had no data" in result.stdout


def test_status_without_curl_is_unknown(production: FakeCloud) -> None:
    (production.bin / "curl").unlink()
    result = production.deploy(*PRODUCTION_ARGS, "--status")
    assert result.returncode == 2
    assert len(status_lines(result, "UNKNOWN")) == 3


def test_status_sees_a_function_that_answers_5xx_and_a_stuck_message(
    production: FakeCloud,
) -> None:
    edit(
        production,
        lambda state: state["metrics"].update(
            {
                "push_request_count": {PUSH_SUB: {"ack": 2, "remote_server_5xx": 40}},
                "oldest_unacked_message_age": {PUSH_SUB: 7200},
            }
        ),
    )
    result = production.deploy(*PRODUCTION_ARGS, "--status")
    assert result.returncode == 1
    failures = "\n".join(status_lines(result, "FAIL"))
    assert "40 of 42 were 5xx" in failures
    assert "7200s old, beyond the retry window (6600s)" in failures


def test_status_counts_the_failures_the_relay_acknowledges(production: FakeCloud) -> None:
    def log(state: dict[str, Any]) -> None:
        service = "workflows-callback-relay"
        outcomes = ["delivered"] * 5 + ["url_refused"] * 3 + ["message_rejected", "expired"]
        state["log_entries"] = [{"service": service, "outcome": o} for o in outcomes]
        state["log_entries"].append({"service": "someone-else", "outcome": "url_refused"})

    edit(production, log)
    result = production.deploy(*PRODUCTION_ARGS, "--status")
    assert result.returncode == 1
    (line,) = [f for f in status_lines(result, "FAIL") if "acknowledged without delivery" in f]
    assert "url_refused 3, message_rejected 1, expired 1" in line
    (read,) = result.find("logging read")
    assert read.flag("freshness") == "1h"


def test_status_when_nothing_is_deployed(tmp_path: Path) -> None:
    cloud = FakeCloud(tmp_path)
    result = cloud.deploy("--status")
    assert result.returncode == 1
    assert result.mutating == []
    assert any(
        "function workflows-callback-relay not found" in line
        for line in status_lines(result, "FAIL")
    )


def test_status_of_the_default_demo_deployment(tmp_path: Path) -> None:
    cloud = FakeCloud(tmp_path)
    assert cloud.deploy().returncode == 0
    result = cloud.deploy("--status")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "callback-relay-demo" in result.stdout


def test_status_sends_the_token_only_to_cloud_monitoring(production: FakeCloud) -> None:
    # MONITORING_API is gone: an environment variable cannot send the token elsewhere.
    result = production.deploy(
        *PRODUCTION_ARGS, "--status", env={"MONITORING_API": "https://evil.example.com"}
    )
    assert result.returncode == 0
    urls = {call.argv[-1] for call in result.find("curl")}
    assert urls == {f"https://monitoring.googleapis.com/v3/projects/{PROJECT}/timeSeries"}
    for call in result.find("curl"):
        assert not any("ya29" in arg for arg in call.argv)  # the token goes on stdin


# -- destroy, whatever the flags ------------------------------------------------------------


def test_destroy_with_no_flags_removes_the_production_extras(production: FakeCloud) -> None:
    result = production.deploy("--destroy", "--yes")
    assert result.returncode == 0, result.stderr
    state = production.read_state()
    assert state["functions"] == {}
    assert state["alert_policies"] == {}
    assert state["log_metrics"] == {}
    assert state["subscriptions"] == {}
    assert BUILD_SA not in state["service_accounts"]
    assert not any(BUILD_SA in member for _, _, member in bindings(state))
    # The user's own accounts are theirs: left alone.
    assert {WORKER.split(":")[1], CALLER.split(":")[1]} <= set(state["service_accounts"])
    assert json.dumps(state["iam"]).count(WORKER) == 0  # went with the topic


def test_destroy_leaves_a_workflow_it_did_not_deploy(tmp_path: Path) -> None:
    cloud = FakeCloud(tmp_path)
    assert cloud.deploy().returncode == 0
    edit(cloud, lambda s: s["workflows"][f"{REGION}/callback-relay-demo"].update(labels={}))
    result = cloud.deploy("--destroy", "--yes")
    assert result.returncode == 0
    assert "was not deployed by deploy.sh" in result.stderr
    assert f"{REGION}/callback-relay-demo" in cloud.read_state()["workflows"]


# -- moving an Eventarc deployment to the push subscription ---------------------------------


def test_an_eventarc_deployment_moves_to_the_push_subscription_without_losing_a_message(
    tmp_path: Path,
) -> None:
    cloud = FakeCloud(tmp_path, eventarc_era_state(messages=["m1", "m2", "m3"]))
    result = cloud.deploy()
    assert result.returncode == 0, result.stdout + result.stderr
    state = cloud.read_state()
    function = state["functions"][FUNCTION_KEY]
    # No Eventarc trigger, nor its subscription, any more...
    assert "eventTrigger" not in function
    assert state["triggers"] == {}
    assert not any(name.startswith("eventarc-") for name in state["subscriptions"])
    # ...and what waited on it waits on the push subscription now.
    assert set(state["subscriptions"][PUSH_SUB]["messages"]) >= {"m1", "m2", "m3"}
    # The push path existed and held the backlog before the trigger was removed.
    order = result.commands()
    assert order.index("pubsub subscriptions create") < order.index("pubsub snapshots create")
    assert order.index("pubsub snapshots create") < order.index("pubsub subscriptions seek")
    assert order.index("pubsub subscriptions seek") < order.index("functions deploy")
    (deploy,) = result.find("functions deploy")
    assert deploy.flag("trigger-http") is True
    assert state["snapshots"] == {}
    # The trigger's account kept invoking until then; now only the push account does,
    # the old account is gone, and the build account holds the one recommended role.
    assert members(state, f"run_service:{FUNCTION_KEY}", RUN_INVOKER) == {
        f"serviceAccount:{PUSH_SA}"
    }
    assert LEGACY_TRIGGER_SA not in state["service_accounts"]
    assert project_roles(state, f"serviceAccount:{BUILD_SA}") == {"roles/run.builder"}
    status = cloud.deploy("--status")
    assert status.returncode == 0, status.stdout
    again = cloud.deploy()
    assert again.mutating == [], [c.argv for c in again.mutating]


def test_status_of_an_eventarc_deployment_says_it_must_move(tmp_path: Path) -> None:
    cloud = FakeCloud(tmp_path, eventarc_era_state())
    result = cloud.deploy("--status")
    assert result.returncode == 1
    failures = "\n".join(status_lines(result, "FAIL"))
    assert "an Eventarc trigger" in failures
    assert f"push subscription {PUSH_SUB} not found" in failures
    assert f"the Eventarc trigger's old account {LEGACY_TRIGGER_SA} still exists" in failures


def test_if_the_api_refuses_the_move_both_paths_deliver_until_the_function_is_recreated(
    tmp_path: Path,
) -> None:
    state = eventarc_era_state(messages=["m1"])
    state["refuse_trigger_change"] = True
    cloud = FakeCloud(tmp_path, state)
    result = cloud.deploy()
    assert result.returncode != 0
    assert "did not change the trigger" in result.stderr
    assert "Nothing is lost: both the Eventarc trigger and" in result.stderr
    delete = (
        "gcloud functions delete workflows-callback-relay "
        f"--region={REGION} --project={PROJECT} --quiet"
    )
    assert delete in result.stderr
    after = cloud.read_state()
    eventarc_sub = next(name for name in after["subscriptions"] if name.startswith("eventarc-"))
    # Both deliver: the Eventarc subscription, and the push one holding its backlog.
    assert after["subscriptions"][eventarc_sub]["messages"] == ["m1"]
    assert after["subscriptions"][PUSH_SUB]["messages"] == ["m1"]
    assert f"serviceAccount:{LEGACY_TRIGGER_SA}" in members(
        after, f"run_service:{FUNCTION_KEY}", RUN_INVOKER
    )
    # The operator runs the printed command, then deploy.sh again: done, m1 still queued.
    outcome = run_gcloud(cloud.state, shlex.split(delete)[1:])
    assert outcome.code == 0, outcome.stderr
    finished = cloud.deploy()
    assert finished.returncode == 0, finished.stderr
    final = cloud.read_state()
    assert "eventTrigger" not in final["functions"][FUNCTION_KEY]
    assert final["subscriptions"][PUSH_SUB]["messages"] == ["m1"]
    assert cloud.deploy("--status").returncode == 0


# -- --iam=print: an operator without Owner, and an IAM team ----------------------------------


def printed_iam(result: Result) -> list[tuple[str, str]]:
    """(status, command) of each line of the IAM plan --iam=print ends with."""
    lines = result.stdout.split("IAM for your IAM team (--iam=print", 1)[1].splitlines()[1:]
    plan = []
    for line in lines:
        if not line.startswith("  "):
            break
        plan.append((line[2:11].strip(), line[12:]))
    return plan


def test_iam_print_changes_no_iam_and_hands_over_every_grant(tmp_path: Path) -> None:
    cloud = FakeCloud(tmp_path, project_with_users())
    args = (*PRODUCTION_ARGS, "--iam=print")
    iam_verbs = ("add-iam-policy-binding", "remove-iam-policy-binding")
    iam_commands = ("iam service-accounts create", "iam roles create", "iam roles update")
    rounds = 0
    while True:
        rounds += 1
        result = cloud.deploy(*args)
        assert not any(
            c.command.endswith(iam_verbs) or c.command in iam_commands for c in result.mutating
        )
        if result.returncode == 0:
            break
        assert result.returncode == 3, result.stdout + result.stderr
        missing = [cmd for status, cmd in printed_iam(result) if status == "MISSING"]
        assert missing
        # The IAM team runs what was printed, as printed.
        for command in missing:
            argv = shlex.split(command)
            assert argv[0] == "gcloud"
            outcome = run_gcloud(cloud.state, argv[1:])
            assert outcome.code == 0, (command, outcome.stderr)
        assert rounds < 5
    # Three rounds: the identities, the build's role, the rest; then all in place.
    assert rounds == 4
    assert "Every grant is in place." in result.stdout
    assert all(status == "in place" for status, _ in printed_iam(result))
    # The same grants as a deploy with IAM gets.
    reference = FakeCloud(tmp_path / "reference", project_with_users())
    assert reference.deploy(*PRODUCTION_ARGS).returncode == 0
    assert bindings(cloud.read_state()) == bindings(reference.read_state())
    assert cloud.deploy(*PRODUCTION_ARGS, "--status").returncode == 0


def test_iam_print_prints_removals_too(production: FakeCloud) -> None:
    args = [a for a in PRODUCTION_ARGS if a != f"--publisher={ORDERS_WORKFLOW}"]
    result = production.deploy(*args, "--iam=print")
    assert result.returncode == 3
    assert (
        "MISSING",
        f"gcloud pubsub topics remove-iam-policy-binding {RELAY_TOPIC} --project={PROJECT} "
        f"--member={ORDERS_WORKFLOW} --role=roles/pubsub.publisher",
    ) in printed_iam(result)
    assert result.mutating == []


# -- organisation policies ---------------------------------------------------------------------


def test_organisation_policy_flags_reach_every_resource(tmp_path: Path) -> None:
    cloud = FakeCloud(tmp_path, project_with_users({"kms_keys": [KMS_KEY, TOPIC_KEY]}))
    pool = f"projects/{PROJECT}/locations/{REGION}/workerPools/private"
    args = (
        *PRODUCTION_ARGS,
        "--kms-key",
        KMS_KEY,
        "--topic-kms-key",
        TOPIC_KEY,
        "--vpc-connector",
        "relay-connector",
        "--egress-settings",
        "all",
        "--build-worker-pool",
        pool,
    )
    result = cloud.deploy(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    state = cloud.read_state()
    function = state["functions"][FUNCTION_KEY]
    assert function["kmsKeyName"] == KMS_KEY
    assert function["serviceConfig"]["vpcConnector"] == (
        f"projects/{PROJECT}/locations/{REGION}/connectors/relay-connector"
    )
    assert function["serviceConfig"]["vpcConnectorEgressSettings"] == "ALL_TRAFFIC"
    assert function["buildConfig"]["workerPool"] == pool
    assert state["repositories"][f"{REGION}/workflows-callback-relay"]["kmsKeyName"] == KMS_KEY
    assert state["topics"][RELAY_TOPIC]["kmsKeyName"] == TOPIC_KEY
    assert state["topics"][DEAD_LETTER_TOPIC]["kmsKeyName"] == TOPIC_KEY
    # The service agents that use each key may use it.
    key_users = members(state, f"kms_key:{KMS_KEY}", "roles/cloudkms.cryptoKeyEncrypterDecrypter")
    for domain in (
        "gcf-admin-robot",
        "gcp-sa-artifactregistry",
        "gs-project-accounts",
        "serverless-robot-prod",
    ):
        assert (
            f"serviceAccount:service-{PROJECT_NUMBER}@{domain}.iam.gserviceaccount.com" in key_users
        )
    assert members(state, f"kms_key:{TOPIC_KEY}", "roles/cloudkms.cryptoKeyEncrypterDecrypter") == {
        PUBSUB_AGENT
    }
    again = cloud.deploy(*args)
    assert again.mutating == [], [c.argv for c in again.mutating]
    # Dropped again: the function loses the connector, the key and the pool.
    plain = cloud.deploy(*PRODUCTION_ARGS, env={"ARTIFACT_REPOSITORY": "relay-images"})
    assert plain.returncode == 0, plain.stderr
    relay = plain.find("functions deploy")[0]
    for flag in ("clear-vpc-connector", "clear-kms-key", "clear-build-worker-pool"):
        assert relay.flag(flag) is True, flag


def test_a_repository_key_cannot_change(tmp_path: Path) -> None:
    cloud = FakeCloud(tmp_path, {"config_project": PROJECT, "kms_keys": [KMS_KEY]})
    assert cloud.deploy().returncode == 0
    result = cloud.deploy("--kms-key", KMS_KEY)
    assert result.returncode != 0
    assert "a repository's key cannot change" in result.stderr


def test_your_own_image_repository(tmp_path: Path) -> None:
    repository = f"projects/{PROJECT}/locations/{REGION}/repositories/company-images"
    state = {
        "config_project": PROJECT,
        "repositories": {f"{REGION}/company-images": {"name": repository, "labels": {}}},
    }
    cloud = FakeCloud(tmp_path, state)
    result = cloud.deploy("--docker-repository", repository)
    assert result.returncode == 0, result.stderr
    assert only(result, "functions deploy").flag("docker-repository") == repository
    assert result.find("artifacts repositories create") == []
    assert result.find("artifacts repositories set-cleanup-policies") == []
    destroyed = cloud.deploy(
        "--docker-repository", repository, "--destroy", "--yes", "--delete-images"
    )
    assert destroyed.returncode == 0
    assert f"{REGION}/company-images" in cloud.read_state()["repositories"]


# -- the README ---------------------------------------------------------------------------------


def readme_deploy_commands() -> list[list[str]]:
    """The ./deploy.sh lines of the README's Deploy section, as argument lists."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Deploy", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```sh\n(.*?)```", section, re.S)
    joined = block.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        words = [w for w in shlex.split(line.split("#", 1)[0]) if w != "..."]
        if words and words[0] == "./deploy.sh":
            commands.append(words[1:])
    return commands


def test_the_readme_deploy_commands_run_as_printed(tmp_path: Path) -> None:
    # The README's project is a placeholder: the fake project stands in for it.
    commands = [
        [word.replace("my-project", PROJECT) for word in command]
        for command in readme_deploy_commands()
    ]
    assert len(commands) == 2
    channel = f"projects/{PROJECT}/notificationChannels/1234567890"
    cloud = FakeCloud(tmp_path, project_with_users({"notification_channels": [channel]}))
    deployed = cloud.deploy(*commands[0])
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    # "--status ...": with the flags it was deployed with.
    assert commands[1][-1] == "--status"
    status = cloud.deploy(*commands[0], "--status")
    assert status.returncode == 0, status.stdout + status.stderr
