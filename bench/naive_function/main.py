"""The naive relay: what the original Cloud Run service did, per message.

Every message gets fresh Application Default Credentials and a token from the
metadata server, then a POST through ``requests.post``, which opens (and
closes) a new TLS connection each time. Correct, and slow.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import functions_framework
import google.auth
import google.auth.transport.requests
import requests
from cloudevents.http.event import CloudEvent

_origin = os.environ.get("WORKFLOWS_EMULATOR_HOST", "https://workflowexecutions.googleapis.com")


def _data(cloud_event: CloudEvent) -> Any:
    return cloud_event.get_data()


@functions_framework.cloud_event
def relay(cloud_event: CloudEvent) -> None:
    message = json.loads(base64.b64decode(_data(cloud_event)["message"]["data"]))
    credentials: Any
    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    credentials.refresh(google.auth.transport.requests.Request())
    url = message["callback_url"].replace("https://workflowexecutions.googleapis.com", _origin, 1)
    response = requests.post(
        url,
        json=message.get("payload", {}),
        headers={"Authorization": f"Bearer {credentials.token}"},
        timeout=(5, 15),
    )
    response.raise_for_status()
