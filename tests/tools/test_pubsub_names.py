"""tools.pubsub_names: how the operator tools turn what an operator types into a resource name."""

from __future__ import annotations

import re

import pytest

from tools.pubsub_names import PROJECT_ENV_VARS, default_project, resource_path


def test_the_flag_wins_then_the_emulator_s_variable_then_google_s() -> None:
    every = {
        "PUBSUB_PROJECT_ID": "emu",
        "GOOGLE_CLOUD_PROJECT": "gcp",
        "CLOUDSDK_CORE_PROJECT": "sdk",
    }
    assert PROJECT_ENV_VARS == (
        "PUBSUB_PROJECT_ID",
        "GOOGLE_CLOUD_PROJECT",
        "CLOUDSDK_CORE_PROJECT",
    )
    assert default_project("flag", every) == "flag"
    assert default_project(None, every) == "emu"
    assert default_project(None, {**every, "PUBSUB_PROJECT_ID": ""}) == "gcp"
    assert default_project(None, {"CLOUDSDK_CORE_PROJECT": "sdk"}) == "sdk"
    assert default_project(None, {}) is None


@pytest.mark.parametrize(
    ("kind", "name", "project", "expected"),
    [
        ("topics", "relay", "p", "projects/p/topics/relay"),
        ("topics", "projects/other/topics/relay", "p", "projects/other/topics/relay"),
        ("topics", "projects/other/topics/relay", None, "projects/other/topics/relay"),
        ("subscriptions", "dead", "p", "projects/p/subscriptions/dead"),
    ],
)
def test_a_short_id_or_a_full_name(
    kind: str, name: str, project: str | None, expected: str
) -> None:
    assert resource_path(kind, name, project) == expected


@pytest.mark.parametrize(
    ("kind", "name", "project", "expected"),
    [
        ("topics", "projects/p/topics/relay/extra", "p", "is not projects/PROJECT/topics/NAME"),
        ("topics", "projects/p/subscriptions/s", "p", "is not projects/PROJECT/topics/NAME"),
        ("topics", "projects//topics/relay", "p", "is not projects/PROJECT/topics/NAME"),
        ("topics", "projects/p/topics/", "p", "is not projects/PROJECT/topics/NAME"),
        ("topics", "a/b", "p", "'a/b' is not a topic id"),
        ("topics", "", "p", "'' is not a topic id"),
        ("subscriptions", "dead", None, "subscription 'dead' needs a project"),
    ],
)
def test_names_that_are_neither_are_refused_with_the_reason(
    kind: str, name: str, project: str | None, expected: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(expected)):
        resource_path(kind, name, project)
