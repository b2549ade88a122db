#!/usr/bin/env bash
# Benchmark entry point: installs the bench requirements into .venv (once),
# then runs python -m bench.run with the given flags, e.g.
#   bench/run.sh --messages 3000 --concurrency 16 --rounds 3
# Results: bench/results/results.{md,json} and bench/results/latency.png.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh requirements-bench.txt
exec .venv/bin/python -m bench.run "$@"
