"""The worker example against the Pub/Sub emulator."""

from tests.support.fixtures import _emulator_session, emulator, process_log_dir

__all__ = ["_emulator_session", "emulator", "process_log_dir"]
