"""Cloud Functions entry points. The rules live in the callback_relay package.

- ``relay``: Pub/Sub trigger (CloudEvent). Returning acknowledges the message;
  ``RedeliveryRequested`` (the only exception that leaves the relay) makes
  Pub/Sub redeliver it: it is answered 503 as an HTTP exception, which Flask
  answers without logging a traceback, so a redelivery leaves one line, the
  relay's own.
- ``relay_http``: the same relay for direct HTTP callers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flask
import functions_framework
from cloudevents.http.event import CloudEvent
from requests.structures import CaseInsensitiveDict

from callback_relay.errors import RedeliveryRequested
from callback_relay.http_request import HttpReply, handle_http, redelivery_reply
from callback_relay.relay import create_relay
from callback_relay.trace_context import TraceContext

# Built once per process: configuration errors fail the deployment here.
_relay = create_relay()


@functions_framework.cloud_event
def relay(cloud_event: CloudEvent) -> None:
    # functions-framework calls this inside the Flask request that carried the
    # event, whose trace headers tie the log line to Cloud Run's request log.
    headers: Mapping[str, str] = (
        CaseInsensitiveDict(flask.request.headers) if flask.has_request_context() else {}
    )
    try:
        _relay.relay_event(
            cloud_event.get("id"),
            cloud_event.get("source"),
            _with_push_fields(cloud_event.get_data()),
            TraceContext.from_headers(headers, cloud_event.get("traceparent")),
        )
    except RedeliveryRequested as exc:
        # functions-framework answers "OK" to any return; only an exception is a
        # non-2xx. An HTTPException carrying its own response is answered as it is,
        # without Flask's traceback or functions-framework's "crash" handler.
        flask.abort(_response(redelivery_reply(exc)))


def _with_push_fields(data: Any) -> Any:
    """The event data, with the push body's ``subscription`` and ``deliveryAttempt``.

    functions-framework turns a raw Pub/Sub push into this CloudEvent and drops both
    fields (functions_framework/event_conversion.py); Eventarc's data keeps them. The
    raw body was parsed by that conversion, and Flask caches the parse, so reading it
    again costs no second parse.
    """
    if not isinstance(data, Mapping) or "subscription" in data or not flask.has_request_context():
        return data
    body = flask.request.get_json(silent=True)
    if not isinstance(body, Mapping) or "message" not in body:
        return data
    return {**data, **{k: body[k] for k in ("subscription", "deliveryAttempt") if k in body}}


@functions_framework.http
def relay_http(request: flask.Request) -> flask.Response:
    reply = handle_http(
        _relay,
        request.method,
        request.args.getlist("callback_url"),
        request.stream,
        request.content_length,
        CaseInsensitiveDict(request.headers),
    )
    return _response(reply)


def _response(reply: HttpReply) -> flask.Response:
    body = flask.json.dumps(reply.body)
    # A body left unread must stay unread: functions-framework reads the whole
    # request after any response that is not streamed (its after_request hook).
    content = iter([body]) if reply.body_unread else body
    return flask.Response(
        content, status=reply.status, headers=reply.headers, mimetype="application/json"
    )
