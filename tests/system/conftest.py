"""System tests: real processes on loopback (Pub/Sub emulator, functions-framework, fakes)."""

from tests.support.fixtures import _emulator_session, emulator, process_log_dir

__all__ = ["_emulator_session", "emulator", "process_log_dir"]
