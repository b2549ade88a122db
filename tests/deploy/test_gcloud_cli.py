"""Check deploy.sh against the real, installed gcloud, offline.

- Every gcloud command deploy.sh runs or prints, and every flag it passes, is
  in the installed gcloud's static completion tree (data/cli/gcloud_completions.py,
  generated from the same command definitions as --help, and read in 0.1 s where
  each --help costs seconds). A negated boolean (--no-NAME) is checked in that
  command's own `gcloud ... --help`: only the help says whether NAME can be negated.
  A hidden command, which the tree leaves out, is found by its definition file in
  gcloud's lib/surface. One test holds the tree against --help, so a tree that
  drifted would fail it.
- function/.gcloudignore keeps tests, tools and caches out of the upload, as
  `gcloud meta list-files-for-upload` (the code gcloud deploys with) sees it.

The commands come from the fake-gcloud call log of deploy, production (every
flag), redeploy, --status, destroy and custom-role repair runs, plus what
--dry-run, --status's fixes and the final instructions print.
gcloud never touches the network here: prompts are off, the config directory is
a fresh temporary one, and only --help and local listing commands run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.pubsub_emulator import SHARED_DIR_ENV, shared_start
from tests.deploy import fake_gcloud
from tests.deploy.deploy_runner import REPO, FakeCloud, Result, eventarc_era_state
from tests.deploy.test_deploy_events import (
    BUCKET,
    EVENTS_ARGS,
    USER_TOPIC,
    event_subscription,
    project_with_sources,
)
from tests.deploy.test_deploy_production import ALLOWED, PRODUCTION_ARGS, project_with_users

# Each real gcloud start costs seconds: out of the quick loop (scripts/test.sh --quick).
pytestmark = pytest.mark.slow

GCLOUD = Path("/usr/bin/gcloud")
RELEASE_TRACKS = {"alpha", "beta"}
ANSI = re.compile(r"\x1b\[[0-9;]*m")
HELP_TIMEOUT = 60


def gcloud_or_skip() -> Path:
    path = GCLOUD if GCLOUD.exists() else None
    if path is None and (found := shutil.which("gcloud")):
        path = Path(found)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("gcloud is not installed, and CI=true requires these tests to run")
        pytest.skip("gcloud is not installed (the Google Cloud CLI); these tests need its --help")
    return path


@pytest.fixture(scope="module")
def gcloud() -> Path:
    return gcloud_or_skip()


@pytest.fixture(scope="module")
def gcloud_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path_factory.mktemp("home")),
        "CLOUDSDK_CONFIG": str(tmp_path_factory.mktemp("gcloud-config")),
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_CORE_PROJECT": "test-project",
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
        "TERM": "dumb",
        "LANG": "C.UTF-8",
    }


def surface_root(gcloud: Path) -> Path:
    root = gcloud.resolve().parent.parent / "lib" / "surface"
    if not root.is_dir():
        pytest.fail(f"cannot find gcloud's command tree at {root}")
    return root


def command_path(argv: list[str], surface: Path) -> tuple[str, ...]:
    """Split `gcloud` argv into its command path (e.g. pubsub topics create).

    gcloud's command tree is a directory per group and a .py/.yaml file per
    command under lib/surface; release tracks (beta) share the tree.
    """
    words = [a for a in argv if not a.startswith("-")]
    path: list[str] = []
    node = surface
    for word in words:
        if word in RELEASE_TRACKS and not path:
            path.append(word)
            continue
        name = word.replace("-", "_")
        if (node / name).is_dir():
            path.append(word)
            node = node / name
            continue
        if (node / f"{name}.py").is_file() or (node / f"{name}.yaml").is_file():
            path.append(word)
            return tuple(path)
        break
    raise AssertionError(f"not a gcloud command: gcloud {shlex.join(argv)}")


def flag_names(argv: list[str]) -> set[str]:
    return {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}


def help_mentions(help_text: str, flag: str) -> bool:
    if re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text):
        return True
    # Boolean flags are documented as --[no-]name.
    name = flag.removeprefix("--no-") if flag.startswith("--no-") else flag[2:]
    return f"--[no-]{name}" in help_text


def completion_tree(gcloud: Path) -> dict[str, Any]:
    """gcloud's static completion tree: {"commands": {...}, "flags": {name: kind}}
    per node, where kind is "bool", "value", "list" or "dynamic"."""
    path = gcloud.resolve().parent.parent / "data" / "cli" / "gcloud_completions.py"
    if not path.is_file():
        pytest.fail(f"cannot find gcloud's static completion tree at {path}")
    text = path.read_text(encoding="utf-8")
    # A Python literal of strings and dicts: JSON, after the assignment.
    tree: dict[str, Any] = json.loads(text[text.index("{") :])
    return tree


def tree_flags(tree: dict[str, Any], path: tuple[str, ...]) -> dict[str, str] | None:
    """The flags `gcloud PATH` accepts (gcloud-wide ones, its groups', its own), or
    None when the tree does not have the command: it leaves hidden ones out, such as
    `config get-value`."""
    node = tree
    flags = dict(node["flags"])
    for word in path:
        if word not in node["commands"]:
            return None
        node = node["commands"][word]
        flags.update(node["flags"])
    assert node["commands"] == {}, f"a command group, not a command: gcloud {' '.join(path)}"
    return flags


def flags_to_check_in_help(
    tree: dict[str, Any], path: tuple[str, ...], flags: set[str]
) -> set[str]:
    """The flags the tree cannot vouch for: all of a command it lacks, flags it lacks
    (hidden or made up), and negated booleans (only --help says which negate)."""
    known = tree_flags(tree, path)
    if known is None:
        return set(flags)
    return {flag for flag in flags if flag not in known}


def help_cache_key(gcloud: Path, path: tuple[str, ...]) -> str | None:
    """A key that changes whenever the installed gcloud or this command changes:
    the SDK's VERSION, and the size and time of the command's own file."""
    root = gcloud.resolve().parent.parent
    node = root / "lib" / "surface"
    for word in (w for w in path if w not in RELEASE_TRACKS):
        node = node / word.replace("-", "_")
    files = [f for f in (node.with_suffix(".py"), node.with_suffix(".yaml")) if f.is_file()]
    version = root / "VERSION"
    if not files or not version.is_file():
        return None
    stat = files[0].stat()
    stamp = f"{version.read_text().strip()}-{stat.st_size}-{stat.st_mtime_ns}"
    return f"deploy/gcloud-help/{stamp}/{'_'.join(path)}"


_HELP_TEXTS: dict[tuple[str, ...], str] = {}


def fetch_help(
    gcloud: Path, env: dict[str, str], path: tuple[str, ...], cache: pytest.Cache | None = None
) -> str:
    # gcloud's start-up costs 1-3 s per --help; the text of one installed
    # version never changes, so it is kept for this process and, in pytest's
    # cache, between runs.
    if path in _HELP_TEXTS:
        return _HELP_TEXTS[path]
    key = help_cache_key(gcloud, path) if cache is not None else None
    if cache is not None and key is not None:
        cached = cache.get(key, None)
        if isinstance(cached, str):
            _HELP_TEXTS[path] = cached
            return cached
    proc = subprocess.run(
        [str(gcloud), *path, "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=HELP_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, f"gcloud {' '.join(path)} --help: {proc.stderr}"
    text = ANSI.sub("", proc.stdout)
    assert f"gcloud {' '.join(path)} -" in " ".join(text.split()), text[:300]
    if cache is not None and key is not None:
        cache.set(key, text)
    _HELP_TEXTS[path] = text
    return text


def printed_commands(stdout: str) -> list[list[str]]:
    """gcloud commands in deploy.sh's closing instructions (with \\ continuations)."""
    joined = stdout.replace("\\\n", " ")
    argvs = []
    for line in joined.splitlines():
        line = line.strip()
        for prefix in ("function ", "workflow "):
            line = line.removeprefix(prefix).strip()
        if line.startswith("gcloud "):
            argvs.append(shlex.split(line)[1:])
    return argvs


def status_fixes(stdout: str) -> list[list[str]]:
    """The gcloud commands --status prints after "fix:"."""
    prefix = "fix: gcloud "
    return [
        shlex.split(line.strip()[len(prefix) :])
        for line in stdout.splitlines()
        if line.strip().startswith(prefix)
    ]


def gcloud_calls(result: Result) -> list[list[str]]:
    # curl is the one other tool (the Monitoring API); it has no gcloud --help.
    return [call.argv for call in result.calls if call.command != "curl"]


def printed_to_operator(stderr: str) -> list[list[str]]:
    """gcloud commands deploy.sh prints on stderr for the operator to run."""
    return [
        shlex.split(line.strip())[1:]
        for line in stderr.splitlines()
        if line.strip().startswith("gcloud ")
    ]


def iam_plan(stdout: str) -> list[list[str]]:
    """The gcloud commands of --iam=print's plan."""
    return [
        shlex.split(line[12:])[1:]
        for line in stdout.splitlines()
        if line.startswith(("  MISSING   gcloud ", "  in place  gcloud "))
    ]


def collect_argvs(root: Path) -> list[list[str]]:
    argvs: list[list[str]] = []

    def ran(result: Result, expect: int = 0) -> None:
        assert result.returncode == expect, result.stdout + result.stderr
        argvs.extend(gcloud_calls(result))
        argvs.extend(result.dry_run_argvs())
        argvs.extend(printed_commands(result.stdout))
        argvs.extend(status_fixes(result.stdout))
        argvs.extend(printed_to_operator(result.stderr))
        argvs.extend(iam_plan(result.stdout))

    cloud = FakeCloud(root / "fresh", {"config_project": ""})
    ran(cloud.deploy("--dry-run", env={"PROJECT_ID": "test-project"}))
    cloud.write_state({"config_project": "test-project"})
    ran(cloud.deploy("--iam=print"), expect=3)
    for args in ((), ("--use-invoker-role",), ("--destroy", "--dry-run"), ("--destroy", "--yes")):
        ran(cloud.deploy(*args))
    # A deleted custom role with extra permissions: undelete and update.
    state = cloud.read_state()
    state["roles"]["workflowsCallbackSender"]["includedPermissions"] = ["x.y.z"]
    cloud.write_state(state)
    ran(cloud.deploy("--dry-run"))
    ran(cloud.deploy("--destroy", "--yes", "--delete-images"))

    # Production: every flag and every organisation policy, an update of the alert
    # policy and the metric, --status with problems (and the fixes it prints), options
    # dropped, a region change, destroy.
    key = "projects/test-project/locations/us-central1/keyRings/r/cryptoKeys/k"
    production = FakeCloud(root / "production", project_with_users({"kms_keys": [key]}))
    policies = (
        "--kms-key",
        key,
        "--vpc-connector",
        "connector",
        "--egress-settings",
        "all",
        "--build-worker-pool",
        "projects/test-project/locations/us-central1/workerPools/pool",
        "--keep-images",
        "3",
    )
    full = (*PRODUCTION_ARGS, "--legacy-token-creator", *policies)
    ran(production.deploy(*full))
    ran(production.deploy(*full, env={"ALERT_OLDEST_UNACKED_SECONDS": "900"}))
    state = production.read_state()
    state["log_metrics"]["workflows-callback-relay-outcomes"]["description"] = "edited"
    production.write_state(state)
    ran(production.deploy(*full))  # logging metrics update
    ran(production.deploy(*full, "--status"))
    state = production.read_state()
    for subscription in state["subscriptions"].values():
        subscription.pop("deadLetterPolicy", None)
    state["iam"] = {}
    state["functions"]["us-central1/workflows-callback-relay"]["serviceConfig"][
        "secretEnvironmentVariables"
    ] = [{"key": "K", "secret": "s", "version": "1"}]
    state["log_entries"] = [{"service": "workflows-callback-relay", "outcome": "url_refused"}]
    production.write_state(state)
    unhealthy = production.deploy(*full, "--status")
    ran(unhealthy, expect=1)
    fixes = status_fixes(unhealthy.stdout)
    assert any(argv[:3] == ["pubsub", "subscriptions", "update"] for argv in fixes)
    assert any(argv[:2] == ["iam", "service-accounts"] for argv in fixes)
    ran(production.deploy(*full))
    ran(production.deploy(*PRODUCTION_ARGS))  # the policies dropped: --clear-* flags
    ran(production.deploy("--skip-demo-workflow", "--allowed-workflows", ALLOWED))
    ran(production.deploy(*PRODUCTION_ARGS, "--region", "europe-west1"), expect=1)
    ran(production.deploy(*PRODUCTION_ARGS, "--region", "europe-west1", "--status"), expect=1)
    ran(production.deploy("--destroy", "--yes"))

    # The move from an Eventarc trigger, and the commands printed when it cannot be made.
    moved = FakeCloud(root / "moved", eventarc_era_state(messages=["m1"]))
    ran(moved.deploy("--status"), expect=1)
    ran(moved.deploy())
    refused_state = eventarc_era_state(messages=["m1"])
    refused_state["refuse_trigger_change"] = True
    refused = FakeCloud(root / "refused", refused_state)
    ran(refused.deploy(), expect=1)

    # Keyed waits: a dry run and the --iam=print plan of a first run, a deploy, --status
    # with broken parts (and the fixes it prints), the repair, the flags dropped and
    # taken up again, and destroy (which prints how to delete the database).
    events = FakeCloud(root / "events", project_with_sources())
    ran(events.deploy(*EVENTS_ARGS, "--dry-run"))
    ran(events.deploy(*EVENTS_ARGS, "--iam=print"), expect=3)
    ran(events.deploy(*EVENTS_ARGS))
    ran(events.deploy(*EVENTS_ARGS, "--status"))
    state = events.read_state()
    state["firestore_ttls"].clear()
    state["buckets"][BUCKET]["notifications"].clear()
    state["subscriptions"][event_subscription(USER_TOPIC)].pop("deadLetterPolicy")
    state["iam_conditions"][f"project:{state['project_id']}"][0][2] = "true"
    events.write_state(state)
    broken = events.deploy(*EVENTS_ARGS, "--status")
    ran(broken, expect=1)
    assert any(
        argv[:4] == ["firestore", "fields", "ttls", "update"]
        for argv in status_fixes(broken.stdout)
    )
    ran(events.deploy(*EVENTS_ARGS))
    ran(events.deploy())
    ran(events.deploy(*EVENTS_ARGS))
    ran(events.deploy("--destroy", "--yes"))
    return argvs


# One collection for both tests below: it runs deploy.sh some forty times (about 9 s of
# CPU). Made once per test run and shared through the run's directory, since pytest-xdist
# may put the two tests in different processes, each with its own module fixtures.
@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[list[str]], list[Any]]:
    """The argvs of collect_argvs, and every (records, format, output) the fake printed."""

    def collect() -> dict[str, Any]:
        fake_gcloud.RENDERED = []
        try:
            argvs = collect_argvs(tmp_path_factory.mktemp("collected"))
            rendered = fake_gcloud.RENDERED
        finally:
            fake_gcloud.RENDERED = None
        return {"argvs": argvs, "rendered": rendered}

    shared = os.environ.get(SHARED_DIR_ENV)
    found = (
        shared_start(Path(shared) / "gcloud-cli-collected.json", collect) if shared else collect()
    )
    return found["argvs"], [tuple(case) for case in found["rendered"]]


def test_every_gcloud_command_and_flag_exists(
    gcloud: Path,
    gcloud_env: dict[str, str],
    collected: tuple[list[list[str]], list[Any]],
    request: pytest.FixtureRequest,
) -> None:
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    surface = surface_root(gcloud)
    tree = completion_tree(gcloud)
    flags_by_command: dict[tuple[str, ...], set[str]] = {}
    for argv in collected[0]:
        path = command_path(argv, surface)
        flags_by_command.setdefault(path, set()).update(flag_names(argv))
    must_cover = {
        ("functions", "deploy"),
        ("functions", "delete"),
        ("functions", "list"),
        ("beta", "services", "identity", "create"),
        ("storage", "service-agent"),
        ("pubsub", "subscriptions", "create"),
        ("pubsub", "subscriptions", "update"),
        ("pubsub", "subscriptions", "seek"),
        ("pubsub", "snapshots", "create"),
        ("pubsub", "snapshots", "delete"),
        ("pubsub", "topics", "update"),
        ("eventarc", "triggers", "describe"),
        ("artifacts", "repositories", "create"),
        ("artifacts", "repositories", "set-cleanup-policies"),
        ("artifacts", "repositories", "delete"),
        ("kms", "keys", "add-iam-policy-binding"),
        ("logging", "metrics", "create"),
        ("logging", "metrics", "update"),
        ("logging", "read"),
        ("workflows", "deploy"),
        ("workflows", "run"),
        ("iam", "roles", "undelete"),
        ("iam", "roles", "update"),
        ("run", "services", "add-iam-policy-binding"),
        ("run", "services", "remove-iam-policy-binding"),
        ("projects", "remove-iam-policy-binding"),
        ("pubsub", "topics", "remove-iam-policy-binding"),
        ("alpha", "monitoring", "policies", "list"),
        ("alpha", "monitoring", "policies", "create"),
        ("alpha", "monitoring", "policies", "update"),
        ("alpha", "monitoring", "policies", "delete"),
        ("auth", "print-access-token"),
        ("iam", "service-accounts", "add-iam-policy-binding"),
        ("iam", "service-accounts", "remove-iam-policy-binding"),
        # Keyed waits.
        ("firestore", "databases", "describe"),
        ("firestore", "databases", "create"),
        ("firestore", "databases", "update"),
        ("firestore", "databases", "delete"),
        ("firestore", "locations", "list"),
        ("firestore", "fields", "ttls", "list"),
        ("firestore", "fields", "ttls", "update"),
        ("storage", "buckets", "describe"),
        ("storage", "buckets", "notifications", "list"),
        ("storage", "buckets", "notifications", "create"),
        ("storage", "buckets", "notifications", "delete"),
        ("pubsub", "topics", "list"),
        ("pubsub", "subscriptions", "list"),
        ("pubsub", "subscriptions", "delete"),
        ("projects", "add-iam-policy-binding"),
    }
    assert must_cover <= flags_by_command.keys()
    assert "--condition" in flags_by_command[("projects", "add-iam-policy-binding")]
    assert (
        "--skip-topic-setup" in flags_by_command[("storage", "buckets", "notifications", "create")]
    )

    # A command the tree lacks (a hidden one) exists: command_path found its definition
    # in gcloud's lib/surface. Its flags, if any, and what the tree cannot vouch for go
    # to --help: deploy.sh's --no-allow-unauthenticated, on functions deploy.
    assert tree_flags(tree, ("config", "get-value")) is None
    assert ("config", "get-value") in flags_by_command
    to_check = {
        path: unvouched
        for path, flags in flags_by_command.items()
        if (unvouched := flags_to_check_in_help(tree, path, flags))
    }
    assert to_check == {
        ("functions", "deploy"): {"--no-allow-unauthenticated"},
        ("firestore", "databases", "update"): {"--no-delete-protection"},
    }
    missing = {}
    for path, flags in to_check.items():
        text = fetch_help(gcloud, gcloud_env, path, cache)
        if unknown := sorted(f for f in flags if not help_mentions(text, f)):
            missing[" ".join(path)] = unknown
    assert missing == {}, f"flags not in gcloud's own --help: {missing}"


def test_help_check_catches_a_made_up_flag_and_the_tree_agrees_with_help(
    gcloud: Path, gcloud_env: dict[str, str], request: pytest.FixtureRequest
) -> None:
    surface = surface_root(gcloud)
    tree = completion_tree(gcloud)
    path = command_path(["functions", "deploy", "f", "--retries=3", "--no-retry"], surface)
    assert path == ("functions", "deploy")
    text = fetch_help(gcloud, gcloud_env, path, getattr(request.config, "cache", None))
    assert help_mentions(text, "--retry")
    assert not help_mentions(text, "--retries")
    assert flags_to_check_in_help(tree, path, {"--retry", "--project"}) == set()
    assert flags_to_check_in_help(tree, path, {"--retries", "--project"}) == {"--retries"}
    # Why a negated flag goes to --help: the tree calls both of these "bool", but only
    # one of them can be negated.
    flags = tree_flags(tree, path)
    assert flags is not None
    assert flags["--retry"] == flags["--allow-unauthenticated"] == "bool"
    assert help_mentions(text, "--no-allow-unauthenticated")  # --[no-]allow-unauthenticated
    assert not help_mentions(text, "--no-retry")
    assert flags_to_check_in_help(tree, path, {"--no-retry"}) == {"--no-retry"}
    # The tree is --help's twin for this installed gcloud: every flag it lists for the
    # command is documented, and every flag the help documents is in the tree.
    own = set(flags) - set(tree["flags"])  # gcloud-wide ones are summarised in the help
    assert len(own) > 30, sorted(own)
    assert sorted(f for f in own if not help_mentions(text, f)) == []
    documented = {
        flag.replace("[no-]", "")
        for flag in re.findall(r"^\s+(--(?:\[no-\])?[a-z][a-z0-9-]*)", text, re.M)
    }
    assert len(documented) > 30, text[:500]

    def in_tree(flag: str) -> bool:
        negates = "--" + flag.removeprefix("--no-")
        return flag in flags or (flag.startswith("--no-") and flags.get(negates) == "bool")

    assert sorted(f for f in documented if not in_tree(f)) == []
    with pytest.raises(AssertionError, match="not a gcloud command"):
        command_path(["pubsub", "topics", "recreate", "t"], surface)
    assert tree_flags(tree, ("pubsub", "topics", "recreate")) is None
    with pytest.raises(AssertionError, match="a command group"):
        tree_flags(tree, ("pubsub", "topics"))


def test_gcloudignore_keeps_only_runtime_files(
    gcloud: Path, gcloud_env: dict[str, str], tmp_path: Path
) -> None:
    source = tmp_path / "function"
    shutil.copytree(REPO / "function", source, ignore=shutil.ignore_patterns("__pycache__"))
    junk = [
        "tests/test_relay.py",
        "tests/__init__.py",
        "tools/publish.py",
        "conftest.py",
        "test_local.py",
        "__pycache__/main.cpython-312.pyc",
        "callback_relay/__pycache__/relay.cpython-312.pyc",
        ".pytest_cache/v/cache/lastfailed",
        ".mypy_cache/3.11/main.meta.json",
        ".ruff_cache/CACHEDIR.TAG",
        ".hypothesis/examples/x",
        ".venv/bin/python",
        "callback_relay/relay.pyc",
        ".coverage",
    ]
    for name in junk:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text("x", encoding="utf-8")
    proc = subprocess.run(
        [str(gcloud), "meta", "list-files-for-upload", str(source)],
        env=gcloud_env,
        capture_output=True,
        text=True,
        timeout=HELP_TIMEOUT,
        check=True,
    )
    uploaded = set(proc.stdout.split())
    expected = {
        str(p.relative_to(REPO / "function"))
        for p in (REPO / "function").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.name != ".gcloudignore"
    }
    assert {"main.py", "requirements.txt", "callback_relay/relay.py"} <= uploaded
    assert uploaded == expected


def test_curl_flags_exist(tmp_path: Path) -> None:
    """--status reads Cloud Monitoring with curl: its flags are real ones."""
    curl = shutil.which("curl")
    if curl is None:
        if os.environ.get("CI") == "true":
            pytest.fail("curl is not installed, and CI=true requires this test to run")
        pytest.skip("curl is not installed")
    cloud = FakeCloud(tmp_path, project_with_users())
    assert cloud.deploy(*PRODUCTION_ARGS).returncode == 0
    result = cloud.deploy(*PRODUCTION_ARGS, "--status")
    assert result.returncode == 0, result.stdout + result.stderr
    calls = result.find("curl")
    assert len(calls) == 3  # backlog, oldest unacked age, push answers
    help_text = subprocess.run(
        [curl, "--help", "all"], capture_output=True, text=True, check=True
    ).stdout
    used = {arg for call in calls for arg in call.argv if arg.startswith("-")}
    assert {"--get", "--data-urlencode", "-H"} <= used
    for arg in used:
        if arg.startswith("--"):
            assert re.search(rf"(?<![\w-]){re.escape(arg)}(?![\w-])", help_text), arg
        else:
            for letter in arg[1:]:
                assert f" -{letter}, " in help_text, f"-{letter}"


# Renders each (records, format) with gcloud's own resource printer; stdin: JSON cases.
REAL_PRINTER = """
import io, json, sys
from googlecloudsdk.core.resource import resource_printer
out = []
for records, fmt in json.load(sys.stdin):
    buffer = io.StringIO()
    resource_printer.Print(records, fmt, out=buffer)
    out.append(buffer.getvalue())
json.dump(out, sys.stdout)
"""


def test_the_fake_prints_values_as_gcloud_does(
    gcloud: Path, gcloud_env: dict[str, str], collected: tuple[list[list[str]], list[Any]]
) -> None:
    """deploy.sh parses what `--format=value(...)` prints: the fake must print it as
    gcloud's resource printer does, for every record and format deploy.sh asked for."""
    rendered = collected[1]
    cases: dict[str, tuple[list[Any], str, str]] = {}
    for records, fmt, text in rendered:
        cases.setdefault(json.dumps([records, fmt], sort_keys=True), (records, fmt, text))
    assert len(cases) > 50
    lib = gcloud.resolve().parent.parent / "lib"
    env = {**gcloud_env, "PYTHONPATH": f"{lib}{os.pathsep}{lib / 'third_party'}"}
    proc = subprocess.run(
        [sys.executable, "-c", REAL_PRINTER],
        input=json.dumps([[records, fmt] for records, fmt, _ in cases.values()]),
        env=env,
        capture_output=True,
        text=True,
        timeout=HELP_TIMEOUT,
        check=True,
    )
    real = json.loads(proc.stdout)
    differ = [
        (fmt, records, text, printed)
        for (records, fmt, text), printed in zip(cases.values(), real, strict=True)
        if text != printed
    ]
    assert differ == []
