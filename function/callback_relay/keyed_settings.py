"""Settings of keyed waits (docs/events.md), read at start-up with the rest of config.py.

| Variable | Default | Meaning |
|---|---|---|
| ``EVENT_STORE`` | (off) | ``firestore`` turns keyed waits on |
| ``FIRESTORE_DATABASE`` | ``(default)`` | The Firestore database (Native mode) |
| ``EVENT_TTL_SECONDS`` | ``3600`` | How long an event is kept for later waits (``0``: not) |
| ``EVENT_TOPICS`` | ``{}`` | Existing topics whose messages are events (event_topics.py) |
| ``GOOGLE_CLOUD_PROJECT`` | (required when on) | The project of the database |
| ``FIRESTORE_EMULATOR_HOST`` | unset | **Local only.** ``host:port`` of the Firestore emulator |
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from callback_relay.errors import ConfigError
from callback_relay.keyed_message import MAX_TTL_SECONDS

if TYPE_CHECKING:
    from callback_relay.event_topics import EventTopics

DEFAULT_EVENT_TTL_SECONDS = 3600
STORES = ("firestore",)
_DATABASE_RE = re.compile(r"\(default\)|[a-z][a-z0-9-]{2,62}")


@dataclasses.dataclass(frozen=True)
class KeyedSettings:
    project: str
    database: str = "(default)"
    default_ttl_seconds: int = DEFAULT_EVENT_TTL_SECONDS
    topics: EventTopics | None = None
    emulator_host: str | None = None


def load_keyed_settings(env: Mapping[str, str]) -> KeyedSettings | None:
    """KeyedSettings when EVENT_STORE is set, None when keyed waits are off; or ConfigError."""
    store = env.get("EVENT_STORE", "").strip().lower()
    if not store and not env.get("EVENT_TOPICS", "").strip():
        return None  # off: the direct path imports nothing more
    from callback_relay.event_topics import parse_event_topics

    topics = parse_event_topics(env.get("EVENT_TOPICS", ""))
    if not store:
        if topics:
            raise ConfigError(
                "EVENT_TOPICS is set but keyed waits are off: set EVENT_STORE=firestore"
            )
        return None
    if store not in STORES:
        raise ConfigError(f"EVENT_STORE={store!r} must be one of {', '.join(STORES)} (or unset)")
    database = env.get("FIRESTORE_DATABASE", "").strip() or "(default)"
    if not _DATABASE_RE.fullmatch(database):
        raise ConfigError(f"FIRESTORE_DATABASE={database!r} is not a Firestore database id")
    raw_ttl = env.get("EVENT_TTL_SECONDS", "").strip()
    ttl = DEFAULT_EVENT_TTL_SECONDS
    if raw_ttl:
        if not raw_ttl.isdigit() or int(raw_ttl) > MAX_TTL_SECONDS:
            raise ConfigError(
                f"EVENT_TTL_SECONDS={raw_ttl!r} must be a whole number from 0 to {MAX_TTL_SECONDS}"
            )
        ttl = int(raw_ttl)
    project = env.get("GOOGLE_CLOUD_PROJECT", "").strip()
    if not project:
        raise ConfigError(
            "EVENT_STORE=firestore needs GOOGLE_CLOUD_PROJECT (the database's project)"
        )
    emulator = env.get("FIRESTORE_EMULATOR_HOST", "").strip() or None
    return KeyedSettings(project, database, ttl, topics, emulator)
