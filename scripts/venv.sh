#!/usr/bin/env bash
# Creates .venv (once) and installs a requirements file into it, again only
# when that file or a file it includes changed. Usage: scripts/venv.sh FILE...
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
    echo "Creating .venv with $("$python" --version)" >&2
    "$python" -m venv .venv
fi

stamp=".venv/.installed-$(cat "$@" function/requirements.txt requirements.txt | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
    echo "Installing $* into .venv" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    for file in "$@"; do
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$file"
    done
    touch "$stamp"
fi
