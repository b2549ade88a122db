"""examples/producers/gcloud/publish_result.sh: its flags exist, and real gcloud publishes it.

The script runs with the installed gcloud against the Pub/Sub emulator, through
gcloud's endpoint override and with credentials disabled (the auth/disable_credentials
property), so the data pulled is exactly what --message carried:
https://cloud.google.com/sdk/gcloud/reference/topic/endpoint-override
https://cloud.google.com/sdk/gcloud/reference/config/set
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from harness.pubsub_emulator import PubSubEmulator, in_ci
from tests.producers.golden import (
    EXPECTED_FAILURE_DATA,
    EXPECTED_RESULT_DATA,
    FAIL_ARGS,
    RESULT_JSON,
    SNIPPETS,
    assert_relay_accepts_failure,
    assert_relay_accepts_result,
    job_json,
)
from tests.producers.relay_topic import RelayTopic

SCRIPT = SNIPPETS / "gcloud" / "publish_result.sh"


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if in_ci():
            pytest.fail(f"CI=true and {tool} is not on PATH", pytrace=False)
        pytest.skip(f"{tool} is not on PATH")
    return path


def gcloud_invocations() -> list[list[str]]:
    lines = [line.strip() for line in SCRIPT.read_text().splitlines()]
    return [line.split() for line in lines if line.startswith("gcloud ")]


def test_every_flag_is_in_the_installed_gcloud_help() -> None:
    gcloud = require("gcloud")
    (invocation,) = gcloud_invocations()
    assert invocation[:4] == ["gcloud", "pubsub", "topics", "publish"]
    flags = [re.sub(r"=.*", "", word) for word in invocation if word.startswith("--")]
    assert flags == ["--message"]
    help_text = subprocess.run(
        [gcloud, "pubsub", "topics", "publish", "--help"],
        env={"PATH": "/usr/bin:/bin", "CLOUDSDK_CORE_DISABLE_PROMPTS": "1", "PAGER": "cat"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    for flag in flags:
        assert re.search(rf"^\s+{re.escape(flag)}=", help_text, re.MULTILINE), flag


def run_script(relay: RelayTopic, tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    require("gcloud")
    require("jq")
    job_file = tmp_path / "job.json"
    job_file.write_text(job_json())
    return relay.run(
        ["bash", str(SCRIPT), str(job_file), *args],
        CLOUDSDK_API_ENDPOINT_OVERRIDES_PUBSUB=f"http://{relay.emulator.address}/",
        CLOUDSDK_AUTH_DISABLE_CREDENTIALS="true",
        CLOUDSDK_CORE_PROJECT=relay.emulator.project,
    )


@pytest.mark.emulator
def test_gcloud_snippet_resumes_with_the_result(emulator: PubSubEmulator, tmp_path) -> None:
    relay = RelayTopic.create(emulator, "gcloud")

    result = run_script(relay, tmp_path, RESULT_JSON)

    assert result.returncode == 0, result.stderr
    data = relay.received_data()
    assert data == EXPECTED_RESULT_DATA
    assert_relay_accepts_result(data)


@pytest.mark.emulator
def test_gcloud_snippet_fails_the_step_on_purpose(emulator: PubSubEmulator, tmp_path) -> None:
    relay = RelayTopic.create(emulator, "gcloud-fail")

    result = run_script(relay, tmp_path, "--fail", *FAIL_ARGS)

    assert result.returncode == 0, result.stderr
    data = relay.received_data()
    assert data == EXPECTED_FAILURE_DATA
    assert_relay_accepts_failure(data)
