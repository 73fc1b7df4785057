"""Abuse by a tenant or an anonymous caller, against a running Tender over TLS: 10,000 Health
watches of unique names opened and cancelled, and 5,000 WatchPayments streams from one client.
The limits answer RESOURCE_EXHAUSTED, the server stays ready, and its memory returns to within
10 % of where it started once warm: a first, smaller round of the same abuse fills the
allocator's caches and the pools (its cold figures are printed too), so what is measured is
whether the abuse leaves anything behind."""
import asyncio
import os
import ssl
import time
import urllib.request

# The server's GOAWAY to clients that reset many streams (its rapid-reset guard) is expected here.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
import grpc  # noqa: E402
import pytest

from test_http2 import cpu_seconds, rss
from tender_dev import tender_dev
from tender_client.proto.grpc.health.v1 import health_pb2, health_pb2_grpc
from tender_client.proto.tender.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from tender_client.proto.tender.payments.v1 import payment_service_pb2, payment_service_pb2_grpc

# RSS after the abuse may exceed its start by this share, no more. Both rounds used to end 15 %
# to 16 % higher: every call with a deadline held its task until the deadline passed (a
# cancelled `Task.sleep`; see Sources/TenderCore/Sleep.swift), and each 16-MiB scrypt buffer
# of an IssueToken stayed in a malloc arena once freed (Sources/tender/Allocator.swift).
MEMORY_SLACK = 0.10


@pytest.fixture(scope="module")
def hostile_server():
    # A rate limit high enough that the stream limits, not the request rate, are what answer.
    # Memory is what is measured here: logging stays at warning even during the card-data scan.
    with tender_dev(arguments=["--rate-limit", "100000/s,burst=100000"], log_level="warning") as server:
        yield server


def credentials(server):
    return grpc.ssl_channel_credentials(root_certificates=server["ca"].read_bytes())


def ready(server):
    context = ssl.create_default_context(cafile=str(server["ca"]))
    with urllib.request.urlopen(server["bridge"] + "/readyz", context=context, timeout=5) as response:
        return response.status == 200


def settled_rss(pid, bound, seconds=15):
    """RSS once it is within `bound` (freed memory may take a moment to go back), or after
    `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        current = rss(pid)
        if current <= bound or time.monotonic() > deadline:
            return current
        time.sleep(0.5)


def report(name, tried, outcome, pid, start_rss, start_cpu, started):
    after = rss(pid)
    print(f"\n[abuse] {name}: {tried}; {outcome}"
          f"\n[abuse]   server CPU {cpu_seconds(pid) - start_cpu:.2f} s over {time.monotonic() - started:.2f} s; "
          f"RSS {start_rss / 2**20:.1f} -> {after / 2**20:.1f} MiB")


def test_health_watch_cycles(hostile_server):
    pid = hostile_server["pid"]
    cycles, warm_up, workers = 10_000, 5_000, 8

    removed = 0

    async def run(count):
        nonlocal removed
        unknown = 0
        channels = [grpc.aio.secure_channel(hostile_server["target"], credentials(hostile_server))
                    for _ in range(workers)]

        async def worker(index):
            nonlocal unknown, removed
            stub = health_pb2_grpc.HealthStub(channels[index])
            for cycle in range(index, count, workers):
                # The rapid-reset guard ends a connection with GOAWAY ENHANCE_YOUR_CALM. A watch the
                # client had already opened on it when the guard tripped (the client's reset of the
                # last watch can follow the next watch's HEADERS) is removed with it: UNAVAILABLE,
                # which a client retries on a new connection, as this one does (a few times at most).
                for attempt in range(5):
                    call = stub.Watch(
                        health_pb2.HealthCheckRequest(service=f"abuse.watch.{cycle}.{time.time_ns()}"), timeout=10)
                    try:
                        first = await call.read()
                    except grpc.aio.AioRpcError as error:
                        if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == 4:
                            raise
                        removed += 1
                        continue
                    if first.status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN:
                        unknown += 1
                    call.cancel()
                    break

        await asyncio.gather(*(worker(index) for index in range(workers)))
        for channel in channels:
            await channel.close()
        return unknown

    cold = rss(pid)
    asyncio.run(run(warm_up))
    start_rss, start_cpu, started = rss(pid), cpu_seconds(pid), time.monotonic()
    unknown = asyncio.run(run(cycles))
    elapsed = time.monotonic() - started
    after = settled_rss(pid, start_rss * (1 + MEMORY_SLACK))
    report("Health/Watch open+cancel", f"{cycles} cycles with unique names over {workers} connections in "
           f"{elapsed:.1f} s, after {warm_up} to warm up (RSS {cold / 2**20:.1f} MiB cold)",
           f"{unknown} answered SERVICE_UNKNOWN first ({removed} retried after the rapid-reset guard's GOAWAY "
           f"removed them); RSS settled at {after / 2**20:.1f} MiB",
           pid, start_rss, start_cpu, started)
    assert unknown == cycles
    assert after <= start_rss * (1 + MEMORY_SLACK), "cancelled watches left memory behind"
    assert ready(hostile_server)


def test_watch_payments_streams(hostile_server):
    pid = hostile_server["pid"]
    streams, warm_up = 5_000, 2_500

    async def run(streams):
        channel = grpc.aio.secure_channel(hostile_server["target"], credentials(hostile_server))
        issued = await auth_service_pb2_grpc.AuthServiceStub(channel).IssueToken(
            auth_service_pb2.IssueTokenRequest(client_id=hostile_server["client_id"],
                                               client_secret=hostile_server["client_secret"]), timeout=10)
        metadata = (("authorization", f"Bearer {issued.access_token}"),)
        stub = payment_service_pb2_grpc.PaymentServiceStub(channel)
        codes = {}
        open_calls = []

        async def one():
            call = stub.WatchPayments(payment_service_pb2.WatchPaymentsRequest(), metadata=metadata, timeout=60)
            try:
                await call.initial_metadata()
                done = asyncio.ensure_future(call.code())
                await asyncio.wait([done], timeout=0.5)
                if done.done():
                    codes[done.result().name] = codes.get(done.result().name, 0) + 1
                else:
                    done.cancel()
                    open_calls.append(call)
            except grpc.aio.AioRpcError as error:
                codes[error.code().name] = codes.get(error.code().name, 0) + 1

        # Opened in waves, as a misbehaving client would: many at once, none closed.
        for start in range(0, streams, 100):
            await asyncio.gather(*(one() for _ in range(start, min(streams, start + 100))))
        held = len(open_calls)
        server_ready = await asyncio.to_thread(ready, hostile_server)
        for call in open_calls:
            call.cancel()
        await channel.close()
        return codes, held, server_ready

    cold = rss(pid)
    asyncio.run(run(warm_up))
    start_rss, start_cpu, started = rss(pid), cpu_seconds(pid), time.monotonic()
    codes, held, server_ready = asyncio.run(run(streams))
    elapsed = time.monotonic() - started
    after = settled_rss(pid, start_rss * (1 + MEMORY_SLACK))
    report("WatchPayments streams from one client", f"{streams} streams opened without closing any in "
           f"{elapsed:.1f} s, after {warm_up} to warm up (RSS {cold / 2**20:.1f} MiB cold)", f"{held} held open, the rest answered {codes}; ready while held: {server_ready}; "
           f"RSS settled at {after / 2**20:.1f} MiB", pid, start_rss, start_cpu, started)
    assert held == 32, "the per-client stream limit did not hold"
    assert codes.get("RESOURCE_EXHAUSTED") == streams - held
    assert server_ready
    assert after <= start_rss * (1 + MEMORY_SLACK), "closed streams left memory behind"
    assert ready(hostile_server)
