#!/usr/bin/env bash
# Every check the project has: lint, format, types, shell scripts, then all
# tests (unit, system, the Pub/Sub emulator end to end, deploy.sh, soak).
# Extra arguments go to pytest, e.g. scripts/test.sh -k policy
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/venv.sh requirements-test.txt

echo "== ruff" >&2
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy" >&2
.venv/bin/mypy
echo "== shellcheck" >&2
mapfile -t shell_scripts < <(git ls-files -- '*.sh' '.ci/run' 'deploy.sh' | sort -u)
.venv/bin/shellcheck "${shell_scripts[@]}"
echo "== pytest" >&2
.venv/bin/pytest "$@"
