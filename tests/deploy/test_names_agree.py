"""deploy.sh, workflow.yaml and the function's config agree on names.

Reads all three: the relay topic the workflow publishes to by default is the
one deploy.sh creates and pushes to the function; the workflow reads the
RELAY_TOPIC deploy.sh sets; every variable deploy.sh gives the function is one
callback_relay.config reads, with values it accepts; the defaults agree.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from callback_relay import config
from callback_relay.errors import ConfigError
from tests.deploy.deploy_runner import DEPLOY_SH, PROJECT, PROJECT_NUMBER, REGION, REPO, FakeCloud
from tests.deploy.deploy_runner import parse_env_vars as parse_gcloud_env_vars

WORKFLOW_YAML = REPO / "workflow.yaml"
CONFIG_PY = REPO / "function" / "callback_relay" / "config.py"
MAIN_PY = REPO / "function" / "main.py"
# The fixed names: the contract between workflow.yaml, deploy.sh and the
# relay, as the README and docs/deploy.md give them to users.
RELAY_TOPIC = "workflows-callback-relay"
WORKFLOW = "callback-relay-demo"
FUNCTION_ENV_VARS = {
    "ALLOWED_WORKFLOWS",
    "CALLBACK_RETRY_DEADLINE_SECONDS",
    "CALLBACK_CONNECT_TIMEOUT_SECONDS",
    "CALLBACK_READ_TIMEOUT_SECONDS",
    "LOG_LEVEL",
    "THREADS",
}


def deploy_default(name: str) -> str:
    text = DEPLOY_SH.read_text(encoding="utf-8")
    match = re.search(rf'^{name}="\$\{{{name}:-([^}}]*)\}}"$', text, re.MULTILINE)
    assert match, f"deploy.sh has no default for {name}"
    return match.group(1)


@pytest.fixture(scope="module")
def deploy_argv(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    cloud = FakeCloud(tmp_path_factory.mktemp("names"))
    result = cloud.deploy("--with-http-function")
    assert result.returncode == 0, result.stderr
    function, http_function = result.find("functions deploy")
    (workflow,) = result.find("workflows deploy")
    (push,) = [c for c in result.find("pubsub subscriptions create") if c.flag("push-endpoint")]
    return {
        "function": function.argv,
        "http_function": http_function.argv,
        "workflow": workflow.argv,
        "push_subscription": push.argv,
    }


def flag(argv: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
    assert len(values) == 1, (name, argv)
    return values[0]


def test_resource_name_defaults() -> None:
    assert deploy_default("RELAY_TOPIC") == RELAY_TOPIC
    assert deploy_default("DEAD_LETTER_TOPIC") == f"{RELAY_TOPIC}-dead-letter"
    assert deploy_default("DEAD_LETTER_SUBSCRIPTION") == f"{RELAY_TOPIC}-dead-letter-sub"
    assert deploy_default("FUNCTION_NAME") == "workflows-callback-relay"
    assert deploy_default("WORKFLOW_NAME") == WORKFLOW
    assert deploy_default("FUNCTION_SA_NAME") == "callback-relay-fn"
    assert deploy_default("PUSH_SA_NAME") == "callback-relay-push"
    assert deploy_default("PUSH_SUBSCRIPTION") == f"{RELAY_TOPIC}-push"
    assert deploy_default("LEGACY_TRIGGER_SA_NAME") == "callback-relay-trigger"
    assert deploy_default("WORKFLOW_SA_NAME") == "callback-relay-workflow"
    assert deploy_default("CUSTOM_ROLE_ID") == "workflowsCallbackSender"
    assert deploy_default("BUILD_SA_NAME") == "callback-relay-build"
    assert deploy_default("HTTP_FUNCTION_NAME") == "workflows-callback-relay-http"


def test_workflow_reads_the_topic_deploy_sets(deploy_argv: dict[str, list[str]]) -> None:
    text = WORKFLOW_YAML.read_text(encoding="utf-8")
    yaml.safe_load(text)  # it parses
    defaults = re.findall(r'sys\.get_env\("RELAY_TOPIC",\s*"([^"]+)"\)', text)
    assert defaults, "workflow.yaml does not read RELAY_TOPIC with sys.get_env"
    assert set(defaults) == {RELAY_TOPIC}
    workflow = deploy_argv["workflow"]
    assert flag(workflow, "set-env-vars") == f"RELAY_TOPIC={RELAY_TOPIC}"
    assert flag(workflow, "source") == str(WORKFLOW_YAML)
    assert workflow[2] == WORKFLOW
    # The very topic the workflow publishes to is pushed to the function, at the path
    # that names it (the relay reads the topic from the event's source).
    push = deploy_argv["push_subscription"]
    assert flag(push, "topic") == RELAY_TOPIC
    assert flag(push, "push-endpoint").endswith(f"/projects/{PROJECT}/topics/{RELAY_TOPIC}")


def test_function_env_vars_are_the_ones_config_reads(deploy_argv: dict[str, list[str]]) -> None:
    source = CONFIG_PY.read_text(encoding="utf-8")
    env = parse_gcloud_env_vars(flag(deploy_argv["function"], "set-env-vars"))
    assert parse_gcloud_env_vars(flag(deploy_argv["http_function"], "set-env-vars")) == env
    assert set(env) == FUNCTION_ENV_VARS
    for name in env:
        assert f'"{name}"' in source, f"config.py does not read {name}"

    settings = config.load_settings(env)  # raises ConfigError on a value it rejects
    assert settings.retry_deadline_seconds == float(env["CALLBACK_RETRY_DEADLINE_SECONDS"])
    assert settings.http_pool_size >= int(env["THREADS"])
    for project in (PROJECT, PROJECT_NUMBER):
        assert any(p.matches(project, REGION, WORKFLOW) for p in settings.allowed_workflows)
    assert not any(p.matches(PROJECT, REGION, "other") for p in settings.allowed_workflows)
    assert not any(p.matches("other", REGION, WORKFLOW) for p in settings.allowed_workflows)


def test_timeout_defaults_agree_with_config() -> None:
    # deploy.sh checks --timeout against these; they must be the relay's own defaults.
    assert float(deploy_default("CALLBACK_RETRY_DEADLINE_SECONDS")) == (
        config.DEFAULT_RETRY_DEADLINE_SECONDS
    )
    assert float(deploy_default("CALLBACK_CONNECT_TIMEOUT_SECONDS")) == (
        config.DEFAULT_CONNECT_TIMEOUT_SECONDS
    )
    assert float(deploy_default("CALLBACK_READ_TIMEOUT_SECONDS")) == (
        config.DEFAULT_READ_TIMEOUT_SECONDS
    )


def test_entry_points_exist(deploy_argv: dict[str, list[str]]) -> None:
    main = MAIN_PY.read_text(encoding="utf-8")
    for function, entry_point in (("function", "relay"), ("http_function", "relay_http")):
        assert flag(deploy_argv[function], "entry-point") == entry_point
        assert re.search(rf"^def {entry_point}\(", main, re.MULTILINE), entry_point
        assert Path(flag(deploy_argv[function], "source")) == MAIN_PY.parent


def test_allowed_workflows_flag_uses_the_relays_syntax(tmp_path: Path) -> None:
    """What --allowed-workflows accepts, config accepts, and the other way round."""
    cloud = FakeCloud(tmp_path)
    good = (
        f"projects/{PROJECT}/locations/*/workflows/orders, "
        f"projects/*/locations/{REGION}/workflows/*"
    )
    result = cloud.deploy("--dry-run", "--allowed-workflows", good)
    assert result.returncode == 0, result.stderr
    (line,) = [a for a in result.dry_run_argvs() if a[:2] == ["functions", "deploy"]]
    allowed = parse_gcloud_env_vars(flag(line, "set-env-vars"))["ALLOWED_WORKFLOWS"]
    patterns = config.parse_allowed_workflows(allowed)
    assert len(patterns) == 2
    assert patterns[0].matches(PROJECT, "europe-west1", "orders")
    assert not patterns[0].matches(PROJECT, REGION, "other")
    for bad in ("projects/p/locations/l/workflows/w*", "projects/p/workflows/w", "orders"):
        with pytest.raises(ConfigError):
            config.parse_allowed_workflows(bad)
        refused = cloud.deploy("--dry-run", "--allowed-workflows", bad)
        assert refused.returncode != 0, bad
        assert "--allowed-workflows entry" in refused.stderr
