"""The local stack: every stand-in for Google Cloud on loopback, all stopped on exit.

- a trustme CA and a server certificate for 127.0.0.1 (the CA file is what
  REQUESTS_CA_BUNDLE points the functions at);
- the fake metadata server (harness.fake_metadata_server) with a token delay;
- the fake Workflows API over TLS (harness.fake_workflows_api, with fault rates);
- functions under functions-framework, exactly as deployed (gunicorn, WORKERS=1,
  THREADS default or given). ``Stack.sources`` names them: the relay, plus
  whatever a caller adds (the benchmark's baselines).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests
import trustme

from harness.ports import LOOPBACK, free_port
from harness.processes import ManagedProcess, child_env, managed_process
from harness.procstat import wait_for_child
from harness.relay_function import RELAY_SOURCE, REPO, function_argv

READY = r"READY (\S+)"


@dataclasses.dataclass
class Stack:
    log_dir: Path
    ca_path: Path
    metadata: ManagedProcess
    metadata_host: str
    workflows: ManagedProcess
    workflows_origin: str
    control: requests.Session
    gcloud_config: Path
    # Function name -> (main.py, extra environment); "relay" is this project's.
    sources: dict[str, tuple[Path, dict[str, str]]] = dataclasses.field(
        default_factory=lambda: {"relay": (RELAY_SOURCE, {})}
    )

    def control_call(self, method: str, path: str, body: Any = None, timeout: float = 60) -> Any:
        reply = self.control.request(
            method, f"{self.workflows_origin}{path}", json=body, timeout=timeout
        )
        reply.raise_for_status()
        return reply.json()

    def reset(self) -> None:
        self.control_call("POST", "/_fake/reset")

    def callback_urls(self, count: int) -> list[str]:
        urls = self.control_call("POST", "/_fake/bulk", {"count": count})["callback_urls"]
        return list(urls)

    def stats(self) -> dict[str, Any]:
        return dict(self.control_call("GET", "/_fake/stats"))

    def metadata_call(self, path: str) -> Any:
        reply = requests.get(f"http://{self.metadata_host}{path}", timeout=10)
        reply.raise_for_status()
        return reply.json()

    def function_env(
        self, relay: str, threads: int | None, extra: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        env = child_env(
            {
                "GCE_METADATA_HOST": self.metadata_host,
                "GCE_METADATA_IP": self.metadata_host,
                "WORKFLOWS_EMULATOR_HOST": self.workflows_origin,
                "REQUESTS_CA_BUNDLE": str(self.ca_path),
                # No developer credentials: ADC must come from the fake metadata server.
                "CLOUDSDK_CONFIG": str(self.gcloud_config),
                "PYTHONPATH": str(self.sources[relay][0].parent),
                "LOG_LEVEL": "INFO",
                **self.sources[relay][1],
                **({"THREADS": str(threads)} if threads else {}),
                **(extra or {}),
            },
            drop=(
                "GOOGLE_APPLICATION_CREDENTIALS",
                "PUBSUB_EMULATOR_HOST",
                "ALLOWED_WORKFLOWS",
                "GOOGLE_CLOUD_PROJECT",
                "THREADS",
                "WORKERS",
            ),
        )
        return env

    def function_argv(self, relay: str, port: int) -> list[str]:
        return function_argv(self.sources[relay][0], port)


@dataclasses.dataclass
class FunctionServer:
    process: ManagedProcess
    port: int
    worker_pid: int

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"


@contextlib.contextmanager
def function_server(
    stack: Stack,
    relay: str,
    threads: int | None,
    extra_env: Mapping[str, str] | None = None,
    port: int | None = None,
    name: str | None = None,
) -> Iterator[FunctionServer]:
    port = port or free_port()
    with managed_process(
        name or f"{relay}-{port}",
        stack.function_argv(relay, port),
        stack.log_dir / f"{name or relay}-{port}.log",
        env=stack.function_env(relay, threads, extra_env),
        cwd=REPO,
        ready_port=(LOOPBACK, port),
        ready_timeout=30.0,
    ) as process:
        worker = wait_for_child(process.pid, 30.0)
        yield FunctionServer(process, port, worker)


def write_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """(CA bundle, server cert chain, server key) for 127.0.0.1."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_path = directory / "ca.pem"
    cert_path = directory / "server.pem"
    key_path = directory / "server-key.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return ca_path, cert_path, key_path


@contextlib.contextmanager
def loopback_stack(
    log_dir: Path,
    token_delay_ms: float = 2.0,
    token_lifetime_seconds: int = 3599,
    workflows_args: Sequence[str] = (),
    extra_sources: Mapping[str, tuple[Path, dict[str, str]]] | None = None,
) -> Iterator[Stack]:
    log_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as exits:
        certs = Path(exits.enter_context(tempfile.TemporaryDirectory(prefix="bench-tls-")))
        gcloud_config = Path(exits.enter_context(tempfile.TemporaryDirectory(prefix="bench-gc-")))
        ca_path, cert_path, key_path = write_certificates(certs)
        env = child_env(drop=("GOOGLE_APPLICATION_CREDENTIALS",))
        env["PYTHONPATH"] = str(REPO)
        metadata = exits.enter_context(
            managed_process(
                "metadata-fake",
                [
                    sys.executable,
                    "-m",
                    "harness.fake_metadata_server",
                    "--port",
                    "0",
                    "--token-delay-ms",
                    str(token_delay_ms),
                    "--token-lifetime",
                    str(token_lifetime_seconds),
                ],
                log_dir / "metadata-fake.log",
                env=env,
                cwd=REPO,
                ready_line=READY,
            )
        )
        metadata_host = metadata.wait_for_line(READY, 1).group(1)
        workflows = exits.enter_context(
            managed_process(
                "workflows-fake",
                [
                    sys.executable,
                    "-m",
                    "harness.fake_workflows_api",
                    "--port",
                    "0",
                    "--tls-cert",
                    str(cert_path),
                    "--tls-key",
                    str(key_path),
                    *workflows_args,
                ],
                log_dir / "workflows-fake.log",
                env=env,
                cwd=REPO,
                ready_line=READY,
            )
        )
        workflows_host = workflows.wait_for_line(READY, 1).group(1)
        control = requests.Session()
        control.trust_env = False
        control.verify = str(ca_path)
        exits.callback(control.close)
        yield Stack(
            log_dir,
            ca_path,
            metadata,
            metadata_host,
            workflows,
            f"https://{workflows_host}",
            control,
            gcloud_config,
            {"relay": (RELAY_SOURCE, {}), **(extra_sources or {})},
        )


def venv_python() -> str:
    return sys.executable if os.path.exists(sys.executable) else "python3"
