"""schemas/callback-message.schema.json in Node: ajv 2020 with ajv-formats (the doc's
validate_message.mjs) agrees with the Python validator and with the relay's parser, on
the boundary dates, the callback_url length limit, and a seeded sample of date edges.
Also: the TypeScript variant type-checks with the pinned typescript, and publishes the
same bytes as the other snippets."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from typing import Any

import jsonschema
import pytest

from callback_relay.errors import MessageRejected
from callback_relay.message import parse_message_data
from harness.pubsub_emulator import PubSubEmulator
from tests.producers.golden import EXPECTED_RESULT_DATA, REPO, RESULT_JSON, job_json
from tests.producers.relay_topic import RelayTopic
from tests.producers.test_node_snippet import NODE_DIR, node  # noqa: F401 - the fixture

SCHEMA_PATH = REPO / "schemas" / "callback-message.schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text())
PYTHON = jsonschema.Draft202012Validator(
    SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)
URL = (
    "https://workflowexecutions.googleapis.com/v1/projects/p/locations/us-central1"
    "/workflows/w/executions/e/callbacks/c"
)
BOUNDARY_DATES = [
    "0000-01-01T00:00:00Z",  # no year 0 in RFC 3339's 4-digit years (the relay refuses it)
    "0000-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-01:00",  # after 9999 in UTC
    "2024-02-29T00:00:00Z",  # leap year
    "2023-02-29T00:00:00Z",
    "1900-02-29T00:00:00Z",  # not a leap year
    "2000-02-29T00:00:00Z",  # leap year
    "2030-04-31T00:00:00Z",
    "2030-12-31T23:59:60Z",  # a leap second: the relay has none
    "2030-06-30T23:59:60+00:00",
    "2030-01-01T24:00:00Z",
    "2030-01-01t00:00:00z",
    "2030-01-01 00:00:00Z",
    "2030-01-01T00:00:00",
    "2030-01-01T00:00:00.123456789Z",
    "2030-01-01T00:00:00.1234567891Z",
    "2030-01-01T00:00:00+23:59",
    "2030-01-01T00:00:00+24:00",
    "2030-01-01T00:00:00Z\n",
    "2030-1-01T00:00:00Z",
    "+2030-01-01T00:00:00Z",
    "20300-01-01T00:00:00Z",
]


def date_edges(count: int, seed: int = 7) -> list[str]:
    """RFC 3339 near-misses: each field at and past its range (as test_message.py's edges)."""
    rng = random.Random(seed)

    def two(low: int, high: int) -> str:
        return f"{rng.randint(low, high):02d}"

    edges = []
    for _ in range(count):
        year = rng.choice([0, 1, 4, 100, 400, 1900, 2000, 2024, 9999, rng.randint(0, 9999)])
        zone = rng.choice(["Z", "z", "+00:00", "-23:59", "+24:00", "+05:60", ""])
        frac = rng.choice(["", ".5", ".123456", ".123456789", ".1234567890"])
        date = f"{year:04d}-{two(0, 13)}-{two(0, 32)}"
        edges.append(f"{date}T{two(0, 24)}:{two(0, 60)}:{two(0, 61)}{frac}{zone}")
    return edges


def cases() -> list[Any]:
    messages: list[Any] = [{"callback_url": URL, "expires_at": d} for d in BOUNDARY_DATES]
    messages += [{"callback_url": URL, "expires_at": d} for d in date_edges(300)]
    messages += [
        {"callback_url": "x" * 2048},
        {"callback_url": "x" * 2049},
        {"callback_url": "x" * 2047 + "\U0001f600"},  # 2048 code points, 2049 UTF-16 units
        {"callback_url": "x" * 2048 + "\U0001f600"},
        {"callback_url": ""},
        {"callback_url": URL, "method": "post"},
        {"callback_url": URL, "method": "GET", "payload": {"a": 1}},
        {"callback_url": URL, "method": "GET", "payload": {}},
        {"callback_url": URL, "payloa": 1},
        {"callback_url": URL, "metadata": []},
        {"callback_url": URL, "metadata": {"job": 1}},
        {"callbackUrl": URL},
        [URL],
    ]
    return messages


def parser_accepts(message: Any) -> bool:
    try:
        parse_message_data(json.dumps(message).encode(), 10_000_000)
    except MessageRejected:
        return False
    return True


@pytest.mark.slow
def test_ajv_python_and_the_relay_agree(node: str) -> None:  # noqa: F811 - the fixture
    messages = cases()
    ran = subprocess.run(
        [node, "validate_message.mjs", str(SCHEMA_PATH)],
        cwd=NODE_DIR,
        input="\n".join(json.dumps(m) for m in messages) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    ajv = [line.startswith("valid") for line in ran.stdout.splitlines()]
    assert len(ajv) == len(messages)
    disagreements = [
        (m, a, PYTHON.is_valid(m), parser_accepts(m))
        for m, a in zip(messages, ajv, strict=True)
        if not a == PYTHON.is_valid(m) == parser_accepts(m)
    ]
    assert disagreements == []
    # Not vacuous: both kinds are there, and year 0000 is among the refused.
    assert 10 < sum(ajv) < len(ajv) - 10
    assert not ajv[0]


@pytest.mark.slow
def test_without_the_pattern_ajv_formats_would_accept_year_0000(node: str) -> None:  # noqa: F811
    # Why the schema refuses 0000 in its pattern: ajv-formats' date-time alone takes it.
    loose = json.loads(json.dumps(SCHEMA))
    del loose["properties"]["expires_at"]["pattern"]
    schema = NODE_DIR / "node_modules" / ".loose-schema-for-test.json"
    schema.write_text(json.dumps(loose))
    ran = subprocess.run(
        [node, "validate_message.mjs", str(schema)],
        cwd=NODE_DIR,
        input=json.dumps({"callback_url": URL, "expires_at": "0000-01-01T00:00:00Z"}) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.stdout.strip() == "valid", ran.stderr
    assert not PYTHON.is_valid({"callback_url": URL, "expires_at": "0000-01-01T00:00:00Z"})


@pytest.mark.slow
@pytest.mark.emulator
def test_the_typescript_variant_type_checks_and_publishes_the_same_bytes(
    node: str,  # noqa: F811 - the fixture
    emulator: PubSubEmulator,
) -> None:
    tsc = NODE_DIR / "node_modules" / "typescript" / "bin" / "tsc"
    pinned = json.loads((NODE_DIR / "package.json").read_text())["devDependencies"]
    installed = json.loads((NODE_DIR / "node_modules" / "typescript" / "package.json").read_text())
    assert installed["version"] == pinned["typescript"]
    # The check is real: compiled beside it (one tsc run, about 2 s of CPU), the same file
    # with a field of the wrong type fails, and only that copy does. Both sit where their
    # imports resolve: the copy inside node_modules, which git ignores.
    broken = (
        (NODE_DIR / "publish_result.mts")
        .read_text()
        .replace("    expires_at: job.expires_at,\n  };", "    expires_at: 7,\n  };")
    )
    assert "expires_at: 7" in broken
    (NODE_DIR / "node_modules" / ".typecheck-broken.mts").write_text(broken)
    config = {
        "extends": "../tsconfig.json",
        "compilerOptions": {"rootDir": "..", "outDir": f".tsc-out-{os.getpid()}"},
        "files": ["../publish_result.mts", ".typecheck-broken.mts"],
    }
    config_path = NODE_DIR / "node_modules" / f".tsconfig-{os.getpid()}.json"
    config_path.write_text(json.dumps(config))
    out = NODE_DIR / "node_modules" / f".tsc-out-{os.getpid()}"
    ran = subprocess.run(
        [node, str(tsc), "-p", str(config_path.relative_to(NODE_DIR))],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    errors = [line for line in ran.stdout.splitlines() if ": error TS" in line]
    assert ran.returncode != 0
    assert errors, ran.stdout + ran.stderr
    assert all(line.startswith("node_modules/.typecheck-broken.mts(") for line in errors), errors
    assert any("TS2322" in line for line in errors), errors
    relay = RelayTopic.create(emulator, "ts")
    result = relay.run([node, str(out / "publish_result.mjs"), RESULT_JSON], stdin=job_json())
    assert result.returncode == 0, result.stderr
    assert relay.received_data() == EXPECTED_RESULT_DATA
    shutil.rmtree(out)
    config_path.unlink()
