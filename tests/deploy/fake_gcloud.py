"""A fake `gcloud` (and `curl`) for deploy.sh tests: calls answered from an in-memory project.

`run_gcloud(state, argv, fail)` is one gcloud call. deploy_runner.py serves it on
loopback to a small `gcloud` shell script on PATH, so a call costs a socket round
trip, not a Python start-up.

It answers only the commands deploy.sh uses, the way gcloud and the APIs behind
it would, so that tests assert on resulting state rather than on command strings:

- resources are records shaped like the API's (`functions describe`, subscriptions,
  topics, repositories, log metrics...); `--format=value(...)` renders them like
  gcloud's resource printer (tests/deploy/test_gcloud_cli.py holds the two together);
- IAM policies are sets of (role, member) per resource; a grant to a service
  account or service agent that does not exist fails, a deleted service account
  stays in policies as `deleted:serviceAccount:...`, as in IAM;
- a new project has no Pub/Sub service agent until `beta services identity create`;
- a function build fails while its build account lacks roles/run.builder;
- Pub/Sub messages waiting on a subscription are a list of ids: a deleted
  subscription loses them, a snapshot copies them, a seek restores them;
- `state["transient"][command]` holds errors that the next calls of that command
  fail with (IAM propagation, a new service agent), one per call;
- Cloud Monitoring's timeSeries.list (through `curl`) reports each subscription's
  backlog, oldest unacked age and push answers; `state["metrics"]` overrides them,
  and None there means "no data";
- a project policy's conditional bindings are kept apart (`state["iam_conditions"]`),
  added and removed only with their exact condition, as IAM does;
- Firestore databases (type, location, delete protection), the locations the API
  offers, and TTL policies per collection group field; Cloud Storage buckets and
  their notification configurations, which publish only while the project's Cloud
  Storage service agent may publish to the topic.

A describe of a missing resource fails with NOT_FOUND; a create of an existing
one with ALREADY_EXISTS. Anything it does not know exits 2, so a new command in
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
    "beta services identity create",
    "storage service-agent",
    "pubsub topics describe",
    "pubsub topics create",
    "pubsub topics update",
    "pubsub topics delete",
    "pubsub subscriptions describe",
    "pubsub subscriptions create",
    "pubsub subscriptions update",
    "pubsub subscriptions delete",
    "pubsub subscriptions seek",
    "pubsub snapshots describe",
    "pubsub snapshots create",
    "pubsub snapshots delete",
    "iam service-accounts describe",
    "iam service-accounts create",
    "iam service-accounts delete",
    "iam roles describe",
    "iam roles create",
    "iam roles update",
    "iam roles undelete",
    "iam roles delete",
    "artifacts repositories describe",
    "artifacts repositories create",
    "artifacts repositories update",
    "artifacts repositories set-cleanup-policies",
    "artifacts repositories delete",
    "functions list",
    "functions describe",
    "functions deploy",
    "functions delete",
    "eventarc triggers describe",
    "auth print-access-token",
    "logging metrics describe",
    "logging metrics create",
    "logging metrics update",
    "logging metrics delete",
    "logging read",
    "alpha monitoring policies list",
    "alpha monitoring policies create",
    "alpha monitoring policies update",
    "alpha monitoring policies delete",
    "workflows describe",
    "workflows deploy",
    "workflows delete",
    "pubsub topics list",
    "pubsub subscriptions list",
    "firestore databases describe",
    "firestore databases create",
    "firestore locations list",
    "firestore fields ttls list",
    "firestore fields ttls update",
    "storage buckets describe",
    "storage buckets notifications list",
    "storage buckets notifications create",
    "storage buckets notifications delete",
}
IAM_GROUPS = {
    "projects": "project",
    "pubsub topics": "topic",
    "pubsub subscriptions": "subscription",
    "iam service-accounts": "service_account",
    "run services": "run_service",
    "kms keys": "kms_key",
}
for _group in IAM_GROUPS:
    for _verb in ("get-iam-policy", "add-iam-policy-binding", "remove-iam-policy-binding"):
        COMMANDS.add(f"{_group} {_verb}")

PROJECT = "test-project"
PROJECT_NUMBER = "123456789012"
# What enabling an API creates at once (the rest need `services identity create`).
AGENTS_WITH_THE_API = {
    "cloudfunctions.googleapis.com": "gcf-admin-robot",
    "run.googleapis.com": "serverless-robot-prod",
    "eventarc.googleapis.com": "gcp-sa-eventarc",
}
IDENTITY_DOMAINS = {
    "pubsub.googleapis.com": "gcp-sa-pubsub",
    "artifactregistry.googleapis.com": "gcp-sa-artifactregistry",
}
BUILD_ROLE = "roles/run.builder"
# The roles the earlier deploy.sh gave its build account: they build too.
LEGACY_BUILD_ROLES = {
    "roles/logging.logWriter",
    "roles/artifactregistry.writer",
    "roles/storage.objectViewer",
}
KMS_ROLE = "roles/cloudkms.cryptoKeyEncrypterDecrypter"

EMPTY_STATE: dict[str, Any] = {
    "project_id": PROJECT,
    "config_project": "",
    "project_number": PROJECT_NUMBER,
    "services": [],
    # Service agents that exist: "service-N@DOMAIN.iam.gserviceaccount.com".
    "service_agents": [],
    "topics": {},
    "subscriptions": {},
    "snapshots": {},
    "service_accounts": {},
    "roles": {},
    # "REGION/NAME" -> the Cloud Functions v2 Function resource.
    "functions": {},
    "triggers": {},
    "run_services": {},
    "repositories": {},
    "workflows": {},
    "iam": {},
    "kms_keys": [],
    "log_metrics": {},
    # The relay's log lines: {"service": Cloud Run service, "outcome": ...}.
    "log_entries": [],
    "alert_policies": {},
    "notification_channels": [],
    # Cloud Monitoring overrides: metric -> subscription -> value (None: no data).
    "metrics": {},
    # command -> error messages its next calls fail with, one per call.
    "transient": {},
    # The Cloud Functions API refuses to change an Eventarc trigger to HTTP in place.
    "refuse_trigger_change": False,
    # Conditional bindings of the project policy: [role, member, expression, title, description].
    "iam_conditions": {},
    # Firestore: database id -> the Database resource; "DATABASE/GROUP/FIELD" -> TTL state.
    "firestore_databases": {},
    "firestore_ttls": {},
    # What `firestore locations list` offers (a few real ones; us-west8 is a Cloud Run
    # region here, not a Firestore location).
    "firestore_locations": ["nam5", "eur3", "us-central1", "us-east1", "europe-west1"],
    # Cloud Storage: bucket -> {"projectNumber", "notifications": {id: Notification}}.
    "buckets": {},
    "seq": 0,
}
READ_VERBS = {"describe", "list", "get-iam-policy", "read"}
INGRESS = {
    "internal-only": "ALLOW_INTERNAL_ONLY",
    "internal-and-gclb": "ALLOW_INTERNAL_AND_GCLB",
    "all": "ALLOW_ALL",
}
EGRESS = {"private-ranges-only": "PRIVATE_RANGES_ONLY", "all": "ALL_TRAFFIC"}
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DEFAULT_SUBSCRIPTION_TTL = "2678400s"  # 31 days, the API's default


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


# -- gcloud's value() printer -------------------------------------------------------


KEY_PART = re.compile(r'"([^"]*)"|([^."]+)')


def lookup(record: Any, path: str) -> Any:
    """A dotted key; a part in double quotes may hold spaces ("Bucket URL".x)."""
    for match in KEY_PART.finditer(path):
        key = match[1] if match[1] is not None else match[2]
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record


def render_item(value: Any) -> str:
    """An element of a list, as gcloud's printer shows it (dicts in Python's repr)."""
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def render_value(value: Any) -> str:
    """One value() column, as gcloud's resource printer renders it: lists joined
    with ';', a dict as key=value pairs in key order joined with ';'."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, list):
        return ";".join(render_item(item) for item in value)
    if isinstance(value, dict):
        return ";".join(f"{key}={render_item(item)}" for key, item in sorted(value.items()))
    return str(value)


VALUE_FORMAT = re.compile(r"value(?:\[separator=\"(?P<sep>[^\"]*)\"\])?\((?P<keys>[^)]*)\)")
# When a list, every (records, --format, output) rendered is kept here: test_gcloud_cli.py
# renders the same with gcloud's own resource printer and compares.
RENDERED: list[tuple[list[Any], str, str]] | None = None


def output(records: list[Any], fmt: str | None) -> str:
    text = render(records, fmt)
    if RENDERED is not None and fmt not in (None, "none", "json"):
        RENDERED.append((copy.deepcopy(records), str(fmt), text))
    return text


def render(records: list[Any], fmt: str | None) -> str:
    if fmt == "none":
        return ""
    if fmt is None or fmt == "json":
        return json.dumps(records[0] if len(records) == 1 else records, indent=2) + "\n"
    match = VALUE_FORMAT.fullmatch(fmt)
    if match is None:
        raise GcloudError(f"fake gcloud: unsupported --format {fmt}", code=2)
    separator = match["sep"] if match["sep"] is not None else "\t"
    keys = [key.strip() for key in match["keys"].split(",")]
    lines = [separator.join(render_value(lookup(r, k)) for k in keys) for r in records]
    return "".join(line + "\n" for line in lines)


def parse_arg_dict(value: str) -> dict[str, str]:
    """gcloud's KEY=VALUE list, with its escaping: ^D^ makes D the delimiter."""
    delimiter = ","
    if value.startswith("^") and "^" in value[1:]:
        delimiter, value = value[1:].split("^", 1)
    return dict(item.split("=", 1) for item in value.split(delimiter) if item)


def parse_condition(value: str) -> tuple[str, str, str] | None:
    """--condition: None, or (expression, title, description) as IAM requires them."""
    if value == "None":
        return None
    condition = parse_arg_dict(value)
    if not condition.get("expression") or not condition.get("title"):
        raise GcloudError("ERROR: condition must have an expression and a title", code=2)
    if set(condition) - {"expression", "title", "description"}:
        raise GcloudError(f"ERROR: unknown condition keys {sorted(condition)}", code=2)
    return condition["expression"], condition["title"], condition.get("description", "")


def short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def seconds(duration: str) -> str:
    """A gcloud duration (7d, 600s, 10m) as the API reports it: '604800s'."""
    match = re.fullmatch(r"(\d+)([smhd])", duration)
    if match is None:
        raise GcloudError(f"ERROR: invalid duration {duration}")
    return f"{int(match[1]) * DURATION_UNITS[match[2]]}s"


def labels_of(value: str) -> dict[str, str]:
    return dict(pair.partition("=")[::2] for pair in value.split(",") if pair)


def not_found(command: str, kind: str, name: str) -> GcloudError:
    return GcloudError(
        f"ERROR: (gcloud.{command.replace(' ', '.')}) NOT_FOUND: {kind} [{name}] not found"
    )


class FakeProject:
    def __init__(self, state: dict[str, Any], project: str) -> None:
        self.state = state
        self.project = project
        self.number = state["project_number"]

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

    def next_seq(self) -> int:
        self.state["seq"] += 1
        return int(self.state["seq"])

    def agent(self, domain: str) -> str:
        return f"service-{self.number}@{domain}.iam.gserviceaccount.com"

    def require_member(self, command: str, member: str) -> None:
        kind, _, email = member.partition(":")
        if kind != "serviceAccount":
            return
        own = email.endswith(f"@{self.project}.iam.gserviceaccount.com")
        is_agent = email.startswith(f"service-{self.number}@")
        if (own and email not in self.state["service_accounts"]) or (
            is_agent and email not in self.state["service_agents"]
        ):
            raise GcloudError(
                f"ERROR: (gcloud.{command.replace(' ', '.')}) INVALID_ARGUMENT: "
                f"Service account {email} does not exist."
            )

    def resource_key(self, group: str, command: str, resource: str, flags: Any) -> str:
        kind = IAM_GROUPS[group]
        name = short(resource)
        if kind == "project":
            if resource != self.project:
                raise not_found(command, "project", resource)
            return f"project:{resource}"
        if kind == "kms_key":
            if resource not in self.state["kms_keys"]:
                raise not_found(command, "key", resource)
            return f"kms_key:{resource}"
        if kind == "run_service":
            name = f"{flags.get('region')}/{name}"
        tables = {
            "topic": "topics",
            "subscription": "subscriptions",
            "service_account": "service_accounts",
            "run_service": "run_services",
        }
        if name not in self.state[tables[kind]]:
            raise not_found(command, kind, resource)
        return f"{kind}:{name}"

    def has_project_role(self, member: str, roles: set[str]) -> bool:
        bindings = self.state["iam"].get(f"project:{self.project}", [])
        return any(role in roles and who == member for role, who in bindings)

    def check_topic_key(self, command: str, key: str) -> None:
        if key not in self.state["kms_keys"]:
            raise not_found(command, "key", key)
        users = {m for r, m in self.state["iam"].get(f"kms_key:{key}", []) if r == KMS_ROLE}
        if f"serviceAccount:{self.agent('gcp-sa-pubsub')}" not in users:
            raise GcloudError(
                "ERROR: FAILED_PRECONDITION: Cloud Pub/Sub did not have the necessary "
                f"permissions configured to support the provided encryption key {key}"
            )

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
        key = self.resource_key(group, command, resource, flags)
        bindings: list[list[str]] = self.state["iam"].get(key, [])
        conditional: list[list[str]] = self.state["iam_conditions"].get(key, [])
        if verb == "get-iam-policy":
            if flags.get("flatten") == "bindings[].members":
                records: list[Any] = [{"bindings": {"role": r, "members": m}} for r, m in bindings]
                for role, member, expression, title, description in conditional:
                    shown = {"expression": expression, "title": title}
                    if description:
                        shown["description"] = description
                    binding = {"role": role, "members": member, "condition": shown}
                    records.append({"bindings": binding})
                return records
            roles: dict[str, list[str]] = {}
            for role, member in bindings:
                roles.setdefault(role, []).append(member)
            return [{"bindings": [{"role": r, "members": m} for r, m in roles.items()]}]
        member, role = flags["member"], flags["role"]
        condition = None
        if group == "projects":
            if "condition" not in flags:
                raise GcloudError(
                    "ERROR: (gcloud.projects.add-iam-policy-binding) Adding a binding without "
                    "specifying a condition to a policy containing conditions is prohibited "
                    "in non-interactive mode. Run the command again with `--condition=None`"
                )
            condition = parse_condition(flags["condition"])
        if verb == "add-iam-policy-binding":
            self.require_member(command, member)
            if role.startswith("projects/"):
                custom = self.state["roles"].get(short(role))
                if custom is None or custom.get("deleted"):
                    raise GcloudError(f"ERROR: INVALID_ARGUMENT: Role {role} does not exist.")
            if condition is not None:
                entry = [role, member, *condition]
                if entry not in conditional:
                    self.state["iam_conditions"][key] = [*conditional, entry]
            elif [role, member] not in bindings:
                self.state["iam"][key] = [*bindings, [role, member]]
        elif condition is not None and [role, member, *condition] in conditional:
            conditional.remove([role, member, *condition])
        elif condition is None and [role, member] in bindings:
            bindings.remove([role, member])
        else:
            raise GcloudError(
                "ERROR: Policy binding with the specified principal, role, and condition not found!"
            )
        return [{"bindings": self.state["iam"].get(key, [])}]

    def cmd_config_get_value(self, command: str, args: list[str], flags: dict[str, Any]) -> Any:
        return [{"value": self.state["config_project"]}]

    def cmd_projects_describe(self, command: str, args: list[str], flags: dict[str, Any]) -> Any:
        if args[0] != self.project:
            raise not_found(command, "project", args[0])
        return [{"projectId": self.project, "projectNumber": self.number}]

    def cmd_services_list(self, command: str, args: list[str], flags: dict[str, Any]) -> Any:
        return [{"config": {"name": name}} for name in self.state["services"]]

    def cmd_services_enable(self, command: str, args: list[str], flags: dict[str, Any]) -> Any:
        for name in args:
            if name not in self.state["services"]:
                self.state["services"].append(name)
            if name in AGENTS_WITH_THE_API:
                self.add_agent(self.agent(AGENTS_WITH_THE_API[name]))
        return []

    def add_agent(self, email: str) -> None:
        if email not in self.state["service_agents"]:
            self.state["service_agents"].append(email)

    def cmd_beta_services_identity_create(self, command: str, args: list[str], flags: Any) -> Any:
        service = flags["service"]
        if service not in self.state["services"]:
            raise GcloudError(f"ERROR: FAILED_PRECONDITION: {service} is not enabled")
        if service not in IDENTITY_DOMAINS:
            raise GcloudError(f"fake gcloud: no identity for {service}", code=2)
        email = self.agent(IDENTITY_DOMAINS[service])
        self.add_agent(email)
        return [{"email": email}]

    def cmd_storage_service_agent(self, command: str, args: list[str], flags: Any) -> Any:
        email = self.agent("gs-project-accounts")
        self.add_agent(email)
        return [{"email": email}]

    # -- Pub/Sub -------------------------------------------------------------------

    def cmd_pubsub_topics_describe(self, command: str, args: list[str], flags: Any) -> Any:
        return [self.get(command, "topics", short(args[0]))]

    def cmd_pubsub_topics_create(self, command: str, args: list[str], flags: Any) -> Any:
        record: dict[str, Any] = {
            "name": f"projects/{self.project}/topics/{args[0]}",
            "labels": labels_of(flags.get("labels", "")),
        }
        if "topic-encryption-key" in flags:
            self.check_topic_key(command, flags["topic-encryption-key"])
            record["kmsKeyName"] = flags["topic-encryption-key"]
        self.create(command, "topics", args[0], record)
        return []

    def cmd_pubsub_topics_update(self, command: str, args: list[str], flags: Any) -> Any:
        record = self.get(command, "topics", args[0])
        if "update-labels" in flags:
            record["labels"] = {**record.get("labels", {}), **labels_of(flags["update-labels"])}
        if "topic-encryption-key" in flags:
            self.check_topic_key(command, flags["topic-encryption-key"])
            record["kmsKeyName"] = flags["topic-encryption-key"]
        self.state["topics"][args[0]] = record
        return []

    def cmd_pubsub_topics_delete(self, command: str, args: list[str], flags: Any) -> Any:
        self.get(command, "topics", args[0])
        del self.state["topics"][args[0]]
        self.state["iam"].pop(f"topic:{args[0]}", None)
        # Its subscriptions stay, detached, as in Pub/Sub.
        for record in self.state["subscriptions"].values():
            if record["topic"] == f"projects/{self.project}/topics/{args[0]}":
                record["topic"] = "_deleted-topic_"
        return []

    def cmd_pubsub_subscriptions_describe(self, command: str, args: list[str], flags: Any) -> Any:
        record = self.get(command, "subscriptions", short(args[0]))
        record.pop("messages", None)  # not part of the resource
        return [record]

    def subscription_settings(self, command: str, record: dict[str, Any], flags: Any) -> None:
        """The flags create and update share, applied to a Subscription resource."""
        if "push-endpoint" in flags:
            endpoint = flags["push-endpoint"]
            if not endpoint.startswith("https://"):
                raise GcloudError("ERROR: INVALID_ARGUMENT: Invalid push endpoint given")
            push: dict[str, Any] = {"pushEndpoint": endpoint}
            account = flags.get("push-auth-service-account")
            if account:
                self.require_member(command, f"serviceAccount:{account}")
                push["oidcToken"] = {
                    "serviceAccountEmail": account,
                    "audience": flags.get("push-auth-token-audience") or endpoint,
                }
            record["pushConfig"] = push
        if "ack-deadline" in flags:
            deadline = int(flags["ack-deadline"])
            if not 10 <= deadline <= 600:
                raise GcloudError(f"ERROR: ({command}) --ack-deadline must be 10-600")
            record["ackDeadlineSeconds"] = deadline
        if "dead-letter-topic" in flags:
            self.get(command, "topics", short(flags["dead-letter-topic"]))
            attempts = int(flags.get("max-delivery-attempts", 5))
            if not 5 <= attempts <= 100:
                raise GcloudError("ERROR: --max-delivery-attempts must be 5-100")
            record["deadLetterPolicy"] = {
                "deadLetterTopic": flags["dead-letter-topic"],
                "maxDeliveryAttempts": attempts,
            }
        if "min-retry-delay" in flags or "max-retry-delay" in flags:
            record["retryPolicy"] = {
                "minimumBackoff": seconds(flags.get("min-retry-delay", "10s")),
                "maximumBackoff": seconds(flags.get("max-retry-delay", "600s")),
            }
        if "expiration-period" in flags:
            period = flags["expiration-period"]
            record["expirationPolicy"] = {} if period == "never" else {"ttl": seconds(period)}
        if "message-retention-duration" in flags:
            record["messageRetentionDuration"] = seconds(flags["message-retention-duration"])
        if "update-labels" in flags:
            record["labels"] = {**record.get("labels", {}), **labels_of(flags["update-labels"])}

    def cmd_pubsub_subscriptions_create(self, command: str, args: list[str], flags: Any) -> Any:
        topic = short(flags["topic"])
        self.get(command, "topics", topic)
        record: dict[str, Any] = {
            "name": f"projects/{self.project}/subscriptions/{args[0]}",
            "topic": f"projects/{self.project}/topics/{topic}",
            "ackDeadlineSeconds": 10,
            "messageRetentionDuration": "604800s",
            "expirationPolicy": {"ttl": DEFAULT_SUBSCRIPTION_TTL},
            "labels": labels_of(flags.get("labels", "")),
            "messages": [],
        }
        self.subscription_settings(command, record, flags)
        self.create(command, "subscriptions", args[0], record)
        return []

    def cmd_pubsub_subscriptions_update(self, command: str, args: list[str], flags: Any) -> Any:
        name = short(args[0])
        record = self.get(command, "subscriptions", name)
        self.subscription_settings(command, record, flags)
        self.state["subscriptions"][name] = record
        return []

    def cmd_pubsub_subscriptions_delete(self, command: str, args: list[str], flags: Any) -> Any:
        name = short(args[0])
        self.get(command, "subscriptions", name)
        del self.state["subscriptions"][name]  # with its messages
        self.state["iam"].pop(f"subscription:{name}", None)
        return []

    def cmd_pubsub_subscriptions_seek(self, command: str, args: list[str], flags: Any) -> Any:
        name = short(args[0])
        record = self.get(command, "subscriptions", name)
        snapshot = self.get(command, "snapshots", short(flags["snapshot"]))
        if snapshot["topic"] != record["topic"]:
            raise GcloudError(
                "ERROR: FAILED_PRECONDITION: The snapshot's topic must be the same as "
                "that of the provided subscription"
            )
        # The snapshot's unacknowledged messages are unacknowledged here now.
        kept = list(record["messages"])
        record["messages"] = kept + [m for m in snapshot["messages"] if m not in kept]
        self.state["subscriptions"][name] = record
        return []

    def cmd_pubsub_snapshots_describe(self, command: str, args: list[str], flags: Any) -> Any:
        return [self.get(command, "snapshots", short(args[0]))]

    def cmd_pubsub_snapshots_create(self, command: str, args: list[str], flags: Any) -> Any:
        source = self.get(command, "subscriptions", short(flags["subscription"]))
        record = {
            "name": f"projects/{self.project}/snapshots/{args[0]}",
            "topic": source["topic"],
            "labels": labels_of(flags.get("labels", "")),
            "messages": list(source["messages"]),
        }
        self.create(command, "snapshots", args[0], record)
        return []

    def cmd_pubsub_snapshots_delete(self, command: str, args: list[str], flags: Any) -> Any:
        self.get(command, "snapshots", short(args[0]))
        del self.state["snapshots"][short(args[0])]
        return []

    # -- IAM -------------------------------------------------------------------------

    def cmd_iam_service_accounts_describe(self, command: str, args: list[str], flags: Any) -> Any:
        return [self.get(command, "service_accounts", args[0])]

    def cmd_iam_service_accounts_create(self, command: str, args: list[str], flags: Any) -> Any:
        email = f"{args[0]}@{self.project}.iam.gserviceaccount.com"
        record = {"email": email, "displayName": flags.get("display-name")}
        self.create(command, "service_accounts", email, record)
        return []

    def cmd_iam_service_accounts_delete(self, command: str, args: list[str], flags: Any) -> Any:
        email = args[0]
        self.get(command, "service_accounts", email)
        del self.state["service_accounts"][email]
        self.state["iam"].pop(f"service_account:{email}", None)
        # Its grants stay in other policies, marked deleted, as IAM shows them.
        member, gone = f"serviceAccount:{email}", f"deleted:serviceAccount:{email}?uid=1"
        for key, bindings in self.state["iam"].items():
            self.state["iam"][key] = [[r, gone if m == member else m] for r, m in bindings]
        for key, entries in self.state["iam_conditions"].items():
            self.state["iam_conditions"][key] = [
                [r, gone if m == member else m, *rest] for r, m, *rest in entries
            ]
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

    # -- Artifact Registry -------------------------------------------------------------

    def repository_key(self, args: list[str], flags: Any) -> str:
        return f"{flags['location']}/{args[0]}"

    def cmd_artifacts_repositories_describe(self, command: str, args: list[str], flags: Any) -> Any:
        return [self.get(command, "repositories", self.repository_key(args, flags))]

    def cmd_artifacts_repositories_create(self, command: str, args: list[str], flags: Any) -> Any:
        if flags.get("repository-format") != "docker":
            raise GcloudError("ERROR: --repository-format is required", code=2)
        record: dict[str, Any] = {
            "name": f"projects/{self.project}/locations/{flags['location']}/repositories/{args[0]}",
            "format": "DOCKER",
            "labels": labels_of(flags.get("labels", "")),
            "images": [],
        }
        if "kms-key" in flags:
            if flags["kms-key"] not in self.state["kms_keys"]:
                raise not_found(command, "key", flags["kms-key"])
            record["kmsKeyName"] = flags["kms-key"]
        self.create(command, "repositories", self.repository_key(args, flags), record)
        return []

    def cmd_artifacts_repositories_update(self, command: str, args: list[str], flags: Any) -> Any:
        key = self.repository_key(args, flags)
        record = self.get(command, "repositories", key)
        record["labels"] = {**record.get("labels", {}), **labels_of(flags.get("update-labels", ""))}
        self.state["repositories"][key] = record
        return []

    def cmd_artifacts_repositories_set_cleanup_policies(
        self, command: str, args: list[str], flags: Any
    ) -> Any:
        key = self.repository_key(args, flags)
        record = self.get(command, "repositories", key)
        # As gcloud's cleanup_policy_util.ParseCleanupPolicy and the API store them.
        policies: dict[str, Any] = {}
        for policy in json.loads(Path(flags["policy"]).read_text("utf-8")):
            entry: dict[str, Any] = {
                "id": policy["name"],
                "action": policy["action"]["type"].upper(),
            }
            if ("condition" in policy) == ("mostRecentVersions" in policy):
                raise GcloudError("ERROR: one of condition or mostRecentVersions per policy")
            if "condition" in policy:
                condition = dict(policy["condition"])
                for name in ("olderThan", "newerThan"):
                    if name in condition:
                        condition[name] = seconds(condition[name])
                condition["tagState"] = condition.get("tagState", "any").upper()
                entry["condition"] = condition
            else:
                entry["mostRecentVersions"] = policy["mostRecentVersions"]
            policies[policy["name"]] = entry
        record["cleanupPolicies"] = policies
        self.state["repositories"][key] = record
        return []

    def cmd_artifacts_repositories_delete(self, command: str, args: list[str], flags: Any) -> Any:
        key = self.repository_key(args, flags)
        self.get(command, "repositories", key)
        del self.state["repositories"][key]
        return []

    # -- Cloud Functions (2nd gen) ---------------------------------------------------

    def cmd_functions_list(self, command: str, args: list[str], flags: Any) -> Any:
        return [{"name": record["name"]} for record in self.state["functions"].values()]

    def cmd_functions_describe(self, command: str, args: list[str], flags: Any) -> Any:
        return [self.get(command, "functions", f"{flags['region']}/{args[0]}")]

    def drop_trigger(self, trigger: str) -> None:
        """Eventarc deletes a trigger with its subscription, and its messages."""
        record = self.state["triggers"].pop(trigger)
        subscription = short(record["transport"]["pubsub"]["subscription"])
        self.state["subscriptions"].pop(subscription, None)
        self.state["iam"].pop(f"subscription:{subscription}", None)

    def check_build(self, command: str, flags: Any, existing: dict[str, Any] | None) -> str:
        build = str(flags.get("build-service-account", ""))
        if not build and existing:
            build = existing["buildConfig"].get("serviceAccount") or ""
        if build and not build.startswith(f"projects/{self.project}/serviceAccounts/"):
            raise GcloudError("ERROR: (gcloud.functions.deploy) bad --build-service-account")
        email = short(build)
        if build and email not in self.state["service_accounts"]:
            raise GcloudError(f"ERROR: (gcloud.functions.deploy) {email} does not exist")
        member = f"serviceAccount:{email}"
        holds = self.has_project_role(member, {BUILD_ROLE}) or all(
            self.has_project_role(member, {role}) for role in LEGACY_BUILD_ROLES
        )
        if build and not holds:
            raise GcloudError(
                "ERROR: (gcloud.functions.deploy) OperationError: code=9, message=Could not "
                "build the function due to a missing permission on the build service account. "
                "If you didn't revoke that permission explicitly, this could be caused by a "
                "change in the organization policies."
            )
        return build

    def cmd_functions_deploy(self, command: str, args: list[str], flags: Any) -> Any:
        name, region = args[0], flags["region"]
        key = f"{region}/{name}"
        existing = self.state["functions"].get(key)
        build = self.check_build(command, flags, existing)
        account = flags.get("service-account")
        if account and account not in self.state["service_accounts"]:
            raise GcloudError(f"ERROR: (gcloud.functions.deploy) {account} does not exist")
        if not Path(flags["source"], "main.py").is_file():
            raise GcloudError("ERROR: (gcloud.functions.deploy) no main.py in --source")
        topic, http = flags.get("trigger-topic"), "trigger-http" in flags
        if existing is None and not topic and not http:
            raise GcloudError(
                "ERROR: (gcloud.functions.deploy) You must specify a trigger when "
                "deploying a new function."
            )
        if http and "retry" in flags:
            raise GcloudError("ERROR: (gcloud.functions.deploy) --retry needs an event trigger")
        repository = flags.get("docker-repository")
        if repository:
            location, repo = repository.split("/locations/")[1].split("/repositories/")
            if f"{location}/{repo}" not in self.state["repositories"]:
                raise GcloudError(f"ERROR: (gcloud.functions.deploy) NOT_FOUND: {repository}")
        if flags.get("kms-key") and flags["kms-key"] not in self.state["kms_keys"]:
            raise not_found(command, "key", flags["kms-key"])
        record: dict[str, Any] = copy.deepcopy(existing) if existing else {}
        event_trigger = record.get("eventTrigger")
        if topic:
            self.get(command, "topics", topic)
            # The trigger is in the update mask: a new Eventarc trigger and subscription.
            if event_trigger:
                self.drop_trigger(event_trigger["trigger"])
            event_trigger = {
                "trigger": self.new_trigger(name, region, topic),
                "pubsubTopic": f"projects/{self.project}/topics/{topic}",
                "serviceAccountEmail": flags.get("trigger-service-account") or account,
                "retryPolicy": "RETRY_POLICY_RETRY"
                if flags.get("retry")
                else "RETRY_POLICY_DO_NOT_RETRY",
            }
        elif http and event_trigger:
            if self.state["refuse_trigger_change"]:
                raise GcloudError(
                    "ERROR: (gcloud.functions.deploy) INVALID_ARGUMENT: the trigger type of "
                    "an existing function cannot be changed"
                )
            self.drop_trigger(event_trigger["trigger"])
            event_trigger = None
        service = record.get("serviceConfig", {})
        env = service.get("environmentVariables", {})
        if "set-env-vars" in flags:
            env = parse_env_vars(flags["set-env-vars"])
        if flags.get("clear-secrets"):
            service.pop("secretEnvironmentVariables", None)
        for flag, field, value in (
            ("memory", "availableMemory", flags.get("memory")),
            ("cpu", "availableCpu", flags.get("cpu")),
            ("concurrency", "maxInstanceRequestConcurrency", flags.get("concurrency")),
            ("max-instances", "maxInstanceCount", flags.get("max-instances")),
            ("service-account", "serviceAccountEmail", account),
        ):
            if flag in flags:
                service[field] = int(value) if field.startswith("max") else value
        if "timeout" in flags:
            service["timeoutSeconds"] = int(str(flags["timeout"]).rstrip("s"))
        if "ingress-settings" in flags:
            service["ingressSettings"] = INGRESS[flags["ingress-settings"]]
        service.setdefault("ingressSettings", "ALLOW_ALL")
        if "vpc-connector" in flags:
            service["vpcConnector"] = flags["vpc-connector"]
            service["vpcConnectorEgressSettings"] = EGRESS[
                flags.get("egress-settings", "private-ranges-only")
            ]
        if flags.get("clear-vpc-connector"):
            service.pop("vpcConnector", None)
            service.pop("vpcConnectorEgressSettings", None)
        service["environmentVariables"] = env
        service["service"] = f"projects/{self.project}/locations/{region}/services/{name}"
        service["uri"] = f"https://{name}-x7k2q9wz3a-uc.a.run.app"
        build_config = record.get("buildConfig", {})
        for flag, field in (
            ("entry-point", "entryPoint"),
            ("runtime", "runtime"),
            ("docker-repository", "dockerRepository"),
            ("build-worker-pool", "workerPool"),
        ):
            if flag in flags:
                build_config[field] = flags[flag]
        if build:
            build_config["serviceAccount"] = build
        if flags.get("clear-build-worker-pool"):
            build_config.pop("workerPool", None)
        labels = dict(record.get("labels", {}))
        labels.update(labels_of(str(flags.get("update-labels", ""))))
        record.update(
            {
                "name": f"projects/{self.project}/locations/{region}/functions/{name}",
                "state": "ACTIVE",
                "environment": "GEN_2",
                "url": f"https://{region}-{self.project}.cloudfunctions.net/{name}",
                "labels": labels,
                "buildConfig": build_config,
                "serviceConfig": service,
            }
        )
        if "kms-key" in flags:
            record["kmsKeyName"] = flags["kms-key"]
        if flags.get("clear-kms-key"):
            record.pop("kmsKeyName", None)
        record.pop("eventTrigger", None)
        if event_trigger:
            record["eventTrigger"] = event_trigger
        self.state["run_services"].setdefault(key, {"name": name})
        self.state["functions"][key] = record
        return []

    def new_trigger(self, name: str, region: str, topic: str) -> str:
        """An Eventarc trigger and its subscription, as `--trigger-topic` makes them."""
        suffix = 123456 + self.next_seq()
        trigger = f"projects/{self.project}/locations/{region}/triggers/{name}-{suffix}"
        subscription = f"eventarc-{region}-{name}-{suffix}-sub-789"
        self.state["subscriptions"][subscription] = {
            "name": f"projects/{self.project}/subscriptions/{subscription}",
            "topic": f"projects/{self.project}/topics/{topic}",
            "pushConfig": {"pushEndpoint": f"https://{name}-x7k2q9wz3a-uc.a.run.app"},
            "ackDeadlineSeconds": 10,
            "expirationPolicy": {},
            "messages": [],
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

    def cmd_functions_delete(self, command: str, args: list[str], flags: Any) -> Any:
        key = f"{flags['region']}/{args[0]}"
        record = self.get(command, "functions", key)
        if "eventTrigger" in record:
            self.drop_trigger(record["eventTrigger"]["trigger"])
        self.state["run_services"].pop(key, None)
        self.state["iam"].pop(f"run_service:{key}", None)
        del self.state["functions"][key]
        return []

    def cmd_eventarc_triggers_describe(self, command: str, args: list[str], flags: Any) -> Any:
        return [self.get(command, "triggers", args[0])]

    # -- Logging and Monitoring --------------------------------------------------------

    def cmd_logging_metrics_describe(self, command: str, args: list[str], flags: Any) -> Any:
        return [self.get(command, "log_metrics", args[0])]

    def read_metric(self, command: str, args: list[str], flags: Any) -> dict[str, Any]:
        metric: dict[str, Any] = json.loads(Path(flags["config-from-file"]).read_text("utf-8"))
        labels = {label["key"] for label in metric["metricDescriptor"].get("labels", [])}
        if not metric.get("filter") or set(metric.get("labelExtractors", {})) != labels:
            raise GcloudError("ERROR: INVALID_ARGUMENT: a label extractor per metric label")
        metric["name"] = args[0]
        return metric

    def cmd_logging_metrics_create(self, command: str, args: list[str], flags: Any) -> Any:
        self.create(command, "log_metrics", args[0], self.read_metric(command, args, flags))
        return []

    def cmd_logging_metrics_update(self, command: str, args: list[str], flags: Any) -> Any:
        self.get(command, "log_metrics", args[0])
        self.state["log_metrics"][args[0]] = self.read_metric(command, args, flags)
        return []

    def cmd_logging_metrics_delete(self, command: str, args: list[str], flags: Any) -> Any:
        self.get(command, "log_metrics", args[0])
        del self.state["log_metrics"][args[0]]
        return []

    def cmd_logging_read(self, command: str, args: list[str], flags: Any) -> Any:
        names = set(re.findall(r'resource\.labels\.service_name="([^"]+)"', args[0]))
        if not names or "jsonPayload.outcome" not in args[0]:
            raise GcloudError(f"fake gcloud: unsupported log filter {args[0]}", code=2)
        entries = [e for e in self.state["log_entries"] if e["service"] in names]
        limit = int(flags.get("limit", 1000))
        return [{"jsonPayload": {"outcome": e["outcome"]}} for e in entries[:limit]]

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
        policy["name"] = f"projects/{self.project}/alertPolicies/{self.next_seq()}"
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

    # -- Workflows ----------------------------------------------------------------------

    def cmd_workflows_describe(self, command: str, args: list[str], flags: Any) -> Any:
        return [self.get(command, "workflows", f"{flags['location']}/{args[0]}")]

    def cmd_workflows_deploy(self, command: str, args: list[str], flags: Any) -> Any:
        account = flags.get("service-account")
        if account and account not in self.state["service_accounts"]:
            raise GcloudError(f"ERROR: (gcloud.workflows.deploy) {account} does not exist")
        if not Path(flags["source"]).is_file():
            raise GcloudError("ERROR: (gcloud.workflows.deploy) --source not found")
        self.state["workflows"][f"{flags['location']}/{args[0]}"] = {
            "name": f"projects/{self.project}/locations/{flags['location']}/workflows/{args[0]}",
            "state": "ACTIVE",
            "labels": labels_of(flags.get("labels", "")),
            # The API names the account in full.
            "serviceAccount": f"projects/{self.project}/serviceAccounts/{account}",
            "userEnvVars": labels_of(flags.get("set-env-vars", "")),
        }
        return []

    def cmd_workflows_delete(self, command: str, args: list[str], flags: Any) -> Any:
        key = f"{flags['location']}/{args[0]}"
        self.get(command, "workflows", key)
        del self.state["workflows"][key]
        return []

    # -- listings by label -------------------------------------------------------------

    def by_labels(self, table: str, flags: Any) -> list[Any]:
        """Records whose labels match --filter="labels.K=V AND labels.K=V" (the only
        filter deploy.sh uses on lists)."""
        wanted = dict(re.findall(r"labels\.([a-z_-]+)=([A-Za-z0-9_-]+)", flags.get("filter", "")))
        clauses = str(flags.get("filter", "")).split(" AND ")
        if not wanted or len(clauses) != len(wanted):
            raise GcloudError(f"fake gcloud: unsupported --filter {flags.get('filter')}", code=2)
        records = []
        for record in self.state[table].values():
            labels = record.get("labels", {})
            if all(labels.get(k) == v for k, v in wanted.items()):
                found = dict(record)
                found.pop("messages", None)
                records.append(found)
        return records

    def cmd_pubsub_topics_list(self, command: str, args: list[str], flags: Any) -> Any:
        return self.by_labels("topics", flags)

    def cmd_pubsub_subscriptions_list(self, command: str, args: list[str], flags: Any) -> Any:
        return self.by_labels("subscriptions", flags)

    # -- Firestore -----------------------------------------------------------------------

    def require_api(self, command: str, api: str) -> None:
        if api not in self.state["services"]:
            raise GcloudError(
                f"ERROR: (gcloud.{command.replace(' ', '.')}) PERMISSION_DENIED: "
                f"{api.split('.')[0].title()} API has not been used in project {self.number} "
                "before or it is disabled. SERVICE_DISABLED"
            )

    def database(self, command: str, flags: Any) -> dict[str, Any]:
        self.require_api(command, "firestore.googleapis.com")
        database = str(flags.get("database", "(default)"))
        record = self.state["firestore_databases"].get(database)
        if record is None:
            raise GcloudError(
                f"ERROR: (gcloud.{command.replace(' ', '.')}) NOT_FOUND: The database "
                f"{database} does not exist for project {self.project}"
            )
        return dict(record)

    def cmd_firestore_databases_describe(self, command: str, args: list[str], flags: Any) -> Any:
        return [self.database(command, flags)]

    def cmd_firestore_databases_create(self, command: str, args: list[str], flags: Any) -> Any:
        self.require_api(command, "firestore.googleapis.com")
        database, location = str(flags.get("database", "(default)")), flags["location"]
        if database in self.state["firestore_databases"]:
            raise GcloudError(f"ERROR: ALREADY_EXISTS: Database {database} already exists.")
        if location not in self.state["firestore_locations"]:
            raise GcloudError(f"ERROR: INVALID_ARGUMENT: invalid locationId {location}")
        kinds = {"firestore-native": "FIRESTORE_NATIVE", "datastore-mode": "DATASTORE_MODE"}
        self.state["firestore_databases"][database] = {
            "name": f"projects/{self.project}/databases/{database}",
            "locationId": location,
            "type": kinds[flags.get("type", "firestore-native")],
            "concurrencyMode": "PESSIMISTIC",
            "deleteProtectionState": "DELETE_PROTECTION_ENABLED"
            if flags.get("delete-protection")
            else "DELETE_PROTECTION_DISABLED",
        }
        return []

    def cmd_firestore_locations_list(self, command: str, args: list[str], flags: Any) -> Any:
        self.require_api(command, "firestore.googleapis.com")
        return [
            {"name": f"projects/{self.project}/locations/{location}", "locationId": location}
            for location in self.state["firestore_locations"]
        ]

    def ttl_name(self, database: str, group: str, field: str) -> str:
        return (
            f"projects/{self.project}/databases/{database}/collectionGroups/{group}/fields/{field}"
        )

    def cmd_firestore_fields_ttls_list(self, command: str, args: list[str], flags: Any) -> Any:
        database = self.database(command, flags)["name"].rsplit("/", 1)[-1]
        records = []
        for path, state in sorted(self.state["firestore_ttls"].items()):
            db, group, field = path.split("/")
            if db == database:
                name = self.ttl_name(db, group, field)
                records.append({"name": name, "ttlConfig": {"state": state}})
        return records

    def cmd_firestore_fields_ttls_update(self, command: str, args: list[str], flags: Any) -> Any:
        database = self.database(command, flags)["name"].rsplit("/", 1)[-1]
        if bool(flags.get("enable-ttl")) == bool(flags.get("disable-ttl")):
            raise GcloudError("ERROR: exactly one of --enable-ttl or --disable-ttl", code=2)
        path = f"{database}/{flags['collection-group']}/{args[0]}"
        # One TTL field per collection group: another one of the group is replaced.
        for other in [
            k for k in self.state["firestore_ttls"] if k.rsplit("/", 1)[0] == path.rsplit("/", 1)[0]
        ]:
            del self.state["firestore_ttls"][other]
        if flags.get("enable-ttl"):
            # Applied in the background (--async); ACTIVE once existing documents are done.
            self.state["firestore_ttls"][path] = "CREATING"
        return []

    # -- Cloud Storage -------------------------------------------------------------------

    def bucket(self, command: str, url: str) -> dict[str, Any]:
        name = url.removeprefix("gs://").rstrip("/")
        record = self.state["buckets"].get(name)
        if record is None:
            raise GcloudError(
                f"ERROR: (gcloud.{command.replace(' ', '.')}) gs://{name} not found: 404."
            )
        return dict(record)

    def cmd_storage_buckets_describe(self, command: str, args: list[str], flags: Any) -> Any:
        record = self.bucket(command, args[0])
        if not flags.get("raw"):
            raise GcloudError("fake gcloud: deploy.sh reads the raw bucket (--raw)", code=2)
        return [{"name": args[0].removeprefix("gs://"), "projectNumber": record["projectNumber"]}]

    def cmd_storage_buckets_notifications_list(
        self, command: str, args: list[str], flags: Any
    ) -> Any:
        record = self.bucket(command, args[0])
        return [
            {"Bucket URL": args[0], "Notification Configuration": config}
            for config in record["notifications"].values()
        ]

    def cmd_storage_buckets_notifications_create(
        self, command: str, args: list[str], flags: Any
    ) -> Any:
        name = args[0].removeprefix("gs://").rstrip("/")
        record = self.bucket(command, args[0])
        if not flags.get("skip-topic-setup"):
            # Without it gcloud creates the topic and grants on it itself.
            raise GcloudError(
                "fake gcloud: deploy.sh manages the topic (--skip-topic-setup)", code=2
            )
        topic = str(flags["topic"])
        number = record["projectNumber"]
        agent = f"serviceAccount:service-{number}@gs-project-accounts.iam.gserviceaccount.com"
        publishers = {
            m
            for r, m in self.state["iam"].get(f"topic:{short(topic)}", [])
            if r == "roles/pubsub.publisher"
        }
        if short(topic) not in self.state["topics"] or agent not in publishers:
            raise GcloudError(
                f"ERROR: (gcloud.{command.replace(' ', '.')}) HTTPError 403: The service account "
                f"'{agent.split(':', 1)[1]}' does not have permission to publish messages to to "
                f"the Cloud Pub/Sub topic '//pubsub.googleapis.com/{topic}', or that topic does "
                "not exist."
            )
        formats = {"json": "JSON_API_V1", "none": "NONE"}
        config: dict[str, Any] = {
            "id": str(self.next_seq()),
            "kind": "storage#notification",
            "topic": f"//pubsub.googleapis.com/{topic}",
            "payload_format": formats[flags.get("payload-format", "json")],
            "etag": "1",
        }
        if "event-types" in flags:
            config["event_types"] = str(flags["event-types"]).split(",")
        if "object-prefix" in flags:
            config["object_name_prefix"] = flags["object-prefix"]
        config["selfLink"] = (
            f"https://www.googleapis.com/storage/v1/b/{name}/notificationConfigs/{config['id']}"
        )
        record["notifications"] = {**record["notifications"], config["id"]: config}
        self.state["buckets"][name] = record
        return [config]

    def cmd_storage_buckets_notifications_delete(
        self, command: str, args: list[str], flags: Any
    ) -> Any:
        for url in args:
            match = re.fullmatch(r"projects/_/buckets/([^/]+)/notificationConfigs/([^/]+)", url)
            if match is None:
                raise GcloudError(f"fake gcloud: deploy.sh deletes one notification: {url}", code=2)
            record = self.bucket(command, match[1])
            if match[2] not in record["notifications"]:
                raise GcloudError(f"ERROR: NOT_FOUND: notification {url}")
            record["notifications"] = {
                k: v for k, v in record["notifications"].items() if k != match[2]
            }
            self.state["buckets"][match[1]] = record
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
    pending = state["transient"].get(command)
    if pending:
        return Outcome(1, stderr=f"{pending.pop(0)}\n", command=command)
    if command == "config get-value":
        return Outcome(0, stdout=f"{state['config_project']}\n", command=command)
    if command == "auth print-access-token":
        return Outcome(0, stdout="ya29.fake-token\n", command=command)
    project = args[0] if command.startswith("projects ") else flags.get("project")
    if command.startswith("kms keys "):
        # A key is named in full, often in a security team's project of its own.
        project = state["project_id"]
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


# -- Cloud Monitoring timeSeries.list, through curl -----------------------------------


def metric_value(state: dict[str, Any], metric: str, subscription: str) -> Any:
    """What Cloud Monitoring reports for a subscription; None: no data."""
    overrides = state["metrics"].get(metric, {})
    if subscription in overrides:
        return overrides[subscription]
    record = state["subscriptions"].get(subscription)
    if record is None:
        return None
    if metric == "num_undelivered_messages":
        return len(record.get("messages", []))
    if metric == "oldest_unacked_message_age":
        return 0
    if metric == "push_request_count":
        return {"ack": 3} if record.get("pushConfig") else None
    return None


def run_curl(state: dict[str, Any], argv: list[str], stdin: str = "") -> Outcome:
    """deploy.sh's curl calls: timeSeries.list of one Pub/Sub subscription metric, with
    the token read from stdin (-H @-), as `gcloud auth print-access-token` printed it."""
    url = argv[-1]
    if "@-" not in argv or stdin.strip() != "Authorization: Bearer ya29.fake-token":
        return Outcome(
            22, stderr="curl: (22) The requested URL returned error: 401\n", command="curl"
        )
    # curl --data-urlencode NAME=VALUE encodes VALUE itself: argv holds it plain.
    data = dict(
        argv[i + 1].partition("=")[::2] for i, arg in enumerate(argv) if arg == "--data-urlencode"
    )
    expected_url = f"https://monitoring.googleapis.com/v3/projects/{state['project_id']}/timeSeries"
    match = re.fullmatch(
        r'metric\.type = "pubsub\.googleapis\.com/subscription/([a-z_]+)" '
        r'AND resource\.labels\.subscription_id = "([^"]+)"',
        data.get("filter", ""),
    )
    needed = {"interval.startTime", "interval.endTime", "aggregation.perSeriesAligner"}
    if url != expected_url or match is None or "--get" not in argv or not needed <= set(data):
        return Outcome(22, stderr=f"curl: (22) fake: unexpected request {argv}\n", command="curl")
    metric, subscription = match[1], match[2]
    value = metric_value(state, metric, subscription)
    series: list[dict[str, Any]] = []
    if isinstance(value, dict):
        group = data.get("aggregation.groupByFields", "")
        if group != "metric.label.response_class":
            return Outcome(22, stderr="curl: (22) fake: group push answers by class\n")
        for response_class, count in value.items():
            series.append(
                {
                    "metric": {
                        "labels": {"response_class": response_class},
                        "type": f"pubsub.googleapis.com/subscription/{metric}",
                    },
                    "resource": {"labels": {"subscription_id": subscription}},
                    "points": [{"value": {"int64Value": str(count)}}],
                }
            )
    elif value is not None:
        series.append(
            {
                "metric": {"type": f"pubsub.googleapis.com/subscription/{metric}"},
                "resource": {"labels": {"subscription_id": subscription}},
                "points": [{"value": {"int64Value": str(value)}}],
            }
        )
    body = {"timeSeries": series} if series else {}
    return Outcome(0, stdout=json.dumps(body, indent=2) + "\n", command="curl")


def parse_env_vars(value: str) -> dict[str, str]:
    """Undo gcloud's list escaping (`gcloud topic escaping`): ^D^a=1Db=2."""
    delimiter = ","
    if value.startswith("^"):
        delimiter, value = value[1:].split("^", 1)
    return dict(item.split("=", 1) for item in value.split(delimiter) if item)
