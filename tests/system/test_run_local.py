"""scripts/run-local.sh, the README's one command, run as a user would."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness.firestore_emulator import FirestoreEmulator
from harness.ports import port_is_open
from harness.processes import child_env
from harness.pubsub_emulator import PubSubEmulator
from tests.doc_blocks import blocks

REPO = Path(__file__).resolve().parents[2]
RUNNING_LOCALLY = REPO / "docs" / "running-locally.md"
HOPS = ["callback", "published", "delivered", "token", "callback", "resumed"]


def script_env(
    emulator: PubSubEmulator | None = None, firestore: FirestoreEmulator | None = None
) -> dict[str, str]:
    """The script's environment: with `emulator` (and `firestore`), it uses those instead of
    starting its own."""
    env = child_env(
        {"SKIP_VENV": "1"},
        drop=("PUBSUB_EMULATOR_HOST", "PUBSUB_PROJECT_ID", "FIRESTORE_EMULATOR_HOST"),
    )
    if emulator is not None:
        env["PUBSUB_EMULATOR_HOST"] = emulator.address
    if firestore is not None:
        env["FIRESTORE_EMULATOR_HOST"] = firestore.address
    return env


def run_local(
    *args: str,
    emulator: PubSubEmulator | None = None,
    firestore: FirestoreEmulator | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "run-local.sh"), *args],
        cwd=REPO,
        env=script_env(emulator, firestore),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def check_demo(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.split("--- every hop, in time order ---")[1]
    names = [
        line.split()[2]
        for line in summary.split("--- workflow result ---")[0].splitlines()
        if line.strip()
    ]
    hops = [n for n in names if n in HOPS]
    assert sorted(hops) == sorted(HOPS)
    assert hops[0] == "callback"
    assert hops[-1] == "resumed"
    assert '"status": "RESUMED"' in result.stdout
    assert '"outcome": "delivered"' in result.stdout
    # Every process it started is gone: the function's port is closed again.
    match = re.search(r"relay function\s+http://127\.0\.0\.1:(\d+)/", result.stdout)
    assert match is not None
    assert not port_is_open("127.0.0.1", int(match[1]))


@pytest.mark.slow
def test_run_local_without_the_emulator_delivers_directly() -> None:
    result = run_local("--no-emulator", "--payload", '{"from": "test"}')

    check_demo(result)
    assert "Pub/Sub emulator       not available (--no-emulator)" in result.stdout
    assert '"from": "test"' in result.stdout


@pytest.mark.slow
@pytest.mark.emulator
def test_run_local_with_the_emulator(emulator: PubSubEmulator) -> None:
    # The fixture applies the emulator policy (skip here, fail under CI=true);
    # run-local.sh starts an emulator of its own, as on a fresh machine, and stops it.
    result = run_local()

    check_demo(result)
    assert "Pub/Sub push for message" in result.stdout
    started = re.search(r"Pub/Sub emulator\s+(127\.0\.0\.1:(\d+))\n", result.stdout)
    assert started is not None, result.stdout
    assert started[1] != emulator.address
    assert not port_is_open("127.0.0.1", int(started[2]))
    assert processes_mentioning(started[1]) == []


@pytest.mark.slow
def test_run_local_exits_1_with_the_callback_error_when_the_step_fails() -> None:
    # The relay sends the payload as the callback body: {"error": ...} fails the step.
    result = run_local("--no-emulator", "--payload", '{"error": {"code": "X", "message": "m"}}')

    assert result.returncode == 1, result.stdout + result.stderr
    assert "workflow failed: CallbackError X: m" in result.stderr
    assert '"outcome": "delivered"' in result.stdout


_USER_MAIN = """
main:
  params: [args]
  steps:
    - wait:
        call: await_via_pubsub
        args:
          topic: ${args.topic}
          payload: ${args.payload}
          timeout: ${args.timeout}
        result: resumed
    - done:
        return:
          status: "RESUMED"
          my_order: ${resumed.body.order}
"""


@pytest.mark.slow
def test_run_local_runs_a_users_copy_of_the_subworkflow(tmp_path: Path) -> None:
    # A user's workflow: their own main, and await_via_pubsub copied unchanged.
    workflow = yaml.safe_load((REPO / "workflow.yaml").read_text(encoding="utf-8"))
    mine = yaml.safe_load(_USER_MAIN)
    mine["await_via_pubsub"] = workflow["await_via_pubsub"]
    path = tmp_path / "my-workflow.yaml"
    path.write_text(yaml.safe_dump(mine, sort_keys=False), encoding="utf-8")

    result = run_local("--no-emulator", "--workflow", str(path), "--payload", '{"order": 9}')

    assert result.returncode == 0, result.stdout + result.stderr
    assert '"my_order": 9' in result.stdout


# -- --stay: delivery keeps running and the printed sequence works -------------------


# Ctrl-C reaches a terminal's foreground job. A test run started in the background (by
# `cmd &` in a script, or nohup) ignores SIGINT, and bash cannot trap a signal that was
# ignored when it started: give the script SIGINT back, as a terminal would.
FOREGROUND = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


class StayingScript:
    """run-local.sh --stay in its own process group, its output collected as it comes."""

    def __init__(self, *args: str, emulator: PubSubEmulator | None = None) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                FOREGROUND,
                "bash",
                str(REPO / "scripts" / "run-local.sh"),
                "--stay",
                *args,
            ],
            cwd=REPO,
            env=script_env(emulator),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # the test's Ctrl-C goes to this group only
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if line.startswith(prefix):
                    return line
            if self.process.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.1)
        raise AssertionError(f"no line starting with {prefix!r}:\n{self.output}")

    def printed_sequence(self) -> str:
        """The indented commands printed after "== still running", as one script."""
        start = next(i for i, line in enumerate(self.lines) if line.startswith("== still running"))
        commands: list[str] = []
        for line in self.lines[start + 1 :]:
            if not line.startswith("    "):
                break
            commands.append(line[4:])
        return "\n".join(commands)

    def interrupt(self, timeout: float = 30.0) -> int:
        """Ctrl-C, as a terminal sends it: SIGINT to the foreground process group."""
        os.killpg(self.process.pid, signal.SIGINT)
        returncode = self.process.wait(timeout)
        self.reader.join(timeout=5)
        return returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(30)


@contextlib.contextmanager
def staying(*args: str, emulator: PubSubEmulator | None = None) -> Iterator[StayingScript]:
    script = StayingScript(*args, emulator=emulator)
    try:
        yield script
    finally:
        if script.process.poll() is None:
            script.kill()


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if text in cmdline:
                found.append(cmdline)
    return found


def check_stay(script: StayingScript) -> str:
    """Run the printed sequence, check the callback it resumed; return its output."""
    script.wait_for_line("The function's log: ", timeout=180)
    sequence = script.printed_sequence()
    assert sequence.count("\n") >= 3, script.output
    ran = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", sequence],
        cwd=REPO,
        env=child_env(drop=("PUBSUB_EMULATOR_HOST",)),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert ran.returncode == 0, sequence + "\n" + ran.stdout + ran.stderr
    # The last command prints the callback request that resumed the execution.
    request = json.loads(ran.stdout.strip().splitlines()[-1])
    assert request["http_request"]["body"] == {"hello": "again"}
    assert request["http_request"]["method"] == "POST"
    return ran.stdout


def check_everything_stopped(script: StayingScript) -> None:
    output = script.output
    assert "stopped; logs in" in output
    function_port = re.search(r"relay function\s+http://127\.0\.0\.1:(\d+)/", output)
    workflows = re.search(r"fake Workflows API\s+127\.0\.0\.1:(\d+)", output)
    metadata = re.search(r"fake metadata server\s+127\.0\.0\.1:(\d+)", output)
    assert function_port is not None, output
    assert workflows is not None, output
    assert metadata is not None, output
    for match in (function_port, workflows, metadata):
        assert not port_is_open("127.0.0.1", int(match[1])), match[0]
    # The function (and the forwarder, which targets it) by their command lines.
    assert processes_mentioning(f"127.0.0.1:{function_port[1]}/") == []
    assert processes_mentioning(f"--port {function_port[1]}") == []
    emulator = re.search(r"Pub/Sub emulator\s+(127\.0\.0\.1:(\d+))(.*)", output)
    if emulator is not None and "already running" in emulator[3]:
        # Not the script's to stop: the emulator it was given still answers.
        assert port_is_open("127.0.0.1", int(emulator[2]))
    elif emulator is not None:
        assert processes_mentioning(emulator[1]) == []


@pytest.mark.slow
@pytest.mark.emulator
def test_run_local_stay_keeps_delivering_and_its_printed_sequence_resumes_a_callback(
    emulator: PubSubEmulator, tmp_path: Path
) -> None:
    # The emulator already runs (PUBSUB_EMULATOR_HOST): the script uses it, names its
    # topics for this run, and leaves the emulator running when it stops.
    with staying(emulator=emulator) as script:
        printed = check_stay(script)
        # The message tools.publish sent went through the forwarder the script left running.
        published = json.loads(printed.splitlines()[0])
        log_path = Path(script.wait_for_line("The function's log: ", 1).split(": ", 1)[1])
        outcomes = [
            json.loads(line).get("outcome")
            for line in log_path.read_text(encoding="utf-8").splitlines()
            if line.startswith("{")
            and json.loads(line).get("message_id") == published["message_id"]
        ]
        assert outcomes == ["delivered"]
        check_the_docs_stay_sequence(script)
        check_the_docs_python_recipe(script, tmp_path)
        assert script.interrupt() == 130
    check_everything_stopped(script)


def check_the_docs_stay_sequence(script: StayingScript) -> None:
    """running-locally.md shows the sequence the script prints, its ports as PORT."""
    printed = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", script.printed_sequence())
    printed = re.sub(r"(workflows-callback-relay)-\d+-\d+", r"\1", printed)
    (shown,) = [
        block.text
        for block in blocks(RUNNING_LOCALLY)
        if block.language == "sh" and "_fake/executions" in block.text and "PORT" in block.text
    ]
    assert shown == printed + "\n"


def check_the_docs_python_recipe(script: StayingScript, tmp_path: Path) -> None:
    """The doc's Python recipe resumes an execution of a copy of workflow.yaml on the stack."""
    text = RUNNING_LOCALLY.read_text(encoding="utf-8")
    recipe = text.split("From Python, for a test of your own", 1)[1]
    code = recipe.split("```python\n", 1)[1].split("```", 1)[0]
    emulator = re.search(r"Pub/Sub emulator\s+(127\.0\.0\.1:\d+)", script.output)
    workflows = re.search(r"fake Workflows API\s+(127\.0\.0\.1:\d+)", script.output)
    topic = re.search(r"--topic (\S+)", script.printed_sequence())
    assert emulator is not None
    assert workflows is not None
    assert topic is not None
    code = code.replace('"127.0.0.1:PORT") as publish', f'"{emulator[1]}") as publish')
    code = code.replace('HttpCallbacks("127.0.0.1:PORT")', f'HttpCallbacks("{workflows[1]}")')
    code = code.replace('"topic": "workflows-callback-relay"', f'"topic": "{topic[1]}"')
    assert "PORT" not in code
    (tmp_path / "my-workflow.yaml").write_text((REPO / "workflow.yaml").read_text())
    ran = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=child_env({"PYTHONPATH": str(REPO)}, drop=("PUBSUB_EMULATOR_HOST",)),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "'status': 'RESUMED'" in ran.stdout, ran.stdout
    assert "'body': {'order': 9}" in ran.stdout, ran.stdout


@pytest.mark.slow
def test_run_local_stay_without_the_emulator_prints_a_direct_push_sequence() -> None:
    with staying("--no-emulator") as script:
        assert "function answered 200" in check_stay(script)
        # The push request, at the topic's path, as deploy.sh's push subscription sends it.
        printed = script.printed_sequence()
        assert "/projects/local-project/topics/workflows-callback-relay -H" in printed
        assert "ce-type" not in printed
        assert script.interrupt() == 130
    check_everything_stopped(script)


@pytest.mark.slow
@pytest.mark.emulator
def test_run_local_example_events(emulator: PubSubEmulator, firestore: FirestoreEmulator) -> None:
    # Keyed waits, as printed: the notification, the event before its wait, and one
    # event for three executions (harness/events_example.py; docs/events.md).
    result = run_local("--example", "events", emulator=emulator, firestore=firestore)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    hops = result.stdout.split("--- every hop, in time order ---")[1].split("--- the relay")[0]
    assert "Cloud Storage notification OBJECT_FINALIZE" in hops
    resumed = [line for line in hops.splitlines() if " resumed " in line]
    assert len(resumed) == 5
    assert sum('"key": "order:42"' in line for line in resumed) == 3
    assert any('"key": "gs://incoming/report.csv"' in line for line in resumed)
    assert any('"key": "invoice:7"' in line for line in resumed)
    outcomes = result.stdout.split("--- the relay's outcomes ---")[1]
    assert "resumed 3 of 3 claimed" in outcomes
    # The invoice's event came first and was kept; its wait was resumed at once.
    assert "event_received   invoice:7  event 1 on relay/invoice:7: resumed 0 of 0" in outcomes
    assert '"paid": true' in result.stdout
