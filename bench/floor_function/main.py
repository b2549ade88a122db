"""The floor: the least a relay must do, and nothing else.

Decode the Pub/Sub message, POST its payload to its callback URL over one
pooled keep-alive session, with a token fetched once (or fixed by FLOOR_TOKEN).
No validation, no URL policy, no retries, no logging: the benchmark measures
how close the real relay gets to this.
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
import requests.adapters
from cloudevents.http.event import CloudEvent

_threads = int(os.environ.get("THREADS") or (os.cpu_count() or 1) * 4)
_session = requests.Session()
# No per-request proxy/.netrc lookups from the environment: they cost more than the rest.
_session.trust_env = False
_session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or True
_session.mount("https://", requests.adapters.HTTPAdapter(pool_maxsize=max(_threads, 4)))
_origin = os.environ.get("WORKFLOWS_EMULATOR_HOST", "https://workflowexecutions.googleapis.com")
_token = os.environ.get("FLOOR_TOKEN", "")


def _fetch_token() -> str:
    credentials: Any
    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    credentials.refresh(google.auth.transport.requests.Request(_session))
    return str(credentials.token)


def _data(cloud_event: CloudEvent) -> Any:
    return cloud_event.get_data()


@functions_framework.cloud_event
def relay(cloud_event: CloudEvent) -> None:
    global _token
    if not _token:
        _token = _fetch_token()
    message = json.loads(base64.b64decode(_data(cloud_event)["message"]["data"]))
    url = message["callback_url"].replace("https://workflowexecutions.googleapis.com", _origin, 1)
    response = _session.post(
        url,
        data=json.dumps(message.get("payload", {})),
        headers={"Authorization": f"Bearer {_token}", "Content-Type": "application/json"},
        timeout=(5, 15),
    )
    response.raise_for_status()
