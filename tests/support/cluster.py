"""Tender's parts as separate processes on loopback, for the suites that run them that way (chaos,
replicas): a throwaway PostgreSQL cluster (as the unprivileged postgres user when run as root),
child processes logging to files, a throwaway CA and server certificate, and `tender-load
--operations`."""
import base64
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import threading
import tempfile
import time
import urllib.request

from tender_dev import binary

IS_ROOT = os.geteuid() == 0


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def as_postgres(arguments):
    return (["runuser", "-u", "postgres", "--"] if IS_ROOT else []) + arguments


class Postgres:
    """A throwaway cluster; by default without fsync (tests), or with the given `settings`."""

    def __init__(self, directory, settings=("fsync=off",)):
        self.directory = directory
        self.settings = settings
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
        options = "".join(f" -c {setting}" for setting in self.settings)
        self.pg_ctl("-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.directory}{options}", "start")

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


def workspace(prefix):
    """A new folder for one suite's processes, readable by the postgres user, with a throwaway CA
    and server certificate in it (`certificates`)."""
    directory = pathlib.Path(tempfile.mkdtemp(prefix=prefix))
    directory.chmod(0o755)
    certificates(directory)
    return directory


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

    def __init__(self, directory, target, ca_path, client_id, client_secret, callers=6, connections=2, tag="load"):
        self.tag = tag
        credentials = directory / "load-client.json"
        credentials.write_text(json.dumps({"clientID": client_id, "clientSecret": client_secret}))
        self.report_path = directory / "load-report.json"
        self.arguments = [str(pathlib.Path(binary()).parent / "tender-load"), "--operations", "--address", target,
                          "--ca", str(ca_path), "--credentials", str(credentials), "--concurrency", str(callers),
                          "--connections", str(connections), "--duration", "3600", "--report", str(self.report_path)]
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
        print(f"\n[{self.tag}] {self.log.read_text().strip().splitlines()[-1]}")
        return json.loads(self.report_path.read_text())


def simulator_requests(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/requests", timeout=10) as response:
        return json.loads(response.read())


def settle(postgres, seconds=60):
    """Waits until no payment is PROCESSING and no refund PENDING; returns how long it took."""
    def unsettled():
        return postgres.query("SELECT (SELECT count(*) FROM payments WHERE status = 'processing') + "
                              "(SELECT count(*) FROM refunds WHERE status = 'pending')")[0][0] != "0"
    started = time.monotonic()
    wait_for(lambda: not unsettled(), seconds, "every payment and refund settling")
    return time.monotonic() - started


def check_exactly_once(postgres, sim_port, operations, amount_minor=1000, refund_minor=300):
    """The invariant checker: Tender's database against the provider simulator's request log,
    for `operations` ((payment id, refund id) of every logical operation a load finished).

    - every charge the provider made is exactly one Tender payment whose money moved, and every
      such payment exactly one charge (one provider idempotency key each);
    - every logical operation's payment was charged once and refunded once, and every other
      payment moved no money;
    - every refund the provider made is exactly one succeeded Tender refund, and the other way round;
    - each payment's refunded amount is the sum of its succeeded refunds, and never above what was
      captured.

    Returns the figures it counted; raises AssertionError at the first violation."""
    payments = postgres.query("SELECT payment_id, status, captured_minor, refunded_minor, "
                              "coalesce(provider_payment_id, '') FROM payments")
    refunds = postgres.query("SELECT refund_id, payment_id, status, coalesce(provider_refund_id, ''), amount_minor "
                             "FROM refunds")
    log = simulator_requests(sim_port)
    charges = [entry for entry in log if entry["method"] == "POST" and entry["path"] == "/v1/payment_intents"
               and entry["outcome"] == "created"]
    provider_refunds = [entry for entry in log if entry["method"] == "POST" and entry["path"] == "/v1/refunds"
                        and entry["outcome"] == "refunded"]
    moved = [row for row in payments if int(row[2]) > 0]
    succeeded_refunds = [row for row in refunds if row[2] == "succeeded"]
    assert len(charges) == len(moved), "provider charges and Tender payments with money moved differ"
    assert len({entry["idempotencyKey"] for entry in charges}) == len(charges), "a payment was charged twice"
    assert len({row[4] for row in moved}) == len(moved) and all(row[4] for row in moved)
    assert {row[0] for row in moved} == {payment for payment, _ in operations}
    assert len({payment for payment, _ in operations}) == len(operations), "two operations share a payment"
    assert all(row[1] == "succeeded" and row[2] == str(amount_minor) and row[3] == str(refund_minor)
               for row in moved), "a payment is not exactly charged once and refunded once"
    assert all(row[1] == "failed" and row[2] == "0" and row[3] == "0" for row in payments if row not in moved)
    assert len(provider_refunds) == len(succeeded_refunds) == len(operations)
    assert len({entry["idempotencyKey"] for entry in provider_refunds}) == len(provider_refunds)
    assert {row[0] for row in succeeded_refunds} == {refund for _, refund in operations}
    assert all(row[2] == "failed" for row in refunds if row not in succeeded_refunds)
    refunded = {}
    for row in succeeded_refunds:
        refunded[row[1]] = refunded.get(row[1], 0) + int(row[4])
    for row in payments:
        assert int(row[3]) == refunded.get(row[0], 0) <= int(row[2]), f"ledger of {row[0]} disagrees with its refunds"
    return {"payments": len(payments), "moved": len(moved), "refunds": len(refunds),
            "succeeded_refunds": len(succeeded_refunds), "charges": len(charges),
            "provider_refunds": len(provider_refunds), "requests": len(log),
            "refused": sum(1 for entry in log if entry["outcome"] == "refused")}


def https_ready(port, context):
    """Whether the bridge on `port` answers /readyz with 200."""
    try:
        with urllib.request.urlopen(f"https://localhost:{port}/readyz", context=context, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class Backends:
    """What Tender processes share, each a process of its own: PostgreSQL (migrated), Redis and the
    provider simulator; `environment` holds the TENDER_* variables that point a `tender` at them."""

    SCOPES = "payments:read,payments:write,refunds:read,refunds:write"

    def __init__(self, directory, api_key, postgres_settings=("fsync=off",)):
        self.postgres = Postgres(directory / "postgres", postgres_settings)
        self.redis_port, self.sim_port = free_port(), free_port()
        self.redis = Process("redis", directory, ["redis-server", "--bind", "127.0.0.1", "--port",
                                                  str(self.redis_port), "--save", "", "--appendonly", "no"])
        self.simulator = Process("simulator", directory, [
            str(pathlib.Path(binary()).parent / "tender-provider-sim"), "--address", f"127.0.0.1:{self.sim_port}",
            "--api-key", api_key])
        self.environment = {
            "TENDER_DATABASE_URL": self.postgres.url,
            "TENDER_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}",
            "TENDER_KEY_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
            "TENDER_PROVIDER_URL": f"http://127.0.0.1:{self.sim_port}",
            "TENDER_PROVIDER_API_KEY": api_key,
        }

    def start(self):
        self.postgres.start()
        self.redis.start()
        wait_for(lambda: accepting(self.redis_port), 30, "Redis listening")
        self.simulator.start()
        wait_for(lambda: accepting(self.sim_port), 60, "the simulator listening")
        self.admin("migrate")

    def admin(self, *arguments, environment=None):
        """`tender ARGUMENTS` against these backends (or as `environment` says); its output."""
        return subprocess.run([binary(), *arguments], check=True, capture_output=True, text=True,
                              env=dict(os.environ, **(environment or self.environment))).stdout

    def create_client(self, merchant, environment=None):
        """A new API client of `merchant` with every scope: (client id, secret)."""
        created = self.admin("client", "create", "--merchant", merchant, "--scopes", self.SCOPES,
                             environment=environment)
        fields = dict(line.split(":", 1) for line in created.splitlines() if ":" in line)
        return fields["client_id"].strip(), fields["client_secret"].strip()

    def stop(self, *others):
        """Kills `others` (Process) and the backends' processes, and stops PostgreSQL."""
        for process in [*others, self.simulator, self.redis]:
            if process.process and process.process.poll() is None:
                process.process.kill()
                process.process.wait(timeout=30)
        try:
            self.postgres.stop()
        except subprocess.CalledProcessError:
            pass
