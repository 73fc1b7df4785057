#!/usr/bin/env bash
# Load test: h2load against grpc.health.v1.Health/Check over TLS on a release build of Tender
# (started with `tender dev`: local PostgreSQL and Redis, dev certificates). Prints h2load's
# figures and latency percentiles after verifying that the RPC really succeeds (grpc-status 0),
# since h2load checks only the HTTP status.
#   CONNECTIONS (16) STREAMS (32) DURATION (10 s) WARMUP (2 s) LOG_LEVEL (warning) THREADS (1)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/deploy/setup.sh"
swift build -c release --product tender >&2
source "$root/deploy/bench-lib.sh"

bench_describe
bench_start health
bench_measure "grpc.health.v1.Health/Check" "https://127.0.0.1:$bench_port/grpc.health.v1.Health/Check" 0
bench_stop
