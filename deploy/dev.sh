#!/usr/bin/env bash
# The first command: sets up a fresh machine, builds Tender and runs it in dev mode (throwaway
# PostgreSQL, dev TLS certificates, migrations). Extra arguments go to `tender dev`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/deploy/setup.sh"
swift build --product tender
exec "$root/.build/debug/tender" dev "$@"
