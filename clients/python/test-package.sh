#!/usr/bin/env bash
# Installs clients/python into a fresh virtual environment (as a user would: pip install
# ./clients/python) and runs clients/python/package_tests with it against a live `tender dev`.
# Needs the tender binary (TENDER_BIN, default .build/debug/tender).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/.build-venv/tender-client"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "$root/clients/python" "pytest==9.0.3"
"$venv/bin/pip" check
cd "$root/clients/python/package_tests"
TENDER_BIN="${TENDER_BIN:-$root/.build/debug/tender}" "$venv/bin/python" -m pytest -q -rA -p no:cacheprovider .
