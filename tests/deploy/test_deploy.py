"""deploy.sh against a fake gcloud: fresh project, re-run, repairs, dry run, failure, destroy.

The fake (fake_gcloud.py) keeps the state of the project and records every
call, so these tests check what deploy.sh asks Google Cloud to do and that it
converges: a second run makes no change at all. Production flags, redeploys
and --status are in test_deploy_production.py.
"""

from __future__ import annotations

import copy
import subprocess
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
    REQUIRED_APIS,
    TRIGGER_SA,
    WORKFLOW_SA,
    FakeCloud,
    parse_env_vars,
)

CUSTOM_ROLE = f"projects/{PROJECT}/roles/workflowsCallbackSender"
EVENTARC_SUB = f"eventarc-{REGION}-workflows-callback-relay-123456-sub-789"


@pytest.fixture
def cloud(tmp_path: Path) -> FakeCloud:
    return FakeCloud(tmp_path)


@pytest.fixture(scope="module")
def deployed_state(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The state of a project after one successful deploy (computed once)."""
    cloud = FakeCloud(tmp_path_factory.mktemp("deployed"))
    result = cloud.deploy()
    assert result.returncode == 0, result.stderr
    return cloud.read_state()


@pytest.fixture
def deployed(tmp_path: Path, deployed_state: dict[str, Any]) -> FakeCloud:
    return FakeCloud(tmp_path, copy.deepcopy(deployed_state))


def normalized(state: dict[str, Any]) -> dict[str, Any]:
    """State with IAM bindings in a fixed order (a binding is a set member)."""
    return {**state, "iam": {key: sorted(value) for key, value in state["iam"].items()}}


def all_bindings(cloud: FakeCloud) -> set[tuple[str, str, str]]:
    return {
        (resource, role, member)
        for resource, bindings in cloud.read_state()["iam"].items()
        for role, member in bindings
    }


# -- command line ---------------------------------------------------------------


def test_help_exits_zero_and_lists_modes(cloud: FakeCloud) -> None:
    result = cloud.deploy("--help")
    assert result.returncode == 0
    for option in (
        "--project",
        "--region",
        "--dry-run",
        "--destroy",
        "--yes",
        "--use-invoker-role",
        "--allowed-workflows LIST",
        "--publisher MEMBER",
        "--skip-demo-workflow",
        "--with-http-function",
        "--http-invoker MEMBER",
        "--alert-channel CHANNEL",
        "--legacy-token-creator",
        "--status",
    ):
        assert option in result.stdout
    assert result.calls == []


def test_unknown_flag_is_a_clear_error(cloud: FakeCloud) -> None:
    result = cloud.deploy("--projet", PROJECT)
    assert result.returncode != 0
    assert "unknown argument: --projet" in result.stderr
    assert result.calls == []


def test_missing_project_is_a_clear_error(cloud: FakeCloud) -> None:
    cloud.write_state({"config_project": ""})
    result = cloud.deploy()
    assert result.returncode != 0
    assert "no project" in result.stderr
    assert "--project" in result.stderr
    assert [c.command for c in result.calls] == ["config get-value"]


def test_project_from_environment_and_flag(cloud: FakeCloud) -> None:
    cloud.write_state({"config_project": ""})
    by_env = cloud.deploy("--dry-run", env={"PROJECT_ID": PROJECT})
    by_flag = cloud.deploy("--dry-run", f"--project={PROJECT}")
    assert by_env.returncode == 0, by_env.stderr
    assert by_flag.returncode == 0, by_flag.stderr
    assert "config get-value" not in by_flag.commands()


def test_unreadable_project_stops_before_changing_anything(cloud: FakeCloud) -> None:
    result = cloud.deploy("--project", "someone-elses-project")
    assert result.returncode != 0
    assert "PERMISSION_DENIED" in result.stderr
    assert 'FAILED at step "Enable APIs"' in result.stderr
    assert "Hint:" in result.stderr
    assert result.mutating == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "50"], "must exceed"),
        (["--timeout", "600"], "above 540s"),
        (["--concurrency", "4", "--cpu", "0.5"], "needs --cpu 1 or more"),
        (["--concurrency", "4", "--cpu", "500m"], "needs --cpu 1 or more"),
        (["--runtime", "python311"], "python312 or newer"),
        (["--max-delivery-attempts", "3"], "5-100"),
    ],
)
def test_inconsistent_settings_are_refused(cloud: FakeCloud, args: list[str], message: str) -> None:
    result = cloud.deploy(*args)
    assert result.returncode != 0
    assert message in result.stderr
    assert result.mutating == []


def test_timeout_check_follows_callback_settings(cloud: FakeCloud) -> None:
    env = {"CALLBACK_RETRY_DEADLINE_SECONDS": "100"}
    refused = cloud.deploy("--dry-run", env=env)
    assert refused.returncode != 0
    assert "= 120s" in refused.stderr
    accepted = cloud.deploy("--dry-run", "--timeout", "121", env=env)
    assert accepted.returncode == 0, accepted.stderr


# -- a fresh project --------------------------------------------------------------


def test_fresh_project_creates_everything(cloud: FakeCloud) -> None:
    result = cloud.deploy()
    assert result.returncode == 0, result.stderr
    state = cloud.read_state()

    assert set(state["services"]) == REQUIRED_APIS
    assert set(state["topics"]) == {
        "workflows-callback-relay",
        "workflows-callback-relay-dead-letter",
    }
    assert set(state["service_accounts"]) == {FUNCTION_SA, TRIGGER_SA, WORKFLOW_SA, BUILD_SA}
    assert state["roles"]["workflowsCallbackSender"]["includedPermissions"] == [
        "workflows.callbacks.send"
    ]
    dead_letter_sub = state["subscriptions"]["workflows-callback-relay-dead-letter-sub"]
    assert dead_letter_sub["topic"].endswith("/topics/workflows-callback-relay-dead-letter")
    assert dead_letter_sub["expirationPolicy"] == {}  # never expires
    assert dead_letter_sub["messageRetentionDuration"] == "7d"

    eventarc_sub = state["subscriptions"][EVENTARC_SUB]
    assert eventarc_sub["deadLetterPolicy"] == {
        "deadLetterTopic": f"projects/{PROJECT}/topics/workflows-callback-relay-dead-letter",
        "maxDeliveryAttempts": 10,
    }
    assert eventarc_sub["retryPolicy"] == {"minimumBackoff": "10s", "maximumBackoff": "600s"}
    # The push timeout: at least the function's 60 s, not Eventarc's 10 s.
    assert eventarc_sub["ackDeadlineSeconds"] == 60

    workflow = state["workflows"]["callback-relay-demo"]
    assert workflow["serviceAccount"] == WORKFLOW_SA
    assert workflow["userEnvVars"] == {"RELAY_TOPIC": "workflows-callback-relay"}
    (workflow_deploy,) = result.find("workflows deploy")
    assert workflow_deploy.flag("source") == str(REPO / "workflow.yaml")
    assert workflow_deploy.flag("location") == REGION

    # Ends with how to start an execution and where the logs are.
    tail = result.stdout[result.stdout.index("Deployed.") :]
    assert f"gcloud workflows run callback-relay-demo --location={REGION}" in tail
    assert "gcloud functions logs read workflows-callback-relay" in tail
    assert "tools.replay_dead_letters" in tail


def test_summary_is_printed_before_any_change(cloud: FakeCloud) -> None:
    result = cloud.deploy()
    assert result.returncode == 0, result.stderr
    summary_end = result.stdout.index("==> [1]")
    summary = result.stdout[:summary_end]
    for expected in (PROJECT, REGION, "workflows-callback-relay-dead-letter", FUNCTION_SA):
        assert expected in summary


def test_function_deploy_flags(cloud: FakeCloud) -> None:
    result = cloud.deploy()
    assert result.returncode == 0, result.stderr
    (deploy,) = result.find("functions deploy")
    assert deploy.positionals() == ["workflows-callback-relay"]
    expected = {
        "gen2": True,
        "region": REGION,
        "project": PROJECT,
        "runtime": "python312",
        "source": str(REPO / "function"),
        "entry-point": "relay",
        "trigger-topic": "workflows-callback-relay",
        "retry": True,
        "service-account": FUNCTION_SA,
        "trigger-service-account": TRIGGER_SA,
        "memory": "512Mi",
        "cpu": "1",
        "concurrency": "8",
        "max-instances": "10",
        "timeout": "60s",
        "ingress-settings": "internal-only",
        "no-allow-unauthenticated": True,
        "build-service-account": f"projects/{PROJECT}/serviceAccounts/{BUILD_SA}",
    }
    for name, value in expected.items():
        assert deploy.flag(name) == value, name
    env = parse_env_vars(str(deploy.flag("set-env-vars")))
    assert env == {
        "ALLOWED_WORKFLOWS": (
            f"projects/{PROJECT}/locations/{REGION}/workflows/callback-relay-demo,"
            f"projects/{PROJECT_NUMBER}/locations/{REGION}/workflows/callback-relay-demo"
        ),
        "CALLBACK_RETRY_DEADLINE_SECONDS": "30",
        "CALLBACK_CONNECT_TIMEOUT_SECONDS": "5",
        "CALLBACK_READ_TIMEOUT_SECONDS": "15",
        "LOG_LEVEL": "INFO",
        "THREADS": "8",
    }


def test_flags_reach_the_function(cloud: FakeCloud) -> None:
    result = cloud.deploy(
        "--runtime=python313",
        "--concurrency",
        "16",
        "--cpu",
        "2",
        "--memory",
        "1Gi",
        "--max-instances",
        "3",
        "--timeout",
        "120",
        "--region",
        "europe-west1",
    )
    assert result.returncode == 0, result.stderr
    (deploy,) = result.find("functions deploy")
    assert deploy.flag("runtime") == "python313"
    assert deploy.flag("concurrency") == "16"
    assert parse_env_vars(str(deploy.flag("set-env-vars")))["THREADS"] == "16"
    assert deploy.flag("cpu") == "2"
    assert deploy.flag("memory") == "1Gi"
    assert deploy.flag("max-instances") == "3"
    assert deploy.flag("timeout") == "120s"
    assert deploy.flag("region") == "europe-west1"
    env = parse_env_vars(str(deploy.flag("set-env-vars")))
    assert "/locations/europe-west1/workflows/callback-relay-demo" in env["ALLOWED_WORKFLOWS"]


def test_grants_exactly_the_least_privilege_set(cloud: FakeCloud) -> None:
    result = cloud.deploy()
    assert result.returncode == 0, result.stderr
    assert all_bindings(cloud) == {
        # function: only workflows.callbacks.send, through the custom role
        (f"project:{PROJECT}", CUSTOM_ROLE, f"serviceAccount:{FUNCTION_SA}"),
        # workflow: publish to the relay topic only, and write logs
        (
            "topic:workflows-callback-relay",
            "roles/pubsub.publisher",
            f"serviceAccount:{WORKFLOW_SA}",
        ),
        (f"project:{PROJECT}", "roles/logging.logWriter", f"serviceAccount:{WORKFLOW_SA}"),
        # trigger: invoke this function's Cloud Run service only
        (
            "run_service:workflows-callback-relay",
            "roles/run.invoker",
            f"serviceAccount:{TRIGGER_SA}",
        ),
        # Pub/Sub service agent: dead-lettering (no Token Creator by default)
        ("topic:workflows-callback-relay-dead-letter", "roles/pubsub.publisher", PUBSUB_AGENT),
        (f"subscription:{EVENTARC_SUB}", "roles/pubsub.subscriber", PUBSUB_AGENT),
        # build: exactly the custom build service account roles
        (f"project:{PROJECT}", "roles/logging.logWriter", f"serviceAccount:{BUILD_SA}"),
        (f"project:{PROJECT}", "roles/artifactregistry.writer", f"serviceAccount:{BUILD_SA}"),
        (f"project:{PROJECT}", "roles/storage.objectViewer", f"serviceAccount:{BUILD_SA}"),
    }
    assert "roles/workflows.invoker" not in result.stdout + result.stderr


def test_legacy_token_creator_is_opt_in_on_the_trigger_account_only(cloud: FakeCloud) -> None:
    result = cloud.deploy("--legacy-token-creator")
    assert result.returncode == 0, result.stderr
    token_creators = {
        (resource, member)
        for resource, role, member in all_bindings(cloud)
        if role == "roles/iam.serviceAccountTokenCreator"
    }
    assert token_creators == {(f"service_account:{TRIGGER_SA}", PUBSUB_AGENT)}
    # The old opt-out flag still parses and means the default.
    skipped = cloud.deploy("--no-legacy-token-creator", "--dry-run")
    assert skipped.returncode == 0, skipped.stderr


def test_invoker_role_only_behind_its_flag_with_a_warning(cloud: FakeCloud) -> None:
    result = cloud.deploy("--use-invoker-role")
    assert result.returncode == 0, result.stderr
    assert "WARNING" in result.stderr
    assert "start and cancel every workflow" in result.stderr
    bindings = all_bindings(cloud)
    assert (
        f"project:{PROJECT}",
        "roles/workflows.invoker",
        f"serviceAccount:{FUNCTION_SA}",
    ) in bindings
    assert not any(role == CUSTOM_ROLE for _, role, _ in bindings)
    assert result.find("iam roles create") == []


def test_apis_enabled_only_when_missing(cloud: FakeCloud) -> None:
    cloud.write_state(
        {"config_project": PROJECT, "services": ["pubsub.googleapis.com", "compute.googleapis.com"]}
    )
    result = cloud.deploy()
    assert result.returncode == 0, result.stderr
    (enable,) = result.find("services enable")
    assert set(enable.positionals()) == REQUIRED_APIS - {"pubsub.googleapis.com"}


# -- idempotence ------------------------------------------------------------------


def test_rerun_changes_nothing(deployed: FakeCloud) -> None:
    before = deployed.read_state()
    result = deployed.deploy()
    assert result.returncode == 0, result.stderr
    assert result.mutating == [], [c.argv for c in result.mutating]
    assert deployed.read_state() == before
    assert "already granted" in result.stdout


def test_rerun_redeploys_only_what_changed(deployed: FakeCloud) -> None:
    result = deployed.deploy("--max-instances", "20")
    assert result.returncode == 0, result.stderr
    assert [c.command for c in result.mutating] == ["functions deploy"]


def test_force_redeploys_function_and_workflow(deployed: FakeCloud) -> None:
    result = deployed.deploy("--force")
    assert result.returncode == 0, result.stderr
    assert [c.command for c in result.mutating] == ["functions deploy", "workflows deploy"]


def _fail_function(state: dict[str, Any]) -> None:
    state["functions"]["workflows-callback-relay"]["state"] = "FAILED"


def _drop_dead_letter_policy(state: dict[str, Any]) -> None:
    del state["subscriptions"][EVENTARC_SUB]["deadLetterPolicy"]


def _shorten_ack_deadline(state: dict[str, Any]) -> None:
    state["subscriptions"][EVENTARC_SUB]["ackDeadlineSeconds"] = 10


def _delete_custom_role(state: dict[str, Any]) -> None:
    state["roles"]["workflowsCallbackSender"]["deleted"] = True


def _widen_custom_role(state: dict[str, Any]) -> None:
    state["roles"]["workflowsCallbackSender"]["includedPermissions"] = [
        "workflows.callbacks.send",
        "workflows.executions.create",
    ]


def _drop_dead_letter_grant(state: dict[str, Any]) -> None:
    key = "topic:workflows-callback-relay-dead-letter"
    state["iam"][key] = [b for b in state["iam"][key] if b[1] != PUBSUB_AGENT]


def _drop_build_role(state: dict[str, Any]) -> None:
    key = f"project:{PROJECT}"
    state["iam"][key].remove(["roles/artifactregistry.writer", f"serviceAccount:{BUILD_SA}"])


@pytest.mark.parametrize(
    ("damage", "repairs", "flag"),
    [
        pytest.param(_fail_function, ["functions deploy"], None, id="failed-function"),
        pytest.param(
            _drop_dead_letter_policy,
            ["pubsub subscriptions update"],
            (
                "dead-letter-topic",
                f"projects/{PROJECT}/topics/workflows-callback-relay-dead-letter",
            ),
            id="dead-letter-policy-removed",
        ),
        pytest.param(
            _shorten_ack_deadline,
            ["pubsub subscriptions update"],
            ("ack-deadline", "60"),
            id="ack-deadline-too-short",
        ),
        pytest.param(_delete_custom_role, ["iam roles undelete"], None, id="custom-role-deleted"),
        pytest.param(
            _widen_custom_role,
            ["iam roles update"],
            ("permissions", "workflows.callbacks.send"),
            id="custom-role-widened",
        ),
        pytest.param(
            _drop_dead_letter_grant,
            ["pubsub topics add-iam-policy-binding"],
            ("member", PUBSUB_AGENT),
            id="dead-letter-grant-removed",
        ),
        pytest.param(
            _drop_build_role,
            ["projects add-iam-policy-binding"],
            ("role", "roles/artifactregistry.writer"),
            id="build-role-removed",
        ),
    ],
)
def test_rerun_repairs_exactly_what_was_damaged(
    deployed: FakeCloud,
    damage: Any,
    repairs: list[str],
    flag: tuple[str, str] | None,
) -> None:
    before = deployed.read_state()
    state = deployed.read_state()
    damage(state)
    deployed.write_state(state)
    result = deployed.deploy()
    assert result.returncode == 0, result.stderr
    assert [c.command for c in result.mutating] == repairs
    if flag is not None:
        assert result.mutating[0].flag(flag[0]) == flag[1]
    after = deployed.read_state()
    if damage is not _fail_function:  # a redeploy relabels nothing else
        assert normalized(after) == normalized(before)
    # The function redeploy keeps its trigger: same subscription, same policy.
    assert after["subscriptions"][EVENTARC_SUB] == before["subscriptions"][EVENTARC_SUB]


# -- dry run ----------------------------------------------------------------------


def test_dry_run_changes_nothing_and_prints_every_change(cloud: FakeCloud) -> None:
    before = cloud.read_state()
    result = cloud.deploy("--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.mutating == []
    assert cloud.read_state() == before
    printed = [" ".join(argv) for argv in result.dry_run_argvs()]
    for command in (
        "services enable",
        "pubsub topics create",
        "pubsub subscriptions create",
        "iam service-accounts create callback-relay-build",
        "iam roles create",
        "projects add-iam-policy-binding",
        "functions deploy workflows-callback-relay",
        "run services add-iam-policy-binding",
        "pubsub subscriptions update",
        "workflows deploy callback-relay-demo",
    ):
        assert any(line.startswith(command) for line in printed), command
    assert "Dry run finished: nothing was changed" in result.stdout


def test_dry_run_of_a_deployed_project_prints_nothing_to_do(deployed: FakeCloud) -> None:
    result = deployed.deploy("--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.dry_run_argvs() == []
    assert result.mutating == []


# -- failure halfway --------------------------------------------------------------


def test_failure_halfway_stops_with_step_and_hint(cloud: FakeCloud) -> None:
    result = cloud.deploy(fail="functions deploy")
    assert result.returncode != 0
    assert 'FAILED at step "Deploy the function workflows-callback-relay"' in result.stderr
    assert "Hint:" in result.stderr
    assert "Build failed" in result.stderr
    commands = result.commands()
    assert commands[-1] == "functions deploy"  # nothing after the failing step
    assert "workflows deploy" not in commands
    # What was done before stays; the next run finishes the job without redoing it.
    resumed = cloud.deploy()
    assert resumed.returncode == 0, resumed.stderr
    done_before = {"pubsub topics create", "iam service-accounts create", "iam roles create"}
    assert not done_before & {c.command for c in resumed.mutating}
    assert "functions deploy" in resumed.commands()


def test_failure_in_a_lookup_names_the_step(deployed: FakeCloud) -> None:
    result = deployed.deploy(fail="eventarc triggers describe")
    assert result.returncode != 0
    assert 'FAILED at step "Configure the trigger\'s subscription"' in result.stderr
    assert "gcloud eventarc triggers describe" in result.stderr
    assert result.mutating == []


# -- destroy ----------------------------------------------------------------------


def test_destroy_with_yes_removes_what_deploy_created(deployed: FakeCloud) -> None:
    result = deployed.deploy("--destroy", "--yes")
    assert result.returncode == 0, result.stderr
    state = deployed.read_state()
    assert state["topics"] == {}
    assert state["subscriptions"] == {}
    assert state["service_accounts"] == {}
    assert state["functions"] == {}
    assert state["run_services"] == {}
    assert state["workflows"] == {}
    assert state["roles"]["workflowsCallbackSender"]["deleted"] is True
    assert all_bindings(deployed) == set()
    # Destroying again is harmless, and deploying again brings it all back.
    again = deployed.deploy("--destroy", "--yes")
    assert again.returncode == 0, again.stderr
    assert again.mutating == []
    redeployed = deployed.deploy()
    assert redeployed.returncode == 0, redeployed.stderr
    assert "iam roles undelete" in redeployed.commands()


def test_destroy_refuses_without_yes_when_stdin_is_not_a_tty(deployed: FakeCloud) -> None:
    before = deployed.read_state()
    result = deployed.deploy("--destroy", stdin=subprocess.DEVNULL)
    assert result.returncode != 0
    assert "--yes" in result.stderr
    assert result.mutating == []
    assert deployed.read_state() == before


def test_destroy_dry_run_deletes_nothing(deployed: FakeCloud) -> None:
    before = deployed.read_state()
    result = deployed.deploy("--destroy", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.mutating == []
    assert deployed.read_state() == before
    printed = {" ".join(argv[:3]) for argv in result.dry_run_argvs()}
    assert "functions delete workflows-callback-relay" in printed
    assert "workflows delete callback-relay-demo" in printed
