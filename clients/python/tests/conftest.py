"""Starts a real Tender server (`tender dev`: PostgreSQL, Redis, dev TLS, migrations, a dev client) for the tests."""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import shutil
import tempfile
import threading
import time
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "clients" / "python"))


STANDARD_WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STRIPE_WEBHOOK_SECRET = "whsec_tender_dev"  # tender dev's, shared with its simulator


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """A minimal OTLP/gRPC trace receiver: keeps every span it is sent."""

    def __init__(self):
        self.spans = []
        self.lock = threading.Lock()

    def Export(self, request, context):
        with self.lock:
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend(scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture(scope="session")
def otlp_collector():
    collector = _Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    collector.endpoint = f"http://127.0.0.1:{port}"
    yield collector
    server.stop(grace=None)


@pytest.fixture(scope="session")
def tender_server(otlp_collector):
    binary = os.environ.get("TENDER_BIN", str(ROOT / ".build" / "debug" / "tender"))
    if not os.access(binary, os.X_OK):
        pytest.fail(f"tender binary not found at {binary}; build it first (swift build) or set TENDER_BIN")
    # PostgreSQL runs as the unprivileged postgres user when the tests run as root, so the state
    # folder must be reachable by it (pytest's own temporary folders are private).
    state = pathlib.Path(tempfile.mkdtemp(prefix="tender-pytest-"))
    state.chmod(0o755)
    port = _free_port()
    http_port = _free_port()
    log = state / "tender-dev.out"
    # A Standard Webhooks provider beside the simulator's Stripe endpoint.
    environment = dict(os.environ, TENDER_WEBHOOK_SECRETS=f"acme={STANDARD_WEBHOOK_SECRET}")
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [binary, "dev", "--state-dir", str(state), "--grpc-address", f"127.0.0.1:{port}",
             "--http-address", f"127.0.0.1:{http_port}", "--ephemeral",
             "--log-level", "warning", "--otlp-endpoint", otlp_collector.endpoint],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    deadline = time.monotonic() + 120
    while "Tender is serving" not in log.read_text():
        if process.poll() is not None:
            pytest.fail("tender dev exited early:\n" + log.read_text())
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("tender dev did not start within 120 s:\n" + log.read_text())
        time.sleep(0.1)
    client = json.loads((state / "dev-client.json").read_text())
    yield {
        "target": f"localhost:{port}",
        "bridge": f"https://localhost:{http_port}",
        "binary": binary,
        "ca": state / "tls" / "ca.pem",
        "client_id": client["clientID"],
        "client_secret": client["clientSecret"],
    }
    process.send_signal(signal.SIGINT)
    try:
        returncode = process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    output = log.read_text()
    shutil.rmtree(state, ignore_errors=True)
    assert returncode == 0, output
