"""Chaos under load: PostgreSQL, Redis, the provider simulator and `tender serve` as separate
processes on loopback, tender-load running CreatePayment and CreateRefund calls from callers that retry with
the same idempotency key on retryable errors (as Tender's clients are told to), and, one after the
other while the load runs: Tender killed with SIGKILL and restarted, PostgreSQL restarted, Redis
stopped and started, the provider refusing connections.

Afterwards the invariant checker reads Tender's database and the simulator's request log:
- every charge the provider made belongs to exactly one Tender payment whose money moved, and
  every such payment to exactly one charge (one provider idempotency key each);
- every refund the provider made is exactly one succeeded Tender refund, and the other way round;
- no payment stays PROCESSING and no refund PENDING beyond the completer's and reconciler's window;
- every client call got a success or a retryable status (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED
  IDEMPOTENCY_KEY_IN_USE), and every logical operation succeeded on a retry with its own key.
"""
import os
import pathlib
import shutil
import signal
import ssl
import sys
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "clients" / "python"))
sys.path.insert(0, str(ROOT / "tests" / "support"))

from cluster import (  # noqa: E402
    Backends, Load, Process, accepting, check_exactly_once, free_port, https_ready, settle, wait_for, workspace)
from tender_dev import binary  # noqa: E402

API_KEY = "sk_test_chaos"


@pytest.fixture()
def world():
    directory = workspace("tender-chaos-")
    backends = Backends(directory, API_KEY)
    backends.start()
    grpc_port, http_port = free_port(), free_port()
    tender = Process("tender", directory, [
        binary(), "serve", "--grpc-address", f"127.0.0.1:{grpc_port}", "--http-address",
        f"127.0.0.1:{http_port}", "--tls-cert", str(directory / "server.pem"), "--tls-key",
        str(directory / "server-key.pem"), "--rate-limit", "100000/s,burst=100000", "--provider-attempts", "2",
        "--provider-timeout", "2s", "--provider-max-backoff", "500ms", "--idempotency-lock", "8s",
        "--completer-interval", "1s", "--settlement-check-after", "5s", "--log-level", "info"],
        backends.environment)
    context = ssl.create_default_context(cafile=str(directory / "ca.pem"))

    def start_tender():
        tender.start()
        wait_for(lambda: https_ready(http_port, context), 120, "Tender becoming ready")

    backends.admin("merchant", "create", "--id", "mer_chaos", "--name", "Chaos")
    client_id, client_secret = backends.create_client("mer_chaos")
    start_tender()
    yield {
        "directory": directory, "postgres": backends.postgres, "redis": backends.redis,
        "redis_port": backends.redis_port, "simulator": backends.simulator, "sim_port": backends.sim_port,
        "tender": tender, "start_tender": start_tender, "target": f"localhost:{grpc_port}",
        "ca": directory / "ca.pem", "client_id": client_id, "client_secret": client_secret,
    }
    scan_dir = os.environ.get("TENDER_CARD_SCAN_DIR")
    if scan_dir:
        import card_scan
        card_scan.dump(backends.postgres.port, pathlib.Path(scan_dir), "chaos")
    backends.stop(tender)
    if scan_dir:
        shutil.copy(directory / "tender.log", pathlib.Path(scan_dir) / "chaos-tender.log")
    shutil.rmtree(directory, ignore_errors=True)


def test_exactly_once_through_faults(world):
    load = Load(world["directory"], world["target"], world["ca"], world["client_id"], world["client_secret"],
                tag="chaos")
    started = time.monotonic()
    load.start()
    timeline = []

    def phase(name, seconds=4.0):
        before = load.done()
        time.sleep(seconds)
        timeline.append(f"{name}: {load.done() - before} operations in {seconds:.0f} s")

    phase("warm-up")
    world["tender"].signal(signal.SIGKILL)
    timeline.append("tender killed with SIGKILL")
    time.sleep(1)
    world["start_tender"]()
    phase("after the restart")
    world["postgres"].restart()
    timeline.append("PostgreSQL restarted")
    phase("after PostgreSQL's restart")
    world["redis"].signal(signal.SIGTERM)
    phase("Redis stopped", 3)
    world["redis"].start()
    wait_for(lambda: accepting(world["redis_port"]), 30, "Redis listening again")
    phase("after Redis is back")
    request = urllib.request.Request(f"http://127.0.0.1:{world['sim_port']}/_sim/refuse?seconds=3", method="POST")
    urllib.request.urlopen(request, timeout=10).close()
    phase("provider refusing connections", 3)
    phase("after the provider is back", 5)
    report = load.finish()
    elapsed = time.monotonic() - started
    operations = [tuple(operation) for operation in report["operations"]]

    postgres = world["postgres"]
    print(f"\n[chaos] {elapsed:.1f} s of load, {len(operations)} payment+refund operations; calls by status: "
          f"{dict(sorted(report['codes'].items()))}")
    for line in timeline:
        print(f"[chaos]   {line}")
    server_log = (world["directory"] / "tender.log").read_text(errors="replace").splitlines()
    for index, line in enumerate(server_log):
        if '"rpc.code":"UNKNOWN"' in line or '"rpc.code":"INTERNAL"' in line:
            for before in server_log[max(0, index - 6):index + 1]:
                if '"level":"info"' not in before or before == line:
                    print(f"[chaos] server log: {before[:500]}")
    assert not report["unretryable"], f"calls answered with a status that is not retryable: {report['unretryable'][:5]}"
    assert not report["abandoned"], f"operations still failing after 120 s of retries: {report['abandoned'][:5]}"
    assert not report["mismatches"], f"payments read back wrong: {report['mismatches'][:5]}"
    assert len(operations) > 20
    # The completer runs every second and the reconciler asks after 5 s of quiet.
    settled_in = settle(postgres)
    statuses = postgres.query("SELECT 'payment ' || status || coalesce(' ' || failure_reason, ''), count(*) FROM payments "
                              "GROUP BY 1 UNION ALL SELECT 'refund ' || status || coalesce(' ' || failure_reason, ''), "
                              "count(*) FROM refunds GROUP BY 1 ORDER BY 1")
    print(f"[chaos] rows by status: {', '.join(f'{name}: {count}' for name, count in statuses)}")
    counted = check_exactly_once(postgres, world["sim_port"], operations)
    print(f"[chaos] settled {settled_in:.1f} s after the load; Tender: {counted['payments']} payments "
          f"({counted['moved']} with money moved), {counted['refunds']} refunds ({counted['succeeded_refunds']} "
          f"succeeded); provider: {counted['charges']} charges, {counted['provider_refunds']} refunds, "
          f"{counted['requests']} requests logged ({counted['refused']} refused)")
