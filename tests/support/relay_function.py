"""The relay function under functions-framework (gunicorn, several threads) as a subprocess."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from tests.support.ports import LOOPBACK, free_port
from tests.support.processes import ManagedProcess, child_env, managed_process

REPO = Path(__file__).resolve().parents[2]
FUNCTIONS_FRAMEWORK = Path(sys.executable).parent / "functions-framework"


@contextlib.contextmanager
def relay_function(
    log_dir: Path,
    *,
    metadata_host: str,
    workflows_host: str,
    extra_env: Mapping[str, str] | None = None,
    threads: int = 8,
    target: str = "relay",
    signature_type: str = "cloudevent",
) -> Iterator[tuple[ManagedProcess, str]]:
    """Yield (process, base URL) of the function, listening on a free loopback port."""
    port = free_port()
    env = child_env(
        {
            "GCE_METADATA_HOST": metadata_host,
            "GCE_METADATA_IP": metadata_host,
            "WORKFLOWS_EMULATOR_HOST": workflows_host,
            "WORKERS": "1",
            "THREADS": str(threads),
            "LOG_LEVEL": "INFO",
            "PYTHONPATH": os.pathsep.join([str(REPO / "function"), str(REPO)]),
            **(extra_env or {}),
        },
        drop=("GOOGLE_APPLICATION_CREDENTIALS", "PUBSUB_EMULATOR_HOST", "ALLOWED_WORKFLOWS"),
    )
    argv = [
        str(FUNCTIONS_FRAMEWORK),
        "--source",
        str(REPO / "function" / "main.py"),
        "--target",
        target,
        "--signature-type",
        signature_type,
        "--host",
        LOOPBACK,
        "--port",
        str(port),
    ]
    with managed_process(
        f"relay-function-{port}",
        argv,
        log_dir / f"relay-function-{port}.log",
        env=env,
        cwd=REPO,
        ready_port=(LOOPBACK, port),
        ready_timeout=30.0,
    ) as process:
        yield process, f"http://{LOOPBACK}:{port}"
