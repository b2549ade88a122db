"""Fault-injection soak through the real Pub/Sub emulator: is any resume lost?

Messages are published to the emulator and pushed (subscription with a retry
policy and a dead-letter topic) to the relay under functions-framework, which
calls a fake Workflows API over TLS that injects faults at configurable rates:
503s, quota 429s with Retry-After, answers processed but sent after the relay's
read timeout (whose retry then meets the callback's own "already pending" 429),
and connection resets. On top: token server failures, a gunicorn worker killed
with SIGKILL, the whole function killed and restarted on the same port,
duplicate publishes, and poison messages (invalid data, hostile URLs,
attributes-only messages, expired ones).

At the end every genuine message must have reached its callback (a 200 at the
fake), every poison message must be accounted for (acknowledged with a log line
naming it, or dead-lettered), and no URL but a genuine callback may have been
called. Otherwise the exit status is 1.

    .venv/bin/python -m bench.soak --messages 10000 --rate 150
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import os
import random
import signal
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness.eventarc_forwarder import EventarcForwarder
from harness.ports import LOOPBACK, free_port
from harness.processes import ManagedProcess
from harness.procstat import children, wait_for_child
from harness.pubsub_emulator import PubSubEmulator, pubsub_emulator, unique_name
from harness.relay_function import RELAY_SOURCE, REPO, function_argv
from harness.stack import Stack, loopback_stack

# failed_fast: a broken message whose callback got the INVALID_MESSAGE error instead.
ACKED_POISON_OUTCOMES = frozenset({"message_rejected", "url_refused", "expired", "failed_fast"})
BOOT_LINE = "Booting worker with pid"


@dataclasses.dataclass
class SoakConfig:
    messages: int = 10000
    rate: float = 150.0  # publishes per second
    duplicate_rate: float = 0.02  # genuine messages published a second time
    poison_rate: float = 0.02
    p_5xx: float = 0.03
    p_quota: float = 0.02
    p_slow: float = 0.01
    p_reset: float = 0.02
    slow_seconds: float = 1.5
    read_timeout_seconds: float = 1.0
    retry_deadline_seconds: float = 4.0
    token_lifetime_seconds: int = 30
    token_failure_every_seconds: float = 10.0
    token_failure_count: int = 3
    kill_worker_at: float = 0.3  # fraction of publishes done; negative: never
    restart_at: float = 0.6
    restart_downtime_seconds: float = 1.0
    min_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 5.0
    max_delivery_attempts: int = 10
    ack_deadline_seconds: int = 30
    drain_timeout_seconds: float = 300.0
    threads: int | None = None
    seed: int = 7
    # "pull": Eventarc-shaped POSTs from a pull subscription (harness.eventarc_forwarder);
    # "push": an emulator push subscription (stalls after a few failures, see README).
    delivery: str = "pull"
    forwarder_concurrency: int = 16


@dataclasses.dataclass
class Poison:
    kind: str
    data: bytes
    expect: str  # "acked", "failed_fast" (acked after one error call) or "dead_lettered"


def poison_messages(origin: str, count: int) -> list[Poison]:
    fake_target = (
        f"{origin}/v1/projects/test-project/locations/us-central1/workflows/w"
        f"/executions/{uuid.uuid4()}/callbacks/{uuid.uuid4()}"
    )
    path_tail = "/v1/projects/p/locations/l/workflows/w/executions/e/callbacks/c"

    def url_message(url: str, **extra: Any) -> bytes:
        return json.dumps({"callback_url": url, **extra}).encode()

    kinds = [
        Poison("not_json", b"not json {", "acked"),
        Poison("not_utf8", b"\xff\xfe\x00", "acked"),
        Poison("url_not_string", b'{"callback_url": 5}', "acked"),
        Poison("empty_object", b"{}", "acked"),
        Poison("unknown_field", url_message(fake_target, extra=1), "failed_fast"),
        Poison("payload_on_get", url_message(fake_target, method="GET", payload={"a": 1}), "acked"),
        Poison("expired", url_message(fake_target, expires_at="2000-01-01T00:00:00Z"), "acked"),
        Poison("foreign_host", url_message("https://evil.example" + path_tail), "acked"),
        Poison("userinfo", url_message(f"{origin}@evil.example{path_tail}"), "acked"),
        Poison(
            "metadata_ssrf",
            url_message("http://169.254.169.254/computeMetadata/v1/instance/service-accounts/"),
            "acked",
        ),
        Poison("dot_segments", url_message(f"{origin}{path_tail}/../../../../x"), "acked"),
        Poison("percent_encoded", url_message(f"{origin}{path_tail}%2F..%2Fx"), "acked"),
        Poison("bare_foreign_url", b"https://evil.example/steal", "acked"),
        # No data at all: functions-framework answers 400 to such a push, so
        # Pub/Sub retries until the dead-letter policy takes it.
        Poison("attributes_only", b"", "dead_lettered"),
    ]
    return [kinds[i % len(kinds)] for i in range(count)]


class FunctionUnderTest:
    """The relay on a fixed port, so that it can be killed and restarted."""

    def __init__(self, stack: Stack, config: SoakConfig, env: dict[str, str]) -> None:
        self.stack = stack
        self.config = config
        self.env = env
        self.port = free_port()
        self.processes: list[ManagedProcess] = []
        self.worker_kills: list[int] = []

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def current(self) -> ManagedProcess:
        return self.processes[-1]

    def start(self) -> None:
        index = len(self.processes)
        process = ManagedProcess(
            f"soak-relay-{index}",
            function_argv(RELAY_SOURCE, self.port),
            self.stack.log_dir / f"soak-relay-{self.port}-{index}.log",
            env=self.env,
            cwd=REPO,
        ).start()
        self.processes.append(process)
        process.wait_for_port(LOOPBACK, self.port, timeout=30)
        wait_for_child(process.pid, 30)

    def kill_worker(self) -> None:
        workers = children(self.current.pid)
        if workers:
            os.kill(workers[0], signal.SIGKILL)
            self.worker_kills.append(len(self.processes) - 1)

    def kill_and_restart(self, downtime: float) -> None:
        # SIGKILL the whole group: no graceful shutdown, requests in flight are lost.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.current.pid, signal.SIGKILL)
        self.current.stop(grace=5)
        time.sleep(downtime)
        self.start()

    def stop(self) -> None:
        for process in self.processes:
            process.stop()

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for process in self.processes:
            for line in process.lines():
                if line.startswith("{"):
                    with contextlib.suppress(ValueError):
                        records.append(json.loads(line))
        return records

    def boots(self) -> list[int]:
        return [sum(BOOT_LINE in line for line in p.lines()) for p in self.processes]


def _pct(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run_soak(
    emulator: PubSubEmulator,
    config: SoakConfig,
    log_dir: Path,
    progress: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    workflows_args = [
        f"--p-5xx={config.p_5xx}",
        f"--p-quota={config.p_quota}",
        f"--p-slow={config.p_slow}",
        f"--p-reset={config.p_reset}",
        f"--slow-seconds={config.slow_seconds}",
        f"--seed={config.seed}",
    ]
    rng = random.Random(config.seed)
    with (
        loopback_stack(
            log_dir,
            token_delay_ms=2.0,
            token_lifetime_seconds=config.token_lifetime_seconds,
            workflows_args=workflows_args,
        ) as stack,
        _function(stack, config) as function,
    ):
        topic_id = unique_name("soak")
        topic = emulator.create_topic(topic_id)
        dead_topic = emulator.create_topic(unique_name("soak-dead-letter"))
        dead_sub = emulator.create_subscription(unique_name("soak-dead-pull"), dead_topic)
        subscription = emulator.create_subscription(
            unique_name(f"soak-{config.delivery}"),
            topic_id,
            push_endpoint=f"{function.url}/{topic}" if config.delivery == "push" else None,
            ack_deadline_seconds=config.ack_deadline_seconds,
            minimum_backoff_seconds=config.min_backoff_seconds,
            maximum_backoff_seconds=config.max_backoff_seconds,
            dead_letter_topic=dead_topic,
            max_delivery_attempts=config.max_delivery_attempts,
        )
        forwarder = None
        if config.delivery == "pull":
            forwarder = EventarcForwarder(
                emulator.subscriber(),
                subscription,
                topic,
                function.url + "/",
                batch_size=20,
                concurrency=config.forwarder_concurrency,
                keep_deliveries=False,
            ).start()
        urls = stack.callback_urls(config.messages)
        origin = stack.workflows_origin
        path_of = {url: url[len(origin) :] for url in urls}
        poison_count = round(config.messages * config.poison_rate)
        poisons = poison_messages(origin, poison_count)
        # The publish plan: genuine messages, duplicates of some, poison mixed in.
        plan: list[tuple[str, Any]] = [("genuine", i) for i in range(config.messages)]
        plan += [
            ("duplicate", i)
            for i in rng.sample(
                range(config.messages), round(config.messages * config.duplicate_rate)
            )
        ]
        plan += [("poison", i) for i in range(poison_count)]
        rng.shuffle(plan)

        published_at: dict[str, float] = {}
        poison_ids: dict[str, int] = {}
        publisher = emulator.publisher()
        events: list[str] = []
        started = time.time()
        next_token_failure = time.monotonic() + config.token_failure_every_seconds
        token_failures = 0
        futures: list[tuple[str, Any, Any]] = []
        killed = restarted = False
        try:
            for n, (kind, index) in enumerate(plan):
                due = started + n / config.rate
                delay = due - time.time()
                if delay > 0:
                    time.sleep(delay)
                done = n / len(plan)
                if not killed and 0 <= config.kill_worker_at <= done:
                    killed = True
                    function.kill_worker()
                    events.append(f"{time.time() - started:.1f}s: SIGKILL gunicorn worker")
                    progress(events[-1])
                if not restarted and 0 <= config.restart_at <= done:
                    restarted = True
                    stack.metadata_call(f"/_fake/fail?count={config.token_failure_count}")
                    token_failures += config.token_failure_count
                    function.kill_and_restart(config.restart_downtime_seconds)
                    events.append(
                        f"{time.time() - started:.1f}s: SIGKILL function, restarted after"
                        f" {config.restart_downtime_seconds:g}s (next"
                        f" {config.token_failure_count} token requests fail)"
                    )
                    progress(events[-1])
                if time.monotonic() >= next_token_failure:
                    next_token_failure += config.token_failure_every_seconds
                    stack.metadata_call(f"/_fake/fail?count={config.token_failure_count}")
                    token_failures += config.token_failure_count
                if kind == "poison":
                    data = poisons[index].data
                    attributes = {"poison": str(index), "kind": poisons[index].kind}
                else:
                    url = urls[index]
                    data = json.dumps({"callback_url": url, "payload": {"n": index}}).encode()
                    attributes = {"kind": kind}
                    if kind == "genuine":
                        published_at[url] = time.time()
                futures.append((kind, index, publisher.publish(topic, data, **attributes)))
            message_ids = [(kind, index, f.result(timeout=60)) for kind, index, f in futures]
        finally:
            publisher.stop()
        for kind, index, message_id in message_ids:
            if kind == "poison":
                poison_ids[message_id] = index
        publish_seconds = time.time() - started
        progress(f"published {len(plan)} messages in {publish_seconds:.1f}s; draining")

        # Drain: wait until every genuine callback got its 200 and every
        # poison message shows up in a log line or the dead-letter topic.
        dead_lettered: dict[int, int] = collections.Counter()
        genuine_dead: list[str] = []
        deadline = time.monotonic() + config.drain_timeout_seconds
        subscriber = emulator.subscriber()
        dead_path = dead_sub
        try:
            while True:
                ledger = stack.control_call("GET", "/_fake/ledger", timeout=120)
                delivered = {row[0] for row in ledger if row[2] == 200}
                missing = [u for u in urls if path_of[u] not in delivered]
                acked_poison = {
                    poison_ids[r["message_id"]]
                    for r in function.log_records()
                    if r.get("message_id") in poison_ids
                    and r.get("outcome") in ACKED_POISON_OUTCOMES
                }
                _pull_dead_letters(subscriber, dead_path, dead_lettered, genuine_dead)
                unaccounted = set(range(poison_count)) - acked_poison - set(dead_lettered)
                if not missing and not unaccounted:
                    break
                if time.monotonic() > deadline:
                    break
                progress(f"waiting: {len(missing)} genuine, {len(unaccounted)} poison outstanding")
                time.sleep(3)
            # Calls still in flight (late retries) land in the ledger too.
            time.sleep(2)
            ledger = stack.control_call("GET", "/_fake/ledger", timeout=120)
            _pull_dead_letters(subscriber, dead_path, dead_lettered, genuine_dead)
        finally:
            subscriber.close()
            if forwarder is not None:
                forwarder.stop()
                forwarder.subscriber.close()
        stats = stack.stats()
        metadata_stats = stack.metadata_call("/_fake/stats")
        records = function.log_records()
        boots = function.boots()
        masters_alive = function.current.running()

    return _summary(
        config=config,
        urls=urls,
        path_of=path_of,
        published_at=published_at,
        ledger=ledger,
        poisons=poisons,
        poison_ids=poison_ids,
        dead_lettered=dead_lettered,
        genuine_dead=genuine_dead,
        records=records,
        stats=stats,
        metadata_stats=metadata_stats,
        boots=boots,
        worker_kills=function.worker_kills,
        master_alive=masters_alive,
        events=events,
        forwarder=(
            {"statuses": dict(forwarder.statuses), "errors": forwarder.errors[:10]}
            if forwarder
            else None
        ),
        token_failures=token_failures,
        publish_seconds=publish_seconds,
        total_seconds=time.time() - started,
        plan_size=len(plan),
    )


@contextlib.contextmanager
def _function(stack: Stack, config: SoakConfig) -> Iterator[FunctionUnderTest]:
    env = stack.function_env(
        "relay",
        config.threads,
        {
            "CALLBACK_READ_TIMEOUT_SECONDS": str(config.read_timeout_seconds),
            "CALLBACK_CONNECT_TIMEOUT_SECONDS": "1",
            "CALLBACK_RETRY_DEADLINE_SECONDS": str(config.retry_deadline_seconds),
            "GUNICORN_LOG_LEVEL": "info",
        },
    )
    function = FunctionUnderTest(stack, config, env)
    try:
        function.start()
        yield function
    finally:
        function.stop()


def _pull_dead_letters(
    subscriber: Any, subscription: str, dead: dict[int, int], genuine_dead: list[str]
) -> None:
    from google.api_core import exceptions as api_exceptions

    for _ in range(100):  # bounded: at most 100 batches per look
        try:
            response = subscriber.pull(
                request={"subscription": subscription, "max_messages": 100}, timeout=2
            )
        except api_exceptions.DeadlineExceeded:
            return
        batch = list(response.received_messages)
        if not batch:
            return
        for item in batch:
            attributes = dict(item.message.attributes)
            if "poison" in attributes:
                dead[int(attributes["poison"])] += 1
            else:
                genuine_dead.append(item.message.data.decode("utf-8", "replace"))
        subscriber.acknowledge(
            request={"subscription": subscription, "ack_ids": [m.ack_id for m in batch]}
        )


def _summary(**k: Any) -> dict[str, Any]:
    config: SoakConfig = k["config"]
    ledger: list[list[Any]] = k["ledger"]
    path_of: dict[str, str] = k["path_of"]
    genuine_paths = set(path_of.values())
    # The one callback a broken message may reach: its own, with the error.
    fail_fast_paths = {
        urllib.parse.urlsplit(json.loads(p.data)["callback_url"]).path
        for p in k["poisons"]
        if p.expect == "failed_fast"
    }
    first_200: dict[str, float] = {}
    statuses: collections.Counter[str] = collections.Counter()
    keys_per_path: dict[str, set[str]] = collections.defaultdict(set)
    calls_per_key: collections.Counter[str] = collections.Counter()
    unexpected = 0
    for path, key, status, received_at in ledger:
        statuses[str(status)] += 1
        if path in fail_fast_paths:
            continue
        if path not in genuine_paths:
            unexpected += 1
            continue
        keys_per_path[path].add(str(key))
        calls_per_key[str(key)] += 1
        if status == 200 and path not in first_200:
            first_200[path] = received_at
    lost = [u for u in k["urls"] if path_of[u] not in first_200]
    latencies = [
        (first_200[path_of[u]] - k["published_at"][u]) * 1000
        for u in k["urls"]
        if path_of[u] in first_200 and u in k["published_at"]
    ]
    poisons: list[Poison] = k["poisons"]
    acked: collections.Counter[int] = collections.Counter()
    for record in k["records"]:
        index = k["poison_ids"].get(record.get("message_id"))
        if index is not None and record.get("outcome") in ACKED_POISON_OUTCOMES:
            acked[index] += 1
    by_kind: dict[str, dict[str, int]] = {}
    unaccounted = []
    for index, poison in enumerate(poisons):
        row = by_kind.setdefault(
            poison.kind, {"published": 0, "acked_logged": 0, "dead_lettered": 0}
        )
        row["published"] += 1
        if acked[index]:
            row["acked_logged"] += 1
        elif k["dead_lettered"].get(index):
            row["dead_lettered"] += 1
        else:
            unaccounted.append(index)
    outcomes = collections.Counter(str(r.get("outcome")) for r in k["records"] if "outcome" in r)
    # A crash loop shows as more worker boots than starts plus injected kills.
    expected_boots = [1 + k["worker_kills"].count(i) for i in range(len(k["boots"]))]
    crash_loop = any(b > e for b, e in zip(k["boots"], expected_boots, strict=True))
    summary = {
        "config": dataclasses.asdict(config),
        "published": k["plan_size"],
        "genuine": len(k["urls"]),
        "reached_callback": len(k["urls"]) - len(lost),
        "lost": len(lost),
        "lost_examples": lost[:5],
        "genuine_dead_lettered": len(k["genuine_dead"]),
        "duplicate_publishes": round(config.messages * config.duplicate_rate),
        "callback_calls": len(ledger),
        "calls_by_status": dict(statuses),
        "callbacks_called_with_2plus_keys": sum(1 for v in keys_per_path.values() if len(v) > 1),
        "keys_called_2plus_times": sum(1 for v in calls_per_key.values() if v > 1),
        "unexpected_calls": unexpected,
        "poison": by_kind,
        "poison_unaccounted": len(unaccounted),
        "relay_outcomes": dict(outcomes),
        "faults_injected": {
            **k["stats"].get("faults", {}),
            "token_failures": k["token_failures"],
            "worker_kills": len(k["worker_kills"]),
            "function_restarts": len(k["boots"]) - 1,
        },
        "token_requests": k["metadata_stats"].get("token_requests"),
        "worker_boots_per_process": k["boots"],
        "crash_loop": crash_loop,
        "function_alive_at_end": k["master_alive"],
        "latency_ms": {
            "p50": _pct(latencies, 0.5),
            "p99": _pct(latencies, 0.99),
            "max": max(latencies, default=float("nan")),
        },
        "events": k["events"],
        "forwarder": k["forwarder"],
        "publish_seconds": k["publish_seconds"],
        "total_seconds": k["total_seconds"],
    }
    summary["ok"] = (
        not lost
        and not unaccounted
        and unexpected == 0
        and not crash_loop
        and bool(k["master_alive"])
    )
    return summary


def table(s: dict[str, Any]) -> str:
    lat = s["latency_ms"]
    rows = [
        ("published (genuine + duplicates + poison)", s["published"]),
        ("genuine messages", s["genuine"]),
        ("reached their callback (200 at the fake)", s["reached_callback"]),
        ("**lost**", s["lost"]),
        ("genuine messages dead-lettered", s["genuine_dead_lettered"]),
        ("duplicate publishes", s["duplicate_publishes"]),
        ("callback calls, by status", _fmt(s["calls_by_status"])),
        ("callbacks called under 2+ Idempotency-Keys", s["callbacks_called_with_2plus_keys"]),
        ("Idempotency-Keys sent 2+ times (retries)", s["keys_called_2plus_times"]),
        ("calls to anything but a genuine callback", s["unexpected_calls"]),
        ("poison: acked+logged / dead-lettered / published", _poison(s["poison"])),
        ("poison unaccounted", s["poison_unaccounted"]),
        ("relay outcomes (log lines)", _fmt(s["relay_outcomes"])),
        ("faults injected", _fmt(s["faults_injected"])),
        ("token requests to the metadata server", s["token_requests"]),
        ("worker boots per function process", s["worker_boots_per_process"]),
        ("crash loop", s["crash_loop"]),
        (
            "publish -> first callback p50 / p99 / max ms",
            f"{lat['p50']:.0f} / {lat['p99']:.0f} / {lat['max']:.0f}",
        ),
        (
            "publishing took / whole soak s",
            f"{s['publish_seconds']:.0f} / {s['total_seconds']:.0f}",
        ),
        ("delivery", s["config"]["delivery"]),
        ("forwarder POST answers", _fmt(s["forwarder"]["statuses"]) if s["forwarder"] else "-"),
        ("result", "PASS" if s["ok"] else "FAIL"),
    ]
    lines = ["| measure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    lines += ["", *[f"- {e}" for e in s["events"]]]
    return "\n".join(lines)


def _fmt(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(mapping.items()))


def _poison(by_kind: dict[str, dict[str, int]]) -> str:
    acked = sum(v["acked_logged"] for v in by_kind.values())
    dead = sum(v["dead_lettered"] for v in by_kind.values())
    published = sum(v["published"] for v in by_kind.values())
    return f"{acked} / {dead} / {published}"


def parse_args(argv: list[str] | None) -> tuple[SoakConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.splitlines()[0]
    )
    defaults = SoakConfig()
    for field in dataclasses.fields(SoakConfig):
        value = getattr(defaults, field.name)
        kind = int if field.name in ("threads",) else type(value)
        parser.add_argument(
            "--" + field.name.replace("_", "-"), type=kind, default=value, help=f"default {value}"
        )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    config = SoakConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SoakConfig)})
    return config, args


def main(argv: list[str] | None = None) -> int:
    config, args = parse_args(argv)
    command = "python -m bench.soak " + " ".join(sys.argv[1:] if argv is None else argv)
    log_dir = Path(tempfile.mkdtemp(prefix="soak-logs-"))

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    with pubsub_emulator(log_dir) as emulator:
        summary = run_soak(emulator, config, log_dir, progress)
    summary["command"] = command
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = f"Command: `{command}`\n\n{table(summary)}\n"
    (args.out / "soak.md").write_text(text)
    print(text)
    print(f"logs in {log_dir}", file=sys.stderr)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
