"""harness.relay_function: the function it starts can only take tokens from the fake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.relay_function import function_env


def test_no_developer_credentials_reach_the_function(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A developer's machine: a key file named by the variable, and gcloud's ADC file.
    developer_config = tmp_path / "gcloud"
    developer_config.mkdir()
    adc = developer_config / "application_default_credentials.json"
    adc.write_text(json.dumps({"type": "authorized_user", "refresh_token": "real"}))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(developer_config))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))

    env = function_env(tmp_path / "logs", "127.0.0.1:1", "127.0.0.1:2")

    assert "GOOGLE_APPLICATION_CREDENTIALS" not in env
    config = Path(env["CLOUDSDK_CONFIG"])
    assert config != developer_config
    assert config.is_dir()
    assert list(config.iterdir()) == []  # no credentials for google.auth.default() to find
    assert env["GCE_METADATA_HOST"] == env["GCE_METADATA_IP"] == "127.0.0.1:1"
