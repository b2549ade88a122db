"""deploy.sh for your own workflows and workers: production flags, redeploys, --status.

Against the fake gcloud (fake_gcloud.py). The fake treats a `functions deploy`
that names the trigger again as Eventarc recreating the trigger and its
subscription, so a redeploy that loses the delivery policy shows up here.
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
    FUNCTION_SA,
    PROJECT,
    PROJECT_NUMBER,
    PUBSUB_AGENT,
    REGION,
    REPO,
    TRIGGER_SA,
    Call,
    FakeCloud,
    Result,
    parse_env_vars,
)

WORKER = f"serviceAccount:worker@{PROJECT}.iam.gserviceaccount.com"
ORDERS_WORKFLOW = f"serviceAccount:orders-wf@{PROJECT}.iam.gserviceaccount.com"
CALLER = f"serviceAccount:caller@{PROJECT}.iam.gserviceaccount.com"
CHANNEL = f"projects/{PROJECT}/notificationChannels/42"
ALLOWED = (
    f"projects/{PROJECT}/locations/*/workflows/orders,"
    f"projects/{PROJECT_NUMBER}/locations/*/workflows/orders"
)
PRODUCTION_ARGS = (
    "--skip-demo-workflow",
    "--allowed-workflows",
    ALLOWED,
    "--publisher",
    WORKER,
    f"--publisher={ORDERS_WORKFLOW}",
    "--with-http-function",
    "--http-invoker",
    CALLER,
    "--alert-channel",
    CHANNEL,
)
EVENTARC_SUB = f"eventarc-{REGION}-workflows-callback-relay-123456-sub-789"
DEAD_LETTER_TOPIC = f"projects/{PROJECT}/topics/workflows-callback-relay-dead-letter"
TRIGGER_FLAGS = ("trigger-topic", "trigger-service-account", "retry")


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


def bindings(state: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (resource, role, member)
        for resource, pairs in state["iam"].items()
        for role, member in pairs
    }


def only(result: Result, command: str) -> Call:
    (call,) = result.find(command)
    return call


# -- a production deploy with every new flag ------------------------------------------


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
    assert http.flag("build-service-account") == (f"projects/{PROJECT}/serviceAccounts/{BUILD_SA}")
    assert http.flag("retry") is None
    assert http.flag("trigger-topic") is None

    # Publishers on the relay topic only; the caller on the HTTP function only.
    granted = bindings(state)
    publishers = {m for r, role, m in granted if role == "roles/pubsub.publisher"}
    assert publishers == {WORKER, ORDERS_WORKFLOW, PUBSUB_AGENT}
    assert {(r, m) for r, role, m in granted if m in (WORKER, ORDERS_WORKFLOW)} == {
        ("topic:workflows-callback-relay", WORKER),
        ("topic:workflows-callback-relay", ORDERS_WORKFLOW),
    }
    assert {(r, role) for r, role, m in granted if m == CALLER} == {
        ("run_service:workflows-callback-relay-http", "roles/run.invoker")
    }
    assert not any(m in ("allUsers", "allAuthenticatedUsers") for _, _, m in granted)
    assert (
        "run_service:workflows-callback-relay",
        "roles/run.invoker",
        f"serviceAccount:{TRIGGER_SA}",
    ) in granted

    # The alert policy: both conditions, on the right subscriptions, to the channel.
    (policy,) = state["alert_policies"].values()
    assert policy["displayName"] == "workflows-callback-relay delivery"
    assert policy["notificationChannels"] == [CHANNEL]
    assert policy["combiner"] == "OR"
    dead_letters, stuck = (c["conditionThreshold"] for c in policy["conditions"])
    assert 'subscription_id = "workflows-callback-relay-dead-letter-sub"' in dead_letters["filter"]
    assert "subscription/num_undelivered_messages" in dead_letters["filter"]
    assert (dead_letters["thresholdValue"], dead_letters["duration"]) == (0, "300s")
    assert f'subscription_id = "{EVENTARC_SUB}"' in stuck["filter"]
    assert "subscription/oldest_unacked_message_age" in stuck["filter"]
    # 10 attempts x (60 s timeout + 600 s maximum backoff)
    assert stuck["thresholdValue"] == 6600
    assert "monitoring.googleapis.com" in state["services"]
    assert only(result, "alpha monitoring policies create").flag("policy-from-file")


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
    update = only(result, "alpha monitoring policies update")
    assert update.positionals() == [name]
    assert [c.command for c in result.mutating] == ["alpha monitoring policies update"]
    (policy,) = production.read_state()["alert_policies"].values()
    assert policy["conditions"][1]["conditionThreshold"]["thresholdValue"] == 1800


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
def test_bad_production_flags_are_refused(
    cloud_factory: Any, args: list[str], message: str
) -> None:
    cloud: FakeCloud = cloud_factory()
    result = cloud.deploy(*args)
    assert result.returncode != 0
    assert message in result.stderr
    assert result.calls == [] or result.commands() == ["config get-value"]


@pytest.fixture
def cloud_factory(tmp_path: Path) -> Any:
    return lambda: FakeCloud(tmp_path, project_with_users())


# -- redeploys that keep the trigger ---------------------------------------------------


def test_code_change_is_redeployed_without_touching_the_trigger(production: FakeCloud) -> None:
    state = production.read_state()
    before_sub = copy.deepcopy(state["subscriptions"][EVENTARC_SUB])
    before_trigger = state["functions"]["workflows-callback-relay"]["eventTrigger"]
    # As if function/ had changed since the last deploy: the fingerprint differs.
    state["functions"]["workflows-callback-relay"]["labels"]["deploy_hash"] = "older-code"
    production.write_state(state)

    result = production.deploy(*PRODUCTION_ARGS)
    assert result.returncode == 0, result.stderr
    assert [c.command for c in result.mutating] == ["functions deploy"]
    deploy = result.mutating[0]
    assert deploy.positionals() == ["workflows-callback-relay"]
    for flag in TRIGGER_FLAGS:
        assert deploy.flag(flag) is None, flag
    assert deploy.flag("entry-point") == "relay"
    assert "trigger unchanged" in result.stdout
    after = production.read_state()
    assert after["functions"]["workflows-callback-relay"]["eventTrigger"] == before_trigger
    assert after["subscriptions"][EVENTARC_SUB] == before_sub
    assert after["functions"]["workflows-callback-relay"]["labels"]["deploy_hash"] != "older-code"
    # And the next run has nothing left to do.
    again = production.deploy(*PRODUCTION_ARGS)
    assert again.mutating == [], [c.argv for c in again.mutating]


def test_settings_change_keeps_the_trigger_too(production: FakeCloud) -> None:
    result = production.deploy(*PRODUCTION_ARGS, "--max-instances", "20")
    assert result.returncode == 0, result.stderr
    assert [c.command for c in result.mutating] == ["functions deploy", "functions deploy"]
    relay = result.mutating[0]
    assert relay.flag("max-instances") == "20"
    for flag in TRIGGER_FLAGS:
        assert relay.flag(flag) is None, flag
    assert production.read_state()["subscriptions"][EVENTARC_SUB]["deadLetterPolicy"]


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("serviceAccountEmail", f"other@{PROJECT}.iam.gserviceaccount.com", "service account"),
        ("retryPolicy", "RETRY_POLICY_DO_NOT_RETRY", "retry"),
        ("pubsubTopic", f"projects/{PROJECT}/topics/old-topic", "topic"),
    ],
)
def test_a_trigger_that_must_change_is_recreated_and_repaired(
    production: FakeCloud, field: str, value: str, said: str
) -> None:
    state = production.read_state()
    state["functions"]["workflows-callback-relay"]["eventTrigger"][field] = value
    production.write_state(state)

    result = production.deploy(*PRODUCTION_ARGS)
    assert result.returncode == 0, result.stderr
    assert "must change" in result.stderr
    assert said in result.stderr
    assert "recreate the Eventarc trigger" in result.stderr
    deploy = result.mutating[0]
    assert deploy.command == "functions deploy"
    assert deploy.flag("trigger-topic") == "workflows-callback-relay"
    assert deploy.flag("trigger-service-account") == TRIGGER_SA
    assert deploy.flag("retry") is True

    # The new subscription gets the delivery policy, the agent's grant and the alert.
    after = production.read_state()
    trigger = after["functions"]["workflows-callback-relay"]["eventTrigger"]
    subscription = after["triggers"][trigger["trigger"]]["transport"]["pubsub"]["subscription"]
    new_sub = subscription.rsplit("/", 1)[1]
    assert new_sub != EVENTARC_SUB
    assert EVENTARC_SUB not in after["subscriptions"]
    record = after["subscriptions"][new_sub]
    assert record["deadLetterPolicy"]["deadLetterTopic"] == DEAD_LETTER_TOPIC
    assert record["ackDeadlineSeconds"] == 60
    assert (f"subscription:{new_sub}", "roles/pubsub.subscriber", PUBSUB_AGENT) in bindings(after)
    (policy,) = after["alert_policies"].values()
    assert f'"{new_sub}"' in policy["conditions"][1]["conditionThreshold"]["filter"]
    assert [c.command for c in result.mutating] == [
        "functions deploy",
        "pubsub subscriptions update",
        "pubsub subscriptions add-iam-policy-binding",
        "alpha monitoring policies update",
    ]
    status = production.deploy(*PRODUCTION_ARGS, "--status")
    assert status.returncode == 0, status.stdout


# -- --status ----------------------------------------------------------------------------


def test_status_of_a_healthy_deployment(production: FakeCloud) -> None:
    before = production.read_state()
    result = production.deploy(*PRODUCTION_ARGS, "--status")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.mutating == []
    assert production.read_state() == before
    assert "FAIL" not in result.stdout
    for expected in (
        "function workflows-callback-relay is ACTIVE",
        "trigger projects/",
        f"trigger subscription projects/{PROJECT}/subscriptions/{EVENTARC_SUB}",
        "dead-letter policy: workflows-callback-relay-dead-letter after 10 attempts",
        "retry policy: backoff 10s-600s",
        "ack deadline 60s",
        f"allowed workflows: {ALLOWED}",
        f"roles/pubsub.publisher for {WORKER}",
        f"roles/run.invoker for {CALLER}",
        f"roles/artifactregistry.writer for serviceAccount:{BUILD_SA}",
        "HTTP function workflows-callback-relay-http is ACTIVE, ingress internal-only",
        "alert policy 'workflows-callback-relay delivery'",
        "dead-letter backlog: 0 messages",
        "Status: all as deploy.sh leaves it.",
    ):
        assert expected in result.stdout, expected


def test_status_of_the_default_demo_deployment(tmp_path: Path) -> None:
    cloud = FakeCloud(tmp_path)
    assert cloud.deploy().returncode == 0
    result = cloud.deploy("--status")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.mutating == []
    assert "callback-relay-demo" in result.stdout


def test_status_reports_each_problem_with_its_fix(production: FakeCloud) -> None:
    state = production.read_state()
    sub = state["subscriptions"][EVENTARC_SUB]
    del sub["deadLetterPolicy"]
    sub["ackDeadlineSeconds"] = 10
    key = "topic:workflows-callback-relay"
    state["iam"][key] = [b for b in state["iam"][key] if b[1] != WORKER]
    state["backlog"] = {"workflows-callback-relay-dead-letter-sub": 3}
    production.write_state(state)
    before = production.read_state()

    result = production.deploy(*PRODUCTION_ARGS, "--status")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.mutating == []
    assert production.read_state() == before
    lines = result.stdout.splitlines()
    fails = [(line, lines[i + 1]) for i, line in enumerate(lines) if "FAIL" in line]
    problems = {line.split("FAIL", 1)[1].strip(): fix.strip() for line, fix in fails}
    assert len(problems) == 4, problems
    update = (
        f"fix: gcloud pubsub subscriptions update projects/{PROJECT}/subscriptions/{EVENTARC_SUB} "
        f"--project={PROJECT} "
        f"--dead-letter-topic={DEAD_LETTER_TOPIC} --max-delivery-attempts=10 "
        "--min-retry-delay=10s --max-retry-delay=600s --ack-deadline=60 --quiet"
    )
    dead_letter = next(p for p in problems if p.startswith("dead-letter policy is 'none'"))
    assert problems[dead_letter] == update
    ack = next(p for p in problems if p.startswith("ack deadline is 10s"))
    assert problems[ack] == update
    grant = next(p for p in problems if WORKER in p)
    assert problems[grant] == (
        "fix: gcloud pubsub topics add-iam-policy-binding workflows-callback-relay "
        f"--project={PROJECT} --member={WORKER} --role=roles/pubsub.publisher"
    )
    backlog = next(p for p in problems if p.startswith("dead-letter backlog: 3 messages"))
    assert "tools.replay_dead_letters" in problems[backlog]
    assert "Status: 4 problem(s)" in result.stdout

    # Running the fixes it printed (here: deploy.sh itself) makes it healthy again.
    assert production.deploy(*PRODUCTION_ARGS).returncode == 0
    state = production.read_state()
    state["backlog"] = {}
    production.write_state(state)
    healed = production.deploy(*PRODUCTION_ARGS, "--status")
    assert healed.returncode == 0, healed.stdout


def test_status_with_wrong_allowed_workflows_and_a_failed_function(
    production: FakeCloud,
) -> None:
    state = production.read_state()
    function = state["functions"]["workflows-callback-relay"]
    function["serviceConfig"]["environmentVariables"]["ALLOWED_WORKFLOWS"] = (
        "projects/*/locations/*/workflows/*"
    )
    function["state"] = "FAILED"
    production.write_state(state)
    result = production.deploy(*PRODUCTION_ARGS, "--status")
    assert result.returncode == 1
    assert result.mutating == []
    assert "function workflows-callback-relay is FAILED" in result.stdout
    assert "allowed workflows are 'projects/*/locations/*/workflows/*'" in result.stdout
    assert "fix: ./deploy.sh --project test-project --skip-demo-workflow" in result.stdout


def test_status_when_nothing_is_deployed(tmp_path: Path) -> None:
    cloud = FakeCloud(tmp_path)
    result = cloud.deploy("--status")
    assert result.returncode == 1
    assert result.mutating == []
    assert "function workflows-callback-relay not found" in result.stdout


def test_destroy_removes_the_production_extras(production: FakeCloud) -> None:
    result = production.deploy(*PRODUCTION_ARGS, "--destroy", "--yes")
    assert result.returncode == 0, result.stderr
    state = production.read_state()
    assert state["functions"] == {}
    assert state["alert_policies"] == {}
    assert BUILD_SA not in state["service_accounts"]
    assert not any(member.endswith(BUILD_SA) for _, _, member in bindings(state))
    # The user's own accounts are theirs: left alone.
    assert {WORKER.split(":")[1], CALLER.split(":")[1]} <= set(state["service_accounts"])
    assert json.dumps(state["iam"]).count(WORKER) == 0  # went with the topic


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
