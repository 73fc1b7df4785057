#!/usr/bin/env bash
# The second command: runs every test. Swift tests (real PostgreSQL, real TLS sockets, the tender
# binary), then the Python tests (codegen checks, hostile input, chaos, the card-data scan, and the
# installed Python client package against `tender dev`), then the fuzzers.
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
  for scan in /tmp/tender-card-scan-*; do
    [ -d "$scan" ] || continue
    for note in "$scan"/postgres-*.cluster; do
      [ -f "$note" ] || continue
      cluster=$(cut -f2 "$note")
      [ -f "$cluster/data/postmaster.pid" ] && kill -INT "$(head -n 1 "$cluster/data/postmaster.pid")" 2>/dev/null || true
      sleep 1
      rm -rf "$cluster"
    done
    rm -rf "$scan"
  done
  for pidfile in /tmp/tender-test-redis-*/redis.pid; do
    [ -f "$pidfile" ] || continue
    kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
  done
}
trap cleanup EXIT

swift build --build-tests
status=0
# Each step that fails is named again at the very end, with its failing tests, so the last lines
# of a long run say what went wrong.
failures=()
failed() {
  status=1
  failures+=("$@")
}
# What the suites log and store is kept for the card-data scan at the end (tests/support/card_scan.py).
scan=$(mktemp -d /tmp/tender-card-scan-XXXXXX)
chmod 755 "$scan"
export TENDER_CARD_SCAN_DIR="$scan"
# The Swift tests log at info into the scan's copy; the console shows warnings and up.
{
  code=0
  TENDER_TEST_LOG_LEVEL=info swift test --skip-build 2>&1 || code=$?
  echo "$code" > "$scan/swift-test.status"
} | tee "$scan/swift-test.log" | { grep -Ev '^[0-9T:+-]+ (trace|debug|info) ' || true; }
if [ "$(cat "$scan/swift-test.status")" != 0 ]; then
  mapfile -t lines < <(grep -E '^✘ (Test|Suite) ' "$scan/swift-test.log" | head -n 40 || true)
  failed "swift test (exit $(cat "$scan/swift-test.status"))" "${lines[@]/#/  }"
fi
pytest_log=$(mktemp /tmp/tender-pytest-log-XXXXXX)
code=0
TENDER_BIN="$root/.build/debug/tender" python3 -m pytest -q -rA -p no:cacheprovider \
  codegen/tests clients/python/tests tests/cli tests/cpp tests/deploy tests/hostile tests/chaos tests/replicas tests/release tests/scan \
  2>&1 | tee "$pytest_log" || code=$?
if [ "$code" != 0 ]; then
  mapfile -t lines < <(grep -E '^(FAILED|ERROR) ' "$pytest_log" | head -n 40 || true)
  failed "pytest (exit $code)" "${lines[@]/#/  }"
fi
rm -f "$pytest_log"
# The Python package, installed into a fresh virtual environment, against a live server.
TENDER_BIN="$root/.build/debug/tender" clients/python/test-package.sh || failed "clients/python/test-package.sh"
python3 tests/support/card_scan.py scan "$scan" || failed "card-data scan"
rm -rf "$scan"
unset TENDER_CARD_SCAN_DIR
# libFuzzer over every target for a bounded time (FUZZ_SECONDS each, default 60).
"$root/deploy/fuzz.sh" || failed "deploy/fuzz.sh"
if [ "$status" = 0 ]; then
  echo "test: every step passed"
else
  echo "test: FAILED:"
  printf '  %s\n' "${failures[@]}"
fi
exit "$status"
