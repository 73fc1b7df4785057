#!/usr/bin/env bash
# Payments under load, beside PostgreSQL's own TPC-B on the same server, in one run:
#   1. a release `tender dev` (local PostgreSQL with synchronous_commit on, Redis, the provider
#      simulator in process; the per-client rate limit raised out of the way, the limiter still
#      runs on every call)
#   2. tender-load (the generated Swift client, HdrHistogram latencies): CreatePayment with a unique
#      idempotency key per call, then GetPayment and ListPayments, CONCURRENCY callers each
#   3. pgbench's built-in TPC-B script on a database in the same PostgreSQL cluster, same client
#      count, scale = client count (pgbench's advice), then the ratio CreatePayment / TPC-B.
#   CONCURRENCY (64) DURATION (30 s) WARMUP (3 s) CONNECTIONS (4 HTTP/2 connections)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/deploy/setup.sh"
swift build -c release --product tender >&2
swift build -c release --product tender-load >&2
source "$root/deploy/bench-lib.sh"
concurrency=${CONCURRENCY:-64}
duration=${DURATION:-30}
warmup=${WARMUP:-3}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load driver, Tender, PostgreSQL and Redis on the same machine"
bench_start payments --rate-limit '1000000/s,burst=1000000'
database=$(sed -n 's/^ *Database: *//p' "$bench_state/tender.out" | head -n 1)
[ -n "$database" ] || { echo "bench: tender dev printed no database URL" >&2; exit 1; }
echo "PostgreSQL $(psql "$database" -Atc 'SHOW server_version'): synchronous_commit=$(psql "$database" -Atc 'SHOW synchronous_commit'), fsync=$(psql "$database" -Atc 'SHOW fsync'), max_connections=$(psql "$database" -Atc 'SHOW max_connections')"

"$root/.build/release/tender-load" --address "127.0.0.1:$bench_port" --ca "$bench_state/tls/ca.pem" \
  --credentials "$bench_state/dev-client.json" --concurrency "$concurrency" --connections "${CONNECTIONS:-4}" \
  --duration "$duration" --warmup "$warmup" | tee "$bench_work/load.txt"
echo "rows written: $(psql "$database" -Atc 'SELECT count(*) FROM payments') payments, $(psql "$database" -Atc 'SELECT count(*) FROM payment_events') events, $(psql "$database" -Atc 'SELECT count(*) FROM idempotency_keys') idempotency records"

# TPC-B in a database of its own on the same cluster, while Tender is idle.
pgbench_db=${database%/*}/pgbench_tpcb
psql "$database" -qc 'DROP DATABASE IF EXISTS pgbench_tpcb' -c 'CREATE DATABASE pgbench_tpcb'
pgbench -i -q -s "$concurrency" "$pgbench_db" >"$bench_work/pgbench-init.txt" 2>&1
echo "== pgbench TPC-B: pgbench -c $concurrency -j 2 -T $duration (scale $concurrency, synchronous_commit=$(psql "$pgbench_db" -Atc 'SHOW synchronous_commit'))"
pgbench -c "$concurrency" -j 2 -T "$duration" "$pgbench_db" 2>&1 | tee "$bench_work/pgbench.txt" | grep -E '^(number of transactions actually processed|number of failed|latency average|tps)'
bench_stop

create=$(sed -n 's/^== CreatePayment: .* = \([0-9.]*\) req\/s.*/\1/p' "$bench_work/load.txt")
tpcb=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$bench_work/pgbench.txt")
python3 -c "import sys; c, t = float(sys.argv[1]), float(sys.argv[2]); print(f'CreatePayment {c:.2f} req/s / pgbench TPC-B {t:.2f} tps = {c / t:.3f}')" "$create" "$tpcb"
