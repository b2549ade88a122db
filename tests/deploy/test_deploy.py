"""deploy.sh against a fake gcloud: a fresh project, input checks, re-runs and repairs,
a first run while IAM propagates, dry run, failure halfway, destroy.

The fake (fake_gcloud.py) keeps the project's state (resources, IAM policies,
waiting messages) and records every call, so these tests check what deploy.sh
leaves behind, and that it converges: a second run makes no change at all.
Production flags, convergence of grants, --status, the move from Eventarc and
--iam=print are in test_deploy_production.py.
"""

from __future__ import annotations

import copy
import subprocess
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
    PROJECT,
    PROJECT_NUMBER,
    PUBSUB_AGENT,
    PUSH_SA,
    PUSH_SUB,
    REGION,
    RELAY_TOPIC,
    REPO,
    REQUIRED_APIS,
    WORKFLOW_SA,
    FakeCloud,
    Result,
    bindings,
    parse_env_vars,
    project_roles,
)

APP = "workflows-callback-relay"
REPOSITORY_KEY = f"{REGION}/workflows-callback-relay"


@pytest.fixture
def cloud(tmp_path: Path) -> FakeCloud:
    return FakeCloud(tmp_path)


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, dict[str, Any]]:
    """One deploy to a fresh project, and the state it left (computed once: a fresh
    deploy is the costliest run, and several tests read the same one)."""
    cloud = FakeCloud(tmp_path_factory.mktemp("deployed"))
    result = cloud.deploy()
    assert result.returncode == 0, result.stderr
    return result, cloud.read_state()


@pytest.fixture(scope="module")
def deployed_state(fresh_run: tuple[Result, dict[str, Any]]) -> dict[str, Any]:
    """The state of a project after one successful deploy."""
    return fresh_run[1]


@pytest.fixture
def deployed(tmp_path: Path, deployed_state: dict[str, Any]) -> FakeCloud:
    return FakeCloud(tmp_path, copy.deepcopy(deployed_state))


def normalized(state: dict[str, Any]) -> dict[str, Any]:
    """State with IAM bindings in a fixed order (a binding is a set member)."""
    return {**state, "iam": {key: sorted(value) for key, value in state["iam"].items()}}


# -- command line ---------------------------------------------------------------


def test_help_lists_every_option(cloud: FakeCloud) -> None:
    result = cloud.deploy("--help")
    assert result.returncode == 0
    for option in (
        "--project",
        "--region",
        "--dry-run",
        "--destroy",
        "--delete-images",
        "--yes",
        "--use-invoker-role",
        "--allowed-workflows LIST",
        "--publisher MEMBER",
        "--skip-demo-workflow",
        "--with-http-function",
        "--http-invoker MEMBER",
        "--alert-channel CHANNEL",
        "--legacy-token-creator",
        "--keep-images N",
        "--status",
        "--iam=print",
        # Organisation policies, each with the policy that asks for it.
        "--kms-key KEY",
        "constraints/gcp.restrictNonCmekServices",
        "--topic-kms-key KEY",
        "--docker-repository REPO",
        "--vpc-connector CONNECTOR",
        "--egress-settings SETTING",
        "--build-worker-pool POOL",
        "constraints/cloudbuild.allowedWorkerPools",
        # Keyed waits.
        "--with-events",
        "--event-topic TOPIC=TEMPLATE",
        "--event-bucket BUCKET",
        "FIRESTORE_DATABASE",
        "EVENT_TTL_SECONDS",
    ):
        assert option in result.stdout, option
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
    ("args", "env", "message"),
    [
        (["--timeout", "50"], {}, "must exceed"),
        (["--timeout", "600"], {}, "1-540"),
        (["--concurrency", "4", "--cpu", "0.5"], {}, "needs --cpu 1 or more"),
        (["--concurrency", "4", "--cpu", "500m"], {}, "needs --cpu 1 or more"),
        (["--runtime", "python311"], {}, "python312 or newer"),
        (["--max-delivery-attempts", "3"], {}, "5-100"),
        (["--memory", "512"], {}, "--memory '512' is not valid"),
        # Values pasted into --set-env-vars, whose '@' separates variables.
        ([], {"LOG_LEVEL": "INFO@WORKFLOWS_EMULATOR_HOST=127.0.0.9:80"}, "LOG_LEVEL must be"),
        ([], {"WORKFLOW_NAME": "demo@WORKFLOWS_EMULATOR_HOST=x"}, "WORKFLOW_NAME"),
        ([], {"WORKFLOW_NAME": "demo,projects/*/locations/*/workflows/*"}, "WORKFLOW_NAME"),
        ([], {"CALLBACK_READ_TIMEOUT_SECONDS": "15@X=1"}, "CALLBACK_READ_TIMEOUT_SECONDS"),
        # Names that reach commands, URLs and filters.
        ([], {"RELAY_TOPIC": 'relay" OR x'}, "RELAY_TOPIC"),
        ([], {"FUNCTION_NAME": "Relay_Fn"}, "FUNCTION_NAME"),
        ([], {"PUSH_SA_NAME": "x"}, "PUSH_SA_NAME"),
        ([], {"DEAD_LETTER_RETENTION": "forever"}, "DEAD_LETTER_RETENTION"),
        (["--max-instances", "1e3"], {}, "whole number"),
        (["--iam", "maybe"], {}, "--iam must be apply or print"),
        (["--kms-key", "my-key"], {}, "KMS_KEY 'my-key' is not valid"),
        (["--egress-settings", "all"], {}, "needs --vpc-connector"),
        (["--build-worker-pool", "pool"], {}, "workerPools"),
    ],
)
def test_bad_input_is_refused_before_any_change(
    cloud: FakeCloud, args: list[str], env: dict[str, str], message: str
) -> None:
    result = cloud.deploy(*args, env=env)
    assert result.returncode != 0
    assert message in result.stderr
    # At most the project from gcloud's configuration was read.
    assert result.commands() in ([], ["config get-value"])


def test_a_domain_scoped_project_is_refused_with_the_reason(cloud: FakeCloud) -> None:
    result = cloud.deploy("--project", "example.com:relay-project")
    assert result.returncode != 0
    assert "domain-scoped project id" in result.stderr
    assert "service account emails" in result.stderr
    assert result.calls == []


def test_numbers_are_decimal_never_octal(cloud: FakeCloud) -> None:
    # bash reads 060 as octal 48 (an ack deadline under the timeout) and 08 as an error.
    result = cloud.deploy("--timeout", "060", "--max-delivery-attempts", "010")
    assert result.returncode == 0, result.stderr
    state = cloud.read_state()
    assert state["functions"][FUNCTION_KEY]["serviceConfig"]["timeoutSeconds"] == 60
    push = state["subscriptions"][PUSH_SUB]
    assert push["ackDeadlineSeconds"] == 60
    assert push["deadLetterPolicy"]["maxDeliveryAttempts"] == 10
    refused = cloud.deploy("--timeout", "08")
    assert refused.returncode != 0
    assert "--timeout 8s must exceed" in refused.stderr


def test_timeout_check_follows_callback_settings(cloud: FakeCloud) -> None:
    env = {"CALLBACK_RETRY_DEADLINE_SECONDS": "100"}
    refused = cloud.deploy("--dry-run", env=env)
    assert refused.returncode != 0
    assert "= 120s" in refused.stderr
    accepted = cloud.deploy("--dry-run", "--timeout", "121", env=env)
    assert accepted.returncode == 0, accepted.stderr


# -- a fresh project --------------------------------------------------------------


def test_fresh_project_creates_everything(fresh_run: tuple[Result, dict[str, Any]]) -> None:
    result, state = fresh_run

    assert set(state["services"]) == REQUIRED_APIS
    assert PUBSUB_AGENT.split(":")[1] in state["service_agents"]
    assert set(state["service_accounts"]) == {FUNCTION_SA, PUSH_SA, WORKFLOW_SA, BUILD_SA}
    assert state["roles"]["workflowsCallbackSender"]["includedPermissions"] == [
        "workflows.callbacks.send"
    ]
    dead_letter_sub = state["subscriptions"][DEAD_LETTER_SUB]
    assert dead_letter_sub["topic"].endswith(f"/topics/{DEAD_LETTER_TOPIC}")
    assert dead_letter_sub["expirationPolicy"] == {}  # never expires
    assert dead_letter_sub["messageRetentionDuration"] == "604800s"

    # The function: HTTP-triggered, internal, IAM only; no Eventarc trigger.
    function = state["functions"][FUNCTION_KEY]
    assert "eventTrigger" not in function
    assert state["triggers"] == {}
    assert function["serviceConfig"]["ingressSettings"] == "ALLOW_INTERNAL_ONLY"
    assert function["buildConfig"]["dockerRepository"] == (
        f"projects/{PROJECT}/locations/{REGION}/repositories/workflows-callback-relay"
    )

    # The push subscription deploy.sh owns: the topic's name as the endpoint's path,
    # OIDC as the push account for the service's URL, dead letters, retries, no expiry.
    push = state["subscriptions"][PUSH_SUB]
    assert push["topic"] == f"projects/{PROJECT}/topics/{RELAY_TOPIC}"
    assert push["pushConfig"] == {
        "pushEndpoint": f"{FUNCTION_URI}/projects/{PROJECT}/topics/{RELAY_TOPIC}",
        "oidcToken": {"serviceAccountEmail": PUSH_SA, "audience": FUNCTION_URI},
    }
    assert push["deadLetterPolicy"] == {
        "deadLetterTopic": f"projects/{PROJECT}/topics/{DEAD_LETTER_TOPIC}",
        "maxDeliveryAttempts": 10,
    }
    assert push["retryPolicy"] == {"minimumBackoff": "10s", "maximumBackoff": "600s"}
    assert push["ackDeadlineSeconds"] == 60  # the push's timeout: the function's 60 s
    assert push["expirationPolicy"] == {}

    # Images in a repository of this deployment's own, the newest 5 kept.
    repository = state["repositories"][REPOSITORY_KEY]
    assert repository["cleanupPolicies"]["keep-newest"]["mostRecentVersions"] == {"keepCount": 5}
    assert repository["cleanupPolicies"]["delete-older"]["action"] == "DELETE"

    # The relay's outcomes as a metric, labelled by outcome.
    metric = state["log_metrics"]["workflows-callback-relay-outcomes"]
    assert metric["labelExtractors"] == {"outcome": "EXTRACT(jsonPayload.outcome)"}
    assert 'resource.labels.service_name="workflows-callback-relay"' in metric["filter"]

    workflow = state["workflows"][f"{REGION}/callback-relay-demo"]
    assert workflow["serviceAccount"] == f"projects/{PROJECT}/serviceAccounts/{WORKFLOW_SA}"
    assert workflow["userEnvVars"] == {"RELAY_TOPIC": RELAY_TOPIC}

    # Ends with how to start an execution and where the logs are.
    tail = result.stdout[result.stdout.index("Deployed.") :]
    assert f"gcloud workflows run callback-relay-demo --location={REGION}" in tail
    assert "gcloud functions logs read workflows-callback-relay" in tail
    assert "tools.replay_dead_letters" in tail


def test_every_resource_that_takes_labels_has_them(cloud: FakeCloud) -> None:
    assert cloud.deploy("--with-http-function").returncode == 0
    state = cloud.read_state()
    labelled = [
        ("topic relay", state["topics"][RELAY_TOPIC]["labels"], "relay-topic"),
        ("topic dead-letter", state["topics"][DEAD_LETTER_TOPIC]["labels"], "dead-letter-topic"),
        ("push subscription", state["subscriptions"][PUSH_SUB]["labels"], "push-subscription"),
        (
            "dead-letter subscription",
            state["subscriptions"][DEAD_LETTER_SUB]["labels"],
            "dead-letter-subscription",
        ),
        ("function", state["functions"][FUNCTION_KEY]["labels"], "function"),
        (
            "HTTP function",
            state["functions"][f"{REGION}/workflows-callback-relay-http"]["labels"],
            "http-function",
        ),
        ("repository", state["repositories"][REPOSITORY_KEY]["labels"], "images"),
        ("workflow", state["workflows"][f"{REGION}/callback-relay-demo"]["labels"], "workflow"),
    ]
    for what, labels, component in labelled:
        assert (labels.get("app"), labels.get("component")) == (APP, component), what


def test_summary_is_printed_before_any_change(fresh_run: tuple[Result, dict[str, Any]]) -> None:
    result, _ = fresh_run
    summary = result.stdout[: result.stdout.index("==> [1]")]
    for expected in (PROJECT, REGION, DEAD_LETTER_TOPIC, FUNCTION_SA, PUSH_SUB):
        assert expected in summary


def test_function_deploy_flags(fresh_run: tuple[Result, dict[str, Any]]) -> None:
    result, _ = fresh_run
    (deploy,) = result.find("functions deploy")
    assert deploy.positionals() == ["workflows-callback-relay"]
    expected = {
        "gen2": True,
        "region": REGION,
        "project": PROJECT,
        "runtime": "python312",
        "source": str(REPO / "function"),
        "entry-point": "relay",
        "trigger-http": True,
        "service-account": FUNCTION_SA,
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
    for name in ("trigger-topic", "retry", "trigger-service-account", "allow-unauthenticated"):
        assert deploy.flag(name) is None, name
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
    assert cloud.read_state()["subscriptions"][PUSH_SUB]["ackDeadlineSeconds"] == 120


def test_grants_exactly_the_least_privilege_set(fresh_run: tuple[Result, dict[str, Any]]) -> None:
    result, state = fresh_run
    assert bindings(state) == {
        # function: only workflows.callbacks.send, through the custom role
        (f"project:{PROJECT}", CUSTOM_ROLE, f"serviceAccount:{FUNCTION_SA}"),
        # workflow: publish to the relay topic only, and write logs
        (f"topic:{RELAY_TOPIC}", "roles/pubsub.publisher", f"serviceAccount:{WORKFLOW_SA}"),
        (f"project:{PROJECT}", "roles/logging.logWriter", f"serviceAccount:{WORKFLOW_SA}"),
        # push: invoke this function's Cloud Run service only
        (f"run_service:{FUNCTION_KEY}", "roles/run.invoker", f"serviceAccount:{PUSH_SA}"),
        # Pub/Sub service agent: dead-lettering (no Token Creator by default)
        (f"topic:{DEAD_LETTER_TOPIC}", "roles/pubsub.publisher", PUBSUB_AGENT),
        (f"subscription:{PUSH_SUB}", "roles/pubsub.subscriber", PUBSUB_AGENT),
        # build: the one role Google recommends for a function's build account
        (f"project:{PROJECT}", "roles/run.builder", f"serviceAccount:{BUILD_SA}"),
    }
    assert "roles/workflows.invoker" not in result.stdout + result.stderr


def test_legacy_token_creator_is_opt_in_on_the_push_account_only(cloud: FakeCloud) -> None:
    result = cloud.deploy("--legacy-token-creator")
    assert result.returncode == 0, result.stderr
    token_creators = {
        (resource, member)
        for resource, role, member in bindings(cloud.read_state())
        if role == "roles/iam.serviceAccountTokenCreator"
    }
    assert token_creators == {(f"service_account:{PUSH_SA}", PUBSUB_AGENT)}
    # Turned off again, the grant goes: the opt-out flag is the default.
    dropped = cloud.deploy("--no-legacy-token-creator")
    assert dropped.returncode == 0, dropped.stderr
    assert [c.command for c in dropped.mutating] == [
        "iam service-accounts remove-iam-policy-binding"
    ]
    assert not any(
        role == "roles/iam.serviceAccountTokenCreator"
        for _, role, _ in bindings(cloud.read_state())
    )


def test_invoker_role_only_behind_its_flag_and_gone_without_it(cloud: FakeCloud) -> None:
    result = cloud.deploy("--use-invoker-role")
    assert result.returncode == 0, result.stderr
    assert "start and cancel every workflow" in result.stderr
    member = f"serviceAccount:{FUNCTION_SA}"
    assert project_roles(cloud.read_state(), member) == {"roles/workflows.invoker"}
    assert result.find("iam roles create") == []
    # Back to the default: the custom role, and the broad role removed.
    back = cloud.deploy()
    assert back.returncode == 0, back.stderr
    assert project_roles(cloud.read_state(), member) == {CUSTOM_ROLE}


def test_apis_enabled_only_when_missing(cloud: FakeCloud) -> None:
    cloud.write_state(
        {"config_project": PROJECT, "services": ["pubsub.googleapis.com", "compute.googleapis.com"]}
    )
    result = cloud.deploy()
    assert result.returncode == 0, result.stderr
    (enable,) = result.find("services enable")
    assert set(enable.positionals()) == REQUIRED_APIS - {"pubsub.googleapis.com"}


# -- a first run while IAM and service agents propagate ------------------------------

ACT_AS = (
    "ERROR: (gcloud.functions.deploy) ResponseError: status=[403], code=[Ok], "
    "message=[Caller is missing permission 'iam.serviceaccounts.actAs' on service account "
    f"projects/-/serviceAccounts/{FUNCTION_SA}.]"
)
NO_BUILD_PERMISSION = (
    "ERROR: (gcloud.functions.deploy) OperationError: code=9, message=Could not build the "
    "function due to a missing permission on the build service account."
)
NEW_ACCOUNT = (
    "ERROR: (gcloud.projects.add-iam-policy-binding) INVALID_ARGUMENT: Service account "
    f"{BUILD_SA} does not exist."
)
NEW_AGENT = (
    "ERROR: (gcloud.pubsub.topics.add-iam-policy-binding) INVALID_ARGUMENT: Service account "
    f"{PUBSUB_AGENT.split(':')[1]} does not exist."
)
PUSH_ACT_AS = (
    "ERROR: (gcloud.pubsub.subscriptions.create) PERMISSION_DENIED: User not authorized to "
    f"perform this action: iam.serviceAccounts.actAs on {PUSH_SA}"
)


def test_a_new_project_first_run_waits_out_propagation(cloud: FakeCloud) -> None:
    cloud.write_state(
        {
            "config_project": PROJECT,
            "transient": {
                "functions deploy": [ACT_AS, NO_BUILD_PERMISSION, NO_BUILD_PERMISSION],
                "projects add-iam-policy-binding": [NEW_ACCOUNT, NEW_ACCOUNT],
                "pubsub topics add-iam-policy-binding": [NEW_AGENT],
                "pubsub subscriptions create": [PUSH_ACT_AS],
            },
        }
    )
    result = cloud.deploy()
    assert result.returncode == 0, result.stdout + result.stderr
    state = cloud.read_state()
    assert state["transient"] == {
        "functions deploy": [],
        "projects add-iam-policy-binding": [],
        "pubsub topics add-iam-policy-binding": [],
        "pubsub subscriptions create": [],
    }
    assert "eventTrigger" not in state["functions"][FUNCTION_KEY]
    assert PUSH_SUB in state["subscriptions"]
    # A line each time it waits, and waits that grow, none actually waited out here.
    progress = [line for line in result.stdout.splitlines() if "waiting for IAM" in line]
    assert len(progress) == 7
    assert sum("iam.serviceaccounts.actAs" in line for line in progress) == 1
    assert sum("actAs on callback-relay-push" in line for line in progress) == 1
    assert all("(ERROR: (gcloud." in line for line in progress)
    # Each step's waits grow: two grants (10, 20), the push subscription (10), the
    # agent's grant (10), the function (10, 20, 40).
    assert sorted(result.sleeps) == [10, 10, 10, 10, 20, 20, 40]
    assert all(sum(result.sleeps[:i]) < 600 for i in range(len(result.sleeps)))
    # And the next run has nothing left to do.
    again = cloud.deploy()
    assert again.mutating == [], [c.argv for c in again.mutating]


def test_propagation_that_outlasts_ten_minutes_fails_clearly(cloud: FakeCloud) -> None:
    cloud.write_state({"config_project": PROJECT, "transient": {"functions deploy": [ACT_AS] * 30}})
    result = cloud.deploy()
    assert result.returncode != 0
    assert 'FAILED at step "Deploy the function workflows-callback-relay"' in result.stderr
    assert "still failing after" in result.stderr
    assert "access-change-propagation" in result.stderr
    assert sum(result.sleeps) <= 600
    assert sum(result.sleeps) > 600 - 60  # it did wait about the whole budget
    assert "iam.serviceaccounts.actAs" in result.stderr


def test_propagation_budget_is_settable(cloud: FakeCloud) -> None:
    cloud.write_state({"config_project": PROJECT, "transient": {"functions deploy": [ACT_AS] * 5}})
    result = cloud.deploy(env={"PROPAGATION_TIMEOUT": "30"})
    assert result.returncode != 0
    assert result.sleeps == [10, 20]


def test_other_errors_fail_at_once(cloud: FakeCloud) -> None:
    # A --publisher that does not exist is a mistake, not propagation: no retry.
    result = cloud.deploy("--publisher", f"serviceAccount:typo@{PROJECT}.iam.gserviceaccount.com")
    assert result.returncode != 0
    assert "typo@" in result.stderr
    assert result.sleeps == []
    built = cloud.deploy(fail="functions deploy")
    assert built.returncode != 0
    assert built.sleeps == []


def test_without_the_service_agent_the_dead_letter_grant_fails(cloud: FakeCloud) -> None:
    # What deploy.sh's `services identity create` prevents: a new project has no
    # Pub/Sub service agent, and a grant to it fails.
    cloud.write_state({"config_project": PROJECT, "services": sorted(REQUIRED_APIS)})
    state = cloud.read_state()
    assert state["service_agents"] == []
    result = cloud.deploy()
    assert result.returncode == 0, result.stderr
    (identity,) = result.find("beta services identity create")
    assert identity.flag("service") == "pubsub.googleapis.com"
    # Created before the first grant to the agent.
    commands = result.commands()
    first_grant = next(i for i, c in enumerate(result.calls) if c.flag("member") == PUBSUB_AGENT)
    assert commands.index("beta services identity create") < first_grant


# -- idempotence ------------------------------------------------------------------


def test_rerun_changes_nothing(deployed: FakeCloud) -> None:
    before = deployed.read_state()
    result = deployed.deploy()
    assert result.returncode == 0, result.stderr
    assert result.mutating == [], [c.argv for c in result.mutating]
    assert deployed.read_state() == before


def test_rerun_redeploys_only_what_changed(deployed: FakeCloud) -> None:
    result = deployed.deploy("--max-instances", "20")
    assert result.returncode == 0, result.stderr
    assert [c.command for c in result.mutating] == ["functions deploy"]


def test_force_redeploys_function_and_workflow(deployed: FakeCloud) -> None:
    result = deployed.deploy("--force")
    assert result.returncode == 0, result.stderr
    assert [c.command for c in result.mutating] == ["functions deploy", "workflows deploy"]


def _function(state: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = state["functions"][FUNCTION_KEY]
    return function


def _push(state: dict[str, Any]) -> dict[str, Any]:
    push: dict[str, Any] = state["subscriptions"][PUSH_SUB]
    return push


def _fail_function(state: dict[str, Any]) -> None:
    _function(state)["state"] = "FAILED"


def _drop_dead_letter_policy(state: dict[str, Any]) -> None:
    del _push(state)["deadLetterPolicy"]


def _shorten_ack_deadline(state: dict[str, Any]) -> None:
    _push(state)["ackDeadlineSeconds"] = 10


def _let_it_expire(state: dict[str, Any]) -> None:
    _push(state)["expirationPolicy"] = {"ttl": "2678400s"}


def _push_elsewhere(state: dict[str, Any]) -> None:
    _push(state)["pushConfig"]["pushEndpoint"] = "https://attacker.example.com/"


def _push_as_another_account(state: dict[str, Any]) -> None:
    _push(state)["pushConfig"]["oidcToken"]["serviceAccountEmail"] = FUNCTION_SA


def _delete_custom_role(state: dict[str, Any]) -> None:
    state["roles"]["workflowsCallbackSender"]["deleted"] = True


def _widen_custom_role(state: dict[str, Any]) -> None:
    state["roles"]["workflowsCallbackSender"]["includedPermissions"] = [
        "workflows.callbacks.send",
        "workflows.executions.create",
    ]


def _drop_dead_letter_grant(state: dict[str, Any]) -> None:
    key = f"topic:{DEAD_LETTER_TOPIC}"
    state["iam"][key] = [b for b in state["iam"][key] if b[1] != PUBSUB_AGENT]


def _drop_build_role(state: dict[str, Any]) -> None:
    state["iam"][f"project:{PROJECT}"].remove(["roles/run.builder", f"serviceAccount:{BUILD_SA}"])


def _strip_topic_labels(state: dict[str, Any]) -> None:
    state["topics"][RELAY_TOPIC]["labels"] = {}


def _drop_cleanup_policy(state: dict[str, Any]) -> None:
    state["repositories"][REPOSITORY_KEY]["cleanupPolicies"] = {}


@pytest.mark.parametrize(
    ("damage", "repairs", "flag"),
    [
        pytest.param(_fail_function, ["functions deploy"], None, id="failed-function"),
        pytest.param(
            _drop_dead_letter_policy,
            ["pubsub subscriptions update"],
            ("dead-letter-topic", f"projects/{PROJECT}/topics/{DEAD_LETTER_TOPIC}"),
            id="dead-letter-policy-removed",
        ),
        pytest.param(
            _shorten_ack_deadline,
            ["pubsub subscriptions update"],
            ("ack-deadline", "60"),
            id="ack-deadline-too-short",
        ),
        pytest.param(
            _let_it_expire,
            ["pubsub subscriptions update"],
            ("expiration-period", "never"),
            id="push-subscription-expires",
        ),
        pytest.param(
            _push_elsewhere,
            ["pubsub subscriptions update"],
            ("push-endpoint", f"{FUNCTION_URI}/projects/{PROJECT}/topics/{RELAY_TOPIC}"),
            id="push-endpoint-changed",
        ),
        pytest.param(
            _push_as_another_account,
            ["pubsub subscriptions update"],
            ("push-auth-service-account", PUSH_SA),
            id="push-account-changed",
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
            ("role", "roles/run.builder"),
            id="build-role-removed",
        ),
        pytest.param(
            _strip_topic_labels,
            ["pubsub topics update"],
            ("update-labels", "app=workflows-callback-relay,component=relay-topic"),
            id="topic-labels-removed",
        ),
        pytest.param(
            _drop_cleanup_policy,
            ["artifacts repositories set-cleanup-policies"],
            None,
            id="cleanup-policy-removed",
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
        "beta services identity create",
        "pubsub topics create",
        "pubsub subscriptions create workflows-callback-relay-dead-letter-sub",
        "artifacts repositories create",
        "iam service-accounts create callback-relay-build",
        "iam roles create",
        "projects add-iam-policy-binding",
        "functions deploy workflows-callback-relay",
        "run services add-iam-policy-binding",
        "pubsub subscriptions create workflows-callback-relay-push",
        "logging metrics create",
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
    result = deployed.deploy(fail="pubsub subscriptions describe")
    assert result.returncode != 0
    assert 'FAILED at step "Create the dead-letter subscription"' in result.stderr
    assert "gcloud pubsub subscriptions describe" in result.stderr
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
    assert state["log_metrics"] == {}
    assert state["roles"]["workflowsCallbackSender"]["deleted"] is True
    assert bindings(state) == set()
    # The images stay unless asked for.
    assert REPOSITORY_KEY in state["repositories"]
    assert "--destroy --delete-images deletes them" in result.stdout
    # Destroying again is harmless, and deploying again brings it all back.
    again = deployed.deploy("--destroy", "--yes")
    assert again.returncode == 0, again.stderr
    assert again.mutating == []
    redeployed = deployed.deploy()
    assert redeployed.returncode == 0, redeployed.stderr
    assert "iam roles undelete" in redeployed.commands()


def test_destroy_deletes_the_images_on_request(deployed: FakeCloud) -> None:
    result = deployed.deploy("--destroy", "--yes", "--delete-images")
    assert result.returncode == 0, result.stderr
    assert deployed.read_state()["repositories"] == {}


def test_destroy_warns_about_messages_still_queued(deployed: FakeCloud) -> None:
    state = deployed.read_state()
    state["subscriptions"][PUSH_SUB]["messages"] = ["m1", "m2"]
    state["subscriptions"][DEAD_LETTER_SUB]["messages"] = ["d1"]
    deployed.write_state(state)
    result = deployed.deploy("--destroy", "--yes")
    assert result.returncode == 0, result.stderr
    assert f"2 message(s) still wait on {PUSH_SUB}: deleting it loses them" in result.stderr
    assert f"1 message(s) still wait on {DEAD_LETTER_SUB}" in result.stderr
    assert "tools.replay_dead_letters" in result.stderr
    # Said before anything was deleted.
    first_delete = next(i for i, c in enumerate(result.calls) if c.mutating)
    assert any(c.command == "curl" for c in result.calls[:first_delete])


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
    assert "pubsub subscriptions delete" in printed
