#!/usr/bin/env bash
# The micro-benchmarks (bench/micro, ordo-one/benchmark): each hot path of a payment call alone,
# in wall-clock time, CPU time and allocations per operation — request decode and encode, the
# idempotency fingerprint, the payment state machine, webhook signatures, JWT verification (cold
# and cached), the token standing and rate-limit round trips to a real Redis, and whole
# CreatePayment and GetPayment calls over the in-process transport. Builds release in
# bench/micro/.build (a package of its own: Tender's own builds never build it).
#   deploy/bench-micro.sh                       every benchmark, as a table
#   deploy/bench-micro.sh --filter 'JWT.*'      some of them
#   deploy/bench-micro.sh --format markdown     (any option of `swift package benchmark run`)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
command -v redis-server >/dev/null || "$root/deploy/setup.sh"
cd "$root/bench/micro"
exec swift package --allow-writing-to-package-directory benchmark run --no-progress "$@"
