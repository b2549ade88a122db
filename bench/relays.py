"""The functions the benchmark compares: this project's relay and two baselines.

- floor: the least any relay must do (decode, one POST with a cached token);
- naive: the one-off relay people write by hand (new session and token per call).
"""

from __future__ import annotations

from pathlib import Path

BENCH = Path(__file__).resolve().parent
FLOOR_TOKEN = "ya29.bench-fixed-token"
BASELINES: dict[str, tuple[Path, dict[str, str]]] = {
    "floor": (BENCH / "floor_function" / "main.py", {"FLOOR_TOKEN": FLOOR_TOKEN}),
    "naive": (BENCH / "naive_function" / "main.py", {}),
}
