"""Three `tender serve` replicas on one PostgreSQL and one Redis, behind HAProxy (TCP mode, TLS
passed through, each replica checked on its HTTPS /readyz) on loopback, as a Kubernetes Service
or a cloud balancer would put them. tender-load's callers create a payment, refund part of it and
read it back (CreatePayment, CreateRefund, GetPayment through HAProxy, retrying retryable
statuses with the same idempotency key) while the replicas are restarted one at a time with
SIGTERM and a drain delay, as a rollout does.

Afterwards: every call succeeded or got a retryable status and succeeded on retry; every read-back
showed the refund; the invariant checker finds no payment or refund made twice or left unsettled;
each replica drained and exited 0; and a rate limit is one bucket in Redis, not one per replica
(IssueToken's per-address bucket: the same limiter as the per-client one). The throughput before, during and after the roll is printed."""
import asyncio
import os
import pathlib
import re
import signal
import socket
import ssl
import subprocess
import sys
import shutil
import time
import urllib.request

import grpc
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "clients" / "python"))

from cluster import (  # noqa: E402
    Backends, Load, Process, accepting, check_exactly_once, free_port, https_ready, settle, wait_for, workspace)
from tender_client.proto.tender.auth.v1 import auth_service_pb2, auth_service_pb2_grpc  # noqa: E402
from tender_dev import binary  # noqa: E402

API_KEY = "sk_test_replicas"
REPLICAS = 3
# IssueToken's bucket per peer address (every caller here is 127.0.0.1): 10 at once, then one
# every 2 s. The probe at the end sends more than one bucket allows to every replica at once.
ISSUE_TOKEN_PER_SECOND, ISSUE_TOKEN_BURST = 0.5, 10
DRAIN_DELAY = "2s"


class Replica:
    def __init__(self, index, directory, environment):
        self.index = index
        self.grpc_port, self.http_port = free_port(), free_port()
        self.process = Process(f"tender-{index}", directory, [
            binary(), "serve", "--grpc-address", f"127.0.0.1:{self.grpc_port}",
            "--http-address", f"127.0.0.1:{self.http_port}", "--tls-cert", str(directory / "server.pem"),
            "--tls-key", str(directory / "server-key.pem"), "--drain-delay", DRAIN_DELAY,
            "--rate-limit", "100000/s,burst=100000",
            "--issue-token-rate-limit", f"{int(ISSUE_TOKEN_PER_SECOND * 60)}/m,burst={ISSUE_TOKEN_BURST}",
            "--provider-attempts", "2",
            "--provider-timeout", "2s", "--provider-max-backoff", "500ms", "--idempotency-lock", "8s",
            "--completer-interval", "1s", "--settlement-check-after", "5s", "--log-level", "info"], environment)
        self.context = ssl.create_default_context(cafile=str(directory / "ca.pem"))
        self.exits = []

    def start(self):
        self.process.start()
        wait_for(lambda: https_ready(self.http_port, self.context), 120, f"replica {self.index} becoming ready")

    def stop(self):
        """SIGTERM, and the time until the replica exited (it drains first)."""
        started = time.monotonic()
        self.process.signal(signal.SIGTERM)
        self.exits.append(self.process.process.returncode)
        return time.monotonic() - started

    def metrics(self):
        with urllib.request.urlopen(f"https://localhost:{self.http_port}/metrics", context=self.context,
                                    timeout=5) as response:
            return response.read().decode()


class HAProxy:
    def __init__(self, directory, replicas):
        self.port = free_port()
        self.socket = directory / "haproxy.sock"
        servers = "\n".join(
            f"    server r{r.index} 127.0.0.1:{r.grpc_port} check port {r.http_port}" for r in replicas)
        self.config = directory / "haproxy.cfg"
        self.config.write_text(f"""global
    maxconn 4096
    stats socket {self.socket} mode 600 level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 5m
    timeout server 5m
    timeout check 2s
    retries 2
    option redispatch
frontend grpc
    bind 127.0.0.1:{self.port}
    default_backend tender
backend tender
    balance leastconn
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host localhost
    http-check expect status 200
    default-server inter 500ms fastinter 250ms downinter 500ms rise 2 fall 1 check-ssl verify required ca-file {directory / "ca.pem"} check-sni localhost verifyhost localhost
{servers}
""")
        self.process = Process("haproxy", directory, ["haproxy", "-f", str(self.config), "-db"])

    def start(self):
        checked = subprocess.run(["haproxy", "-c", "-f", str(self.config)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        self.process.start()
        wait_for(lambda: accepting(self.port), 30, "HAProxy listening")

    def states(self):
        """Each server's status as HAProxy's health checks see it (UP, DOWN, …)."""
        with socket.socket(socket.AF_UNIX) as connection:
            connection.connect(str(self.socket))
            connection.sendall(b"show stat\n")
            data = b""
            while chunk := connection.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","))) for line in lines[1:] if line]
        return {row["svname"]: row["status"].split()[0] for row in rows if row["pxname"] == "tender"
                and row["svname"] not in ("FRONTEND", "BACKEND")}


@pytest.fixture()
def cluster():
    directory = workspace("tender-replicas-")
    backends = Backends(directory, API_KEY)
    backends.start()
    backends.admin("merchant", "create", "--id", "mer_replicas", "--name", "Replicas")
    replicas = [Replica(index, directory, backends.environment) for index in range(REPLICAS)]
    for replica in replicas:
        replica.start()
    haproxy = HAProxy(directory, replicas)
    haproxy.start()
    wait_for(lambda: set(haproxy.states().values()) == {"UP"}, 30, "HAProxy seeing every replica up")
    yield {"directory": directory, "backends": backends, "postgres": backends.postgres, "sim_port": backends.sim_port,
           "replicas": replicas, "haproxy": haproxy}
    # The card-data scan reads what the replicas logged and stored (tests/support/card_scan.py).
    scan_dir = os.environ.get("TENDER_CARD_SCAN_DIR")
    if scan_dir:
        import card_scan
        card_scan.dump(backends.postgres.port, pathlib.Path(scan_dir), "replicas")
        for replica in replicas:
            shutil.copy(replica.process.log, pathlib.Path(scan_dir) / f"replicas-tender-{replica.index}.log")
    backends.stop(*[replica.process for replica in replicas], haproxy.process)
    shutil.rmtree(directory, ignore_errors=True)


def probe_rate_limit(cluster, client_id, secret, per_replica=12):
    """`per_replica` IssueToken calls sent at once to every replica, straight to its port; returns
    (calls answered, calls refused RESOURCE_EXHAUSTED, seconds from the first sent to the last
    answered)."""
    context = (cluster["directory"] / "ca.pem").read_bytes()

    async def run():
        channels = [grpc.aio.secure_channel(f"localhost:{r.grpc_port}", grpc.ssl_channel_credentials(context))
                    for r in cluster["replicas"]]
        for channel in channels:
            await channel.channel_ready()
        request = auth_service_pb2.IssueTokenRequest(client_id=client_id, client_secret=secret)

        async def one(channel):
            try:
                await auth_service_pb2_grpc.AuthServiceStub(channel).IssueToken(request, timeout=60)
                return "OK"
            except grpc.aio.AioRpcError as error:
                return error.code().name

        started = time.monotonic()
        codes = await asyncio.gather(*(one(channel) for channel in channels for _ in range(per_replica)))
        elapsed = time.monotonic() - started
        for channel in channels:
            await channel.close()
        return codes, elapsed

    codes, elapsed = asyncio.run(run())
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes
    return codes.count("OK"), codes.count("RESOURCE_EXHAUSTED"), elapsed


def test_rolling_restart_behind_haproxy(cluster):
    directory, postgres, replicas, haproxy = (
        cluster["directory"], cluster["postgres"], cluster["replicas"], cluster["haproxy"])
    client_id, secret = cluster["backends"].create_client("mer_replicas")
    load = Load(directory, f"localhost:{haproxy.port}", directory / "ca.pem", client_id, secret, callers=6,
                connections=6, tag="replicas")
    load.start()
    timeline = []

    def phase(name, seconds):
        before, started = load.done(), time.monotonic()
        time.sleep(seconds)
        done, elapsed = load.done() - before, time.monotonic() - started
        timeline.append((name, done, elapsed))

    wait_for(lambda: load.done() > 0, 60, "the first operation")
    phase("before the roll", 8)
    before, started = load.done(), time.monotonic()
    drains = []
    for replica in replicas:
        drains.append(replica.stop())
        replica.start()
        wait_for(lambda: haproxy.states()[f"r{replica.index}"] == "UP", 30, f"HAProxy seeing r{replica.index} up")
    timeline.append(("during the roll", load.done() - before, time.monotonic() - started))
    phase("after the roll", 8)
    report = load.finish()
    operations = [tuple(operation) for operation in report["operations"]]

    print(f"\n[replicas] {REPLICAS} replicas behind HAProxy; {len(operations)} operations "
          f"(CreatePayment, CreateRefund, GetPayment); calls by status: {dict(sorted(report['codes'].items()))}; "
          f"successful calls by method: {dict(sorted(report['succeeded'].items()))}")
    for name, done, elapsed in timeline:
        print(f"[replicas]   {name}: {done} operations in {elapsed:.1f} s = {done / elapsed:.1f} operations/s")
    print(f"[replicas]   SIGTERM to exit per replica: {', '.join(f'{d:.1f} s' for d in drains)} "
          f"(drain delay {DRAIN_DELAY})")
    assert all(replica.exits == [0] for replica in replicas), [replica.exits for replica in replicas]
    assert not report["unretryable"], f"calls answered with a status that is not retryable: {report['unretryable'][:5]}"
    assert not report["abandoned"], f"operations still failing after 120 s of retries: {report['abandoned'][:5]}"
    assert not report["mismatches"], f"payments read back wrong: {report['mismatches'][:5]}"
    assert report["succeeded"]["GetPayment"] >= len(operations) > 20
    assert all(done > 0 for _, done, _ in timeline), "a phase completed no operation"

    served = []
    for replica in replicas:
        handled = re.findall(r'^grpc_server_handled_total\{[^}]*grpc_service="tender\.[^"]*"[^}]*\} (\d+)',
                             replica.metrics(), re.MULTILINE)
        served.append(sum(int(count) for count in handled))
    print(f"[replicas]   RPCs served since each replica's restart: {served}")
    settled_in = settle(postgres)
    counted = check_exactly_once(postgres, cluster["sim_port"], operations)
    print(f"[replicas] settled {settled_in:.1f} s after the load; Tender: {counted['payments']} payments "
          f"({counted['moved']} with money moved), {counted['refunds']} refunds; provider: {counted['charges']} "
          f"charges, {counted['provider_refunds']} refunds")

    # One bucket in Redis, whichever replica is called: a burst at all three at once gets no more
    # than one bucket's worth (its capacity plus its refill over the probe's whole time).
    allowed, refused, elapsed = probe_rate_limit(cluster, client_id, secret)
    limit = ISSUE_TOKEN_BURST + ISSUE_TOKEN_PER_SECOND * elapsed
    print(f"[replicas] IssueToken limit {ISSUE_TOKEN_BURST} then {ISSUE_TOKEN_PER_SECOND}/s per address, "
          f"{allowed + refused} calls at {REPLICAS} replicas at once: {allowed} answered, {refused} refused "
          f"RESOURCE_EXHAUSTED in {elapsed:.1f} s (one shared bucket allows at most {int(limit)}, one per "
          f"replica {int(REPLICAS * limit)})")
    assert allowed + refused > 1.2 * limit, "the probe did not send enough to tell one bucket from three"
    assert refused > 0 and allowed <= limit
