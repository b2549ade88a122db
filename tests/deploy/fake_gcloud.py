"""A fake `gcloud` for deploy.sh tests: records every call, keeps state in JSON.

The tests put a `gcloud` wrapper on PATH that runs this file. Environment:

- FAKE_GCLOUD_STATE: JSON file with the fake project (read and written per call).
- FAKE_GCLOUD_LOG: JSON-lines file; one {"argv": [...], "command": "..."} per call.
- FAKE_GCLOUD_FAIL: a command ("functions deploy") that fails with a gcloud-like error.

It answers only the commands deploy.sh uses, the way gcloud would: describe of
a missing resource fails with NOT_FOUND; create of an existing one fails with
ALREADY_EXISTS; IAM grants to a missing service account or role fail; and
`--format=value(...)`/`value[separator=...]`, `--flatten` of IAM policies and
`--format=none` are honoured. Anything else exits 2, so a new command in
deploy.sh shows up as a test failure rather than a silent pass.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

COMMANDS = {
    "config get-value",
    "projects describe",
    "services list",
    "services enable",
    "pubsub topics describe",
    "pubsub topics create",
    "pubsub topics delete",
    "pubsub subscriptions describe",
    "pubsub subscriptions create",
    "pubsub subscriptions update",
    "pubsub subscriptions delete",
    "iam service-accounts describe",
    "iam service-accounts create",
    "iam service-accounts delete",
    "iam roles describe",
    "iam roles create",
    "iam roles update",
    "iam roles undelete",
    "iam roles delete",
    "functions describe",
    "functions deploy",
    "functions delete",
    "eventarc triggers describe",
    "workflows describe",
    "workflows deploy",
    "workflows delete",
}
IAM_GROUPS = {
    "projects": "project",
    "pubsub topics": "topic",
    "pubsub subscriptions": "subscription",
    "iam service-accounts": "service_account",
    "run services": "run_service",
}
for _group in IAM_GROUPS:
    for _verb in ("get-iam-policy", "add-iam-policy-binding", "remove-iam-policy-binding"):
        COMMANDS.add(f"{_group} {_verb}")

EMPTY_STATE: dict[str, Any] = {
    "project_id": "test-project",
    "config_project": "",
    "project_number": "123456789012",
    "services": [],
    "topics": {},
    "subscriptions": {},
    "service_accounts": {},
    "roles": {},
    "functions": {},
    "triggers": {},
    "run_services": {},
    "workflows": {},
    "iam": {},
}


class GcloudError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def parse(argv: list[str]) -> tuple[str, list[str], dict[str, Any]]:
    positionals: list[str] = []
    flags: dict[str, Any] = {}
    for arg in argv:
        if arg.startswith("--"):
            name, sep, value = arg[2:].partition("=")
            flags[name] = value if sep else True
        else:
            positionals.append(arg)
    for length in (3, 2):
        command = " ".join(positionals[:length])
        if command in COMMANDS:
            return command, positionals[length:], flags
    raise GcloudError(f"fake gcloud: unsupported command: {' '.join(argv)}", code=2)


def lookup(record: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record


def render_value(value: Any, delimiter: str = ";") -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, list):
        return delimiter.join(render_value(item) for item in value)
    return str(value)


def output(records: list[Any], fmt: str | None) -> str:
    if fmt == "none":
        return ""
    if fmt is None or fmt == "json":
        return json.dumps(records[0] if len(records) == 1 else records, indent=2) + "\n"
    match = re.fullmatch(r"value(?:\[separator=\"(?P<sep>[^\"]*)\"\])?\((?P<keys>[^)]*)\)", fmt)
    if match is None:
        raise GcloudError(f"fake gcloud: unsupported --format {fmt}", code=2)
    separator = match["sep"] if match["sep"] is not None else "\t"
    keys = [key.strip() for key in match["keys"].split(",")]
    lines = [separator.join(render_value(lookup(r, k)) for k in keys) for r in records]
    return "".join(line + "\n" for line in lines)


def short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def not_found(command: str, kind: str, name: str) -> GcloudError:
    return GcloudError(
        f"ERROR: (gcloud.{command.replace(' ', '.')}) NOT_FOUND: {kind} [{name}] not found"
    )


class FakeProject:
    def __init__(self, state: dict[str, Any], project: str) -> None:
        self.state = state
        self.project = project

    # -- helpers ----------------------------------------------------------------

    def get(self, command: str, table: str, name: str) -> dict[str, Any]:
        record = self.state[table].get(name)
        if record is None:
            raise not_found(command, table, name)
        return dict(record)

    def create(self, command: str, table: str, name: str, record: dict[str, Any]) -> None:
        if name in self.state[table]:
            raise GcloudError(f"ERROR: (gcloud.{command.replace(' ', '.')}) ALREADY_EXISTS: {name}")
        self.state[table][name] = record

    def require_member(self, command: str, member: str) -> None:
        kind, _, email = member.partition(":")
        if kind != "serviceAccount":
            return
        own = email.endswith(f"@{self.project}.iam.gserviceaccount.com")
        if own and email not in self.state["service_accounts"]:
            raise GcloudError(
                f"ERROR: (gcloud.{command.replace(' ', '.')}) INVALID_ARGUMENT: "
                f"Service account {email} does not exist."
            )

    def resource_key(self, group: str, command: str, resource: str) -> str:
        kind = IAM_GROUPS[group]
        name = short(resource)
        tables = {
            "topic": "topics",
            "subscription": "subscriptions",
            "service_account": "service_accounts",
            "run_service": "run_services",
        }
        if kind == "project":
            if resource != self.project:
                raise not_found(command, "project", resource)
        elif name not in self.state[tables[kind]]:
            raise not_found(command, kind, resource)
        return f"{kind}:{name}"

    # -- commands ---------------------------------------------------------------

    def run(self, command: str, args: list[str], flags: dict[str, Any]) -> list[Any]:
        group, _, verb = command.rpartition(" ")
        if group in IAM_GROUPS and verb.endswith(("iam-policy", "iam-policy-binding")):
            return self.iam(group, verb, command, args[0], flags)
        handler = getattr(self, "cmd_" + command.replace(" ", "_").replace("-", "_"))
        result: list[Any] = handler(command, args, flags)
        return result

    def iam(
        self, group: str, verb: str, command: str, resource: str, flags: dict[str, Any]
    ) -> list[Any]:
        key = self.resource_key(group, command, resource)
        bindings: list[list[str]] = self.state["iam"].get(key, [])
        if verb == "get-iam-policy":
            if flags.get("flatten") == "bindings[].members":
                return [{"bindings": {"role": r, "members": m}} for r, m in bindings]
            roles: dict[str, list[str]] = {}
            for role, member in bindings:
                roles.setdefault(role, []).append(member)
            return [{"bindings": [{"role": r, "members": m} for r, m in roles.items()]}]
        member, role = flags["member"], flags["role"]
        if verb == "add-iam-policy-binding":
            self.require_member(command, member)
            if role.startswith("projects/"):
                custom = self.state["roles"].get(short(role))
                if custom is None or custom.get("deleted"):
                    raise GcloudError(f"ERROR: INVALID_ARGUMENT: Role {role} does not exist.")
            if [role, member] not in bindings:
                self.state["iam"][key] = [*bindings, [role, member]]
        elif [role, member] in bindings:
            bindings.remove([role, member])
        else:
            raise GcloudError(f"ERROR: Policy binding with the specified principal, role {role}")
        return [{"bindings": bindings}]

    def cmd_config_get_value(self, command: str, args: list[str], flags: dict[str, Any]) -> Any:
        return [{"value": self.state["config_project"]}]

    def cmd_projects_describe(self, command: str, args: list[str], flags: dict[str, Any]) -> Any:
        if args[0] != self.project:
            raise not_found(command, "project", args[0])
        return [{"projectId": self.project, "projectNumber": self.state["project_number"]}]

    def cmd_services_list(self, command: str, args: list[str], flags: dict[str, Any]) -> Any:
        return [{"config": {"name": name}} for name in self.state["services"]]

    def cmd_services_enable(self, command: str, args: list[str], flags: dict[str, Any]) -> Any:
        for name in args:
            if name not in self.state["services"]:
                self.state["services"].append(name)
        return []

    def cmd_pubsub_topics_describe(self, command: str, args: list[str], flags: Any) -> Any:
        return [self.get(command, "topics", short(args[0]))]

    def cmd_pubsub_topics_create(self, command: str, args: list[str], flags: Any) -> Any:
        name = f"projects/{self.project}/topics/{args[0]}"
        self.create(command, "topics", args[0], {"name": name})
        return []

    def cmd_pubsub_topics_delete(self, command: str, args: list[str], flags: Any) -> Any:
        self.get(command, "topics", args[0])
        del self.state["topics"][args[0]]
        self.state["iam"].pop(f"topic:{args[0]}", None)
        return []

    def cmd_pubsub_subscriptions_describe(self, command: str, args: list[str], flags: Any) -> Any:
        return [self.get(command, "subscriptions", short(args[0]))]

    def cmd_pubsub_subscriptions_create(self, command: str, args: list[str], flags: Any) -> Any:
        topic = flags["topic"]
        self.get(command, "topics", short(topic))
        record = {
            "name": f"projects/{self.project}/subscriptions/{args[0]}",
            "topic": f"projects/{self.project}/topics/{short(topic)}",
            "messageRetentionDuration": flags.get("message-retention-duration"),
            "expirationPolicy": {} if flags.get("expiration-period") == "never" else None,
            "ackDeadlineSeconds": flags.get("ack-deadline"),
        }
        self.create(command, "subscriptions", args[0], record)
        return []

    def cmd_pubsub_subscriptions_update(self, command: str, args: list[str], flags: Any) -> Any:
        name = short(args[0])
        record = self.get(command, "subscriptions", name)
        if "dead-letter-topic" in flags:
            self.get(command, "topics", short(flags["dead-letter-topic"]))
            record["deadLetterPolicy"] = {
                "deadLetterTopic": flags["dead-letter-topic"],
                "maxDeliveryAttempts": int(flags.get("max-delivery-attempts", 5)),
            }
        if "min-retry-delay" in flags or "max-retry-delay" in flags:
            record["retryPolicy"] = {
                "minimumBackoff": flags.get("min-retry-delay", "10s"),
                "maximumBackoff": flags.get("max-retry-delay", "600s"),
            }
        self.state["subscriptions"][name] = record
        return []

    def cmd_pubsub_subscriptions_delete(self, command: str, args: list[str], flags: Any) -> Any:
        name = short(args[0])
        self.get(command, "subscriptions", name)
        del self.state["subscriptions"][name]
        self.state["iam"].pop(f"subscription:{name}", None)
        return []

    def cmd_iam_service_accounts_describe(self, command: str, args: list[str], flags: Any) -> Any:
        return [self.get(command, "service_accounts", args[0])]

    def cmd_iam_service_accounts_create(self, command: str, args: list[str], flags: Any) -> Any:
        email = f"{args[0]}@{self.project}.iam.gserviceaccount.com"
        record = {"email": email, "displayName": flags.get("display-name")}
        self.create(command, "service_accounts", email, record)
        return []

    def cmd_iam_service_accounts_delete(self, command: str, args: list[str], flags: Any) -> Any:
        self.get(command, "service_accounts", args[0])
        del self.state["service_accounts"][args[0]]
        self.state["iam"].pop(f"service_account:{args[0]}", None)
        return []

    def cmd_iam_roles_describe(self, command: str, args: list[str], flags: Any) -> Any:
        return [self.get(command, "roles", args[0])]

    def cmd_iam_roles_create(self, command: str, args: list[str], flags: Any) -> Any:
        record = {
            "name": f"projects/{self.project}/roles/{args[0]}",
            "title": flags.get("title"),
            "stage": flags.get("stage"),
            "includedPermissions": flags["permissions"].split(","),
        }
        self.create(command, "roles", args[0], record)
        return []

    def cmd_iam_roles_update(self, command: str, args: list[str], flags: Any) -> Any:
        record = self.get(command, "roles", args[0])
        record["includedPermissions"] = flags["permissions"].split(",")
        self.state["roles"][args[0]] = record
        return []

    def cmd_iam_roles_undelete(self, command: str, args: list[str], flags: Any) -> Any:
        record = self.get(command, "roles", args[0])
        record.pop("deleted", None)
        self.state["roles"][args[0]] = record
        return []

    def cmd_iam_roles_delete(self, command: str, args: list[str], flags: Any) -> Any:
        record = self.get(command, "roles", args[0])
        record["deleted"] = True
        self.state["roles"][args[0]] = record
        return []

    def cmd_functions_describe(self, command: str, args: list[str], flags: Any) -> Any:
        return [self.get(command, "functions", args[0])]

    def cmd_functions_deploy(self, command: str, args: list[str], flags: Any) -> Any:
        name, region = args[0], flags["region"]
        for account in (flags.get("service-account"), flags.get("trigger-service-account")):
            if account and account not in self.state["service_accounts"]:
                raise GcloudError(f"ERROR: (gcloud.functions.deploy) {account} does not exist")
        self.get(command, "topics", flags["trigger-topic"])
        if not Path(flags["source"], "main.py").is_file():
            raise GcloudError("ERROR: (gcloud.functions.deploy) no main.py in --source")
        existing = self.state["functions"].get(name)
        labels = dict(existing["labels"]) if existing else {}
        for pair in str(flags.get("update-labels", "")).split(","):
            if pair:
                key, _, value = pair.partition("=")
                labels[key] = value
        if existing:
            trigger = existing["eventTrigger"]["trigger"]
        else:
            trigger = f"projects/{self.project}/locations/{region}/triggers/{name}-123456"
            subscription = f"eventarc-{region}-{name}-123456-sub-789"
            self.state["subscriptions"][subscription] = {
                "name": f"projects/{self.project}/subscriptions/{subscription}",
                "topic": f"projects/{self.project}/topics/{flags['trigger-topic']}",
            }
            self.state["triggers"][trigger] = {
                "name": trigger,
                "transport": {
                    "pubsub": {
                        "topic": f"projects/{self.project}/topics/{flags['trigger-topic']}",
                        "subscription": f"projects/{self.project}/subscriptions/{subscription}",
                    }
                },
            }
            self.state["run_services"][name] = {"name": name}
        self.state["functions"][name] = {
            "name": f"projects/{self.project}/locations/{region}/functions/{name}",
            "state": "ACTIVE",
            "labels": labels,
            "serviceConfig": {
                "service": f"projects/{self.project}/locations/{region}/services/{name}"
            },
            "eventTrigger": {"trigger": trigger},
        }
        return []

    def cmd_functions_delete(self, command: str, args: list[str], flags: Any) -> Any:
        record = self.get(command, "functions", args[0])
        trigger = self.state["triggers"].pop(record["eventTrigger"]["trigger"])
        subscription = short(trigger["transport"]["pubsub"]["subscription"])
        self.state["subscriptions"].pop(subscription, None)
        self.state["iam"].pop(f"subscription:{subscription}", None)
        self.state["run_services"].pop(args[0], None)
        self.state["iam"].pop(f"run_service:{args[0]}", None)
        del self.state["functions"][args[0]]
        return []

    def cmd_eventarc_triggers_describe(self, command: str, args: list[str], flags: Any) -> Any:
        return [self.get(command, "triggers", args[0])]

    def cmd_workflows_describe(self, command: str, args: list[str], flags: Any) -> Any:
        return [self.get(command, "workflows", args[0])]

    def cmd_workflows_deploy(self, command: str, args: list[str], flags: Any) -> Any:
        account = flags.get("service-account")
        if account and account not in self.state["service_accounts"]:
            raise GcloudError(f"ERROR: (gcloud.workflows.deploy) {account} does not exist")
        if not Path(flags["source"]).is_file():
            raise GcloudError("ERROR: (gcloud.workflows.deploy) --source not found")
        labels = dict(
            pair.partition("=")[::2] for pair in flags.get("labels", "").split(",") if pair
        )
        self.state["workflows"][args[0]] = {
            "name": f"projects/{self.project}/locations/{flags['location']}/workflows/{args[0]}",
            "state": "ACTIVE",
            "labels": labels,
            "serviceAccount": account,
            "userEnvVars": dict(
                pair.partition("=")[::2]
                for pair in flags.get("set-env-vars", "").split(",")
                if pair
            ),
        }
        return []

    def cmd_workflows_delete(self, command: str, args: list[str], flags: Any) -> Any:
        self.get(command, "workflows", args[0])
        del self.state["workflows"][args[0]]
        return []


def main(argv: list[str]) -> int:
    state_path = Path(os.environ["FAKE_GCLOUD_STATE"])
    state = {**EMPTY_STATE, **json.loads(state_path.read_text(encoding="utf-8"))}
    unchanged = json.dumps(state, sort_keys=True)
    try:
        command, args, flags = parse(argv)
    except GcloudError as exc:
        print(exc, file=sys.stderr)
        return exc.code
    log_path = os.environ.get("FAKE_GCLOUD_LOG")
    if log_path:
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(json.dumps({"argv": argv, "command": command}) + "\n")
    if os.environ.get("FAKE_GCLOUD_FAIL") == command:
        print(
            f"ERROR: (gcloud.{command.replace(' ', '.')}) OperationError: code=3, "
            "message=Build failed: injected by the test",
            file=sys.stderr,
        )
        return 1
    if command == "config get-value":
        print(state["config_project"])
        return 0
    project = args[0] if command.startswith("projects ") else flags.get("project")
    try:
        if project != state["project_id"]:
            raise GcloudError(
                f"ERROR: (gcloud.{command.replace(' ', '.')}) PERMISSION_DENIED: "
                f"project [{project}] does not exist or you lack permission on it"
            )
        records = FakeProject(state, project).run(command, args, flags)
    except GcloudError as exc:
        print(exc, file=sys.stderr)
        return exc.code
    if json.dumps(state, sort_keys=True) != unchanged:
        state_path.write_text(json.dumps(state, indent=2), encoding="utf-8")
    if records:
        sys.stdout.write(output(records, flags.get("format")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
