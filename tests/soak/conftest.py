"""Soak tests use the session's Pub/Sub emulator (tests.support.fixtures)."""

from tests.support.fixtures import _emulator_session, emulator, process_log_dir

__all__ = ["_emulator_session", "emulator", "process_log_dir"]
