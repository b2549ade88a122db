#!/usr/bin/env bash
# Every check the project has: lint, format, types, shell scripts, then all
# tests (unit, system, the Pub/Sub emulator end to end, deploy.sh, soak).
#   scripts/test.sh            everything (what CI runs)
#   scripts/test.sh --quick    the inner loop: ruff, mypy and the tests that need
#                              no emulator and are not marked slow (under 30 s)
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
    echo "== pytest (quick: not slow, no emulator)" >&2
    exec .venv/bin/pytest -q -m "not slow and not emulator" "$@"
fi
echo "== shellcheck" >&2
mapfile -t shell_scripts < <(git ls-files -- '*.sh' '.ci/run' 'deploy.sh' | sort -u)
.venv/bin/shellcheck "${shell_scripts[@]}"
echo "== pytest" >&2
.venv/bin/pytest "$@"
