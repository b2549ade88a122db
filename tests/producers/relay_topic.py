"""A relay topic on the emulator with a subscription standing in for the relay."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Sequence

from harness.processes import child_env
from harness.pubsub_emulator import PubSubEmulator, unique_name
from harness.pubsub_helpers import pull


@dataclasses.dataclass(frozen=True)
class RelayTopic:
    emulator: PubSubEmulator
    topic: str
    subscription: str

    @classmethod
    def create(cls, emulator: PubSubEmulator, prefix: str) -> RelayTopic:
        topic = unique_name(f"{prefix}-relay")
        emulator.create_topic(topic)
        subscription = emulator.create_subscription(unique_name(f"{prefix}-relay-sub"), topic)
        return cls(emulator, topic, subscription)

    def snippet_env(self, **extra: str) -> dict[str, str]:
        """What a worker sets: its project and the relay topic, plus the emulator address."""
        return child_env(
            {
                **self.emulator.env(),
                "GOOGLE_CLOUD_PROJECT": self.emulator.project,
                "RELAY_TOPIC": self.topic,
                **extra,
            }
        )

    def run(
        self, argv: Sequence[str], stdin: str = "", timeout: float = 120, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv),
            input=stdin,
            env=self.snippet_env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def received_data(self) -> bytes:
        """The one message published, exactly as the relay would receive it."""
        (received,) = pull(self.emulator, self.subscription, expected=1)
        assert dict(received.message.attributes) == {}
        return bytes(received.message.data)
