from __future__ import annotations

import pytest

from callback_relay.callback_url_policy import GOOGLE_ORIGIN, CallbackUrlPolicy
from callback_relay.config import parse_allowed_workflows
from callback_relay.errors import CallbackUrlRefused

PATH = "/v1/projects/my-proj/locations/us-central1/workflows/wf_1/executions/e-1/callbacks/c1"
GOOD = GOOGLE_ORIGIN + PATH

# Each of these must be refused by the default (Google) policy.
HOSTILE = [
    "http://workflowexecutions.googleapis.com" + PATH,  # plain http
    "https://workflowexecutions.googleapis.com:443" + PATH,  # explicit port
    "https://workflowexecutions.googleapis.com:8443" + PATH,
    "https://workflowexecutions.googleapis.com.evil.example" + PATH,  # look-alike suffix
    "https://evil.example/workflowexecutions.googleapis.com" + PATH,
    "https://workflowexecutions-googleapis.com" + PATH,
    "https://workflowexecutions.googleapis.co" + PATH,
    "https://WORKFLOWEXECUTIONS.googleapis.com" + PATH,  # case games
    "https://user@workflowexecutions.googleapis.com" + PATH,  # userinfo
    "https://workflowexecutions.googleapis.com@evil.example" + PATH,
    "https://workflowexecutions.googleapis.com:x@evil.example" + PATH,
    "https://workflowexecutions.googleapis.com\\@evil.example" + PATH,  # backslash
    "https://workflowexecutions.googleapis.com\\" + PATH,
    "https://workflowexecutions.googleapis.com%2F@evil.example" + PATH,  # encoded
    GOOD + "%2F..%2F..%2Fother",
    GOOD.replace("/callbacks/", "/callbacks%2F"),
    GOOD + "/extra",  # extra segment
    GOOD + "/",
    GOOD.replace("/callbacks/c1", "/callbacks/"),  # missing id
    GOOD.replace("/executions/e-1", ""),  # missing segment
    GOOD.replace("/v1/", "/v2/"),
    GOOD.replace("/v1/", "/v1//"),
    GOOD.replace("/wf_1/", "/../"),  # dot segments
    GOOD.replace("/wf_1/", "/./"),
    GOOD + "?alt=json",  # query
    GOOD + "#frag",  # fragment
    GOOD + " ",  # whitespace
    " " + GOOD,
    GOOD.replace("c1", "c\t1"),
    GOOD + "\r\nHost: evil.example",  # header injection
    GOOD.replace("c1", "c\x001"),  # control character
    GOOD.replace("c1", "c\u00e91"),  # non-ASCII
    "https://workflowexecutions\u3002googleapis.com" + PATH,  # ideographic full stop
    "ftp://workflowexecutions.googleapis.com" + PATH,  # other schemes
    "file:///etc/passwd",
    "javascript:alert(1)",
    "//workflowexecutions.googleapis.com" + PATH,  # scheme-relative
    "workflowexecutions.googleapis.com" + PATH,
    "https:/workflowexecutions.googleapis.com" + PATH,
    "https://[::1]" + PATH,
    "https://169.254.169.254/computeMetadata/v1/",
    "https://workflows.googleapis.com" + PATH,  # the other Workflows API
    GOOD.replace("projects/my-proj", "projects/My_Proj"),  # not a project id
]


@pytest.mark.parametrize("url", HOSTILE)
def test_hostile_urls_are_refused(url: str) -> None:
    with pytest.raises(CallbackUrlRefused) as caught:
        CallbackUrlPolicy().check(url)
    assert caught.value.reason in {"forbidden_characters", "wrong_origin", "wrong_path"}


def test_there_are_at_least_30_hostile_urls() -> None:
    assert len(set(HOSTILE)) >= 30


def test_genuine_callback_url_is_accepted_and_parsed() -> None:
    target = CallbackUrlPolicy().check(GOOD)
    assert (target.project, target.location, target.workflow) == ("my-proj", "us-central1", "wf_1")
    assert (target.execution, target.callback) == ("e-1", "c1")
    assert target.url == GOOD


def test_project_numbers_and_uuids_are_accepted() -> None:
    url = (
        f"{GOOGLE_ORIGIN}/v1/projects/123456789012/locations/europe-west4/workflows/Demo-2"
        "/executions/9f1c2f4e-7b7e-4a36-9a57-0f2b8c1d2e3f/callbacks/"
        "3c4b1d7e-2a59-4f0e-8d5a-1b2c3d4e5f60_0"
    )
    assert CallbackUrlPolicy().check(url).project == "123456789012"


@pytest.mark.parametrize(
    ("allowed", "accepted"),
    [
        ("projects/my-proj/locations/us-central1/workflows/wf_1", True),
        ("projects/my-proj/locations/*/workflows/wf_1", True),
        ("projects/*/locations/*/workflows/*", True),
        (
            "projects/other/locations/*/workflows/*, projects/my-proj/locations/*/workflows/wf_1",
            True,
        ),
        ("projects/my-proj/locations/us-east1/workflows/wf_1", False),
        ("projects/my-proj/locations/us-central1/workflows/wf", False),
        ("projects/my-proj/locations/us-central1/workflows/wf_1x", False),
        ("projects/my-pro*/locations/*/workflows/*", None),  # '*' is only a whole segment
    ],
)
def test_allowed_workflows(allowed: str, accepted: bool | None) -> None:
    if accepted is None:
        with pytest.raises(ValueError, match="ALLOWED_WORKFLOWS"):
            parse_allowed_workflows(allowed)
        return
    policy = CallbackUrlPolicy(allowed_workflows=parse_allowed_workflows(allowed))
    if accepted:
        assert policy.check(GOOD).workflow == "wf_1"
    else:
        with pytest.raises(CallbackUrlRefused) as caught:
            policy.check(GOOD)
        assert caught.value.reason == "workflow_not_allowed"


def test_emulator_origin_replaces_google() -> None:
    policy = CallbackUrlPolicy(origin="http://127.0.0.1:8089")
    assert policy.check("http://127.0.0.1:8089" + PATH).callback == "c1"
    for url in (GOOD, "http://127.0.0.1:8090" + PATH, "https://127.0.0.1:8089" + PATH):
        with pytest.raises(CallbackUrlRefused):
            policy.check(url)


@pytest.mark.parametrize(
    "origin",
    ["http://127.0.0.1:8082", "http://localhost:8082", "https://LOCALHOST", "http://[::1]:80"],
)
def test_a_local_url_refused_by_origin_names_workflows_emulator_host(origin: str) -> None:
    # The likeliest cause locally: the relay was started without the fake's address.
    with pytest.raises(CallbackUrlRefused) as caught:
        CallbackUrlPolicy().check(origin + PATH)
    assert caught.value.reason == "wrong_origin"
    assert "WORKFLOWS_EMULATOR_HOST" in caught.value.detail
    # Pointed at another local port, it says so too.
    with pytest.raises(CallbackUrlRefused) as caught:
        CallbackUrlPolicy("http://127.0.0.1:9999").check(origin + PATH)
    assert "WORKFLOWS_EMULATOR_HOST" in caught.value.detail


@pytest.mark.parametrize("url", ["https://evil.example" + PATH, "http://127.0.0.1.evil.example/x"])
def test_a_remote_url_gets_no_emulator_hint(url: str) -> None:
    with pytest.raises(CallbackUrlRefused) as caught:
        CallbackUrlPolicy().check(url)
    assert caught.value.reason == "wrong_origin"
    assert "WORKFLOWS_EMULATOR_HOST" not in caught.value.detail
