#!/usr/bin/env bash
# Webhooks under load: a release `tender dev` (its Stripe endpoint secret whsec_tender_dev) and
# tender-load POSTing unique Stripe-signed events, CONCURRENCY senders back to back for DURATION
# seconds after WARMUP; each 200 means verified and stored (committed). Then, from the inbox, how
# long stored events waited until they were applied (receive → apply, percentiles in SQL).
#   CONCURRENCY (32) DURATION (30 s) WARMUP (3 s)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/deploy/setup.sh"
swift build -c release --product tender >&2
swift build -c release --product tender-load >&2
source "$root/deploy/bench-lib.sh"
concurrency=${CONCURRENCY:-32}
duration=${DURATION:-30}
warmup=${WARMUP:-3}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load driver, Tender and PostgreSQL on the same machine"
bench_start webhooks
database=$(sed -n 's/^ *Database: *//p' "$bench_state/tender.out" | head -n 1)
bridge=$(sed -n 's|.*curl --cacert [^ ]* https://localhost:\([0-9]*\)/readyz.*|\1|p' "$bench_state/tender.out" | head -n 1)
[ -n "$database" ] && [ -n "$bridge" ] || { echo "bench: tender dev printed no database URL or bridge port" >&2; exit 1; }

"$root/.build/release/tender-load" --ca "$bench_state/tls/ca.pem" --credentials "$bench_state/dev-client.json" \
  --webhooks "https://127.0.0.1:$bridge/webhooks/stripe" --concurrency "$concurrency" --duration "$duration" --warmup "$warmup"
sleep 2
psql "$database" -At -F ' ' -c "SELECT count(*), count(*) FILTER (WHERE state = 'done'),
    round((1000 * percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM apply_time - receive_time)))::numeric, 2),
    round((1000 * percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM apply_time - receive_time)))::numeric, 2)
  FROM webhook_inbox" | awk '{print "inbox: " $1 " events stored, " $2 " applied; stored → applied p50 " $3 " ms / p99 " $4 " ms"}'
bench_stop
