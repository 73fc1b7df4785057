#!/usr/bin/env bash
# What the interceptor chain costs: one h2load command, one run, three servers measured in turn
# on a release build of Tender (each started with `tender dev`: local PostgreSQL and Redis):
#   1. Health/Check, no interceptors at all (dev's hidden --without-interceptors)
#   2. Health/Check through the chain (tracing, metrics, logging; auth and limits pass public RPCs)
#   3. PaymentService/GetPayment with a bearer token through the whole chain: JWT verification,
#      the token's standing (Redis), the per-client bucket (Redis), then the handler, which answers
#      INVALID_ARGUMENT for the empty request at once (the cheapest authenticated call there is).
#   CONNECTIONS (16) STREAMS (32) DURATION (10 s) WARMUP (2 s) THREADS (1)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/deploy/setup.sh"
swift build -c release --product tender >&2
source "$root/deploy/bench-lib.sh"
# The limiter still runs on every call; the bucket is just too large to refuse any.
unlimited=(--rate-limit '1000000/s,burst=1000000')

bench_describe
bench_start bare "${unlimited[@]}" --without-interceptors
bench_measure "Health/Check, no interceptors" "https://127.0.0.1:$bench_port/grpc.health.v1.Health/Check" 0
bench_stop

bench_start chain "${unlimited[@]}"
bench_measure "Health/Check, full chain" "https://127.0.0.1:$bench_port/grpc.health.v1.Health/Check" 0
token=$(cd "$root/clients/python" && python3 - "$bench_state" "$bench_port" <<'PY'
import json, sys, grpc
from tender_client.proto.tender.auth.v1 import auth_service_pb2 as auth, auth_service_pb2_grpc as auth_grpc
state, port = sys.argv[1], sys.argv[2]
client = json.load(open(f"{state}/dev-client.json"))
credentials = grpc.ssl_channel_credentials(root_certificates=open(f"{state}/tls/ca.pem", "rb").read())
with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
    print(auth_grpc.AuthServiceStub(channel).IssueToken(auth.IssueTokenRequest(
        client_id=client["clientID"], client_secret=client["clientSecret"], scopes=["payments:read"])).access_token)
PY
)
# 3 = INVALID_ARGUMENT (no payment_id): the call passed authentication, the scope check and the
# rate limit, and the handler refused the empty request without touching the database.
bench_measure "PaymentService/GetPayment with a bearer token, full chain" \
  "https://127.0.0.1:$bench_port/tender.payments.v1.PaymentService/GetPayment" 3 -H "authorization: Bearer $token"
bench_stop
