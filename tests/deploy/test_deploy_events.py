"""deploy.sh --with-events, --event-topic and --event-bucket against the fake gcloud.

Keyed waits (docs/events.md) need a Firestore database in Native mode with TTL
policies, one grant on that database, and every event source pushed to the
function the way the relay topic is. These tests read what deploy.sh leaves in
the fake project: the database, the TTL fields, the conditional grant, the
subscriptions, the bucket notifications, the function's environment; and that
dropping a flag takes away what it made, --status sees each part, --destroy
removes all of it but the database, and --iam=print hands the grants over.

One deploy (module fixture) is shared; each test starts from a copy of its state.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from callback_relay import config
from callback_relay.event_store import CHANNELS, EVENTS, TTL_FIELD, WAITS
from tests.deploy.deploy_runner import (
    DEPLOY_SH,
    FUNCTION_KEY,
    FUNCTION_SA,
    FUNCTION_URI,
    PROJECT,
    PROJECT_NUMBER,
    PUBSUB_AGENT,
    PUSH_SUB,
    REGION,
    FakeCloud,
    Result,
    bindings,
    fixes,
    parse_env_vars,
    status_lines,
)
from tests.deploy.fake_gcloud import run_gcloud

USER_TOPIC = "orders-shipped"
BUCKET = "incoming"
BUCKET_TOPIC = f"workflows-callback-relay-bucket-{BUCKET}"
TEMPLATE = "order:{attributes.orderId}"
EVENTS_ARGS = (
    "--with-events",
    "--event-topic",
    f"{USER_TOPIC}={TEMPLATE}",
    "--event-bucket",
    BUCKET,
)
EVENTS_ROLE = f"projects/{PROJECT}/roles/workflowsCallbackRelayEventStore"
DATABASE_CONDITION = f'resource.name == "projects/{PROJECT}/databases/(default)"'
GCS_AGENT = f"serviceAccount:service-{PROJECT_NUMBER}@gs-project-accounts.iam.gserviceaccount.com"
FN = f"serviceAccount:{FUNCTION_SA}"


def event_subscription(topic: str) -> str:
    return f"{PUSH_SUB}-{topic}"


def project_with_sources(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A project with a topic of the user's and a bucket of its own."""
    return {
        "config_project": PROJECT,
        "topics": {
            USER_TOPIC: {"name": f"projects/{PROJECT}/topics/{USER_TOPIC}", "labels": {}},
        },
        "buckets": {BUCKET: {"projectNumber": PROJECT_NUMBER, "notifications": {}}},
        **(extra or {}),
    }


@pytest.fixture(scope="module")
def events_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, dict[str, Any]]:
    cloud = FakeCloud(tmp_path_factory.mktemp("events"), project_with_sources())
    result = cloud.deploy(*EVENTS_ARGS)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, cloud.read_state()


@pytest.fixture
def events(tmp_path: Path, events_run: tuple[Result, dict[str, Any]]) -> FakeCloud:
    return FakeCloud(tmp_path, copy.deepcopy(events_run[1]))


def edit(cloud: FakeCloud, change: Any) -> None:
    state = cloud.read_state()
    change(state)
    cloud.write_state(state)


def conditional(state: dict[str, Any]) -> list[list[str]]:
    """The project's conditional bindings: [role, member, expression, title, description]."""
    result: list[list[str]] = state["iam_conditions"].get(f"project:{PROJECT}", [])
    return result


def function_env(state: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = state["functions"][FUNCTION_KEY]["serviceConfig"]["environmentVariables"]
    return env


# -- what --with-events makes -----------------------------------------------------------


def test_the_store_its_ttl_policies_and_one_narrow_grant(
    events_run: tuple[Result, dict[str, Any]],
) -> None:
    result, state = events_run
    database = state["firestore_databases"]["(default)"]
    assert database["type"] == "FIRESTORE_NATIVE"
    assert database["locationId"] == REGION  # the function's region
    assert database["deleteProtectionState"] == "DELETE_PROTECTION_ENABLED"
    assert "firestore.googleapis.com" in state["services"]
    # A TTL policy on expire_at for each collection group the store writes.
    assert state["firestore_ttls"] == {
        f"(default)/{group}/{TTL_FIELD}": "CREATING" for group in (CHANNELS, EVENTS, WAITS)
    }
    for call in result.find("firestore fields ttls update"):
        assert call.flag("async") is True
        assert call.flag("enable-ttl") is True
    # The grant: the store's three document permissions, on this database only.
    role = state["roles"]["workflowsCallbackRelayEventStore"]
    assert sorted(role["includedPermissions"]) == [
        "datastore.entities.create",
        "datastore.entities.get",
        "datastore.entities.update",
    ]
    assert [(r, m, e) for r, m, e, *_ in conditional(state)] == [
        (EVENTS_ROLE, FN, DATABASE_CONDITION)
    ]
    # Nothing broader: no datastore role, conditional or not, for anyone.
    assert not any("datastore" in role for _, role, _ in bindings(state))
    env = function_env(state)
    assert env["EVENT_STORE"] == "firestore"
    assert env["GOOGLE_CLOUD_PROJECT"] == PROJECT
    assert "FIRESTORE_DATABASE" not in env
    assert "EVENT_TTL_SECONDS" not in env
    # The relay starts with it: keyed waits on, the project and database deploy.sh made.
    settings = config.load_settings(env)
    assert settings.keyed is not None
    assert (settings.keyed.project, settings.keyed.database) == (PROJECT, "(default)")


def test_each_event_source_is_pushed_like_the_relay_topic(
    events_run: tuple[Result, dict[str, Any]],
) -> None:
    result, state = events_run
    relay = state["subscriptions"][PUSH_SUB]
    settings = config.load_settings(function_env(state))
    assert settings.keyed is not None
    assert settings.keyed.topics is not None
    for topic in (USER_TOPIC, BUCKET_TOPIC):
        subscription = state["subscriptions"][event_subscription(topic)]
        assert subscription["topic"] == f"projects/{PROJECT}/topics/{topic}"
        # The endpoint names the topic: the relay takes a delivery's source from it.
        endpoint = subscription["pushConfig"]["pushEndpoint"]
        assert endpoint == f"{FUNCTION_URI}/projects/{PROJECT}/topics/{topic}"
        source = "//pubsub.googleapis.com/" + endpoint.removeprefix(FUNCTION_URI + "/")
        found = settings.keyed.topics.for_source(source)
        assert found is not None
        assert found.source == topic
        # The same delivery policy, account and audience as the relay topic's.
        for field in (
            "ackDeadlineSeconds",
            "deadLetterPolicy",
            "retryPolicy",
            "expirationPolicy",
        ):
            assert subscription[field] == relay[field], field
        assert subscription["pushConfig"]["oidcToken"] == relay["pushConfig"]["oidcToken"]
        assert subscription["labels"]["component"] == "event-subscription"
        key = f"subscription:{event_subscription(topic)}"
        assert {m for _, m in state["iam"][key]} == {PUBSUB_AGENT}  # it may dead-letter
    assert json.loads(function_env(state)["EVENT_TOPICS"]) == {
        USER_TOPIC: TEMPLATE,
        BUCKET_TOPIC: "cloud-storage",
    }
    # The bucket: a topic of ours, the Cloud Storage agent its only publisher, and one
    # notification of new objects, set up without gcloud's own topic set-up.
    assert state["topics"][BUCKET_TOPIC]["labels"]["component"] == "bucket-topic"
    assert state["iam"][f"topic:{BUCKET_TOPIC}"] == [["roles/pubsub.publisher", GCS_AGENT]]
    (notification,) = state["buckets"][BUCKET]["notifications"].values()
    assert (
        notification["topic"] == f"//pubsub.googleapis.com/projects/{PROJECT}/topics/{BUCKET_TOPIC}"
    )
    assert notification["event_types"] == ["OBJECT_FINALIZE"]
    assert notification["payload_format"] == "JSON_API_V1"
    (create,) = result.find("storage buckets notifications create")
    assert create.flag("skip-topic-setup") is True
    # The user's own topic is read, never changed.
    assert state["topics"][USER_TOPIC]["labels"] == {}
    assert f"topic:{USER_TOPIC}" not in state["iam"]


def test_a_rerun_changes_nothing_and_status_is_all_ok(events: FakeCloud) -> None:
    before = events.read_state()
    again = events.deploy(*EVENTS_ARGS)
    assert again.returncode == 0, again.stderr
    assert again.mutating == [], [c.argv for c in again.mutating]
    assert events.read_state() == before
    status = events.deploy(*EVENTS_ARGS, "--status")
    assert status.returncode == 0, status.stdout + status.stderr
    ok = "\n".join(status_lines(status, "OK"))
    for expected in (
        "Firestore database (default): Native mode, us-central1",
        "TTL policy on relay_channels.expire_at: CREATING",
        "TTL policy on relay_waits.expire_at",
        "custom role workflowsCallbackRelayEventStore holds only datastore.entities.create,",
        f"{EVENTS_ROLE} (if {DATABASE_CONDITION}) for {FN}",
        f'EVENT_TOPICS of workflows-callback-relay: {{"{USER_TOPIC}":"{TEMPLATE}",',
        f"roles/pubsub.publisher on topics {BUCKET_TOPIC}: exactly {GCS_AGENT}",
        f"gs://{BUCKET} OBJECT_FINALIZE -> {BUCKET_TOPIC}",
        f"push subscription {event_subscription(USER_TOPIC)} -> {FUNCTION_URI}/projects/",
        f"roles/pubsub.subscriber on subscriptions {event_subscription(BUCKET_TOPIC)}",
    ):
        assert expected in ok, expected


# -- convergence: flags dropped, sources changed -------------------------------------------


def test_keyed_waits_off_again_take_the_grant_settings_and_deliveries(events: FakeCloud) -> None:
    status = events.deploy("--status")
    assert status.returncode == 1
    failures = "\n".join(status_lines(status, "FAIL"))
    assert f"also holds {EVENTS_ROLE} (if {DATABASE_CONDITION})" in failures
    assert "EVENT_STORE=firestore" in failures  # the function's environment
    assert f"push subscription {event_subscription(USER_TOPIC)} delivers events" in failures
    assert f"bucket topic {BUCKET_TOPIC} (and its notification) is no longer asked for" in failures
    removal = next(f for f in fixes(status) if "remove-iam-policy-binding" in f)
    assert "--condition=expression=" in removal  # only the conditional binding

    result = events.deploy()
    assert result.returncode == 0, result.stdout + result.stderr
    state = events.read_state()
    assert conditional(state) == []
    assert not any(k.startswith(("EVENT_", "GOOGLE_CLOUD")) for k in function_env(state))
    assert event_subscription(USER_TOPIC) not in state["subscriptions"]
    assert event_subscription(BUCKET_TOPIC) not in state["subscriptions"]
    assert BUCKET_TOPIC not in state["topics"]
    assert state["buckets"][BUCKET]["notifications"] == {}
    # The notification went before its topic (Cloud Storage would publish into nothing).
    order = result.commands()
    assert order.index("storage buckets notifications delete") < order.index("pubsub topics delete")
    # What is kept: the user's topic, the database and its TTL policies (never deleted
    # by a redeploy), and the role (no member holds it; deleting it would block its id
    # for 37 days should keyed waits come back).
    assert USER_TOPIC in state["topics"]
    assert "(default)" in state["firestore_databases"]
    assert state["firestore_ttls"]
    assert "workflowsCallbackRelayEventStore" in state["roles"]
    assert events.deploy("--status").returncode == 0


def test_a_dropped_topic_and_a_new_bucket_converge_and_templates_keep_their_delimiters(
    events: FakeCloud,
) -> None:
    other = "reports"
    edit(
        events,
        lambda s: s["buckets"].update(
            {other: {"projectNumber": PROJECT_NUMBER, "notifications": {}}}
        ),
    )
    # A template with gcloud's list delimiters in it (',' and '@'): EVENT_TOPICS stays whole.
    template = '{"key": "user@{attributes.user},{data.id}", "event_id": "{data.id}"}'
    args = (
        "--with-events",
        "--event-bucket",
        BUCKET,
        "--event-bucket",
        f"gs://{other}",
        "--event-topic",
        f"projects/{PROJECT}/topics/{USER_TOPIC}={template}",
    )
    result = events.deploy(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    state = events.read_state()
    (deploy,) = result.find("functions deploy")
    assert not str(deploy.flag("set-env-vars")).startswith("^@^")  # '@' is in a value
    topics = json.loads(parse_env_vars(str(deploy.flag("set-env-vars")))["EVENT_TOPICS"])
    assert topics == {
        USER_TOPIC: json.loads(template),
        BUCKET_TOPIC: "cloud-storage",
        f"workflows-callback-relay-bucket-{other}": "cloud-storage",
    }
    assert json.loads(function_env(state)["EVENT_TOPICS"]) == topics
    assert event_subscription(f"workflows-callback-relay-bucket-{other}") in state["subscriptions"]
    assert len(state["buckets"][other]["notifications"]) == 1
    # The bucket that stayed kept its notification and subscription untouched.
    assert not any(
        BUCKET_TOPIC in " ".join(c.argv) for c in result.mutating if c.command != "functions deploy"
    )

    fewer = events.deploy("--with-events", "--event-bucket", other)
    assert fewer.returncode == 0, fewer.stderr
    state = events.read_state()
    assert json.loads(function_env(state)["EVENT_TOPICS"]) == {
        f"workflows-callback-relay-bucket-{other}": "cloud-storage"
    }
    assert event_subscription(USER_TOPIC) not in state["subscriptions"]
    assert USER_TOPIC in state["topics"]  # the user's topic stays
    assert BUCKET_TOPIC not in state["topics"]
    assert state["buckets"][BUCKET]["notifications"] == {}
    assert len(state["buckets"][other]["notifications"]) == 1


def test_the_grant_can_span_the_project_and_come_back(events: FakeCloud) -> None:
    # The fallback should the condition not take (docs/deploy.md): the same three
    # permissions on every database of the project, unconditioned.
    wide = events.deploy(*EVENTS_ARGS, env={"EVENTS_GRANT_SCOPE": "project"})
    assert wide.returncode == 0, wide.stderr
    state = events.read_state()
    assert conditional(state) == []
    assert (f"project:{PROJECT}", EVENTS_ROLE, FN) in bindings(state)
    narrow = events.deploy(*EVENTS_ARGS)
    assert narrow.returncode == 0, narrow.stderr
    state = events.read_state()
    assert (f"project:{PROJECT}", EVENTS_ROLE, FN) not in bindings(state)
    assert [(r, m, e) for r, m, e, *_ in conditional(state)] == [
        (EVENTS_ROLE, FN, DATABASE_CONDITION)
    ]


# -- --status sees what breaks, the deploy repairs it ------------------------------------------


def test_status_sees_each_broken_part_and_the_deploy_repairs_it(events: FakeCloud) -> None:
    def damage(state: dict[str, Any]) -> None:
        del state["firestore_ttls"][f"(default)/{EVENTS}/{TTL_FIELD}"]
        state["firestore_ttls"][f"(default)/{WAITS}/{TTL_FIELD}"] = "NEEDS_REPAIR"
        # The grant moved to another database out of band.
        entry = conditional(state)[0]
        entry[2] = f'resource.name == "projects/{PROJECT}/databases/other"'
        state["roles"]["workflowsCallbackRelayEventStore"]["includedPermissions"].append(
            "datastore.entities.delete"
        )
        state["buckets"][BUCKET]["notifications"] = {}
        state["iam"][f"topic:{BUCKET_TOPIC}"].append(
            ["roles/pubsub.publisher", "user:x@example.com"]
        )
        sub = state["subscriptions"][event_subscription(USER_TOPIC)]
        del sub["deadLetterPolicy"]
        env = state["functions"][FUNCTION_KEY]["serviceConfig"]["environmentVariables"]
        env["EVENT_TOPICS"] = "{}"

    edit(events, damage)
    before = events.read_state()
    status = events.deploy(*EVENTS_ARGS, "--status")
    assert status.returncode == 1
    assert status.mutating == []
    assert events.read_state() == before
    failures = "\n".join(status_lines(status, "FAIL"))
    for expected in (
        f"no TTL policy on {EVENTS}.expire_at",
        f"TTL policy on {WAITS}.expire_at is NEEDS_REPAIR",
        f"{EVENTS_ROLE} (if {DATABASE_CONDITION}) for {FN} on project {PROJECT} is missing",
        'databases/other") on project',  # the foreign condition, as an extra
        "custom role workflowsCallbackRelayEventStore is missing, deleted or holds other",
        f"gs://{BUCKET} has no notification to {BUCKET_TOPIC}",
        "also held by user:x@example.com",
        f"push subscription {event_subscription(USER_TOPIC)}: dead-letter policy",
        "EVENT_TOPICS of workflows-callback-relay is '{}'",
    ):
        assert expected in failures, expected
    ttl_fix = (
        f"gcloud firestore fields ttls update expire_at --collection-group={EVENTS} "
        f"--database=\\(default\\) --enable-ttl --async --project={PROJECT}"
    )
    assert ttl_fix in fixes(status)

    # The notification meets the Cloud Storage agent's grant still propagating: retried.
    edit(
        events,
        lambda s: s["transient"].update(
            {
                "storage buckets notifications create": [
                    f"ERROR: HTTPError 403: The service account '{GCS_AGENT[15:]}' does not "
                    "have permission to publish messages to to the Cloud Pub/Sub topic "
                    f"'//pubsub.googleapis.com/projects/{PROJECT}/topics/{BUCKET_TOPIC}', "
                    "or that topic does not exist."
                ]
            }
        ),
    )
    repaired = events.deploy(*EVENTS_ARGS)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert repaired.sleeps == [10]
    state = events.read_state()
    assert [(r, m, e) for r, m, e, *_ in conditional(state)] == [
        (EVENTS_ROLE, FN, DATABASE_CONDITION)
    ]
    assert state["firestore_ttls"][f"(default)/{WAITS}/{TTL_FIELD}"] == "CREATING"
    assert len(state["buckets"][BUCKET]["notifications"]) == 1
    assert events.deploy(*EVENTS_ARGS, "--status").returncode == 0


def test_extra_and_different_notifications_are_replaced_by_one(events: FakeCloud) -> None:
    topic = f"//pubsub.googleapis.com/projects/{PROJECT}/topics/{BUCKET_TOPIC}"

    def more(state: dict[str, Any]) -> None:
        notifications = state["buckets"][BUCKET]["notifications"]
        base = next(iter(notifications.values()))
        notifications["90"] = {**base, "id": "90"}  # a duplicate: every object twice
        notifications["91"] = {**base, "id": "91", "event_types": ["OBJECT_DELETE"]}
        notifications["92"] = {**base, "id": "92", "topic": topic.replace(BUCKET_TOPIC, "x")}

    edit(events, more)
    status = events.deploy(*EVENTS_ARGS, "--status")
    assert any(
        "2 notification(s) to" in f and "1 otherwise" in f for f in status_lines(status, "FAIL")
    )
    result = events.deploy(*EVENTS_ARGS)
    assert result.returncode == 0, result.stderr
    left = events.read_state()["buckets"][BUCKET]["notifications"]
    # One as wanted; the notification to someone else's topic is theirs.
    assert sorted(left) == ["1", "92"]


# -- inputs, checked before anything changes -----------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--event-topic", f"{USER_TOPIC}={TEMPLATE}"], {}, "need --with-events"),
        (["--event-bucket", BUCKET], {}, "need --with-events"),
        ([], {"FIRESTORE_DATABASE": "events"}, "need --with-events"),
        (["--with-events", "--event-topic", USER_TOPIC], {}, "is not TOPIC=TEMPLATE"),
        (
            ["--with-events", "--event-topic", "tpc=order:{attributes}"],
            {},
            "would be refused by the relay",
        ),
        (["--with-events", "--event-topic", 'tpc={"key": "k", "ttl": 1}'], {}, "unknown field"),
        (["--with-events", "--event-topic", "projects/other/topics/t=k"], {}, "another project"),
        (["--with-events", "--event-topic", "workflows-callback-relay=k"], {}, "relay's own topic"),
        (
            ["--with-events", "--event-topic", "a-topic=k", "--event-topic", "a-topic=j"],
            {},
            "twice",
        ),
        (["--with-events", "--event-bucket", "Bad_Bucket"], {}, "--event-bucket 'Bad_Bucket'"),
        (["--with-events", "--event-bucket", "bkt", "--event-bucket", "gs://bkt/"], {}, "twice"),
        (["--with-events"], {"FIRESTORE_DATABASE": "Events"}, "FIRESTORE_DATABASE"),
        (["--with-events"], {"EVENT_TTL_SECONDS": "604801"}, "EVENT_TTL_SECONDS"),
        (["--with-events"], {"EVENTS_ROLE_ID": "workflowsCallbackSender"}, "must differ"),
        (["--with-events"], {"EVENTS_GRANT_SCOPE": "bucket"}, "EVENTS_GRANT_SCOPE"),
        (
            ["--with-events", "--event-topic", "tpc=k"],
            {"EVENTS_PYTHON": "no-such-python"},
            "EVENTS_PYTHON",
        ),
    ],
)
def test_bad_event_inputs_are_refused_before_any_call(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    cloud = FakeCloud(tmp_path)
    result = cloud.deploy(*args, env=env)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert result.commands() in ([], ["config get-value"])


def test_a_region_without_firestore_is_refused_with_the_locations(tmp_path: Path) -> None:
    # us-west8 is a region deploy.sh accepts, and not a location the fake Firestore offers.
    cloud = FakeCloud(tmp_path)
    result = cloud.deploy("--with-events", "--region", "us-west8")
    assert result.returncode == 1
    assert (
        "us-west8, the function's region (--region), is not a Firestore location" in result.stderr
    )
    assert "FIRESTORE_LOCATION to one of: nam5 eur3 us-central1" in result.stderr
    # Only the APIs were enabled: nothing of the deployment exists.
    assert [c.command for c in result.mutating] == ["services enable"]
    placed = cloud.deploy(
        "--with-events", "--region", "us-west8", env={"FIRESTORE_LOCATION": "nam5"}
    )
    assert placed.returncode == 0, placed.stderr
    assert cloud.read_state()["firestore_databases"]["(default)"]["locationId"] == "nam5"


def test_a_database_in_datastore_mode_or_missing_sources_are_refused(tmp_path: Path) -> None:
    datastore = {
        "(default)": {
            "name": f"projects/{PROJECT}/databases/(default)",
            "type": "DATASTORE_MODE",
            "locationId": REGION,
        }
    }
    cloud = FakeCloud(tmp_path, project_with_sources({"firestore_databases": datastore}))
    result = cloud.deploy("--with-events")
    assert result.returncode == 1
    assert "is in DATASTORE_MODE mode, not Native mode" in result.stderr
    assert "--type=firestore-native" in result.stderr
    # A named database is created beside it, in Native mode.
    named = cloud.deploy("--with-events", env={"FIRESTORE_DATABASE": "relay-events"})
    assert named.returncode == 0, named.stderr
    state = cloud.read_state()
    assert state["firestore_databases"]["relay-events"]["type"] == "FIRESTORE_NATIVE"
    assert function_env(state)["FIRESTORE_DATABASE"] == "relay-events"
    (entry,) = conditional(state)
    assert entry[2] == f'resource.name == "projects/{PROJECT}/databases/relay-events"'

    for args, message in (
        (("--event-topic", "nobody=k"), "--event-topic nobody: no such topic"),
        (("--event-bucket", "nowhere"), "--event-bucket nowhere: no such bucket"),
    ):
        refused = cloud.deploy("--with-events", *args, env={"FIRESTORE_DATABASE": "relay-events"})
        assert refused.returncode == 1
        assert message in refused.stderr
        # Refused before anything changed (but the Storage API, for the bucket check).
        assert [c.command for c in refused.mutating] in ([], ["services enable"])
    edit(
        cloud,
        lambda s: s["buckets"].update({"theirs": {"projectNumber": "999", "notifications": {}}}),
    )
    foreign = cloud.deploy(
        "--with-events", "--event-bucket", "theirs", env={"FIRESTORE_DATABASE": "relay-events"}
    )
    assert foreign.returncode == 1
    assert "belongs to project number 999" in foreign.stderr


# -- destroy, and --iam=print ---------------------------------------------------------------


def test_destroy_removes_the_deliveries_and_grants_and_says_how_to_delete_the_database(
    events: FakeCloud,
) -> None:
    result = events.deploy("--destroy", "--yes")
    assert result.returncode == 0, result.stderr
    state = events.read_state()
    assert state["subscriptions"] == {}
    assert list(state["topics"]) == [USER_TOPIC]
    assert state["buckets"][BUCKET]["notifications"] == {}
    assert conditional(state) == []
    assert state["roles"]["workflowsCallbackRelayEventStore"]["deleted"] is True
    # The database stays; the output says how to lift its protection and delete it.
    assert "(default)" in state["firestore_databases"]
    assert (
        f"gcloud firestore databases update --database=\\(default\\) --no-delete-protection "
        f"--project={PROJECT}"
    ) in result.stdout
    assert f"gcloud firestore databases delete --database=\\(default\\) --project={PROJECT}" in (
        result.stdout
    )


def test_iam_print_hands_over_the_event_grants(
    tmp_path: Path, events_run: tuple[Result, dict[str, Any]]
) -> None:
    cloud = FakeCloud(tmp_path, project_with_sources())
    args = (*EVENTS_ARGS, "--iam=print")
    for _ in range(5):
        result = cloud.deploy(*args)
        assert not any("iam-policy-binding" in c.command for c in result.mutating)
        if result.returncode == 0:
            break
        assert result.returncode == 3, result.stdout + result.stderr
        plan = result.stdout.split("IAM for your IAM team (--iam=print", 1)[1]
        missing = [line[12:] for line in plan.splitlines() if line.startswith("  MISSING   ")]
        assert missing
        for command in missing:
            outcome = run_gcloud(cloud.state, shlex.split(command)[1:])
            assert outcome.code == 0, (command, outcome.stderr)
    assert result.returncode == 0, result.stdout
    assert "Every grant is in place." in result.stdout
    state = cloud.read_state()
    # The grants a deploy with IAM gets, the conditional one and the bucket's included.
    reference = events_run[1]
    assert bindings(state) == bindings(reference)
    assert conditional(state) == conditional(reference)
    assert len(state["buckets"][BUCKET]["notifications"]) == 1
    assert cloud.deploy(*EVENTS_ARGS, "--status").returncode == 0


def test_names_agree_with_the_store() -> None:
    text = DEPLOY_SH.read_text(encoding="utf-8")
    collections = re.search(r"^EVENT_COLLECTIONS=\(([^)]*)\)$", text, re.M)
    assert collections is not None
    assert collections[1].split() == [CHANNELS, EVENTS, WAITS]
    assert re.search(rf"^EVENT_TTL_FIELD={TTL_FIELD}$", text, re.M)
