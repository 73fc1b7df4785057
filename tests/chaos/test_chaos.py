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
import base64
import json
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "clients" / "python"))
sys.path.insert(0, str(ROOT / "tests" / "support"))

from tender_dev import binary  # noqa: E402
API_KEY = "sk_test_chaos"
IS_ROOT = os.geteuid() == 0


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def as_postgres(arguments):
    return (["runuser", "-u", "postgres", "--"] if IS_ROOT else []) + arguments


class Postgres:
    def __init__(self, directory):
        self.directory = directory
        self.data = directory / "data"
        self.port = free_port()
        directory.mkdir()
        if IS_ROOT:
            shutil.chown(directory, "postgres", "postgres")
        subprocess.run(as_postgres(["initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                                    "--no-instructions", "--no-sync"]), check=True, capture_output=True, cwd="/tmp")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres?sslmode=disable"

    def pg_ctl(self, *arguments):
        subprocess.run(as_postgres(["pg_ctl", "-D", str(self.data), "-l", str(self.directory / "server.log"), "-w",
                                    "-t", "60", *arguments]), check=True, capture_output=True, cwd="/tmp")

    def start(self):
        self.pg_ctl("-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.directory} -c fsync=off", "start")

    def restart(self):
        self.pg_ctl("-m", "fast", "restart")

    def stop(self):
        self.pg_ctl("-m", "immediate", "stop")

    def query(self, sql):
        output = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                                 "-XAtq", "-F", "\t", "-c", sql], check=True, capture_output=True, text=True).stdout
        return [line.split("\t") for line in output.splitlines() if line]


class Process:
    """A child process with its output in a file."""

    def __init__(self, name, directory, arguments, environment=None):
        self.name, self.arguments, self.environment = name, arguments, environment
        self.log = directory / f"{name}.log"
        self.process = None

    def start(self):
        sink = open(self.log, "ab")
        self.process = subprocess.Popen(self.arguments, stdout=sink, stderr=subprocess.STDOUT,
                                        env=dict(os.environ, **(self.environment or {})))
        sink.close()

    def signal(self, number):
        self.process.send_signal(number)
        self.process.wait(timeout=60)


def wait_for(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {seconds} s")
        time.sleep(0.1)


def accepting(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def certificates(directory):
    """A throwaway CA and a server certificate for localhost and 127.0.0.1."""
    def openssl(*arguments):
        subprocess.run(["openssl", *arguments], check=True, capture_output=True, cwd=directory)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
            "-out", "ca.pem", "-subj", "/CN=Tender chaos CA", "-days", "2")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "server-key.pem",
            "-out", "server.csr", "-subj", "/CN=localhost")
    (directory / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "san.ext")


class Load:
    """`tender-load --operations`: callers creating a payment and then refunding part of it, each
    operation with its own idempotency key, retried with that key on retryable errors until it
    succeeds. It prints each operation as it completes and, once stopped, reports every call's
    status and every operation's payment and refund."""

    def __init__(self, directory, target, ca_path, client_id, client_secret, callers=6):
        credentials = directory / "load-client.json"
        credentials.write_text(json.dumps({"clientID": client_id, "clientSecret": client_secret}))
        self.report_path = directory / "load-report.json"
        self.arguments = [str(pathlib.Path(binary()).parent / "tender-load"), "--operations", "--address", target,
                          "--ca", str(ca_path), "--credentials", str(credentials), "--concurrency", str(callers),
                          "--connections", "2", "--duration", "3600", "--report", str(self.report_path)]
        self.log = directory / "tender-load.log"
        self.completed = 0
        self.process = None
        self.reader = None

    def read(self):
        with open(self.log, "w") as log:
            for line in self.process.stdout:
                log.write(line)
                if line.startswith("operations "):
                    self.completed = int(line.split()[1])

    def done(self):
        return self.completed

    def start(self):
        self.process = subprocess.Popen(self.arguments, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def finish(self):
        """Stops the callers once their operations are done and returns the report."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=300)
        self.reader.join(timeout=30)
        assert self.process.returncode == 0, f"tender-load failed:\n{self.log.read_text()[-3000:]}"
        print(f"\n[chaos] {self.log.read_text().strip().splitlines()[-1]}")
        return json.loads(self.report_path.read_text())


@pytest.fixture()
def world():
    directory = pathlib.Path(tempfile.mkdtemp(prefix="tender-chaos-"))
    directory.chmod(0o755)
    certificates(directory)
    postgres = Postgres(directory / "postgres")
    postgres.start()
    redis_port, sim_port, grpc_port, http_port = free_port(), free_port(), free_port(), free_port()
    redis = Process("redis", directory, ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port),
                                         "--save", "", "--appendonly", "no"])
    tender_bin = pathlib.Path(binary())
    simulator = Process("simulator", directory, [str(tender_bin.parent / "tender-provider-sim"),
                                                 "--address", f"127.0.0.1:{sim_port}", "--api-key", API_KEY])
    environment = {
        "TENDER_DATABASE_URL": postgres.url,
        "TENDER_REDIS_URL": f"redis://127.0.0.1:{redis_port}",
        "TENDER_KEY_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
        "TENDER_PROVIDER_URL": f"http://127.0.0.1:{sim_port}",
        "TENDER_PROVIDER_API_KEY": API_KEY,
    }
    tender = Process("tender", directory, [
        str(tender_bin), "serve", "--grpc-address", f"127.0.0.1:{grpc_port}", "--http-address",
        f"127.0.0.1:{http_port}", "--tls-cert", str(directory / "server.pem"), "--tls-key",
        str(directory / "server-key.pem"), "--rate-limit", "100000/s,burst=100000", "--provider-attempts", "2",
        "--provider-timeout", "2s", "--provider-max-backoff", "500ms", "--idempotency-lock", "8s",
        "--completer-interval", "1s", "--settlement-check-after", "5s", "--log-level", "info"], environment)
    context = ssl.create_default_context(cafile=str(directory / "ca.pem"))

    def ready():
        try:
            with urllib.request.urlopen(f"https://localhost:{http_port}/readyz", context=context,
                                        timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def start_tender():
        tender.start()
        wait_for(ready, 120, "Tender becoming ready")

    redis.start()
    wait_for(lambda: accepting(redis_port), 30, "Redis listening")
    simulator.start()
    wait_for(lambda: accepting(sim_port), 60, "the simulator listening")
    subprocess.run([str(tender_bin), "migrate"], check=True, capture_output=True, env=dict(os.environ, **environment))
    subprocess.run([str(tender_bin), "merchant", "create", "--id", "mer_chaos", "--name", "Chaos"], check=True,
                   capture_output=True, env=dict(os.environ, **environment))
    created = subprocess.run([str(tender_bin), "client", "create", "--merchant", "mer_chaos", "--scopes",
                              "payments:read,payments:write,refunds:read,refunds:write"], check=True,
                             capture_output=True, text=True, env=dict(os.environ, **environment)).stdout
    fields = dict(line.split(":", 1) for line in created.splitlines() if ":" in line)
    start_tender()
    yield {
        "directory": directory, "postgres": postgres, "redis": redis, "redis_port": redis_port,
        "simulator": simulator, "sim_port": sim_port, "tender": tender, "start_tender": start_tender,
        "ready": ready, "target": f"localhost:{grpc_port}", "ca": directory / "ca.pem",
        "client_id": fields["client_id"].strip(), "client_secret": fields["client_secret"].strip(),
    }
    scan_dir = os.environ.get("TENDER_CARD_SCAN_DIR")
    if scan_dir:
        import card_scan
        card_scan.dump(postgres.port, pathlib.Path(scan_dir), "chaos")
    for process in (tender, simulator, redis):
        if process.process and process.process.poll() is None:
            process.process.kill()
            process.process.wait(timeout=30)
    try:
        postgres.stop()
    except subprocess.CalledProcessError:
        pass
    if scan_dir:
        shutil.copy(directory / "tender.log", pathlib.Path(scan_dir) / "chaos-tender.log")
    shutil.rmtree(directory, ignore_errors=True)


def simulator_requests(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/requests", timeout=10) as response:
        return json.loads(response.read())


def test_exactly_once_through_faults(world):
    load = Load(world["directory"], world["target"], world["ca"], world["client_id"], world["client_secret"])
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

    def unsettled():
        return postgres.query("SELECT (SELECT count(*) FROM payments WHERE status = 'processing') + "
                              "(SELECT count(*) FROM refunds WHERE status = 'pending')")[0][0] != "0"
    # The completer runs every second and the reconciler asks after 5 s of quiet.
    settle_started = time.monotonic()
    wait_for(lambda: not unsettled(), 60, "every payment and refund settling")
    settled_in = time.monotonic() - settle_started

    payments = postgres.query("SELECT payment_id, status, captured_minor, refunded_minor, "
                              "coalesce(provider_payment_id, '') FROM payments")
    refunds = postgres.query("SELECT refund_id, payment_id, status, coalesce(provider_refund_id, '') FROM refunds")
    log = simulator_requests(world["sim_port"])
    charges = [entry for entry in log if entry["method"] == "POST" and entry["path"] == "/v1/payment_intents"
               and entry["outcome"] == "created"]
    provider_refunds = [entry for entry in log if entry["method"] == "POST" and entry["path"] == "/v1/refunds"
                        and entry["outcome"] == "refunded"]
    moved = [row for row in payments if int(row[2]) > 0]
    succeeded_refunds = [row for row in refunds if row[2] == "succeeded"]
    refused_by_gate = sum(1 for entry in log if entry["outcome"] == "refused")

    print(f"\n[chaos] {elapsed:.1f} s of load, {len(operations)} payment+refund operations; calls by status: "
          f"{dict(sorted(report['codes'].items()))}")
    for line in timeline:
        print(f"[chaos]   {line}")
    statuses = postgres.query("SELECT 'payment ' || status || coalesce(' ' || failure_reason, ''), count(*) FROM payments "
                              "GROUP BY 1 UNION ALL SELECT 'refund ' || status || coalesce(' ' || failure_reason, ''), "
                              "count(*) FROM refunds GROUP BY 1 ORDER BY 1")
    print(f"[chaos] rows by status: {', '.join(f'{name}: {count}' for name, count in statuses)}")
    print(f"[chaos] settled {settled_in:.1f} s after the load; Tender: {len(payments)} payments "
          f"({len(moved)} with money moved), {len(refunds)} refunds ({len(succeeded_refunds)} succeeded); provider: "
          f"{len(charges)} charges, {len(provider_refunds)} refunds, {len(log)} requests logged "
          f"({refused_by_gate} refused)")

    server_log = (world["directory"] / "tender.log").read_text(errors="replace").splitlines()
    for index, line in enumerate(server_log):
        if '"rpc.code":"UNKNOWN"' in line or '"rpc.code":"INTERNAL"' in line:
            for before in server_log[max(0, index - 6):index + 1]:
                if '"level":"info"' not in before or before == line:
                    print(f"[chaos] server log: {before[:500]}")
    assert not report["unretryable"], f"calls answered with a status that is not retryable: {report['unretryable'][:5]}"
    assert not report["abandoned"], f"operations still failing after 120 s of retries: {report['abandoned'][:5]}"
    assert len(operations) > 20
    # Each charge at the provider is one Tender payment with money moved, and the other way round.
    assert len(charges) == len(moved), "provider charges and Tender payments with money moved differ"
    assert len({entry["idempotencyKey"] for entry in charges}) == len(charges), "a payment was charged twice"
    assert len({row[4] for row in moved}) == len(moved) and all(row[4] for row in moved)
    # Every logical operation's payment was charged once and refunded once; any other payment or
    # refund row moved no money.
    assert {row[0] for row in moved} == {payment for payment, _ in operations}
    assert all(row[1] == "succeeded" and row[2] == "1000" and row[3] == "300" for row in moved), \
        "a payment is not exactly charged once and refunded once"
    assert all(row[1] == "failed" and row[2] == "0" and row[3] == "0" for row in payments if row not in moved)
    assert len(provider_refunds) == len(succeeded_refunds) == len(operations)
    assert len({entry["idempotencyKey"] for entry in provider_refunds}) == len(provider_refunds)
    assert {row[0] for row in succeeded_refunds} == {refund for _, refund in operations}
    assert all(row[2] == "failed" for row in refunds if row not in succeeded_refunds)
