"""A fake `gcloud` for deploy.sh tests: answers calls against an in-memory project.

`run_gcloud(state, argv, fail)` is one gcloud call. The tests' harness
(harness.py) serves it on loopback to a small `gcloud` shell script on PATH, so
a call costs a socket round trip, not a Python start-up.

It answers only the commands deploy.sh uses, the way gcloud would: describe of
a missing resource fails with NOT_FOUND; create of an existing one fails with
ALREADY_EXISTS; IAM grants to a missing service account or role fail; and
`--format=value(...)`/`value[separator=...]`, `--flatten` of IAM policies and
`--format=none` are honoured. Anything else exits 2, so a new command in
deploy.sh shows up as a test failure rather than a silent pass. A failing call
changes nothing, as a failed API request would not.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
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
    "auth print-access-token",
    "alpha monitoring policies list",
    "alpha monitoring policies create",
    "alpha monitoring policies update",
    "alpha monitoring policies delete",
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
    "alert_policies": {},
    "notification_channels": [],
    # Undelivered messages per subscription, as Cloud Monitoring reports them.
    "backlog": {},
    "trigger_seq": 0,
}
READ_VERBS = {"describe", "list", "get-iam-policy"}
RETRY = "RETRY_POLICY_RETRY"
INGRESS = {
    "internal-only": "ALLOW_INTERNAL_ONLY",
    "internal-and-gclb": "ALLOW_INTERNAL_AND_GCLB",
    "all": "ALLOW_ALL",
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
    for length in (4, 3, 2):
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
        if "ack-deadline" in flags:
            deadline = int(flags["ack-deadline"])
            if not 10 <= deadline <= 600:
                raise GcloudError(
                    "ERROR: (gcloud.pubsub.subscriptions.update) --ack-deadline 10-600"
                )
            record["ackDeadlineSeconds"] = deadline
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

    def new_trigger(self, name: str, region: str, topic: str) -> str:
        """An Eventarc trigger and its subscription, as `--trigger-topic` makes them."""
        suffix = 123456 + self.state["trigger_seq"]
        self.state["trigger_seq"] += 1
        trigger = f"projects/{self.project}/locations/{region}/triggers/{name}-{suffix}"
        subscription = f"eventarc-{region}-{name}-{suffix}-sub-789"
        self.state["subscriptions"][subscription] = {
            "name": f"projects/{self.project}/subscriptions/{subscription}",
            "topic": f"projects/{self.project}/topics/{topic}",
            # What Eventarc-created subscriptions have been reported with.
            "ackDeadlineSeconds": 10,
        }
        self.state["triggers"][trigger] = {
            "name": trigger,
            "transport": {
                "pubsub": {
                    "topic": f"projects/{self.project}/topics/{topic}",
                    "subscription": f"projects/{self.project}/subscriptions/{subscription}",
                }
            },
        }
        return trigger

    def drop_trigger(self, trigger: str) -> None:
        record = self.state["triggers"].pop(trigger)
        subscription = short(record["transport"]["pubsub"]["subscription"])
        self.state["subscriptions"].pop(subscription, None)
        self.state["iam"].pop(f"subscription:{subscription}", None)

    def cmd_functions_deploy(self, command: str, args: list[str], flags: Any) -> Any:
        name, region = args[0], flags["region"]
        build_account = str(flags.get("build-service-account", ""))
        if build_account and not build_account.startswith(
            f"projects/{self.project}/serviceAccounts/"
        ):
            raise GcloudError("ERROR: (gcloud.functions.deploy) bad --build-service-account")
        for account in (
            flags.get("service-account"),
            flags.get("trigger-service-account"),
            short(build_account) if build_account else None,
        ):
            if account and account not in self.state["service_accounts"]:
                raise GcloudError(f"ERROR: (gcloud.functions.deploy) {account} does not exist")
        if not Path(flags["source"], "main.py").is_file():
            raise GcloudError("ERROR: (gcloud.functions.deploy) no main.py in --source")
        existing = self.state["functions"].get(name)
        topic, http = flags.get("trigger-topic"), "trigger-http" in flags
        if existing is None and not topic and not http:
            raise GcloudError(
                "ERROR: (gcloud.functions.deploy) You must specify a trigger when "
                "deploying a new function."
            )
        if http and "retry" in flags:
            raise GcloudError("ERROR: (gcloud.functions.deploy) --retry needs an event trigger")
        labels = dict(existing["labels"]) if existing else {}
        for pair in str(flags.get("update-labels", "")).split(","):
            if pair:
                key, _, value = pair.partition("=")
                labels[key] = value
        event_trigger = (
            dict(existing["eventTrigger"]) if existing and "eventTrigger" in existing else None
        )
        if topic:
            self.get(command, "topics", topic)
            # The trigger is in the update mask: assume the worst, a new Eventarc
            # trigger and subscription, without the old one's delivery policy.
            if event_trigger:
                self.drop_trigger(event_trigger["trigger"])
            event_trigger = {
                "trigger": self.new_trigger(name, region, topic),
                "pubsubTopic": f"projects/{self.project}/topics/{topic}",
                "serviceAccountEmail": flags.get("trigger-service-account")
                or flags.get("service-account"),
                "retryPolicy": RETRY if flags.get("retry") else "RETRY_POLICY_DO_NOT_RETRY",
            }
        elif http:
            if event_trigger:
                self.drop_trigger(event_trigger["trigger"])
            event_trigger = None
        elif "retry" in flags and event_trigger:
            event_trigger["retryPolicy"] = RETRY
        old_service = existing["serviceConfig"] if existing else {}
        env = old_service.get("environmentVariables", {})
        if "set-env-vars" in flags:
            env = parse_env_vars(flags["set-env-vars"])
        self.state["run_services"].setdefault(name, {"name": name})
        record: dict[str, Any] = {
            "name": f"projects/{self.project}/locations/{region}/functions/{name}",
            "state": "ACTIVE",
            "labels": labels,
            "buildConfig": {
                "entryPoint": flags.get("entry-point"),
                "serviceAccount": build_account or None,
            },
            "serviceConfig": {
                "service": f"projects/{self.project}/locations/{region}/services/{name}",
                "environmentVariables": env,
                "ingressSettings": INGRESS[flags.get("ingress-settings", "all")],
                "serviceAccountEmail": flags.get("service-account"),
                "timeoutSeconds": int(str(flags.get("timeout", "60s")).rstrip("s")),
            },
        }
        if event_trigger:
            record["eventTrigger"] = event_trigger
        self.state["functions"][name] = record
        return []

    def cmd_functions_delete(self, command: str, args: list[str], flags: Any) -> Any:
        record = self.get(command, "functions", args[0])
        if "eventTrigger" in record:
            self.drop_trigger(record["eventTrigger"]["trigger"])
        self.state["run_services"].pop(args[0], None)
        self.state["iam"].pop(f"run_service:{args[0]}", None)
        del self.state["functions"][args[0]]
        return []

    def cmd_eventarc_triggers_describe(self, command: str, args: list[str], flags: Any) -> Any:
        return [self.get(command, "triggers", args[0])]

    def cmd_alpha_monitoring_policies_list(self, command: str, args: list[str], flags: Any) -> Any:
        match = re.fullmatch(r'displayName="([^"]*)"', str(flags.get("filter", "")))
        if match is None:
            raise GcloudError(f"fake gcloud: unsupported --filter {flags.get('filter')}", code=2)
        return [p for p in self.state["alert_policies"].values() if p["displayName"] == match[1]]

    def read_policy(self, command: str, flags: Any) -> dict[str, Any]:
        policy: dict[str, Any] = json.loads(Path(flags["policy-from-file"]).read_text("utf-8"))
        for key in ("displayName", "combiner", "conditions"):
            if not policy.get(key):
                raise GcloudError(f"ERROR: (gcloud.{command.replace(' ', '.')}) missing {key}")
        for channel in policy.get("notificationChannels", []):
            if channel not in self.state["notification_channels"]:
                raise GcloudError(f"ERROR: NOT_FOUND: notification channel {channel}")
        return policy

    def cmd_alpha_monitoring_policies_create(
        self, command: str, args: list[str], flags: Any
    ) -> Any:
        policy = self.read_policy(command, flags)
        policy["name"] = (
            f"projects/{self.project}/alertPolicies/{len(self.state['alert_policies']) + 1}"
        )
        self.state["alert_policies"][policy["name"]] = policy
        return []

    def cmd_alpha_monitoring_policies_update(
        self, command: str, args: list[str], flags: Any
    ) -> Any:
        self.get(command, "alert_policies", args[0])
        policy = self.read_policy(command, flags)
        policy["name"] = args[0]
        self.state["alert_policies"][args[0]] = policy
        return []

    def cmd_alpha_monitoring_policies_delete(
        self, command: str, args: list[str], flags: Any
    ) -> Any:
        self.get(command, "alert_policies", args[0])
        del self.state["alert_policies"][args[0]]
        return []

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


@dataclasses.dataclass
class Outcome:
    """What one gcloud call printed and returned, and whether it was logged."""

    code: int
    stdout: str = ""
    stderr: str = ""
    command: str | None = None  # the parsed command; None when it was not one


def fresh_state(state: dict[str, Any]) -> dict[str, Any]:
    """`state` with every table present (copies: nothing is shared with EMPTY_STATE)."""
    return copy.deepcopy({**EMPTY_STATE, **state})


def run_gcloud(state: dict[str, Any], argv: list[str], fail: str | None = None) -> Outcome:
    """One gcloud call against `state`, which it changes only when the call succeeds."""
    try:
        command, args, flags = parse(argv)
    except GcloudError as exc:
        return Outcome(exc.code, stderr=f"{exc}\n")
    if fail == command:
        message = (
            f"ERROR: (gcloud.{command.replace(' ', '.')}) OperationError: code=3, "
            "message=Build failed: injected by the test\n"
        )
        return Outcome(1, stderr=message, command=command)
    if command == "config get-value":
        return Outcome(0, stdout=f"{state['config_project']}\n", command=command)
    if command == "auth print-access-token":
        return Outcome(0, stdout="ya29.fake-token\n", command=command)
    project = args[0] if command.startswith("projects ") else flags.get("project")
    # A read needs no scratch copy (handlers copy what they return); a write
    # works on one, kept only if the whole call succeeds.
    reading = command.rsplit(" ", 1)[-1] in READ_VERBS
    scratch = state if reading else copy.deepcopy(state)
    try:
        if project != scratch["project_id"]:
            raise GcloudError(
                f"ERROR: (gcloud.{command.replace(' ', '.')}) PERMISSION_DENIED: "
                f"project [{project}] does not exist or you lack permission on it"
            )
        records = FakeProject(scratch, project).run(command, args, flags)
        stdout = output(records, flags.get("format")) if records else ""
    except GcloudError as exc:
        return Outcome(exc.code, stderr=f"{exc}\n", command=command)
    if not reading:
        state.clear()
        state.update(scratch)
    return Outcome(0, stdout=stdout, command=command)


def run_curl(state: dict[str, Any], argv: list[str]) -> Outcome:
    """The one curl call deploy.sh makes: Cloud Monitoring timeSeries.list of
    num_undelivered_messages for one subscription (newest point first)."""
    url = argv[-1]
    data = dict(
        argv[i + 1].partition("=")[::2] for i, arg in enumerate(argv) if arg == "--data-urlencode"
    )
    expected_url = f"https://monitoring.googleapis.com/v3/projects/{state['project_id']}/timeSeries"
    match = re.search(r'subscription_id = "([^"]+)"', data.get("filter", ""))
    if url != expected_url or match is None or "--get" not in argv:
        return Outcome(22, stderr=f"curl: (22) fake: unexpected request {argv}\n", command="curl")
    backlog = state["backlog"].get(match[1])
    series = [] if backlog is None else [{"points": [{"value": {"int64Value": str(backlog)}}]}]
    return Outcome(0, stdout=json.dumps({"timeSeries": series}, indent=2) + "\n", command="curl")


def parse_env_vars(value: str) -> dict[str, str]:
    """Undo gcloud's list escaping (`gcloud topic escaping`): ^D^a=1Db=2."""
    delimiter = ","
    if value.startswith("^"):
        delimiter, value = value[1:].split("^", 1)
    return dict(item.split("=", 1) for item in value.split(delimiter) if item)
