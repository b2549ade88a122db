"""Benchmark: this project's relay against the floor and the naive relay, in one run.

Each run starts one function under functions-framework (as deployed), feeds it
Eventarc-shaped binary CloudEvents from a separate load-generator process over
keep-alive connections, and checks that the fake Workflows API answered a real
200 for every message. Relays alternate order across rounds; the table shows
medians over rounds. Then cold start: import time and time to first callback.

    .venv/bin/python -m bench.run [--messages 3000 --concurrency 16 --rounds 3 ...]

Writes bench/results/results.json, results.md and latency.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import coldstart
from bench.relays import BASELINES
from harness.procstat import peak_rss_mib
from harness.relay_function import REPO
from harness.stack import Stack, function_server, loopback_stack

RELAYS = ("relay", "floor", "naive")
RESULTS = REPO / "bench" / "results"


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def round_order(round_index: int) -> list[str]:
    """Rotate every round and reverse every other one, so no relay always goes first."""
    shift = round_index % len(RELAYS)
    order = list(RELAYS[shift:] + RELAYS[:shift])
    return order[::-1] if round_index % 2 else order


def run_once(
    stack: Stack, relay: str, threads: int | None, args: argparse.Namespace
) -> dict[str, Any]:
    stack.reset()
    urls = stack.callback_urls(args.warmup + args.messages)
    extra = dict(kv.split("=", 1) for kv in args.relay_env) if relay == "relay" else {}
    with (
        function_server(stack, relay, threads, extra) as server,
        tempfile.TemporaryDirectory() as tmp,
    ):
        job = {
            "target": server.host,
            "callback_urls": urls,
            "concurrency": args.concurrency,
            "time_limit_seconds": args.time_limit,
            "warmup": args.warmup,
            "id_prefix": f"{relay}-{time.monotonic_ns()}",
            "cpu_pids": {
                "function": [server.worker_pid],
                "workflows_fake": [stack.workflows.pid],
                "metadata_fake": [stack.metadata.pid],
            },
        }
        job_path = Path(tmp) / "job.json"
        out_path = Path(tmp) / "out.json"
        job_path.write_text(json.dumps(job))
        subprocess.run(
            [sys.executable, "-m", "bench.loadgen", str(job_path), str(out_path)],
            cwd=REPO,
            check=True,
            timeout=args.time_limit + 180,
        )
        result = json.loads(out_path.read_text())
        worker_rss = peak_rss_mib(server.worker_pid)
        master_rss = peak_rss_mib(server.process.pid)
        worker_alive = server.process.running()
    stats = stack.stats()
    latencies = sorted(x * 1000 for x in result.pop("latencies_seconds"))
    sent = int(result["sent"])
    ok = int(result["statuses"].get("200", 0))
    expected_callbacks = ok + int(result["warmup"]["statuses"].get("200", 0))
    callbacks_200 = int(stats["by_status"].get("200", 0))
    elapsed = float(result["elapsed_seconds"])
    cpu = result["cpu_seconds"]
    return {
        "relay": relay,
        "threads": threads or "default",
        "sent": sent,
        "ok": ok,
        "statuses": result["statuses"],
        "elapsed_seconds": elapsed,
        "msgs_per_second": ok / elapsed if elapsed else 0.0,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else float("nan"),
        "worker_peak_rss_mib": worker_rss,
        "master_peak_rss_mib": master_rss,
        "function_cpu_ms_per_msg": 1000 * cpu["function"] / max(sent, 1),
        "workflows_fake_cpu_ms_per_msg": 1000 * cpu["workflows_fake"] / max(sent, 1),
        "fake_calls": stats["calls"],
        "fake_by_status": stats["by_status"],
        # Every message answered 200 by the function was a real 200 at the fake.
        "verified": callbacks_200 == expected_callbacks and ok == sent and worker_alive,
        "latencies_ms": latencies,
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = (
        "msgs_per_second",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "worker_peak_rss_mib",
        "function_cpu_ms_per_msg",
        "workflows_fake_cpu_ms_per_msg",
    )
    summary: dict[str, Any] = {}
    for threads in dict.fromkeys(r["threads"] for r in runs):
        per_relay: dict[str, Any] = {}
        for relay in RELAYS:
            mine = [r for r in runs if r["threads"] == threads and r["relay"] == relay]
            if not mine:
                continue
            per_relay[relay] = {k: statistics.median(r[k] for r in mine) for k in keys}
            per_relay[relay]["rounds"] = len(mine)
            per_relay[relay]["all_verified"] = all(r["verified"] for r in mine)
            per_relay[relay]["msgs_per_second_rounds"] = [
                round(r["msgs_per_second"], 1) for r in mine
            ]
        ratios: dict[str, float] = {}
        if {"relay", "floor"} <= per_relay.keys():
            ratios["relay_floor_throughput"] = (
                per_relay["relay"]["msgs_per_second"] / per_relay["floor"]["msgs_per_second"]
            )
            ratios["relay_floor_p99"] = per_relay["relay"]["p99_ms"] / per_relay["floor"]["p99_ms"]
            # Steadier than msgs/s on a noisy machine: the worker's own CPU per message.
            ratios["relay_floor_cpu_per_msg"] = (
                per_relay["relay"]["function_cpu_ms_per_msg"]
                / per_relay["floor"]["function_cpu_ms_per_msg"]
            )
        if {"relay", "naive"} <= per_relay.keys():
            ratios["relay_naive_throughput"] = (
                per_relay["relay"]["msgs_per_second"] / per_relay["naive"]["msgs_per_second"]
            )
        summary[str(threads)] = {"relays": per_relay, "ratios": ratios, "goals": goals(ratios)}
    return summary


def goals(ratios: dict[str, float]) -> dict[str, bool]:
    checks = {
        "relay_floor_throughput": lambda v: v >= 0.9,
        "relay_naive_throughput": lambda v: v >= 3.0,
        "relay_floor_p99": lambda v: v <= 1.3,
    }
    return {name: checks[name](value) for name, value in ratios.items() if name in checks}


def markdown(summary: dict[str, Any], cold: dict[str, Any] | None, command: str) -> str:
    lines = [f"Command: `{command}`", ""]
    lines += [
        "| threads | relay | msgs/s (median) | p50 ms | p99 ms | max ms | peak RSS MiB (worker) "
        "| function CPU ms/msg | msgs/s per round |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for threads, block in summary.items():
        for relay, m in block["relays"].items():
            flag = "" if m["all_verified"] else " (UNVERIFIED)"
            lines.append(
                f"| {threads} | {relay}{flag} | {m['msgs_per_second']:.0f} | {m['p50_ms']:.1f} "
                f"| {m['p99_ms']:.1f} | {m['max_ms']:.1f} | {m['worker_peak_rss_mib']:.1f} "
                f"| {m['function_cpu_ms_per_msg']:.2f} "
                f"| {', '.join(str(x) for x in m['msgs_per_second_rounds'])} |"
            )
    lines += [
        "",
        "| threads | relay/floor msgs/s (goal >= 0.9) | relay/naive msgs/s (goal >= 3) "
        "| relay/floor p99 (goal <= 1.3) | relay/floor worker CPU per msg |",
        "|---|---:|---:|---:|---:|",
    ]
    for threads, block in summary.items():
        cells = [
            _ratio_cell(block, name)
            for name in (
                "relay_floor_throughput",
                "relay_naive_throughput",
                "relay_floor_p99",
                "relay_floor_cpu_per_msg",
            )
        ]
        lines.append(f"| {threads} | {' | '.join(cells)} |")
    if cold:
        lines += ["", coldstart.markdown(cold)]
    return "\n".join(lines) + "\n"


def _ratio_cell(block: dict[str, Any], name: str) -> str:
    if name not in block["ratios"]:
        return "-"
    if name not in block["goals"]:
        return f"{block['ratios'][name]:.2f}"
    met = "met" if block["goals"][name] else "NOT met"
    return f"{block['ratios'][name]:.2f} {met}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--messages", type=int, default=2000, help="measured messages per run")
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured messages first")
    parser.add_argument("--concurrency", type=int, default=16, help="open connections")
    parser.add_argument("--time-limit", type=float, default=6.0, help="seconds per run at most")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--threads", default="default,1", help="THREADS settings: 'default' and/or numbers"
    )
    parser.add_argument("--relays", default=",".join(RELAYS))
    parser.add_argument("--token-delay-ms", type=float, default=2.0)
    parser.add_argument("--cold-start-repeats", type=int, default=11, help="0 skips cold start")
    parser.add_argument(
        "--relay-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for this project's relay only (e.g. LOG_LEVEL=WARNING)",
    )
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m bench.run " + " ".join(sys.argv[1:] if argv is None else argv)
    relays = [r for r in args.relays.split(",") if r]
    thread_settings = [None if t == "default" else int(t) for t in args.threads.split(",") if t]
    args.out.mkdir(parents=True, exist_ok=True)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    runs: list[dict[str, Any]] = []
    cold: dict[str, Any] | None = None
    started = time.monotonic()
    with loopback_stack(
        log_dir, token_delay_ms=args.token_delay_ms, extra_sources=BASELINES
    ) as stack:
        for threads in thread_settings:
            for round_index in range(args.rounds):
                for relay in [r for r in round_order(round_index) if r in relays]:
                    run = run_once(stack, relay, threads, args)
                    run["round"] = round_index
                    runs.append(run)
                    print(
                        f"threads={run['threads']} round={round_index} {relay:5s} "
                        f"{run['msgs_per_second']:7.1f} msgs/s p50={run['p50_ms']:.1f} ms "
                        f"p99={run['p99_ms']:.1f} ms "
                        f"cpu={run['function_cpu_ms_per_msg']:.2f} ms/msg "
                        f"verified={run['verified']}",
                        file=sys.stderr,
                        flush=True,
                    )
        if args.cold_start_repeats:
            cold = coldstart.measure(stack, args.cold_start_repeats)
    summary = summarize(runs)
    document = {
        "command": command,
        "machine": {
            "python": platform.python_version(),
            "cpus": __import__("os").cpu_count(),
            "platform": platform.platform(),
        },
        # Paths of this machine stay out of a file that is committed.
        "settings": {k: str(v) for k, v in vars(args).items() if k != "out"},
        "summary": summary,
        "cold_start": cold,
        "runs": [{k: v for k, v in r.items() if k != "latencies_ms"} for r in runs],
        "wall_seconds": time.monotonic() - started,
    }
    (args.out / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    raw = args.out / "raw"
    raw.mkdir(exist_ok=True)
    (raw / "latencies.json").write_text(
        json.dumps([{k: r[k] for k in ("relay", "threads", "round", "latencies_ms")} for r in runs])
    )
    table = markdown(summary, cold, command)
    (args.out / "results.md").write_text(table)
    if not args.no_plot:
        from bench.plot import plot

        plot(runs, args.out / "latency.png")
    print(table)
    print(f"wall time {document['wall_seconds']:.0f} s; logs in {log_dir}", file=sys.stderr)
    verified = all(r["verified"] for r in runs)
    return 0 if verified else 1


if __name__ == "__main__":
    sys.exit(main())
