"""A CloudEvent function that only decodes the Pub/Sub message data, and nothing else.

The memory functions-framework itself needs to hand an event to any function
(the request body, its JSON text, the CloudEvent) plus the decoded data: the
baseline that the relay's memory budget per message is measured against
(``tests/system/test_real_server.py``).
"""

from __future__ import annotations

import base64
from typing import Any

import functions_framework
from cloudevents.http.event import CloudEvent


@functions_framework.cloud_event
def relay(cloud_event: CloudEvent) -> None:
    data: Any = cloud_event.get_data()
    base64.b64decode(data["message"]["data"])
