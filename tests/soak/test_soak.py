"""A small fault-injection soak (bench.soak) through the Pub/Sub emulator: nothing is lost.

A few hundred messages with every fault kind at raised rates, a worker killed,
the function killed and restarted, token failures, duplicates and poison.
The full soak is ``python -m bench.soak`` (see docs/performance.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import SoakConfig, run_soak, table
from harness.pubsub_emulator import PubSubEmulator

pytestmark = [pytest.mark.emulator, pytest.mark.slow]


@pytest.mark.timeout(240)
def test_small_soak_loses_nothing(emulator: PubSubEmulator, process_log_dir: Path) -> None:
    config = SoakConfig(
        messages=150,
        rate=60.0,
        duplicate_rate=0.05,
        poison_rate=0.1,  # 15: every poison kind at least once
        p_5xx=0.05,
        p_quota=0.03,
        p_slow=0.03,
        p_reset=0.03,
        token_failure_every_seconds=1.0,
        token_failure_count=2,
        token_lifetime_seconds=4,
        kill_worker_at=0.3,
        restart_at=0.6,
        max_delivery_attempts=5,
        drain_timeout_seconds=120.0,
    )
    summary = run_soak(emulator, config, process_log_dir / "soak")
    report = table(summary)
    assert summary["lost"] == 0, report
    assert summary["poison_unaccounted"] == 0, report
    assert summary["unexpected_calls"] == 0, report
    assert not summary["crash_loop"], report
    assert summary["function_alive_at_end"], report
    assert summary["faults_injected"]["worker_kills"] == 1, report
    assert summary["faults_injected"]["function_restarts"] == 1, report
    # Eventarc-shaped delivery: even a message without data is acknowledged and logged.
    assert summary["poison"]["attributes_only"]["acked_logged"] == 1, report
    assert summary["ok"], report
