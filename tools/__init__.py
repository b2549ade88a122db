"""Operator CLIs: ``python -m tools.publish``, ``python -m tools.replay_dead_letters``.

They check messages with the relay's own code, ``function/callback_relay``. That
package is deployed from ``function/`` as the function's source root, so it is not
installed anywhere: put ``function/`` on the import path here, once, so that the
CLIs find it when run from a clone. Appended, so it never shadows an installed module.
"""

from __future__ import annotations

import sys
from pathlib import Path

FUNCTION_SOURCE_DIR = str(Path(__file__).resolve().parent.parent / "function")
if FUNCTION_SOURCE_DIR not in sys.path:
    sys.path.append(FUNCTION_SOURCE_DIR)
