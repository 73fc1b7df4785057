#!/usr/bin/env bash
# Load test: h2load against grpc.health.v1.Health/Check over TLS on a release build of Tender
# (started with `tender dev`: local PostgreSQL, dev certificates). Prints h2load's figures and
# verifies that the RPC really succeeds (grpc-status 0), since h2load checks only HTTP status.
#   CONNECTIONS (16) STREAMS (32) DURATION (10 s) WARMUP (2 s) LOG_LEVEL (warning) THREADS (1)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/deploy/setup.sh"
connections=${CONNECTIONS:-16}
streams=${STREAMS:-32}
duration=${DURATION:-10}
warmup=${WARMUP:-2}
threads=${THREADS:-1}

swift build -c release --product tender >&2
state=$(mktemp -d /tmp/tender-bench-XXXXXX)
chmod 755 "$state"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
http_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$root/.build/release/tender" dev --state-dir "$state" --grpc-address "127.0.0.1:$port" --http-address "127.0.0.1:$http_port" --ephemeral \
  --log-level "${LOG_LEVEL:-warning}" >"$state/tender.out" 2>"$state/tender.err" &
server=$!
trap 'kill -INT $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$state"' EXIT
for _ in $(seq 1 600); do
  grep -q "Tender is serving" "$state/tender.out" 2>/dev/null && break
  kill -0 "$server" 2>/dev/null || { cat "$state/tender.err" >&2; exit 1; }
  sleep 0.1
done

# A gRPC frame: compressed flag 0, big-endian length 0, then the empty HealthCheckRequest.
printf '\x00\x00\x00\x00\x00' >"$state/check.bin"
url="https://127.0.0.1:$port/grpc.health.v1.Health/Check"
headers=(-H 'content-type: application/grpc' -H 'te: trailers')

trailers=$(nghttp -v -d "$state/check.bin" "${headers[@]}" "$url" 2>&1 | grep -ai 'grpc-status' || true)
echo "$trailers" | grep -q 'grpc-status: 0' || { echo "bench: Health/Check did not return grpc-status 0: $trailers" >&2; exit 1; }
echo "verified: $(echo "$trailers" | tr -s ' ' | head -n 1)"

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m); load generator on the same machine"
echo "h2load: $connections connections x $streams streams, ${duration}s after ${warmup}s warm-up, $threads thread(s)"
h2load -c "$connections" -m "$streams" -t "$threads" -D "$duration" --warm-up-time "$warmup" \
  --log-file="$state/requests.tsv" -d "$state/check.bin" "${headers[@]}" "$url" | sed -n '/^finished in/,$p'
# h2load's log: start time, HTTP status, time to complete (µs) per request.
python3 - "$state/requests.tsv" <<'PY'
import sys
latencies = sorted(int(line.split("\t")[2]) for line in open(sys.argv[1]) if line.strip())
def percentile(p):
    return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] / 1000
print(f"latency over {len(latencies)} requests (ms): " + ", ".join(
    f"p{p:g} {percentile(p):.2f}" for p in (50, 90, 99, 99.9)) + f", max {latencies[-1] / 1000:.2f}")
PY
