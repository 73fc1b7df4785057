#!/usr/bin/env bash
# The benchmark, in one sitting: builds release, then runs bench/bench.py, which starts PostgreSQL
# (durable), Redis, the provider simulator and `tender serve` as separate processes and measures
# Tender's memory idle and with 1,000 and 10,000 idle TLS connections, Health/Check (h2load,
# beside gRPC C++'s own server), CreatePayment, CreateRefund, GetPayment and ListPayments
# (tender-load), pgbench's TPC-B at the same client count, and GetPayment and ListPayments with
# 10,000 and with 10,000,000 payments stored (loaded with COPY), with the CPU time of every process
# and PostgreSQL's commits, rows and WAL per operation. Prints a Markdown table and writes it, with
# the JSON figures, to .build-bench/. BENCHMARKS.md says how to read it.
#   CLIENTS (64) DURATION (20 s) WARMUP (3 s) CONNECTIONS (16 h2load connections) STREAMS (32)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/deploy/setup.sh"
for product in tender tender-provider-sim tender-load; do
  swift build -c release --product "$product" >&2
done
mkdir -p .build-bench
reference=.build-bench/health_server
if [ ! -x "$reference" ] || [ bench/reference/health_server.cc -nt "$reference" ]; then
  # shellcheck disable=SC2046
  g++ -O2 -std=c++17 -o "$reference" bench/reference/health_server.cc $(pkg-config --cflags --libs grpc++)
fi
exec python3 bench/bench.py --bin "$root/.build/release" --reference "$reference" \
  --clients "${CLIENTS:-64}" --duration "${DURATION:-20}" --warmup "${WARMUP:-3}" \
  --connections "${CONNECTIONS:-16}" --streams "${STREAMS:-32}" \
  --json .build-bench/latest.json --markdown .build-bench/latest.md "$@"
