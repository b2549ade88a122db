#!/usr/bin/env bash
# Every check the project has: ruff (lint and format), then all tests (unit, system,
# the Pub/Sub emulator end to end, deploy.sh, soak) with mypy and shellcheck beside them.
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
# Write bytecode caches (__pycache__/, git-ignored) even where PYTHONDONTWRITEBYTECODE
# is set, as many container images do: otherwise each of the suite's hundreds of Python
# processes compiles the same modules again (pytest's collection: 6.8 s of CPU per
# process without the cache, 2.0 s with it).
unset PYTHONDONTWRITEBYTECODE

echo "== ruff" >&2
.venv/bin/ruff check .
.venv/bin/ruff format --check .
if [[ $quick == true ]]; then
    echo "== mypy" >&2
    .venv/bin/mypy
    echo "== pytest (quick)" >&2
    exec .venv/bin/pytest -q -n 2 -m "not slow and not emulator" \
        tests/unit tests/harness tests/workflow tests/tools "$@"
fi

# The Node producer snippet's locked dependencies, installed here as .venv is, and again
# only when the lock changes: inside the suite, each pytest-xdist process that ran a Node
# test could start its own `npm ci` in the same folder. Without npm, the Node tests say
# why (a skip, or a failure under CI=true).
node_dir=examples/producers/node
node_stamp="$node_dir/node_modules/.installed-$(sha256sum "$node_dir/package-lock.json" | cut -c1-16)"
if command -v npm >/dev/null && [[ ! -f $node_stamp ]]; then
    echo "== npm ci ($node_dir)" >&2
    if (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error); then
        touch "$node_stamp"
    else
        echo "npm ci failed: the Node tests will try again and say why" >&2
    fi
fi

# mypy (14 s of CPU from a cold cache) and shellcheck run beside pytest, at the lowest
# priority: they take the CPU the tests leave idle instead of slowing them down. Their
# output is printed, and their status counted, once both are done.
checks_log="$(mktemp)"
trap 'rm -f "$checks_log"' EXIT
mapfile -t shell_scripts < <(git ls-files -- '*.sh' '.ci/run' 'deploy.sh' | sort -u)
(
    renice -n 19 -p "$BASHPID" >/dev/null 2>&1 || true # mypy and shellcheck inherit it
    status=0
    echo "== mypy"
    .venv/bin/mypy || status=1
    echo "== shellcheck"
    if .venv/bin/shellcheck "${shell_scripts[@]}"; then echo "shellcheck: clean"; else status=1; fi
    exit "$status"
) >"$checks_log" 2>&1 &
checks_pid=$!

echo "== pytest" >&2
# Four processes on two cores: the waits of one overlap the work of the others (three
# measured no faster). They share one Pub/Sub emulator; ports are always free ones.
pytest_status=0
.venv/bin/pytest -n 4 --dist worksteal "$@" || pytest_status=$?
checks_status=0
wait "$checks_pid" || checks_status=$?
cat "$checks_log" >&2
if ((checks_status != 0)); then
    echo "mypy or shellcheck failed (above)" >&2
fi
if ((pytest_status != 0 || checks_status != 0)); then
    exit 1
fi
