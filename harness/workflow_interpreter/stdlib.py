"""The standard-library functions workflow.yaml uses, with their documented errors.

Each function is named as in Workflows and takes its documented arguments, by
position (in an expression) or by name (in a `call` step's `args`).
Functions that block (sys.log and the events/connector calls) may only be used
in a `call` step, as in Workflows
(https://cloud.google.com/workflows/docs/reference/syntax/expressions).

References (one page per function under
https://cloud.google.com/workflows/docs/reference/stdlib/):
  expression helpers (default, string, int, double, len, keys): expression-helpers
  map.get: map/get                  text.match_regex: text/match_regex
  sys.get_env: sys/get_env          sys.now: sys/now          sys.log: sys/log
  time.format: time/format          base64.encode / decode: base64/encode, base64/decode
  json.encode, json.encode_to_string, json.decode: json/encode, json/encode_to_string, json/decode
  events.create_callback_endpoint, events.await_callback: events/...
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import json
import math
import re
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from harness.workflow_interpreter.bindings import Bindings, LogEntry
from harness.workflow_interpreter.errors import (
    TIMEOUT_ERROR,
    tagged,
    type_error,
    value_error,
)
from harness.workflow_interpreter.values import is_integer, is_number, type_name

Args = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Function:
    name: str
    params: tuple[str, ...]
    required: int
    impl: Callable[[Bindings, Args], Any]
    in_expressions: bool = True

    def bind(self, positional: Sequence[Any] = (), named: Mapping[str, Any] | None = None) -> Args:
        """Match arguments to parameters; a wrong count or name is a TypeError."""
        if len(positional) > len(self.params):
            raise type_error(f"{self.name}: at most {len(self.params)} arguments")
        args: Args = dict(zip(self.params, positional, strict=False))
        for key, value in (named or {}).items():
            if key not in self.params:
                raise type_error(f"{self.name}: unexpected argument {key!r}")
            args[key] = value
        missing = [p for p in self.params[: self.required] if p not in args]
        if missing:
            raise type_error(f"{self.name}: missing argument {missing[0]!r}")
        return args


def _need(function: str, argument: str, value: Any, wanted: str, ok: bool) -> None:
    if not ok:
        raise type_error(f"{function}: {argument} must be {wanted}, not {type_name(value)}")


# -- expression helpers --


def _default(_: Bindings, args: Args) -> Any:
    return args["defaultVal"] if args["val"] is None else args["val"]


def _string(_: Bindings, args: Args) -> str:
    value = args["value"]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if is_integer(value):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    raise type_error(f"string: cannot convert {type_name(value)}")


def _int(_: Bindings, args: Args) -> int:
    value = args["value"]
    if is_integer(value):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise value_error(f"int: cannot convert {value}")
        return int(value)  # truncates toward zero
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise value_error(f"int: not an integer: {value!r}") from None
    raise type_error(f"int: cannot convert {type_name(value)}")


def _double(_: Bindings, args: Args) -> float:
    value = args["value"]
    if is_number(value):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise value_error(f"double: not a number: {value!r}") from None
    raise type_error(f"double: cannot convert {type_name(value)}")


def _len(_: Bindings, args: Args) -> int:
    value = args["value"]
    if isinstance(value, str | list | dict | bytes):
        return len(value)
    raise type_error(f"len: {type_name(value)} has no length")


def _keys(_: Bindings, args: Args) -> list[str]:
    value = args["map"]
    _need("keys", "map", value, "a map", isinstance(value, dict))
    return list(value)


# -- map, text --


def _map_get(_: Bindings, args: Args) -> Any:
    current, keys = args["map"], args["keys"]
    if isinstance(keys, str):
        keys = [keys]
    elif not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        raise type_error(f"map.get: keys must be a string or a list of strings, not {keys!r}")
    for key in keys:
        if not isinstance(current, dict) or key not in current:
            return None
        current = current[key]
    return current


def _match_regex(_: Bindings, args: Args) -> bool:
    source, pattern = args["source"], args["regexp"]
    _need("text.match_regex", "source", source, "a string", isinstance(source, str))
    _need("text.match_regex", "regexp", pattern, "a string", isinstance(pattern, str))
    try:
        # Workflows uses RE2; Python's re agrees on the patterns workflow.yaml uses.
        return re.search(pattern, source) is not None
    except re.error as exc:
        raise value_error(f"text.match_regex: invalid regexp {pattern!r}: {exc}") from None


# -- sys --


def _get_env(bindings: Bindings, args: Args) -> Any:
    name, default = args["name"], args.get("default")
    _need("sys.get_env", "name", name, "a string", isinstance(name, str))
    _need(
        "sys.get_env", "default", default, "a string", default is None or isinstance(default, str)
    )
    return bindings.environment.get(name, default)


def _now(bindings: Bindings, _: Args) -> float:
    return float(bindings.now())


_SEVERITIES = (
    "DEFAULT",
    "DEBUG",
    "INFO",
    "NOTICE",
    "WARNING",
    "ERROR",
    "CRITICAL",
    "ALERT",
    "EMERGENCY",
)
_LOGGABLE = (int, float, bool, str, list, dict)


def _log(bindings: Bindings, args: Args) -> None:
    given = [key for key in ("data", "text", "json") if args.get(key) is not None]
    if len(given) != 1:
        raise type_error(f"sys.log: exactly one of data, text or json, not {given or 'none'}")
    (kind,) = given
    payload = args[kind]
    if kind == "json":
        _need("sys.log", "json", payload, "a map", isinstance(payload, dict))
    else:
        _need("sys.log", kind, payload, "a loggable value", isinstance(payload, _LOGGABLE))
    severity = args.get("severity") or "DEFAULT"
    _need("sys.log", "severity", severity, "a string", isinstance(severity, str))
    if severity not in _SEVERITIES:
        raise value_error(f"sys.log: severity must be one of {', '.join(_SEVERITIES)}")
    stored_as = (
        "json" if kind == "json" or (kind == "data" and isinstance(payload, dict)) else "text"
    )
    bindings.log(LogEntry(severity, stored_as, payload))


# -- time --


def _time_format(_: Bindings, args: Args) -> str:
    seconds, zone_name = args["seconds"], args.get("timezone")
    _need("time.format", "seconds", seconds, "a number", is_number(seconds))
    _need(
        "time.format",
        "timezone",
        zone_name,
        "a string",
        zone_name is None or isinstance(zone_name, str),
    )
    try:
        zone = zoneinfo.ZoneInfo(zone_name) if zone_name else datetime.UTC
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise value_error(f"time.format: unknown timezone {zone_name!r}") from None
    moment = datetime.datetime.fromtimestamp(seconds, tz=zone)
    offset = moment.utcoffset() or datetime.timedelta(0)
    # The documented examples: "...33.000000Z" for UTC/GMT, "...33.000000+02:00" otherwise.
    if offset == datetime.timedelta(0):
        suffix = "Z"
    else:
        total = int(offset.total_seconds())
        sign = "+" if total >= 0 else "-"
        hours, minutes = divmod(abs(total) // 60, 60)
        suffix = f"{sign}{hours:02d}:{minutes:02d}"
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + suffix


# -- base64, json --


def _base64_encode(_: Bindings, args: Args) -> str:
    data, padding = args["data"], args.get("padding", True)
    _need("base64.encode", "data", data, "bytes", isinstance(data, bytes))
    text = base64.b64encode(data).decode("ascii")
    return text if padding else text.rstrip("=")


def _base64_decode(_: Bindings, args: Args) -> bytes:
    data, padding = args["data"], args.get("padding", True)
    _need("base64.decode", "data", data, "a string", isinstance(data, str))
    if not padding:
        data += "=" * (-len(data) % 4)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise value_error(f"base64.decode: {exc}") from None


def _check_encodable(value: Any) -> None:
    if isinstance(value, bytes):
        raise value_error("json.encode: bytes cannot be JSON-encoded")
    if isinstance(value, list):
        for item in value:
            _check_encodable(item)
    elif isinstance(value, dict):
        for item in value.values():
            _check_encodable(item)


def _json_text(data: Any, indent: Any) -> str:
    _check_encodable(data)
    if indent is None or indent is False:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    if indent is True:
        indent = {}
    _need("json.encode", "indent", indent, "a boolean or a map", isinstance(indent, dict))
    prefix, step = indent.get("prefix", ""), indent.get("indent", "    ")
    text = json.dumps(data, indent=step, separators=(",", ": "), ensure_ascii=False)
    # Every element after the first starts a new line with `prefix`, then the indents.
    first, *rest = text.split("\n")
    return first + "".join("\n" + prefix + line for line in rest)


def _json_encode(_: Bindings, args: Args) -> bytes:
    return _json_text(args["data"], args.get("indent")).encode("utf-8")


def _json_encode_to_string(_: Bindings, args: Args) -> str:
    return _json_text(args["data"], args.get("indent"))


def _json_decode(_: Bindings, args: Args) -> Any:
    data = args["data"]
    _need("json.decode", "data", data, "bytes or a string", isinstance(data, bytes | str))
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise value_error(f"json.decode: {exc}") from None


# -- events and the Pub/Sub connector: through the bindings --


def _create_callback_endpoint(bindings: Bindings, args: Args) -> Any:
    method = args.get("http_callback_method", "POST")
    _need(
        "events.create_callback_endpoint",
        "http_callback_method",
        method,
        "a string",
        isinstance(method, str),
    )
    return dict(bindings.create_callback_endpoint(method))


def _await_callback(bindings: Bindings, args: Args) -> Any:
    callback, timeout = args["callback"], args.get("timeout", 43200.0)
    _need(
        "events.await_callback",
        "callback",
        callback,
        "a map with a url",
        isinstance(callback, dict) and isinstance(callback.get("url"), str),
    )
    _need("events.await_callback", "timeout", timeout, "a number", is_number(timeout))
    if timeout < 0:
        raise value_error("events.await_callback: timeout must not be negative")
    request = bindings.await_callback(callback, float(timeout))
    if request is None:
        raise tagged(TIMEOUT_ERROR, f"timed out after {timeout} s waiting for a callback")
    return dict(request)


def _pubsub_publish(bindings: Bindings, args: Args) -> Any:
    topic, body = args["topic"], args["body"]
    _need("pubsub publish", "topic", topic, "a string", isinstance(topic, str))
    _need("pubsub publish", "body", body, "a map", isinstance(body, dict))
    return dict(bindings.publish(topic, body))


def _function(
    name: str, params: str, impl: Callable[[Bindings, Args], Any], *, call_only: bool = False
) -> Function:
    names = tuple(p.rstrip("?") for p in params.split())
    required = sum(1 for p in params.split() if not p.endswith("?"))
    return Function(name, names, required, impl, in_expressions=not call_only)


FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in (
        _function("default", "val defaultVal", _default),
        _function("string", "value", _string),
        _function("int", "value", _int),
        _function("double", "value", _double),
        _function("len", "value", _len),
        _function("keys", "map", _keys),
        _function("map.get", "map keys", _map_get),
        _function("text.match_regex", "source regexp", _match_regex),
        _function("sys.get_env", "name default?", _get_env),
        _function("sys.now", "", _now),
        _function("sys.log", "data? severity? text? json? timeout?", _log, call_only=True),
        _function("time.format", "seconds timezone?", _time_format),
        _function("base64.encode", "data padding?", _base64_encode),
        _function("base64.decode", "data padding?", _base64_decode),
        _function("json.encode", "data indent?", _json_encode),
        _function("json.encode_to_string", "data indent?", _json_encode_to_string),
        _function("json.decode", "data", _json_decode),
        _function(
            "events.create_callback_endpoint",
            "http_callback_method?",
            _create_callback_endpoint,
            call_only=True,
        ),
        _function("events.await_callback", "callback timeout?", _await_callback, call_only=True),
        _function(
            "googleapis.pubsub.v1.projects.topics.publish",
            "topic body connector_params?",
            _pubsub_publish,
            call_only=True,
        ),
    )
}
