"""The relay function under functions-framework (gunicorn, several threads) as a subprocess."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from harness.ports import LOOPBACK, free_port
from harness.processes import ManagedProcess, child_env, managed_process

REPO = Path(__file__).resolve().parents[1]
RELAY_SOURCE = REPO / "function" / "main.py"
FUNCTIONS_FRAMEWORK = Path(sys.executable).parent / "functions-framework"


def function_argv(
    source: Path,
    port: int,
    target: str = "relay",
    signature_type: str = "cloudevent",
) -> list[str]:
    """functions-framework serving ``target`` from ``source`` on loopback, as deployed."""
    return [
        str(FUNCTIONS_FRAMEWORK),
        "--source",
        str(source),
        "--target",
        target,
        "--signature-type",
        signature_type,
        "--host",
        LOOPBACK,
        "--port",
        str(port),
    ]


def function_env(
    log_dir: Path,
    metadata_host: str,
    workflows_host: str,
    threads: int = 8,
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The function's environment: tokens only ever from the fake metadata server.

    google.auth.default() tries GOOGLE_APPLICATION_CREDENTIALS and gcloud's application
    default credentials before the metadata server, so both are hidden (an empty
    CLOUDSDK_CONFIG holds none): a developer's real token must never reach the fakes.
    https://googleapis.dev/python/google-auth/latest/reference/google.auth.html
    """
    gcloud_config = log_dir / "gcloud-config-empty"
    gcloud_config.mkdir(parents=True, exist_ok=True)
    return child_env(
        {
            "GCE_METADATA_HOST": metadata_host,
            "GCE_METADATA_IP": metadata_host,
            "WORKFLOWS_EMULATOR_HOST": workflows_host,
            "CLOUDSDK_CONFIG": str(gcloud_config),
            "WORKERS": "1",
            "THREADS": str(threads),
            "LOG_LEVEL": "INFO",
            "PYTHONPATH": os.pathsep.join([str(REPO / "function"), str(REPO)]),
            **(extra_env or {}),
        },
        drop=("GOOGLE_APPLICATION_CREDENTIALS", "PUBSUB_EMULATOR_HOST", "ALLOWED_WORKFLOWS"),
    )


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
    source: Path = RELAY_SOURCE,
) -> Iterator[tuple[ManagedProcess, str]]:
    """Yield (process, base URL) of the function, listening on a free loopback port."""
    port = free_port()
    env = function_env(log_dir, metadata_host, workflows_host, threads, extra_env)
    argv = function_argv(source, port, target, signature_type)
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
