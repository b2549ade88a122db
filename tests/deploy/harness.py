"""Run deploy.sh against the fake gcloud (fake_gcloud.py) and read what it did."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEPLOY_SH = REPO / "deploy.sh"
FAKE_GCLOUD = Path(__file__).with_name("fake_gcloud.py")
PROJECT = "test-project"
PROJECT_NUMBER = "123456789012"
REGION = "us-central1"
PUBSUB_AGENT = f"serviceAccount:service-{PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"
FUNCTION_SA = f"callback-relay-fn@{PROJECT}.iam.gserviceaccount.com"
TRIGGER_SA = f"callback-relay-trigger@{PROJECT}.iam.gserviceaccount.com"
WORKFLOW_SA = f"callback-relay-workflow@{PROJECT}.iam.gserviceaccount.com"
REQUIRED_APIS = {
    f"{name}.googleapis.com"
    for name in (
        "cloudfunctions",
        "run",
        "cloudbuild",
        "artifactregistry",
        "eventarc",
        "pubsub",
        "workflows",
        "workflowexecutions",
        "logging",
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


class FakeCloud:
    """A fake project: a state file, a call log and a `gcloud` on PATH."""

    def __init__(self, root: Path, state: dict[str, Any] | None = None) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        wrapper = self.bin / "gcloud"
        wrapper.write_text(
            # -I -S: isolated and without site-packages, the fake needs only the
            # standard library and starts in half the time.
            f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -I -S "
            f'{shlex.quote(str(FAKE_GCLOUD))} "$@"\n',
            encoding="utf-8",
        )
        wrapper.chmod(0o755)
        self.state_path = root / "state.json"
        self.log_path = root / "calls.jsonl"
        self.write_state(state if state is not None else {"config_project": PROJECT})

    def read_state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.state_path.read_text(encoding="utf-8"))
        return data

    def write_state(self, state: dict[str, Any]) -> None:
        self.state_path.write_text(json.dumps(state, indent=2), encoding="utf-8")

    def deploy(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        fail: str | None = None,
        stdin: int | None = subprocess.DEVNULL,
    ) -> Result:
        if self.log_path.exists():
            self.log_path.unlink()
        run_env = {
            "PATH": f"{self.bin}{os.pathsep}/usr/bin{os.pathsep}/bin",
            "HOME": str(self.root),
            "LANG": "C.UTF-8",
            "FAKE_GCLOUD_STATE": str(self.state_path),
            "FAKE_GCLOUD_LOG": str(self.log_path),
            "IAM_RETRY_SLEEP": "0",
        }
        if fail:
            run_env["FAKE_GCLOUD_FAIL"] = fail
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
        calls = []
        if self.log_path.exists():
            for line in self.log_path.read_text(encoding="utf-8").splitlines():
                record = json.loads(line)
                calls.append(Call(record["argv"], record["command"]))
        return Result(proc.returncode, proc.stdout, proc.stderr, calls)


def parse_env_vars(value: str) -> dict[str, str]:
    """Undo gcloud's list escaping (`gcloud topic escaping`): ^D^a=1Db=2."""
    delimiter = ","
    if value.startswith("^"):
        delimiter, value = value[1:].split("^", 1)
    return dict(item.split("=", 1) for item in value.split(delimiter) if item)
