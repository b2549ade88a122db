"""Run deploy.sh against the fake gcloud (fake_gcloud.py) and read what it did.

deploy.sh makes 50-100 gcloud calls a run. Each call goes to a `gcloud` bash
script on PATH that sends its argv over loopback to one server thread in the
test process, which answers from the fake project in memory: about a
millisecond a call, where a Python interpreter per call took tens.
"""

from __future__ import annotations

import copy
import os
import shlex
import socketserver
import subprocess
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from tests.deploy.fake_gcloud import Outcome, fresh_state, parse_env_vars, run_curl, run_gcloud

__all__ = ["parse_env_vars"]

REPO = Path(__file__).resolve().parents[2]
DEPLOY_SH = REPO / "deploy.sh"
PROJECT = "test-project"
PROJECT_NUMBER = "123456789012"
REGION = "us-central1"
PUBSUB_AGENT = f"serviceAccount:service-{PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"
FUNCTION_SA = f"callback-relay-fn@{PROJECT}.iam.gserviceaccount.com"
PUSH_SA = f"callback-relay-push@{PROJECT}.iam.gserviceaccount.com"
# The Eventarc trigger's account of deployments made before the push subscription.
LEGACY_TRIGGER_SA = f"callback-relay-trigger@{PROJECT}.iam.gserviceaccount.com"
WORKFLOW_SA = f"callback-relay-workflow@{PROJECT}.iam.gserviceaccount.com"
BUILD_SA = f"callback-relay-build@{PROJECT}.iam.gserviceaccount.com"
REQUIRED_APIS = {
    f"{name}.googleapis.com"
    for name in (
        "iam",
        "cloudresourcemanager",
        "cloudfunctions",
        "run",
        "cloudbuild",
        "artifactregistry",
        "pubsub",
        "workflows",
        "workflowexecutions",
        "logging",
        "monitoring",
    )
}
# The last word of a gcloud command that changes something.
MUTATING_VERBS = {
    "create",
    "update",
    "delete",
    "undelete",
    "deploy",
    "enable",
    "disable",
    "run",
    "add-iam-policy-binding",
    "remove-iam-policy-binding",
    "seek",
    "set-cleanup-policies",
    "service-agent",
}
RUN_TIMEOUT = 60


@dataclass
class Call:
    argv: list[str]
    command: str

    @property
    def mutating(self) -> bool:
        return self.command.rsplit(" ", 1)[-1] in MUTATING_VERBS

    def flag(self, name: str) -> str | bool | None:
        value: str | bool | None = None
        for arg in self.argv:
            if arg == f"--{name}":
                value = True
            elif arg.startswith(f"--{name}="):
                value = arg.split("=", 1)[1]
        return value

    def positionals(self) -> list[str]:
        words = self.command.split()
        return [a for a in self.argv if not a.startswith("--")][len(words) :]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    calls: list[Call] = field(default_factory=list)
    # The waits deploy.sh asked for (seconds), through DEPLOY_SLEEP: none is waited out.
    sleeps: list[int] = field(default_factory=list)

    @property
    def mutating(self) -> list[Call]:
        return [call for call in self.calls if call.mutating]

    def commands(self) -> list[str]:
        return [call.command for call in self.calls]

    def find(self, command: str) -> list[Call]:
        return [call for call in self.calls if call.command == command]

    def dry_run_argvs(self) -> list[list[str]]:
        """The commands --dry-run printed, as argv lists without the leading gcloud."""
        prefix = "DRY-RUN: "
        argvs = []
        for line in self.stdout.splitlines():
            if line.startswith(prefix):
                argv = shlex.split(line[len(prefix) :])
                assert argv[0] == "gcloud", line
                argvs.append(argv[1:])
        return argvs


# The `gcloud` (and `curl`) on PATH: argv goes out NUL-separated (any byte but NUL survives),
# and each answer line comes back tagged o (stdout), e (stderr) or x (exit code). curl's
# stdin goes too: deploy.sh hands it the token there (-H @-), never on the command line.
SHIM = r"""#!/bin/bash
exec 3<>/dev/tcp/127.0.0.1/{port} || exit 70
input=""
[[ {tool} != curl ]] || input="$(cat)"
printf '%s\0' {cloud_id} {tool} "$input" "$#" "$@" >&3
status=70
while IFS= read -r line <&3; do
    case $line in
    o*) printf '%s\n' "${{line:1}}" ;;
    e*) printf '%s\n' "${{line:1}}" >&2 ;;
    x*) status=${{line:1}} ;;
    esac
done
exit "$status"
"""

# The same client as shell functions, which deploy.sh's bash reads at start-up through
# BASH_ENV: a call then starts no process of its own (a bash per call was about a third
# of a deploy.sh run's CPU). The files on PATH stay for `command -v`, for anything that
# runs gcloud as a program, and as the switch: a tool whose file is gone is not defined.
FUNCTIONS = r"""_fake_cloud() {{
    local tool=$1 input="" line status=70 fd
    shift
    exec {{fd}}<>/dev/tcp/127.0.0.1/{port} || return 70
    [[ $tool != curl ]] || input="$(cat)"
    printf '%s\0' {cloud_id} "$tool" "$input" "$#" "$@" >&"$fd"
    while IFS= read -r line <&"$fd"; do
        case $line in
        o*) printf '%s\n' "${{line:1}}" ;;
        e*) printf '%s\n' "${{line:1}}" >&2 ;;
        x*) status=${{line:1}} ;;
        esac
    done
    exec {{fd}}>&-
    return "$status"
}}
[[ ! -x {bin}/gcloud ]] || gcloud() {{ _fake_cloud gcloud "$@"; }}
[[ ! -x {bin}/curl ]] || curl() {{ _fake_cloud curl "$@"; }}
"""


class _GcloudHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        fields: list[bytes] = []
        buffer = b""
        while len(fields) < 4 or len(fields) < 4 + int(fields[3]):
            chunk = self.connection.recv(65536)
            if not chunk:
                return
            buffer += chunk
            *complete, buffer = buffer.split(b"\0")
            fields += complete
        cloud = FakeCloud.registry[fields[0].decode()]
        outcome = cloud.call(
            fields[1].decode(), [f.decode() for f in fields[4:]], fields[2].decode()
        )
        lines = [f"o{line}" for line in outcome.stdout.splitlines()]
        lines += [f"e{line}" for line in outcome.stderr.splitlines()]
        lines.append(f"x{outcome.code}")
        self.wfile.write(("\n".join(lines) + "\n").encode())


class _GcloudServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


_server_lock = threading.Lock()
_server: _GcloudServer | None = None


def gcloud_server_port() -> int:
    """The port of the one fake-gcloud server, started on first use; it lives as
    long as the test process (a daemon thread), so no test waits for a shutdown."""
    global _server
    with _server_lock:
        if _server is None:
            _server = _GcloudServer(("127.0.0.1", 0), _GcloudHandler)
            threading.Thread(target=_server.serve_forever, daemon=True).start()
        port: int = _server.server_address[1]
        return port


class FakeCloud:
    """A fake project: its state in memory, a call log and a `gcloud` on PATH."""

    registry: ClassVar[dict[str, FakeCloud]] = {}

    def __init__(self, root: Path, state: dict[str, Any] | None = None) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        self.id = uuid.uuid4().hex
        for tool in ("gcloud", "curl"):
            wrapper = self.bin / tool
            wrapper.write_text(
                SHIM.format(port=gcloud_server_port(), cloud_id=self.id, tool=tool),
                encoding="utf-8",
            )
            wrapper.chmod(0o755)
        self.functions = root / "fake-cloud.bash"
        self.functions.write_text(
            FUNCTIONS.format(port=gcloud_server_port(), cloud_id=self.id, bin=self.bin),
            encoding="utf-8",
        )
        # deploy.sh's DEPLOY_SLEEP: records each wait instead of waiting.
        self.sleeps_file = root / "sleeps"
        self.sleep = self.bin / "record-sleep"
        self.sleep.write_text(f'#!/bin/sh\necho "$1" >> "{self.sleeps_file}"\n', "utf-8")
        self.sleep.chmod(0o755)
        self.lock = threading.Lock()
        self.calls: list[Call] = []
        self.fail: str | None = None
        self.state: dict[str, Any] = {}
        self.write_state(state if state is not None else {"config_project": PROJECT})
        FakeCloud.registry[self.id] = self

    def read_state(self) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.state)

    def write_state(self, state: dict[str, Any]) -> None:
        with self.lock:
            self.state = fresh_state(state)

    def call(self, tool: str, argv: list[str], stdin: str = "") -> Outcome:
        """One gcloud or curl call from deploy.sh (on the server's thread)."""
        with self.lock:
            if tool == "curl":
                outcome = run_curl(self.state, argv, stdin)
            else:
                outcome = run_gcloud(self.state, argv, self.fail)
            if outcome.command is not None:
                self.calls.append(Call(argv, outcome.command))
            return outcome

    def deploy(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        fail: str | None = None,
        stdin: int | None = subprocess.DEVNULL,
    ) -> Result:
        with self.lock:
            self.calls = []
            self.fail = fail
        self.sleeps_file.unlink(missing_ok=True)
        run_env = {
            "PATH": f"{self.bin}{os.pathsep}/usr/bin{os.pathsep}/bin",
            "HOME": str(self.root),
            "LANG": "C.UTF-8",
            "DEPLOY_SLEEP": str(self.sleep),
            "BASH_ENV": str(self.functions),
        }
        run_env.update(env or {})
        proc = subprocess.run(
            ["bash", str(DEPLOY_SH), *args],
            env=run_env,
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        with self.lock:
            calls, self.calls, self.fail = self.calls, [], None
        sleeps = []
        if self.sleeps_file.exists():
            sleeps = [int(line) for line in self.sleeps_file.read_text().split()]
        return Result(proc.returncode, proc.stdout, proc.stderr, calls, sleeps)


def status_lines(result: Result, kind: str) -> list[str]:
    """The text of every OK, FAIL or UNKNOWN line --status printed."""
    return [
        line.split(kind, 1)[1].strip()
        for line in result.stdout.splitlines()
        if line.startswith(f"  {kind} ")
    ]


def fixes(result: Result) -> list[str]:
    """The commands --status printed as fixes, as text."""
    return [
        line.strip()[5:] for line in result.stdout.splitlines() if line.strip().startswith("fix: ")
    ]


# -- reading the fake project ---------------------------------------------------------

FUNCTION_KEY = f"{REGION}/workflows-callback-relay"
HTTP_FUNCTION_KEY = f"{REGION}/workflows-callback-relay-http"
PUSH_SUB = "workflows-callback-relay-push"
DEAD_LETTER_SUB = "workflows-callback-relay-dead-letter-sub"
RELAY_TOPIC = "workflows-callback-relay"
DEAD_LETTER_TOPIC = "workflows-callback-relay-dead-letter"
CUSTOM_ROLE = f"projects/{PROJECT}/roles/workflowsCallbackSender"
FUNCTION_URI = "https://workflows-callback-relay-x7k2q9wz3a-uc.a.run.app"


def bindings(state: dict[str, Any]) -> set[tuple[str, str, str]]:
    """Every (resource, role, member) of every IAM policy in the fake project."""
    return {
        (resource, role, member)
        for resource, pairs in state["iam"].items()
        for role, member in pairs
    }


def members(state: dict[str, Any], resource: str, role: str) -> set[str]:
    return {m for r, m in state["iam"].get(resource, []) if r == role}


def project_roles(state: dict[str, Any], member: str) -> set[str]:
    return {r for r, m in state["iam"].get(f"project:{PROJECT}", []) if m == member}


def eventarc_era_state(messages: list[str] | None = None) -> dict[str, Any]:
    """A project as deploy.sh left it before the push subscription: the function
    triggered by Eventarc (--trigger-topic), whose subscription deploy.sh gave the
    dead-letter and retry policy, the trigger's own service account, and the
    build account's three project roles. `messages` wait on the Eventarc subscription."""
    trigger = f"projects/{PROJECT}/locations/{REGION}/triggers/workflows-callback-relay-111"
    eventarc_sub = f"eventarc-{REGION}-workflows-callback-relay-111-sub-789"
    agent = PUBSUB_AGENT.split(":", 1)[1]
    accounts = [FUNCTION_SA, LEGACY_TRIGGER_SA, BUILD_SA, WORKFLOW_SA]
    relay_topic = f"projects/{PROJECT}/topics/{RELAY_TOPIC}"
    dead_letter_topic = f"projects/{PROJECT}/topics/{DEAD_LETTER_TOPIC}"
    return {
        "config_project": PROJECT,
        "services": sorted(REQUIRED_APIS | {"eventarc.googleapis.com"}),
        "service_agents": [agent],
        "topics": {
            RELAY_TOPIC: {"name": relay_topic, "labels": {}},
            DEAD_LETTER_TOPIC: {"name": dead_letter_topic, "labels": {}},
        },
        "subscriptions": {
            DEAD_LETTER_SUB: {
                "name": f"projects/{PROJECT}/subscriptions/{DEAD_LETTER_SUB}",
                "topic": dead_letter_topic,
                "ackDeadlineSeconds": 60,
                "messageRetentionDuration": "604800s",
                "expirationPolicy": {},
                "labels": {},
                "messages": [],
            },
            eventarc_sub: {
                "name": f"projects/{PROJECT}/subscriptions/{eventarc_sub}",
                "topic": relay_topic,
                "pushConfig": {"pushEndpoint": FUNCTION_URI},
                "ackDeadlineSeconds": 60,
                "deadLetterPolicy": {
                    "deadLetterTopic": dead_letter_topic,
                    "maxDeliveryAttempts": 10,
                },
                "retryPolicy": {"minimumBackoff": "10s", "maximumBackoff": "600s"},
                "expirationPolicy": {},
                "messages": list(messages or []),
            },
        },
        "service_accounts": {email: {"email": email} for email in accounts},
        "roles": {
            "workflowsCallbackSender": {
                "name": CUSTOM_ROLE,
                "includedPermissions": ["workflows.callbacks.send"],
            }
        },
        "functions": {
            FUNCTION_KEY: {
                "name": f"projects/{PROJECT}/locations/{REGION}/functions/workflows-callback-relay",
                "state": "ACTIVE",
                "labels": {"deploy_hash": "from-before"},
                "buildConfig": {
                    "entryPoint": "relay",
                    "runtime": "python312",
                    "serviceAccount": f"projects/{PROJECT}/serviceAccounts/{BUILD_SA}",
                },
                "serviceConfig": {
                    "service": f"projects/{PROJECT}/locations/{REGION}/services/{RELAY_TOPIC}",
                    "uri": FUNCTION_URI,
                    "ingressSettings": "ALLOW_INTERNAL_ONLY",
                    "serviceAccountEmail": FUNCTION_SA,
                    "timeoutSeconds": 60,
                    "environmentVariables": {"LOG_LEVEL": "INFO"},
                },
                "eventTrigger": {
                    "trigger": trigger,
                    "pubsubTopic": relay_topic,
                    "serviceAccountEmail": LEGACY_TRIGGER_SA,
                    "retryPolicy": "RETRY_POLICY_RETRY",
                },
            }
        },
        "triggers": {
            trigger: {
                "name": trigger,
                "transport": {
                    "pubsub": {
                        "topic": relay_topic,
                        "subscription": f"projects/{PROJECT}/subscriptions/{eventarc_sub}",
                    }
                },
            }
        },
        "run_services": {FUNCTION_KEY: {"name": "workflows-callback-relay"}},
        "workflows": {},
        "iam": {
            f"project:{PROJECT}": [
                [CUSTOM_ROLE, f"serviceAccount:{FUNCTION_SA}"],
                ["roles/logging.logWriter", f"serviceAccount:{WORKFLOW_SA}"],
                ["roles/logging.logWriter", f"serviceAccount:{BUILD_SA}"],
                ["roles/artifactregistry.writer", f"serviceAccount:{BUILD_SA}"],
                ["roles/storage.objectViewer", f"serviceAccount:{BUILD_SA}"],
            ],
            f"topic:{RELAY_TOPIC}": [["roles/pubsub.publisher", f"serviceAccount:{WORKFLOW_SA}"]],
            f"topic:{DEAD_LETTER_TOPIC}": [["roles/pubsub.publisher", PUBSUB_AGENT]],
            f"subscription:{eventarc_sub}": [["roles/pubsub.subscriber", PUBSUB_AGENT]],
            f"run_service:{FUNCTION_KEY}": [
                ["roles/run.invoker", f"serviceAccount:{LEGACY_TRIGGER_SA}"]
            ],
        },
    }
