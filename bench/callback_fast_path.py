"""Microseconds per callback call on a kept-alive loopback connection, with a baseline.

The relay's call streams the answer, reads at most 64 KiB raw and runs each
attempt under the deadline watchdog. The baseline is the attempt as the relay
made it before: the same token, headers and classification, on a plain pooled
session, reading ``response.content`` (no stream, no watchdog). Both hit the
same loopback server in the same run, interleaved, and are timed in CPU
seconds of this process (client and server threads), so the ratio holds on a
machine shared with other work.

    .venv/bin/python -m bench.callback_fast_path
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
import timeit
from pathlib import Path

import requests
import requests.adapters

from harness.hostile_peer import HostilePeer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "function"))
from callback_relay.access_token import AccessTokenProvider
from callback_relay.callback_client import MAX_RESPONSE_BYTES, CallbackClient, build_session
from callback_relay.callback_response import classify_response


class _StaticCredentials:
    def __init__(self) -> None:
        self.token: str | None = None
        self.expiry: datetime.datetime | None = None

    def refresh(self, request: object) -> None:
        self.token = "ya29.bench"
        self.expiry = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) + datetime.timedelta(
            hours=1
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.callback_fast_path", description=__doc__)
    parser.add_argument("--number", type=int, default=100, help="calls per timing")
    parser.add_argument("--repeat", type=int, default=21, help="timings each; the best is kept")
    args = parser.parse_args(argv)
    with HostilePeer() as peer:
        url = peer.callback_url("ok")
        session = build_session(4)
        client = CallbackClient(
            session=session,
            tokens=AccessTokenProvider(credentials_factory=_StaticCredentials, session=session),
            deadline_seconds=30,
            connect_timeout_seconds=5,
            read_timeout_seconds=15,
        )
        plain = requests.Session()
        plain.trust_env = False
        plain.mount("http://", requests.adapters.HTTPAdapter(4, 4, max_retries=0))

        def relay_call() -> None:
            assert client.deliver("POST", url, b"{}", "k").classification.status == 200

        def baseline_call() -> None:
            token = client.tokens.token(wait_seconds=30)
            headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "k"}
            headers["Content-Type"] = "application/json"
            response = plain.request(
                "POST", url, data=b"{}", headers=headers, timeout=(5, 15), allow_redirects=False
            )
            content = response.content[:MAX_RESPONSE_BYTES]
            assert classify_response(response.status_code, response.headers, content).status == 200

        relay_call()
        baseline_call()
        ours, base = [], []
        relay_timer = timeit.Timer(relay_call, timer=time.process_time)
        baseline_timer = timeit.Timer(baseline_call, timer=time.process_time)
        for _ in range(args.repeat):  # interleaved: both see the same machine load
            ours.append(relay_timer.timeit(args.number) / args.number * 1e6)
            base.append(baseline_timer.timeit(args.number) / args.number * 1e6)
        connections = len({port for _mode, port in peer.requests})
    command = "python -m bench.callback_fast_path"
    print(f"Command: `{command} --number {args.number} --repeat {args.repeat}`\n")
    print("| step | relay us | baseline | baseline us | relay / baseline |")
    print("|---|---:|---|---:|---:|")
    print(
        f"| one callback call (keep-alive, loopback), CPU | {min(ours):.0f} | "
        f"the attempt before (response.content) | {min(base):.0f} | {min(ours) / min(base):.2f} |"
    )
    print(f"\nTCP connections used by both: {connections} (one each when keep-alive holds)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
