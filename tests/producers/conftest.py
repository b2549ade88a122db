"""Producer snippet tests: real snippets against the Pub/Sub emulator where a runtime exists."""

from tests.support.fixtures import _emulator_session, emulator, process_log_dir

__all__ = ["_emulator_session", "emulator", "process_log_dir"]
