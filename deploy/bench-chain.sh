#!/usr/bin/env bash
# What the interceptor chain costs: one h2load command, one run, three servers measured in turn
# on a release build of Tender (each started with `tender dev`: local PostgreSQL and Redis):
#   1. Health/Check, no interceptors at all (dev's hidden --without-interceptors)
#   2. Health/Check through the chain (tracing, metrics, logging; auth and limits pass public RPCs)
#   3. PaymentService/GetPayment with a bearer token through the whole chain: JWT verification,
#      the token's standing (Redis), the per-client bucket (Redis), then the handler, which answers
#      UNIMPLEMENTED at once (the cheapest authenticated RPC there is).
#   CONNECTIONS (16) STREAMS (32) DURATION (10 s) WARMUP (2 s) THREADS (1)
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
work=$(mktemp -d /tmp/tender-bench-chain-XXXXXX)
chmod 755 "$work"
server=""
cleanup() {
  if [ -n "$server" ]; then kill -INT "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start() { # state-dir, extra dev flags...
  local state=$1; shift
  mkdir -p "$state"; chmod 755 "$state"
  port=$(free_port)
  "$root/.build/release/tender" dev --state-dir "$state" --grpc-address "127.0.0.1:$port" --http-address "127.0.0.1:$(free_port)" \
    --ephemeral --log-level warning --rate-limit '1000000/s,burst=1000000' "$@" >"$state/tender.out" 2>"$state/tender.err" &
  server=$!
  for _ in $(seq 1 600); do
    grep -q "Tender is serving" "$state/tender.out" 2>/dev/null && return 0
    kill -0 "$server" 2>/dev/null || { cat "$state/tender.err" >&2; exit 1; }
    sleep 0.1
  done
  echo "bench: tender dev did not start" >&2; exit 1
}
stop() {
  kill -INT "$server"; wait "$server" || true; server=""
}

# An empty request message in a gRPC frame (flag 0, length 0): valid for both RPCs.
printf '\x00\x00\x00\x00\x00' >"$work/empty.bin"
grpc_headers=(-H 'content-type: application/grpc' -H 'te: trailers')

measure() { # label, url, expected grpc-status, extra headers...
  local label=$1 url=$2 expected=$3; shift 3
  local trailers
  trailers=$(nghttp -v -d "$work/empty.bin" "${grpc_headers[@]}" "$@" "$url" 2>&1 | grep -ai 'grpc-status' || true)
  echo "$trailers" | grep -q "grpc-status: $expected" || { echo "bench: $label did not end with grpc-status $expected: $trailers" >&2; exit 1; }
  echo "== $label (verified grpc-status $expected)"
  rm -f "$work/requests.tsv"
  h2load -c "$connections" -m "$streams" -t "$threads" -D "$duration" --warm-up-time "$warmup" \
    --log-file="$work/requests.tsv" -d "$work/empty.bin" "${grpc_headers[@]}" "$@" "$url" | grep -E '^(finished in|requests:|status codes:)'
  python3 - "$work/requests.tsv" <<'PY'
import sys
latencies = sorted(int(line.split("\t")[2]) for line in open(sys.argv[1]) if line.strip())
def percentile(p):
    return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] / 1000
print(f"latency over {len(latencies)} requests (ms): " + ", ".join(
    f"p{p:g} {percentile(p):.2f}" for p in (50, 90, 99, 99.9)) + f", max {latencies[-1] / 1000:.2f}")
PY
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m); load generator, PostgreSQL and Redis on the same machine"
echo "h2load: $connections connections x $streams streams, ${duration}s after ${warmup}s warm-up, $threads thread(s)"

start "$work/bare" --without-interceptors
measure "Health/Check, no interceptors" "https://127.0.0.1:$port/grpc.health.v1.Health/Check" 0
stop

start "$work/chain"
measure "Health/Check, full chain" "https://127.0.0.1:$port/grpc.health.v1.Health/Check" 0
token=$(cd "$root/clients/python" && python3 - "$work/chain" "$port" <<'PY'
import json, sys, grpc
from tender_client._generated.tender.auth.v1 import auth_service_pb2 as auth, auth_service_pb2_grpc as auth_grpc
state, port = sys.argv[1], sys.argv[2]
client = json.load(open(f"{state}/dev-client.json"))
credentials = grpc.ssl_channel_credentials(root_certificates=open(f"{state}/tls/ca.pem", "rb").read())
with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
    print(auth_grpc.AuthServiceStub(channel).IssueToken(auth.IssueTokenRequest(
        client_id=client["clientID"], client_secret=client["clientSecret"], scopes=["payments:read"])).access_token)
PY
)
# 12 = UNIMPLEMENTED: the call passed authentication, the scope check and the rate limit.
measure "PaymentService/GetPayment with a bearer token, full chain" "https://127.0.0.1:$port/tender.payments.v1.PaymentService/GetPayment" 12 \
  -H "authorization: Bearer $token"
stop
