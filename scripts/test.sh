#!/usr/bin/env bash
# Every check the project has: lint, format, types, shell scripts, then all
# tests (unit, system, the Pub/Sub emulator end to end, deploy.sh, soak).
#   scripts/test.sh            everything (what CI runs)
#   scripts/test.sh --quick    the inner loop (under 30 s): ruff, mypy, and the unit,
#                              harness, workflow and tools tests that need no emulator
#                              and are not marked slow
# Other arguments go to pytest, e.g. scripts/test.sh -k policy
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false
if [[ ${1:-} == --quick ]]; then
    quick=true
    shift
fi

scripts/venv.sh requirements-test.txt

echo "== ruff" >&2
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy" >&2
.venv/bin/mypy
if [[ $quick == true ]]; then
    echo "== pytest (quick)" >&2
    exec .venv/bin/pytest -q -n 2 -m "not slow and not emulator" \
        tests/unit tests/harness tests/workflow tests/tools "$@"
fi
echo "== shellcheck" >&2
mapfile -t shell_scripts < <(git ls-files -- '*.sh' '.ci/run' 'deploy.sh' | sort -u)
.venv/bin/shellcheck "${shell_scripts[@]}"
echo "== pytest" >&2
# Four processes on two cores: most of the suite waits on subprocesses, sockets and
# Pub/Sub deadlines. Each process starts its own emulator; ports are always free ones.
.venv/bin/pytest -n 4 --dist worksteal "$@"
