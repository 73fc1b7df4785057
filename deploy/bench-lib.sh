# Shared by the benchmark scripts: start a release `tender dev` on free ports, measure one gRPC
# method with h2load after checking its grpc-status, stop the server. Source it; set $root first.
bench_connections=${CONNECTIONS:-16}
bench_streams=${STREAMS:-32}
bench_duration=${DURATION:-10}
bench_warmup=${WARMUP:-2}
bench_threads=${THREADS:-1}

bench_work=$(mktemp -d /tmp/tender-bench-XXXXXX)
chmod 755 "$bench_work"
bench_server=""
bench_cleanup() {
  if [ -n "$bench_server" ]; then kill -INT "$bench_server" 2>/dev/null || true; wait "$bench_server" 2>/dev/null || true; fi
  rm -rf "$bench_work"
}
trap bench_cleanup EXIT

bench_free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# An empty request message in a gRPC frame (flag 0, length 0): valid for any unary RPC.
printf '\x00\x00\x00\x00\x00' >"$bench_work/empty.bin"
bench_grpc_headers=(-H 'content-type: application/grpc' -H 'te: trailers')

bench_describe() {
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m); load generator, PostgreSQL and Redis on the same machine"
  echo "h2load: $bench_connections connections x $bench_streams streams, ${bench_duration}s after ${bench_warmup}s warm-up, $bench_threads thread(s)"
}

# bench_start NAME [tender dev flags...]: sets $bench_port and $bench_state.
bench_start() {
  bench_state="$bench_work/$1"; shift
  mkdir -p "$bench_state"; chmod 755 "$bench_state"
  bench_port=$(bench_free_port)
  "$root/.build/release/tender" dev --state-dir "$bench_state" --grpc-address "127.0.0.1:$bench_port" \
    --http-address "127.0.0.1:$(bench_free_port)" --ephemeral --log-level "${LOG_LEVEL:-warning}" "$@" \
    >"$bench_state/tender.out" 2>"$bench_state/tender.err" &
  bench_server=$!
  for _ in $(seq 1 600); do
    grep -q "Tender is serving" "$bench_state/tender.out" 2>/dev/null && return 0
    kill -0 "$bench_server" 2>/dev/null || { cat "$bench_state/tender.err" >&2; exit 1; }
    sleep 0.1
  done
  echo "bench: tender dev did not start" >&2
  exit 1
}

bench_stop() {
  kill -INT "$bench_server"
  wait "$bench_server" || true
  bench_server=""
}

# bench_measure LABEL URL EXPECTED_GRPC_STATUS [extra h2load/nghttp headers...]
bench_measure() {
  local label=$1 url=$2 expected=$3; shift 3
  local trailers
  trailers=$(nghttp -v -d "$bench_work/empty.bin" "${bench_grpc_headers[@]}" "$@" "$url" 2>&1 | grep -ai 'grpc-status' || true)
  echo "$trailers" | grep -q "grpc-status: $expected" || { echo "bench: $label did not end with grpc-status $expected: $trailers" >&2; exit 1; }
  echo "== $label (verified grpc-status $expected)"
  rm -f "$bench_work/requests.tsv"
  h2load -c "$bench_connections" -m "$bench_streams" -t "$bench_threads" -D "$bench_duration" --warm-up-time "$bench_warmup" \
    --log-file="$bench_work/requests.tsv" -d "$bench_work/empty.bin" "${bench_grpc_headers[@]}" "$@" "$url" \
    | grep -E '^(finished in|requests:|status codes:)'
  # h2load's log: start time, HTTP status, time to complete (µs) per request.
  python3 - "$bench_work/requests.tsv" <<'PY'
import sys
latencies = sorted(int(line.split("\t")[2]) for line in open(sys.argv[1]) if line.strip())
def percentile(p):
    return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] / 1000
print(f"latency over {len(latencies)} requests (ms): " + ", ".join(
    f"p{p:g} {percentile(p):.2f}" for p in (50, 90, 99, 99.9)) + f", max {latencies[-1] / 1000:.2f}")
PY
}
