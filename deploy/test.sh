#!/usr/bin/env bash
# The second command: runs every test. Swift tests (real PostgreSQL, real TLS sockets, the tender
# binary), then the Python tests (codegen checks and the generated client against `tender dev`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/deploy/setup.sh"

# Throwaway PostgreSQL and Redis servers of this run are stopped on exit, even after a crash.
cleanup() {
  for data in /dev/shm/tender-test-pg-*/data /tmp/tender-test-pg-*/data /tmp/tender-pytest-*/postgres/data; do
    [ -f "$data/postmaster.pid" ] || continue
    kill -TERM "$(head -n 1 "$data/postmaster.pid")" 2>/dev/null || true
  done
  for pidfile in /tmp/tender-test-redis-*/redis.pid; do
    [ -f "$pidfile" ] || continue
    kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
  done
}
trap cleanup EXIT

swift build --build-tests
status=0
swift test --skip-build || status=$?
TENDER_BIN="$root/.build/debug/tender" python3 -m pytest -q -rA -p no:cacheprovider codegen/tests clients/python/tests tests/hostile || status=$?
exit "$status"
